//! Authorization, table-driven: every route of `ignis_gateway::ROUTES` (the table the router is
//! built from, so a new route is here by construction) × every kind of caller — an admin key,
//! the owner, invoke-only and read-only keys of namespace A, the owner of namespace B, no key —
//! against a real server, each answer checked to be exactly "allowed" (any status but 401 and
//! 403) or "refused" (403 `forbidden`, 401 `unauthorized` without a key).
//!
//! A route whose path has a parameter this file does not know, or that the server does not
//! authorize itself in a way listed in `handler_routes`, fails the test: teach it here.

use ignis_gateway::{Access, ROUTES, Route};

use crate::harness::*;
use crate::lambda::{lambda_call, signed_with};

const A: &str = "team-a";
const B: &str = "team-b";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Admin,
    OwnerA,
    InvokeA,
    ReadA,
    OwnerB,
}

const EVERYONE: [Who; 5] = [
    Who::Admin,
    Who::OwnerA,
    Who::InvokeA,
    Who::ReadA,
    Who::OwnerB,
];

/// What each caller may do with a route of namespace A, written out independently of the
/// gateway's own rules.
fn allowed(access: Access, who: Who) -> bool {
    use Who::*;
    match access {
        Access::Public | Access::AnyKey => true,
        Access::Admin => who == Admin,
        Access::Read => matches!(who, Admin | OwnerA | ReadA),
        Access::Invoke => matches!(who, Admin | OwnerA | InvokeA),
        Access::Write => matches!(who, Admin | OwnerA),
        Access::DataRead => matches!(who, Admin | OwnerA | ReadA),
        Access::DataWrite => matches!(who, Admin | OwnerA),
        Access::Handler => unreachable!("handler routes are expanded first"),
    }
}

struct World {
    s: Server,
    keys: Vec<(Who, String)>,
    activation: String,
}

impl World {
    fn key(&self, who: Who) -> &str {
        &self.keys.iter().find(|(w, _)| *w == who).unwrap().1
    }
}

