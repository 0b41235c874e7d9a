//! Wires configuration, storage, Clerk and HTTP into a running service.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::{Server, ServerHandle};
use actix_web::http::{Method, header};
use actix_web::middleware::{ErrorHandlers, NormalizePath, TrailingSlash, from_fn};
use actix_web::{App, HttpResponse, HttpServer, web};
use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use utoipa_actix_web::AppExt as _;
use utoipa_swagger_ui::SwaggerUi;

use crate::clerk::ClerkClient;
use crate::clerk::jwt::SessionVerifier;
use crate::config::{Config, DatabaseUrl};
use crate::db::Db;
use crate::error::{ApiError, problem_for_bare_errors};
use crate::jobs::clerk_instance::{self, InstanceGate};
use crate::jobs::drift_audit::{AuditSettings, DriftAudit};
use crate::jobs::ingest::{Ingest, IngestHandle};
use crate::jobs::{PushWorker, WorkerHandle, allowance_ms, retention};
use crate::metrics::Metrics;
use crate::openapi;
use crate::routes::body::body_deadline;
use crate::routes::get_metrics::{self, MetricsListener};
use crate::routes::head::head_as_get;
use crate::routes::headers::security_headers;
use crate::routes::observe::observe;
use crate::routes::{self, AppState};
use crate::webhooks::svix::Verifier;

/// How long shutdown waits for in-flight requests: well inside
/// [`STOP_DEADLINE`], which also covers the ingest writers' last batch and
/// the push worker's push in flight.
const SHUTDOWN_TIMEOUT_SECS: u64 = 5;

/// How long `serve` takes at most to stop once told to (SIGTERM): under a
/// container runtime's usual 10 s grace before it kills.
pub const STOP_DEADLINE: Duration = Duration::from_secs(9);

/// Connections one HTTP worker (one per core) keeps open at once; beyond
/// it, new connections wait in the kernel's backlog.
const MAX_CONNECTIONS_PER_WORKER: usize = 1_024;
/// Connections one HTTP worker may be setting up at once.
const MAX_CONNECTION_RATE_PER_WORKER: usize = 256;
/// Connections the metrics listener keeps open at once.
const METRICS_MAX_CONNECTIONS: usize = 64;
/// How long a client has to send a request's headers.
const HEADERS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle keep-alive connection stays open.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// Webhook bodies (up to 1 MiB each) buffered at once: with the body
/// deadline, what bounds the memory hostile senders can make us hold. A
/// request keeps its permit until its event is applied, so this also bounds
/// the events waiting for the ingest writer.
const MAX_WEBHOOK_BODIES: usize = 64;

/// A bound, ready-to-run service.
pub struct Application {
    port: u16,
    metrics_port: Option<u16>,
    server: Server,
    metrics_server: Option<Server>,
    worker: Option<WorkerHandle>,
    ingest: IngestHandle,
    background: watch::Sender<bool>,
    retention: JoinHandle<()>,
    drift_audit: Option<JoinHandle<()>>,
    /// Asks Clerk for the instance until it is confirmed, when it could not
    /// be at start.
    confirming: Option<JoinHandle<()>>,
    clerk_instance: InstanceGate,
    /// Shared with the routes: `/readyz` answers 503 once it is set.
    stopping: Arc<AtomicBool>,
}

/// How long a stop gives the accept threads to stop accepting before the
/// workers stop.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Stops a running [`Application`].
#[derive(Clone)]
pub struct AppHandle {
    servers: Vec<ServerHandle>,
    stopping: Arc<AtomicBool>,
}

impl AppHandle {
    /// Tells the servers to stop at once, without waiting for them: for a
    /// `Drop` that cannot await. The push worker then finishes its pushes
    /// in flight as after [`stop`](Self::stop).
    pub fn stop_now(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        for server in &self.servers {
            // actix sends the command when `stop` is called; the future only
            // waits for its completion.
            drop(server.stop(false));
        }
    }

