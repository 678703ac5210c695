//! Starting and stopping the server: open the store, make sure an admin
//! token and the default project exist, serve until the shutdown signal,
//! then finish the requests in flight and close the store (every
//! acknowledged write is already durable; closing drains the writer).
//!
//! Connections are served by hyper's HTTP/1.1 connection driver directly,
//! with our own accept loop, rather than through `axum::serve` and a
//! `Router`: kvs routes every request itself (`http::dispatch`), so the
//! Router's matching, extensions and boxed services were pure cost on each
//! request (about a tenth of the server's CPU per GET when profiled).

mod write_timeout;

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method};
use axum::response::IntoResponse as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tower::Layer as _;
use tower_http::cors::CorsLayer;

use crate::config::EtcdSettings;
use crate::config::Settings;
use crate::domain::{
    ProjectSettings, Public, Role, StorageMode, Timestamp, TokenSecret, TokenSource,
};
use crate::http::{ApiError, App, Limiter, Place, dispatch, mint};
use crate::store::{Authority, CatalogWrite, Store, StoreError, redb_engine::RedbStore};

/// The name and variable of the environment's admin token.
pub const ENV_ADMIN_TOKEN: &str = "KVS_ADMIN_TOKEN";

/// Runs the server on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    admin_secret: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Settings that can be wrong only now (files to read) are checked
    // before anything else starts.
    let tls = settings
        .tls
        .as_ref()
        .map(crate::tls::acceptor)
        .transpose()?;
    let cors = cors_layer(&settings.cors_origins)?;
    let dir = settings.data_dir.display();
    if settings.data_dir.exists() && !settings.data_dir.is_dir() {
        anyhow::bail!(
            "the data directory {dir} is a file, not a directory: give --data-dir (or \
             KVS_DATA_DIR) a directory, a new one or one that kvs made"
        );
    }
    let store: Arc<dyn Store> = match &settings.etcd {
        Some(etcd) => open_cluster(etcd).await?,
        None => open_embedded(&settings)?,
    };
    prepare(store.as_ref(), &settings, admin_secret).await?;
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let mut settings = settings;
    for origin in crate::config::listen_origins(listener.local_addr()?, tls.is_some()) {
        if !settings.origins.contains(&origin) {
            settings.origins.push(origin);
        }
    }
    let app = Arc::new(App {
        store: store.clone(),
        limiter: Limiter::new(&settings.limits),
        settings,
        started: Instant::now(),
        stopping: stop,
        imported: Default::default(),
    });
    let backups = crate::backup::schedule(
        store.clone(),
        app.settings.backup_interval,
        app.settings.backup_dir.clone(),
        app.settings.backup_keep,
        app.stopping.clone(),
    );
    let address = listener.local_addr()?;
    warn_of_open_access(store.as_ref(), &app.settings)?;
    tracing::info!(%address, "kvs is listening");
    serve(listener, app, (tls, cors), shutdown, stopping).await;
    if let Some(backups) = backups {
        // A scheduled backup under way is finished before the store closes.
        let _ = backups.await;
    }
    tracing::info!("stopping: requests in flight are done; closing the store");
    store.close().await;
    Ok(())
}

/// Opens the cluster store on etcd.
#[cfg(feature = "etcd")]
async fn open_cluster(etcd: &EtcdSettings) -> anyhow::Result<Arc<dyn Store>> {
    let endpoints = etcd.endpoints.join(",");
    tracing::info!(%endpoints, prefix = %etcd.prefix, "running as a cluster node over etcd");
    let opened = crate::store::etcd_engine::EtcdStore::open(etcd.clone()).await;
    Ok(Arc::new(opened.map_err(|error| {
        anyhow::Error::new(error).context(format!(
            "cannot open the cluster store on etcd at {endpoints}"
        ))
    })?))
}

/// A build without the `etcd` feature cannot be a cluster node.
#[cfg(not(feature = "etcd"))]
async fn open_cluster(_: &EtcdSettings) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!(crate::config::WITHOUT_ETCD)
}

