//! Asynchronous invocations: accepted durably, retried, dead-lettered, never lost.

use crate::harness::*;
use std::time::{Duration, Instant};

fn submit(s: &Server, name: &str, body: &str, key: Option<&str>) -> Resp {
    let auth = format!("Bearer {}", s.key);
    let mut headers = vec![("authorization", auth.as_str())];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    s.raw_request(
        "POST",
        &format!("/v1/namespaces/default/functions/{name}/invoke?blocking=false"),
        &headers,
        Some("application/json"),
        body.as_bytes(),
    )
}

#[test]
fn async_invocations_are_accepted_then_run() {
    let s = Server::start();
    let code = "def handler(e, c):\n    print('async', e['n'])\n    return {'twice': e['n'] * 2}\n";
    assert_eq!(
        s.deploy_file("bg", "runtime=python&handler=app.handler", "app.py", code)
            .status,
        201
    );
    let r = submit(&s, "bg", r#"{"n": 21}"#, None);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["activation_id"].as_str().unwrap().to_string();
    assert_eq!(r.header("x-ignis-activation-id"), Some(id.as_str()));
    let a = wait_activation(&s, &id, 20);
    assert_eq!(a["status"], "success");
    assert_eq!(a["result"]["twice"], 42);
    assert_eq!(a["logs"][0]["line"], "async 21");
    // The same key gives the same activation, once.
    let r1 = submit(&s, "bg", r#"{"n": 1}"#, Some("order-17"));
    let r2 = submit(&s, "bg", r#"{"n": 1}"#, Some("order-17"));
    assert_eq!(r1.json()["activation_id"], r2.json()["activation_id"]);
    assert_eq!(r2.json()["new"], false);
    // Bad input is refused before anything is queued.
    assert_eq!(submit(&s, "nope", "{}", None).status, 404);
    assert_eq!(submit(&s, "bg", "{not json", None).status, 400);
    let cli = ok(&s.cli(&["invoke", "bg", "--async", "-d", r#"{"n": 2}"#]));
    let id = cli.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(wait_activation(&s, &id, 20)["result"]["twice"], 4);
}

#[test]
fn failures_are_retried_then_dead_lettered_and_replayable() {
    let s = Server::start();
    // Fails on its first call in an instance, then succeeds: a retry fixes it.
    let flaky = "calls = 0\ndef handler(e, c):\n    global calls\n    calls += 1\n    if calls == 1:\n        raise RuntimeError('first call fails')\n    return 'recovered'\n";
    assert_eq!(
        s.deploy_file(
            "flaky",
            "runtime=python&handler=app.handler&retries=2",
            "app.py",
            flaky
        )
        .status,
        201
    );
    let id = submit(&s, "flaky", "{}", None).json()["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = wait_activation(&s, &id, 20);
        if a["status"] == "success" {
            assert_eq!(a["result"], "recovered");
            break;
        }
        assert!(Instant::now() < deadline, "never retried: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Always failing with one retry: two attempts, then the dead-letter list.
    let bad = "def handler(e, c):\n    raise ValueError('always')\n";
    assert_eq!(
        s.deploy_file(
            "bad",
            "runtime=python&handler=app.handler&retries=1",
            "app.py",
            bad
        )
        .status,
        201
    );
    let id = submit(&s, "bad", "{}", None).json()["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let dead = loop {
        let dlq = s.get("/v1/namespaces/default/dlq").json();
        if let Some(d) = dlq["dead_letters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.as_str())
        {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "never dead-lettered");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(dead["attempts"], 2);
    assert!(dead["last_error"].as_str().unwrap().contains("always"));
    assert_eq!(wait_activation(&s, &id, 5)["status"], "application_error");
    assert!(ok(&s.cli(&["dlq", "list"])).contains(&id[..8]));
    // Fixed, then replayed: it succeeds and leaves the list.
    assert_eq!(
        s.deploy_file(
            "bad",
            "runtime=python&handler=app.handler&retries=1",
            "app.py",
            "def handler(e, c):\n    return 'fixed'\n"
        )
        .status,
        200
    );
    ok(&s.cli(&["dlq", "replay", &id]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while wait_activation(&s, &id, 5)["status"] != "success" {
        assert!(Instant::now() < deadline, "replay did not run");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.get("/v1/namespaces/default/dlq").json()["dead_letters"],
        serde_json::json!([])
    );
    assert_eq!(
        s.request(
            "POST",
            &format!("/v1/namespaces/default/dlq/{id}/replay"),
            None,
            b""
        )
        .status,
        404
    );
}

/// Submits `n` invocations from several threads; returns their activation ids.
fn submit_many(s: &Server, name: &str, n: usize, stop_after: Option<usize>) -> Vec<String> {
    let ids = std::sync::Mutex::new(Vec::with_capacity(n));
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n || stop_after.is_some_and(|m| i >= m) {
                        return;
                    }
                    let r = submit(s, name, &format!(r#"{{"i": {i}}}"#), None);
                    assert_eq!(r.status, 202, "{}", r.text());
                    ids.lock()
                        .unwrap()
                        .push(r.json()["activation_id"].as_str().unwrap().to_string());
                }
            });
        }
    });
    ids.into_inner().unwrap()
}

/// Every activation of a function, through all pages.
fn activations_of(s: &Server, name: &str) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => {
                format!("/v1/namespaces/default/activations?function={name}&limit=200&cursor={c}")
            }
            None => format!("/v1/namespaces/default/activations?function={name}&limit=200"),
        };
        let page = s.get(&url).json();
        all.extend(page["activations"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

#[test]
fn acknowledged_async_invocations_survive_kill_9() {
    let n: usize = std::env::var("IGNIS_CRASH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    for round in 0..5 {
        let name = format!("crash{round}");
        // A little work per invocation, so that the kill lands while the queue is worked on.
        let code = "import time\ndef handler(e, c):\n    time.sleep(0.003)\n    return e['i']\n";
        assert_eq!(
            s.deploy_file(
                &name,
                "runtime=python&handler=app.handler&max_instances=4",
                "app.py",
                code
            )
            .status,
            201
        );
        let ids = submit_many(&s, &name, n, None);
        assert_eq!(ids.len(), n);
        // Kill it while the queue is being worked through.
        let done_before = activations_of(&s, &name).len();
        s.kill();
        eprintln!("round {round}: killed with {done_before} of {n} done");
        assert!(done_before < n, "the kill came after the queue was empty");
        s = Server::launch(tmp.path(), &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut seen = std::collections::HashSet::new();
            for a in activations_of(&s, &name) {
                assert_eq!(a["status"], "success", "{a}");
                assert!(
                    seen.insert(a["id"].as_str().unwrap().to_string()),
                    "duplicate activation {a}"
                );
            }
            if seen.len() == n {
                for id in &ids {
                    assert!(seen.contains(id), "acknowledged {id} has no activation");
                }
                break;
            }
            assert!(seen.len() < n + 1, "more activations than invocations");
            assert!(
                Instant::now() < deadline,
                "round {round}: {} of {n} done",
                seen.len()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(
            s.get("/v1/namespaces/default/dlq").json()["dead_letters"],
            serde_json::json!([])
        );
    }
}

/// A one-shot HTTP server on a free port: returns its URL and a receiver for the first body.
fn callback_sink() -> (String, std::sync::mpsc::Receiver<serde_json::Value>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let body = answer_one_request(stream).unwrap_or_default();
        let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
    });
    (url, rx)
}

#[test]
fn destinations_and_callbacks_receive_the_outcome() {
    let s = Server::start();
    let sink = "def handler(e, c):\n    return e\n";
    assert_eq!(
        s.deploy_file("sink", "runtime=python&handler=app.handler", "app.py", sink)
            .status,
        201
    );
    let good = "def handler(e, c):\n    return {'doubled': e['n'] * 2}\n";
    let r = s.deploy_file(
        "good",
        "runtime=python&handler=app.handler&on_success=sink",
        "app.py",
        good,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let bad = "def handler(e, c):\n    raise KeyError('nope')\n";
    assert_eq!(
        s.deploy_file(
            "bad",
            "runtime=python&handler=app.handler&retries=0&on_failure=sink",
            "app.py",
            bad
        )
        .status,
        201
    );
    // A function cannot be its own destination; destinations must exist.
    let r = s.deploy_file(
        "loop",
        "runtime=python&handler=app.handler&on_success=loop",
        "app.py",
        good,
    );
    assert_eq!(
        (r.status, r.json()["error"]["field"].clone()),
        (400, serde_json::json!("on_success"))
    );
    assert_eq!(
        s.deploy_file(
            "x",
            "runtime=python&handler=app.handler&on_failure=ghost",
            "app.py",
            good
        )
        .status,
        404
    );
    // Nor a longer loop: sink → good → sink.
    let r = s.deploy_file(
        "sink",
        "runtime=python&handler=app.handler&on_success=good",
        "app.py",
        sink,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("cycle"), "{}", r.text());

    submit(&s, "good", r#"{"n": 21}"#, None);
    submit(&s, "bad", r#"{"n": 1}"#, None);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut ok_seen, mut fail_seen) = (false, false);
    while !(ok_seen && fail_seen) {
        assert!(Instant::now() < deadline, "destinations not invoked");
        let page = s
            .get("/v1/namespaces/default/activations?function=sink&status=success")
            .json();
        for a in page["activations"].as_array().unwrap() {
            let full = s
                .get(&format!(
                    "/v1/namespaces/default/activations/{}",
                    a["id"].as_str().unwrap()
                ))
                .json();
            let rec = &full["result"];
            match rec["requestContext"]["functionName"].as_str() {
                Some("good") => {
                    assert_eq!(rec["requestContext"]["condition"], "Success");
                    assert_eq!(rec["responsePayload"]["doubled"], 42);
                    assert_eq!(rec["requestPayload"]["n"], 21);
                    ok_seen = true;
                }
                Some("bad") => {
                    assert_eq!(rec["requestContext"]["condition"], "RetriesExhausted");
                    assert_eq!(rec["error"]["type"], "KeyError");
                    fail_seen = true;
                }
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // A callback URL gets the outcome POSTed.
    let (url, rx) = callback_sink();
    let path =
        format!("/v1/namespaces/default/functions/good/invoke?blocking=false&callback={url}");
    let r = s.request("POST", &path, Some("application/json"), br#"{"n": 5}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let got = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no callback");
    assert_eq!(got["responsePayload"]["doubled"], 10);
    assert_eq!(
        got["requestContext"]["requestId"],
        r.json()["activation_id"]
    );
    for bad in ["ftp://x/y", "not a url", "http://"] {
        let path = format!(
            "/v1/namespaces/default/functions/good/invoke?blocking=false&callback={}",
            bad.replace(' ', "%20")
        );
        assert_eq!(
            s.request("POST", &path, Some("application/json"), b"{}")
                .status,
            400,
            "{bad}"
        );
    }
    let path = format!("/v1/namespaces/default/functions/good/invoke?callback={url}");
    assert_eq!(
        s.request("POST", &path, Some("application/json"), b"{}")
            .status,
        400
    );

    // An idempotency key still answers after its invocation finished.
    let first = submit(&s, "sink", "{}", Some("once")).json();
    let id = first["activation_id"].as_str().unwrap().to_string();
    wait_activation(&s, &id, 20);
    std::thread::sleep(Duration::from_millis(300));
    let again = submit(&s, "sink", "{}", Some("once")).json();
    assert_eq!(again["activation_id"], id.as_str());
    assert_eq!(again["new"], false);
    assert_eq!(again["status"], "done");
}

#[test]
fn shutdown_leaves_queued_invocations_for_the_next_start() {
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    let slow = "import time\ndef handler(e, c):\n    time.sleep(0.1)\n    return e['i']\n";
    assert_eq!(
        s.deploy_file(
            "slowq",
            "runtime=python&handler=app.handler&max_instances=1",
            "app.py",
            slow
        )
        .status,
        201
    );
    let ids = submit_many(&s, "slowq", 100, None);
    let started = Instant::now();
    assert!(s.stop().success());
    // 100 × 0.1 s would take 10 s: the stop does not wait for the backlog.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        started.elapsed()
    );
    let s = Server::launch(tmp.path(), &[]);
    for id in &ids {
        assert_eq!(wait_activation(&s, id, 60)["status"], "success");
    }
}

/// A one-shot HTTPS server with a fresh self-signed certificate: its URL, the certificate (PEM)
/// for the client to trust, and a receiver for the first body.
fn tls_callback_sink() -> (String, String, std::sync::mpsc::Receiver<serde_json::Value>) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::sync::Arc;
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let pem = key.cert.pem();
    let certs = vec![rustls::pki_types::CertificateDer::from(
        key.cert.der().to_vec(),
    )];
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, private)
    .unwrap();
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/secure", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut reader = BufReader::new(rustls::StreamOwned::new(conn, tcp));
            let mut len = 0;
            let mut ok = true;
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        ok = false;
                        break;
                    }
                    Ok(_) if line == "\r\n" => break,
                    Ok(_) => {}
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            if !ok {
                continue;
            }
            let mut body = vec![0; len];
            let _ = reader.read_exact(&mut body);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = reader.get_mut().flush();
            let _ = tx.send(serde_json::from_slice(&body).unwrap_or_default());
            return;
        }
    });
    (url, pem, rx)
}

#[test]
fn https_callbacks_are_delivered_to_trusted_servers() {
    let (url, pem, rx) = tls_callback_sink();
    let ca = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca.path(), pem).unwrap();
    let s = Server::start_env(&[], &[("SSL_CERT_FILE", ca.path().to_str().unwrap())]);
    let code = "def handler(e, c):\n    return {'secure': True}\n";
    assert_eq!(
        s.deploy_file("tls", "runtime=python&handler=app.handler", "app.py", code)
            .status,
        201
    );
    let path = format!("/v1/namespaces/default/functions/tls/invoke?blocking=false&callback={url}");
    let r = s.request("POST", &path, Some("application/json"), b"{}");
    assert_eq!(r.status, 202, "{}", r.text());
    let got = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no https callback");
    assert_eq!(got["responsePayload"]["secure"], true);
    assert_eq!(got["requestContext"]["condition"], "Success");
    // A server whose certificate nobody vouches for gets nothing.
    let (untrusted, _, rx2) = tls_callback_sink();
    let path =
        format!("/v1/namespaces/default/functions/tls/invoke?blocking=false&callback={untrusted}");
    assert_eq!(
        s.request("POST", &path, Some("application/json"), b"{}")
            .status,
        202
    );
    assert!(
        rx2.recv_timeout(Duration::from_secs(4)).is_err(),
        "delivered to an untrusted server"
    );
}
