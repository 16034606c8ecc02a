//! The store test suite (the one SQLite passes) against the replicated store on a real
//! `nats-server` with JetStream.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use ignis_cluster::natsd::{self, NatsServer};
use ignis_cluster::{Cluster, ClusterConfig, ReplicatedStore};

/// A replicated store on a server of its own, and its directories.
struct NatsStore {
    store: ReplicatedStore,
    _nats: Vec<NatsServer>,
    _dir: tempfile::TempDir,
}

impl Deref for NatsStore {
    type Target = ReplicatedStore;
    fn deref(&self) -> &ReplicatedStore {
        &self.store
    }
}

fn nats_store() -> Option<NatsStore> {
    let bin = natsd::binary_for_test()?;
    let dir = tempfile::tempdir().unwrap();
    let nats = natsd::start_cluster(&bin, dir.path(), 1).unwrap();
    let cluster = Cluster::connect(
        ClusterConfig {
            urls: nats[0].url(),
            node: "test".into(),
            replicas: 1,
        },
        Duration::from_secs(10),
    )
    .unwrap();
    let store = ReplicatedStore::open(Arc::new(cluster), &dir.path().join("replica.db")).unwrap();
    Some(NatsStore {
        store,
        _nats: nats,
        _dir: dir,
    })
}

ignis_store::store_suite!(nats_store());
