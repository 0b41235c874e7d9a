//! Clerk's side: the shape of its users, the Backend API client and the
//! verification of Clerk session tokens.

mod api;
pub mod jwt;
mod user;

pub use api::{ClerkClient, ClerkError, ClerkInstance, Connection, Jwk, Jwks};
pub use user::{ClerkUser, EmailAddress};
