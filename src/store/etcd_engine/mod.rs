//! The etcd engine: a cluster node whose projects, tokens, keys and
//! revisions live in an etcd v3 cluster, behind the same [`Store`] trait.
//!
//! - Revisions are etcd's: one per cluster, a key's version is the
//!   `mod_revision` of the kvs write that last wrote it.
//! - A key/value write reads the keys it touches (one etcd read transaction),
//!   judges the write with [`crate::store::kv::evaluate`] over them, and
//!   commits one etcd transaction whose compares are what it read (the
//!   `mod_revision` of each key, of the project's record, and range compares
//!   for prefix scans and key counts); on a lost compare it starts again,
//!   a bounded number of times. Catalog writes go the same way through
//!   [`crate::store::plan`], compared on one generation key.
//! - One etcd watch on the whole prefix ([`follow`]) feeds the node's view:
//!   the catalog, every project's figures and change feed, the revision, all
//!   published through [`crate::store::publish`] in revision order. A write is
//!   answered once the watch has published its revision on this node.
//! - The view is vouched for by a probe: a linearizable read of the cluster's
//!   revision, then a watch progress request; once the watch has reached
//!   that revision, the view is fresh as of the moment the read was sent.
//!   `catalog()` answers `Unavailable` when that moment is over 1 s old.
//! - Expiry is a sweep (every node runs it; compares make the duplicates
//!   lose) over an expiry index; each sweep transaction also writes a marker
//!   key, so that every node reads its deletes as expiries.
//! - The change log is etcd's own history: `changes` reads it with a watch
//!   from a past revision, and a compacted revision is `HistoryCompacted`.
//!
//! The engine runs its I/O on a small runtime of its own, so that it can be
//! opened and used from any runtime (or none).

mod fetch;
mod follow;
mod layout;
mod members;
mod read;
mod restore;
mod write;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use etcd_client::{ConnectOptions, GetOptions, KvClient, WatchClient};
use tokio::sync::watch;

use crate::domain::{Key, ProjectId, StorageMode};
use crate::store::publish::View;
use crate::store::{
    Authority, Capabilities, Catalog, CatalogWrite, ChangeSets, Compacted, Entry, KvCommit,
    KvWrite, ListPage, ListRequest, Project, Read, Report, Store, StoreError, StoreSnapshot,
    Subscription,
};
use layout::Layout;

pub use crate::config::{DEFAULT_MAX_REQUEST_BYTES, EtcdSettings, EtcdTls};
pub use restore::EtcdRestorer;

/// How long a view stays vouched for after the probe that confirmed it.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// How often the probe runs.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How often expired keys are swept.
const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// How long one request to etcd may take before its outcome is unknown.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer taken from etcd: what etcd itself sends at most
/// (its gRPC send limit is 2 GiB). The client's default, 4 MiB, refused a
/// listing, a start-up load or a backup of a project holding five values
/// of 1 MiB, and a watch catching up over large values; range reads are
/// paged by size ([`page_limit`]), so answers stay far below this.
const MAX_ANSWER_BYTES: usize = i32::MAX as usize;
/// About how many bytes one page of a range read should hold.
const PAGE_BYTES: usize = 8 << 20;
/// Records asked for in the first page of a range read, before any size is
/// known.
const FIRST_PAGE: usize = 128;

/// The catalog as the watch last published it, with the etcd revisions that
/// writes compare on, all from one moment.
struct Mirror {
    catalog: Arc<Catalog>,
    /// `mod_revision` of `c/gen` (0: never written).
    generation: i64,
    /// `mod_revision` of each project's record.
    projects: HashMap<ProjectId, i64>,
}

/// State shared by the store, its watch, its probe and its sweep.
struct Inner {
    members: members::Members,
    layout: Layout,
    view: View,
    mirror: ArcSwap<Mirror>,
    /// The newest revision the watch has published.
    reached: watch::Sender<u64>,
    /// The revision the node read at start. Every revision published
    /// after it is one with an event under the prefix; this one may not be.
    started: u64,
    /// The newest revision the watch vouches for (events or progress).
    known: watch::Sender<i64>,
    /// The newest revision a linearizable answer of etcd came at. It may be
    /// ahead of `reached`: writes outside the prefix take revisions too,
    /// and no event of the watch ever reaches them.
    answered: AtomicU64,
    /// When the last probe that the watch confirmed was sent.
    fresh_at: Mutex<Instant>,
    /// Ticked on every catalog change and when the view stops being fresh.
    ticks: watch::Sender<u64>,
    /// The watch stream's request side, for progress requests.
    progress: tokio::sync::Mutex<Option<etcd_client::WatchRequestSender>>,
    /// Set when the watch lost its place (its revision was compacted): the
    /// view can no longer be vouched for until a restart.
    lost: AtomicBool,
    closed: AtomicBool,
    max_request_bytes: u64,
    /// Lone increments waiting on this node, combined per key.
    incrs: write::Waiting,
}

