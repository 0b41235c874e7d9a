//! What the tests, the benches and the load generator share: a Svix signer
//! written independently of the service's verifier, Clerk payload builders,
//! a stateful Clerk emulator, databases that live for one test, and real
//! service processes for multi-replica tests. Never part of the service.

pub mod clerk_emulator;
pub mod clerk_payloads;
pub mod instances;
pub mod svix;
pub mod test_db;
pub mod throwaway_postgres;
