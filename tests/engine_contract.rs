//! The HTTP layer against what the `Store` trait lets an engine say: that it
//! cannot vouch for its catalog (a cluster node cut off from its cluster),
//! or that it does not offer a storage mode. The engine here is the embedded
//! one behind a wrapper that can say both, and requests go through
//! `http::dispatch` as the server sends them.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use kvs::domain::{Key, ProjectId, Role, StorageMode, Timestamp, TokenId, TokenRecord};
use kvs::domain::{TokenSecret, TokenSource};
use kvs::http::{App, dispatch};
use kvs::store::redb_engine::RedbStore;
use kvs::store::{
    Authority, Capabilities, Catalog, CatalogWrite, ChangeSets, Entry, KvCommit, KvWrite, ListPage,
    ListRequest, Read, Report, Store, StoreError, StoreSnapshot, Subscription,
};

/// The embedded engine, with a switch that cuts it off from its catalog and
/// without memory projects.
struct Wrapped {
    inner: RedbStore,
    cut_off: AtomicBool,
    /// Ticked when the engine is cut off, as the trait asks.
    lost: tokio::sync::watch::Sender<u64>,
}

impl Wrapped {
    fn cut_off(&self) {
        self.cut_off.store(true, Ordering::Release);
        self.lost.send_modify(|n| *n += 1);
    }
}

#[async_trait]
impl Store for Wrapped {
    fn catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        if self.cut_off.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable);
        }
        self.inner.catalog()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            storage_modes: &[StorageMode::Disk],
        }
    }

    fn subscribe(&self, project: &ProjectId) -> Result<Subscription, StoreError> {
        self.inner.subscribe(project)
    }

    fn revision(&self) -> u64 {
        self.inner.revision()
    }

    fn storage_bytes(&self) -> u64 {
        self.inner.storage_bytes()
    }

    fn is_writable(&self) -> bool {
        self.inner.is_writable()
    }

    async fn write_kv(&self, write: KvWrite) -> Result<KvCommit, StoreError> {
        self.inner.write_kv(write).await
    }

    async fn write_catalog(&self, write: CatalogWrite, by: Authority) -> Result<(), StoreError> {
        self.inner.write_catalog(write, by).await
    }

    async fn get(
        &self,
        project: &ProjectId,
        key: &Key,
        with_value: bool,
    ) -> Result<Read<Option<Entry>>, StoreError> {
        self.inner.get(project, key, with_value).await
    }

    async fn list(
        &self,
        project: &ProjectId,
        request: ListRequest,
    ) -> Result<Read<ListPage>, StoreError> {
        self.inner.list(project, request).await
    }

    async fn changes(
        &self,
        project: &ProjectId,
        after: u64,
        max_changes: usize,
    ) -> Result<ChangeSets, StoreError> {
        self.inner.changes(project, after, max_changes).await
    }

    fn catalog_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lost.subscribe()
    }

    async fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        self.inner.snapshot().await
    }

    async fn verify(&self) -> Result<Report, StoreError> {
        self.inner.verify().await
    }

    async fn compact(&self) -> Result<kvs::store::Compacted, StoreError> {
        self.inner.compact().await
    }

    async fn close(&self) {
        self.inner.close().await
    }
}

struct Harness {
    app: App,
    store: Arc<Wrapped>,
    admin: String,
    /// Kept so that the server does not look stopped to long requests.
    _stop: tokio::sync::watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let inner = RedbStore::open(&dir.path().join("data")).unwrap();
        let store = Arc::new(Wrapped {
            inner,
            cut_off: AtomicBool::new(false),
            lost: tokio::sync::watch::Sender::new(0),
        });
        let secret = TokenSecret::generate().unwrap();
        let admin = TokenRecord {
            id: TokenId::generate().unwrap(),
            digest: secret.digest(),
            role: Role::Admin,
            project: None,
            prefix: None,
            name: None,
            created_at: Timestamp::now(),
            expires_at: None,
            source: TokenSource::V1,
        };
        store
            .write_catalog(CatalogWrite::CreateToken(admin), Authority::server())
            .await
            .unwrap();
        let settings = kvs::config::Settings::with_data_dir(&dir.path().join("data"));
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let app = App {
            store: store.clone(),
            limiter: kvs::http::Limiter::new(&settings.limits),
            settings,
            started: Instant::now(),
            stopping,
            imported: Default::default(),
        };
        Harness {
            app,
            store,
            admin: secret.expose().to_owned(),
            _stop: stop,
            _dir: dir,
        }
    }

    /// Sends a request with the admin token; the status and the error code.
    async fn send(&self, method: &str, path: &str, body: &str) -> (StatusCode, String) {
        send(&self.app, &self.admin, method, path, body).await
    }
}

/// Sends a request with `token` through `dispatch`; the status and the
/// error code.
async fn send(
    app: &App,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let response = dispatch(app, request, peer).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| Some(body["error"]["code"].as_str()?.to_owned()))
        .unwrap_or_default();
    (status, code)
}

#[tokio::test]
async fn a_store_that_cannot_vouch_for_its_catalog_is_answered_503_never_a_stale_yes() {
    let harness = Harness::start().await;
    let (status, _) = harness.send("POST", "/v1/projects", r#"{"id":"p"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        harness.send("PUT", "/v1/projects/p/kv/k", "v").await.0,
        StatusCode::CREATED
    );
    harness.store.cut_off();
    for (method, path) in [
        ("GET", "/v1/projects/p/kv/k"),
        ("PUT", "/v1/projects/p/kv/k"),
        ("GET", "/v1/projects"),
        ("GET", "/v1/whoami"),
    ] {
        assert_eq!(
            harness.send(method, path, "w").await,
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable".to_owned()),
            "{method} {path}"
        );
    }
    harness.store.cut_off.store(false, Ordering::Release);
    assert_eq!(
        harness.send("GET", "/v1/projects/p/kv/k", "").await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_storage_mode_the_engine_does_not_offer_is_refused_with_400() {
    let harness = Harness::start().await;
    let body = r#"{"id":"m","storage":"memory"}"#;
    assert_eq!(
        harness.send("POST", "/v1/projects", body).await,
        (StatusCode::BAD_REQUEST, "bad_request".to_owned())
    );
    let (status, _) = harness.send("POST", "/v1/projects", r#"{"id":"d"}"#).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        harness
            .send("PATCH", "/v1/projects/d", r#"{"storage":"memory"}"#)
            .await,
        (StatusCode::BAD_REQUEST, "bad_request".to_owned())
    );
}

#[tokio::test]
async fn an_open_blocking_read_ends_with_503_when_the_store_loses_its_catalog() {
    let harness = Harness::start().await;
    harness.send("POST", "/v1/projects", r#"{"id":"p"}"#).await;
    harness.send("PUT", "/v1/projects/p/kv/k", "v").await;
    let waiting = harness.send("GET", "/v1/projects/p/kv/k?wait=60s", "");
    let cutting = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        harness.store.cut_off();
    };
    let both = async { tokio::join!(waiting, cutting) };
    let (answer, ()) = tokio::time::timeout(std::time::Duration::from_secs(10), both)
        .await
        .expect("the blocking read did not end within 10 s of the cut");
    assert_eq!(
        answer,
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".to_owned())
    );
}
