//! Clerk's users: a store that creates, edits and deletes them as Clerk
//! does (the metadata deep merge, an `updated_at` that strictly increases,
//! `PATCH /v1/users/{id}` refusing metadata), the paged user list, and the
//! event each change hands to the webhooks.

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use serde_json::{Map, Value, json};

use super::router::Reply;
use super::webhooks::Outbound;
use super::{ClerkEmulator, State, random_token};

const DEFAULT_PAGE_LIMIT: usize = 10;
const MAX_PAGE_LIMIT: usize = 500;
const METADATA_KEYS: [&str; 3] = ["public_metadata", "private_metadata", "unsafe_metadata"];
/// Fields `PATCH /v1/users/{id}` still accepts (strings or null).
const USER_FIELDS: [&str; 4] = ["first_name", "last_name", "username", "external_id"];

/// The users, in the shape of Clerk's Backend API, and Clerk's clock.
#[derive(Default)]
pub(super) struct UserStore {
    by_id: HashMap<String, Value>,
    /// The list's order: (`created_at`, id) of every user, so that a page
    /// costs the same at the millionth user as at the first.
    in_order: BTreeSet<(i64, String)>,
    /// The last timestamp handed out, in ms: `tick` never repeats one.
    clock_ms: i64,
    /// Added to Clerk's clock, in ms: Clerk's `updated_at` runs ahead
    /// (or behind, when negative) of ours.
    skew_ms: i64,
}

impl UserStore {
    pub(super) fn get(&self, id: &str) -> Option<&Value> {
        self.by_id.get(id)
    }

    pub(super) fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Clerk's clock: milliseconds, strictly increasing across writes.
    fn tick(&mut self) -> i64 {
        let now = chrono::Utc::now().timestamp_millis() + self.skew_ms;
        self.clock_ms = now.max(self.clock_ms + 1);
        self.clock_ms
    }

    /// Creates user `id` (which must be new) with this `public_metadata`.
    fn insert(&mut self, id: &str, public_metadata: Value) -> Value {
        assert!(
            !self.by_id.contains_key(id),
            "the Clerk emulator already has a user {id}"
        );
        assert!(
            public_metadata.is_object(),
            "public_metadata must be a JSON object, not {public_metadata}"
        );
        let now = self.tick();
        let user = new_user(id, public_metadata, now);
        self.by_id.insert(id.to_owned(), user.clone());
        self.in_order.insert((now, id.to_owned()));
        user
    }

    /// Removes user `id`; whether there was one.
    fn remove(&mut self, id: &str) -> bool {
        let Some(user) = self.by_id.remove(id) else {
            return false;
        };
        self.in_order.remove(&order_key(&user));
        true
    }

    /// The users in the list's order (newest first when `descending`),
    /// after user `after` when given.
    fn listed(
        &self,
        descending: bool,
        after: Option<(i64, String)>,
    ) -> Box<dyn Iterator<Item = &Value> + '_> {
        let keys: Box<dyn Iterator<Item = &(i64, String)>> = match (descending, after) {
            (false, None) => Box::new(self.in_order.iter()),
            (true, None) => Box::new(self.in_order.iter().rev()),
            (false, Some(key)) => Box::new(
                self.in_order
                    .range((Bound::Excluded(key), Bound::Unbounded)),
            ),
            (true, Some(key)) => Box::new(self.in_order.range(..key).rev()),
        };
        Box::new(keys.filter_map(|(_, id)| self.by_id.get(id)))
    }

    /// Deep-merges `patches` (metadata field → patch) into user `id` and
    /// bumps `updated_at`; the user after, `None` when there is none.
    fn merge_metadata(&mut self, id: &str, patches: &Map<String, Value>) -> Option<Value> {
        if !self.by_id.contains_key(id) {
            return None;
        }
        let now = self.tick();
        let user = self.by_id.get_mut(id)?;
        for (field, patch) in patches {
            if let Value::Object(patch) = patch {
                let target = user
                    .as_object_mut()?
                    .entry(field.clone())
                    .or_insert_with(|| json!({}));
                if !target.is_object() {
                    *target = json!({});
                }
                if let Value::Object(target) = target {
                    deep_merge(target, patch);
                }
            }
        }
        user["updated_at"] = json!(now);
        Some(user.clone())
    }

    /// Sets the top-level `fields` of user `id` and bumps `updated_at`; the
    /// user after, `None` when there is none.
    fn set_fields(&mut self, id: &str, fields: &Map<String, Value>) -> Option<Value> {
        if !self.by_id.contains_key(id) {
            return None;
        }
        let now = self.tick();
        let user = self.by_id.get_mut(id)?;
        for (field, value) in fields {
            user[field.as_str()] = value.clone();
        }
        user["updated_at"] = json!(now);
        Some(user.clone())
    }
}

