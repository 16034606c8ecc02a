//! The mixed soak: many functions, keep-alive churn, failures, for minutes; at the end nothing
//! has leaked (server descriptors, live instances, server memory). Not part of the default run:
//!
//! `IGNIS_SOAK_SECS=600 cargo test --release -p ignis --test all soak -- --ignored --nocapture`

use crate::harness::*;
use std::time::{Duration, Instant};

fn proc_count(pid: i32, what: &str) -> u64 {
    match what {
        "fds" => std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0),
        "rss_kb" => proc_status_kib(pid, "VmRSS").unwrap_or(0),
        _ => unreachable!(),
    }
}

fn live_instances(s: &Server) -> usize {
    s.get("/v1/system/instances").json()["instances"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
#[ignore = "a long soak; run with IGNIS_SOAK_SECS and --ignored"]
fn mixed_soak_leaks_nothing() {
    let secs: u64 = std::env::var("IGNIS_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let s = Server::start_with(&["--keep-alive-secs", "2", "--queue-per-function", "200"]);
    let mut names = Vec::new();
    for i in 0..50 {
        let name = format!("f{i}");
        let r = match i % 5 {
            0..=2 => s.deploy_file(
                &name,
                "runtime=python&handler=app.handler&max_instances=3&memory_mb=128",
                "app.py",
                "import random\ndef handler(e, c):\n    if random.random() < 0.02:\n        raise ValueError('sometimes')\n    print('py', e.get('n'))\n    return e\n",
            ),
            3 => s.deploy_file(
                &name,
                "runtime=node&handler=index.handler&max_instances=2&memory_mb=128",
                "index.js",
                "exports.handler = async (e) => { console.log('js', e.n); return e; };",
            ),
            _ => s.deploy_file(&name, "runtime=exec&max_instances=4&memory_mb=64&tmp_mb=1", "run.sh", "#!/bin/sh\ncat\n"),
        };
        assert_eq!(r.status, 201, "{}", r.text());
        names.push(name);
    }
    let pid = s.pid();
    // Warm-up, then the baseline.
    for n in &names {
        let status = s.invoke(n, "{}").status;
        assert!(status == 200 || status == 502, "{n}: {status}");
    }
    std::thread::sleep(Duration::from_secs(5));
    let base_fds = proc_count(pid, "fds");
    let base_rss = proc_count(pid, "rss_kb");
    let end = Instant::now() + Duration::from_secs(secs);
    let (ok, failed) = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..12)
            .map(|t| {
                let (s, names) = (&s, &names);
                scope.spawn(move || {
                    let (mut ok, mut failed) = (0u64, 0u64);
                    let mut x: u64 = 0x9e37_79b9 + t;
                    while Instant::now() < end {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Hot functions most of the time, cold ones now and then (churn).
                        let i = if x.is_multiple_of(4) {
                            (x / 4) as usize % names.len()
                        } else {
                            (x / 4) as usize % 8
                        };
                        let r = s.invoke(&names[i], &format!(r#"{{"n": {x}}}"#));
                        match r.status {
                            200 => ok += 1,
                            502 if r.error_code() == "application_error" => ok += 1,
                            _ => failed += 1,
                        }
                        if x.is_multiple_of(97) {
                            std::thread::sleep(Duration::from_millis(2500));
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    eprintln!("soak: {ok} invocations answered, {failed} failed, in {secs} s");
    assert_eq!(failed, 0);
    // Everything idle is reclaimed after the keep-alive.
    let deadline = Instant::now() + Duration::from_secs(20);
    while live_instances(&s) > 0 {
        assert!(
            Instant::now() < deadline,
            "instances left: {}",
            live_instances(&s)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let fds = proc_count(pid, "fds");
    let rss = proc_count(pid, "rss_kb");
    eprintln!("soak: server fds {base_fds} -> {fds}, rss {base_rss} kB -> {rss} kB");
    assert!(
        fds <= base_fds + 16,
        "descriptors leaked: {base_fds} -> {fds}"
    );
    assert!(
        rss < base_rss + 64 * 1024,
        "memory grew: {base_rss} -> {rss} kB"
    );
}
