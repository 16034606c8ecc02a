//! The store test suite, shared by every backend: each function takes a fresh, empty store
//! and fails (panics) if the backend does not behave as [`Store`] says.
//!
//! A backend runs it with [`crate::store_suite!`], which makes one `#[test]` per function.
#![allow(missing_docs, clippy::missing_panics_doc)]

use ignis_core::{
    ActivationId, ActivationRecord, CodeFormat, CodeRef, ExecutionRecord, Firing, FunctionSpec,
    Runtime, Status, Trigger, TriggerKind, TriggerSpec,
};

use std::collections::BTreeMap;

use ignis_core::LogLine;

use crate::*;

pub fn new_version(name: &str) -> NewVersion {
    NewVersion {
        namespace: "default".into(),
        name: name.into(),
        spec: FunctionSpec::new(Runtime::Python, "app.handler"),
        code: CodeRef {
            sha256: "ab".repeat(32),
            size: 3,
            format: CodeFormat::File,
            filename: Some("app.py".into()),
        },
    }
}

pub fn activation(function: &str, start_ms: u64, status: Status) -> ActivationRecord {
    ActivationRecord {
        id: ActivationId::new(),
        namespace: "default".into(),
        function: function.into(),
        version: 1,
        start_ms,
        end_ms: start_ms + 5,
        duration_ms: 5,
        queue_ms: 0,
        init_ms: 0,
        cold: false,
        instance: "f/1".into(),
        trigger: None,
        status,
        result: Some(serde_json::json!({"ok": true})),
        error: None,
        logs: vec![LogLine {
            ts_ms: start_ms,
            stream: ignis_core::LogStream::Stdout,
            line: "hi".into(),
        }],
        logs_truncated: false,
        memory_mb: 128,
        billed_ms: 5,
    }
}

