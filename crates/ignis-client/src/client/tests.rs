//! Tests of the client against a canned HTTP server on a loopback socket.

use ignis_core::{Runtime, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Serves one connection: records the request (head and body) and answers `response`.
async fn serve_once(response: String) -> (Client, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed early");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = sock.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
        }
        sock.write_all(response.as_bytes()).await.unwrap();
        sock.shutdown().await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    });
    let client = Client::new(&format!("http://{addr}/"), "ik_ab:cd", "default").unwrap();
    (client, task)
}

fn response(status: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut r = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    r
}

const IGNIS_HEADERS: [(&str, &str); 6] = [
    ("x-ignis-activation-id", "0123456789abcdef0123456789abcdef"),
    ("x-ignis-status", "success"),
    ("x-ignis-cold", "true"),
    ("x-ignis-duration-ms", "42"),
    ("x-ignis-init-ms", "30"),
    ("x-ignis-version", "3"),
];

#[tokio::test]
async fn invoke_reads_the_outcome_from_headers() {
    let (client, req) = serve_once(response("200 OK", &IGNIS_HEADERS, r#"{"ok":1}"#)).await;
    let out = client
        .invoke("hello world", Some(3), Bytes::from_static(b"{\"a\":1}"))
        .await
        .unwrap();
    let req = req.await.unwrap();
    assert!(
        req.starts_with("POST /v1/namespaces/default/functions/hello%20world/invoke?version=3 "),
        "{req}"
    );
    assert!(
        req.contains("\r\nauthorization: Bearer ik_ab:cd\r\n"),
        "{req}"
    );
    assert!(req.ends_with("{\"a\":1}"));
    assert_eq!(
        out,
        InvokeResponse {
            status: 200,
            activation_id: "0123456789abcdef0123456789abcdef".into(),
            fn_status: "success".into(),
            cold: true,
            duration_ms: 42,
            init_ms: 30,
            version: 3,
            body: Bytes::from_static(br#"{"ok":1}"#),
        }
    );
}

#[tokio::test]
async fn a_failed_function_is_an_outcome_not_an_error() {
    let mut headers = IGNIS_HEADERS;
    headers[1].1 = "timeout";
    let body = r#"{"error":{"code":"timeout","message":"took more than 1000 ms","activation_id":"x","type":"Timeout"}}"#;
    let (client, _req) = serve_once(response("504 Gateway Timeout", &headers, body)).await;
    let out = client.invoke("f@2", None, Bytes::new()).await.unwrap();
    assert_eq!(out.status, 504);
    assert_eq!(out.fn_status(), Some(Status::Timeout));
    assert!(matches!(
        out.into_result(),
        Err(ClientError::FunctionFailed { status, .. }) if status == "timeout"
    ));
}

#[tokio::test]
async fn refusals_without_ignis_headers_are_api_errors() {
    let body = r#"{"error":{"code":"too_many_requests","message":"function f is at capacity"}}"#;
    let (client, _req) = serve_once(response(
        "429 Too Many Requests",
        &[("retry-after", "2")],
        body,
    ))
    .await;
    let err = client.invoke("f", None, Bytes::new()).await.unwrap_err();
    match err {
        ClientError::Api {
            status,
            code,
            message,
            retry_after,
        } => {
            assert_eq!(status, 429);
            assert_eq!(code, "too_many_requests");
            assert_eq!(message, "function f is at capacity");
            assert_eq!(retry_after, Some(2));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn proxy_errors_are_described_by_their_status() {
    let (client, _req) = serve_once(response(
        "502 Bad Gateway",
        &[("content-type", "text/html")],
        "<html>upstream down</html>\n",
    ))
    .await;
    let err = client.list_functions().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "<html>upstream down</html> (502 bad_gateway)"
    );
}

#[tokio::test]
async fn deploy_sends_code_as_a_raw_body_and_the_spec_as_query() {
    let version = r#"{"namespace":"default","name":"hello","version":2,"runtime":"python",
        "handler":"app.handler","memory_mb":128,"timeout_ms":60000,"env":{"A":"1&x"},
        "max_instances":10,"code":{"sha256":"ab12","size":5,"format":"file","filename":"app.py"},
        "created_ms":1}"#;
    let (client, req) = serve_once(response("200 OK", &[], version)).await;
    let mut deploy = DeployRequest::new(
        Runtime::Python,
        "app.handler",
        Some(CodeUpload::File {
            filename: "app.py".into(),
            bytes: Bytes::from_static(b"x = 1"),
        }),
    );
    deploy.memory_mb = Some(128);
    deploy.env.insert("A".into(), "1&x".into());
    let v = client.deploy("hello", &deploy).await.unwrap();
    assert_eq!((v.version, v.spec.memory_mb), (2, 128));
    let req = req.await.unwrap();
    assert!(
        req.starts_with(
            "PUT /v1/namespaces/default/functions/hello?runtime=python&handler=app.handler\
             &memory_mb=128&env=A%3D1%26x&filename=app.py "
        ),
        "{req}"
    );
    assert!(req.contains("\r\ncontent-type: application/octet-stream\r\n"));
    assert!(req.ends_with("\r\n\r\nx = 1"));
}

#[tokio::test]
async fn deploy_without_code_sends_json() {
    let (client, req) = serve_once(response("409 Conflict", &[], "")).await;
    let mut deploy = DeployRequest::new(Runtime::Node, "index.handler", None);
    deploy.overwrite = false;
    deploy.timeout_ms = Some(500);
    let err = client.deploy("hello", &deploy).await.unwrap_err();
    assert_eq!(err.api_status(), Some(409));
    let req = req.await.unwrap();
    assert!(
        req.starts_with("PUT /v1/namespaces/default/functions/hello?overwrite=false "),
        "{req}"
    );
    assert!(req.contains("\r\ncontent-type: application/json\r\n"));
    assert!(req.ends_with(r#"{"runtime":"node","handler":"index.handler","timeout_ms":500}"#));
}

#[tokio::test]
async fn activation_filters_become_query_parameters() {
    let (client, req) = serve_once(response(
        "200 OK",
        &[],
        r#"{"activations":[],"next_cursor":null}"#,
    ))
    .await;
    let filter = ActivationFilter {
        function: Some("hello".into()),
        status: Some(Status::ApplicationError),
        since: Some(10),
        limit: Some(5),
        cursor: Some("c/1=".into()),
        ..Default::default()
    };
    let page = client.list_activations(&filter).await.unwrap();
    assert!(page.activations.is_empty() && page.next_cursor.is_none());
    let req = req.await.unwrap();
    assert!(
        req.starts_with(
            "GET /v1/namespaces/default/activations?function=hello&status=application_error\
             &since=10&limit=5&cursor=c%2F1%3D "
        ),
        "{req}"
    );
}

#[tokio::test]
async fn an_absent_server_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&addr.to_string(), "k", "default").unwrap();
    let err = client.healthz().await.unwrap_err();
    assert!(matches!(&err, ClientError::Connect { url, .. } if *url == format!("http://{addr}")));
    let source = std::error::Error::source(&err).unwrap().to_string();
    assert!(source.contains("refused"), "{source}");
}

#[test]
fn urls_are_normalized() {
    let n = |u: &str| normalize_url(u).map_err(|e| e.to_string());
    assert_eq!(
        n("http://127.0.0.1:8080/").unwrap(),
        "http://127.0.0.1:8080"
    );
    assert_eq!(n("localhost:8080").unwrap(), "http://localhost:8080");
    assert_eq!(n(" http://h/ignis/ ").unwrap(), "http://h/ignis");
    assert!(n("https://h").unwrap_err().contains("https"));
    assert!(n("ftp://h").unwrap_err().contains("only http"));
    assert!(n("").is_err());
    assert!(n("http://h/?a=1").is_err());
}

#[test]
fn path_segments_are_encoded() {
    let mut s = String::new();
    push_segment(&mut s, "a b/c@3");
    assert_eq!(s, "a%20b%2Fc@3");
    s.clear();
    push_segment(&mut s, "..");
    assert_eq!(s, "%2E%2E");
    let mut q = Query::new("/p".into());
    q.push("env", "K=V é");
    q.push("x", "~-._");
    assert_eq!(q.0, "/p?env=K%3DV%20%C3%A9&x=~-._");
}

#[test]
fn bad_namespaces_and_keys_are_config_errors() {
    assert!(matches!(
        Client::new("h:1", "k", "a/b"),
        Err(ClientError::Config(_))
    ));
    assert!(matches!(
        Client::new("h:1", "k\n", "default"),
        Err(ClientError::Config(_))
    ));
}