impl Inner {
    fn is_fresh(&self) -> bool {
        if self.lost.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.fresh_at
            .lock()
            .map(|at| at.elapsed() <= FRESH_FOR)
            .unwrap_or(false)
    }

    /// The mirror, when the view is fresh.
    fn mirror(&self) -> Result<Arc<Mirror>, StoreError> {
        if self.is_fresh() {
            Ok(self.mirror.load_full())
        } else {
            Err(StoreError::Unavailable)
        }
    }

    fn project(&self, id: &ProjectId) -> Result<Arc<Project>, StoreError> {
        self.mirror()?
            .catalog
            .project(id)
            .cloned()
            .ok_or(StoreError::ProjectNotFound)
    }

    /// Waits (at most `limit`) until the watch has published `revision`.
    async fn reach(&self, revision: u64, limit: Duration) -> bool {
        let mut reached = self.reached.subscribe();
        tokio::time::timeout(limit, reached.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Takes note of a revision etcd answered a linearizable request at.
    fn answered_at(&self, revision: u64) {
        self.answered.fetch_max(revision, Ordering::AcqRel);
    }

    /// The key/value client (reads, transactions).
    fn kv(&self) -> KvClient {
        self.members.current().kv.clone()
    }

    /// The watch client.
    fn watcher(&self) -> WatchClient {
        self.members.current().watch.clone()
    }
}

/// The etcd-backed [`Store`].
pub struct EtcdStore {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Things kept alive as long as the store (a test's etcd process).
    kept: Mutex<Vec<Box<dyn std::any::Any + Send>>>,
}

impl EtcdStore {
    /// Connects to the cluster, loads the catalog and starts the watch, the
    /// probe and the sweep. Blocks: call it off the async runtime (or use
    /// [`EtcdStore::open`]).
    pub fn open_blocking(settings: EtcdSettings) -> Result<EtcdStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kvs-etcd")
            .enable_all()
            .build()
            .map_err(StoreError::internal)?;
        let inner = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(start(settings)))
                .join()
                .map_err(|_| StoreError::internal("the etcd start-up panicked"))?
        })?;
        Ok(EtcdStore {
            inner,
            runtime: Some(runtime),
            kept: Mutex::new(Vec::new()),
        })
    }

    /// [`EtcdStore::open_blocking`] from async code.
    pub async fn open(settings: EtcdSettings) -> Result<EtcdStore, StoreError> {
        tokio::task::spawn_blocking(move || EtcdStore::open_blocking(settings))
            .await
            .map_err(StoreError::internal)?
    }

    /// Keeps `thing` alive as long as the store (a test's etcd process,
    /// stopped when the store is dropped).
    pub fn keep(&self, thing: Box<dyn std::any::Any + Send>) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.push(thing);
        }
    }

    /// Runs `work` on the engine's runtime and waits for it.
    async fn run<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        runtime.spawn(work).await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Connects, loads, and starts the background tasks (on the current runtime).
async fn start(settings: EtcdSettings) -> Result<Arc<Inner>, StoreError> {
    let members =
        members::Members::connect(&settings.endpoints, connect_options(&settings)?).await?;
    let layout = Layout::new(&settings.prefix);
    // From the first member that answers.
    let mut loaded = follow::load(&members.current().kv, &layout).await;
    for _ in 1..settings.endpoints.len() {
        if loaded.is_ok() || !members.move_on(&layout.generation()).await {
            break;
        }
        loaded = follow::load(&members.current().kv, &layout).await;
    }
    let loaded = loaded?;
    let revision = loaded.revision;
    let inner = Arc::new(Inner {
        members,
        layout,
        view: View::new(loaded.catalog.clone(), revision),
        mirror: ArcSwap::from_pointee(Mirror {
            catalog: Arc::new(Catalog::default()),
            generation: loaded.generation,
            projects: loaded.projects,
        }),
        reached: watch::Sender::new(revision),
        started: revision,
        known: watch::Sender::new(revision as i64),
        answered: AtomicU64::new(revision),
        fresh_at: Mutex::new(Instant::now()),
        ticks: watch::Sender::new(0),
        progress: tokio::sync::Mutex::new(None),
        lost: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        max_request_bytes: settings.max_request_bytes,
        incrs: Default::default(),
    });
    let published = inner.view.catalog();
    inner.mirror.rcu(|old| Mirror {
        catalog: published.clone(),
        generation: old.generation,
        projects: old.projects.clone(),
    });
    tokio::spawn(follow::follow(inner.clone(), revision as i64 + 1));
    tokio::spawn(follow::probe(inner.clone()));
    tokio::spawn(follow::freshness(inner.clone()));
    tokio::spawn(write::sweep(inner.clone()));
    Ok(inner)
}

