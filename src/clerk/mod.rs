//! Clerk's side: the shape of its users (shared by webhooks, the Backend API
//! client and the backfill).

mod user;

pub use user::{ClerkUser, EmailAddress};
