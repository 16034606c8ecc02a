//! `ignis serve --cluster nats://…`: what a node of a cluster does besides what a single server
//! does (docs/cluster.md).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ignis_cluster::{
    Change, Cluster, ClusterConfig, CodeMirror, Dispatcher, InvokerInfo, InvokerService, Lease,
    Membership, ReplicatedStore,
};
use ignis_controller::{Controller, ExternalChange, RemoteInvoker};
use ignis_gateway::KeyRing;
use ignis_invoker::{Invocation, InvokeError, InvokeResult, Invoker};
use ignis_store::{BlobStore, Store};

/// How often the lease holder looks whether the log is due for compaction.
const COMPACTION_CHECK: Duration = Duration::from_secs(5);

/// What a node does in the cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NodeRole {
    /// Serves the API and runs the cluster's background work when it holds the lease; runs no
    /// instances.
    Gateway,
    /// Runs instances for the gateways (and serves its instances' data API).
    Invoker,
    /// Both.
    All,
}

impl NodeRole {
    /// Whether it runs instances.
    pub fn invokes(self) -> bool {
        matches!(self, NodeRole::Invoker | NodeRole::All)
    }

    /// Whether it competes for the background work.
    pub fn leads(self) -> bool {
        matches!(self, NodeRole::Gateway | NodeRole::All)
    }
}

/// A node's default name: the host's name and a hash of its data directory, the same at every
/// start of the same node.
pub fn default_node_name(data_dir: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = ignis_store::sha256_hex(data_dir.as_os_str().as_encoded_bytes());
    format!(
        "{}-{}",
        if host.is_empty() { "node" } else { &host },
        &dir[..8]
    )
}

/// Node names become NATS subjects and KV keys.
pub fn check_node_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        anyhow::bail!(
            "invalid node name {name:?}: 1 to 64 letters, digits, '-' or '_' (it is a NATS subject token)"
        );
    }
    Ok(())
}

/// A node that joined the cluster: its connection and its store.
pub struct Joined {
    pub cluster: Arc<Cluster>,
    pub store: Arc<ReplicatedStore>,
    pub role: NodeRole,
}

/// Connects to NATS and rebuilds this node's replica of the store from the cluster's log.
pub fn join(config: ClusterConfig, role: NodeRole, data_dir: &Path) -> anyhow::Result<Joined> {
    let urls = config.urls.clone();
    let cluster = Arc::new(
        Cluster::connect(config, Duration::from_secs(30))
            .with_context(|| format!("cannot join the cluster at {urls}"))?,
    );
    let dir = data_dir.join("cluster");
    std::fs::create_dir_all(&dir)?;
    let store = ReplicatedStore::open(cluster.clone(), &dir.join("replica.db"))
        .context("cannot open the cluster's store")?;
    Ok(Joined {
        cluster,
        store: Arc::new(store),
        role,
    })
}

impl Joined {
    /// The blob directory, shared through the cluster's object store.
    pub fn share_blobs(&self, blobs: BlobStore) -> anyhow::Result<BlobStore> {
        let mirror = CodeMirror::open(self.cluster.clone())?;
        Ok(blobs.mirrored(Arc::new(mirror)))
    }

    /// The object bodies' directory, shared through the cluster's object store.
    pub fn share_objects(
        &self,
        objects: ignis_store::ObjectFiles,
    ) -> anyhow::Result<ignis_store::ObjectFiles> {
        let mirror = ignis_cluster::BodyStore::open(self.cluster.clone())?;
        Ok(objects.mirrored(Arc::new(mirror)))
    }

    /// The master key every node uses (API keys' sealed secrets must open on every node):
    /// this node's proposal if it is the first, otherwise the cluster's.
    pub fn shared_master_key(&self, local_hex: &str) -> anyhow::Result<String> {
        let agreed = self
            .cluster
            .agree("master-key", local_hex.trim().as_bytes())?;
        String::from_utf8(agreed).context("the cluster's master key is not text")
    }

