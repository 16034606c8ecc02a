//! Invokers of the cluster: each announces itself every second in the KV bucket
//! `ignis_invokers`; every node watches the bucket and counts an invoker live while its last
//! heartbeat is younger than [`LIVE_FOR`]. A cleanly stopped invoker deletes its key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{Cluster, ClusterError, fnv1a};

/// The KV bucket of heartbeats.
const BUCKET: &str = "ignis_invokers";
/// Time between heartbeats.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// An invoker whose last heartbeat is older than this is gone.
pub const LIVE_FOR: Duration = Duration::from_millis(3500);

/// What an invoker says of itself in each heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokerInfo {
    /// Its node name (and the subject it answers on: `ignis.invoke.<node>`).
    pub node: String,
    /// When it started (ms since epoch).
    pub started_ms: u64,
    /// Its memory budget for instances, MiB.
    pub memory_budget_mb: u64,
    /// MiB of it held by live instances.
    pub memory_used_mb: u64,
    /// Its live instances.
    pub instances: usize,
    /// It is stopping: it finishes what it runs but takes nothing new.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub draining: bool,
}

/// The invokers this node knows of.
#[derive(Clone)]
pub struct Membership {
    seen: Arc<RwLock<HashMap<String, (InvokerInfo, Instant)>>>,
}

fn bucket(cluster: &Arc<Cluster>) -> Result<kv::Store, ClusterError> {
    let js = cluster.jetstream().clone();
    let replicas = cluster.replicas();
    cluster.wait(async move {
        crate::kv_bucket(
            &js,
            BUCKET,
            Duration::from_secs(60),
            async_nats::jetstream::stream::StorageType::Memory,
            replicas,
        )
        .await
    })
}

