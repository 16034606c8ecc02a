//! Cluster mode of Ignis (docs/cluster.md): several `ignis serve --cluster nats://…` nodes share
//! one NATS JetStream, which is the only thing they need in common.
//!
//! - [`ReplicatedStore`]: the [`ignis_store::Store`] of every node. Each write is a command
//!   appended to one JetStream stream (`IGNIS_LOG`, replicated by JetStream's own Raft); every
//!   node applies the stream, in order, to a local SQLite replica and answers reads from it
//!   once it has applied everything written before the read began. A write returns when its
//!   own node has applied it, with the replica's answer: conditional writes (create-only,
//!   compare-and-swap, a scheduled time fired once) are decided by the log's order, the same
//!   on every node.
//! - [`CodeMirror`]: code blobs in the JetStream object store `ignis_code`.
//! - [`Membership`] and [`Dispatcher`]: invokers announce themselves with heartbeats in the KV
//!   bucket `ignis_invokers`; a gateway sends an invocation to the function's home invoker
//!   (rendezvous hashing over the live invokers), over NATS request/reply, and overflows to
//!   the next ones when the home one is full. [`InvokerService`] answers on an invoker.
//! - [`Lease`]: one node at a time runs the background work of the cluster (the async queue,
//!   cron, topic deliveries, NATS sources, pruning), through a lease in the KV bucket
//!   `ignis_leases`.
#![warn(missing_docs)]

mod code;
mod dispatch;
mod lease;
mod log;
mod membership;
pub mod natsd;

use std::future::Future;
use std::time::Duration;

pub use code::{BodyStore, CodeMirror};
pub use dispatch::{Dispatcher, InvokerService};
pub use lease::Lease;
pub use log::{Change, ReplicatedStore};
pub use membership::{Announcement, InvokerInfo, Membership};

/// NATS must carry an event (6 MiB) with its framing, a result with its logs, and a queued
/// invocation in the store's log, whose event is base64 there (8 MiB).
pub const MIN_MAX_PAYLOAD: usize = 16 << 20;

/// Why the cluster could not be joined or used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// NATS could not be reached, or refused.
    #[error("NATS: {0}")]
    Nats(String),
    /// The NATS servers are not set up as Ignis needs.
    #[error("{0}")]
    Config(String),
}

/// What a node is told at start.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// NATS server URLs, comma-separated.
    pub urls: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Copies JetStream keeps of the log, the code and the KV buckets (1 to 5; 3 in a cluster
    /// of three NATS servers).
    pub replicas: usize,
}

/// A connection to the cluster's NATS, with its own runtime: the store's synchronous calls
/// wait on it from any thread, even a thread of the server's runtime.
pub struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    config: ClusterConfig,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("config", &self.config)
            .finish()
    }
}

