//! Test support shared by the integration tests: a Svix signer written
//! independently of the service's verifier, and Clerk payload builders.

pub mod clerk_emulator;
pub mod clerk_payloads;
pub mod svix;
