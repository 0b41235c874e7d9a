//! Clerk → DB: Svix signature verification and Clerk's webhook events.
//! The verifier imports nothing of ours and knows no HTTP.

pub mod events;
pub mod svix;