fn make_key(s: &Server, ns: &str, role: &str) -> String {
    let r = s.request(
        "POST",
        &format!("/v1/namespaces/{ns}/keys"),
        Some("application/json"),
        format!(r#"{{"role":"{role}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["key"].as_str().unwrap().to_string()
}

/// Namespaces A and B; in A a function `f`, a web function `web` (key required), a trigger
/// `t`, a rule `r` and one activation; a key of each kind.
fn world() -> World {
    let s = Server::start();
    for ns in [A, B] {
        let r = s.request("PUT", &format!("/v1/namespaces/{ns}"), None, b"");
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let code = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n";
    for (name, web) in [("f", "off"), ("web", "on")] {
        let r = s.request(
            "PUT",
            &format!(
                "/v1/namespaces/{A}/functions/{name}?runtime=python&handler=app.handler&web={web}&filename=app.py"
            ),
            Some("application/octet-stream"),
            code.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let put = |path: &str, body: &str| {
        let r = s.request("PUT", path, Some("application/json"), body.as_bytes());
        assert_eq!(r.status, 201, "{path}: {}", r.text());
    };
    put(&format!("/v1/namespaces/{A}/triggers/t"), "{}");
    put(
        &format!("/v1/namespaces/{A}/rules/r"),
        r#"{"trigger":"t","function":"f"}"#,
    );
    let r = s.request(
        "POST",
        &format!("/v1/namespaces/{A}/functions/f/invoke"),
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let activation = r.header("x-ignis-activation-id").unwrap().to_string();
    let keys = vec![
        (Who::Admin, s.key.clone()),
        (Who::OwnerA, make_key(&s, A, "owner")),
        (Who::InvokeA, make_key(&s, A, "invoke")),
        (Who::ReadA, make_key(&s, A, "read")),
        (Who::OwnerB, make_key(&s, B, "owner")),
    ];
    World {
        s,
        keys,
        activation,
    }
}

/// One concrete request for a route of the table: a path with its parameters filled so that an
/// allowed caller's request does no harm to the next (deletes aim at things that do not exist,
/// writes carry a body that is refused after authorization), and a body.
fn concrete(w: &World, route: &Route) -> (String, &'static [u8]) {
    let segments: Vec<&str> = route.path.split('/').collect();
    let mut out = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let prev = if i > 0 { segments[i - 1] } else { "" };
        let filled = match *seg {
            "{ns}" => match (route.method, route.path) {
                ("PUT", "/v1/namespaces/{ns}") => "team-c".to_string(),
                ("DELETE", "/v1/namespaces/{ns}") => "no-such-namespace".to_string(),
                _ => A.to_string(),
            },
            "{name}" if route.method == "DELETE" => "no-such-thing".to_string(),
            "{name}" => match prev {
                "functions" => "f".to_string(),
                "triggers" => "t".to_string(),
                "rules" => "r".to_string(),
                other => panic!("teach the authorization test the {{name}} of {other:?}"),
            },
            "{version}" => "1".to_string(),
            "{file}" => "app.js".to_string(),
            // The body "not json" is refused after authorization: nothing is published.
            "{topic}" => "orders".to_string(),
            "{bucket}" => "no-such-bucket".to_string(),
            "{*key}" => "some/key".to_string(),
            "{id}" => match prev {
                "activations" => w.activation.clone(),
                "dlq" => "0".repeat(32),
                "executions" => "0".repeat(32),
                "keys" => "ik_nosuchkey".to_string(),
                other => panic!("teach the authorization test the {{id}} of {other:?}"),
            },
            s if s.starts_with('{') => {
                panic!(
                    "teach the authorization test the parameter {s} of {}",
                    route.path
                )
            }
            s => s.to_string(),
        };
        out.push(filled);
    }
    let body: &'static [u8] = match route.method {
        "PUT" | "POST" if route.path.ends_with("/invoke") => b"{}",
        "PUT" | "POST" => b"not json",
        _ => b"",
    };
    (out.join("/"), body)
}

/// The routes whose handler authenticates (web functions, the Lambda API): the concrete
/// operations to try for each, with what each needs.
fn handler_routes(path: &str) -> Vec<(&'static str, String, Access)> {
    let lambda = "/2015-03-31/functions";
    match path {
        // Without --metrics-public (metrics.rs tests it), only admin keys scrape.
        "/metrics" => vec![("GET", "/metrics".to_string(), Access::Admin)],
        "/fn/{ns}/{name}" => vec![("GET", format!("/fn/{A}/web"), Access::Invoke)],
        "/fn/{ns}/{name}/" => vec![("POST", format!("/fn/{A}/web/"), Access::Invoke)],
        "/fn/{ns}/{name}/{*path}" => vec![("GET", format!("/fn/{A}/web/x/y"), Access::Invoke)],
        "/2015-03-31/functions" => vec![("GET", lambda.to_string(), Access::Read)],
        "/2015-03-31/functions/" => vec![("GET", format!("{lambda}/"), Access::Read)],
        "/2015-03-31/functions/{*rest}" => vec![
            ("GET", format!("{lambda}/f"), Access::Read),
            ("POST", format!("{lambda}/f/invocations"), Access::Invoke),
            ("DELETE", format!("{lambda}/no-such-thing"), Access::Write),
            (
                "PUT",
                format!("{lambda}/no-such-thing/configuration"),
                Access::Write,
            ),
        ],
        "/s3" => vec![("GET", "/s3".to_string(), Access::DataRead)],
        "/s3/" => vec![("GET", "/s3/".to_string(), Access::DataRead)],
        "/s3/{*rest}" => vec![
            ("GET", "/s3/no-such-bucket".to_string(), Access::DataRead),
            ("PUT", "/s3/no-such-bucket/k".to_string(), Access::DataWrite),
            (
                "DELETE",
                "/s3/no-such-bucket".to_string(),
                Access::DataWrite,
            ),
        ],
        other => panic!("teach the authorization test how to call {other}"),
    }
}

fn call(w: &World, who: Option<Who>, method: &str, path: &str, body: &[u8]) -> Resp {
    let auth = who.map(|who| format!("Bearer {}", w.key(who)));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    w.s.raw_request(method, path, &headers, Some("application/json"), body)
}

fn check(route: &str, who: Who, should: bool, r: &Resp, refused_code: &str) {
    let refused = matches!(r.status, 401 | 403);
    assert_eq!(
        !refused,
        should,
        "{route} as {who:?}: {} {}",
        r.status,
        r.text()
    );
    if refused {
        assert_eq!(r.status, 403, "{route} as {who:?}: {}", r.text());
        let text = r.text();
        let code = match (r.header("x-amzn-errortype"), text.split_once("<Code>")) {
            (Some(t), _) => t.to_string(),
            (None, Some((_, rest))) => rest.split('<').next().unwrap_or_default().to_string(),
            (None, None) => r.error_code(),
        };
        assert_eq!(code, refused_code, "{route} as {who:?}: {}", r.text());
    }
}

/// Headers of an S3 request signed by `key` (service `s3`, an empty body).
fn s3_signed(s: &Server, key: &str, method: &str, path: &str) -> Vec<(String, String)> {
    let date = ignis_gateway::sigv4::amz_date(ignis_core::now_ms() / 1000);
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("host", s.addr.parse().unwrap());
    headers.insert("x-amz-date", date.parse().unwrap());
    headers.insert("x-amz-content-sha256", empty.parse().unwrap());
    let (id, secret) = key.split_once(':').unwrap();
    let req = ignis_gateway::sigv4::Request {
        method,
        path,
        query: "",
        headers: &headers,
        body: b"",
    };
    let auth = ignis_gateway::sigv4::authorization(&req, id, secret, "us-east-1", "s3");
    vec![
        ("x-amz-date".into(), date),
        ("x-amz-content-sha256".into(), empty.into()),
        ("authorization".into(), auth),
    ]
}

#[test]
fn every_route_gives_each_role_exactly_its_due() {
    let w = world();
    let mut checked = 0;
    for route in ROUTES {
        if route.access == Access::Handler {
            for (method, path, access) in handler_routes(route.path) {
                let name = format!("{method} {path}");
                for who in EVERYONE {
                    // A Lambda or S3 API key acts in its own namespace: owner B's calls are B's.
                    let aws = path.starts_with("/2015") || path.starts_with("/s3");
                    let should = if aws && who == Who::OwnerB {
                        true
                    } else {
                        allowed(access, who)
                    };
                    let r = if path.starts_with("/s3") {
                        let h = s3_signed(&w.s, w.key(who), method, &path);
                        lambda_call(&w.s, method, &path, &h, b"")
                    } else if path.starts_with("/2015") {
                        let body: &[u8] = if method == "GET" { b"" } else { b"{}" };
                        let h = signed_with(&w.s, w.key(who), method, &path, body, 0);
                        lambda_call(&w.s, method, &path, &h, body)
                    } else {
                        call(&w, Some(who), method, &path, b"")
                    };
                    let code = if path.starts_with("/s3") {
                        "AccessDenied"
                    } else if path.starts_with("/2015") {
                        "AccessDeniedException"
                    } else {
                        "forbidden"
                    };
                    check(&name, who, should, &r, code);
                    checked += 1;
                }
            }
            continue;
        }
        let (path, body) = concrete(&w, route);
        let method = if route.method == "*" {
            "GET"
        } else {
            route.method
        };
        let name = format!("{method} {path}");
        for who in EVERYONE {
            let r = call(&w, Some(who), method, &path, body);
            check(&name, who, allowed(route.access, who), &r, "forbidden");
            if allowed(route.access, who) {
                assert_ne!(r.status, 405, "{name}: the router does not serve it");
                if route.access != Access::Admin {
                    assert!(
                        !r.text().contains("namespace_not_found"),
                        "{name}: {}",
                        r.text()
                    );
                }
            }
            checked += 1;
        }
        let anonymous = call(&w, None, method, &path, body);
        if route.access == Access::Public {
            assert_eq!(anonymous.status, 200, "{name}: {}", anonymous.text());
        } else {
            assert_eq!(anonymous.status, 401, "{name}: {}", anonymous.text());
        }
    }
    assert!(checked >= ROUTES.len() * EVERYONE.len(), "{checked}");
}

#[test]
fn a_web_function_without_a_key_and_the_lambda_api_unsigned_are_refused() {
    let w = world();
    let r = call(&w, None, "GET", &format!("/fn/{A}/web"), b"");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = call(&w, Some(Who::InvokeA), "GET", &format!("/fn/{A}/web"), b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    let r = lambda_call(&w.s, "GET", "/2015-03-31/functions/", &[], b"");
    assert_eq!(r.status, 403, "{}", r.text());
    // The owner of A sees A's functions through the Lambda API; the owner of B does not.
    let list = |who| {
        let path = "/2015-03-31/functions/";
        let h = signed_with(&w.s, w.key(who), "GET", path, b"", 0);
        let r = lambda_call(&w.s, "GET", path, &h, b"");
        assert_eq!(r.status, 200, "{}", r.text());
        names_in(&r.json()["Functions"], "FunctionName")
    };
    assert_eq!(list(Who::OwnerA), ["f", "web"]);
    assert!(list(Who::OwnerB).is_empty());
}
