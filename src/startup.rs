//! Wires configuration, storage and HTTP into a running service.

use std::net::TcpListener;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::{ErrorHandlers, NormalizePath, TrailingSlash};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use utoipa_actix_web::AppExt as _;
use utoipa_swagger_ui::SwaggerUi;

use crate::config::{Config, DatabaseUrl};
use crate::db::Db;
use crate::error::{ApiError, problem_for_bare_errors};
use crate::openapi;
use crate::routes::{self, AppState};
use crate::webhooks::svix::Verifier;

/// Largest JSON body the admin API accepts.
pub const JSON_LIMIT: usize = 256 * 1024;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to the database, applies migrations and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = connect(&config).await?;
        db.migrate().await.context("applying migrations")?;
        tracing::info!(backend = ?db.backend(), "database ready");

        let listener = TcpListener::bind(config.bind_addr)
            .with_context(|| format!("binding {}", config.bind_addr))?;
        let port = listener.local_addr()?.port();
        let webhook_verifier = webhook_verifier(&config)?;
        let state = web::Data::new(AppState {
            db,
            webhook_verifier,
        });
        let openapi = openapi::document();

        let server = HttpServer::new(move || {
            let (app, _) = App::new()
                .into_utoipa_app()
                .app_data(state.clone())
                .app_data(routes::json_config(JSON_LIMIT))
                .app_data(routes::query_config())
                .app_data(web::PayloadConfig::new(JSON_LIMIT))
                .configure(routes::configure)
                .split_for_parts();
            app.wrap(ErrorHandlers::new().default_handler(problem_for_bare_errors))
                .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
                .service(
                    SwaggerUi::new("/swagger-ui/{_:.*}")
                        .url("/api-docs/openapi.json", openapi.clone()),
                )
                .route(
                    "/swagger-ui",
                    web::get().to(|| async {
                        HttpResponse::PermanentRedirect()
                            .insert_header(("Location", "/swagger-ui/"))
                            .finish()
                    }),
                )
                .default_service(web::to(|| async {
                    Err::<HttpResponse, _>(ApiError::NotFound("no resource at this path".into()))
                }))
        })
        .disable_signals()
        .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
        .listen(listener)?
        .run();

        Ok(Self { port, server })
    }

    /// The port actually bound (useful with `BIND_ADDR=…:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped through its [`handle`](Self::handle).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The webhook verifier for the configured secrets; a secret that cannot be
/// decoded stops the start-up rather than failing every webhook later.
fn webhook_verifier(config: &Config) -> anyhow::Result<Option<Verifier>> {
    let Some(secrets) = &config.clerk.webhook_secrets else {
        tracing::warn!("CLERK_WEBHOOK_SECRET is not set: the webhook answers 503");
        return Ok(None);
    };
    let verifier = Verifier::new(secrets.expose())
        .map_err(|error| anyhow::anyhow!("CLERK_WEBHOOK_SECRET is not valid: {error}"))?;
    Ok(Some(verifier))
}

/// Opens the configured database with the configured pool size.
pub async fn connect(config: &Config) -> anyhow::Result<Db> {
    let where_ = match &config.database {
        DatabaseUrl::Postgres(_) => "PostgreSQL".to_owned(),
        DatabaseUrl::Sqlite(path) => format!("SQLite file {}", path.display()),
    };
    Db::connect(&config.database, config.database_max_connections)
        .await
        .with_context(|| format!("connecting to {where_}"))
}