    /// Stops accepting connections; with `graceful`, lets requests in
    /// flight finish. The push worker then finishes its pushes in flight.
    pub async fn stop(&self, graceful: bool) {
        self.stopping.store(true, Ordering::Relaxed);
        // Accepting stops first: actix tells its accept thread and its
        // workers to stop at the same moment, and a connection accepted in
        // between finds no worker to take it ("No workers", at ERROR). The
        // pause is acknowledged before the accept thread acts on it, so it
        // gets a moment to.
        for server in &self.servers {
            server.pause().await;
        }
        tokio::time::sleep(ACCEPT_PAUSE).await;
        for server in &self.servers {
            server.stop(graceful).await;
        }
    }
}

impl Application {
    /// Connects to the database, applies migrations, confirms the Clerk
    /// instance (a key of another instance is an error), starts the push
    /// worker (when Clerk's secret key is set) and the housekeeping, and
    /// binds the listeners.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = connect(&config).await?;
        db.migrate().await.context("applying migrations")?;
        tracing::info!(backend = ?db.backend(), "database ready");

        let webhook_verifier = webhook_verifier(&config)?;
        let client = clerk_client(&config)?;
        let (instance, confirm_later) = clerk_instance::at_start(&db, client.as_ref()).await?;
        let session_verifier = session_verifier(&config, client.clone())?;
        let metrics = Arc::new(Metrics::new());
        let openapi = openapi::document();
        metrics.init_routes(documented_operations(&openapi));
        metrics.set_build(db.backend().as_str());

        let listener = TcpListener::bind(config.bind_addr)
            .with_context(|| format!("binding {}", config.bind_addr))?;
        let port = listener.local_addr()?.port();
        let metrics_listener = config
            .metrics_bind_addr
            .map(|addr| {
                TcpListener::bind(addr).with_context(|| format!("binding METRICS_BIND_ADDR {addr}"))
            })
            .transpose()?;
        let metrics_port = metrics_listener
            .as_ref()
            .map(|listener| listener.local_addr().map(|addr| addr.port()))
            .transpose()?;

        // The worker has a Clerk client of its own: a connection the HTTP
        // side opened (for the JWKS, say) is driven by an HTTP worker's
        // runtime, and would die with it at shutdown, under a push in flight.
        let worker = match clerk_client(&config)? {
            Some(client) => Some(PushWorker::spawn(
                db.clone(),
                client,
                config.clerk.push,
                config.replica_id.clone(),
                metrics.clone(),
                instance.clone(),
            )),
            None => {
                tracing::warn!(
                    "CLERK_SECRET_KEY is not set: role changes wait to be pushed to Clerk"
                );
                None
            }
        };
        let (background, stop) = watch::channel(false);
        let retention = tokio::spawn(retention::run(
            db.clone(),
            config.webhook_events_retention,
            stop,
        ));
        let confirming = match (confirm_later, clerk_client(&config)?) {
            (true, Some(client)) => Some(tokio::spawn(clerk_instance::keep_confirming(
                instance.clone(),
                db.clone(),
                client,
                background.subscribe(),
            ))),
            _ => None,
        };

        let allowance = allowance_ms(config.clerk.push.clock_skew_allowance);
        let audit = drift_audit(&config, &db, allowance, &metrics, &instance)?;
        let drift_audit_interval = audit.as_ref().and(config.drift_audit.interval);
        let drift_audit = audit.map(|audit| tokio::spawn(audit.run(background.subscribe())));
        let (ingest, ingest_handle) = Ingest::spawn(db.clone(), allowance, metrics.clone());
        let state = web::Data::new(AppState {
            db,
            webhook_verifier,
            session_verifier,
            clerk: client,
            metrics,
            push_worker: worker.as_ref().map(WorkerHandle::link),
            body_timeout: config.body_timeout,
            webhook_bodies: Semaphore::new(MAX_WEBHOOK_BODIES),
            ingest,
            clock_skew_allowance_ms: allowance,
            drift_audit_interval,
            metrics_on_main_port: metrics_listener.is_none(),
            clerk_instance: instance,
            stopping: Arc::new(AtomicBool::new(false)),
        });
        let origins = config.cors_allowed_origins.clone();

