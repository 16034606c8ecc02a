//! Compositions end to end: sequences (python, wasm, node, lambda components), workflows with
//! map/reduce, conditions, retries and timeouts, their executions through the API and the CLI,
//! bad definitions refused at deploy, and a `kill -9` in the middle of a workflow resumed after
//! restart without running a completed step again.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

const GUEST: &str = include_str!("../../../ignis-wasm/fixtures/guest.wat");

fn put_json(s: &Server, name: &str, body: Value) -> Resp {
    s.request(
        "PUT",
        &format!("/v1/namespaces/default/functions/{name}"),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

fn deploy_ok(s: &Server, name: &str, query: &str, filename: &str, code: &str) {
    let r = s.deploy_file(name, query, filename, code);
    assert!(r.status == 200 || r.status == 201, "{name}: {}", r.text());
}

fn compose_ok(s: &Server, name: &str, body: Value) {
    let r = put_json(s, name, body);
    assert!(r.status == 200 || r.status == 201, "{name}: {}", r.text());
}

fn refused(s: &Server, name: &str, body: Value, needle: &str) {
    let r = put_json(s, name, body);
    assert_eq!(r.status, 400, "{name}: {}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(needle), "{name}: {msg:?} lacks {needle:?}");
}

/// Queues an asynchronous invocation and returns its activation id.
fn invoke_async(s: &Server, name: &str, body: &[u8]) -> String {
    let r = s.request(
        "POST",
        &format!("/v1/namespaces/default/functions/{name}/invoke?blocking=false"),
        Some("application/json"),
        body,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    r.json()["activation_id"].as_str().unwrap().to_string()
}

/// Polls an execution until it is no longer running.
fn wait_execution(s: &Server, id: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = s.get(&format!("/v1/namespaces/default/executions/{id}"));
        if r.status == 200 && r.json()["status"] != "running" {
            return r.json();
        }
        assert!(
            Instant::now() < deadline,
            "execution {id} still running: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ADD1: &str = "def handler(event, context):\n    return {'n': event.get('n', 0) + 1}\n";
const DOUBLE: &str = "exports.handler = async (e) => ({ n: e.n * 2 });\n";
const BOOM: &str =
    "def handler(event, context):\n    raise ValueError('boom at ' + str(event.get('n')))\n";

#[test]
fn sequences_chain_components_of_every_runtime_and_list_their_activations() {
    let s = Server::start();
    deploy_ok(
        &s,
        "add1",
        "runtime=python&handler=add1.handler",
        "add1.py",
        ADD1,
    );
    deploy_ok(
        &s,
        "double",
        "runtime=node&handler=double.handler",
        "double.js",
        DOUBLE,
    );
    deploy_ok(&s, "echo-wasm", "runtime=wasm", "guest.wat", GUEST);
    let echo = std::str::from_utf8(ignis_runtime::bootstrap::LAMBDA_ECHO).unwrap();
    deploy_ok(
        &s,
        "echo-lambda",
        "runtime=lambda&handler=echo",
        "bootstrap",
        echo,
    );
    deploy_ok(
        &s,
        "boom",
        "runtime=python&handler=boom.handler",
        "boom.py",
        BOOM,
    );

    // A 3-step sequence with a wasm step in the middle: {"n":1} → 2 → 2 → 4.
    compose_ok(
        &s,
        "seq",
        json!({"runtime": "sequence", "components": ["add1", "echo-wasm", "double@1"]}),
    );
    let r = s.invoke("seq", r#"{"n": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"n": 4}));
    let id = r.header("x-ignis-activation-id").unwrap().to_string();
    let a = wait_activation(&s, &id, 10);
    assert_eq!(a["function"], "seq");
    assert_eq!(a["status"], "success");
    assert_eq!(a["result"], json!({"n": 4}));
    let lines: Vec<String> = a["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, function) in lines.iter().zip(["add1", "echo-wasm", "double"]) {
        let component_id = line.split(' ').next().unwrap();
        let c = wait_activation(&s, component_id, 10);
        assert_eq!(c["function"], function, "{line}");
        assert_eq!(c["status"], "success");
    }

    // A lambda-runtime component, and a sequence inside a sequence.
    compose_ok(
        &s,
        "outer",
        json!({"runtime": "sequence", "components": ["seq", "echo-lambda", "add1"]}),
    );
    let r = s.invoke("outer", r#"{"n": 1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"n": 5}));

    // An error stops the chain and is the sequence's result.
    compose_ok(
        &s,
        "broken",
        json!({"runtime": "sequence", "components": ["add1", "boom", "double"]}),
    );
    let r = s.invoke("broken", r#"{"n": 1}"#);
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("boom at 2"), "{}", r.text());
    let a = wait_activation(&s, r.header("x-ignis-activation-id").unwrap(), 10);
    assert_eq!(a["status"], "application_error");
    assert_eq!(a["error"]["type"], "ValueError");
    assert_eq!(a["logs"].as_array().unwrap().len(), 2, "{a}");

    // Asynchronous invocation, then through the CLI.
    let id = invoke_async(&s, "seq", br#"{"n": 10}"#);
    assert_eq!(wait_activation(&s, &id, 20)["result"], json!({"n": 22}));
    let out = ok(&s.cli(&["invoke", "seq", "-d", r#"{"n": 2}"#]));
    assert!(out.contains("\"n\": 6") || out.contains("\"n\":6"), "{out}");
    let out = ok(&s.cli(&["fn", "get", "outer"]));
    assert!(out.contains("seq → echo-lambda → add1"), "{out}");
    let out = ok(&s.cli(&["fn", "deploy", "seq2", "--sequence", "add1,double"]));
    assert!(out.contains("deployed seq2 version 1 (sequence"), "{out}");
    assert_eq!(s.invoke("seq2", r#"{"n": 1}"#).json(), json!({"n": 4}));
    let bad = s.cli(&["fn", "deploy", "seq3", "--sequence", "add1,bad name"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--sequence"),
        "{bad:?}"
    );

    // A web function: the request is the first component's event, the last one's result the
    // response.
    let webresp = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'path ' + event['rawPath']}\n";
    deploy_ok(
        &s,
        "webresp",
        "runtime=python&handler=webresp.handler",
        "webresp.py",
        webresp,
    );
    compose_ok(
        &s,
        "webseq",
        json!({"runtime": "sequence", "components": ["echo-wasm", "webresp"], "web": "public"}),
    );
    let r = s.raw_request("GET", "/fn/default/webseq/a/b", &[], None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "path /a/b");

    // Fired by a trigger through a rule, with the trigger's name on its activation.
    let a = fire_through_rule(&s, "tick", "tick-seq", "seq", r#"{"n": 0}"#);
    assert_eq!(a["function"], "seq");
    assert_eq!(a["trigger"], "tick");
    assert_eq!(a["result"], json!({"n": 2}));
}

#[test]
fn bad_compositions_are_refused_at_deploy() {
    let s = Server::start();
    deploy_ok(
        &s,
        "add1",
        "runtime=python&handler=add1.handler",
        "add1.py",
        ADD1,
    );
    refused(
        &s,
        "s1",
        json!({"runtime": "sequence", "components": ["add1", "nope"]}),
        "\"nope\" does not exist",
    );
    refused(
        &s,
        "s1",
        json!({"runtime": "sequence", "components": ["add1@7"]}),
        "no version 7",
    );
    refused(
        &s,
        "s1",
        json!({"runtime": "sequence", "components": []}),
        "at least one component",
    );
    refused(
        &s,
        "self",
        json!({"runtime": "sequence", "components": ["add1", "self"]}),
        "contain itself",
    );
    // Containing itself through another: a → b, then a redeployed as → … → b → a.
    compose_ok(
        &s,
        "a",
        json!({"runtime": "sequence", "components": ["add1"]}),
    );
    compose_ok(&s, "b", json!({"runtime": "sequence", "components": ["a"]}));
    refused(
        &s,
        "a",
        json!({"runtime": "sequence", "components": ["b"]}),
        "\"a\" would contain itself: a → b → a",
    );
    // Too deep: n1 = [add1], n2 = [n1], … n8 is 8 deep; n9 would be 9.
    compose_ok(
        &s,
        "n1",
        json!({"runtime": "sequence", "components": ["add1"]}),
    );
    for i in 2..=8 {
        let prev = format!("n{}", i - 1);
        compose_ok(
            &s,
            &format!("n{i}"),
            json!({"runtime": "sequence", "components": [prev]}),
        );
    }
    assert_eq!(s.invoke("n8", "{}").json(), json!({"n": 1}));
    refused(
        &s,
        "n9",
        json!({"runtime": "sequence", "components": ["n8"]}),
        "nested 9 deep",
    );
    // Workflows: a cycle, a map over something that is not an array, a missing function, a
    // reference to a step that does not run before, code given to a composition.
    refused(
        &s,
        "w",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "x", "function": "add1", "after": ["y"]},
            {"name": "y", "function": "add1", "after": ["x"]}
        ]}}),
        "cycle",
    );
    refused(
        &s,
        "w",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "x", "function": "add1", "map": {"not": "an array"}}
        ]}}),
        "map must be a reference to an array",
    );
    refused(
        &s,
        "w",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "x", "function": "ghost"}
        ]}}),
        "\"ghost\" does not exist",
    );
    refused(
        &s,
        "w",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "x", "function": "add1", "after": [], "input": "$.steps.y"},
            {"name": "y", "function": "add1", "after": []}
        ]}}),
        "does not run before",
    );
    refused(
        &s,
        "w",
        json!({"runtime": "workflow"}),
        "required for a workflow",
    );
    refused(
        &s,
        "w",
        json!({"runtime": "python", "handler": "a.b", "components": ["add1"]}),
        "only for sequence",
    );
    let r = s.deploy_file("w", "runtime=sequence", "x.json", "[]");
    assert_eq!(r.status, 400, "{}", r.text());
    // A map over a non-array known only when it runs fails the execution, clearly.
    compose_ok(
        &s,
        "mapper",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "m", "function": "add1", "map": "$.input.items"}
        ]}}),
    );
    let r = s.invoke("mapper", r#"{"items": {"a": 1}}"#);
    assert_ne!(r.status, 200);
    assert!(
        r.text().contains("map over an object, not an array"),
        "{}",
        r.text()
    );
}

