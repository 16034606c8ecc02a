//! Tests of compiling, caching and running, with the WAT fixtures of `fixtures/`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ignis_core::Status;

use super::*;

pub(crate) const GUEST: &str = include_str!("../fixtures/guest.wat");
pub(crate) const NOOP: &str = include_str!("../fixtures/noop.wat");
const HTTP_ECHO: &str = include_str!("../fixtures/http_echo.wat");
const DATA_CLIENT: &str = include_str!("../fixtures/data_client.wat");
const UNKNOWN_IMPORT: &str = include_str!("../fixtures/unknown_import.wat");
const WRONG_WORLD: &str = include_str!("../fixtures/wrong_world.wat");

fn engine(dir: &Path) -> WasmEngine {
    WasmEngine::new(&WasmConfig {
        cache_dir: dir.join("wasm-cache"),
        pool_slots: 64,
    })
    .unwrap()
}

fn sha_of(code: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(code))
}

/// Compiles, caches and loads `code` as a deploy and a cold start would.
fn deploy(engine: &WasmEngine, code: &str) -> Arc<WasmCode> {
    let sha = sha_of(code.as_bytes());
    let compiled = engine.compile(code.as_bytes()).unwrap();
    engine.store_artifact(&sha, &compiled).unwrap();
    engine
        .load(&sha, || panic!("the artifact was cached at deploy"))
        .unwrap()
}

struct Call {
    event: &'static [u8],
    env: Vec<(String, String)>,
    memory_mb: usize,
    timeout: Duration,
    api: Option<DataApi>,
}

impl Call {
    fn new(event: &'static [u8]) -> Self {
        Call {
            event,
            env: Vec::new(),
            memory_mb: 64,
            timeout: Duration::from_secs(10),
            api: None,
        }
    }

    fn mode(mut self, mode: &str) -> Self {
        self.env.push(("MODE".into(), mode.into()));
        self
    }

    async fn run(&self, code: &WasmCode) -> RunOutput {
        let event = Bytes::from_static(self.event);
        code.run(RunRequest {
            event: &event,
            env: &self.env,
            name: "test",
            memory_bytes: self.memory_mb * 1024 * 1024,
            deadline: Instant::now() + self.timeout,
            timeout_ms: self.timeout.as_millis() as u64,
            api: self.api.as_ref(),
        })
        .await
    }
}

fn error_of(out: &RunOutput) -> (&str, &str) {
    let e = out.error.as_ref().expect("a failed run has an error");
    (e.kind.as_str(), e.message.as_str())
}

#[tokio::test]
async fn echoes_stdin_and_logs_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    assert!(!code.is_component());
    let out = Call::new(br#"{"hello":"world"}"#).run(&code).await;
    assert_eq!(out.status, Status::Success, "{:?}", out.error);
    assert_eq!(&out.body[..], br#"{"hello":"world"}"#);
    assert_eq!(&out.stderr[..], b"echo: 17 bytes\n");
    assert!(!out.logs_truncated);
}

#[tokio::test]
async fn transforms_json_with_the_environment_and_a_fresh_store_each_time() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    let mut call = Call::new(br#"{"n": [1, 2]}"#).mode("transform");
    call.env.push(("GREETING".into(), "hi there".into()));
    for _ in 0..3 {
        let out = call.run(&code).await;
        assert_eq!(out.status, Status::Success, "{:?}", out.error);
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["bytes"], 13);
        assert_eq!(v["event"]["n"][1], 2);
        assert_eq!(
            v["env"],
            serde_json::json!(["MODE=transform", "GREETING=hi there"])
        );
        // A global the guest increments on every run: 1 each time, nothing leaks.
        assert_eq!(v["runs"], 1);
    }
}

#[tokio::test]
async fn a_trap_is_an_application_error_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    let out = Call::new(b"").mode("trap").run(&code).await;
    assert_eq!(out.status, Status::ApplicationError);
    let (kind, message) = error_of(&out);
    assert_eq!(kind, "Trap");
    assert_eq!(
        message,
        "wasm trap: wasm `unreachable` instruction executed"
    );
    let stack = out
        .error
        .as_ref()
        .unwrap()
        .stack
        .clone()
        .unwrap_or_default();
    assert!(stack.contains("wasm backtrace"), "{stack}");
    assert_eq!(&out.stderr[..], b"about to trap\n");
}

#[tokio::test]
async fn a_non_zero_exit_names_its_status_and_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    let out = Call::new(b"").mode("exit").run(&code).await;
    assert_eq!(out.status, Status::ApplicationError);
    assert_eq!(
        error_of(&out),
        ("ExitCode", "the module exited with status 3: bad input")
    );
}

