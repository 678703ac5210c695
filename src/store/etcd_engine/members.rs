//! Which etcd member a node talks to. etcd-client's balanced channel keeps
//! sending requests to a member that is down (etcd-client#39: a node given
//! three endpoints with one of them stopped could not even start), so a
//! node keeps one client per endpoint and sends everything to one member
//! at a time: the current one. When the probe cannot confirm the view
//! through it (the member is down, cut off from the others' quorum, or too
//! slow), the node moves on to the next member that answers a linearizable
//! read, and the watch is opened again there. A member that could not be
//! reached at start (with etcd authentication, connecting authenticates)
//! is connected when its turn comes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use etcd_client::{Client, ConnectOptions, GetOptions, KvClient, WatchClient};
use tokio::sync::watch;

use super::MAX_ANSWER_BYTES;
use crate::store::StoreError;

/// How long a member may take to answer the read that tries it.
const TRY_FOR: Duration = Duration::from_secs(1);

/// The clients of one member.
pub struct Clients {
    pub kv: KvClient,
    pub watch: WatchClient,
}

pub struct Members {
    urls: Vec<String>,
    options: ConnectOptions,
    clients: Vec<ArcSwapOption<Clients>>,
    /// The clients of the first member connected, for `current` to fall
    /// back on (never needed: the current member is always connected).
    first: Arc<Clients>,
    current: AtomicUsize,
    /// Ticked with the current member's index when it changes: the watch
    /// opens again on the new one.
    moved: watch::Sender<usize>,
}

impl Members {
    /// Connects to every endpoint that can be reached now; one at least.
    pub async fn connect(urls: &[String], options: ConnectOptions) -> Result<Members, StoreError> {
        let mut clients: Vec<ArcSwapOption<Clients>> =
            urls.iter().map(|_| ArcSwapOption::empty()).collect();
        let mut errors = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            match connect(url, &options).await {
                Ok(connected) => clients[index] = ArcSwapOption::from(Some(connected)),
                Err(error) => errors.push(format!("{url}: {error}")),
            }
        }
        let Some((current, first)) = clients
            .iter()
            .enumerate()
            .find_map(|(index, c)| c.load_full().map(|c| (index, c)))
        else {
            return Err(StoreError::internal(format!(
                "cannot connect to etcd: {}",
                errors.join("; ")
            )));
        };
        Ok(Members {
            urls: urls.to_vec(),
            options,
            clients,
            first,
            current: AtomicUsize::new(current),
            moved: watch::Sender::new(current),
        })
    }

    /// The current member's clients.
    pub fn current(&self) -> Arc<Clients> {
        let index = self.current.load(Ordering::Acquire);
        self.clients[index]
            .load_full()
            .unwrap_or_else(|| self.first.clone())
    }

    /// A receiver ticked when the current member changes.
    pub fn moves(&self) -> watch::Receiver<usize> {
        self.moved.subscribe()
    }

    /// Moves to the next member (after the current one, in order) that
    /// answers a linearizable read of `key`; stays when none does. True
    /// when it moved.
    pub async fn move_on(&self, key: &str) -> bool {
        let from = self.current.load(Ordering::Acquire);
        for step in 1..self.urls.len() {
            let index = (from + step) % self.urls.len();
            let Ok(clients) = self.connected(index).await else {
                continue;
            };
            let options = GetOptions::new().with_count_only();
            let mut kv = clients.kv.clone();
            let read = tokio::time::timeout(TRY_FOR, kv.get(key, Some(options))).await;
            if matches!(read, Ok(Ok(_))) {
                tracing::warn!(
                    from = %self.urls[from],
                    to = %self.urls[index],
                    "the etcd member in use does not answer: moving to another"
                );
                self.current.store(index, Ordering::Release);
                self.moved.send_replace(index);
                return true;
            }
        }
        false
    }

    /// The clients of member `index`, connecting them first if need be.
    async fn connected(&self, index: usize) -> Result<Arc<Clients>, StoreError> {
        if let Some(clients) = self.clients[index].load_full() {
            return Ok(clients);
        }
        let clients = connect(&self.urls[index], &self.options).await?;
        self.clients[index].store(Some(clients.clone()));
        Ok(clients)
    }
}

/// Clients of the member at `url`.
async fn connect(url: &str, options: &ConnectOptions) -> Result<Arc<Clients>, StoreError> {
    let connect = Client::connect([url], Some(options.clone()));
    let client = tokio::time::timeout(TRY_FOR * 5, connect)
        .await
        .map_err(|_| StoreError::internal(format!("connecting to {url} timed out")))?
        .map_err(StoreError::internal)?;
    Ok(Arc::new(Clients {
        kv: client
            .kv_client()
            .max_decoding_message_size(MAX_ANSWER_BYTES),
        watch: client
            .watch_client()
            .max_decoding_message_size(MAX_ANSWER_BYTES),
    }))
}
