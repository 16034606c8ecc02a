//! Invocations of python, node and exec functions: results, cold/warm, instances, failures.

use crate::harness::*;
use std::time::{Duration, Instant};

const PY_LAMBDA: &str = r#"
import os
count = 0
def handler(event, context):
    global count
    count += 1
    print("hello from python", event.get("name"))
    return {"greeting": "hello " + event.get("name", "world"), "count": count,
            "request_id": context.aws_request_id, "fn": context.function_name,
            "remaining_ok": 0 < context.get_remaining_time_in_millis() <= 60000,
            "env": os.environ.get("GREETING")}
"#;

#[test]
fn python_lambda_style_cold_then_warm_on_same_instance() {
    let s = Server::start();
    let r = s.deploy_file(
        "hello",
        "runtime=python&handler=app.handler&env=GREETING%3Dhi",
        "app.py",
        PY_LAMBDA,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["version"], 1);

    let first = s.invoke("hello", r#"{"name":"ada"}"#);
    assert_eq!(first.status, 200, "{}", first.text());
    let body = first.json();
    assert_eq!(body["greeting"], "hello ada");
    assert_eq!(body["count"], 1);
    assert_eq!(body["fn"], "hello");
    assert_eq!(body["remaining_ok"], true);
    assert_eq!(body["env"], "hi");
    let id = first.header("x-ignis-activation-id").unwrap().to_string();
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(first.header("x-ignis-cold"), Some("true"));
    assert_eq!(first.header("x-ignis-status"), Some("success"));

    let second = s.invoke("hello", r#"{"name":"bob"}"#);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-ignis-cold"), Some("false"));
    assert_eq!(
        second.json()["count"],
        2,
        "module state survives: same instance"
    );
    assert_eq!(
        second.header("x-ignis-instance"),
        first.header("x-ignis-instance")
    );

    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["status"], "success");
    assert_eq!(a["cold"], true);
    assert_eq!(a["function"], "hello");
    assert_eq!(a["version"], 1);
    assert_eq!(a["result"]["greeting"], "hello ada");
    assert!(a["billed_ms"].as_u64().unwrap() >= 1);
    assert_eq!(a["memory_mb"], 256);
    let logs = a["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["line"] == "hello from python ada" && l["stream"] == "stdout"),
        "{logs:?}"
    );
}

#[test]
fn python_openwhisk_style_and_empty_body() {
    let s = Server::start();
    let code = "def main(args):\n    return {\"args\": args}\n";
    assert_eq!(
        s.deploy_file("ow", "runtime=python&handler=main", "main.py", code)
            .status,
        201
    );
    let r = s.invoke("ow", "");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"args": {}}));
}