        let server = HttpServer::new({
            let state = state.clone();
            move || {
                let (app, routed) = App::new()
                    .into_utoipa_app()
                    .app_data(state.clone())
                    .app_data(routes::query_config())
                    .configure(routes::configure)
                    .split_for_parts();
                let app = routes::method_not_allowed(&routed.paths)
                    .into_iter()
                    .fold(app, App::service);
                app.wrap(cors(&origins))
                    .wrap(from_fn(body_deadline))
                    .wrap(from_fn(security_headers))
                    .wrap(from_fn(observe))
                    .wrap(ErrorHandlers::new().default_handler(problem_for_bare_errors))
                    .wrap(NormalizePath::new(TrailingSlash::MergeOnly))
                    .wrap(from_fn(head_as_get))
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
                    .default_service(web::to(not_found))
            }
        });
        let server = server
            .disable_signals()
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            .max_connections(MAX_CONNECTIONS_PER_WORKER)
            .max_connection_rate(MAX_CONNECTION_RATE_PER_WORKER)
            .client_request_timeout(HEADERS_TIMEOUT)
            .keep_alive(KEEP_ALIVE)
            .listen(listener)?
            .run();

        // `/metrics` alone, on its own address: nothing else is reachable there.
        let metrics_server = metrics_listener
            .map(|listener| {
                let state = state.clone();
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .app_data(web::Data::new(MetricsListener))
                        .service(get_metrics::get_metrics)
                        .wrap(from_fn(security_headers))
                        .wrap(ErrorHandlers::new().default_handler(problem_for_bare_errors))
                        .default_service(web::to(not_found))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
                // A scraper or two, not the public.
                .max_connections(METRICS_MAX_CONNECTIONS)
                .client_request_timeout(HEADERS_TIMEOUT)
                .keep_alive(KEEP_ALIVE);
                server.listen(listener).map(HttpServer::run)
            })
            .transpose()?;

        Ok(Self {
            port,
            metrics_port,
            server,
            metrics_server,
            worker,
            ingest: ingest_handle,
            background,
            retention,
            drift_audit,
            confirming,
            clerk_instance: state.clerk_instance.clone(),
            stopping: state.stopping.clone(),
        })
    }

    /// The port actually bound (useful with `BIND_ADDR=…:0`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Where the Clerk instance stands, as the push worker and the drift
    /// audit see it.
    pub fn clerk_instance(&self) -> InstanceGate {
        self.clerk_instance.clone()
    }

    /// The port `/metrics` is served on when `METRICS_BIND_ADDR` is set.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_port
    }

    /// A handle that stops the servers.
    pub fn handle(&self) -> AppHandle {
        AppHandle {
            servers: std::iter::once(&self.server)
                .chain(&self.metrics_server)
                .map(Server::handle)
                .collect(),
            stopping: self.stopping.clone(),
        }
    }

    /// Serves until the servers are stopped through [`handle`](Self::handle),
    /// then stops the ingest writer (once what is queued is applied), the
    /// push worker (letting pushes in flight finish and handing back its
    /// claims) and the housekeeping.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let metrics_server = self.metrics_server;
        let metrics_served = async move {
            match metrics_server {
                Some(server) => server.await,
                None => Ok(()),
            }
        };
        let (served, metrics_served) = tokio::join!(self.server, metrics_served);
        self.ingest.shutdown().await;
        if let Some(worker) = self.worker {
            worker.shutdown().await;
        }
        let _ = self.background.send(true);
        let _ = self.retention.await;
        if let Some(audit) = self.drift_audit {
            let _ = audit.await;
        }
        if let Some(confirming) = self.confirming {
            let _ = confirming.await;
        }
        served.and(metrics_served)
    }
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("no resource at this path".into()))
}