/// Opens the embedded store in the data directory.
fn open_embedded(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    let dir = settings.data_dir.display();
    let opened = RedbStore::open_with_cache(
        &settings.data_dir,
        settings.watch_history,
        settings.cache_bytes,
    );
    Ok(Arc::new(opened.map_err(|error| {
        let text = format!("{error:#}");
        if text.contains("already open") || text.contains("acquire lock") {
            anyhow::anyhow!(
                "the store in {dir} is in use by another kvs server (its file is locked): \
                 stop that server first, or give this one another --data-dir (and --listen \
                 address)"
            )
        } else {
            anyhow::Error::new(error).context(format!("cannot open the store in {dir}"))
        }
    })?))
}

/// How long shutdown waits for requests in flight before it closes the store
/// anyway (every acknowledged write is already durable by then).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// How long the accept loop pauses after an error such as `EMFILE`: retrying
/// at once would spin on the same error, and a pause gives the connections
/// that are finishing time to give their descriptors back.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How often the rate limiters forget the clients they have not seen lately.
const FORGET_IDLE: Duration = Duration::from_secs(60);

/// How often the tokens that have expired are removed.
const TOKEN_SWEEP: Duration = Duration::from_secs(5);

/// The most catalog writes one sweep of expired tokens makes.
const EXPIRED_WRITES_PER_SWEEP: usize = 64;

/// Accepts connections and serves HTTP/1.1 (with keep-alive) on each until
/// `shutdown` completes. Then it stops accepting, asks every connection to
/// close once its request in flight is answered (an idle keep-alive
/// connection closes at once), and returns when all of them have closed.
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    (tls, cors): (Option<TlsAcceptor>, Option<CorsLayer>),
    shutdown: impl Future<Output = ()>,
    stopping: tokio::sync::watch::Sender<bool>,
) {
    let limits = app.settings.limits.clone();
    let mut http = http1::Builder::new();
    // One flattened buffer per answer: fewer iovecs than headers + body,
    // measured a few percent faster on small GETs. Without a bound on the
    // time to send headers, a client that stops half-way (slowloris) holds
    // its connection forever, and shutdown, which waits for every
    // connection, would never finish.
    http.keep_alive(true)
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes);
    let server = Connections {
        http,
        app: app.clone(),
        cors,
        tls,
        graceful: GracefulShutdown::new(),
    };
    let forget = tokio::spawn({
        let app = app.clone();
        async move {
            loop {
                tokio::time::sleep(FORGET_IDLE).await;
                app.limiter.forget_idle();
            }
        }
    });
    let sweep = tokio::spawn({
        let store = app.store.clone();
        async move {
            loop {
                tokio::time::sleep(TOKEN_SWEEP).await;
                remove_expired_tokens(store.as_ref()).await;
            }
        }
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => server.start(stream, peer.ip()),
            // The client gave up before we took its connection: nothing to do.
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                tracing::error!(%error, "cannot accept a connection; retrying shortly");
                tokio::select! {
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => continue,
                    () = &mut shutdown => break,
                }
            }
        };
    }
    drop(listener);
    forget.abort();
    sweep.abort();
    // Watches and blocking reads end now rather than hold shutdown up.
    stopping.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, server.graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {SHUTDOWN_GRACE:?}; closing anyway");
    }
}

/// Removes the tokens that have expired, all in one commit, when the
/// catalog holds any. One is refused from its expiry on, as a revoked one
/// is; kept, it would be listed for ever, and every short-lived token
/// minted would grow the catalog. Every cluster node sweeps: after the
/// first, the others find none left. A write that fails is tried again at
/// the next sweep.
async fn remove_expired_tokens(store: &dyn Store) {
    // Each write removes a few dozen; a sweep goes on while any are left,
    // up to a bound that leaves the rest to the next sweep.
    for _ in 0..EXPIRED_WRITES_PER_SWEEP {
        let now = Timestamp::now();
        let any = store
            .catalog()
            .is_ok_and(|catalog| catalog.tokens().iter().any(|t| t.is_expired(now)));
        if !any {
            return;
        }
        let write = CatalogWrite::RemoveExpiredTokens;
        if let Err(error) = store.write_catalog(write, Authority::server()).await {
            tracing::debug!(%error, "the expired tokens were not removed; the next sweep tries again");
            return;
        }
    }
}

/// What serving a connection takes.
struct Connections {
    http: http1::Builder,
    app: Arc<App>,
    cors: Option<CorsLayer>,
    tls: Option<TlsAcceptor>,
    graceful: GracefulShutdown,
}