#[tokio::test]
async fn a_spinning_guest_stops_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    for mode in ["loop", "sleep"] {
        let mut call = Call::new(b"").mode(mode);
        call.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let out = call.run(&code).await;
        let took = started.elapsed();
        assert_eq!(out.status, Status::Timeout, "{mode}: {:?}", out.error);
        assert_eq!(
            error_of(&out),
            ("Timeout", "the function did not finish within 200 ms")
        );
        assert!(took >= Duration::from_millis(200), "{mode}: {took:?}");
        assert!(took < Duration::from_secs(2), "{mode}: {took:?}");
    }
}

#[tokio::test]
async fn growing_memory_past_the_limit_is_oom() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    let out = Call::new(b"").mode("grow").run(&code).await;
    assert_eq!(out.status, Status::Oom, "{:?}", out.error);
    let (kind, message) = error_of(&out);
    assert_eq!(kind, "OutOfMemory");
    assert!(
        message.contains("more than its limit of 64 MiB"),
        "{message}"
    );
    assert_eq!(&out.stderr[..], b"out of memory\n");
}

#[tokio::test]
async fn stdout_floods_stop_at_the_result_limit_and_log_floods_are_cut() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    let started = Instant::now();
    let out = Call::new(b"").mode("flood").run(&code).await;
    assert_eq!(out.status, Status::ApplicationError);
    assert_eq!(error_of(&out).0, "ResultTooLarge");
    assert!(started.elapsed() < Duration::from_secs(5));

    let out = Call::new(b"").mode("logflood").run(&code).await;
    assert_eq!(out.status, Status::Success, "{:?}", out.error);
    assert_eq!(&out.body[..], b"{}");
    assert!(out.logs_truncated);
    assert!(out.stderr.len() <= ignis_core::MAX_LOG_BYTES + 64 * 1024);
}

#[tokio::test]
async fn many_invocations_at_once_share_one_pre_instance() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), GUEST);
    let runs = (0..32).map(|_| {
        let code = code.clone();
        tokio::spawn(async move { Call::new(b"[1]").mode("transform").run(&code).await })
    });
    for r in runs {
        let out = r.await.unwrap();
        assert_eq!(out.status, Status::Success, "{:?}", out.error);
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["runs"], 1);
    }
}

#[test]
fn bad_code_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let refuse = |code: &[u8]| match engine.compile(code) {
        Err(WasmError::Invalid(m)) => m,
        Err(e) => panic!("not an Invalid error: {e}"),
        Ok(_) => panic!("accepted {:?}", String::from_utf8_lossy(code)),
    };
    let m = refuse(b"hello");
    assert!(m.starts_with("the code is not WebAssembly"), "{m}");
    let m = refuse(b"(module (func (export \"_start\") (i32.bogus)))");
    assert!(m.starts_with("the WebAssembly text does not parse"), "{m}");
    let m = refuse(b"\0asm\x01\0\0\0\x01\xff");
    assert!(m.starts_with("invalid WebAssembly module"), "{m}");
    let m = refuse(b"\0asm\x02\0\0\0");
    assert!(m.contains("unsupported WebAssembly binary version"), "{m}");
    let m = refuse(UNKNOWN_IMPORT.as_bytes());
    assert!(m.contains("env::launch_missiles"), "{m}");
    assert!(m.contains("wasi_snapshot_preview1"), "{m}");
    let m = refuse(b"(module (memory (export \"memory\") 1))");
    assert!(m.contains("no `_start` export"), "{m}");
    let m = refuse(WRONG_WORLD.as_bytes());
    assert!(m.contains("wasi:http/incoming-handler"), "{m}");
}

#[test]
fn artifacts_survive_a_restart_and_broken_ones_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let sha = sha_of(NOOP.as_bytes());
    let first = engine(dir.path());
    drop(deploy(&first, NOOP));
    let artifact = dir
        .path()
        .join("wasm-cache")
        .join(format!("{sha}-{}.cwasm", first.tag()));
    assert!(artifact.is_file());
    drop(first);

    // A new engine (a restart) maps the artifact: the source is not read.
    let second = engine(dir.path());
    second
        .load(&sha, || Err(std::io::Error::other("not needed")))
        .unwrap();
    drop(second);

    // A damaged artifact is not trusted: the code is compiled again from its source.
    std::fs::write(&artifact, b"garbage").unwrap();
    let third = engine(dir.path());
    let mut read = false;
    third
        .load(&sha, || {
            read = true;
            Ok(NOOP.as_bytes().to_vec())
        })
        .unwrap();
    assert!(read);
    assert!(std::fs::read(&artifact).unwrap().len() > 7);
}

#[test]
fn loaded_code_is_shared_while_held() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path());
    let sha = sha_of(NOOP.as_bytes());
    assert!(engine.cached(&sha).is_none());
    let code = deploy(&engine, NOOP);
    assert!(Arc::ptr_eq(&engine.cached(&sha).unwrap(), &code));
    drop(code);
    assert!(engine.cached(&sha).is_none());
}