pub fn versions_count_up_and_delete(s: &dyn Store) {
    assert!(s.namespace_exists("default").unwrap());
    assert_eq!(s.list_namespaces().unwrap(), ["default"]);
    assert!(!s.namespace_exists("other").unwrap());
    let (v1, created) = s.put_version(new_version("f"), false).unwrap();
    assert!(created);
    assert_eq!(v1.version, 1);
    let (v2, created) = s.put_version(new_version("f"), false).unwrap();
    assert!(!created);
    assert_eq!(v2.version, 2);
    assert!(matches!(
        s.put_version(new_version("f"), true),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_version("default", "f", None)
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(s.get_version("default", "f", Some(1)).unwrap().unwrap(), v1);
    assert!(s.get_version("default", "f", Some(9)).unwrap().is_none());
    s.put_version(new_version("a"), false).unwrap();
    let names: Vec<_> = s
        .list_functions("default")
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["a", "f"]);
    assert_eq!(s.list_versions("default", "f").unwrap().len(), 2);
    assert_eq!(s.delete_function("default", "f").unwrap(), Some(2));
    assert_eq!(s.delete_function("default", "f").unwrap(), None);
    assert!(s.get_version("default", "f", None).unwrap().is_none());
}

pub fn activations_page_and_filter(s: &dyn Store) {
    let mut all = Vec::new();
    for i in 0..25 {
        let status = if i % 5 == 0 {
            Status::Timeout
        } else {
            Status::Success
        };
        all.push(activation(
            if i % 2 == 0 { "even" } else { "odd" },
            1000 + i,
            status,
        ));
    }
    s.insert_activations(&all).unwrap();
    let got = s.get_activation("default", all[3].id).unwrap().unwrap();
    assert_eq!(got, all[3]);
    assert!(s.get_activation("other", all[3].id).unwrap().is_none());

    let mut seen = Vec::new();
    let mut filter = ActivationFilter {
        limit: 10,
        ..Default::default()
    };
    loop {
        let page = s.list_activations("default", &filter).unwrap();
        assert!(
            page.activations
                .iter()
                .all(|a| a.logs.is_empty() && a.result.is_none())
        );
        seen.extend(page.activations.iter().map(|a| a.start_ms));
        match page.next {
            Some(c) => filter.cursor = Some(c),
            None => break,
        }
    }
    let expected: Vec<u64> = (1000..1025).rev().collect();
    assert_eq!(seen, expected);

    let page = s
        .list_activations(
            "default",
            &ActivationFilter {
                function: Some("even".into()),
                status: Some(Status::Timeout),
                limit: 50,
                ..Default::default()
            },
        )
        .unwrap();
    let starts: Vec<_> = page.activations.iter().map(|a| a.start_ms).collect();
    assert_eq!(starts, [1020, 1010, 1000]);
    let page = s
        .list_activations(
            "default",
            &ActivationFilter {
                since: Some(1010),
                until: Some(1012),
                limit: 50,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(page.activations.len(), 2);
}

pub fn queued(key: Option<&str>) -> QueuedInvocation {
    QueuedInvocation {
        id: ActivationId::new(),
        namespace: "default".into(),
        function: "f".into(),
        version: None,
        event: b"{}".to_vec(),
        attempts: 0,
        next_attempt_ms: 100,
        created_ms: 100,
        idempotency_key: key.map(str::to_string),
        last_error: None,
        trigger: None,
        callback: None,
        state: QueueState::Queued,
    }
}

pub fn the_async_queue_retries_buries_and_revives(s: &dyn Store) {
    let a = queued(None);
    let (got, new) = s.enqueue(&a).unwrap();
    assert!(new);
    assert_eq!(got, a);
    let k1 = queued(Some("k"));
    assert!(s.enqueue(&k1).unwrap().1);
    let (again, new) = s.enqueue(&queued(Some("k"))).unwrap();
    assert!(!new, "the idempotency key returns the first submission");
    assert_eq!(again.id, k1.id);
    assert_eq!(s.due(99, 10).unwrap().len(), 0);
    assert_eq!(s.due(100, 10).unwrap().len(), 2);
    assert_eq!(s.next_due().unwrap(), Some(100));
    s.retry_later(a.id, 1, 500, "boom").unwrap();
    assert_eq!(s.due(100, 10).unwrap().len(), 1);
    let due = s.due(500, 10).unwrap();
    assert_eq!(due.iter().find(|q| q.id == a.id).unwrap().attempts, 1);
    s.bury(a.id, 3, "boom").unwrap();
    assert_eq!(s.due(1000, 10).unwrap().len(), 1);
    let dead = s.dead_letters("default").unwrap();
    assert_eq!(
        (dead.len(), dead[0].last_error.as_deref()),
        (1, Some("boom"))
    );
    assert!(s.revive("default", a.id).unwrap());
    assert!(!s.revive("default", a.id).unwrap());
    assert!(s.dead_letters("default").unwrap().is_empty());
    s.dequeue(a.id).unwrap();
    s.dequeue(k1.id).unwrap();
    assert_eq!(s.next_due().unwrap(), None);
    // A finished item's key still answers, with its state.
    let (done, new) = s.enqueue(&queued(Some("k"))).unwrap();
    assert!(!new);
    assert_eq!((done.id, done.state), (k1.id, QueueState::Done));
}

pub fn a_firing_is_recorded_once(s: &dyn Store) {
    let firing = Firing {
        id: ActivationId::new(),
        namespace: "default".into(),
        trigger: "t".into(),
        fired_ms: 1,
        scheduled_ms: None,
        activations: vec![],
    };
    s.record_firing(&firing, &[queued(None)]).unwrap();
    // The same firing again (a redelivered message) writes nothing.
    assert!(matches!(
        s.record_firing(&firing, &[queued(None)]),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.list_firings("default", "t", 10).unwrap().len(), 1);
    assert_eq!(s.due(1 << 40, 10).unwrap().len(), 1);
}

pub fn a_scheduled_time_fires_once(s: &dyn Store) {
    let mut trigger = topic_trigger("tick", "unused");
    trigger.spec = TriggerSpec {
        kind: TriggerKind::Cron,
        schedule: Some("* * * * * *".into()),
        ..Default::default()
    };
    s.put_trigger(&trigger, true).unwrap();
    let at = |ms: u64| Firing {
        id: ActivationId::new(),
        namespace: "default".into(),
        trigger: "tick".into(),
        fired_ms: ms,
        scheduled_ms: Some(ms),
        activations: vec![],
    };
    s.record_firing(&at(2000), &[]).unwrap();
    // Two schedulers both saw 2000 due: the second is refused; a later time fires.
    assert!(matches!(
        s.record_firing(&at(2000), &[]),
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        s.record_firing(&at(1000), &[]),
        Err(StoreError::Conflict(_))
    ));
    s.record_firing(&at(3000), &[]).unwrap();
    assert_eq!(s.list_firings("default", "tick", 10).unwrap().len(), 2);
    let t = s.get_trigger("default", "tick").unwrap().unwrap();
    assert_eq!(t.last_scheduled_ms, Some(3000));
}

pub fn key(id: &str, namespace: Option<&str>) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.into(),
        secret_hash: "$argon2id$x".into(),
        sealed_secret: None,
        secret_sha256: None,
        secret: None,
        namespace: namespace.map(str::to_string),
        role: crate::Role::Owner,
        created_ms: 1,
    }
}

pub fn deleting_a_namespace_deletes_everything_in_it(s: &dyn Store) {
    assert!(s.create_namespace("team").unwrap());
    assert!(!s.create_namespace("team").unwrap());
    let quotas = NamespaceQuotas {
        concurrency: Some(3),
        ..Default::default()
    };
    assert!(s.set_namespace_quotas("team", &quotas).unwrap());
    assert!(!s.set_namespace_quotas("nope", &quotas).unwrap());
    assert_eq!(s.get_namespace("team").unwrap().unwrap().quotas, quotas);
    assert_eq!(
        s.get_namespace("default").unwrap().unwrap().quotas,
        NamespaceQuotas::default()
    );
    let in_team = |mut v: NewVersion| {
        v.namespace = "team".into();
        v
    };
    s.put_version(in_team(new_version("f")), false).unwrap();
    s.put_version(in_team(new_version("g")), false).unwrap();
    s.put_version(new_version("f"), false).unwrap();
    let mut a = activation("f", 5, Status::Success);
    a.namespace = "team".into();
    let b = activation("f", 6, Status::Success);
    s.insert_activations(&[a.clone(), b.clone()]).unwrap();
    let mut q = queued(Some("k"));
    q.namespace = "team".into();
    s.enqueue(&q).unwrap();
    s.enqueue(&queued(Some("k"))).unwrap();
    let trigger = |ns: &str| Trigger {
        namespace: ns.into(),
        name: "t".into(),
        spec: ignis_core::TriggerSpec::default(),
        created_ms: 1,
        last_scheduled_ms: None,
    };
    s.put_trigger(&trigger("team"), false).unwrap();
    s.put_trigger(&trigger("default"), false).unwrap();
    let firing = Firing {
        id: ActivationId::new(),
        namespace: "team".into(),
        trigger: "t".into(),
        fired_ms: 1,
        scheduled_ms: None,
        activations: vec![],
    };
    s.record_firing(&firing, &[]).unwrap();
    let topic_trigger = Trigger {
        name: "on-orders".into(),
        spec: ignis_core::TriggerSpec {
            kind: ignis_core::TriggerKind::Topic,
            topic: Some("orders".into()),
            ..Default::default()
        },
        ..trigger("team")
    };
    s.put_trigger(&topic_trigger, false).unwrap();
    let message = crate::TopicMessage {
        id: "m1".into(),
        namespace: "team".into(),
        topic: "orders".into(),
        body: b"{}".to_vec(),
        published_ms: 1,
    };
    assert_eq!(s.publish(&message).unwrap(), 1);
    s.put_key(&key("ik_team", Some("team"))).unwrap();
    s.put_key(&key("ik_default", Some("default"))).unwrap();
    s.put_key(&key("ik_admin", None)).unwrap();

    let mut gone = s.delete_namespace("team").unwrap().unwrap();
    gone.sort();
    assert_eq!(gone, ["f", "g"]);
    assert_eq!(s.delete_namespace("team").unwrap(), None);
    assert!(s.get_namespace("team").unwrap().is_none());
    assert!(s.list_functions("team").unwrap().is_empty());
    assert!(s.list_versions("team", "f").unwrap().is_empty());
    assert!(s.get_activation("team", a.id).unwrap().is_none());
    assert!(s.list_triggers("team").unwrap().is_empty());
    assert!(s.list_firings("team", "t", 10).unwrap().is_empty());
    assert!(s.list_topics("team").unwrap().is_empty());
    assert!(s.pending_deliveries().unwrap().is_empty());
    assert!(
        s.due(1 << 40, 10)
            .unwrap()
            .iter()
            .all(|q| q.namespace == "default")
    );
    let ids: Vec<_> = s.list_keys().unwrap().into_iter().map(|k| k.id).collect();
    assert_eq!(ids, ["ik_admin", "ik_default"]);
    // The other namespace is untouched.
    assert_eq!(s.list_functions("default").unwrap().len(), 1);
    assert!(s.get_activation("default", b.id).unwrap().is_some());
    assert_eq!(s.list_triggers("default").unwrap().len(), 1);
    assert_eq!(s.due(1 << 40, 10).unwrap().len(), 1);
    // Nothing can be deployed into, nor recorded for, a namespace that is gone.
    let mut late = activation("f", 7, Status::Success);
    late.namespace = "team".into();
    s.insert_activations(std::slice::from_ref(&late)).unwrap();
    assert!(s.get_activation("team", late.id).unwrap().is_none());
    assert!(matches!(
        s.put_version(in_team(new_version("f")), false),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.delete_key("ik_default").unwrap());
    assert!(!s.delete_key("ik_default").unwrap());
}

pub fn executions_keep_their_steps_and_go_with_their_namespace(s: &dyn Store) {
    use ignis_core::{ExecutionStatus, StepStatus};
    s.create_namespace("team").unwrap();
    let exec = |ns: &str| ExecutionRecord {
        id: ActivationId::new(),
        namespace: ns.into(),
        function: "wf".into(),
        version: 1,
        status: ExecutionStatus::Running,
        input: serde_json::json!({"x": 1}),
        output: None,
        error: None,
        start_ms: 10,
        end_ms: None,
        trigger: None,
        resumed: 0,
        parent: None,
        steps: Vec::new(),
    };
    let (a, b) = (exec("team"), exec("default"));
    s.save_execution(&a).unwrap();
    s.save_execution(&b).unwrap();
    let step = |name: &str, index: Option<u32>, end_ms: u64| StepRecord {
        step: name.into(),
        index,
        function: "f".into(),
        status: StepStatus::Succeeded,
        activation_id: Some(ActivationId::new()),
        attempts: 1,
        start_ms: 11,
        end_ms,
        output: Some(serde_json::json!(index)),
        error: None,
    };
    s.save_steps(&[
        (a.id, "team".into(), step("one", None, 12)),
        (a.id, "team".into(), step("map", Some(0), 13)),
        (a.id, "team".into(), step("map", Some(1), 14)),
    ])
    .unwrap();
    let got = s.get_execution("team", a.id).unwrap().unwrap();
    assert_eq!(got.steps.len(), 3);
    assert_eq!(got.steps[2].index, Some(1));
    assert!(s.get_execution("default", a.id).unwrap().is_none());
    assert_eq!(s.running_executions().unwrap().len(), 2);
    let done = ExecutionRecord {
        status: ExecutionStatus::Succeeded,
        end_ms: Some(20),
        ..b.clone()
    };
    s.save_execution(&done).unwrap();
    let running = s.running_executions().unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].steps.len(), 3);
    assert_eq!(
        s.list_executions("default", Some("wf"), 10).unwrap().len(),
        1
    );
    assert!(
        s.list_executions("default", Some("other"), 10)
            .unwrap()
            .is_empty()
    );
    s.delete_namespace("team").unwrap();
    assert!(s.get_execution("team", a.id).unwrap().is_none());
    assert!(s.running_executions().unwrap().is_empty());
    // A late write for the deleted namespace is dropped.
    s.save_execution(&a).unwrap();
    s.save_steps(&[(a.id, "team".into(), step("late", None, 30))])
        .unwrap();
    assert!(s.running_executions().unwrap().is_empty());
}

pub fn activations_are_pruned_by_age_and_count(s: &dyn Store) {
    s.create_namespace("other").unwrap();
    let mut all: Vec<_> = (0..10)
        .map(|i| activation("f", 1000 + i, Status::Success))
        .collect();
    let mut theirs = activation("f", 1, Status::Success);
    theirs.namespace = "other".into();
    all.push(theirs.clone());
    s.insert_activations(&all).unwrap();
    let starts = |s: &dyn Store| -> Vec<u64> {
        let f = ActivationFilter {
            limit: 100,
            ..Default::default()
        };
        let page = s.list_activations("default", &f).unwrap();
        page.activations.iter().map(|a| a.start_ms).collect()
    };
    assert_eq!(s.prune_activations("default", 1003, None).unwrap(), 3);
    assert_eq!(starts(s), (1003..1010).rev().collect::<Vec<_>>());
    assert_eq!(s.prune_activations("default", 0, Some(4)).unwrap(), 3);
    assert_eq!(starts(s), [1009, 1008, 1007, 1006]);
    assert_eq!(s.prune_activations("default", 0, Some(4)).unwrap(), 0);
    assert!(s.get_activation("other", theirs.id).unwrap().is_some());
}

pub fn usage_sums_are_exact_per_function_and_day(s: &dyn Store) {
    let mut all = Vec::new();
    for (f, start, mb, billed) in [
        ("a", 1_000u64, 128u32, 3u64),
        ("a", 2_000, 256, 7),
        ("a", 86_400_000 + 5, 128, 1),
        ("b", 3_000, 1024, 1000),
        ("b", 200 * 86_400_000, 1024, 1000),
    ] {
        let mut a = activation(f, start, Status::Success);
        a.memory_mb = mb;
        a.billed_ms = billed;
        all.push(a);
    }
    s.insert_activations(&all).unwrap();
    let rows = s.usage("default", 0, 100 * 86_400_000).unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| (r.function.as_str(), r.day, r.requests, r.mb_ms, r.billed_ms))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", 0, 2, 128 * 3 + 256 * 7, 10),
            ("a", 1, 1, 128, 1),
            ("b", 0, 1, 1024 * 1000, 1000),
        ]
    );
    assert!(s.usage("other", 0, u64::MAX).unwrap().is_empty());
    assert_eq!(s.async_backlog().unwrap(), vec![]);
}

