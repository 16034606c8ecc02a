//! `ignis bench` against a real server: it deploys its no-op function, loads it and reports.

use crate::harness::*;

#[test]
fn bench_reports_a_clean_run_as_json() {
    let s = Server::start();
    let out = ok(&s.cli(&["bench", "--requests", "300", "--concurrency", "4", "--json"]));
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["function"], "bench-noop-python", "{v}");
    assert_eq!(v["requests"], 300, "{v}");
    assert_eq!(v["succeeded"], 300, "{v}");
    assert_eq!(v["errors"]["total"], 0, "{v}");
    // The warm-up makes the instances; at most 4 (max_instances = concurrency) exist.
    let cold = v["cold_starts"].as_u64().unwrap();
    let warm_up_cold = v["warmup_cold_starts"].as_u64().unwrap();
    assert!(warm_up_cold >= 1 && cold + warm_up_cold <= 4, "{v}");
    let l = &v["latency_us"];
    let us = |k: &str| {
        l[k].as_u64()
            .unwrap_or_else(|| panic!("no latency_us.{k}: {v}"))
    };
    assert!(us("min") > 0, "{v}");
    assert!(us("min") <= us("p50"), "{v}");
    assert!(us("p50") <= us("p90") && us("p90") <= us("p99"), "{v}");
    assert!(us("p99") <= us("p99_9") && us("p99_9") <= us("max"), "{v}");
    assert!(v["throughput_rps"].as_f64().unwrap() > 0.0, "{v}");

    // The no-op function is deleted after the run.
    let r = s.get("/v1/namespaces/default/functions/bench-noop-python");
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn bench_fails_when_requests_fail() {
    let s = Server::start();
    let r = s.deploy_file(
        "boom",
        "runtime=exec&handler=boom.sh",
        "boom.sh",
        "#!/bin/sh\nexit 3\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let out = s.cli(&[
        "bench",
        "--function",
        "boom",
        "--requests",
        "5",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests"], 5, "{v}");
    assert_eq!(v["errors"]["function"], 5, "{v}");
    assert!(v["latency_us"].is_null(), "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("5 of 5 requests failed"), "{err}");

    // With a warm-up, a function that always fails is given up on quickly.
    let out = s.cli(&["bench", "--function", "boom", "--concurrency", "2"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("every warm-up invocation of boom failed") && err.contains("status 3"),
        "{err}"
    );
    assert!(
        err.contains("2 errors") || err.contains("3 errors"),
        "{err}"
    );
}

#[test]
fn bench_spreads_the_load_over_several_functions() {
    let s = Server::start();
    let out = ok(&s.cli(&[
        "bench",
        "--functions",
        "3",
        "--requests",
        "90",
        "--warmup",
        "9",
        "--concurrency",
        "3",
        "--json",
    ]));
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(v["functions"], 3, "{v}");
    assert_eq!(v["succeeded"], 90, "{v}");
    assert_eq!(
        v["function"], "bench-noop-python-1 … bench-noop-python-3 (3 functions)",
        "{v}"
    );
    // Each function got its turns (a third of the invocations each), and all are deleted.
    let page = s.get("/v1/namespaces/default/activations?limit=200").json();
    let names = names_in(&page["activations"], "function");
    for i in 1..=3 {
        let name = format!("bench-noop-python-{i}");
        assert_eq!(names.iter().filter(|n| **n == name).count(), 33, "{name}");
        let r = s.get(&format!("/v1/namespaces/default/functions/{name}"));
        assert_eq!(r.status, 404, "{}", r.text());
    }
}