/// Every documented (method, path) pair.
fn documented_operations(document: &utoipa::openapi::OpenApi) -> Vec<(&'static Method, &str)> {
    document
        .paths
        .paths
        .iter()
        .flat_map(|(path, item)| {
            [
                (&Method::GET, item.get.is_some()),
                (&Method::POST, item.post.is_some()),
                (&Method::PATCH, item.patch.is_some()),
            ]
            .into_iter()
            .filter(|(_, present)| *present)
            .map(move |(method, _)| (method, path.as_str()))
        })
        .collect()
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
    if clerk.authorized_parties.is_empty() {
        tracing::warn!(
            "CLERK_AUTHORIZED_PARTIES is not set: session tokens' `azp` is not checked, so a \
             token issued to any origin is taken (Clerk recommends the check against CSRF); set \
             it to the admin frontend's origins, e.g. https://admin.example.com"
        );
    }
    if let Some(pem) = &clerk.jwt_key {
        let verifier = SessionVerifier::with_pem(pem, issuer, &clerk.authorized_parties)
            .map_err(|error| anyhow::anyhow!("CLERK_JWT_KEY is not valid: {error}"))?;
        return Ok(Some(verifier));
    }
    let Some(client) = client else {
        tracing::warn!(
            "neither CLERK_JWT_KEY nor CLERK_SECRET_KEY is set: session tokens cannot be \
             verified and every admin API call answers 503; set CLERK_SECRET_KEY (sk_…, \
             tokens are checked against Clerk's JWKS) or CLERK_JWT_KEY (the instance's PEM \
             public key, from the dashboard's API keys page)"
        );
        return Ok(None);
    };
    Ok(Some(SessionVerifier::with_jwks(
        client,
        clerk.jwks_min_refetch,
        clerk.jwks_cache_ttl,
        issuer,
        &clerk.authorized_parties,
    )))
}

/// The drift audit, when `RECONCILE_INTERVAL` is not 0 and Clerk can be
/// read (`CLERK_SECRET_KEY`), with a Clerk client of its own (as the push
/// worker's).
fn drift_audit(
    config: &Config,
    db: &Db,
    allowance_ms: i64,
    metrics: &Arc<Metrics>,
    instance: &InstanceGate,
) -> anyhow::Result<Option<DriftAudit>> {
    let Some(interval) = config.drift_audit.interval else {
        tracing::info!("RECONCILE_INTERVAL is 0: no drift audit");
        return Ok(None);
    };
    let Some(client) = clerk_client(config)? else {
        tracing::warn!("CLERK_SECRET_KEY is not set: no drift audit");
        return Ok(None);
    };
    Ok(Some(DriftAudit::new(
        db.clone(),
        client,
        config.replica_id.clone(),
        audit_settings(config, interval, allowance_ms),
        metrics.clone(),
        instance.clone(),
    )))
}

/// How the drift audit runs, from the configuration, every `interval`.
pub fn audit_settings(config: &Config, interval: Duration, allowance_ms: i64) -> AuditSettings {
    AuditSettings {
        interval,
        rate_per_sec: config.clerk.push.rate_per_sec * config.drift_audit.rate_share,
        budget_per_sec: config.clerk.push.rate_per_sec,
        max_wait: config.clerk.push.retry_max,
        allowance_ms,
        max_deletions: config.drift_audit.max_deletions,
    }
}

/// A client of Clerk's Backend API; `None` without `CLERK_SECRET_KEY`.
pub fn clerk_client(config: &Config) -> anyhow::Result<Option<ClerkClient>> {
    config
        .clerk
        .connection()
        .map(ClerkClient::new)
        .transpose()
        .context("building the HTTP client for Clerk")
}

/// Opens the configured database with the configured pool size.
pub async fn connect(config: &Config) -> anyhow::Result<Db> {
    let where_ = match &config.database {
        DatabaseUrl::Postgres(_) => "PostgreSQL".to_owned(),
        DatabaseUrl::Sqlite(path) => format!("SQLite file {}", path.display()),
    };
    Db::connect_with(
        &config.database,
        config.database_max_connections,
        config.database_lock_timeout,
    )
    .await
    .with_context(|| format!("connecting to {where_}"))
}