#[test]
fn node_handlers_both_styles() {
    let s = Server::start();
    let code = r#"
let n = 0;
exports.handler = async (event, context) => { n += 1; console.log("node says", event.x); return { doubled: event.x * 2, n, fn: context.functionName }; };
exports.main = (args) => ({ echoed: args });
"#;
    let r = s.deploy_file(
        "dbl",
        "runtime=node&handler=index.handler",
        "index.js",
        code,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r1 = s.invoke("dbl", r#"{"x": 21}"#);
    assert_eq!(r1.status, 200, "{}", r1.text());
    assert_eq!(r1.json()["doubled"], 42);
    assert_eq!(r1.json()["fn"], "dbl");
    let r2 = s.invoke("dbl", r#"{"x": 1}"#);
    assert_eq!(r2.json()["n"], 2);
    assert_eq!(r2.header("x-ignis-cold"), Some("false"));
    let id = r1.header("x-ignis-activation-id").unwrap();
    let logs = s
        .get(&format!("/v1/namespaces/default/activations/{id}/logs"))
        .json();
    assert!(
        logs["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["line"] == "node says 21"),
        "{logs}"
    );

    let r = s.deploy_file("ow", "runtime=node&handler=index.main", "index.js", code);
    assert_eq!(r.status, 201);
    assert_eq!(
        s.invoke("ow", r#"{"a":1}"#).json(),
        serde_json::json!({"echoed": {"a": 1}})
    );
}

#[test]
fn exec_functions_read_stdin_and_write_stdout() {
    let s = Server::start();
    let script = "#!/bin/sh\necho \"log line\" >&2\nprintf '{\"got\":%s}' \"$(cat)\"\n";
    let r = s.deploy_file("sh", "runtime=exec&handler=run.sh", "run.sh", script);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.invoke("sh", r#"{"k":"v"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"got": {"k": "v"}}));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.header("x-ignis-activation-id").unwrap();
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["logs"][0]["line"], "log line");
    assert_eq!(a["logs"][0]["stream"], "stderr");

    // Raw bytes in, raw bytes out, and a non-zero exit is an application error.
    let bin = "#!/bin/sh\ncat\nexit 0\n";
    assert_eq!(
        s.deploy_file("cat", "runtime=exec", "cat.sh", bin).status,
        201
    );
    let r = s.request(
        "POST",
        "/v1/namespaces/default/functions/cat/invoke",
        Some("application/octet-stream"),
        b"\x00\x01not json\xff",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"\x00\x01not json\xff");
    let fail = "#!/bin/sh\necho 'bad things' >&2\nexit 3\n";
    assert_eq!(
        s.deploy_file("fail", "runtime=exec", "fail.sh", fail)
            .status,
        201
    );
    let r = s.invoke("fail", "{}");
    assert_eq!(r.status, 502);
    assert_eq!(r.error_code(), "application_error");
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
        msg.contains("status 3") && msg.contains("bad things"),
        "{msg}"
    );
}

#[test]
fn parallel_calls_create_several_instances() {
    let s = Server::start();
    let code = "import time\ndef handler(e, c):\n    time.sleep(0.7)\n    return 1\n";
    let r = s.deploy_file(
        "slow",
        "runtime=python&handler=app.handler&max_instances=4",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201);
    let start = Instant::now();
    let instances: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let r = s.invoke("slow", "{}");
                    assert_eq!(r.status, 200, "{}", r.text());
                    assert_eq!(r.header("x-ignis-cold"), Some("true"));
                    r.header("x-ignis-instance").unwrap().to_string()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut distinct = instances.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "{instances:?}");
    assert!(
        start.elapsed() < Duration::from_millis(2600),
        "ran in parallel: {:?}",
        start.elapsed()
    );
    let f = s.get("/v1/namespaces/default/functions/slow").json();
    assert_eq!(f["instances"]["live"], 4);
    assert_eq!(f["instances"]["idle"], 4);
}

#[test]
fn timeout_kills_the_instance_at_the_deadline() {
    let s = Server::start();
    let code = "import time\ndef handler(e, c):\n    if e.get('sleep'):\n        print('going to sleep')\n        time.sleep(30)\n    return 'ok'\n";
    let r = s.deploy_file(
        "sleepy",
        "runtime=python&handler=app.handler&timeout_ms=1000",
        "app.py",
        code,
    );
    assert_eq!(r.status, 201);
    assert_eq!(s.invoke("sleepy", "{}").status, 200);
    let start = Instant::now();
    let r = s.invoke("sleepy", r#"{"sleep":true}"#);
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.error_code(), "timeout");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "{took:?}"
    );
    let id = r.header("x-ignis-activation-id").unwrap();
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["status"], "timeout");
    assert!(
        a["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["line"] == "going to sleep")
    );
    // The timed-out instance is gone: the next call is cold.
    let r = s.invoke("sleepy", "{}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ignis-cold"), Some("true"));
}

#[test]
fn crashes_are_recorded_and_the_instance_replaced() {
    let s = Server::start();
    let code = "import os\ndef handler(e, c):\n    if e.get('crash'):\n        os._exit(7)\n    return 'fine'\n";
    assert_eq!(
        s.deploy_file(
            "crashy",
            "runtime=python&handler=app.handler",
            "app.py",
            code
        )
        .status,
        201
    );
    assert_eq!(s.invoke("crashy", "{}").status, 200);
    let r = s.invoke("crashy", r#"{"crash":true}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.error_code(), "crash");
    let r = s.invoke("crashy", "{}");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-ignis-cold"), Some("true"));
}

#[test]
fn handler_errors_carry_type_message_and_stack() {
    let s = Server::start();
    let code = "def handler(e, c):\n    raise ValueError('bad value ' + str(e.get('v')))\n";
    assert_eq!(
        s.deploy_file(
            "raises",
            "runtime=python&handler=app.handler",
            "app.py",
            code
        )
        .status,
        201
    );
    let r = s.invoke("raises", r#"{"v": 5}"#);
    assert_eq!(r.status, 502);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "application_error");
    assert_eq!(e["type"], "ValueError");
    assert_eq!(e["message"], "bad value 5");
    assert!(e["stack"].as_str().unwrap().contains("Traceback"));
    // An application error does not kill the instance.
    let r2 = s.invoke("raises", "{}");
    assert_eq!(r2.header("x-ignis-cold"), Some("false"));

    let js = "exports.handler = async () => { throw new TypeError('nope'); };";
    assert_eq!(
        s.deploy_file(
            "jsraises",
            "runtime=node&handler=index.handler",
            "index.js",
            js
        )
        .status,
        201
    );
    let r = s.invoke("jsraises", "{}");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["type"], "TypeError");
    assert!(
        r.json()["error"]["stack"]
            .as_str()
            .unwrap()
            .contains("nope")
    );
}

#[test]
fn init_errors_are_activations_with_the_traceback() {
    let s = Server::start();
    let r = s.deploy_file(
        "broken",
        "runtime=python&handler=app.handler",
        "app.py",
        "def handler(e, c)\n    return 1\n",
    );
    assert_eq!(r.status, 201, "syntax is checked at init, not deploy");
    let r = s.invoke("broken", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["type"], "SyntaxError");
    let id = r.header("x-ignis-activation-id").unwrap();
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}"))
        .json();
    assert_eq!(a["status"], "application_error");
    assert_eq!(a["error"]["phase"], "init");
    assert!(
        a["error"]["stack"]
            .as_str()
            .unwrap()
            .contains("SyntaxError"),
        "{a}"
    );

    let r = s.deploy_file(
        "nofn",
        "runtime=python&handler=app.missing",
        "app.py",
        "x = 1\n",
    );
    assert_eq!(r.status, 201);
    let r = s.invoke("nofn", "{}");
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["type"], "HandlerNotFound");
}