pub fn kv_compare_and_swap_increment_and_ttl(s: &dyn Store) {
    let ns = "default";
    assert_eq!(
        s.kv_put(ns, "a", b"1", None, Expect::Absent, 10).unwrap(),
        Ok(1)
    );
    assert_eq!(
        s.kv_put(ns, "a", b"2", None, Expect::Absent, 10).unwrap(),
        Err(VersionMismatch(Some(1)))
    );
    assert_eq!(
        s.kv_put(ns, "a", b"2", None, Expect::Version(7), 10)
            .unwrap(),
        Err(VersionMismatch(Some(1)))
    );
    assert_eq!(
        s.kv_put(ns, "a", b"2", None, Expect::Version(1), 10)
            .unwrap(),
        Ok(2)
    );
    let e = s.kv_get(ns, "a", 10).unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"2"[..], 2));
    assert_eq!(s.kv_increment(ns, "a", 40, None, 10).unwrap(), (42, 3));
    assert_eq!(s.kv_increment(ns, "n", -1, None, 10).unwrap(), (-1, 1));
    s.kv_put(ns, "text", b"x", None, Expect::Any, 10)
        .unwrap()
        .unwrap();
    assert!(matches!(
        s.kv_increment(ns, "text", 1, None, 10),
        Err(IncrementError::NotAnInteger(_))
    ));
    // TTL: gone for every operation once expired, and purged.
    s.kv_put(ns, "t", b"v", Some(100), Expect::Any, 10)
        .unwrap()
        .unwrap();
    assert!(s.kv_get(ns, "t", 99).unwrap().is_some());
    assert!(s.kv_get(ns, "t", 100).unwrap().is_none());
    assert_eq!(
        s.kv_put(ns, "t", b"w", None, Expect::Absent, 100).unwrap(),
        Ok(2)
    );
    s.kv_put(ns, "u", b"v", Some(50), Expect::Any, 10)
        .unwrap()
        .unwrap();
    assert_eq!(s.kv_increment(ns, "u", 5, None, 60).unwrap().0, 5);
    s.kv_put(ns, "p", b"v", Some(50), Expect::Any, 10)
        .unwrap()
        .unwrap();
    assert_eq!(s.kv_purge_expired(60).unwrap(), 1);
    // Listing by prefix, paged; delete with and without a condition.
    for k in ["users/1", "users/2", "users/3", "usersx"] {
        s.kv_put(ns, k, b"", None, Expect::Any, 10)
            .unwrap()
            .unwrap();
    }
    let keys = |after| -> Vec<String> {
        s.kv_list(ns, "users/", after, 2, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect()
    };
    assert_eq!(keys(None), ["users/1", "users/2"]);
    assert_eq!(keys(Some("users/2")), ["users/3"]);
    assert_eq!(
        s.kv_delete(ns, "users/1", Expect::Version(9), 10).unwrap(),
        Err(VersionMismatch(Some(1)))
    );
    assert_eq!(
        s.kv_delete(ns, "users/1", Expect::Any, 10).unwrap(),
        Ok(true)
    );
    assert_eq!(
        s.kv_delete(ns, "users/1", Expect::Any, 10).unwrap(),
        Ok(false)
    );
    // Namespaces do not share keys; deleting one deletes its data.
    s.create_namespace("team").unwrap();
    assert!(s.kv_get("team", "a", 10).unwrap().is_none());
    s.kv_put("team", "a", b"t", None, Expect::Any, 10)
        .unwrap()
        .unwrap();
    s.create_bucket("team", "b1").unwrap();
    s.delete_namespace("team").unwrap();
    assert!(s.kv_get("team", "a", 10).unwrap().is_none());
    assert!(s.list_buckets("team").unwrap().is_empty());
    assert_eq!(s.kv_get(ns, "a", 10).unwrap().unwrap().version, 3);
}

