//! The wasm runtime end to end: deploy-time checks, WASI commands and wasi:http components
//! through the invoke API, web functions, async invocations, triggers, the CLI, restarts.
//! The fixtures are the WebAssembly text files of `crates/ignis-wasm/fixtures`.

use std::time::{Duration, Instant};

use crate::harness::*;

const GUEST: &str = include_str!("../../../ignis-wasm/fixtures/guest.wat");
const HTTP_ECHO: &str = include_str!("../../../ignis-wasm/fixtures/http_echo.wat");
const DATA_CLIENT: &str = include_str!("../../../ignis-wasm/fixtures/data_client.wat");
const UNKNOWN_IMPORT: &str = include_str!("../../../ignis-wasm/fixtures/unknown_import.wat");
const WRONG_WORLD: &str = include_str!("../../../ignis-wasm/fixtures/wrong_world.wat");

fn deploy(s: &Server, name: &str, query: &str, filename: &str, code: &[u8]) -> Resp {
    s.request(
        "PUT",
        &format!(
            "/v1/namespaces/default/functions/{name}?runtime=wasm&filename={filename}&{query}"
        ),
        Some("application/octet-stream"),
        code,
    )
}

fn deploy_ok(s: &Server, name: &str, query: &str, filename: &str, code: &[u8]) {
    let r = deploy(s, name, query, filename, code);
    assert_eq!(r.status, 201, "{}", r.text());
}

fn activation(s: &Server, r: &Resp) -> serde_json::Value {
    let id = r.header("x-ignis-activation-id").expect("an activation id");
    let a = s.get(&format!("/v1/namespaces/default/activations/{id}"));
    assert_eq!(a.status, 200, "{}", a.text());
    a.json()
}

