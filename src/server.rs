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

use std::convert::Infallible;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::domain::{ProjectSettings, Role, StorageMode, Timestamp, TokenSecret, TokenSource};
use crate::http::{App, dispatch, mint};
use crate::store::{CatalogWrite, Store, redb_engine::RedbStore};

/// The name and variable of the environment's admin token.
pub const ENV_ADMIN_TOKEN: &str = "KVS_ADMIN_TOKEN";

/// Runs the server on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    settings: Settings,
    admin_secret: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open_with(&settings.data_dir, settings.watch_history)
            .with_context(|| format!("cannot open the store in {}", settings.data_dir.display()))?,
    );
    prepare(store.as_ref(), &settings, admin_secret).await?;
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let app = Arc::new(App {
        store: store.clone(),
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
    tracing::info!(%address, "kvs is listening");
    serve(listener, app, shutdown, stopping).await;
    if let Some(backups) = backups {
        // A scheduled backup under way is finished before the store closes.
        let _ = backups.await;
    }
    tracing::info!("stopping: requests in flight are done; closing the store");
    store.close().await;
    Ok(())
}

/// How long a client may take to send a request's headers. Without a bound,
/// a client that stops half-way holds its connection forever, and shutdown,
/// which waits for every connection, would never finish.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for requests in flight before it closes the store
/// anyway (every acknowledged write is already durable by then).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

/// How long the accept loop pauses after an error such as `EMFILE`: retrying
/// at once would spin on the same error, and a pause gives the connections
/// that are finishing time to give their descriptors back.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections and serves HTTP/1.1 (with keep-alive) on each until
/// `shutdown` completes. Then it stops accepting, asks every connection to
/// close once its request in flight is answered (an idle keep-alive
/// connection closes at once), and returns when all of them have closed.
async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
    stopping: tokio::sync::watch::Sender<bool>,
) {
    let mut http = http1::Builder::new();
    // One flattened buffer per answer: fewer iovecs than headers + body,
    // measured a few percent faster on small GETs.
    http.keep_alive(true)
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
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
        // Answers are small and written at once: no Nagle delay on them.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |request: hyper::Request<Incoming>| {
            let app = app.clone();
            async move { Ok::<_, Infallible>(dispatch(&app, request.map(Body::new)).await) }
        });
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that resets or sends garbage ends only its own
            // connection; hyper has already answered what it could.
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Watches and blocking reads end now rather than hold shutdown up.
    stopping.send_replace(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after {SHUTDOWN_GRACE:?}; closing anyway");
    }
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
                 (make one with `kvs token generate`)"
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
    store
        .write_catalog(CatalogWrite::ReplaceNamedTokens {
            source: TokenSource::Env,
            name: ENV_ADMIN_TOKEN.to_owned(),
            token: env_token,
        })
        .await
        .context("cannot record the KVS_ADMIN_TOKEN token")?;
    if store.catalog().live_admin_tokens(Timestamp::now()) == 0 {
        bootstrap_admin(store, &settings.data_dir).await?;
    }
    if store.catalog().project(&settings.default_project).is_none() {
        let project = ProjectSettings {
            id: settings.default_project.clone(),
            storage: StorageMode::Disk,
            keys_discoverable: true,
            max_value_bytes: crate::http::DEFAULT_MAX_VALUE_BYTES,
            max_keys: None,
            created_at: Timestamp::now(),
            created_revision: 0,
        };
        store
            .write_catalog(CatalogWrite::CreateProject {
                settings: project,
                token: None,
            })
            .await
            .context("cannot create the default project")?;
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
    store
        .write_catalog(CatalogWrite::CreateToken(record))
        .await
        .context("cannot record the first admin token")?;
    tracing::warn!(
        path = %path.display(),
        "created the first admin token; its secret is in this file (read it with: cat {})",
        path.display()
    );
    Ok(())
}
