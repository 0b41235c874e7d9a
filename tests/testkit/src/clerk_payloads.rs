//! Clerk webhook bodies in the shapes Clerk really sends, built from the
//! captured fixtures with the fields a test cares about replaced.

use serde_json::{Value, json};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../fixtures/clerk-webhooks/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The raw fixture bodies, by file name.
pub fn fixture_bodies() -> Vec<(&'static str, Value)> {
    [
        "user.created-received.json",
        "user.created-documented.json",
        "user.updated-received.json",
        "user.deleted-documented.json",
    ]
    .into_iter()
    .map(|name| (name, fixture(name)))
    .collect()
}

/// A `user.created`/`user.updated` event as captured from Clerk, for user
/// `id` at Clerk time `updated_at`, with `public_metadata.role` = `role`
/// (no `role` key when `None`).
pub fn user_event(kind: &str, id: &str, updated_at: i64, role: Option<&str>) -> Value {
    let mut event = fixture("user.updated-received.json");
    event["type"] = json!(kind);
    let data = &mut event["data"];
    data["id"] = json!(id);
    data["updated_at"] = json!(updated_at);
    data["email_addresses"][0]["email_address"] = json!(format!("{id}@example.com"));
    data["public_metadata"] = match role {
        Some(role) => json!({ "role": role, "plan": "pro" }),
        None => json!({}),
    };
    event
}

/// A `user.deleted` event in the documented shape.
pub fn deleted_event(id: &str) -> Value {
    let mut event = fixture("user.deleted-documented.json");
    event["data"]["id"] = json!(id);
    event
}
