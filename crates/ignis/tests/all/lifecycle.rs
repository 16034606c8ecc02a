//! Versions, delete, restart, graceful shutdown, scale to zero.

use crate::harness::*;
use std::time::Duration;

#[test]
fn versions_are_immutable_and_invocable() {
    let s = Server::start();
    assert_eq!(
        s.deploy_file(
            "v",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 'one'\n"
        )
        .status,
        201
    );
    let r = s.deploy_file(
        "v",
        "runtime=python&handler=app.handler&memory_mb=512",
        "app.py",
        "def handler(e, c):\n    return 'two'\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["version"], 2);
    assert_eq!(s.invoke("v", "{}").json(), "two");
    assert_eq!(s.invoke("v@1", "{}").json(), "one");
    let r = s.request(
        "POST",
        "/v1/namespaces/default/functions/v/invoke?version=1",
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.json(), "one");
    assert_eq!(r.header("x-ignis-version"), Some("1"));
    let versions = s.get("/v1/namespaces/default/functions/v/versions").json();
    let vs: Vec<_> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["memory_mb"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(vs, [(1, 256), (2, 512)]);
    assert_eq!(
        s.get("/v1/namespaces/default/functions/v/versions/1")
            .json()["memory_mb"],
        256
    );
    assert_eq!(
        s.get("/v1/namespaces/default/functions/v@1").json()["version"],
        1
    );
    // A JSON update without code keeps the code and makes a new version.
    let r = s.request(
        "PUT",
        "/v1/namespaces/default/functions/v",
        Some("application/json"),
        br#"{"runtime":"python","handler":"app.handler","timeout_ms":5000}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 3);
    assert_eq!(s.invoke("v", "{}").json(), "two");
    // JSON deploy with base64 code.
    use base64::Engine;
    let code = base64::engine::general_purpose::STANDARD.encode("def main(a):\n    return 'b64'\n");
    let body = format!(
        r#"{{"runtime":"python","handler":"m.main","code":{{"file":"{code}","filename":"m.py"}}}}"#
    );
    let r = s.request(
        "PUT",
        "/v1/namespaces/default/functions/b",
        Some("application/json"),
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(s.invoke("b", "{}").json(), "b64");
}

#[test]
fn delete_removes_the_function_and_its_instances() {
    let s = Server::start();
    assert_eq!(
        s.deploy_file(
            "d",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 1\n"
        )
        .status,
        201
    );
    assert_eq!(s.invoke("d", "{}").status, 200);
    let r = s.request("DELETE", "/v1/namespaces/default/functions/d", None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), serde_json::json!({"deleted": "d", "versions": 1}));
    assert_eq!(s.invoke("d", "{}").status, 404);
    assert_eq!(s.get("/v1/namespaces/default/functions/d").status, 404);
    assert_eq!(
        s.request("DELETE", "/v1/namespaces/default/functions/d", None, b"")
            .status,
        404
    );
    // Its activations stay readable.
    let acts = s
        .get("/v1/namespaces/default/activations?function=d")
        .json();
    assert_eq!(acts["activations"].as_array().unwrap().len(), 1);
}

#[test]
fn activations_list_filters_and_pages() {
    let s = Server::start();
    assert_eq!(s.deploy_file("a", "runtime=python&handler=app.handler", "app.py", "def handler(e, c):\n    if e.get('fail'):\n        raise Exception('x')\n    return 1\n").status, 201);
    assert_eq!(
        s.deploy_file(
            "b",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 2\n"
        )
        .status,
        201
    );
    for i in 0..7 {
        s.invoke("a", if i % 3 == 0 { r#"{"fail":true}"# } else { "{}" });
    }
    for _ in 0..3 {
        s.invoke("b", "{}");
    }
    let all = s.get("/v1/namespaces/default/activations?limit=200").json();
    assert_eq!(all["activations"].as_array().unwrap().len(), 10);
    assert!(
        all["activations"][0]
            .get("logs")
            .is_none_or(|l| l.as_array().unwrap().is_empty())
    );
    let a = s
        .get("/v1/namespaces/default/activations?function=a&status=application_error")
        .json();
    assert_eq!(a["activations"].as_array().unwrap().len(), 3);
    let mut seen = 0;
    let mut url = "/v1/namespaces/default/activations?limit=4".to_string();
    loop {
        let page = s.get(&url).json();
        seen += page["activations"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/v1/namespaces/default/activations?limit=4&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, 10);
    let now = ignis_core::now_ms();
    let later = s
        .get(&format!(
            "/v1/namespaces/default/activations?since={}",
            now + 60_000
        ))
        .json();
    assert_eq!(later["activations"].as_array().unwrap().len(), 0);
}

#[test]
fn restart_keeps_functions_and_activations() {
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    assert_eq!(
        s.deploy_file(
            "keep",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 'kept'\n"
        )
        .status,
        201
    );
    let r = s.invoke("keep", "{}");
    let id = r.header("x-ignis-activation-id").unwrap().to_string();
    assert!(s.stop().success());
    let s2 = Server::launch(tmp.path(), &[]);
    assert_eq!(s2.key, s.key, "the admin key survives");
    let a = s2.get(&format!("/v1/namespaces/default/activations/{id}"));
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["result"], "kept");
    assert_eq!(s2.invoke("keep", "{}").json(), "kept");
    drop(s2);

    // Killed hard right after invocations were answered: they are still recorded.
    let mut s3 = Server::launch(tmp.path(), &[]);
    let ids: Vec<String> = (0..20)
        .map(|_| {
            s3.invoke("keep", "{}")
                .header("x-ignis-activation-id")
                .unwrap()
                .to_string()
        })
        .collect();
    // Reading the list flushes the recorder, as any reader would.
    assert!(
        s3.get("/v1/namespaces/default/activations?limit=200")
            .status
            == 200
    );
    s3.kill();
    let s4 = Server::launch(tmp.path(), &[]);
    for id in &ids {
        assert_eq!(
            s4.get(&format!("/v1/namespaces/default/activations/{id}"))
                .status,
            200,
            "{id}"
        );
    }
}

#[test]
fn graceful_shutdown_waits_for_invocations_in_flight() {
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    assert_eq!(
        s.deploy_file(
            "slow",
            "runtime=python&handler=app.handler",
            "app.py",
            "import time\ndef handler(e, c):\n    time.sleep(1)\n    return 'finished'\n"
        )
        .status,
        201
    );
    let addr_s = &s;
    let (status, id) = std::thread::scope(|scope| {
        let h = scope.spawn(move || {
            let r = addr_s.invoke("slow", "{}");
            (
                r.status,
                r.header("x-ignis-activation-id").map(str::to_string),
            )
        });
        std::thread::sleep(Duration::from_millis(300));
        unsafe {
            libc::kill(server_pid(addr_s), libc::SIGTERM);
        }
        h.join().unwrap()
    });
    assert_eq!(status, 200, "the invocation in flight completed");
    let exit = s.stop_wait();
    assert!(exit.success(), "{exit:?}");
    let s2 = Server::launch(tmp.path(), &[]);
    let a = s2.get(&format!(
        "/v1/namespaces/default/activations/{}",
        id.unwrap()
    ));
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["result"], "finished");
}

fn server_pid(s: &Server) -> i32 {
    s.pid()
}

#[test]
fn idle_instances_scale_to_zero_after_keep_alive() {
    let s = Server::start_with(&["--keep-alive-secs", "1"]);
    assert_eq!(
        s.deploy_file(
            "z",
            "runtime=python&handler=app.handler",
            "app.py",
            "def handler(e, c):\n    return 1\n"
        )
        .status,
        201
    );
    assert_eq!(s.invoke("z", "{}").header("x-ignis-cold"), Some("true"));
    assert_eq!(
        s.get("/v1/namespaces/default/functions/z").json()["instances"]["live"],
        1
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        s.get("/v1/namespaces/default/functions/z").json()["instances"]["live"],
        0
    );
    assert_eq!(s.invoke("z", "{}").header("x-ignis-cold"), Some("true"));
}

#[test]
fn identical_code_under_other_names_runs_as_each() {
    let s = Server::start();
    let code = "def handler(e, c):\n    return __name__\n";
    assert_eq!(
        s.deploy_file(
            "one",
            "runtime=python&handler=first.handler",
            "first.py",
            code
        )
        .status,
        201
    );
    assert_eq!(
        s.deploy_file(
            "two",
            "runtime=python&handler=second.handler",
            "second.py",
            code
        )
        .status,
        201
    );
    assert_eq!(s.invoke("one", "{}").json(), "first");
    assert_eq!(s.invoke("two", "{}").json(), "second");
    // The same script as an exec function gets its executable bit.
    let sh = "#!/bin/sh\necho same\n";
    assert_eq!(
        s.deploy_file("plain", "runtime=python&handler=run.handler", "run.py", sh)
            .status,
        201
    );
    assert_eq!(s.deploy_file("x", "runtime=exec", "run.py", sh).status, 201);
    let r = s.invoke("x", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text().trim(), "same");
}

#[test]
fn a_data_directory_serves_one_server_at_a_time() {
    let s = Server::start();
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-cli-config",
            "--data-dir",
        ])
        .arg(s.dir.join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another ignis serve is using the data directory"),
        "{err}"
    );
    assert_eq!(s.get("/healthz").status, 200);
}