pub fn buckets_and_objects(s: &dyn Store) {
    let ns = "default";
    let meta = |key: &str, file: &str| ObjectMeta {
        bucket: "b1".into(),
        key: key.into(),
        size: 1,
        etag: "e".into(),
        content_type: "text/plain".into(),
        metadata: BTreeMap::new(),
        modified_ms: 1,
        file: file.into(),
    };
    assert!(matches!(
        s.put_object(ns, &meta("k", "f1"), &[]),
        Err(StoreError::NotFound(_))
    ));
    assert!(s.create_bucket(ns, "b1").unwrap());
    assert!(!s.create_bucket(ns, "b1").unwrap());
    assert!(s.create_bucket("nope", "b1").is_err());
    assert_eq!(s.put_object(ns, &meta("k", "f1"), &[]).unwrap(), None);
    let old = s.put_object(ns, &meta("k", "f2"), &[]).unwrap().unwrap();
    assert_eq!(old.file, "f1");
    s.put_object(ns, &meta("k2", "f3"), &[]).unwrap();
    s.put_object(ns, &meta("j", "f4"), &[]).unwrap();
    let listed: Vec<_> = s
        .list_objects(ns, "b1", "k", None, 10)
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(listed, ["k", "k2"]);
    assert!(matches!(
        s.delete_bucket(ns, "b1"),
        Err(StoreError::Conflict(_))
    ));
    for (k, f) in [("k", "f2"), ("k2", "f3"), ("j", "f4")] {
        assert!(s.delete_object(ns, "b1", k, f, &[]).unwrap());
    }
    assert!(!s.delete_object(ns, "b1", "k", "f2", &[]).unwrap());
    assert!(s.delete_bucket(ns, "b1").unwrap());
    assert!(!s.delete_bucket(ns, "b1").unwrap());
}