impl Cluster {
    /// Connects to NATS (waiting for it up to `wait`) and checks that it can carry Ignis's
    /// messages and has JetStream.
    pub fn connect(config: ClusterConfig, wait: Duration) -> Result<Cluster, ClusterError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ignis-nats")
            .enable_all()
            .build()
            .map_err(|e| ClusterError::Nats(e.to_string()))?;
        let (urls, name) = (config.urls.clone(), config.node.clone());
        let client = run_on(runtime.handle(), async move {
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let options = async_nats::ConnectOptions::new()
                    .name(format!("ignis {name}"))
                    .retry_on_initial_connect()
                    .connection_timeout(Duration::from_secs(2));
                let attempt = tokio::time::timeout(
                    Duration::from_secs(3),
                    options.connect(urls.split(',').map(str::trim).collect::<Vec<_>>()),
                )
                .await;
                let err = match attempt {
                    Ok(Ok(c)) => {
                        // Wait for the first INFO so that max_payload is known.
                        let flushed = tokio::time::timeout(Duration::from_secs(3), c.flush()).await;
                        if matches!(flushed, Ok(Ok(()))) {
                            return Ok(c);
                        }
                        "no answer from the server".to_string()
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "connection timed out".to_string(),
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClusterError::Nats(format!(
                        "cannot connect to {urls}: {err}"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })?;
        let max = client.server_info().max_payload;
        if max < MIN_MAX_PAYLOAD {
            return Err(ClusterError::Config(format!(
                "the NATS server's max_payload is {max} bytes; Ignis needs at least {MIN_MAX_PAYLOAD} \
                 (set `max_payload: 16MB` in nats-server.conf)"
            )));
        }
        let js = async_nats::jetstream::new(client.clone());
        Ok(Cluster {
            runtime: Some(runtime),
            client,
            js,
            config,
        })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream context.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }

    /// Copies JetStream keeps.
    pub fn replicas(&self) -> usize {
        self.config.replicas.clamp(1, 5)
    }

    /// The cluster's runtime, where background tasks on NATS run.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime
            .as_ref()
            .expect("runtime lives until drop")
            .handle()
    }

    /// The value every node of the cluster agrees on for `key`: the first proposal stored
    /// (JetStream KV `ignis_secrets`, created only if absent), whichever node made it.
    pub fn agree(&self, key: &str, proposal: &[u8]) -> Result<Vec<u8>, ClusterError> {
        let js = self.js.clone();
        let replicas = self.replicas();
        let (key, proposal) = (key.to_string(), bytes::Bytes::copy_from_slice(proposal));
        self.wait(async move {
            let bucket = kv_bucket(
                &js,
                "ignis_secrets",
                Duration::ZERO,
                async_nats::jetstream::stream::StorageType::File,
                replicas,
            )
            .await
            .map_err(|e| e.to_string())?;
            if bucket.create(&key, proposal.clone()).await.is_ok() {
                return Ok(proposal.to_vec());
            }
            match bucket.get(&key).await {
                Ok(Some(v)) => Ok(v.to_vec()),
                Ok(None) => Err(format!("{key} is neither stored nor storable")),
                Err(e) => Err(e.to_string()),
            }
        })
        .map_err(|e| ClusterError::Nats(format!("agreeing on {}: {e}", "a shared secret")))
    }

    /// Runs `f` on the cluster's runtime and waits for it on this thread (any thread: a thread
    /// of another runtime blocks until the answer, as a SQLite call would).
    pub fn wait<F>(&self, f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        run_on(self.handle(), f)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn run_on<F>(handle: &tokio::runtime::Handle, f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the cluster runtime ran the task")
}

/// How long creating a stream waits for JetStream to be ready (a NATS cluster that is still
/// electing its JetStream leader refuses for a few seconds).
const FORMATION: Duration = Duration::from_secs(30);

/// Runs `f` until it succeeds or [`FORMATION`] has passed; the last error otherwise.
pub(crate) async fn until_formed<T, E, F, Fut>(mut f: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + FORMATION;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// A JetStream KV bucket, created if the cluster has none. The bucket's stream is made here
/// as the client library would make it, without its account query (which NATS 2.9, the
/// version Debian ships, answers in a form the library does not read).
pub(crate) async fn kv_bucket(
    js: &async_nats::jetstream::Context,
    bucket: &str,
    max_age: Duration,
    storage: async_nats::jetstream::stream::StorageType,
    replicas: usize,
) -> Result<async_nats::jetstream::kv::Store, ClusterError> {
    use async_nats::jetstream::stream;
    if let Ok(b) = js.get_key_value(bucket).await {
        return Ok(b);
    }
    let config = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    };
    until_formed(|| js.get_or_create_stream(config.clone()))
        .await
        .map_err(|e| {
            ClusterError::Nats(format!("KV bucket {bucket}: {e} (is JetStream enabled?)"))
        })?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| ClusterError::Nats(format!("KV bucket {bucket}: {e}")))
}

/// FNV-1a, 64 bits, with splitmix64's finalizer (FNV alone mixes its high bits poorly for
/// short keys): the same on every node and every build (the rendezvous hash).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