impl Connections {
    /// Serves `stream` from `peer` on a task of its own: over TLS if the
    /// server has a certificate, and with a refusal if the server or the
    /// peer has as many connections open as it may.
    fn start(&self, stream: TcpStream, peer: IpAddr) {
        // Answers are small and written at once: no Nagle delay on them.
        let _ = stream.set_nodelay(true);
        let stream =
            write_timeout::WriteTimeout::new(stream, self.app.settings.limits.write_timeout);
        let slot = self.app.limiter.open_connection(peer);
        let (http, watcher) = (self.http.clone(), self.graceful.watcher());
        let (app, cors, tls) = (self.app.clone(), self.cors.clone(), self.tls.clone());
        let handshake_timeout = self.app.settings.limits.header_timeout;
        tokio::spawn(async move {
            let served = match tls {
                None => serve_connection(http, watcher, stream, app, cors, peer, slot).await,
                Some(acceptor) => {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(http, watcher, stream, app, cors, peer, slot).await
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "a TLS handshake failed");
                            Ok(())
                        }
                        Err(_) => Ok(()),
                    }
                }
            };
            // A client that resets or sends garbage ends only its own
            // connection; hyper has already answered what it could.
            if let Err(error) = served {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
}

/// Serves HTTP/1.1 on one connection until it closes or the server stops.
/// A connection over its cap is answered `429`/`503` and closed.
async fn serve_connection<I>(
    mut http: http1::Builder,
    watcher: hyper_util::server::graceful::Watcher,
    io: I,
    app: Arc<App>,
    cors: Option<CorsLayer>,
    peer: IpAddr,
    slot: Result<Place<IpAddr>, ApiError>,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let slot = match slot {
        Ok(slot) => slot,
        Err(refusal) => {
            // Answer the first request, so the client learns why, and close.
            http.keep_alive(false);
            let refuse = service_fn(move |_: hyper::Request<Incoming>| {
                let answer = refusal.clone().into_response();
                async move { Ok::<_, Infallible>(answer) }
            });
            return watcher.watch(http.serve_connection(io, refuse)).await;
        }
    };
    let api = move |request: hyper::Request<Incoming>| {
        let app = app.clone();
        async move { Ok::<_, Infallible>(dispatch(&app, request.map(Body::new), peer).await) }
    };
    // Without CORS, hyper calls the API directly: the tower adapter costs
    // a clone and a boxed state machine per request.
    let served = match cors {
        None => {
            watcher
                .watch(http.serve_connection(io, service_fn(api)))
                .await
        }
        Some(cors) => {
            let service = TowerToHyperService::new(cors.layer(tower::service_fn(api)));
            watcher.watch(http.serve_connection(io, service)).await
        }
    };
    drop(slot);
    served
}

/// The CORS layer for `origins` (`*`: any), or none when the list is empty:
/// browsers then keep other sites' pages from calling the API.
fn cors_layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    use tower_http::cors::{AllowOrigin, Any};
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::from(Any)
    } else {
        let list = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o.trim_end_matches('/'))
                    .with_context(|| format!("cors_origins: {o:?} is not an origin"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        AllowOrigin::list(list)
    };
    let named = |names: &[&'static str]| {
        names
            .iter()
            .map(|n| HeaderName::from_static(n))
            .collect::<Vec<_>>()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::PUT,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(named(&[
                "authorization",
                "content-type",
                "x-api-key",
                "api-key",
                "if-match",
                "if-none-match",
                "last-event-id",
            ]))
            .expose_headers(named(&[
                "etag",
                "last-modified",
                "location",
                "retry-after",
                "kvs-revision",
                "kvs-version",
                "kvs-key",
                "kvs-created-at",
                "kvs-expires-at",
            ]))
            .max_age(Duration::from_secs(600)),
    ))
}

/// Errors that concern one connection, not the listener.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}

/// Says at start, in the log, what requests without credential may do
/// here: each `public` project, and Simple-PyKV's admin routes if open.
fn warn_of_open_access(store: &dyn Store, settings: &Settings) -> anyhow::Result<()> {
    for project in store.catalog()?.projects() {
        let access = project.settings.public;
        if access != Public::None {
            tracing::warn!(
                project = project.settings.id.as_str(),
                public = access.as_str(),
                "this project's keys are open to requests without a token"
            );
        }
    }
    if settings.simple_pykv_open_admin {
        tracing::warn!(
            "simple_pykv_open_admin is on: /status and /api/v1/projects answer requests \
             without a token as an admin's (anyone who reaches this server may create, change \
             and delete projects there)"
        );
    }
    Ok(())
}

