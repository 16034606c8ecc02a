//! Cluster mode (docs/cluster.md): several `ignis serve --cluster` nodes on a real
//! `nats-server` with JetStream. Skipped (saying so) when nats-server is not installed, unless
//! `IGNIS_REQUIRE_NATS=1`.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ignis_cluster::natsd::{self, NatsServer};
use serde_json::Value;

use crate::harness::{Server, parse_response, scheduled_times};

/// NATS servers and the data directories of the nodes of one test.
struct Cluster {
    nats: Vec<NatsServer>,
    dir: tempfile::TempDir,
    /// The admin key, made by the first node.
    key: Option<String>,
}

impl Cluster {
    /// One NATS server; `None` when nats-server is not installed (and not required).
    fn start() -> Option<Cluster> {
        let bin = natsd::binary_for_test()?;
        let dir = tempfile::tempdir().unwrap();
        let nats = natsd::start_cluster(&bin, &dir.path().join("nats"), 1).unwrap();
        Some(Cluster {
            nats,
            dir,
            key: None,
        })
    }

    fn urls(&self) -> String {
        self.nats
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts node `name` with `role` on `listen`; every node after the first gets the first
    /// one's admin key.
    fn node_on(&mut self, name: &str, role: &str, listen: &str) -> Server {
        let dir = self.node_dir(name);
        if let Some(key) = &self.key {
            std::fs::create_dir_all(dir.join("data")).unwrap();
            std::fs::write(dir.join("data/admin.key"), key).unwrap();
        }
        let urls = self.urls();
        let s = Server::launch_env(
            &dir,
            listen,
            &[
                "--cluster",
                &urls,
                "--role",
                role,
                "--node-name",
                name,
                "--no-cli-config",
                "--stem-cells",
                "1",
                // Compactions happen during the tests, and restarts start from snapshots.
                "--cluster-compact-entries",
                "200",
            ],
            &[],
        );
        self.key.get_or_insert_with(|| s.key.clone());
        s
    }

    fn node(&mut self, name: &str, role: &str) -> Server {
        self.node_on(name, role, "127.0.0.1:0")
    }
}

const ECHO: &str = "def handler(e, c):\n    return e\n";

fn deploy(s: &Server, name: &str, query: &str, code: &str) {
    let r = s.deploy_file(
        name,
        &format!("runtime=python&handler=app.handler{query}"),
        "app.py",
        code,
    );
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
}

/// Invokes until an invoker is there to run it (gateways learn of invokers by their
/// heartbeats); returns the first answer that is not 503.
fn invoke_when_ready(s: &Server, name: &str, body: &str) -> crate::harness::Resp {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = s.invoke(name, body);
        if r.status != 503 || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The functions with instances on a node.
fn functions_with_instances(s: &Server) -> HashSet<String> {
    let v = s.get("/v1/system/instances").json();
    v["instances"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .filter_map(|i| i["function"].as_str().map(str::to_string))
        .collect()
}

/// Every activation of a function, through the paginated list.
fn all_activations(s: &Server, function: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/namespaces/default/activations?function={function}&limit=200");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = s.get(&path).json();
        all.extend(page["activations"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

#[test]
fn deployed_on_one_gateway_invoked_through_another_warm_on_one_invoker() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let g1 = c.node("g1", "gateway");
    let g2 = c.node("g2", "gateway");
    let i1 = c.node("i1", "invoker");
    let i2 = c.node("i2", "invoker");
    deploy(&g1, "hello", "", ECHO);
    // The code was uploaded to a gateway, which runs no instances: invokers fetch it from
    // the cluster's object store.
    let first = invoke_when_ready(&g2, "hello", r#"{"n":0}"#);
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(first.json(), serde_json::json!({"n": 0}));
    let mut cold = usize::from(first.header("x-ignis-cold") == Some("true"));
    for n in 1..20 {
        let via = if n % 2 == 0 { &g1 } else { &g2 };
        let r = via.invoke("hello", &format!(r#"{{"n":{n}}}"#));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["n"], n);
        cold += usize::from(r.header("x-ignis-cold") == Some("true"));
    }
    assert_eq!(cold, 1, "one cold start, then warm on its home invoker");
    let on1 = functions_with_instances(&i1).contains("hello");
    let on2 = functions_with_instances(&i2).contains("hello");
    assert!(
        on1 ^ on2,
        "instances on exactly one invoker (i1: {on1}, i2: {on2})"
    );
    // Gateways run no instances.
    assert!(functions_with_instances(&g1).is_empty());

    // Many functions spread over both invokers, each warm on its own home.
    for f in 0..8 {
        deploy(&g2, &format!("f{f}"), "", ECHO);
    }
    for f in 0..8 {
        for _ in 0..2 {
            let r = g1.invoke(&format!("f{f}"), "{}");
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let (a, b) = (functions_with_instances(&i1), functions_with_instances(&i2));
    let homes: usize = (0..8)
        .filter(|f| {
            let name = format!("f{f}");
            a.contains(&name) != b.contains(&name)
        })
        .count();
    assert_eq!(homes, 8, "each function on one invoker: {a:?} / {b:?}");
    assert!(
        a.iter().any(|f| f.starts_with('f')) && b.iter().any(|f| f.starts_with('f')),
        "functions on both invokers: {a:?} / {b:?}"
    );
    // Each node's view: both invokers live, one gateway runs the background work.
    let v1 = g1.get("/v1/system/cluster").json();
    let v2 = g2.get("/v1/system/cluster").json();
    assert_eq!(
        (v1["mode"].as_str(), v1["role"].as_str()),
        (Some("cluster"), Some("gateway"))
    );
    let invokers: Vec<&str> = v1["invokers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["node"].as_str())
        .collect();
    assert_eq!(invokers, ["i1", "i2"], "{v1}");
    let leaders = [&v1, &v2]
        .iter()
        .filter(|v| v["runs_background_work"] == true)
        .count();
    assert_eq!(leaders, 1, "{v1} {v2}");
    assert_eq!(
        i1.get("/v1/system/cluster").json()["runs_background_work"],
        false,
        "an invoker does not compete for the background work"
    );
    // What one gateway wrote, the other reads.
    let listed = g2.get("/v1/namespaces/default/functions").json();
    assert_eq!(listed["functions"].as_array().unwrap().len(), 9, "{listed}");
    // Functions reach their namespace's data from any invoker: counts made through both
    // gateways, by instances on either invoker, add up.
    let visits = "import ignis\ndef handler(event, context):\n    return ignis.kv.incr('visits')\n";
    deploy(&g1, "visit", "", visits);
    for n in 0..10 {
        let via = if n % 2 == 0 { &g1 } else { &g2 };
        let r = invoke_when_ready(via, "visit", "{}");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let v = g2.get("/v1/namespaces/default/kv/visits").text();
    assert_eq!(v.trim(), "10", "{v}");
    // Object bodies written through one node are read through the others (the cluster's
    // object store), and deleted everywhere.
    let put = |s: &Server, path: &str, body: &[u8]| {
        s.request(
            "PUT",
            &format!("/v1/namespaces/default/buckets{path}"),
            Some("application/octet-stream"),
            body,
        )
    };
    assert_eq!(put(&g1, "/shared", b"").status, 201);
    let body: Vec<u8> = (0..300_000u32).map(|n| (n % 251) as u8).collect();
    let r = put(&g1, "/shared/objects/blob.bin", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    for node in [&g2, &i1] {
        let got = node.get("/v1/namespaces/default/buckets/shared/objects/blob.bin");
        assert_eq!(got.status, 200);
        assert!(
            got.body == body,
            "the body read through another node differs"
        );
    }
    let del = g2.request(
        "DELETE",
        "/v1/namespaces/default/buckets/shared/objects/blob.bin",
        None,
        b"",
    );
    assert_eq!(del.status, 204, "{}", del.text());
    assert_eq!(
        i2.get("/v1/namespaces/default/buckets/shared/objects/blob.bin")
            .status,
        404
    );
    let id = first.header("x-ignis-activation-id").unwrap().to_string();
    let a = crate::harness::wait_activation(&g1, &id, 10);
    assert_eq!(a["status"], "success");
}

#[test]
fn an_invoker_killed_during_1000_async_invocations_loses_none_and_runs_none_twice() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let g = c.node("g", "gateway");
    let mut i1 = c.node("i1", "invoker");
    let mut i2 = c.node("i2", "invoker");
    let work = "import time\ndef handler(e, c):\n    time.sleep(0.005)\n    return e\n";
    deploy(&g, "work", "&max_instances=4&retries=0", work);
    assert_eq!(invoke_when_ready(&g, "work", "{}").status, 200);
    let home_is_1 = functions_with_instances(&i1).contains("work");

    const N: usize = 1000;
    let accepted: Vec<String> = std::thread::scope(|scope| {
        let senders: Vec<_> = (0..4)
            .map(|t| {
                let g = &g;
                scope.spawn(move || {
                    (0..N / 4)
                        .map(|n| {
                            let r = g.request(
                                "POST",
                                "/v1/namespaces/default/functions/work/invoke?blocking=false",
                                Some("application/json"),
                                format!(r#"{{"t":{t},"n":{n}}}"#).as_bytes(),
                            );
                            assert_eq!(r.status, 202, "{}", r.text());
                            r.json()["activation_id"].as_str().unwrap().to_string()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // Mid-way, the home invoker dies.
        let deadline = Instant::now() + Duration::from_secs(60);
        while all_activations(&g, "work").len() < 150 {
            assert!(Instant::now() < deadline, "async invocations do not run");
            std::thread::sleep(Duration::from_millis(50));
        }
        if home_is_1 {
            i1.kill();
        } else {
            i2.kill();
        }
        senders
            .into_iter()
            .flat_map(|s| s.join().unwrap())
            .collect()
    });
    assert_eq!(accepted.len(), N);
    let accepted: HashSet<String> = accepted.into_iter().collect();
    assert_eq!(accepted.len(), N, "every id is new");

    let deadline = Instant::now() + Duration::from_secs(240);
    let acts = loop {
        let acts = all_activations(&g, "work");
        if acts.len() > N || Instant::now() > deadline {
            break acts;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    for a in &acts {
        *seen
            .entry(a["id"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(a["status"], "success", "{a}");
    }
    let missing: Vec<_> = accepted
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged invocations never ran",
        missing.len()
    );
    assert!(
        seen.values().all(|n| *n == 1),
        "an activation appears twice"
    );
    // N accepted plus the first, blocking one.
    assert_eq!(acts.len(), N + 1);
    // The log was compacted on the way (every 200 entries), and nothing was lost by it.
    let status = g.get("/v1/system/cluster").json();
    assert!(status["log_snapshot"].as_u64().unwrap() > 0, "{status}");
    let dlq = g.get("/v1/namespaces/default/dlq").json();
    assert_eq!(
        dlq["dead_letters"].as_array().map(Vec::len),
        Some(0),
        "{dlq}"
    );
}

/// One blocking invocation over a fresh connection; `None` if the node cannot be reached.
fn try_invoke(addr: &str, key: &str, name: &str) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST /v1/namespaces/default/functions/{name}/invoke HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         connection: close\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    if raw.is_empty() {
        return None;
    }
    Some(parse_response(&raw).status)
}

#[test]
fn a_gateway_killed_and_restarted_loses_no_client_that_retries() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let mut g1 = c.node("g1", "gateway");
    let g2 = c.node("g2", "gateway");
    let _i = c.node("i", "invoker");
    deploy(&g1, "hello", "", ECHO);
    assert_eq!(invoke_when_ready(&g1, "hello", "{}").status, 200);
    let (addr1, addr2, key) = (g1.addr.clone(), g2.addr.clone(), g1.key.clone());

    // A client that tries g1 then g2, and retries, for as long as the test runs.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (done, failed) = std::thread::scope(|scope| {
        let client = scope.spawn(|| {
            let (mut done, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ok = (0..20).any(|attempt| {
                    let addr = if attempt % 2 == 0 { &addr1 } else { &addr2 };
                    let got = try_invoke(addr, &key, "hello") == Some(200);
                    if !got {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    got
                });
                if ok {
                    done += 1;
                } else {
                    failed += 1;
                }
            }
            (done, failed)
        });
        std::thread::sleep(Duration::from_millis(500));
        g1.kill();
        std::thread::sleep(Duration::from_secs(2));
        // Back on the same address and data directory: its replica is rebuilt from the log.
        g1 = c.node_on("g1", "gateway", &addr1);
        let r = g1.invoke("hello", r#"{"back":true}"#);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["back"], true);
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        client.join().unwrap()
    });
    assert_eq!(failed, 0, "{failed} calls failed even after 20 tries");
    assert!(done > 10, "only {done} calls");
}

#[test]
fn cron_fires_once_per_tick_with_two_gateways_even_when_one_dies() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let mut g1 = c.node("g1", "gateway");
    let g2 = c.node("g2", "gateway");
    let _i = c.node("i", "invoker");
    deploy(&g1, "tick", "", ECHO);
    let put = |path: &str, body: &str| {
        g1.request(
            "PUT",
            &format!("/v1/namespaces/default{path}"),
            Some("application/json"),
            body.as_bytes(),
        )
    };
    let r = put(
        "/triggers/every-second",
        r#"{"kind":"cron","schedule":"* * * * * *"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = put(
        "/rules/beat",
        r#"{"trigger":"every-second","function":"tick"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    std::thread::sleep(Duration::from_secs(6));
    // Whichever gateway held the lease, one dies: the other goes on.
    g1.kill();
    std::thread::sleep(Duration::from_secs(12));
    let times = scheduled_times(&g2, "every-second");
    let unique: HashSet<u64> = times.iter().copied().collect();
    assert_eq!(unique.len(), times.len(), "a tick fired twice: {times:?}");
    assert!(
        times.len() >= 8,
        "{} firings in 18 s: {times:?}",
        times.len()
    );
    let last = *times.last().unwrap();
    assert!(
        ignis_core::now_ms() - last < 4000,
        "the cron stopped after a gateway died: last firing at {last}"
    );
    // One activation per firing (allowing the last ones still running).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let acts = all_activations(&g2, "tick");
        let ids: HashSet<&str> = acts.iter().filter_map(|a| a["id"].as_str()).collect();
        assert_eq!(ids.len(), acts.len());
        if acts.len() >= times.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} activations for {} firings",
            acts.len(),
            times.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_invoker_stopped_cleanly_finishes_what_it_runs_and_nothing_runs_twice() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    let g = c.node("g", "gateway");
    let mut i1 = c.node("i1", "invoker");
    let mut i2 = c.node("i2", "invoker");
    let slow = "import time\ndef handler(e, c):\n    time.sleep(2)\n    return e\n";
    deploy(&g, "slow", "", slow);
    assert_eq!(invoke_when_ready(&g, "slow", "{}").status, 200);
    let home = if functions_with_instances(&i1).contains("slow") {
        &mut i1
    } else {
        &mut i2
    };
    let r = std::thread::scope(|scope| {
        let call = scope.spawn(|| g.invoke("slow", r#"{"during":"stop"}"#));
        std::thread::sleep(Duration::from_millis(700));
        // SIGTERM: a clean stop.
        home.stop();
        call.join().unwrap()
    });
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["during"], "stop");
    // It ran once, where it started: one activation, and it was warm.
    assert_eq!(r.header("x-ignis-cold"), Some("false"));
    assert_eq!(all_activations(&g, "slow").len(), 2);
}