impl State {
    fn insert_user(&mut self, id: &str, public_metadata: Value) -> (Value, Option<Outbound>) {
        let user = self.users.insert(id, public_metadata);
        let outbound = self
            .webhooks
            .event(&self.instance_id, "user.created", id, user.clone());
        (user, outbound)
    }

    fn delete_user(&mut self, id: &str) -> Option<Outbound> {
        assert!(self.users.remove(id), "the Clerk emulator has no user {id}");
        self.webhooks.event(
            &self.instance_id,
            "user.deleted",
            id,
            json!({ "deleted": true, "id": id, "object": "user" }),
        )
    }

    /// Merges metadata into user `id` and emits `user.updated`; `None` when
    /// there is no such user.
    fn merge_metadata(
        &mut self,
        id: &str,
        patches: &Map<String, Value>,
    ) -> Option<(Value, Option<Outbound>)> {
        let user = self.users.merge_metadata(id, patches)?;
        let outbound = self
            .webhooks
            .event(&self.instance_id, "user.updated", id, user.clone());
        Some((user, outbound))
    }

    /// `GET /v1/users`: a page in creation order (or its reverse), after a
    /// cursor or an offset, as the faults let it show.
    pub(super) fn list_users(&mut self, query: &str) -> Reply {
        let mut limit = DEFAULT_PAGE_LIMIT;
        let mut offset = 0;
        let mut starting_after = None;
        let mut descending = false;
        for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match name.as_ref() {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_PAGE_LIMIT).contains(&n) => limit = n,
                    _ => {
                        return Reply::invalid(
                            "form_param_format_invalid",
                            &format!("limit must be between 1 and {MAX_PAGE_LIMIT}, not {value}"),
                        );
                    }
                },
                "offset" => match value.parse::<usize>() {
                    Ok(n) => offset = n,
                    Err(_) => {
                        return Reply::invalid(
                            "form_param_format_invalid",
                            &format!("offset must be a non-negative integer, not {value}"),
                        );
                    }
                },
                "starting_after" if !self.faults.ignore_cursor => {
                    starting_after = Some(value.into_owned());
                }
                "order_by" => match value.as_ref() {
                    "created_at" | "+created_at" => descending = false,
                    "-created_at" => descending = true,
                    _ => {
                        return Reply::invalid(
                            "form_param_value_invalid",
                            &format!("the emulator only orders by created_at, not {value}"),
                        );
                    }
                },
                _ => {}
            }
        }
        if starting_after.is_some() && std::mem::take(&mut self.faults.refuse_cursor) {
            return Reply::invalid(
                "form_param_value_invalid",
                "starting_after: the user was deleted (injected)",
            );
        }
        let hidden = &self.faults.hidden;
        let visible = |user: &&Value| !user["id"].as_str().is_some_and(|id| hidden.contains(id));
        let after = match starting_after {
            None => None,
            Some(after) => match self.users.get(&after).filter(visible) {
                Some(user) => Some(order_key(user)),
                None => {
                    return Reply::invalid(
                        "form_param_value_invalid",
                        &format!("starting_after: no user {after}"),
                    );
                }
            },
        };
        // A list cut short at `cap` users: what is left of it after the cursor.
        let left = match (self.faults.list_cap, &after) {
            (None, _) => usize::MAX,
            (Some(cap), None) => cap,
            (Some(cap), Some(key)) => {
                let before = self
                    .users
                    .listed(descending, None)
                    .filter(visible)
                    .take_while(|user| order_key(user) != *key)
                    .count();
                if before >= cap {
                    return Reply::invalid(
                        "form_param_value_invalid",
                        &format!("starting_after: no user {}", key.1),
                    );
                }
                cap - before - 1
            }
        };
        let page: Vec<Value> = self
            .users
            .listed(descending, after)
            .filter(visible)
            .take(left)
            .skip(offset)
            .take(limit)
            .cloned()
            .collect();
        Reply::ok(Value::Array(page))
    }

    /// `PATCH /v1/users/{id}/metadata`: Clerk's deep merge.
    pub(super) fn patch_metadata(
        &mut self,
        id: &str,
        body: Option<&Value>,
    ) -> (Reply, Option<Outbound>) {
        let patches = match json_object(body).and_then(metadata_patches) {
            Ok(patches) => patches,
            Err(refusal) => return (refusal, None),
        };
        match self.merge_metadata(id, patches) {
            Some((user, outbound)) => (Reply::ok(user), outbound),
            None => (Reply::not_found("user"), None),
        }
    }

    /// `PATCH /v1/users/{id}`: names and the external id, never metadata.
    pub(super) fn patch_user(
        &mut self,
        id: &str,
        body: Option<&Value>,
    ) -> (Reply, Option<Outbound>) {
        let fields = match json_object(body).and_then(user_fields) {
            Ok(fields) => fields,
            Err(refusal) => return (refusal, None),
        };
        let Some(user) = self.users.set_fields(id, fields) else {
            return (Reply::not_found("user"), None);
        };
        let outbound = self
            .webhooks
            .event(&self.instance_id, "user.updated", id, user.clone());
        (Reply::ok(user), outbound)
    }
}