impl Membership {
    /// Starts watching the invokers' heartbeats.
    pub fn watch(cluster: &Arc<Cluster>) -> Result<Membership, ClusterError> {
        let bucket = bucket(cluster)?;
        let seen: Arc<RwLock<HashMap<String, (InvokerInfo, Instant)>>> = Arc::default();
        let map = seen.clone();
        cluster.handle().spawn(async move {
            loop {
                let mut watch = match bucket.watch_with_history(">").await {
                    Ok(w) => w,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot watch the invokers");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                while let Some(entry) = watch.next().await {
                    let Ok(entry) = entry else { break };
                    let mut map = map.write().unwrap();
                    match entry.operation {
                        kv::Operation::Put => {
                            if let Ok(info) = serde_json::from_slice::<InvokerInfo>(&entry.value) {
                                map.insert(entry.key.clone(), (info, Instant::now()));
                            }
                        }
                        kv::Operation::Delete | kv::Operation::Purge => {
                            map.remove(&entry.key);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Membership { seen })
    }

    /// Announces this node as an invoker every [`HEARTBEAT`], with what `info` says then.
    pub fn announce(
        cluster: &Arc<Cluster>,
        info: impl Fn() -> InvokerInfo + Send + Sync + 'static,
    ) -> Result<Announcement, ClusterError> {
        let bucket = bucket(cluster)?;
        let key = cluster.node().to_string();
        let b = bucket.clone();
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = draining.clone();
        let beat = move || {
            let mut i = info();
            i.draining = stopping.load(std::sync::atomic::Ordering::Acquire);
            serde_json::to_vec(&i).unwrap_or_default()
        };
        let beat = Arc::new(beat);
        let first = beat.clone();
        let task = cluster.handle().spawn(async move {
            loop {
                let body = first();
                if let Err(e) = b.put(&key, body.into()).await {
                    tracing::warn!(error = %e, "heartbeat not sent");
                }
                tokio::time::sleep(HEARTBEAT).await;
            }
        });
        Ok(Announcement {
            cluster: cluster.clone(),
            bucket,
            task,
            draining,
            beat,
        })
    }

    /// The live invokers, by node name.
    pub fn live(&self) -> Vec<InvokerInfo> {
        let mut live: Vec<InvokerInfo> = self
            .seen
            .read()
            .unwrap()
            .values()
            .filter(|(info, at)| at.elapsed() < LIVE_FOR && !info.draining)
            .map(|(info, _)| info.clone())
            .collect();
        live.sort_by(|a, b| a.node.cmp(&b.node));
        live
    }

    /// Whether an invoker is live (a draining one is: it still answers what it has).
    pub fn is_live(&self, node: &str) -> bool {
        self.seen
            .read()
            .unwrap()
            .get(node)
            .is_some_and(|(_, at)| at.elapsed() < LIVE_FOR)
    }

    /// The live invokers in the order a function tries them: its home first (rendezvous
    /// hashing: the highest hash of function and node), then the next ones. Adding or losing
    /// an invoker moves only the functions whose home it is or becomes.
    pub fn order_for(&self, namespace: &str, function: &str) -> Vec<String> {
        let mut nodes: Vec<(u64, String)> = self
            .live()
            .into_iter()
            .map(|i| {
                let h = fnv1a(&[namespace.as_bytes(), function.as_bytes(), i.node.as_bytes()]);
                (h, i.node)
            })
            .collect();
        nodes.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        nodes.into_iter().map(|(_, n)| n).collect()
    }
}

/// This node's heartbeats.
pub struct Announcement {
    cluster: Arc<Cluster>,
    bucket: kv::Store,
    task: tokio::task::JoinHandle<()>,
    draining: Arc<std::sync::atomic::AtomicBool>,
    beat: Arc<dyn Fn() -> Vec<u8> + Send + Sync>,
}

impl Announcement {
    /// Says, now and in every heartbeat from now on, that this invoker takes nothing new (it
    /// is stopping); gateways still wait for what it runs.
    pub fn drain(&self) {
        self.draining
            .store(true, std::sync::atomic::Ordering::Release);
        let (bucket, key, body) = (
            self.bucket.clone(),
            self.cluster.node().to_string(),
            (self.beat)(),
        );
        let _ = self.cluster.wait(async move {
            tokio::time::timeout(Duration::from_secs(2), bucket.put(&key, body.into())).await
        });
    }

    /// Stops the heartbeats and says this invoker is gone.
    pub fn leave(&self) {
        self.task.abort();
        let (bucket, key) = (self.bucket.clone(), self.cluster.node().to_string());
        let _ = self.cluster.wait(async move {
            tokio::time::timeout(Duration::from_secs(2), bucket.delete(&key)).await
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(nodes: &[&str]) -> Membership {
        let m = Membership {
            seen: Arc::default(),
        };
        for n in nodes {
            let info = InvokerInfo {
                node: n.to_string(),
                started_ms: 0,
                memory_budget_mb: 0,
                memory_used_mb: 0,
                instances: 0,
                draining: false,
            };
            m.seen
                .write()
                .unwrap()
                .insert(n.to_string(), (info, Instant::now()));
        }
        m
    }

    #[test]
    fn homes_spread_and_move_little_when_an_invoker_goes() {
        let three = members(&["a", "b", "c"]);
        let two = members(&["a", "b"]);
        let mut homes = HashMap::new();
        let mut moved = 0;
        for i in 0..300 {
            let f = format!("f{i}");
            let home = three.order_for("default", &f)[0].clone();
            let after = two.order_for("default", &f)[0].clone();
            if home != "c" {
                assert_eq!(home, after, "a function not homed on the lost node stays");
            } else {
                moved += 1;
            }
            *homes.entry(home).or_insert(0) += 1;
        }
        for n in ["a", "b", "c"] {
            let h = homes[n];
            assert!((60..=140).contains(&h), "{n} is home to {h} of 300");
        }
        assert_eq!(moved, homes["c"]);
        // The same order everywhere, and every live invoker in it.
        assert_eq!(three.order_for("ns", "x"), three.order_for("ns", "x"));
        assert_eq!(three.order_for("ns", "x").len(), 3);
    }
}
