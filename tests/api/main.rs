//! The one integration test binary: every test runs the real service over a
//! real database (PostgreSQL and SQLite).

mod helpers;

mod admin_auth;
mod admin_read_plans;
mod admin_roles;
mod backfill;
mod cli;
mod clocks;
mod convergence;
mod deploy;
mod emulator_fidelity;
mod errors;
mod failover;
mod hardening;
mod health;
mod ingest;
mod instance_binding;
mod layout;
mod observability;
mod openapi;
mod problems;
mod push;
mod push_budget;
mod replicas;
mod safe_healing;
mod self_healing;
mod shutdown;
mod storage;
mod swagger_ui;
mod sync_views;
mod two_way;
mod webhooks;