const WC: &str = "def handler(event, context):\n    return {'words': len(event.split())}\n";
const SUM: &str = "def handler(event, context):\n    return {'words': sum(c['words'] for c in event), 'chunks': len(event)}\n";
const LABEL: &str = "def handler(event, context):\n    return event['label']\n";

#[test]
fn a_workflow_maps_and_reduces_a_word_count_over_a_thousand_chunks() {
    let s = Server::start();
    deploy_ok(
        &s,
        "wc",
        "runtime=python&handler=wc.handler&max_instances=8&instance_concurrency=8",
        "wc.py",
        WC,
    );
    deploy_ok(
        &s,
        "sum",
        "runtime=python&handler=sum.handler",
        "sum.py",
        SUM,
    );
    deploy_ok(
        &s,
        "label",
        "runtime=python&handler=label.handler",
        "label.py",
        LABEL,
    );
    deploy_ok(&s, "echo-wasm", "runtime=wasm", "guest.wat", GUEST);
    let dir = code_dir(&[(
        "wordcount.yaml",
        r#"
# Word count: fan out over the chunks, fan in to a total, then a branch on its size.
steps:
  - name: count
    function: wc
    map: $.input.chunks
    parallelism: 64
  - name: total
    function: sum
  - name: big
    function: label
    after: [total]
    when: { path: $.steps.total.words, gt: 1000 }
    input: { label: big }
  - name: small
    function: label
    after: [total]
    when: { path: $.steps.total.words, lte: 1000 }
    input: { label: small }
  - name: report
    function: echo-wasm
    after: [big, small]
output:
  total: $.steps.total
  size: $.steps.report
"#,
    )]);
    let def = dir.path().join("wordcount.yaml");
    ok(&s.cli(&[
        "fn",
        "deploy",
        "wordcount",
        "--workflow",
        def.to_str().unwrap(),
    ]));

    let mut expected = 0;
    let chunks: Vec<String> = (0..1000)
        .map(|i| {
            let n = i % 7 + 1;
            expected += n;
            (0..n)
                .map(|w| format!("w{i}x{w}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let input = json!({ "chunks": chunks }).to_string();
    let started = Instant::now();
    let r = s.invoke("wordcount", &input);
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(
        v["total"],
        json!({"words": expected, "chunks": 1000}),
        "{v}"
    );
    // report joins big and small, of which only big ran.
    assert_eq!(v["size"], json!({"big": "big"}), "{v}");
    eprintln!("word count over 1000 chunks took {took:?}");

    let id = r.header("x-ignis-activation-id").unwrap().to_string();
    let e = s
        .get(&format!("/v1/namespaces/default/executions/{id}"))
        .json();
    assert_eq!(e["status"], "succeeded");
    let steps = e["steps"].as_array().unwrap();
    let items: Vec<&Value> = steps
        .iter()
        .filter(|r| r["step"] == "count" && r["index"].is_u64())
        .collect();
    assert_eq!(items.len(), 1000);
    let ids: std::collections::HashSet<&str> = items
        .iter()
        .map(|r| r["activation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000, "one activation per item");
    let small = steps.iter().find(|r| r["step"] == "small").unwrap();
    assert_eq!(small["status"], "skipped");
    // An item's activation is a real one of wc.
    let one = wait_activation(&s, items[0]["activation_id"].as_str().unwrap(), 10);
    assert_eq!(one["function"], "wc");

    let listed = s
        .get("/v1/namespaces/default/executions?function=wordcount")
        .json();
    assert_eq!(
        names_in(&listed["executions"], "id"),
        std::slice::from_ref(&id)
    );
    let out = ok(&s.cli(&["execution", "get", &id]));
    assert!(out.contains("wordcount@1 · succeeded"), "{out}");
    assert!(out.contains("├─ count (wc) succeeded"), "{out}");
    assert!(out.contains("│  ├─ [0] succeeded"), "{out}");
    assert!(out.contains("… 995 more items succeeded"), "{out}");
    assert!(out.contains("small (label) skipped"), "{out}");
    let out = ok(&s.cli(&["execution", "list"]));
    assert!(out.contains(&id), "{out}");

    // Deleting a namespace deletes its workflows and their executions.
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        201
    );
    let r = s.request(
        "PUT",
        "/v1/namespaces/team/functions/wf",
        Some("application/json"),
        json!({"runtime": "workflow", "workflow": {"steps": [{"name": "one", "function": "noop"}]}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.text()); // no function noop in team yet
    let r = s.request(
        "PUT",
        "/v1/namespaces/team/functions/noop?runtime=wasm&filename=guest.wat",
        Some("application/octet-stream"),
        GUEST.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.request(
        "PUT",
        "/v1/namespaces/team/functions/wf",
        Some("application/json"),
        json!({"runtime": "workflow", "workflow": {"steps": [{"name": "one", "function": "noop"}]}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = s.request(
        "POST",
        "/v1/namespaces/team/functions/wf/invoke",
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let team = s.get("/v1/namespaces/team/executions").json();
    assert_eq!(team["executions"].as_array().unwrap().len(), 1, "{team}");
    assert_eq!(
        s.request("DELETE", "/v1/namespaces/team", None, b"").status,
        200
    );
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        201
    );
    let team = s.get("/v1/namespaces/team/executions").json();
    assert_eq!(team["executions"], json!([]), "{team}");
    assert_eq!(s.get("/v1/namespaces/team/functions/wf").status, 404);
}

const FLAKY: &str = r#"
runs = 0
def handler(event, context):
    global runs
    runs += 1
    if runs <= event.get('fail', 0):
        raise RuntimeError('flaky run %d' % runs)
    return {'runs': runs}
"#;
const SLOW: &str = "import time\ndef handler(event, context):\n    time.sleep(event.get('sleep', 0))\n    return {'slept': event.get('sleep', 0)}\n";

#[test]
fn failing_steps_are_retried_then_fail_the_workflow() {
    let s = Server::start();
    deploy_ok(
        &s,
        "flaky",
        "runtime=python&handler=flaky.handler&max_instances=1",
        "flaky.py",
        FLAKY,
    );
    deploy_ok(
        &s,
        "slow",
        "runtime=python&handler=slow.handler",
        "slow.py",
        SLOW,
    );
    // Fails twice, succeeds on its third attempt.
    compose_ok(
        &s,
        "retried",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "try", "function": "flaky", "input": {"fail": 2}, "retries": 2, "retry_delay_ms": 10}
        ]}}),
    );
    let r = s.invoke("retried", "{}");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"runs": 3}));
    let e = s
        .get(&format!(
            "/v1/namespaces/default/executions/{}",
            r.header("x-ignis-activation-id").unwrap()
        ))
        .json();
    assert_eq!(e["steps"][0]["attempts"], 3, "{e}");

    // Always fails: the retries run out, the workflow fails and the next step never runs.
    compose_ok(
        &s,
        "doomed",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "try", "function": "flaky", "input": {"fail": 1000}, "retries": 1, "retry_delay_ms": 10},
            {"name": "after", "function": "slow"}
        ]}}),
    );
    let r = s.invoke("doomed", "{}");
    assert_ne!(r.status, 200, "{}", r.text());
    assert!(
        r.text().contains("step \\\"try\\\" failed") || r.text().contains("step \"try\" failed"),
        "{}",
        r.text()
    );
    let id = r.header("x-ignis-activation-id").unwrap().to_string();
    let e = s
        .get(&format!("/v1/namespaces/default/executions/{id}"))
        .json();
    assert_eq!(e["status"], "failed");
    assert!(e["error"].as_str().unwrap().contains("flaky run"), "{e}");
    let steps = e["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 1, "{e}");
    assert_eq!(steps[0]["status"], "failed");
    assert_eq!(steps[0]["attempts"], 2);
    let a = wait_activation(&s, &id, 10);
    assert_eq!(a["status"], "application_error");
    assert_eq!(a["error"]["type"], "StepFailed");

    // A step timeout shorter than the function's.
    compose_ok(
        &s,
        "impatient",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "nap", "function": "slow", "input": {"sleep": 3}, "timeout_ms": 300, "retries": 1, "retry_delay_ms": 10}
        ]}}),
    );
    let started = Instant::now();
    let r = s.invoke("impatient", "{}");
    assert_ne!(r.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert!(r.text().contains("timeout_ms (300)"), "{}", r.text());
    let out = ok(&s.cli(&[
        "execution",
        "get",
        r.header("x-ignis-activation-id").unwrap(),
    ]));
    assert!(out.contains("nap (slow) failed"), "{out}");
    assert!(out.contains("after 2 attempts"), "{out}");
}