/// The firing of trigger `trigger` for `event` on `meta`, invoking `functions`; the event of
/// each invocation says what changed.
pub fn fired(
    trigger: &str,
    event: ignis_core::StorageEvent,
    meta: &ObjectMeta,
    functions: &[&str],
) -> StorageFiring {
    let queued: Vec<QueuedInvocation> = functions
        .iter()
        .map(|f| QueuedInvocation {
            id: ActivationId::new(),
            namespace: "default".into(),
            function: f.to_string(),
            version: None,
            event: format!("{} {} {}", event.as_str(), meta.key, meta.etag).into_bytes(),
            attempts: 0,
            next_attempt_ms: 1,
            created_ms: 1,
            idempotency_key: None,
            last_error: None,
            trigger: Some(trigger.into()),
            callback: None,
            state: QueueState::Queued,
        })
        .collect();
    let activations = queued
        .iter()
        .map(|q| ignis_core::Caused {
            rule: format!("to-{}", q.function),
            function: q.function.clone(),
            activation_id: q.id,
        })
        .collect();
    let firing = Firing {
        id: ActivationId::new(),
        namespace: "default".into(),
        trigger: trigger.into(),
        fired_ms: 1,
        scheduled_ms: None,
        activations,
    };
    (firing, queued)
}

/// An object of bucket `b1` whose ETag names its file.
pub fn object(key: &str, file: &str) -> ObjectMeta {
    ObjectMeta {
        bucket: "b1".into(),
        key: key.into(),
        size: 1,
        etag: format!("etag-{file}"),
        content_type: "text/plain".into(),
        metadata: BTreeMap::new(),
        modified_ms: 1,
        file: file.into(),
    }
}

