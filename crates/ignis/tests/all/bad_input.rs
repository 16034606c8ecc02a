//! Every bad input gets a clear JSON error with the right status, never a panic or a hang.

use crate::harness::*;
use std::io::Write;

fn zip_bytes(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn put_zip(s: &Server, name: &str, query: &str, zip: &[u8]) -> Resp {
    s.request(
        "PUT",
        &format!("/v1/namespaces/default/functions/{name}?{query}"),
        Some("application/zip"),
        zip,
    )
}

#[test]
fn deploy_errors_name_the_problem() {
    let s = Server::start();
    let py = "def handler(e, c):\n    return 1\n";

    let r = s.deploy_file("f", "runtime=cobol&handler=app.handler", "app.py", py);
    assert_eq!((r.status, r.error_code()), (400, "invalid_spec".into()));
    assert_eq!(r.json()["error"]["field"], "runtime");
    assert!(r.text().contains("cobol"));

    let r = s.deploy_file("f", "runtime=python&handler=nothere.handler", "app.py", py);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "handler");
    assert!(r.text().contains("nothere.py"), "{}", r.text());

    let r = put_zip(
        &s,
        "f",
        "runtime=python&handler=app.handler",
        b"PK\x03\x04 this is not a zip",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "code");
    assert!(r.text().contains("corrupt"), "{}", r.text());

    let slip = zip_bytes(&[("../../evil.py", b"x"), ("app.py", py.as_bytes())]);
    let r = put_zip(&s, "f", "runtime=python&handler=app.handler", &slip);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unsafe path"), "{}", r.text());

    let r = s.deploy_file("f", "runtime=python&handler=app.handler", "app.py", "");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("empty"), "{}", r.text());

    let long = "a".repeat(200);
    let r = s.deploy_file(&long, "runtime=python&handler=app.handler", "app.py", py);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "name");

    let r = s.deploy_file("a%2Fb", "runtime=python&handler=app.handler", "app.py", py);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["field"], "name");

    let r = s.deploy_file(
        "f",
        "runtime=python&handler=app.handler&timeout_ms=99999999",
        "app.py",
        py,
    );
    assert_eq!(r.json()["error"]["field"], "timeout_ms");
    let r = s.deploy_file(
        "f",
        "runtime=python&handler=app.handler&memory_mb=lots",
        "app.py",
        py,
    );
    assert_eq!(r.json()["error"]["field"], "memory_mb");

    let r = s.request(
        "PUT",
        "/v1/namespaces/default/functions/f",
        Some("application/json"),
        br#"{"runtime":"python","handlr":"x"}"#,
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("handlr"), "{}", r.text());
    let r = s.request(
        "PUT",
        "/v1/namespaces/default/functions/f",
        Some("application/json"),
        br#"{"runtime":"python","handler":"app.handler"}"#,
    );
    assert_eq!(r.status, 400, "code is required for a new function");
    assert_eq!(r.json()["error"]["field"], "code");
    let r = s.request(
        "PUT",
        "/v1/namespaces/default/functions/f",
        Some("text/plain"),
        b"x",
    );
    assert_eq!(
        (r.status, r.error_code()),
        (415, "unsupported_media_type".into())
    );

    // Nothing was created by all of that.
    assert_eq!(
        s.get("/v1/namespaces/default/functions").json()["functions"],
        serde_json::json!([])
    );
}

#[test]
fn conflicts_missing_things_and_auth() {
    let s = Server::start();
    let py = "def handler(e, c):\n    return e\n";
    assert_eq!(
        s.deploy_file("f", "runtime=python&handler=app.handler", "app.py", py)
            .status,
        201
    );
    let r = s.deploy_file(
        "f",
        "runtime=python&handler=app.handler&overwrite=false",
        "app.py",
        py,
    );
    assert_eq!((r.status, r.error_code()), (409, "conflict".into()));

    for path in [
        "/v1/namespaces/default/functions/nope",
        "/v1/namespaces/default/functions/f@9",
        "/v1/namespaces/default/functions/f/versions/9",
        "/v1/namespaces/default/activations/0123456789abcdef0123456789abcdef",
        "/v1/namespaces/default/activations/not-an-id",
        "/v1/namespaces/nosuchns/functions",
        "/v1/no/such/route",
    ] {
        let r = s.get(path);
        let code = if path.contains("nosuchns") {
            "namespace_not_found"
        } else {
            "not_found"
        };
        assert_eq!((r.status, r.error_code()), (404, code.into()), "{path}");
    }
    let r = s.invoke("nope", "{}");
    assert_eq!(r.status, 404);

    let r = s.raw_request("GET", "/v1/namespaces/default/functions", &[], None, b"");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));
    let bad = format!("Bearer {}x", s.key);
    let r = s.raw_request(
        "GET",
        "/v1/namespaces/default/functions",
        &[("authorization", &bad)],
        None,
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(!r.text().contains(&s.key), "no secret in errors");
    let r = s.raw_request(
        "POST",
        "/v1/namespaces/default/functions/f/invoke",
        &[],
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 401);
    // OpenWhisk-style basic auth works.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&s.key)
    );
    let r = s.raw_request(
        "GET",
        "/v1/namespaces/default/functions",
        &[("authorization", &basic)],
        None,
        b"",
    );
    assert_eq!(r.status, 200);
    // Health needs no key.
    assert_eq!(s.raw_request("GET", "/healthz", &[], None, b"").status, 200);
}

#[test]
fn payload_errors() {
    let s = Server::start();
    let py = "def handler(e, c):\n    return e\n";
    assert_eq!(
        s.deploy_file("f", "runtime=python&handler=app.handler", "app.py", py)
            .status,
        201
    );
    let r = s.invoke("f", "{not json");
    assert_eq!((r.status, r.error_code()), (400, "bad_request".into()));
    assert!(r.text().contains("not valid JSON"), "{}", r.text());
    let big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024 + 10));
    let r = s.invoke("f", &big);
    assert_eq!(
        (r.status, r.error_code()),
        (413, "payload_too_large".into())
    );
    let r = s.invoke("f@abc", "{}");
    assert_eq!(r.status, 400);
    let r = s.request(
        "DELETE",
        "/v1/namespaces/default/functions/f/invoke",
        None,
        b"",
    );
    assert_eq!(r.status, 405);
    assert_eq!(r.error_code(), "method_not_allowed");
    let r = s.get("/v1/namespaces/default/activations?status=weird");
    assert_eq!(r.status, 400);
    let r = s.get("/v1/namespaces/default/activations?limit=100000");
    assert_eq!(r.status, 400);
    let r = s.get("/v1/namespaces/default/activations?bogus=1");
    assert_eq!(r.status, 400);
}

#[test]
fn full_queue_answers_429_with_retry_after() {
    let s = Server::start_with(&["--queue-per-function", "1"]);
    let code = "import time\ndef handler(e, c):\n    time.sleep(1.5)\n    return 1\n";
    assert_eq!(
        s.deploy_file(
            "one",
            "runtime=python&handler=app.handler&max_instances=1",
            "app.py",
            code
        )
        .status,
        201
    );
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(150 * i));
                    let r = s.invoke("one", "{}");
                    (r.status, r.header("retry-after").map(str::to_string))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let throttled: Vec<_> = statuses.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!((ok, throttled.len()), (2, 1), "{statuses:?}");
    assert_eq!(throttled[0].1.as_deref(), Some("1"));
}