/// A counter of HTTP requests by path, on a port of the loopback: the side effect by which the
/// steps of the restart test say that they ran.
fn counter() -> (u16, Arc<Mutex<HashMap<String, u32>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let c = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split(' ').nth(1).unwrap_or("").trim_start_matches('/');
            eprintln!("mark {path} at {:?}", std::time::SystemTime::now());
            *c.lock().unwrap().entry(path.to_string()).or_insert(0) += 1;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (port, counts)
}

const MARK: &str = r#"
import os, time, urllib.request
def handler(event, context):
    time.sleep(event.get('sleep', 0))
    url = 'http://127.0.0.1:%s/%s' % (os.environ['PORT'], event['mark'])
    urllib.request.urlopen(url, timeout=10).read()
    return {'marked': event['mark']}
"#;

#[test]
fn a_workflow_killed_mid_way_resumes_after_restart_without_rerunning_ended_steps() {
    let (port, counts) = counter();
    let mut s = Server::start();
    let query =
        format!("runtime=python&handler=mark.handler&network=host&max_instances=4&env=PORT={port}");
    deploy_ok(&s, "mark", &query, "mark.py", MARK);
    // Each step marks its own path once it has slept; a step killed asleep marks nothing.
    compose_ok(
        &s,
        "durable",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "first", "function": "mark", "input": {"mark": "first"}},
            {"name": "items", "function": "mark", "map": ["item0", "item1", "item2", "item3"],
             "parallelism": 2, "input": {"mark": "$.item", "sleep": 1.5}},
            {"name": "last", "function": "mark", "input": {"mark": "last"}}
        ]}}),
    );
    let id = invoke_async(&s, "durable", b"{}");
    // Kill once two items marked (in any order): the other two are then asleep, mid-step.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = {
            let c = counts.lock().unwrap();
            c.keys().filter(|k| k.starts_with("item")).count() >= 2
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "items never ran: {:?}",
            counts.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    eprintln!("kill at {:?}", std::time::SystemTime::now());
    let tmp = s.take_dir().unwrap();
    s.kill();
    assert_eq!(counts.lock().unwrap().get("last"), None, "killed too late");

    let s = Server::launch(tmp.path(), &[]);
    let e = wait_execution(&s, &id, 60);
    assert_eq!(e["status"], "succeeded", "{e}");
    assert_eq!(e["resumed"], 1, "{e}");
    let c = counts.lock().unwrap().clone();
    for mark in ["first", "item0", "item1", "item2", "item3", "last"] {
        assert_eq!(
            c.get(mark),
            Some(&1),
            "{mark} ran {:?} times: {c:?}",
            c.get(mark)
        );
    }
    // The workflow's own activation is written once it ends.
    let a = wait_activation(&s, &id, 20);
    assert_eq!(a["status"], "success");
    assert_eq!(a["function"], "durable");
}