/// The events of the queued invocations, sorted.
pub fn queued_events(s: &dyn Store) -> Vec<String> {
    let mut events: Vec<String> = s
        .due(u64::MAX >> 2, 100)
        .unwrap()
        .into_iter()
        .map(|q| String::from_utf8(q.event).unwrap())
        .collect();
    events.sort();
    events
}

pub fn object_changes_commit_with_their_firings(s: &dyn Store) {
    use ignis_core::StorageEvent::{ObjectCreated as Created, ObjectDeleted as Deleted};
    let ns = "default";
    s.create_bucket(ns, "b1").unwrap();
    let a = object("a.csv", "f1");
    s.put_object(ns, &a, &[fired("csv", Created, &a, &["etl"])])
        .unwrap();
    let t = object("a.txt", "f2");
    s.put_object(ns, &t, &[]).unwrap();
    // A delete names the version it made its firings for: a newer one is not deleted.
    let gone = [fired("gone", Deleted, &t, &["clean"])];
    assert!(matches!(
        s.delete_object(ns, "b1", "a.txt", "f0", &gone),
        Err(StoreError::Conflict(_))
    ));
    assert!(s.list_firings(ns, "gone", 10).unwrap().is_empty());
    assert!(s.delete_object(ns, "b1", "a.txt", "f2", &gone).unwrap());
    assert!(!s.delete_object(ns, "b1", "a.txt", "f2", &gone).unwrap());
    let csv = s.list_firings(ns, "csv", 10).unwrap();
    assert_eq!(csv.len(), 1);
    assert_eq!(csv[0].activations[0].function, "etl");
    assert_eq!(s.list_firings(ns, "gone", 10).unwrap().len(), 1);
    assert_eq!(
        queued_events(s),
        [
            "object:created a.csv etag-f1",
            "object:deleted a.txt etag-f2"
        ]
    );

    // A firing that cannot be recorded (its invocation's id is taken) takes the change with
    // it: neither is written.
    let taken = s.due(u64::MAX >> 2, 1).unwrap()[0].id;
    let clash = |t: &str, e, m: &ObjectMeta| {
        let (f, mut q) = fired(t, e, m, &["etl"]);
        q[0].id = taken;
        vec![(f, q)]
    };
    let b = object("b.csv", "f3");
    assert!(s.put_object(ns, &b, &clash("csv", Created, &b)).is_err());
    assert!(s.get_object(ns, "b1", "b.csv").unwrap().is_none());
    let a2 = object("a.csv", "f4");
    assert!(s.put_object(ns, &a2, &clash("csv", Created, &a2)).is_err());
    assert_eq!(s.get_object(ns, "b1", "a.csv").unwrap().unwrap().file, "f1");
    let refused = s.delete_object(ns, "b1", "a.csv", "f1", &clash("gone", Deleted, &a));
    assert!(refused.is_err());
    assert!(s.get_object(ns, "b1", "a.csv").unwrap().is_some());
    assert_eq!(s.list_firings(ns, "csv", 10).unwrap().len(), 1);
    assert_eq!(s.list_firings(ns, "gone", 10).unwrap().len(), 1);
    assert_eq!(queued_events(s).len(), 2);
}

/// An upload of bucket `b1`.
pub fn upload(id: &str, key: &str, created_ms: u64) -> MultipartUpload {
    MultipartUpload {
        id: id.into(),
        bucket: "b1".into(),
        key: key.into(),
        content_type: Some("application/zip".into()),
        metadata: BTreeMap::from([("owner".to_string(), "ada".to_string())]),
        created_ms,
    }
}

