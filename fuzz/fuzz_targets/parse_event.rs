//! Arbitrary bytes (as if correctly signed) into Clerk's event parser: it
//! must answer Ok or Err, never panic, and accept only valid user ids.
#![no_main]

use clerk_role_sync::domain::ClerkUserId;
use clerk_role_sync::webhooks::events::{self, ClerkEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(ClerkEvent::UserUpserted { user, .. }) = events::parse(body) {
        assert!(ClerkUserId::parse(user.id.as_str()).is_ok());
        let _ = user.metadata_role();
        let _ = user.primary_email();
    }
});