/// A request body that is a JSON object, or Clerk's refusal.
fn json_object(body: Option<&Value>) -> Result<&Map<String, Value>, Reply> {
    match body {
        Some(Value::Object(object)) => Ok(object),
        _ => Err(Reply::invalid(
            "form_param_format_invalid",
            "the request body must be a JSON object",
        )),
    }
}

/// The body of `PATCH /v1/users/{id}/metadata` when it holds only metadata
/// fields, each an object or null.
fn metadata_patches(patches: &Map<String, Value>) -> Result<&Map<String, Value>, Reply> {
    for (field, patch) in patches {
        if !METADATA_KEYS.contains(&field.as_str()) {
            return Err(Reply::invalid(
                "form_param_unknown",
                &format!("{field} is not a valid parameter for this request"),
            ));
        }
        if !(patch.is_object() || patch.is_null()) {
            return Err(Reply::invalid(
                "form_param_format_invalid",
                &format!("{field} must be a JSON object"),
            ));
        }
    }
    Ok(patches)
}

/// The body of `PATCH /v1/users/{id}` when it holds only the fields it
/// still accepts, each a string or null: metadata is refused since API
/// version 2026-05-12.
fn user_fields(fields: &Map<String, Value>) -> Result<&Map<String, Value>, Reply> {
    for (field, value) in fields {
        if field.ends_with("_metadata") {
            return Err(Reply::invalid(
                "form_param_unknown",
                &format!(
                    "{field} is not a valid parameter for this request: since API \
                     version 2026-05-12 metadata is updated with \
                     PATCH /v1/users/{{user_id}}/metadata"
                ),
            ));
        }
        if !USER_FIELDS.contains(&field.as_str()) {
            return Err(Reply::invalid(
                "form_param_unknown",
                &format!("{field} is not a valid parameter for this request"),
            ));
        }
        if !(value.is_string() || value.is_null()) {
            return Err(Reply::invalid(
                "form_param_format_invalid",
                &format!("{field} must be a string or null"),
            ));
        }
    }
    Ok(fields)
}

/// Users as the dashboard (or any other client of Clerk) changes them, and
/// as Clerk holds them.
impl ClerkEmulator {
    /// Creates a user as the dashboard would, with `public_metadata`
    /// `{"role": role}` (or `{}`), and sends `user.created`.
    pub fn add_user(&self, id: &str, role: Option<&str>) -> Value {
        let metadata = match role {
            Some(role) => json!({ "role": role }),
            None => json!({}),
        };
        self.add_user_with_metadata(id, metadata)
    }

