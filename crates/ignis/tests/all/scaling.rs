//! Cold starts from stem cells, provisioned concurrency, the memory budget and bursts.

use crate::harness::*;
use std::time::{Duration, Instant};

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stem_ready(s: &Server, runtime: &str) -> u64 {
    s.get("/v1/system/instances").json()["stem_cells"][runtime]
        .as_u64()
        .unwrap_or(0)
}

fn instances_of(s: &Server, function: &str) -> Vec<serde_json::Value> {
    s.get("/v1/system/instances").json()["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["function"] == function)
        .cloned()
        .collect()
}

#[test]
fn cold_starts_take_a_stem_cell() {
    let s = Server::start_with(&["--stem-cells", "2"]);
    let info = s.get("/v1/system/info").json();
    if info["protections"]["cgroups"].is_null() {
        eprintln!("skipped: stem cells need cgroups");
        return;
    }
    wait_for("python stem cells", || stem_ready(&s, "python") == 2);
    wait_for("node stem cells", || stem_ready(&s, "node") == 2);
    let code = "import os\ndef handler(e, c):\n    return {'cwd': os.getcwd(), 'files': sorted(os.listdir('.')), 'env': os.environ.get('X')}\n";
    assert_eq!(
        s.deploy_file(
            "stem",
            "runtime=python&handler=app.handler&env=X%3D1&memory_mb=128",
            "app.py",
            code
        )
        .status,
        201
    );
    let r = s.invoke("stem", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-ignis-cold"), Some("true"));
    let v = r.json();
    assert_eq!(v["files"], serde_json::json!(["app.py"]));
    assert_eq!(v["env"], "1");
    let init_ms: u64 = r.header("x-ignis-init-ms").unwrap().parse().unwrap();
    // An interpreter start is tens of milliseconds; a stem cell only loads the code.
    assert!(
        init_ms < 30,
        "cold start from a stem cell took {init_ms} ms"
    );
    let inst = instances_of(&s, "stem");
    assert_eq!(inst.len(), 1);
    assert_eq!(inst[0]["memory_mb"], 128);
    assert_eq!(inst[0]["invocations"], 1);
    // The pool refills.
    wait_for("the python pool to refill", || {
        stem_ready(&s, "python") == 2
    });
    // Node too.
    let js = "exports.handler = async () => ({ node: process.version });";
    assert_eq!(
        s.deploy_file(
            "stemjs",
            "runtime=node&handler=index.handler",
            "index.js",
            js
        )
        .status,
        201
    );
    let r = s.invoke("stemjs", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let init_ms: u64 = r.header("x-ignis-init-ms").unwrap().parse().unwrap();
    assert!(
        init_ms < 40,
        "node cold start from a stem cell took {init_ms} ms"
    );
}

#[test]
fn provisioned_instances_are_warm_and_survive_keep_alive_and_restart() {
    let mut s = Server::start_with(&["--keep-alive-secs", "1", "--stem-cells", "0"]);
    let tmp = s.take_dir().unwrap();
    let code = "def handler(e, c):\n    return 'ready'\n";
    let r = s.deploy_file(
        "prov",
        "runtime=python&handler=app.handler&min_instances=2",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    wait_for("2 provisioned instances", || {
        instances_of(&s, "prov").len() == 2
    });
    let r = s.invoke("prov", "{}");
    assert_eq!(
        r.header("x-ignis-cold"),
        Some("false"),
        "provisioned: no cold start"
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        instances_of(&s, "prov").len(),
        2,
        "kept past the keep-alive"
    );
    // A new version takes the provisioned concurrency over; the old one scales to zero.
    let r = s.deploy_file(
        "prov",
        "runtime=python&handler=app.handler&min_instances=1",
        "app.py",
        code,
    );
    assert_eq!(r.status, 200);
    wait_for("version 2 provisioned and version 1 reclaimed", || {
        let inst = instances_of(&s, "prov");
        inst.len() == 1 && inst[0]["version"] == 2
    });
    let bad = s.deploy_file(
        "prov",
        "runtime=python&handler=app.handler&min_instances=20&max_instances=2",
        "app.py",
        code,
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["field"], "min_instances");
    assert!(s.stop().success());
    let s2 = Server::launch(tmp.path(), &["--keep-alive-secs", "1", "--stem-cells", "0"]);
    wait_for("provisioned after restart", || {
        instances_of(&s2, "prov").len() == 1
    });
}

#[test]
fn memory_budget_evicts_idle_instances_then_throttles() {
    let s = Server::start_with(&["--memory-budget-mb", "600", "--stem-cells", "0"]);
    let quick = "def handler(e, c):\n    return 1\n";
    for name in ["a", "b", "c"] {
        assert_eq!(
            s.deploy_file(
                name,
                "runtime=python&handler=app.handler&memory_mb=256",
                "app.py",
                quick
            )
            .status,
            201
        );
    }
    assert_eq!(s.invoke("a", "{}").status, 200);
    assert_eq!(s.invoke("b", "{}").status, 200);
    let mem = s.get("/v1/system/instances").json()["memory"].clone();
    assert_eq!(mem["used_mb"], 512);
    assert_eq!(mem["budget_mb"], 600);
    // c needs room: a, the least recently used idle instance, is evicted.
    assert_eq!(s.invoke("c", "{}").status, 200);
    assert!(instances_of(&s, "a").is_empty());
    assert_eq!(instances_of(&s, "b").len(), 1);
    assert_eq!(s.invoke("a", "{}").header("x-ignis-cold"), Some("true"));

    // When every instance is busy there is nothing to evict: 429.
    let slow = "import time\ndef handler(e, c):\n    time.sleep(1.5)\n    return 1\n";
    assert_eq!(
        s.deploy_file(
            "slow",
            "runtime=python&handler=app.handler&memory_mb=256",
            "app.py",
            slow
        )
        .status,
        201
    );
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(200 * i));
                    s.invoke("slow", "{}").status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|c| **c == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|c| **c == 429).count(),
        1,
        "{statuses:?}"
    );
}

#[test]
fn a_burst_of_500_on_a_cold_function_all_succeeds() {
    let s = Server::start_with(&["--queue-per-function", "500"]);
    let code = "import time\ndef handler(e, c):\n    time.sleep(0.01)\n    return e['i']\n";
    assert_eq!(
        s.deploy_file(
            "burst",
            "runtime=python&handler=app.handler&max_instances=16",
            "app.py",
            code
        )
        .status,
        201
    );
    let start = Instant::now();
    let mut latencies: Vec<(u16, Duration)> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..500)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let t = Instant::now();
                    let r = s.invoke("burst", &format!(r#"{{"i": {i}}}"#));
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.json(), i);
                    (r.status, t.elapsed())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    latencies.sort_by_key(|(_, d)| *d);
    let p99 = latencies[latencies.len() * 99 / 100].1;
    eprintln!("burst of 500: total {:?}, p99 {:?}", start.elapsed(), p99);
    assert!(instances_of(&s, "burst").len() <= 16);
}

fn log_lines(s: &Server, r: &Resp) -> Vec<String> {
    let id = r.header("x-ignis-activation-id").unwrap();
    s.get(&format!("/v1/namespaces/default/activations/{id}/logs"))
        .json()["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_string())
        .collect()
}

/// Several invocations at once in one instance (instance_concurrency): they overlap, share the
/// instance, and each activation keeps its own logs.
fn concurrent_instance(runtime: &str, file: &str, code: &str) {
    let s = Server::start();
    let query = format!(
        "runtime={runtime}&handler=app.handler&max_instances=1&instance_concurrency=4&timeout_ms=20000"
    );
    let r = s.deploy_file("conc", &query, file, code);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["instance_concurrency"], 4);
    assert_eq!(s.invoke("conc", r#"{"n": 0, "ms": 0}"#).status, 200); // the instance exists
    let started = Instant::now();
    let answers: Vec<Resp> = std::thread::scope(|scope| {
        let calls: Vec<_> = (1..=4)
            .map(|n| {
                let s = &s;
                scope.spawn(move || s.invoke("conc", &format!(r#"{{"n": {n}, "ms": 1000}}"#)))
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    let elapsed = started.elapsed();
    // One instance, four invocations of one second each: together, not one after the other.
    assert!(elapsed < Duration::from_millis(3000), "took {elapsed:?}");
    let instance = answers[0].header("x-ignis-instance").unwrap().to_string();
    for (i, r) in answers.iter().enumerate() {
        let n = i + 1;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["n"], n);
        assert_eq!(r.header("x-ignis-cold"), Some("false"));
        assert_eq!(r.header("x-ignis-instance"), Some(instance.as_str()));
        assert_eq!(
            log_lines(&s, r),
            vec![format!("begin {n}"), format!("done {n}")],
            "invocation {n} has exactly its own logs"
        );
    }
    let live = instances_of(&s, "conc");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["invocations"], 5);
    assert_eq!(live[0]["running"], 0);
    let f = s.get("/v1/namespaces/default/functions/conc").json();
    assert_eq!(f["instances"]["live"], 1, "{f}");
}

#[test]
fn python_instance_runs_invocations_concurrently() {
    concurrent_instance(
        "python",
        "app.py",
        "import sys, time\n\
         def handler(event, context):\n    \
             print('begin', event['n'])\n    \
             time.sleep(event['ms'] / 1000)\n    \
             print('done', event['n'], file=sys.stderr)\n    \
             return {'n': event['n']}\n",
    );
}

#[test]
fn node_instance_runs_invocations_concurrently() {
    concurrent_instance(
        "node",
        "app.js",
        "exports.handler = async (event) => {\n\
           console.log('begin', event.n);\n\
           await new Promise((r) => setTimeout(r, event.ms));\n\
           console.error('done', event.n);\n\
           return { n: event.n };\n\
         };\n",
    );
}

/// A timeout in a concurrent instance ends the instance: the late invocation says timeout,
/// the others on it say why they were lost, and the next invocation gets a new instance.
#[test]
fn timeout_in_a_concurrent_instance_ends_it_for_all() {
    let s = Server::start();
    let code = "import time\ndef handler(event, context):\n    time.sleep(event['s'])\n    return event['s']\n";
    let r = s.deploy_file(
        "conct",
        "runtime=python&handler=app.handler&max_instances=1&instance_concurrency=3&timeout_ms=1500",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let first = s.invoke("conct", r#"{"s": 0}"#);
    assert_eq!(first.status, 200);
    let answers: Vec<Resp> = std::thread::scope(|scope| {
        let slow = scope.spawn(|| s.invoke("conct", r#"{"s": 30}"#));
        std::thread::sleep(Duration::from_millis(700));
        let other = scope.spawn(|| s.invoke("conct", r#"{"s": 30}"#));
        let quick = s.invoke("conct", r#"{"s": 0.1}"#);
        vec![slow.join().unwrap(), other.join().unwrap(), quick]
    });
    assert_eq!(answers[2].status, 200, "{}", answers[2].text());
    let record = |r: &Resp| {
        let id = r.header("x-ignis-activation-id").unwrap();
        s.get(&format!("/v1/namespaces/default/activations/{id}"))
            .json()
    };
    assert_eq!(answers[0].status, 504, "{}", answers[0].text());
    let slow = record(&answers[0]);
    assert_eq!(slow["status"], "timeout", "{slow}");
    let other = record(&answers[1]);
    assert_eq!(other["status"], "crash", "{other}");
    assert_eq!(other["error"]["type"], "InstanceLost", "{other}");
    let next = s.invoke("conct", r#"{"s": 0}"#);
    assert_eq!(next.status, 200, "{}", next.text());
    assert_eq!(next.header("x-ignis-cold"), Some("true"));
    assert_ne!(
        next.header("x-ignis-instance"),
        first.header("x-ignis-instance")
    );
    wait_for("one live instance", || instances_of(&s, "conct").len() == 1);
}

#[test]
fn instance_concurrency_is_validated() {
    let s = Server::start();
    let r = s.deploy_file(
        "bad",
        "runtime=python&handler=app.handler&instance_concurrency=0",
        "app.py",
        "def handler(e, c):\n    return 1\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("instance_concurrency"), "{}", r.text());
    let r = s.deploy_file(
        "bad",
        "runtime=exec&handler=run.sh&instance_concurrency=2",
        "run.sh",
        "#!/bin/sh\ncat\n",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("exec"), "{}", r.text());
    // The CLI checks before uploading and names its flag; a good value shows in `fn get`.
    let dir = code_dir(&[("app.py", "def handler(e, c):\n    return 1\n")]);
    let deploy = |n: &str| {
        s.cli(&[
            "fn",
            "deploy",
            "conc",
            dir.path().to_str().unwrap(),
            "--runtime",
            "python",
            "--handler",
            "app.handler",
            "--instance-concurrency",
            n,
        ])
    };
    let out = deploy("101");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--instance-concurrency"), "{err}");
    ok(&deploy("8"));
    let shown = ok(&s.cli(&["fn", "get", "conc"]));
    assert!(shown.contains("instance concurrency"), "{shown}");
    assert!(shown.contains('8'), "{shown}");
}
