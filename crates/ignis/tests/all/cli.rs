//! The `ignis` CLI against a real server.

use crate::harness::*;

#[test]
fn cli_deploys_invokes_and_reads_activations() {
    let s = Server::start();
    let dir = code_dir(&[
        (
            "app.py",
            "from lib.util import shout\ndef handler(event, context):\n    print('cli log line')\n    return {'msg': shout(event.get('m', 'hi'))}\n",
        ),
        ("lib/__init__.py", ""),
        ("lib/util.py", "def shout(s):\n    return s.upper()\n"),
    ]);
    let path = dir.path().to_str().unwrap();
    let out = ok(&s.cli(&[
        "fn",
        "deploy",
        "py",
        path,
        "--runtime",
        "python",
        "--handler",
        "app.handler",
        "--memory",
        "128",
        "--timeout",
        "10s",
        "--env",
        "A=1",
    ]));
    assert!(out.contains("version 1"), "{out}");

    let out = ok(&s.cli(&["invoke", "py", "-d", r#"{"m":"abc"}"#]));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap(),
        serde_json::json!({"msg": "ABC"})
    );

    let out = s.cli(&["invoke", "py", "--verbose", "-d", "{}"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success());
    assert!(
        stderr.contains("warm") && stderr.contains("activation"),
        "{stderr}"
    );

    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), r#"{"m":"from file"}"#).unwrap();
    let out = ok(&s.cli(&["invoke", "py", "-f", f.path().to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["status"], "success");
    let id = v["activation_id"].as_str().unwrap().to_string();

    let out = ok(&s.cli(&["fn", "list"]));
    assert!(out.contains("py") && out.contains("python"), "{out}");
    let out = ok(&s.cli(&["fn", "list", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["functions"][0]["memory_mb"], 128);
    assert_eq!(v["functions"][0]["timeout_ms"], 10000);
    assert_eq!(v["functions"][0]["env"]["A"], "1");
    ok(&s.cli(&["fn", "get", "py"]));
    let out = ok(&s.cli(&["fn", "versions", "py"]));
    assert!(out.contains('1'), "{out}");

    let out = ok(&s.cli(&["activations", "list", "--function", "py"]));
    assert!(out.contains(&id[..8]), "{out}");
    let out = ok(&s.cli(&["activations", "get", &id]));
    assert!(out.contains("success"), "{out}");
    let out = ok(&s.cli(&["activations", "logs", &id]));
    assert!(
        out.contains("cli log line") && out.contains("stdout"),
        "{out}"
    );

    ok(&s.cli(&["fn", "delete", "py"]));
    let out = s.cli(&["invoke", "py"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn cli_node_and_exec_and_failures() {
    let s = Server::start();
    let dir = code_dir(&[(
        "index.js",
        "exports.handler = async (e) => ({ sum: e.a + e.b });\n",
    )]);
    ok(&s.cli(&[
        "fn",
        "deploy",
        "add",
        dir.path().to_str().unwrap(),
        "--runtime",
        "node",
        "--handler",
        "index.handler",
    ]));
    let out = ok(&s.cli(&["invoke", "add", "-d", r#"{"a":2,"b":3}"#]));
    assert!(
        out.contains("\"sum\":5") || out.contains("\"sum\": 5"),
        "{out}"
    );

    let script = code_dir(&[("run.sh", "#!/bin/sh\necho \"exec got $(cat)\"\n")]);
    let file = script.path().join("run.sh");
    ok(&s.cli(&[
        "fn",
        "deploy",
        "sh",
        file.to_str().unwrap(),
        "--runtime",
        "exec",
    ]));
    let out = ok(&s.cli(&["invoke", "sh", "-d", "payload"]));
    assert_eq!(out.trim(), "exec got payload");

    let dir = code_dir(&[(
        "app.py",
        "def handler(e, c):\n    raise RuntimeError('kaput')\n",
    )]);
    ok(&s.cli(&[
        "fn",
        "deploy",
        "bad",
        dir.path().to_str().unwrap(),
        "--runtime",
        "python",
        "--handler",
        "app.handler",
    ]));
    let out = s.cli(&["invoke", "bad"]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("RuntimeError") && err.contains("kaput"),
        "{err}"
    );

    let out = s.cli(&[
        "fn",
        "deploy",
        "x",
        dir.path().to_str().unwrap(),
        "--runtime",
        "cobol",
        "--handler",
        "a.b",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cobol"));
}

#[test]
fn cli_works_with_no_setup_after_first_start() {
    let s = Server::start();
    let banner = s.wait_stdout("CLI config written");
    assert!(banner.contains("admin key"), "{banner}");
    assert!(banner.contains("sandbox protections"), "{banner}");
    let out = ok(&s.cli_with_config(&["fn", "list"]));
    let _ = out;
    let dir = code_dir(&[("app.py", "def main(a):\n    return 'zero setup'\n")]);
    ok(&s.cli_with_config(&[
        "fn",
        "deploy",
        "z",
        dir.path().join("app.py").to_str().unwrap(),
        "--runtime",
        "python",
        "--handler",
        "app.main",
    ]));
    assert!(ok(&s.cli_with_config(&["invoke", "z"])).contains("zero setup"));
}

#[test]
fn cli_reports_an_unreachable_server_plainly() {
    let out = std::process::Command::new(BIN)
        .args(["fn", "list"])
        .env("IGNIS_URL", "http://127.0.0.1:9")
        .env("IGNIS_KEY", "ik_x:y")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach"), "{err}");
}
