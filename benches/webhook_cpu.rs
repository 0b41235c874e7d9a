//! CPU cost of a webhook before it reaches the database: Svix signature
//! verification (1 KiB and 256 KiB bodies, one secret and with a rotated
//! pair) and parsing a captured Clerk event.
//!
//! `cargo bench --bench webhook_cpu`

use std::hint::black_box;

use clerk_role_sync::webhooks::events;
use clerk_role_sync::webhooks::svix::{SignedHeaders, Verifier};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OLD_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const NOW: i64 = 1_700_000_000;
const ID: &str = "msg_2p5Ea9XyY0bQfJ1bU0zN0dC1Mpb";

/// A captured `user.created`, as Clerk sends it.
const CLERK_EVENT: &str =
    include_str!("../tests/fixtures/clerk-webhooks/user.created-received.json");

fn verify(c: &mut Criterion) {
    let mut group = c.benchmark_group("verify");
    for size in [1024, 256 * 1024] {
        let body = vec![b'x'; size];
        let timestamp = NOW.to_string();
        // Signed with the older of two configured secrets: the worst case
        // during a rotation, when the first key tried does not match.
        for (label, configured) in [
            ("one secret", SECRET.to_owned()),
            ("rotation", format!("{SECRET} {OLD_SECRET}")),
        ] {
            let verifier = Verifier::new(&configured).expect("valid secrets");
            let signer = Verifier::new(if label == "rotation" {
                OLD_SECRET
            } else {
                SECRET
            })
            .expect("valid secret");
            let signature = signer.sign(ID, NOW, &body);
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_with_input(
                BenchmarkId::new(label, format!("{} KiB", size / 1024)),
                &body,
                |b, body| {
                    b.iter(|| {
                        let headers = SignedHeaders::from_lookup(|name| match name {
                            "svix-id" => Some(ID),
                            "svix-timestamp" => Some(timestamp.as_str()),
                            "svix-signature" => Some(signature.as_str()),
                            _ => None,
                        })
                        .expect("headers");
                        verifier
                            .verify(&headers, black_box(body), NOW)
                            .expect("a genuine signature")
                    })
                },
            );
        }
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let body = CLERK_EVENT.as_bytes();
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("user.created", |b| {
        b.iter(|| events::parse(black_box(body)).expect("a Clerk event"))
    });
    group.finish();
}

criterion_group!(benches, verify, parse);
criterion_main!(benches);