#[test]
fn wasi_commands_run_with_activations_logs_and_metering() {
    let s = Server::start();
    // Text and binary uploads both work; the binary is what a compiler makes.
    let binary = wat::parse_str(GUEST).unwrap();
    deploy_ok(&s, "echo", "memory_mb=128", "echo.wasm", &binary);
    deploy_ok(
        &s,
        "transform",
        "env=MODE=transform&env=GREETING=hi",
        "guest.wat",
        GUEST.as_bytes(),
    );

    let r = s.invoke("echo", r#"{"n": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"n": 1}"#);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-ignis-cold"), Some("true"));
    let a = activation(&s, &r);
    assert_eq!(a["status"], "success");
    assert_eq!(a["cold"], true);
    assert_eq!(a["memory_mb"], 128);
    assert!(a["billed_ms"].as_u64().unwrap() >= 1);
    assert_eq!(a["logs"][0]["stream"], "stderr");
    assert_eq!(a["logs"][0]["line"], "echo: 8 bytes");
    assert_eq!(a["result"]["n"], 1);

    // Warm from now on; the same slot serves again.
    let r2 = s.invoke("echo", "not json at all");
    assert_eq!(r2.status, 200);
    assert_eq!(r2.text(), "not json at all");
    assert_eq!(r2.header("x-ignis-cold"), Some("false"));
    assert_eq!(r2.header("x-ignis-init-ms"), Some("0"));
    assert_eq!(r.header("x-ignis-instance"), r2.header("x-ignis-instance"));

    let r = s.invoke("transform", r#"{"k": "v"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["bytes"], 10);
    assert_eq!(v["event"]["k"], "v");
    let env: Vec<&str> = v["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(env.contains(&"GREETING=hi"), "{env:?}");
    assert!(env.contains(&"IGNIS_FUNCTION_NAME=transform"), "{env:?}");
    assert!(env.contains(&"IGNIS_MEMORY_MB=256"), "{env:?}");
    // A WASI preview 1 module cannot make a request, so it is given no token to make one with.
    assert!(
        !env.iter().any(|e| e.starts_with("IGNIS_TOKEN=")),
        "{env:?}"
    );
    // A fresh store per invocation: the guest's run counter is 1 every time.
    assert_eq!(v["runs"], 1);
    assert_eq!(s.invoke("transform", "{}").json()["runs"], 1);

    let instances = s.get("/v1/system/instances").json();
    let wasm: Vec<_> = instances["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["runtime"] == "wasm")
        .collect();
    assert_eq!(wasm.len(), 2, "{instances}");
    assert_eq!(s.get("/v1/system/info").json()["runtimes"]["wasm"], true);
}

#[test]
fn wasm_failures_become_activations() {
    let s = Server::start();
    let binary = wat::parse_str(GUEST).unwrap();
    for (name, mode) in [
        ("trap", "trap"),
        ("spin", "loop"),
        ("hog", "grow"),
        ("flood", "flood"),
        ("quit", "exit"),
        ("chatty", "logflood"),
    ] {
        let query = format!("env=MODE={mode}&timeout_ms=500&memory_mb=64");
        deploy_ok(&s, name, &query, "guest.wasm", &binary);
    }

    let r = s.invoke("trap", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    let e = r.json()["error"].clone();
    assert_eq!(e["code"], "application_error");
    assert_eq!(e["type"], "Trap");
    assert_eq!(
        e["message"],
        "wasm trap: wasm `unreachable` instruction executed"
    );
    assert!(
        e["stack"].as_str().unwrap().contains("wasm backtrace"),
        "{e}"
    );
    let a = activation(&s, &r);
    assert_eq!(a["logs"][0]["line"], "about to trap");

    let started = Instant::now();
    let r = s.invoke("spin", "{}");
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "timeout");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slot is fine afterwards: the next invocation times out the same way, not worse.
    assert_eq!(s.invoke("spin", "{}").status, 504);

    let r = s.invoke("hog", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "oom");
    assert_eq!(r.json()["error"]["type"], "OutOfMemory");

    let r = s.invoke("flood", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "ResultTooLarge");

    let r = s.invoke("quit", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        r.json()["error"]["message"],
        "the module exited with status 3: bad input"
    );

    let r = s.invoke("chatty", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let a = activation(&s, &r);
    assert_eq!(a["logs_truncated"], true);
}

#[test]
fn bad_wasm_is_refused_at_deploy_naming_the_problem() {
    let s = Server::start();
    let refused = |filename: &str, code: &[u8], needle: &str| {
        let r = deploy(&s, "bad", "", filename, code);
        assert_eq!(r.status, 400, "{}", r.text());
        let e = r.json()["error"].clone();
        assert_eq!(e["code"], "invalid_spec", "{e}");
        assert_eq!(e["field"], "code", "{e}");
        let m = e["message"].as_str().unwrap().to_string();
        assert!(m.contains(needle), "{m:?} lacks {needle:?}");
    };
    refused(
        "f.wasm",
        b"definitely not wasm",
        "the code is not WebAssembly",
    );
    refused(
        "f.wasm",
        b"\0asm\x01\0\0\0\x05\xff",
        "invalid WebAssembly module",
    );
    refused(
        "f.wat",
        UNKNOWN_IMPORT.as_bytes(),
        "unknown import: `env::launch_missiles`",
    );
    refused(
        "f.wat",
        br#"(module (func (export "main")))"#,
        "no `_start` export",
    );
    refused(
        "f.wat",
        WRONG_WORLD.as_bytes(),
        "must export `wasi:http/incoming-handler`",
    );
    // Nothing was stored.
    assert_eq!(s.get("/v1/namespaces/default/functions/bad").status, 404);
    // A directory (zip) is not a wasm function's code.
    let dir = code_dir(&[("guest.wat", GUEST), ("other.wat", GUEST)]);
    let out = s.cli(&[
        "fn",
        "deploy",
        "bad",
        "--runtime",
        "wasm",
        "--handler",
        "guest.wat",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a zip archive"), "{err}");
}

#[test]
fn http_components_serve_web_requests_invokes_and_async() {
    let s = Server::start();
    deploy_ok(&s, "site", "web=public", "echo.wat", HTTP_ECHO.as_bytes());

    // A web request is handed over as a real HTTP request: no key, path, query, body.
    let r = s.raw_request(
        "POST",
        "/fn/default/site/items/7?q=1",
        &[],
        Some("text/plain"),
        b"hello component",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello component");
    assert_eq!(r.header("x-path"), Some("/items/7?q=1"));
    let binary: Vec<u8> = (0..=255u8).collect();
    let r = s.raw_request(
        "PUT",
        "/fn/default/site/bytes",
        &[],
        Some("application/octet-stream"),
        &binary,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, binary);
    let r = s.raw_request("GET", "/fn/default/site/teapot", &[], None, b"");
    assert_eq!(r.status, 418);
    let a = activation(&s, &r);
    assert_eq!(a["status"], "success");
    assert_eq!(a["logs"][0]["line"], "http-echo: /teapot");

    // A plain invoke is POST / with the event as body; the response body is the result.
    let r = s.invoke("site", r#"{"plain": true}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"plain": true}));

    // Failures of a component.
    let r = s.raw_request("GET", "/fn/default/site/trap", &[], None, b"");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "Trap");
    let r = s.raw_request("GET", "/fn/default/site/noresp", &[], None, b"");
    assert_eq!(r.json()["error"]["type"], "NoResponse");

    // Asynchronously, through the queue.
    let r = s.request(
        "POST",
        "/v1/namespaces/default/functions/site/invoke?blocking=false",
        Some("application/json"),
        br#"{"later": 1}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["activation_id"].as_str().unwrap().to_string();
    let a = wait_activation(&s, &id, 20);
    assert_eq!(a["status"], "success", "{a}");
    assert_eq!(a["result"]["later"], 1);
}

#[test]
fn triggers_and_the_cli_drive_wasm_functions() {
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("transform.wasm");
    std::fs::write(&module, wat::parse_str(GUEST).unwrap()).unwrap();
    let out = ok(&s.cli(&[
        "fn",
        "deploy",
        "tx",
        "--runtime",
        "wasm",
        "--env",
        "MODE=transform",
        module.to_str().unwrap(),
    ]));
    assert!(out.contains("deployed tx version 1 (wasm"), "{out}");
    let got = ok(&s.cli(&["fn", "get", "tx", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&got).unwrap();
    assert_eq!(v["handler"], "transform.wasm");
    assert_eq!(v["code"]["filename"], "transform.wasm");

    let out = ok(&s.cli(&["invoke", "tx", "-d", r#"{"via": "cli"}"#]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["event"]["via"], "cli");

    let a = fire_through_rule(&s, "tick", "r", "tx", r#"{"fired": true}"#);
    assert_eq!(a["status"], "success", "{a}");
    assert_eq!(a["trigger"], "tick");
    assert_eq!(a["result"]["event"]["fired"], true);
}

#[test]
fn compiled_code_survives_a_restart_without_recompiling() {
    let mut s = Server::start();
    deploy_ok(&s, "echo", "", "guest.wat", GUEST.as_bytes());
    let cache = s.dir.join("data").join("wasm-cache");
    let artifacts = || -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path(), e.metadata().unwrap().modified().unwrap())
            })
            .collect();
        v.sort();
        v
    };
    let before = artifacts();
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(before[0].0.to_string_lossy().ends_with(".cwasm"));
    assert_eq!(s.invoke("echo", "1").text(), "1");

    s.stop();
    let dir = s.take_dir().unwrap();
    let s = Server::launch(dir.path(), &[]);
    let r = s.invoke("echo", "2");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "2");
    assert_eq!(r.header("x-ignis-cold"), Some("true"));
    assert_eq!(artifacts(), before, "the artifact was not rewritten");
}

#[test]
fn max_instances_bounds_wasm_concurrency() {
    let s = Server::start_with(&["--queue-per-function", "1"]);
    let binary = wat::parse_str(GUEST).unwrap();
    deploy_ok(
        &s,
        "slow",
        "env=MODE=loop&timeout_ms=1500&max_instances=1",
        "guest.wasm",
        &binary,
    );
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let hs: Vec<_> = (0..3)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_millis(150 * i));
                    s.invoke("slow", "{}").status
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // One runs (and times out), one waits in the queue, one is refused.
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, vec![429, 504, 504], "{statuses:?}");
}

/// A `wasi:http` component reaches its namespace's data — key-value entries, objects, topics —
/// through `wasi:http/outgoing-handler` to `$IGNIS_API_URL`, served by the server in its own
/// process (the guest has no network), and nothing else: not another namespace's data, not its
/// own namespace's functions, not another address, not with another credential. Its token
/// lives as long as its instance. The fixture (`fixtures/data_client/client.c`) makes the one
/// request its event describes and answers `STATUS\n` and the response's body.
#[test]
fn a_component_reaches_its_namespace_s_data_and_nothing_else() {
    let s = Server::start();
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        201
    );
    let secret = "/v1/namespaces/default/kv/secret";
    assert_eq!(
        s.request("PUT", secret, Some("text/plain"), b"default's")
            .status,
        200
    );
    let r = s.request(
        "PUT",
        "/v1/namespaces/team/functions/client?runtime=wasm&filename=client.wat",
        Some("application/octet-stream"),
        DATA_CLIENT.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let call = |event: &str| -> String {
        let r = s.request(
            "POST",
            "/v1/namespaces/team/functions/client/invoke",
            Some("text/plain"),
            event.as_bytes(),
        );
        assert_eq!(r.status, 200, "{event}: {}", r.text());
        r.text()
    };

    let env = call("env");
    assert!(
        env.contains("IGNIS_API_URL=http://127.0.0.1:9400\n"),
        "{env}"
    );
    assert!(env.contains("IGNIS_NAMESPACE=team\n"), "{env}");
    let token = env
        .lines()
        .find_map(|l| l.strip_prefix("IGNIS_TOKEN="))
        .expect("a token")
        .to_string();
    assert!(token.starts_with("ibt_") && token.len() == 68, "{token}");

    // Its own data, the token put in by the host or sent by the guest.
    for (auth, want) in [("", 1), ("$TOKEN", 2)] {
        let out = call(&format!(
            "POST\n$API/v1/namespaces/team/kv/hits\n{auth}\n{{\"increment\": 1}}"
        ));
        assert!(out.starts_with("200\n"), "{out}");
        assert!(out.contains(&format!("\"value\":{want}")), "{out}");
    }
    assert!(call("PUT\n$API/v1/namespaces/team/buckets/out\n\n").starts_with("201\n"));
    let out = call("PUT\n$API/v1/namespaces/team/buckets/out/objects/a.txt\n\nhello from wasm");
    assert!(out.starts_with("200\n"), "{out}");
    assert_eq!(
        call("GET\n$API/v1/namespaces/team/buckets/out/objects/a.txt\n\n"),
        "200\nhello from wasm"
    );
    let out = call("POST\n$API/v1/namespaces/team/topics/wasm-events\n\n{\"n\": 1}");
    assert!(out.starts_with("202\n"), "{out}");
    assert_eq!(s.get("/v1/namespaces/team/kv/hits").text(), "2");
    let r = s.get("/v1/namespaces/team/buckets/out/objects/a.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "hello from wasm"));
    let topics = s.get("/v1/namespaces/team/topics").json();
    assert!(topics.to_string().contains("wasm-events"), "{topics}");

    // A guest that traps mid-upload stores nothing: its request body fails, it does not end.
    for (what, path) in [
        ("object", "/v1/namespaces/team/buckets/out/objects/cut.txt"),
        ("entry", "/v1/namespaces/team/kv/cut"),
    ] {
        let r = s.request(
            "POST",
            "/v1/namespaces/team/functions/client/invoke",
            Some("text/plain"),
            format!("PUT!\n$API{path}\n\nthe first half").as_bytes(),
        );
        assert_eq!(r.status, 502, "{what}: {}", r.text());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            s.get(path).status,
            404,
            "{what}: a truncated body was stored"
        );
    }

    // Another namespace's data, its own namespace's functions and keys, the server: 403.
    for event in [
        "GET\n$API/v1/namespaces/default/kv/secret\n\n",
        "PUT\n$API/v1/namespaces/default/kv/secret\n\nmine now",
        "GET\n$API/v1/namespaces/default/buckets\n\n",
        "POST\n$API/v1/namespaces/default/topics/t\n\n{}",
        "GET\n$API/v1/namespaces/team/functions\n\n",
        "GET\n$API/v1/namespaces/team/keys\n\n",
        "GET\n$API/v1/system/info\n\n",
    ] {
        let out = call(event);
        assert!(out.starts_with("403\n"), "{event}: {out}");
    }
    // Anywhere else, or with another credential (the admin key!): refused by the host.
    let admin = format!("Bearer {}", s.key);
    for event in [
        format!("GET\nhttp://{}/v1/namespaces/team/kv/hits\n\n", s.addr),
        "GET\nhttp://example.com/\n\n".to_string(),
        format!("GET\n$API/v1/namespaces/default/kv/secret\n{admin}\n"),
        "GET\n$API/v1/namespaces/team/kv/hits\nBearer ibt_0000\n".to_string(),
    ] {
        assert_eq!(call(&event), "error HTTP-request-denied", "{event}");
    }
    assert_eq!(s.get(secret).text(), "default's");

    // The token works while the instance lives (from anywhere, like any instance's), and is
    // refused once it is gone.
    let bearer = format!("Bearer {token}");
    let probe = || {
        s.raw_request(
            "GET",
            "/v1/namespaces/team/kv/hits",
            &[("authorization", &bearer)],
            None,
            b"",
        )
        .status
    };
    assert_eq!(probe(), 200);
    assert_eq!(
        s.request("DELETE", "/v1/namespaces/team/functions/client", None, b"")
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while probe() != 401 {
        assert!(Instant::now() < deadline, "the token outlived its instance");
        std::thread::sleep(Duration::from_millis(100));
    }
}