/// How the etcd client connects: timeouts, keep-alive, user, TLS.
fn connect_options(settings: &EtcdSettings) -> Result<ConnectOptions, StoreError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(RPC_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some((user, password)) = &settings.user {
        options = options.with_user(user.clone(), password.clone());
    }
    if let Some(tls) = &settings.tls {
        options = options.with_tls(tls_options(tls)?);
    }
    Ok(options)
}

/// The TLS settings of the etcd client, from the files `tls` names.
fn tls_options(tls: &crate::config::EtcdTls) -> Result<etcd_client::TlsOptions, StoreError> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| {
            StoreError::internal(format!("cannot read {}: {error}", path.display()))
        })
    };
    let mut options = etcd_client::TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read(&tls.ca_cert)?));
    if let Some((cert, key)) = &tls.client {
        options = options.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
    }
    Ok(options)
}

/// Maps an etcd error on a request that changes nothing (a read).
fn read_error(error: etcd_client::Error) -> StoreError {
    tracing::warn!(%error, "etcd read failed");
    StoreError::Unavailable
}

#[async_trait]
impl Store for EtcdStore {
    fn catalog(&self) -> Result<Arc<Catalog>, StoreError> {
        // From the mirror, as every lookup of a project here is: the view
        // publishes a change a moment before the mirror takes it, and a
        // project shown by the view's catalog could be missing from the
        // mirror a request then asks.
        Ok(self.inner.mirror()?.catalog.clone())
    }

    fn capabilities(&self) -> Capabilities {
        // `memory` projects are kept in etcd like `disk` ones (replicated
        // and durable): the mode is kept so that a backup restores into the
        // embedded engine as it was.
        Capabilities {
            storage_modes: &[StorageMode::Disk, StorageMode::Memory],
        }
    }

    fn subscribe(&self, project: &ProjectId) -> Result<Subscription, StoreError> {
        let project = self.inner.project(project)?;
        Ok(Subscription {
            incarnation: project.incarnation,
            feed: project.stats.feed.clone(),
        })
    }

    fn revision(&self) -> u64 {
        self.inner.view.revision()
    }

    fn storage_bytes(&self) -> u64 {
        0
    }

    async fn resumable_revision(&self, asked: u64) -> Result<u64, StoreError> {
        let known = (self.inner.view.revision()).max(self.inner.answered.load(Ordering::Acquire));
        if asked <= known {
            return Ok(known);
        }
        // Perhaps a revision another node answered at: the cluster's own
        // revision now tells.
        let inner = self.inner.clone();
        let now = self
            .run(async move { cluster_revision(&inner).await })
            .await?;
        Ok(known.max(now.max(0) as u64))
    }

    fn is_writable(&self) -> bool {
        self.inner.is_fresh()
    }

    async fn catch_up(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.run(async move {
            // As the probe does: the cluster's revision now, then the watch
            // vouching for it.
            let revision = cluster_revision(&inner).await?;
            if let Some(sender) = inner.progress.lock().await.as_mut() {
                let _ = sender.request_progress().await;
            }
            let mut known = inner.known.subscribe();
            match tokio::time::timeout(FRESH_FOR, known.wait_for(|k| *k >= revision)).await {
                Ok(Ok(_)) => Ok(()),
                _ => Err(StoreError::Unavailable),
            }
        })
        .await
    }

    async fn write_kv(&self, write: KvWrite) -> Result<KvCommit, StoreError> {
        let inner = self.inner.clone();
        self.run(async move { write::kv(&inner, write).await })
            .await
    }