fn http_event(method: &str, path: &str, body: &str) -> &'static [u8] {
    let e = serde_json::json!({
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "q=1",
        "headers": {"host": "example.com", "content-type": "text/plain"},
        "requestContext": {"http": {"method": method, "path": path}},
        "body": body,
        "isBase64Encoded": false,
    });
    Box::leak(e.to_string().into_bytes().into_boxed_slice())
}

#[tokio::test]
async fn http_components_answer_invokes_and_http_events() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), HTTP_ECHO);
    assert!(code.is_component());

    // A plain event: POST / with the event as body; the response body is the result.
    let out = Call::new(br#"{"a":1}"#).run(&code).await;
    assert_eq!(out.status, Status::Success, "{:?}", out.error);
    assert_eq!(&out.body[..], br#"{"a":1}"#);
    assert_eq!(&out.stderr[..], b"http-echo: /\n");

    // An HTTP event: that request; the result is {statusCode, headers, body}.
    let out = Call::new(http_event("PUT", "/items/7", "payload"))
        .run(&code)
        .await;
    assert_eq!(out.status, Status::Success, "{:?}", out.error);
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["statusCode"], 200);
    assert_eq!(v["headers"]["x-path"], "/items/7?q=1");
    assert_eq!(v["body"], "payload");
    assert_eq!(v["isBase64Encoded"], false);

    let out = Call::new(http_event("GET", "/teapot", "")).run(&code).await;
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["statusCode"], 418);
}

#[tokio::test]
async fn http_component_failures_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), HTTP_ECHO);
    let out = Call::new(http_event("GET", "/trap", "")).run(&code).await;
    assert_eq!(out.status, Status::ApplicationError);
    assert_eq!(
        error_of(&out),
        ("Trap", "wasm trap: wasm `unreachable` instruction executed")
    );

    let out = Call::new(http_event("GET", "/noresp", "")).run(&code).await;
    assert_eq!(out.status, Status::ApplicationError);
    assert_eq!(error_of(&out).0, "NoResponse");

    let mut call = Call::new(http_event("GET", "/loop", ""));
    call.timeout = Duration::from_millis(200);
    let out = call.run(&code).await;
    assert_eq!(out.status, Status::Timeout, "{:?}", out.error);
}

/// An API that answers `201` with what it was asked.
struct Recorder;

impl ApiService for Recorder {
    fn call(&self, request: hyper::Request<ApiBody>) -> ApiFuture {
        use http_body_util::BodyExt;
        Box::pin(async move {
            let auth = request
                .headers()
                .get("authorization")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let head = format!("{} {} [{auth}]", request.method(), request.uri());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let text = format!("{head} {}", String::from_utf8_lossy(&body));
            let mut r = hyper::Response::new(
                http_body_util::Full::new(Bytes::from(text))
                    .map_err(|e| match e {})
                    .boxed_unsync(),
            );
            *r.status_mut() = hyper::StatusCode::CREATED;
            r
        })
    }
}

#[tokio::test]
async fn a_component_reaches_the_api_it_is_given_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let code = deploy(&engine(dir.path()), DATA_CLIENT);
    let api = DataApi::new(Arc::new(Recorder), "127.0.0.1:9400", "ibt_t").unwrap();
    let call = |event: &'static str| {
        let mut c = Call::new(event.as_bytes());
        c.env = vec![
            ("IGNIS_API_URL".into(), "http://127.0.0.1:9400".into()),
            ("IGNIS_TOKEN".into(), "ibt_t".into()),
        ];
        c.api = Some(api.clone());
        c
    };
    let body = |out: RunOutput| {
        assert_eq!(out.status, Status::Success, "{:?}", out.error);
        String::from_utf8(out.body.to_vec()).unwrap()
    };

    let out = call("env").run(&code).await;
    assert_eq!(
        body(out),
        "IGNIS_API_URL=http://127.0.0.1:9400\nIGNIS_TOKEN=ibt_t\n"
    );
    // The request as the guest made it, streamed body included; the token put in, or its own.
    let out = call("PUT\n$API/v1/namespaces/a/kv/k?ttl=9\n\nhello")
        .run(&code)
        .await;
    assert_eq!(
        body(out),
        "201\nPUT /v1/namespaces/a/kv/k?ttl=9 [Bearer ibt_t] hello"
    );
    let out = call("GET\n$API/x\n$TOKEN\n").run(&code).await;
    assert_eq!(body(out), "201\nGET /x [Bearer ibt_t] ");
    // Elsewhere, or with another credential: refused before any API sees it.
    for event in [
        "GET\nhttp://127.0.0.1:8080/v1/system/info\n\n",
        "GET\nhttp://example.com/\n\n",
        "GET\n$API/v1/namespaces/a/keys\nBearer ik_1:admin\n",
    ] {
        let out = call(event).run(&code).await;
        assert_eq!(body(out), "error HTTP-request-denied", "{event}");
    }
    // A component given no API reaches nothing.
    let mut none = call("GET\n$API/x\n\n");
    none.api = None;
    assert_eq!(body(none.run(&code).await), "error HTTP-request-denied");
}
