//! Starting and stopping the server: open the store, make sure an admin
//! token and the default project exist, serve until the shutdown signal,
//! then finish the requests in flight and close the store (every
//! acknowledged write is already durable; closing drains the writer).

use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::domain::{ProjectSettings, Role, StorageMode, Timestamp, TokenSecret, TokenSource};
use crate::http::{App, mint, router};
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
    let store: Arc<dyn Store> =
        Arc::new(RedbStore::open(&settings.data_dir).with_context(|| {
            format!("cannot open the store in {}", settings.data_dir.display())
        })?);
    prepare(store.as_ref(), &settings, admin_secret).await?;
    let app = Arc::new(App {
        store: store.clone(),
        settings,
        started: Instant::now(),
    });
    let address = listener.local_addr()?;
    tracing::info!(%address, "kvs is listening");
    // Answers are small and written at once: no Nagle delay on them.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
        .context("the server failed")?;
    tracing::info!("stopping: requests in flight are done; closing the store");
    store.close().await;
    Ok(())
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