/// The engine's overhead per step (its time beyond the functions' own, which it reports in the
/// last line of a workflow's activation logs) along a chain of 100 no-op steps, and the time of
/// a 1000-way map of no-op steps, for python and wasm no-ops. Numbers in docs/performance.md:
/// `cargo test --release -p ignis --test all compose::bench -- --ignored --nocapture`
#[test]
#[ignore = "a benchmark; run with --ignored --nocapture"]
fn bench_engine_overhead_per_step_and_a_thousand_way_map() {
    let s = Server::start();
    let noop_py = "def handler(event, context):\n    return event\n";
    deploy_ok(
        &s,
        "noop-python",
        "runtime=python&handler=noop.handler&max_instances=8&instance_concurrency=8",
        "noop.py",
        noop_py,
    );
    deploy_ok(
        &s,
        "noop-wasm",
        "runtime=wasm&max_instances=64",
        "noop.wat",
        "(module (memory (export \"memory\") 1) (func (export \"_start\")))",
    );
    let p = |v: &mut Vec<u64>, q: f64| {
        v.sort_unstable();
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    for runtime in ["python", "wasm"] {
        let f = format!("noop-{runtime}");
        let chain: Vec<Value> = (0..100)
            .map(|i| json!({"name": format!("s{i}"), "function": f}))
            .collect();
        compose_ok(
            &s,
            &format!("chain-{runtime}"),
            json!({"runtime": "workflow", "workflow": {"steps": chain}}),
        );
        compose_ok(
            &s,
            &format!("map-{runtime}"),
            json!({"runtime": "workflow", "workflow": {"steps": [
                {"name": "m", "function": f, "map": "$.input.items", "parallelism": 64}
            ]}}),
        );
        let (mut overhead, mut per_step) = (Vec::new(), Vec::new());
        for run in 0..21 {
            let started = Instant::now();
            let r = s.invoke(&format!("chain-{runtime}"), "{}");
            let wall = started.elapsed();
            assert_eq!(r.status, 200, "{}", r.text());
            if run == 0 {
                continue; // warm-up: instances start
            }
            per_step.push(wall.as_micros() as u64 / 100);
            let a = wait_activation(&s, r.header("x-ignis-activation-id").unwrap(), 10);
            let last = a["logs"].as_array().unwrap().last().unwrap()["line"]
                .as_str()
                .unwrap()
                .to_string();
            let us: u64 = last
                .strip_prefix("- engine overhead ")
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no overhead line: {last}"));
            overhead.push(us);
        }
        let items = json!({"items": (0..1000).collect::<Vec<_>>()}).to_string();
        let mut map_ms = Vec::new();
        for run in 0..6 {
            let started = Instant::now();
            let r = s.invoke(&format!("map-{runtime}"), &items);
            let wall = started.elapsed();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json().as_array().unwrap().len(), 1000);
            if run > 0 {
                map_ms.push(wall.as_millis() as u64);
            }
        }
        println!(
            "{runtime}: engine overhead per step p50 {} µs (p90 {}), chain of 100 steps {} µs per step p50 (engine + function), 1000-way map (parallelism 64) p50 {} ms (max {})",
            p(&mut overhead, 0.5),
            p(&mut overhead, 0.9),
            p(&mut per_step, 0.5),
            p(&mut map_ms, 0.5),
            p(&mut map_ms, 1.0),
        );
    }
}