    async fn write_catalog(&self, write: CatalogWrite, by: Authority) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        self.run(async move { write::catalog(&inner, write, &by).await })
            .await
    }

    async fn get(
        &self,
        project: &ProjectId,
        key: &Key,
        with_value: bool,
    ) -> Result<Read<Option<Entry>>, StoreError> {
        let inner = self.inner.clone();
        let (project, key) = (project.clone(), key.clone());
        self.run(async move { read::get(&inner, &project, &key, with_value).await })
            .await
    }

    async fn list(
        &self,
        project: &ProjectId,
        request: ListRequest,
    ) -> Result<Read<ListPage>, StoreError> {
        let inner = self.inner.clone();
        let project = project.clone();
        self.run(async move { read::list(&inner, &project, request).await })
            .await
    }

    async fn changes(
        &self,
        project: &ProjectId,
        after: u64,
        max_changes: usize,
    ) -> Result<ChangeSets, StoreError> {
        let inner = self.inner.clone();
        let project = project.clone();
        self.run(async move { read::changes(&inner, &project, after, max_changes).await })
            .await
    }

    fn catalog_changes(&self) -> watch::Receiver<u64> {
        self.inner.ticks.subscribe()
    }

    async fn snapshot(&self) -> Result<Box<dyn StoreSnapshot>, StoreError> {
        let inner = self.inner.clone();
        let snapshot = self
            .run(async move { read::snapshot(&inner).await })
            .await?;
        Ok(Box::new(snapshot))
    }

    async fn verify(&self) -> Result<Report, StoreError> {
        // etcd checks its own data (`etcdctl check datascale`, hash checks
        // between members); every record kvs reads is checked as it is read.
        Ok(Report::default())
    }

    async fn compact(&self) -> Result<Compacted, StoreError> {
        Err(StoreError::Conflict(
            "a cluster node keeps no store of its own: etcd keeps the data, and \
             `etcdctl defrag` gives its room back"
                .to_owned(),
        ))
    }

    async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.ticks.send_modify(|tick| *tick += 1);
    }
}

/// A linearizable read of one name's count: the cluster's revision now.
async fn cluster_revision(inner: &Inner) -> Result<i64, StoreError> {
    let options = GetOptions::new().with_count_only();
    let name = inner.layout.generation();
    let response = send(inner, |mut kv| {
        let (name, options) = (name.clone(), options.clone());
        async move { kv.get(name, Some(options)).await }
    })
    .await
    .map_err(read_error)?;
    let revision = response
        .header()
        .map(|h| h.revision())
        .ok_or_else(|| StoreError::internal("etcd answered without a header"))?;
    inner.answered_at(revision.max(0) as u64);
    Ok(revision)
}

/// How many times a request that reached no etcd member is sent. The etcd
/// client spreads requests over every endpoint, a dead one too (it does not
/// skip it: etcd-client#39), so with one member of three down a third of
/// the requests failed with a refused connection, as 503s, for as long as
/// the member stayed down. Such a request never left this node: sending it
/// again is safe, writes included, and most likely reaches a live member.
const SEND_TRIES: u32 = 8;

/// Whether `error` says that the request reached no member (the connection
/// to the endpoint the client picked was refused or could not be made).
fn not_sent(error: &etcd_client::Error) -> bool {
    // gRPC code 14: unavailable; tonic says "tcp connect error" when it
    // could not connect.
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.code() as i32 == 14 && status.message() == "tcp connect error")
}

/// Runs `call` on the member in use, again (at most [`SEND_TRIES`] times in
/// all, moving to another member first) while it fails without having
/// reached one.
async fn send<T, F, Fut>(inner: &Inner, call: F) -> Result<T, etcd_client::Error>
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 1;
    loop {
        match call(inner.kv()).await {
            Err(error) if not_sent(&error) && tries < SEND_TRIES => {
                // The member in use cannot be reached: try another.
                inner.members.move_on(&inner.layout.generation()).await;
                tries += 1;
            }
            answer => return answer,
        }
    }
}

/// Runs `call` on `kv` (one member's client, before the node has its
/// members), again (at most [`SEND_TRIES`] times in all) while it fails
/// without having reached the member.
async fn send_on<T, F, Fut>(kv: &KvClient, call: F) -> Result<T, etcd_client::Error>
where
    F: Fn(KvClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 1;
    loop {
        match call(kv.clone()).await {
            Err(error) if not_sent(&error) && tries < SEND_TRIES => tries += 1,
            answer => return answer,
        }
    }
}

/// How many records to ask for in the next page of a range read, at most
/// `wanted`: as many as fit in [`PAGE_BYTES`] if each were as large as the
/// largest seen so far (`None`: nothing seen yet). Values may be as large
/// as etcd's request limit, so a fixed count of 1000 could mean a page of
/// gigabytes.
fn page_limit(largest: Option<usize>, wanted: usize) -> i64 {
    let fits = match largest {
        None => FIRST_PAGE,
        Some(size) => PAGE_BYTES / size.max(1),
    };
    fits.clamp(1, wanted.max(1)) as i64
}
