//! Table definitions shared by the PostgreSQL and SQLite backends.
//! They mirror `migrations/postgres` and `migrations/sqlite` exactly.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Nullable<Text>,
        first_name -> Nullable<Text>,
        last_name -> Nullable<Text>,
        image_url -> Nullable<Text>,
        role -> Text,
        clerk_updated_at -> Nullable<BigInt>,
        clerk_role -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        deleted_at -> Nullable<Timestamp>,
        clerk_from_push -> Bool,
        deletion_final -> Bool,
    }
}

diesel::table! {
    role_changes (id) {
        id -> BigInt,
        user_id -> Text,
        old_role -> Nullable<Text>,
        new_role -> Nullable<Text>,
        source -> Text,
        actor -> Nullable<Text>,
        changed_at -> Timestamp,
    }
}

diesel::table! {
    webhook_events (svix_id) {
        svix_id -> Text,
        event_type -> Text,
        user_id -> Nullable<Text>,
        outcome -> Text,
        received_at -> Timestamp,
        clerk_updated_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    clerk_sync (user_id) {
        user_id -> Text,
        desired_role -> Text,
        version -> BigInt,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        claimed_until -> Nullable<Timestamp>,
        queued_at -> Nullable<Timestamp>,
        claimed_by -> Nullable<Text>,
        seen_clerk_updated_at -> Nullable<BigInt>,
        taken_over -> Bool,
        unrecorded_roles -> Integer,
        unrecorded_until -> Nullable<BigInt>,
        claimed_version -> Nullable<BigInt>,
    }
}

diesel::table! {
    role_counts (role, shard) {
        role -> Text,
        shard -> SmallInt,
        count -> BigInt,
    }
}

diesel::table! {
    backfill_progress (id) {
        id -> Integer,
        last_user_id -> Nullable<Text>,
        pages -> BigInt,
        seen -> BigInt,
        created -> BigInt,
        updated -> BigInt,
        role_changes -> BigInt,
        defaults_queued -> BigInt,
        pushes_queued -> BigInt,
        unknown_roles -> BigInt,
        skipped -> BigInt,
        started_at -> Timestamp,
    }
}

diesel::table! {
    clerk_instance (id) {
        id -> Integer,
        instance_id -> Text,
        environment_type -> Text,
        bound_at -> Timestamp,
    }
}

diesel::table! {
    walk_lease (id) {
        id -> Integer,
        owner -> Nullable<Text>,
        lease_until -> Nullable<Timestamp>,
    }
}

diesel::table! {
    drift_audits (id) {
        id -> BigInt,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
        owner -> Text,
        after_user_id -> Nullable<Text>,
        walked -> Bool,
        after_local_id -> Nullable<Text>,
        checked -> BigInt,
        found_missing_here -> BigInt,
        found_role_differs -> BigInt,
        found_outdated -> BigInt,
        found_missing_in_clerk -> BigInt,
        repaired -> BigInt,
        error -> Nullable<Text>,
        mode -> Text,
        waiting -> Nullable<Text>,
    }
}

diesel::table! {
    drift_audit_sketches (run_id) {
        run_id -> BigInt,
        listed -> Binary,
    }
}

diesel::table! {
    drift_audit_holds (run_id, user_id) {
        run_id -> BigInt,
        user_id -> Text,
        kind -> Text,
    }
}

diesel::joinable!(role_changes -> users (user_id));
diesel::joinable!(clerk_sync -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    role_changes,
    webhook_events,
    clerk_sync,
    role_counts,
    backfill_progress,
    walk_lease,
    drift_audits,
    drift_audit_holds,
    drift_audit_sketches
);
