//! Wires configuration, storage, Clerk and HTTP into a running service.

use std::net::TcpListener;
use std::sync::Arc;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::{Method, header};
use actix_web::middleware::{ErrorHandlers, NormalizePath, TrailingSlash, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use utoipa_actix_web::AppExt as _;
use utoipa_swagger_ui::SwaggerUi;

use crate::clerk::ClerkClient;
use crate::clerk::jwt::SessionVerifier;
use crate::config::{Config, DatabaseUrl};
use crate::db::Db;
use crate::error::{ApiError, problem_for_bare_errors};
use crate::metrics::Metrics;
use crate::openapi;
use crate::routes::observe::observe;
use crate::routes::{self, AppState};
use crate::sync::{PushWorker, WorkerHandle};
use crate::webhooks::svix::Verifier;

/// Largest JSON body the admin API accepts.
pub const JSON_LIMIT: usize = 256 * 1024;

/// How long shutdown waits for in-flight requests.
const SHUTDOWN_TIMEOUT_SECS: u64 = 30;

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    server: Server,
    worker: Option<WorkerHandle>,
}

impl Application {
    /// Connects to the database, applies migrations, starts the push worker
    /// (when Clerk's secret key is set) and binds the listener.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = connect(&config).await?;
        db.migrate().await.context("applying migrations")?;
        tracing::info!(backend = ?db.backend(), "database ready");

        let webhook_verifier = webhook_verifier(&config)?;
        let client = ClerkClient::new(&config.clerk);
        let session_verifier = session_verifier(&config, client.clone())?;
        let metrics = Arc::new(Metrics::new());
        let worker = match client.clone() {
            Some(client) => Some(PushWorker::spawn(
                db.clone(),
                client,
                config.clerk.push,
                metrics.clone(),
            )),
            None => {
                tracing::warn!(
                    "CLERK_SECRET_KEY is not set: role changes wait to be pushed to Clerk"
                );
                None
            }
        };

        let listener = TcpListener::bind(config.bind_addr)
            .with_context(|| format!("binding {}", config.bind_addr))?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            db,
            webhook_verifier,
            session_verifier,
            clerk: client,
            metrics,
            push_waker: worker.as_ref().map(WorkerHandle::waker),
        });
        let openapi = openapi::document();
        let origins = config.cors_allowed_origins.clone();

        let server = HttpServer::new(move || {
            let (app, routed) = App::new()
                .into_utoipa_app()
                .app_data(state.clone())
                .app_data(routes::json_config(JSON_LIMIT))
                .app_data(routes::query_config())
                .app_data(web::PayloadConfig::new(JSON_LIMIT))
                .configure(routes::configure)
                .split_for_parts();
            let app = routes::method_not_allowed(&routed.paths)
                .into_iter()
                .fold(app, App::service);
            app.wrap(cors(&origins))
                .wrap(from_fn(observe))
                .wrap(ErrorHandlers::new().default_handler(problem_for_bare_errors))
                .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
                .service(
                    SwaggerUi::new("/swagger-ui/{_:.*}")
                        .url("/api-docs/openapi.json", openapi.clone()),
                )
                .route(
                    "/swagger-ui",
                    web::get().to(|| async {
                        HttpResponse::PermanentRedirect()
                            .insert_header((header::LOCATION, "/swagger-ui/"))
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

        Ok(Self {
            port,
            server,
            worker,
        })
    }

    /// The port actually bound (useful with `BIND_ADDR=…:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A handle that stops the server gracefully.
    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Serves until the server is stopped through its [`handle`](Self::handle),
    /// then stops the push worker, letting a push in flight finish.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some(worker) = self.worker {
            worker.shutdown().await;
        }
        served
    }
}

/// Cross-origin access for the admin frontend's origins only.
fn cors(origins: &[String]) -> Cors {
    origins
        .iter()
        .fold(Cors::default(), |cors, origin| cors.allowed_origin(origin))
        .allowed_methods([Method::GET, Method::POST, Method::PATCH])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .max_age(3600)
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

/// Session tokens are checked with `CLERK_JWT_KEY` when set, else with
/// Clerk's JWKS (which needs the secret key); without either the admin API
/// answers 503.
fn session_verifier(
    config: &Config,
    client: Option<ClerkClient>,
) -> anyhow::Result<Option<SessionVerifier>> {
    let clerk = &config.clerk;
    let issuer = clerk.issuer.as_deref();
    if issuer.is_none() {
        tracing::warn!(
            "neither CLERK_PUBLISHABLE_KEY nor CLERK_ISSUER is set: session tokens' `iss` is not pinned"
        );
    }
    if let Some(pem) = &clerk.jwt_key {
        let verifier = SessionVerifier::with_pem(pem, issuer, &clerk.authorized_parties)
            .map_err(|error| anyhow::anyhow!("CLERK_JWT_KEY is not valid: {error}"))?;
        return Ok(Some(verifier));
    }
    let Some(client) = client else {
        tracing::warn!(
            "neither CLERK_JWT_KEY nor CLERK_SECRET_KEY is set: the admin API answers 503"
        );
        return Ok(None);
    };
    Ok(Some(SessionVerifier::with_jwks(
        client,
        clerk.jwks_min_refetch,
        issuer,
        &clerk.authorized_parties,
    )))
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
