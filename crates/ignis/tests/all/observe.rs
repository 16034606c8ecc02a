//! Observability end to end: `/metrics` values after known invocations, usage totals equal to
//! the sum of the activation records (API and `ignis usage`), `ignis logs` and `ignis logs -f`
//! seeing a line within a second of it being printed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::*;

const HELLO: &str = "def handler(event, context):\n    print('hello from', event.get('who', 'nobody'))\n    return {'ok': True}\n";
const FAILS: &str = "def handler(event, context):\n    raise ValueError('nope')\n";

/// The value of one sample of the exposition, found by its name and labels in order.
fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

fn metrics(s: &Server) -> String {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.header("content-type")
    );
    r.text()
}

fn activations(s: &Server, function: &str) -> Vec<serde_json::Value> {
    let r = s.get(&format!(
        "/v1/namespaces/default/activations?function={function}&limit=200"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["activations"].as_array().unwrap().clone()
}

#[test]
fn metrics_count_known_invocations() {
    let s = Server::start();
    let r = s.deploy_file(
        "hello",
        "runtime=python&handler=app.handler&memory_mb=256",
        "app.py",
        HELLO,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.deploy_file(
        "fails",
        "runtime=python&handler=app.handler",
        "app.py",
        FAILS,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for _ in 0..3 {
        assert_eq!(s.invoke("hello", "{}").status, 200);
    }
    assert_eq!(s.invoke("fails", "{}").status, 502);

    // Only admin keys may scrape (without --metrics-public).
    let anonymous = s.raw_request("GET", "/metrics", &[], None, b"");
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());

    let text = metrics(&s);
    let f = r#"namespace="default",function="hello""#;
    assert_eq!(
        sample(
            &text,
            &format!(r#"ignis_function_invocations_total{{{f},status="success",start="cold"}}"#)
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"ignis_function_invocations_total{{{f},status="success",start="warm"}}"#)
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"ignis_function_invocations_total{namespace="default",function="fails",status="application_error",start="cold"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!("ignis_function_duration_seconds_count{{{f}}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(r#"ignis_function_duration_seconds_bucket{{{f},le="+Inf"}}"#)
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("ignis_function_init_duration_seconds_count{{{f}}}")
        ),
        Some(1.0)
    );
    // Every sandboxed process start is timed (stem cells included).
    assert!(sample(&text, "ignis_sandbox_setup_seconds_count").unwrap() >= 1.0);
    assert!(
        sample(&text, r#"ignis_instances{runtime="python",state="idle"}"#).unwrap() >= 1.0,
        "{text}"
    );
    assert!(text.contains("# TYPE ignis_stem_cells_ready gauge"));
    assert_eq!(
        sample(&text, &format!("ignis_function_queue_depth{{{f}}}")),
        Some(0.0)
    );
    assert_eq!(sample(&text, "ignis_invocations_in_flight"), Some(0.0));

    // GB-seconds: exactly the sum over the activation records.
    let mut mb_ms = 0u64;
    for name in ["hello", "fails"] {
        for a in activations(&s, name) {
            mb_ms += a["memory_mb"].as_u64().unwrap() * a["billed_ms"].as_u64().unwrap();
        }
    }
    let gbs = sample(
        &text,
        r#"ignis_namespace_gb_seconds_total{namespace="default"}"#,
    )
    .unwrap();
    assert_eq!(gbs, mb_ms as f64 / 1_024_000.0, "{text}");

    // A deleted function's series go with it.
    assert_eq!(
        s.request(
            "DELETE",
            "/v1/namespaces/default/functions/fails",
            None,
            b""
        )
        .status,
        200
    );
    assert!(!metrics(&s).contains(r#"function="fails""#));
}

#[test]
fn throttles_are_counted_and_metrics_can_be_public() {
    let s = Server::start_with(&["--queue-per-function", "0", "--metrics-public"]);
    let code = "import time\ndef handler(event, context):\n    time.sleep(1.5)\n    return {}\n";
    let r = s.deploy_file(
        "slow",
        "runtime=python&handler=app.handler&max_instances=1",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| s.invoke("slow", "{}").status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    assert!(throttled >= 1, "{statuses:?}");
    let r = s.raw_request("GET", "/metrics", &[], None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert_eq!(
        sample(
            &text,
            r#"ignis_function_throttles_total{namespace="default",function="slow",reason="concurrency"}"#
        ),
        Some(throttled as f64),
        "{text}"
    );
}

#[test]
fn usage_adds_up_to_the_activation_records() {
    let s = Server::start_with(&["--price-per-million-requests", "0.4"]);
    for (name, mb) in [("small", 128), ("big", 1024)] {
        let r = s.deploy_file(
            name,
            &format!("runtime=python&handler=app.handler&memory_mb={mb}"),
            "app.py",
            HELLO,
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    for i in 0..5 {
        let name = if i % 2 == 0 { "small" } else { "big" };
        assert_eq!(s.invoke(name, "{}").status, 200);
    }
    let mut expected = std::collections::BTreeMap::new();
    for name in ["small", "big"] {
        for a in activations(&s, name) {
            let e = expected.entry(name).or_insert((0u64, 0u64));
            e.0 += 1;
            e.1 += a["memory_mb"].as_u64().unwrap() * a["billed_ms"].as_u64().unwrap();
        }
    }
    let r = s.get("/v1/namespaces/default/usage?group_by=function");
    assert_eq!(r.status, 200, "{}", r.text());
    let report = r.json();
    let mut total = (0u64, 0u64);
    for g in report["groups"].as_array().unwrap() {
        let name = g["key"].as_str().unwrap();
        let (requests, mb_ms) = expected[name];
        assert_eq!(g["requests"].as_u64(), Some(requests), "{g}");
        assert_eq!(g["mb_ms"].as_u64(), Some(mb_ms), "{g}");
        total.0 += requests;
        total.1 += mb_ms;
    }
    assert_eq!(report["groups"].as_array().unwrap().len(), 2);
    let t = &report["total"];
    assert_eq!(t["requests"].as_u64(), Some(5));
    assert_eq!(
        (
            t["requests"].as_u64().unwrap(),
            t["mb_ms"].as_u64().unwrap()
        ),
        total
    );
    let gbs = total.1 as f64 / 1_024_000.0;
    assert_eq!(t["gb_seconds"].as_f64(), Some(gbs));
    let cost = 5.0 * 0.4 / 1e6 + gbs * 0.000_016_666_7;
    assert!((t["cost"].as_f64().unwrap() - cost).abs() < 1e-15, "{t}");

    // By day: today's row carries everything.
    let r = s.get("/v1/namespaces/default/usage?group_by=day");
    let days = r.json()["groups"].as_array().unwrap().clone();
    assert_eq!(days.len(), 1, "{days:?}");
    assert_eq!(days[0]["mb_ms"].as_u64(), Some(total.1));
    // A period before anything ran is empty.
    let r = s.get("/v1/namespaces/default/usage?from=2001-01-01&to=2001-01-31");
    assert_eq!(r.json()["total"]["requests"].as_u64(), Some(0));
    for bad in [
        "group_by=week",
        "from=yesterday",
        "to=2001-02-30",
        "from=5&to=4",
        "x=1",
    ] {
        let r = s.get(&format!("/v1/namespaces/default/usage?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }

    // The CLI prints the same totals.
    let out = ok(&s.cli(&["usage", "--json"]));
    let cli: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli["total"]["mb_ms"].as_u64(), Some(total.1));
    let table = ok(&s.cli(&["usage", "--group-by", "function"]));
    assert!(
        table.contains("small") && table.contains("big") && table.contains("TOTAL"),
        "{table}"
    );
    assert!(table.contains(&format!("{gbs:.6}")), "{table}");
}

#[test]
fn logs_follow_sees_a_line_within_a_second() {
    let mut s = Server::start();
    let code = "import sys, time\ndef handler(event, context):\n    print('live-line', event.get('n'))\n    sys.stdout.flush()\n    time.sleep(3)\n    print('after-sleep', file=sys.stderr)\n    return {}\n";
    let r = s.deploy_file(
        "talker",
        "runtime=python&handler=app.handler",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Warm it, so that what is timed below is the line, not a cold start.
    assert_eq!(s.invoke("talker", r#"{"n": 0}"#).status, 200);

    let mut follower = Command::new(BIN)
        .args(["logs", "-f", "talker"])
        .env("IGNIS_URL", &s.url)
        .env("IGNIS_KEY", &s.key)
        .env("IGNIS_CONFIG", s.dir.join("no-such-cli.toml"))
        .env("HOME", &s.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    let out_tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = out_tx.send(("out", line, Instant::now()));
        }
    });
    let stderr = follower.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(("err", line, Instant::now()));
        }
    });
    let (kind, line, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(kind, "err");
    assert!(line.starts_with("following the logs of talker"), "{line}");

    let invoked = Instant::now();
    let invocation = std::thread::spawn({
        let (addr, key) = (s.addr.clone(), s.key.clone());
        move || {
            let mut s2 = std::net::TcpStream::connect(&addr).unwrap();
            use std::io::{Read, Write};
            let body = r#"{"n": 1}"#;
            write!(
                s2,
                "POST /v1/namespaces/default/functions/talker/invoke HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            let mut raw = String::new();
            let _ = s2.read_to_string(&mut raw);
            raw
        }
    });
    let (kind, line, seen) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(kind, "out");
    assert!(line.ends_with(" stdout live-line 1"), "{line}");
    let latency = seen - invoked;
    assert!(
        latency < Duration::from_secs(1),
        "the line took {latency:?}"
    );
    let raw = invocation.join().unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    // The stderr line written after the sleep arrives too, tagged with the same activation.
    let (_, late, _) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(late.ends_with(" stderr after-sleep"), "{late}");
    let id = line.split(' ').nth(1).unwrap();
    assert!(
        raw.to_ascii_lowercase()
            .contains(&format!("x-ignis-activation-id: {id}")),
        "{raw}"
    );
    // Without -f: the recent activations' lines, filtered.
    let out = ok(&s.cli(&["logs", "talker", "--stream", "stdout"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].ends_with("live-line 0") && lines[1].ends_with("live-line 1"),
        "{out}"
    );
    let out = ok(&s.cli(&["logs", "talker", "--grep", "after", "--tail", "1"]));
    assert_eq!(out.lines().count(), 1, "{out}");
    // Unknown function: a clear 404.
    let r = s.get("/v1/namespaces/default/functions/nope/logs?follow=true");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = s.get("/v1/namespaces/default/functions/talker/logs?stream=stdin");
    assert_eq!(r.status, 400, "{}", r.text());

    // A follower does not hold up a graceful stop: its stream ends, and `ignis logs -f` with it.
    let stopping = Instant::now();
    assert!(s.stop().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "{:?}",
        stopping.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = follower.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = follower.kill();
            panic!("ignis logs -f did not end with the server");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit}");
}

#[test]
fn a_request_id_names_the_activation_and_every_platform_log_line_of_it() {
    let s = Server::start_logging(
        &[],
        "info,ignis_gateway=debug,ignis_controller=debug,ignis_invoker=debug",
    );
    let code = "def handler(event, context):\n    return {'seen': context.aws_request_id}\n";
    let r = s.deploy_file(
        "traced",
        "runtime=python&handler=app.handler",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.invoke("traced", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.header("x-request-id").unwrap().to_string();
    // gateway → invoker → instance → activation: one id.
    assert_eq!(r.header("x-ignis-activation-id"), Some(id.as_str()));
    assert_eq!(r.json()["seen"].as_str(), Some(id.as_str()));
    assert_eq!(
        wait_activation(&s, &id, 5)["id"].as_str(),
        Some(id.as_str())
    );
    // The platform's log lines of this invocation, from each layer, all carry it.
    let tagged = format!("request_id={id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = s.stderr_text();
        if log.contains("request done") && log.contains(&tagged) || Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    for what in ["instance acquired", "activation finished"] {
        let line = log
            .lines()
            .find(|l| l.contains(what) && l.contains(&tagged))
            .unwrap_or_else(|| panic!("no {what:?} line with {tagged}:\n{log}"));
        assert!(line.contains(&tagged), "{line}");
    }
    let invoke_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("instance acquired") || l.contains("activation finished"))
        .collect();
    assert_eq!(invoke_lines.len(), 2, "{log}");
    assert!(invoke_lines.iter().all(|l| l.contains(&tagged)), "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("request done") && l.contains(&tagged) && l.contains("status=200")),
        "{log}"
    );

    // An asynchronous invocation: the id acknowledged is the request id, and its run's lines
    // (on the queue worker) carry it too.
    let r = s.request(
        "POST",
        "/v1/namespaces/default/functions/traced/invoke?blocking=false",
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.header("x-request-id").unwrap().to_string();
    assert_eq!(r.json()["activation_id"].as_str(), Some(id.as_str()));
    let a = wait_activation(&s, &id, 10);
    assert_eq!(a["result"]["seen"].as_str(), Some(id.as_str()), "{a}");
    let tagged = format!("request_id={id}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = s.stderr_text();
        if log
            .lines()
            .any(|l| l.contains("activation finished") && l.contains(&tagged))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no tagged async line:\n{log}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn pricing_comes_from_the_config_file_with_its_free_tier() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        "[pricing]\nper_million_requests = 1000000.0\nper_gb_second = 1.0\nfree_tier = true\nfree_requests_per_month = 1\nfree_gb_seconds_per_month = 0\n",
    )
    .unwrap();
    let s = Server::start_with(&["--config", config.to_str().unwrap()]);
    let r = s.deploy_file(
        "hello",
        "runtime=python&handler=app.handler",
        "app.py",
        HELLO,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for _ in 0..2 {
        assert_eq!(s.invoke("hello", "{}").status, 200);
    }
    let mb_ms: u64 = activations(&s, "hello")
        .iter()
        .map(|a| a["memory_mb"].as_u64().unwrap() * a["billed_ms"].as_u64().unwrap())
        .sum();
    let t = s.get("/v1/namespaces/default/usage").json()["total"].clone();
    let gbs = mb_ms as f64 / 1_024_000.0;
    // $1 a request, $1 a GB-second; the free tier takes one request off.
    assert_eq!(t["request_cost"].as_f64(), Some(2.0), "{t}");
    assert_eq!(t["free_tier_credit"].as_f64(), Some(1.0), "{t}");
    assert!(
        (t["cost"].as_f64().unwrap() - (1.0 + gbs)).abs() < 1e-12,
        "{t}"
    );
    let out = ok(&s.cli(&["usage"]));
    assert!(out.contains("free tier: −$1.000000"), "{out}");

    // A price model that makes no sense stops the server at start.
    std::fs::write(&config, "[pricing]\nper_gb_second = -1.0\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-cli-config",
            "--config",
        ])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pricing.per_gb_second"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
