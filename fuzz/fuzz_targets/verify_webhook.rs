//! Arbitrary headers and bodies against the Svix verifier: it must never
//! panic, and must never accept a message the fuzzer did not sign.
#![no_main]

use clerk_role_sync::webhooks::svix::{SignedHeaders, Verifier};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const NOW: i64 = 1_700_000_000;

fuzz_target!(|input: (&str, &str, &str, &[u8], bool)| {
    let (id, timestamp, signature, body, sign_it) = input;
    let verifier = Verifier::new(SECRET).expect("valid secret");
    let genuine;
    let signature = if sign_it {
        genuine = verifier.sign(id, NOW, body);
        genuine.as_str()
    } else {
        signature
    };
    let Ok(headers) = SignedHeaders::from_lookup(|name| match name {
        "svix-id" => Some(id),
        "svix-timestamp" => Some(timestamp),
        "svix-signature" => Some(signature),
        _ => None,
    }) else {
        return;
    };
    let verdict = verifier.verify(&headers, body, NOW);
    if verdict.is_ok() && !sign_it {
        // Accepted without our signature: only possible if the fuzzer
        // reproduced a genuine signature for exactly these inputs.
        let expected = verifier.sign(headers.id, headers.timestamp.parse().unwrap_or(-1), body);
        assert!(
            headers.signature.split(' ').any(|entry| entry == expected),
            "accepted a message that no configured key signed"
        );
    }
});
