//! The replicated store across nodes: each node sees the others' writes, conflicts are decided
//! once for all, a replica rebuilt from the log has everything, and losing one of three NATS
//! servers (replicas 3) loses no acknowledged write.

use std::sync::Arc;
use std::time::Duration;

use ignis_cluster::natsd::{self, NatsServer};
use ignis_cluster::{Cluster, ClusterConfig, ReplicatedStore};
use ignis_store::suite::new_version;
use ignis_store::{DataStore, Store, StoreError};

fn node(urls: &str, name: &str, dir: &std::path::Path, replicas: usize) -> ReplicatedStore {
    let cluster = Cluster::connect(
        ClusterConfig {
            urls: urls.into(),
            node: name.into(),
            replicas,
        },
        Duration::from_secs(20),
    )
    .unwrap();
    ReplicatedStore::open(Arc::new(cluster), &dir.join(format!("{name}.db"))).unwrap()
}

/// One NATS server and two nodes on it: the directory, the server, its URL and the nodes.
fn two_nodes() -> Option<(
    tempfile::TempDir,
    Vec<NatsServer>,
    String,
    ReplicatedStore,
    ReplicatedStore,
)> {
    let bin = natsd::binary_for_test()?;
    let dir = tempfile::tempdir().unwrap();
    let nats = natsd::start_cluster(&bin, &dir.path().join("nats"), 1).unwrap();
    let u = urls(&nats);
    let (a, b) = (node(&u, "a", dir.path(), 1), node(&u, "b", dir.path(), 1));
    Some((dir, nats, u, a, b))
}

fn urls(nats: &[NatsServer]) -> String {
    nats.iter()
        .map(NatsServer::url)
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn nodes_see_each_others_writes_and_agree_on_every_conflict() {
    let Some((dir, _nats, u, a, b)) = two_nodes() else {
        return;
    };

    a.put_version(new_version("f"), false).unwrap();
    let seen = b.get_version("default", "f", None).unwrap().unwrap();
    assert_eq!(seen.version, 1);

    // Both create the same function at once: one wins, the other is told.
    for round in 0..10 {
        let name = format!("race{round}");
        let (ra, rb) = std::thread::scope(|s| {
            let ha = s.spawn(|| a.put_version(new_version(&name), true));
            let hb = s.spawn(|| b.put_version(new_version(&name), true));
            (ha.join().unwrap(), hb.join().unwrap())
        });
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{ra:?} {rb:?}");
        assert!(
            [ra, rb]
                .into_iter()
                .any(|r| matches!(r, Err(StoreError::Conflict(_))))
        );
    }

    // Increments from both nodes at once add up exactly.
    std::thread::scope(|s| {
        for store in [&a, &b] {
            s.spawn(move || {
                for _ in 0..100 {
                    store.kv_increment("default", "hits", 1, None, 1).unwrap();
                }
            });
        }
    });
    for store in [&a, &b] {
        let e = store.kv_get("default", "hits", 1).unwrap().unwrap();
        assert_eq!((e.value.as_slice(), e.version), (&b"200"[..], 200));
    }

    // A third node, started now, rebuilds everything from the log.
    let c = node(&u, "c", dir.path(), 1);
    assert_eq!(c.list_functions("default").unwrap().len(), 11);
    assert_eq!(
        c.kv_get("default", "hits", 1).unwrap().unwrap().value,
        b"200"
    );
}

#[test]
fn losing_one_of_three_nats_servers_loses_no_acknowledged_write() {
    let Some(bin) = natsd::binary_for_test() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut nats = natsd::start_cluster(&bin, &dir.path().join("nats"), 3).unwrap();
    let u = urls(&nats);
    let a = node(&u, "a", dir.path(), 3);
    for _ in 0..50 {
        a.kv_increment("default", "n", 1, None, 1).unwrap();
    }
    // Any of the three may lead the log's stream; one goes, the other two still hold every
    // write (3 replicas, a quorum of 2).
    nats[0].kill();
    for _ in 0..50 {
        a.kv_increment("default", "n", 1, None, 1).unwrap();
    }
    let b = node(&urls(&nats[1..]), "b", dir.path(), 3);
    let e = b.kv_get("default", "n", 1).unwrap().unwrap();
    assert_eq!(e.value, b"100");
    // It comes back and catches up; nothing was lost meanwhile.
    nats[0].restart().unwrap();
    b.kv_increment("default", "n", 1, None, 1).unwrap();
    assert_eq!(a.kv_get("default", "n", 1).unwrap().unwrap().value, b"101");
}

#[test]
fn a_compacted_log_keeps_its_tail_and_new_nodes_start_from_the_snapshot() {
    let Some((dir, _nats, u, a, b)) = two_nodes() else {
        return;
    };
    a.put_version(new_version("f"), false).unwrap();
    for _ in 0..100 {
        a.kv_increment("default", "n", 1, None, 1).unwrap();
    }
    let at = a.compact(10).unwrap();
    assert!(at >= 101, "snapshot at {at}");
    assert_eq!(a.snapshot_seq(), at);
    for _ in 0..5 {
        b.kv_increment("default", "n", 1, None, 1).unwrap();
    }
    // A node started now has only the snapshot and the tail of the log to go on.
    let c = node(&u, "c", dir.path(), 1);
    assert_eq!(c.snapshot_seq(), at, "started from the snapshot");
    assert_eq!(c.kv_get("default", "n", 1).unwrap().unwrap().value, b"105");
    assert!(c.get_version("default", "f", None).unwrap().is_some());
    // Every node goes on as before.
    c.kv_increment("default", "n", 1, None, 1).unwrap();
    for s in [&a, &b, &c] {
        assert_eq!(s.kv_get("default", "n", 1).unwrap().unwrap().value, b"106");
    }
    // A second compaction keeps the newest two snapshots and starts nodes from the newest.
    let again = b.compact(10).unwrap();
    assert!(again > at);
    let d = node(&u, "d", dir.path(), 1);
    assert_eq!(d.snapshot_seq(), again);
    assert_eq!(d.kv_get("default", "n", 1).unwrap().unwrap().value, b"106");
}

#[test]
fn large_activations_and_events_fit_in_the_log() {
    let Some((_dir, _nats, _u, a, b)) = two_nodes() else {
        return;
    };
    // Ten records of 1.5 MiB results each: more than one NATS message can carry at once.
    let records: Vec<_> = (0..10)
        .map(|i| {
            let mut r = ignis_store::suite::activation("f", 1000 + i, ignis_core::Status::Success);
            r.result = Some(serde_json::Value::String("x".repeat(3 << 19)));
            r
        })
        .collect();
    a.insert_activations(&records).unwrap();
    for r in &records {
        assert_eq!(b.get_activation("default", r.id).unwrap().as_ref(), Some(r));
    }
    // A queued invocation with a 6 MiB event (base64 in the log: 8 MiB).
    let mut item = ignis_store::suite::queued(None);
    item.event = vec![b'7'; 6 << 20];
    let (stored, new) = a.enqueue(&item).unwrap();
    assert!(new);
    assert_eq!(
        b.due(1 << 40, 10).unwrap()[0].event.len(),
        stored.event.len()
    );
}
