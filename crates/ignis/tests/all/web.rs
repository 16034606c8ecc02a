//! Web functions: HTTP requests in, the function's {statusCode, headers, body} out.

use crate::harness::*;

const ECHO: &str = r#"
import base64, json
def handler(event, context):
    body = event.get('body', '')
    raw = base64.b64decode(body) if event.get('isBase64Encoded') else body.encode()
    if event['rawPath'] == '/teapot':
        return {'statusCode': 418, 'headers': {'x-kind': 'teapot'}, 'body': 'short and stout', 'cookies': ['brew=1']}
    if event['rawPath'] == '/bytes':
        return {'statusCode': 200, 'headers': {'content-type': 'application/octet-stream'},
                'body': base64.b64encode(bytes(reversed(raw))).decode(), 'isBase64Encoded': True}
    if event['rawPath'] == '/plain':
        return {'plain': True}
    return {'statusCode': 200, 'headers': {'content-type': 'application/json'}, 'body': json.dumps({
        'method': event['requestContext']['http']['method'],
        'path': event['rawPath'],
        'query': event.get('queryStringParameters'),
        'header': event['headers'].get('x-custom'),
        'cookies': event.get('cookies'),
        'len': len(raw),
        'request_id': event['requestContext']['requestId'],
    })}
"#;

#[test]
fn web_functions_map_requests_and_responses() {
    let s = Server::start();
    let r = s.deploy_file(
        "site",
        "runtime=python&handler=app.handler&web=public",
        "app.py",
        ECHO,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.raw_request(
        "POST",
        "/fn/default/site/some/path?a=1&b=two&a=3",
        &[("x-custom", "hello"), ("cookie", "c1=v1; c2=v2")],
        Some("application/json"),
        br#"{"x":1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/some/path");
    assert_eq!(v["query"]["a"], "1,3");
    assert_eq!(v["query"]["b"], "two");
    assert_eq!(v["header"], "hello");
    assert_eq!(v["cookies"], serde_json::json!(["c1=v1", "c2=v2"]));
    assert_eq!(v["len"], 7);
    assert_eq!(
        Some(v["request_id"].as_str().unwrap()),
        r.header("x-ignis-activation-id")
    );

    let r = s.raw_request("GET", "/fn/default/site/teapot", &[], None, b"");
    assert_eq!(r.status, 418);
    assert_eq!(r.header("x-kind"), Some("teapot"));
    assert_eq!(r.header("set-cookie"), Some("brew=1"));
    assert_eq!(r.text(), "short and stout");

    let binary: Vec<u8> = (0..=255u8).collect();
    let r = s.raw_request(
        "PUT",
        "/fn/default/site/bytes",
        &[],
        Some("application/octet-stream"),
        &binary,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, binary.iter().rev().copied().collect::<Vec<u8>>());

    let r = s.raw_request("GET", "/fn/default/site/plain", &[], None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"plain": true}));
    // The root of the function too.
    assert_eq!(
        s.raw_request("GET", "/fn/default/site", &[], None, b"")
            .json()["path"],
        "/"
    );
}

#[test]
fn web_access_is_opt_in_and_keyed_unless_public() {
    let s = Server::start();
    let code = "def handler(e, c):\n    return {'statusCode': 200, 'body': 'hi'}\n";
    assert_eq!(
        s.deploy_file(
            "private",
            "runtime=python&handler=app.handler",
            "app.py",
            code
        )
        .status,
        201
    );
    assert_eq!(
        s.deploy_file(
            "keyed",
            "runtime=python&handler=app.handler&web=true",
            "app.py",
            code
        )
        .status,
        201
    );
    let r = s.raw_request("GET", "/fn/default/private/", &[], None, b"");
    assert_eq!((r.status, r.error_code()), (404, "not_found".into()));
    assert_eq!(
        s.raw_request("GET", "/fn/default/nosuch/", &[], None, b"")
            .status,
        404
    );
    assert_eq!(
        s.raw_request("GET", "/fn/default/keyed/", &[], None, b"")
            .status,
        401
    );
    let auth = format!("Bearer {}", s.key);
    let r = s.raw_request(
        "GET",
        "/fn/default/keyed/",
        &[("authorization", &auth)],
        None,
        b"",
    );
    assert_eq!((r.status, r.text()), (200, "hi".into()));
    let bad = s.deploy_file(
        "x",
        "runtime=python&handler=app.handler&web=maybe",
        "app.py",
        code,
    );
    assert_eq!(bad.json()["error"]["field"], "web");
    let bad = s.deploy_file(
        "x",
        "runtime=python&handler=app.handler&web=public&cors_origin=ftp%3A%2F%2Fx",
        "app.py",
        code,
    );
    assert_eq!(bad.json()["error"]["field"], "cors_origins");
}

#[test]
fn browsers_get_cors_preflights_and_headers() {
    let s = Server::start();
    let code = "def handler(e, c):\n    return {'statusCode': 200, 'body': 'ok'}\n";
    let r = s.deploy_file(
        "api",
        "runtime=python&handler=app.handler&web=public&cors_origin=https%3A%2F%2Fapp.example",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.raw_request(
        "OPTIONS",
        "/fn/default/api/items",
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type, x-token"),
        ],
        None,
        b"",
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        r.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, x-token")
    );
    let r = s.raw_request(
        "POST",
        "/fn/default/api/items",
        &[("origin", "https://app.example")],
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let r = s.raw_request(
        "POST",
        "/fn/default/api/items",
        &[("origin", "https://evil.example")],
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.header("access-control-allow-origin"), None);
}