/// Admin token and default project, as the contract wants them at start.
async fn prepare(
    store: &dyn Store,
    settings: &Settings,
    admin_secret: Option<String>,
) -> anyhow::Result<()> {
    let env_token = match admin_secret {
        Some(secret) => {
            anyhow::ensure!(
                TokenSecret::is_well_formed(&secret),
                "{ENV_ADMIN_TOKEN} must look like kvs_ followed by 43 base64url characters \
                 (make one with: echo kvs_$(head -c 32 /dev/urandom | base64 | tr '+/' '-_' \
                 | tr -d '=\\n'))"
            );
            let secret = TokenSecret::presented(&secret);
            let (mut record, _) = mint(
                Role::Admin,
                None,
                None,
                Some(ENV_ADMIN_TOKEN.to_owned()),
                None,
                TokenSource::Env,
            )
            .map_err(|_| anyhow::anyhow!("no random source for a token id"))?;
            record.digest = secret.digest();
            Some(record)
        }
        None => None,
    };
    // A single server's KVS_ADMIN_TOKEN follows the environment: replaced
    // at each start, removed by a start without it. A cluster node's is
    // added if it is new and removes nothing, so that nodes started with
    // other values (or none) never delete one another's.
    let write = match (&settings.etcd, env_token) {
        (None, token) => Some(CatalogWrite::ReplaceNamedTokens {
            source: TokenSource::Env,
            name: ENV_ADMIN_TOKEN.to_owned(),
            token,
        }),
        (Some(_), Some(token)) => Some(CatalogWrite::AddTokenOnce(token)),
        (Some(_), None) => None,
    };
    if let Some(write) = write {
        store
            .write_catalog(write, Authority::server())
            .await
            .context("cannot record the KVS_ADMIN_TOKEN token")?;
    }
    if store.catalog()?.live_admin_tokens(Timestamp::now()) == 0 {
        bootstrap_admin(store, &settings.data_dir).await?;
    }
    if store
        .catalog()?
        .project(&settings.default_project)
        .is_none()
    {
        let project = ProjectSettings {
            id: settings.default_project.clone(),
            storage: StorageMode::Disk,
            keys_discoverable: true,
            max_value_bytes: crate::http::DEFAULT_MAX_VALUE_BYTES.min(settings.max_value_bytes),
            max_keys: None,
            public: Public::None,
            created_at: Timestamp::now(),
            created_revision: 0,
        };
        let created = store
            .write_catalog(
                CatalogWrite::CreateProject {
                    settings: project,
                    token: None,
                },
                Authority::server(),
            )
            .await;
        // Another cluster node made it first: as good.
        if created != Err(StoreError::ProjectExists) {
            created.context("cannot create the default project")?;
        }
    }
    Ok(())
}

/// With no admin token at all, makes one and writes its secret to
/// `<data_dir>/admin-token` (mode 0600). The log names the file, never the
/// secret.
async fn bootstrap_admin(store: &dyn Store, data_dir: &Path) -> anyhow::Result<()> {
    let (record, secret) = mint(
        Role::Admin,
        None,
        None,
        Some("bootstrap".to_owned()),
        None,
        TokenSource::Bootstrap,
    )
    .map_err(|_| anyhow::anyhow!("no random source for a token"))?;
    let path = data_dir.join("admin-token");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{}", secret.expose())?;
    file.sync_all()?;
    match store
        .write_catalog(CatalogWrite::CreateFirstAdmin(record), Authority::server())
        .await
    {
        Ok(_) => {}
        // Another cluster node, started at the same moment, made it.
        Err(StoreError::Conflict(_)) => {
            drop(file);
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            tracing::warn!(
                "another node made the first admin token at the same moment: its secret \
                 is in the admin-token file of that node's data directory"
            );
            return Ok(());
        }
        Err(error) => return Err(error).context("cannot record the first admin token"),
    }
    tracing::warn!(
        path = %path.display(),
        "created the first admin token; its secret is in this file (read it with: cat {})",
        path.display()
    );
    Ok(())
}