    /// Creates a user with exactly this `public_metadata` and sends
    /// `user.created`.
    pub fn add_user_with_metadata(&self, id: &str, public_metadata: Value) -> Value {
        let (user, outbound) = self.shared.lock().insert_user(id, public_metadata);
        self.shared.dispatch(outbound);
        user
    }

    /// A dashboard edit of `public_metadata` (Clerk's deep merge); sends
    /// `user.updated`.
    pub fn edit_metadata(&self, id: &str, patch: Value) -> Value {
        assert!(patch.is_object(), "a metadata patch is a JSON object");
        let mut patches = Map::new();
        patches.insert("public_metadata".into(), patch);
        let merged = self.shared.lock().merge_metadata(id, &patches);
        let (user, outbound) =
            merged.unwrap_or_else(|| panic!("the Clerk emulator has no user {id}"));
        self.shared.dispatch(outbound);
        user
    }

    /// Deletes a user; sends `user.deleted`.
    pub fn delete_user(&self, id: &str) {
        let outbound = self.shared.lock().delete_user(id);
        self.shared.dispatch(outbound);
    }

    /// The user as `GET /v1/users/{id}` would return it.
    pub fn user(&self, id: &str) -> Option<Value> {
        self.shared.lock().users.get(id).cloned()
    }

    /// `public_metadata.role`, when it is a string.
    pub fn role(&self, id: &str) -> Option<String> {
        self.user(id)?["public_metadata"]["role"]
            .as_str()
            .map(str::to_owned)
    }

    pub fn user_count(&self) -> usize {
        self.shared.lock().users.len()
    }

    /// Runs Clerk's clock `skew` ahead of ours (behind when negative).
    pub fn set_clock_skew(&self, skew: chrono::TimeDelta) {
        self.shared.lock().users.skew_ms = skew.num_milliseconds();
    }
}

/// Clerk's metadata merge: objects merge recursively, `null` removes the
/// key, anything else replaces it.
fn deep_merge(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Object(inner) => {
                let slot = target.entry(key.clone()).or_insert_with(|| json!({}));
                if !slot.is_object() {
                    *slot = json!({});
                }
                if let Value::Object(slot) = slot {
                    deep_merge(slot, inner);
                }
            }
            other => {
                target.insert(key.clone(), other.clone());
            }
        }
    }
}

/// Where `user` stands in the list: by creation, then id.
fn order_key(user: &Value) -> (i64, String) {
    (
        user["created_at"].as_i64().unwrap_or_default(),
        user["id"].as_str().unwrap_or_default().to_owned(),
    )
}

/// A user in the shape of Clerk's Backend API (and of its webhooks).
fn new_user(id: &str, public_metadata: Value, now: i64) -> Value {
    let email_id = format!("idn_{}", random_token(27));
    json!({
        "id": id,
        "object": "user",
        "username": null,
        "first_name": null,
        "last_name": null,
        "image_url": format!("https://img.clerk.com/emulator/{id}"),
        "has_image": false,
        "profile_image_url": "https://www.gravatar.com/avatar?d=mp",
        "primary_email_address_id": email_id,
        "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "password_enabled": true,
        "two_factor_enabled": false,
        "totp_enabled": false,
        "backup_code_enabled": false,
        "email_addresses": [{
            "id": email_id,
            "object": "email_address",
            "email_address": format!("{id}@example.com"),
            "reserved": false,
            "linked_to": [],
            "created_at": now,
            "updated_at": now,
            "verification": {
                "status": "verified",
                "strategy": "admin",
                "attempts": null,
                "expire_at": null,
            },
        }],
        "phone_numbers": [],
        "web3_wallets": [],
        "passkeys": [],
        "external_accounts": [],
        "saml_accounts": [],
        "public_metadata": public_metadata,
        "private_metadata": {},
        "unsafe_metadata": {},
        "external_id": null,
        "last_sign_in_at": null,
        "last_active_at": null,
        "banned": false,
        "locked": false,
        "lockout_expires_in_seconds": null,
        "verification_attempts_remaining": 100,
        "mfa_enabled_at": null,
        "mfa_disabled_at": null,
        "legal_accepted_at": null,
        "delete_self_enabled": true,
        "create_organization_enabled": true,
        "created_at": now,
        "updated_at": now,
    })
}
