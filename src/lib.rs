//! clerk-role-sync keeps each user's role (STUDENT, INSTRUCTOR, ADMIN) the
//! same in our database and in Clerk's `public_metadata.role`, in both
//! directions. `main.rs` is a thin shell around [`cli::run`].

pub mod app;
pub mod clerk;
pub mod cli;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod problem_type;
pub mod routes;
pub mod secret;
pub mod startup;
pub mod telemetry;
pub mod webhooks;
