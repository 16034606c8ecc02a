//! A lease in the JetStream KV bucket `ignis_leases`: one holder at a time, renewed by
//! compare-and-swap on the key's revision; a holder that stops renewing loses it when the key
//! ages out (the bucket's max age), and stops acting as holder a third of that before.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::{Cluster, ClusterError};

/// The KV bucket of leases.
const BUCKET: &str = "ignis_leases";
/// How long a lease lasts without renewal (the bucket's max age).
pub const LEASE_TTL: Duration = Duration::from_secs(6);

/// A lease this node tries to hold for as long as it runs.
#[derive(Clone)]
pub struct Lease {
    inner: Arc<Inner>,
}

struct Inner {
    started: Instant,
    /// When the last renewal succeeded, in ms since `started` (0: not held).
    renewed_ms: AtomicU64,
    held: AtomicBool,
}

impl Lease {
    /// Starts trying to take and keep the lease `name`.
    pub fn start(cluster: &Arc<Cluster>, name: &str) -> Result<Lease, ClusterError> {
        let js = cluster.jetstream().clone();
        let replicas = cluster.replicas();
        let bucket = cluster.wait(async move {
            crate::kv_bucket(
                &js,
                BUCKET,
                LEASE_TTL,
                async_nats::jetstream::stream::StorageType::File,
                replicas,
            )
            .await
        })?;
        let lease = Lease {
            inner: Arc::new(Inner {
                started: Instant::now(),
                renewed_ms: AtomicU64::new(0),
                held: AtomicBool::new(false),
            }),
        };
        let inner = lease.inner.clone();
        let (key, node) = (name.to_string(), Bytes::from(cluster.node().to_string()));
        cluster
            .handle()
            .spawn(async move { keep(bucket, key, node, inner).await });
        Ok(lease)
    }

    /// Whether this node holds the lease now (and will for at least a third of its life).
    pub fn held(&self) -> bool {
        let i = &self.inner;
        if !i.held.load(Ordering::Acquire) {
            return false;
        }
        let age = i.started.elapsed().as_millis() as u64 - i.renewed_ms.load(Ordering::Acquire);
        age < (LEASE_TTL * 2 / 3).as_millis() as u64
    }
}

async fn keep(bucket: kv::Store, key: String, node: Bytes, inner: Arc<Inner>) {
    let mut revision: Option<u64> = None;
    loop {
        let result = match revision {
            Some(r) => bucket
                .update(&key, node.clone(), r)
                .await
                .map_err(|e| e.to_string()),
            None => match bucket.create(&key, node.clone()).await {
                Ok(r) => Ok(r),
                // Ours from before a restart of this node: take it back.
                Err(e) => match bucket.entry(&key).await {
                    Ok(Some(entry))
                        if entry.value == node && entry.operation == kv::Operation::Put =>
                    {
                        bucket
                            .update(&key, node.clone(), entry.revision)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    _ => Err(e.to_string()),
                },
            },
        };
        match result {
            Ok(r) => {
                if revision.is_none() {
                    tracing::info!(lease = key, "this node now holds the lease");
                }
                revision = Some(r);
                inner.renewed_ms.store(
                    inner.started.elapsed().as_millis() as u64,
                    Ordering::Release,
                );
                inner.held.store(true, Ordering::Release);
            }
            Err(e) => {
                if revision.take().is_some() {
                    tracing::warn!(lease = key, error = e, "lease lost");
                }
                inner.held.store(false, Ordering::Release);
            }
        }
        tokio::time::sleep(LEASE_TTL / 4).await;
    }
}
