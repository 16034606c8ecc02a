//! The HTTP surface against hostile clients: slow heads (slowloris), stalled bodies, huge
//! headers, too many connections, deeply nested JSON, and secrets that must never reach the
//! server's log or an error message.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::*;

/// Reads until the server closes the connection; the bytes and how long that took.
fn read_until_closed(s: &mut TcpStream) -> (Vec<u8>, Duration) {
    let t = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    (out, t.elapsed())
}

#[test]
fn slow_and_oversized_requests_are_cut_off() {
    let s = Server::start_with(&["--header-timeout-secs", "1", "--body-timeout-secs", "1"]);

    // A head that never ends is cut off after the header timeout, without an answer.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .unwrap();
    let (_, took) = read_until_closed(&mut slow);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // So is an idle keep-alive connection.
    let mut idle = TcpStream::connect(&s.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (out, took) = read_until_closed(&mut idle);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A body that stalls: 408 with a JSON error once it has been silent for the body timeout.
    let mut stall = TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /v1/namespaces/default/functions/f/invoke HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"a\":",
        s.key
    );
    stall.write_all(head.as_bytes()).unwrap();
    let (out, took) = read_until_closed(&mut stall);
    let r = parse_response(&out);
    assert_eq!(
        (r.status, r.error_code()),
        (408, "request_timeout".into()),
        "{}",
        r.text()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Headers past 64 KiB: 431.
    let big = "x".repeat(80 * 1024);
    let mut huge = TcpStream::connect(&s.addr).unwrap();
    let req = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    let _ = huge.write_all(req.as_bytes());
    let (out, _) = read_until_closed(&mut huge);
    assert!(
        out.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&out[..out.len().min(200)])
    );

    // The server is unharmed.
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn connections_past_the_cap_wait_for_a_free_one() {
    let s = Server::start_with(&["--max-connections", "3", "--header-timeout-secs", "30"]);
    let holders: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(&s.addr).unwrap())
        .collect();
    // Give the server time to accept all three.
    std::thread::sleep(Duration::from_millis(300));
    let mut waiting = TcpStream::connect(&s.addr).unwrap();
    waiting
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    let early = waiting.read(&mut buf);
    assert!(early.is_err(), "served past the cap: {early:?}");
    // One holder leaves: the waiting connection is accepted and answered.
    drop(holders);
    let (out, _) = read_until_closed(&mut waiting);
    assert!(
        out.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn deeply_nested_json_is_a_400() {
    let s = Server::start();
    let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
    let r = s.deploy_file(
        "f",
        "runtime=python&handler=app.handler&filename=app.py",
        "app.py",
        "def handler(e, c):\n    return e\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // Up to 100 levels the event goes through; past that it is refused before any instance
    // sees it.
    let r = s.invoke("f", &deep(100));
    assert_eq!(r.status, 200, "{}", r.text());
    for body in [
        deep(101),
        deep(100_000),
        format!(r#"{{"a":{}}}"#, deep(5_000)),
    ] {
        let r = s.invoke("f", &body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("deeper than 100"), "{}", r.text());
    }
    let spec = format!(
        r#"{{"runtime":"python","handler":"app.handler","env":{}}}"#,
        deep(100_000)
    );
    let r = s.request(
        "PUT",
        "/v1/namespaces/default/functions/g",
        Some("application/json"),
        spec.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.request(
        "POST",
        "/v1/namespaces/default/triggers/t",
        Some("application/json"),
        deep(100_000).as_bytes(),
    );
    assert!(
        r.status == 400 || r.status == 405,
        "{} {}",
        r.status,
        r.text()
    );
    assert_eq!(s.get("/healthz").status, 200);
}

#[test]
fn secrets_never_reach_the_log_or_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(tmp.path().join("server.log")).unwrap();
    let out = std::fs::File::create(tmp.path().join("server.out")).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-cli-config",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .env("IGNIS_LOG", "debug")
        .env("HOME", tmp.path())
        .stdout(out)
        .stderr(log)
        .spawn()
        .unwrap();
    let key_file = tmp.path().join("data/admin.key");
    let t = Instant::now();
    while !key_file.exists()
        || std::fs::read_to_string(&key_file)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(t.elapsed() < Duration::from_secs(60), "no admin key");
        std::thread::sleep(Duration::from_millis(50));
    }
    let admin = std::fs::read_to_string(&key_file)
        .unwrap()
        .trim()
        .to_string();
    let addr = loop {
        let text = std::fs::read_to_string(tmp.path().join("server.out")).unwrap();
        if let Some(a) = text.split("listening on http://").nth(1) {
            break a.split_whitespace().next().unwrap().to_string();
        }
        assert!(t.elapsed() < Duration::from_secs(60), "no address: {text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let s = Server::attach(&addr, &admin, tmp.path());
    let (id, secret) = admin.split_once(':').unwrap();
    // A key made through the API, used right and wrong, with bearer and basic auth.
    let r = s.request(
        "POST",
        "/v1/namespaces/default/keys",
        Some("application/json"),
        br#"{"role":"invoke"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let made = r.json()["key"].as_str().unwrap().to_string();
    let (_, made_secret) = made.split_once(':').unwrap();
    let wrong = format!("{id}:{}x", &secret[..secret.len() - 1]);
    for auth in [
        format!("Bearer {wrong}"),
        format!("Bearer {made_secret}"),
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &wrong)
        ),
        format!("Bearer {made}"),
    ] {
        let r = s.raw_request(
            "GET",
            "/v1/namespaces",
            &[("authorization", &auth)],
            None,
            b"",
        );
        assert!(
            r.status == 401 || r.status == 403,
            "{} {}",
            r.status,
            r.text()
        );
        for sec in [secret, made_secret] {
            assert!(
                !r.text().contains(sec),
                "an error shows a secret: {}",
                r.text()
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let mut text = std::fs::read_to_string(tmp.path().join("server.log")).unwrap();
    // The banner shows the new admin key once, by design; nothing else may.
    let banner = std::fs::read_to_string(tmp.path().join("server.out")).unwrap();
    assert!(!banner.contains(made_secret));
    text.push_str(&banner.replace(&admin, "<shown once>"));
    assert!(
        text.contains("DEBUG") || text.contains("INFO"),
        "the log is empty: {text}"
    );
    for sec in [secret, made_secret] {
        assert!(!text.contains(sec), "the server log shows a secret");
    }
}