/// A part whose ETag names its file.
pub fn part(number: u32, file: &str) -> UploadedPart {
    UploadedPart {
        number,
        size: 5,
        etag: format!("md5-{file}"),
        file: file.into(),
        uploaded_ms: 1,
    }
}

pub fn multipart_uploads_complete_once(s: &dyn Store) {
    let ns = "default";
    assert!(matches!(
        s.create_upload(ns, &upload("u1", "big.zip", 10)),
        Err(StoreError::NotFound(_))
    ));
    s.create_bucket(ns, "b1").unwrap();
    s.create_upload(ns, &upload("u1", "big.zip", 10)).unwrap();
    assert_eq!(s.put_part(ns, "u1", &part(2, "p2")).unwrap(), None);
    assert_eq!(s.put_part(ns, "u1", &part(1, "p1")).unwrap(), None);
    // Uploading a part again replaces it: the old file is the caller's to delete.
    let old = s.put_part(ns, "u1", &part(1, "p1b")).unwrap().unwrap();
    assert_eq!(old.file, "p1");
    assert!(matches!(
        s.put_part(ns, "nope", &part(1, "px")),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        s.delete_bucket(ns, "b1"),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        s.get_upload(ns, "u1").unwrap(),
        Some(upload("u1", "big.zip", 10))
    );
    assert_eq!(s.get_upload("other", "u1").unwrap(), None);
    assert_eq!(
        s.list_parts(ns, "u1").unwrap(),
        [part(1, "p1b"), part(2, "p2")]
    );

    // A part replaced since the caller read it: nothing is written.
    let stale = [(1, "p1".to_string()), (2, "p2".to_string())];
    let meta = object("big.zip", "whole");
    let firings = [fired(
        "zips",
        ignis_core::StorageEvent::ObjectCreated,
        &meta,
        &["f"],
    )];
    assert!(matches!(
        s.complete_upload(ns, "u1", &stale, &meta, &firings),
        Err(StoreError::Conflict(_))
    ));
    assert!(s.get_object(ns, "b1", "big.zip").unwrap().is_none());
    assert!(s.get_upload(ns, "u1").unwrap().is_some());

    let chosen = [(1, "p1b".to_string())];
    let done = s
        .complete_upload(ns, "u1", &chosen, &meta, &firings)
        .unwrap();
    assert_eq!(done.replaced, None);
    let mut files = done.part_files;
    files.sort();
    assert_eq!(files, ["p1b", "p2"], "every part's file, used or not");
    assert_eq!(s.get_object(ns, "b1", "big.zip").unwrap().unwrap(), meta);
    assert_eq!(queued_events(s), ["object:created big.zip etag-whole"]);
    assert_eq!(s.get_upload(ns, "u1").unwrap(), None);
    assert!(s.list_parts(ns, "u1").unwrap().is_empty());
    assert!(matches!(
        s.complete_upload(ns, "u1", &chosen, &meta, &firings),
        Err(StoreError::NotFound(_))
    ));
}

pub fn multipart_uploads_are_listed_aborted_and_swept(s: &dyn Store) {
    let ns = "default";
    s.create_bucket(ns, "b1").unwrap();
    s.create_upload(ns, &upload("u2", "a/x", 100)).unwrap();
    s.create_upload(ns, &upload("u1", "a/x", 200)).unwrap();
    s.create_upload(ns, &upload("u3", "b", 300)).unwrap();
    s.put_part(ns, "u2", &part(1, "q1")).unwrap();
    s.put_part(ns, "u2", &part(2, "q2")).unwrap();
    s.put_part(ns, "u3", &part(1, "r1")).unwrap();
    let ids = |prefix: &str, after: Option<(&str, &str)>, limit: usize| -> Vec<String> {
        s.list_uploads(ns, "b1", prefix, after, limit)
            .unwrap()
            .into_iter()
            .map(|u| u.id)
            .collect()
    };
    assert_eq!(ids("", None, 10), ["u1", "u2", "u3"]);
    assert_eq!(ids("a/", None, 10), ["u1", "u2"]);
    assert_eq!(ids("", Some(("a/x", "u1")), 1), ["u2"]);
    assert_eq!(ids("", Some(("a/x", "u2")), 10), ["u3"]);

    assert_eq!(s.abort_upload(ns, "u3").unwrap(), Some(vec!["r1".into()]));
    assert_eq!(s.abort_upload(ns, "u3").unwrap(), None);
    // The sweep forgets uploads started before the cut, with their parts.
    let mut swept = s.abort_uploads_before(150).unwrap();
    swept.sort();
    assert_eq!(
        swept,
        [(ns.into(), "q1".into()), (ns.into(), "q2".into())] as [(String, String); 2]
    );
    assert_eq!(ids("", None, 10), ["u1"]);
    // Deleting the namespace deletes its uploads.
    s.create_namespace("team").unwrap();
    s.create_bucket("team", "b1").unwrap();
    s.create_upload("team", &upload("t1", "k", 1)).unwrap();
    s.put_part("team", "t1", &part(1, "t")).unwrap();
    s.delete_namespace("team").unwrap();
    assert_eq!(s.get_upload("team", "t1").unwrap(), None);
    assert!(s.list_parts("team", "t1").unwrap().is_empty());
}

pub fn topic_trigger(name: &str, topic: &str) -> Trigger {
    Trigger {
        namespace: "default".into(),
        name: name.into(),
        spec: TriggerSpec {
            kind: TriggerKind::Topic,
            topic: Some(topic.into()),
            ..Default::default()
        },
        created_ms: 1,
        last_scheduled_ms: None,
    }
}

pub fn message(topic: &str, n: u64) -> TopicMessage {
    TopicMessage {
        id: format!("m{n}"),
        namespace: "default".into(),
        topic: topic.into(),
        body: format!("{{\"n\":{n}}}").into_bytes(),
        published_ms: n,
    }
}

pub fn firing(trigger: &str) -> Firing {
    Firing {
        id: ActivationId::new(),
        namespace: "default".into(),
        trigger: trigger.into(),
        fired_ms: 1,
        scheduled_ms: None,
        activations: vec![],
    }
}

pub fn messages_wait_for_every_subscribed_trigger_then_go(s: &dyn Store) {
    s.put_trigger(&topic_trigger("a", "orders"), false).unwrap();
    s.put_trigger(&topic_trigger("b", "orders"), false).unwrap();
    s.put_trigger(&topic_trigger("c", "other"), false).unwrap();
    s.put_trigger(
        &Trigger {
            name: "plain".into(),
            spec: TriggerSpec::default(),
            ..topic_trigger("x", "orders")
        },
        false,
    )
    .unwrap();
    for n in 1..=3 {
        assert_eq!(s.publish(&message("orders", n)).unwrap(), 2);
    }
    assert_eq!(s.publish(&message("nobody", 9)).unwrap(), 0);
    let topics = s.list_topics("default").unwrap();
    let counts: Vec<_> = topics
        .iter()
        .map(|t| (t.name.as_str(), t.published, t.pending))
        .collect();
    assert_eq!(counts, [("nobody", 1, 0), ("orders", 3, 3)]);
    let pending = s.pending_deliveries().unwrap();
    assert_eq!(pending.len(), 2);
    assert!(pending.iter().all(|p| p.count == 3 && p.oldest_ms == 1));

    let first = s.next_deliveries("default", "a", 2).unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].body, b"{\"n\":1}");
    let seqs: Vec<u64> = first.iter().map(|d| d.seq).collect();
    s.record_delivery(&firing("a"), &[], &seqs).unwrap();
    // Handed over once only: a second time writes nothing.
    assert!(matches!(
        s.record_delivery(&firing("a"), &[], &seqs),
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(s.list_firings("default", "a", 10).unwrap().len(), 1);
    // "b" still waits for all three.
    assert_eq!(s.list_topics("default").unwrap()[1].pending, 3);
    assert_eq!(s.next_deliveries("default", "a", 10).unwrap().len(), 1);
    // Deleting "b" drops what only it waited for.
    assert!(s.delete_trigger("default", "b").unwrap());
    assert_eq!(s.list_topics("default").unwrap()[1].pending, 1);
    let rest: Vec<u64> = s
        .next_deliveries("default", "a", 10)
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    s.record_delivery(&firing("a"), &[], &rest).unwrap();
    assert_eq!(s.list_topics("default").unwrap()[1].pending, 0);
    assert!(s.pending_deliveries().unwrap().is_empty());
    // A trigger that stopped being a topic trigger lets go of its messages.
    assert_eq!(s.publish(&message("orders", 4)).unwrap(), 1);
    s.forget_deliveries("default", "a").unwrap();
    assert_eq!(s.list_topics("default").unwrap()[1].pending, 0);
    assert!(s.pending_deliveries().unwrap().is_empty());
}

/// One `#[test]` per function of [`crate::suite`], each on a fresh store made by `$make`: an
/// expression whose value is `Some` of something that dereferences to a [`crate::Store`] and
/// cleans up when dropped, or `None` when the backend is not available here (the test is
/// skipped; `$make` says why).
#[macro_export]
macro_rules! store_suite {
    ($make:expr) => {
        $crate::store_suite!(@each $make; versions_count_up_and_delete, a_firing_is_recorded_once, a_scheduled_time_fires_once, activations_page_and_filter, the_async_queue_retries_buries_and_revives, deleting_a_namespace_deletes_everything_in_it, executions_keep_their_steps_and_go_with_their_namespace, activations_are_pruned_by_age_and_count, usage_sums_are_exact_per_function_and_day, kv_compare_and_swap_increment_and_ttl, buckets_and_objects, object_changes_commit_with_their_firings, multipart_uploads_complete_once, multipart_uploads_are_listed_aborted_and_swept, messages_wait_for_every_subscribed_trigger_then_go);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                let Some(store) = ($make) else { return };
                $crate::suite::$name(&*store);
            }
        )*
    };
}