#[test]
fn results_and_logs_are_capped() {
    let s = Server::start();
    let code = "def handler(e, c):\n    if e.get('big'):\n        return 'x' * (7 * 1024 * 1024)\n    for i in range(30000):\n        print('line %d %s' % (i, 'y' * 60))\n    return 'done'\n";
    assert_eq!(
        s.deploy_file("big", "runtime=python&handler=app.handler", "app.py", code)
            .status,
        201
    );
    let r = s.invoke("big", r#"{"big":true}"#);
    assert_eq!(r.status, 502, "{}", &r.text()[..200.min(r.text().len())]);
    assert_eq!(r.json()["error"]["type"], "ResultTooLarge");
    let r = s.invoke("big", "{}");
    assert_eq!(r.status, 200);
    let id = r.header("x-ignis-activation-id").unwrap();
    let logs = s
        .get(&format!("/v1/namespaces/default/activations/{id}/logs"))
        .json();
    assert_eq!(logs["truncated"], true);
    let n = logs["logs"].as_array().unwrap().len();
    assert!(n > 1000 && n < 30000, "{n}");
}

#[test]
fn running_out_of_memory_is_oom() {
    let s = Server::start();
    let code = "def handler(e, c):\n    hog = []\n    while True:\n        hog.append(bytearray(16 * 1024 * 1024))\n";
    assert_eq!(
        s.deploy_file(
            "hog",
            "runtime=python&handler=app.handler&memory_mb=128",
            "app.py",
            code
        )
        .status,
        201
    );
    let r = s.invoke("hog", "{}");
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.error_code(), "oom");
    // The platform keeps serving.
    assert_eq!(s.get("/healthz").status, 200);
}
