//! Property-based fuzzing of the whole HTTP API on a real server: random methods, route paths with
//! hostile segments, query strings, credentials, content types and bodies (random bytes, random
//! JSON, specs with fields changed). Every request must get an HTTP answer (a panic in a handler
//! would close the connection instead), never a 500/503, and 502/504 only as a function's own
//! failure; the server's memory stays bounded and it serves normally afterwards. The number of
//! cases is `IGNIS_FUZZ_CASES` (default 1500).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

use crate::harness::*;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            "default", "f", "g", "t", "r", "team", "..", "%2e%2e", "a%2Fb", "%00", ".", "%2F",
            "..%2F..%2Fetc%2Fpasswd", "f@1", "f%401", "1", "0", "-1", "latest", "%25",
        ])
        .prop_map(String::from),
        1 => text(16).prop_map(|s| percent_encode(&s)),
        1 => (1usize..400).prop_map(|n| "x".repeat(n)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        text(12).prop_map(Value::from),
        proptest::sample::select(vec![
            "python",
            "node",
            "exec",
            "wasm",
            "lambda",
            "app.handler"
        ])
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    proptest::sample::select(vec![
                        "runtime",
                        "handler",
                        "memory_mb",
                        "timeout_ms",
                        "env",
                        "code",
                        "code_zip",
                        "role",
                        "quotas",
                        "feed",
                        "cron",
                        "trigger",
                        "function",
                        "enabled",
                        "web",
                        "network",
                        "retries",
                        "on_success",
                        "FunctionName",
                        "Runtime",
                        "Code",
                        "ZipFile",
                        "Handler",
                    ])
                    .prop_map(String::from),
                    text(8),
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
struct Request {
    method: &'static str,
    path: String,
    auth: u8,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

fn request() -> impl Strategy<Value = Request> {
    let routes: Vec<(&'static str, &'static str)> = ignis_gateway::ROUTES
        .iter()
        .map(|r| (r.method, r.path))
        .collect();
    let template = proptest::sample::select(routes);
    let segments = proptest::collection::vec(segment(), 6);
    let query = proptest::collection::vec(
        (
            proptest::sample::select(vec![
                "runtime",
                "handler",
                "filename",
                "memory_mb",
                "blocking",
                "limit",
                "cursor",
                "since",
                "result",
                "version",
                "status",
                "timeout_ms",
                "Qualifier",
            ]),
            segment(),
        ),
        0..4,
    );
    let body = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..256),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), json_value()).prop_map(|(a, b)| {
            json!({"runtime": "python", "handler": "app.handler", "memory_mb": a, "env": b})
                .to_string()
                .into_bytes()
        }),
    ];
    let method = prop_oneof![
        3 => Just(None),
        1 => proptest::sample::select(vec![
            "GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS",
        ])
        .prop_map(Some),
    ];
    let auth = prop_oneof![3 => Just(0u8), 2 => 1u8..5];
    (
        method,
        template,
        segments,
        query,
        auth,
        proptest::sample::select(vec![
            None,
            Some("application/json"),
            Some("application/octet-stream"),
            Some("application/zip"),
            Some("text/plain"),
            Some("application/json; charset=utf-8"),
            Some("multipart/form-data; boundary=x"),
        ]),
        body,
    )
        .prop_map(
            |(method, (route_method, template), segments, query, auth, content_type, body)| {
                let method = match (method, route_method) {
                    (Some(m), _) => m,
                    (None, "*") => "POST",
                    (None, m) => m,
                };
                let mut path = String::new();
                let mut i = 0;
                for part in template.split('/').filter(|p| !p.is_empty()) {
                    path.push('/');
                    if part.starts_with('{') {
                        path.push_str(&segments[i % segments.len()]);
                        i += 1;
                    } else {
                        path.push_str(part);
                    }
                }
                if !query.is_empty() {
                    path.push('?');
                    let pairs: Vec<String> =
                        query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    path.push_str(&pairs.join("&"));
                }
                Request {
                    method,
                    path,
                    auth,
                    content_type,
                    body,
                }
            },
        )
}

fn rss_kb(pid: i32) -> u64 {
    proc_status_kib(pid, "VmRSS").unwrap_or(0)
}

#[test]
fn the_api_answers_any_request_without_failing() {
    let s = Server::start_with(&["--keep-alive-secs", "2"]);
    // Something to find: a function, so that routes below it get past "not found".
    let r = s.deploy_file(
        "f",
        "runtime=python&handler=app.handler&filename=app.py",
        "app.py",
        "def handler(e, c):\n    return e\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let admin_basic = {
        let (id, secret) = s.key.split_once(':').unwrap();
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{id}:{secret}"),
        )
    };
    let auths = [
        format!("Bearer {}", s.key),
        String::new(),
        "Bearer ik_nope:nope".to_string(),
        format!("Basic {admin_basic}"),
        "Basic !!!notbase64".to_string(),
    ];
    let before = rss_kb(s.pid());
    let cases: u32 = std::env::var("IGNIS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&request(), |req| {
        let auth = &auths[req.auth as usize];
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", auth.as_str())]
        };
        let r = s.raw_request(req.method, &req.path, &headers, req.content_type, &req.body);
        *statuses.borrow_mut().entry(r.status).or_default() += 1;
        prop_assert!(
            !matches!(r.status, 500 | 503) && r.status >= 200,
            "{} {} → {} {}",
            req.method,
            req.path,
            r.status,
            r.text()
        );
        if r.status >= 500 {
            // Only a function's own failure: the fuzz may deploy code that does not run.
            let code = r.json()["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            prop_assert!(
                code != "internal" && !code.is_empty(),
                "{} {} → {} {}",
                req.method,
                req.path,
                r.status,
                r.text()
            );
        }
        if req.method != "HEAD" && r.status >= 400 && !r.body.is_empty() {
            prop_assert!(
                serde_json::from_slice::<Value>(&r.body).is_ok()
                    || r.header("content-type")
                        .is_some_and(|c| !c.contains("json")),
                "an error that is not JSON: {} {} → {} {}",
                req.method,
                req.path,
                r.status,
                r.text()
            );
        }
        Ok(())
    });
    let statuses = statuses.into_inner();
    eprintln!("fuzz statuses: {statuses:?}");
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        statuses.keys().any(|s| *s < 300) && statuses.keys().any(|s| *s >= 400),
        "the fuzz reached too little: {statuses:?}"
    );
    assert_eq!(s.get("/healthz").status, 200);
    // The fuzz may have deleted or replaced "f": a new function works normally.
    let r = s.deploy_file(
        "after-the-fuzz",
        "runtime=python&handler=app.handler&filename=app.py",
        "app.py",
        "def handler(e, c):\n    return e\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.invoke("after-the-fuzz", r#"{"still": "here"}"#);
    assert_eq!(
        (r.status, r.json()["still"].as_str()),
        (200, Some("here")),
        "{}",
        r.text()
    );
    // Bounded memory: one-time growth (the wasm engine's pool, blocking threads' arenas) is
    // fine, a leak per request is not.
    let rss_mb = rss_kb(s.pid()) / 1024;
    eprintln!(
        "fuzz: server RSS {} MiB before, {rss_mb} MiB after",
        before / 1024
    );
    assert!(rss_mb < 512, "the server holds {rss_mb} MiB after the fuzz");
}
