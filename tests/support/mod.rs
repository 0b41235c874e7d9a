//! Test support shared by the integration tests: a Svix signer written
//! independently of the service's verifier, Clerk payload builders, the
//! Clerk emulator, and real service processes for multi-replica tests.

pub mod clerk_emulator;
pub mod clerk_payloads;
pub mod instances;
pub mod svix;