    /// Starts what the node does in the cluster: dispatching invocations, answering them (an
    /// invoker), running the background work under the lease (a gateway), and keeping the
    /// caches of `controller` and `keys` up to date with other nodes' writes.
    pub async fn start(
        &self,
        controller: &Controller,
        invoker: &Invoker,
        keys: Arc<KeyRing>,
        compact_entries: u64,
    ) -> anyhow::Result<Participation> {
        // Other nodes' writes: the caches forget them, on a task (the store's applier must
        // not wait on reads of its own store).
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Change>();
        self.store.observe(Arc::new(move |c: &Change| {
            let _ = tx.send(c.clone());
        }));
        let (c, store) = (controller.clone(), self.store.clone());
        tokio::spawn(async move {
            while let Some(change) = rx.recv().await {
                let external = match change {
                    Change::Keys => {
                        let s = store.clone();
                        match tokio::task::spawn_blocking(move || s.list_keys()).await {
                            Ok(Ok(all)) => keys.replace_all(all),
                            Ok(Err(e)) => tracing::warn!(error = %e, "keys not reloaded"),
                            Err(e) => tracing::warn!(error = %e, "keys not reloaded"),
                        }
                        continue;
                    }
                    Change::Namespace(ns) => ExternalChange::Namespace(ns),
                    Change::Function { namespace, name } => {
                        ExternalChange::Function { namespace, name }
                    }
                    Change::Triggers(ns) => ExternalChange::Triggers(ns),
                    Change::Work => ExternalChange::Work,
                };
                c.external_change(external).await;
            }
        });

        let members = Membership::watch(&self.cluster)?;
        let local = self.role.invokes().then(|| invoker.clone());
        let mut announcement = None;
        let mut service = None;
        if let Some(local) = &local {
            service = Some(InvokerService::start(&self.cluster, local.clone()).await?);
            let (inv, started_ms, node) = (
                local.clone(),
                ignis_core::now_ms(),
                self.cluster.node().to_string(),
            );
            announcement = Some(Membership::announce(&self.cluster, move || {
                let (used, budget) = inv.memory();
                InvokerInfo {
                    node: node.clone(),
                    started_ms,
                    memory_budget_mb: budget,
                    memory_used_mb: used,
                    instances: inv.instances().len(),
                    draining: false,
                }
            })?);
        }
        controller.set_remote_invoker(Arc::new(Remote(Dispatcher::new(
            self.cluster.clone(),
            members.clone(),
            local,
        ))));
        let lease = if self.role.leads() {
            Some(Lease::start(&self.cluster, "background-work")?)
        } else {
            None
        };
        let held = lease.clone();
        controller.set_leadership(Arc::new(move || held.as_ref().is_some_and(Lease::held)));
        if compact_entries > 0 {
            // The node that runs the background work compacts the log.
            let (store, lease) = (self.store.clone(), lease.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(COMPACTION_CHECK).await;
                    let due =
                        store.applied().saturating_sub(store.snapshot_seq()) >= compact_entries;
                    if !due || !lease.as_ref().is_some_and(Lease::held) {
                        continue;
                    }
                    let s = store.clone();
                    match tokio::task::spawn_blocking(move || s.compact(compact_entries)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!(error = %e, "log compaction failed"),
                        Err(e) => tracing::warn!(error = %e, "log compaction failed"),
                    }
                }
            });
        }
        let (store, node, role) = (
            self.store.clone(),
            self.cluster.node().to_string(),
            self.role,
        );
        controller.set_cluster_status(Arc::new(move || {
            serde_json::json!({
                "mode": "cluster",
                "node": node,
                "role": role,
                "runs_background_work": lease.as_ref().is_some_and(Lease::held),
                "log_applied": store.applied(),
                "log_snapshot": store.snapshot_seq(),
                "invokers": members.live(),
            })
        }));
        Ok(Participation {
            announcement,
            service,
        })
    }
}

/// This node's part in the cluster, to end at a clean stop.
pub struct Participation {
    announcement: Option<ignis_cluster::Announcement>,
    service: Option<InvokerService>,
}

impl Participation {
    /// Leaves the cluster: gateways stop sending here (the heartbeat key goes), then the
    /// invocations they sent before end and are answered (up to 30 s).
    pub async fn leave(&self) {
        if let Some(a) = &self.announcement {
            a.drain();
        }
        if let Some(s) = &self.service {
            s.drain(Duration::from_secs(30)).await;
        }
        if let Some(a) = &self.announcement {
            a.leave();
        }
    }
}

struct Remote(Dispatcher);

impl RemoteInvoker for Remote {
    fn invoke(
        &self,
        inv: Invocation,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<InvokeResult, InvokeError>> + Send + 'static>,
    > {
        let d = self.0.clone();
        Box::pin(async move { d.invoke(inv).await })
    }
}