#[test]
fn a_graceful_stop_starts_no_new_step_and_the_workflow_resumes_at_the_next_start() {
    let (port, counts) = counter();
    let mut s = Server::start();
    let query = format!("runtime=python&handler=mark.handler&network=host&env=PORT={port}");
    deploy_ok(&s, "mark", &query, "mark.py", MARK);
    compose_ok(
        &s,
        "two",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "a", "function": "mark", "input": {"mark": "a", "sleep": 1.5}},
            {"name": "b", "function": "mark", "input": {"mark": "b"}}
        ]}}),
    );
    let id = invoke_async(&s, "two", b"{}");
    // SIGTERM while a sleeps: the stop waits for a, then b does not start.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s
        .get(&format!("/v1/namespaces/default/executions/{id}"))
        .status
        != 200
    {
        assert!(Instant::now() < deadline, "the execution never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let tmp = s.take_dir().unwrap();
    let started = Instant::now();
    assert!(s.stop().success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    {
        let c = counts.lock().unwrap();
        assert_eq!(c.get("a"), Some(&1), "{c:?}");
        assert_eq!(c.get("b"), None, "{c:?}");
    }
    let s = Server::launch(tmp.path(), &[]);
    let e = wait_execution(&s, &id, 60);
    assert_eq!(e["status"], "succeeded", "{e}");
    let c = counts.lock().unwrap().clone();
    assert_eq!((c.get("a"), c.get("b")), (Some(&1), Some(&1)), "{c:?}");
}

#[test]
fn a_step_input_past_the_payload_limit_goes_through_the_object_store() {
    let s = Server::start();
    // Each of 40 map items returns 200 KB: the reduce step's input, their array, is 8 MB.
    deploy_ok(
        &s,
        "blob",
        "runtime=python&handler=blob.handler&max_instances=4",
        "blob.py",
        "def handler(event, context):\n    return {'i': event, 'data': 'x' * 200_000}\n",
    );
    deploy_ok(
        &s,
        "measure",
        "runtime=python&handler=measure.handler",
        "measure.py",
        "import ignis\ndef handler(event, context):\n    items = ignis.step_input(event)\n    return {'items': len(items), 'bytes': sum(len(x['data']) for x in items), 'spilled': 'ignis_input_ref' in event}\n",
    );
    deploy_ok(
        &s,
        "measure-js",
        "runtime=node&handler=measure.handler",
        "measure.js",
        "const ignis = require('ignis');\nexports.handler = async (event) => {\n  const items = await ignis.stepInput(event);\n  return { items: items.length, spilled: 'ignis_input_ref' in event };\n};\n",
    );
    compose_ok(
        &s,
        "big",
        json!({"runtime": "workflow", "workflow": {"steps": [
            {"name": "make", "function": "blob", "map": "$.input.items", "parallelism": 8},
            {"name": "measure", "function": "measure", "after": ["make"]},
            {"name": "measure-js", "function": "measure-js", "after": ["make"]},
        ], "output": {"py": "$.steps.measure", "js": "$.steps.measure-js"}}}),
    );
    let items: Vec<u32> = (0..40).collect();
    let r = s.invoke("big", &json!({ "items": items }).to_string());
    assert_eq!(r.status, 200, "{}", r.text());
    let out = r.json();
    assert_eq!(
        out["py"],
        json!({"items": 40, "bytes": 8_000_000, "spilled": true}),
        "{out}"
    );
    assert_eq!(out["js"], json!({"items": 40, "spilled": true}), "{out}");
    // The inputs are objects of the namespace's step-input bucket.
    let r = s.get("/v1/namespaces/default/buckets/ignis-step-inputs/objects");
    assert_eq!(r.status, 200, "{}", r.text());
    let objects = r.json()["objects"].as_array().unwrap().clone();
    assert_eq!(objects.len(), 2, "{objects:?}");
    assert!(
        objects
            .iter()
            .all(|o| o["size"].as_u64().unwrap() > 8_000_000)
    );
}
