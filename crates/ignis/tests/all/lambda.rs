//! AWS Lambda compatibility, end to end: the `lambda` runtime's Runtime API served to
//! bootstraps nobody here wrote (Python `awslambdaric`, a Rust function built with the
//! `lambda_runtime` crate) and to a bash one, in sandboxes without network; and the
//! `/2015-03-31/functions` API driven by `boto3` with credentials from `ignis key show --aws`.
//!
//! Tests needing what a host may lack (boto3 and awslambdaric from PyPI, cargo and the crate registry
//! for the Rust function) skip with a message, and fail instead with IGNIS_REQUIRE_SANDBOX=1,
//! as in CI, whose `.ci/run` installs them.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A bootstrap in bash speaking the Runtime API over /dev/tcp: the `request` function of the
/// echo bootstrap Ignis ships, then a loop whose behaviour depends on `$MODE` (init) and on the
/// event.
fn bash_runtime() -> String {
    let echo = std::str::from_utf8(ignis_runtime::bootstrap::LAMBDA_ECHO).unwrap();
    let (prelude, _) = echo
        .split_once("# The loop")
        .expect("echo.sh marks its loop");
    format!("{prelude}{BASH_LOOP}")
}

const BASH_LOOP: &str = r#"
case "$MODE" in
  init_error)
    echo "cannot start: no config" >&2
    request POST /2018-06-01/runtime/init/error '{"errorMessage":"no config","errorType":"Config.Missing"}' \
      'Lambda-Runtime-Function-Error-Type: Config.Missing'
    sleep 5; exit 0 ;;
  exit) echo "dying before next" >&2; exit 3 ;;
esac
echo "init done"
while true; do
  request GET $inv/next
  [ "$status" = 200 ] || exit 1
  case "$body" in
    *'"error"'*)
      request POST "$inv/$id/error" '{"errorMessage":"it broke","errorType":"Custom.Broken","stackTrace":["line one","line two"]}' \
        'Lambda-Runtime-Function-Error-Type: Custom.Broken' ;;
    *'"sleep"'*) sleep 30 ;;
    *'"exit"'*) echo "exiting mid-invocation" >&2; exit 7 ;;
    *'"bogus"'*)
      request POST "$inv/not-the-id/response" '"x"'
      echo "bogus id: $status $body" >&2
      request POST "$inv/$id/response" '"fine"' ;;
    *'"env"'*)
      request POST "$inv/$id/response" "{\"fn\":\"$AWS_LAMBDA_FUNCTION_NAME\",\"mem\":\"$AWS_LAMBDA_FUNCTION_MEMORY_SIZE\",\"ver\":\"$AWS_LAMBDA_FUNCTION_VERSION\",\"region\":\"$AWS_REGION\",\"handler\":\"$_HANDLER\",\"root\":\"$LAMBDA_TASK_ROOT\",\"api\":\"$AWS_LAMBDA_RUNTIME_API\",\"group\":\"$AWS_LAMBDA_LOG_GROUP_NAME\",\"arn\":\"$arn\",\"deadline\":\"$deadline\",\"trace\":\"$trace\",\"rid\":\"$id\"}" ;;
    *)
      echo "to stdout: $body"
      echo "to stderr" >&2
      request POST "$inv/$id/response" "$body" ;;
  esac
done
"#;

/// Deploys `files` (with an executable `bootstrap`) as a `lambda` function through the CLI.
fn deploy_lambda(s: &Server, name: &str, files: &[(&str, &str)], extra: &[&str]) {
    let dir = code_dir(files);
    let mut args = vec![
        "fn",
        "deploy",
        name,
        dir.path().to_str().unwrap(),
        "--runtime",
        "provided.al2023",
        "--handler",
        "app.handler",
        "--timeout",
        "5s",
    ];
    args.extend_from_slice(extra);
    ok(&s.cli(&args));
}

fn invoke_json(s: &Server, name: &str, body: &str) -> (Resp, serde_json::Value) {
    let r = s.invoke(name, body);
    let v = serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null);
    (r, v)
}

/// Logs of an activation, joined.
fn logs_of(s: &Server, r: &Resp) -> String {
    let id = r.header("x-ignis-activation-id").expect("activation id");
    let a = s
        .get(&format!("/v1/namespaces/default/activations/{id}/logs"))
        .json();
    a["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The error of an activation, as recorded (with its phase).
fn recorded_error(s: &Server, r: &Resp) -> serde_json::Value {
    let id = r.header("x-ignis-activation-id").expect("activation id");
    s.get(&format!("/v1/namespaces/default/activations/{id}"))
        .json()["error"]
        .clone()
}

/// Whether a test needing `what` runs: true if `available`; otherwise skips, or fails under
/// IGNIS_REQUIRE_SANDBOX=1.
fn needs(available: bool, what: &str) -> bool {
    if available {
        return true;
    }
    if std::env::var_os("IGNIS_REQUIRE_SANDBOX").is_some() {
        panic!("IGNIS_REQUIRE_SANDBOX is set but {what} is not available (.ci/run installs it)");
    }
    eprintln!("skipped: {what} is not available");
    false
}

#[test]
fn runtime_api_serves_a_bootstrap_without_network() {
    let s = Server::start();
    let info = s.get("/v1/system/info").json();
    let own_netns = info["protections"]["network_isolation"] == true;
    let runtime = bash_runtime();
    let files = [("bootstrap", runtime.as_str())];
    deploy_lambda(&s, "bash-fn", &files, &[]);

    let (r, v) = invoke_json(&s, "bash-fn", r#"{"hello":"world"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(v, serde_json::json!({"hello": "world"}));
    assert_eq!(r.header("x-ignis-cold"), Some("true"));
    let logs = logs_of(&s, &r);
    assert!(logs.contains("init done"), "init output is logged: {logs}");
    assert!(logs.contains(r#"to stdout: {"hello":"world"}"#), "{logs}");
    assert!(logs.contains("to stderr"), "{logs}");

    // Warm: the same process answers the next `next`.
    let (r, v) = invoke_json(&s, "bash-fn", r#"{"n":2}"#);
    assert_eq!((r.status, v), (200, serde_json::json!({"n": 2})));
    assert_eq!(r.header("x-ignis-cold"), Some("false"));

    // The standard environment and the `next` headers.
    let (r, v) = invoke_json(&s, "bash-fn", r#"{"env":1}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(v["fn"], "bash-fn");
    assert_eq!(v["mem"], "256");
    assert_eq!(v["ver"], "1");
    assert_eq!(v["region"], "us-east-1");
    assert_eq!(v["handler"], "app.handler");
    assert_eq!(v["group"], "/aws/lambda/bash-fn");
    assert_eq!(v["rid"], r.header("x-ignis-activation-id").unwrap());
    assert!(
        v["arn"]
            .as_str()
            .unwrap()
            .starts_with("arn:aws:lambda:us-east-1:")
            && v["arn"].as_str().unwrap().ends_with(":function:bash-fn"),
        "{v}"
    );
    assert!(v["trace"].as_str().unwrap().starts_with("Root=1-"), "{v}");
    let deadline: u64 = v["deadline"].as_str().unwrap().parse().unwrap();
    let now = ignis_core::now_ms();
    assert!(
        deadline > now && deadline <= now + 5000,
        "deadline {deadline}, now {now}"
    );
    if own_netns {
        assert_eq!(
            v["api"], "127.0.0.1:9001",
            "Lambda's port, in its own namespace"
        );
        assert_eq!(v["root"], "/code");
    }

    // A handler error through /error.
    let (r, v) = invoke_json(&s, "bash-fn", r#"{"error":1}"#);
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(v["error"]["code"], "application_error");
    assert_eq!(v["error"]["type"], "Custom.Broken", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("it broke"));
    // The instance survives a handled error.
    let (r, _) = invoke_json(&s, "bash-fn", r#"{"after":"failure"}"#);
    assert_eq!((r.status, r.header("x-ignis-cold")), (200, Some("false")));

    // An answer for another request id is refused; the right one then goes through.
    let (r, v) = invoke_json(&s, "bash-fn", r#"{"bogus":1}"#);
    assert_eq!((r.status, v), (200, serde_json::json!("fine")));
    let logs = logs_of(&s, &r);
    assert!(
        logs.contains("bogus id: 400") && logs.contains("InvalidRequestID"),
        "{logs}"
    );

    // A timeout kills the instance; the next invocation starts a new one.
    let (r, v) = invoke_json(&s, "bash-fn", r#"{"sleep":1}"#);
    assert_eq!(r.status, 504, "{v}");
    let (r, _) = invoke_json(&s, "bash-fn", r#"{"after":"timeout"}"#);
    assert_eq!((r.status, r.header("x-ignis-cold")), (200, Some("true")));

    // A process that exits mid-invocation crashed.
    let (r, v) = invoke_json(&s, "bash-fn", r#"{"exit":1}"#);
    assert_eq!(r.status, 502, "{v}");
    assert_eq!(v["error"]["type"], "Runtime.ExitError", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("status 7"),
        "{v}"
    );
}

#[test]
fn runtime_api_init_errors_and_host_network() {
    let s = Server::start();
    let runtime = bash_runtime();
    let files = [("bootstrap", runtime.as_str())];
    // /init/error.
    deploy_lambda(&s, "init-error", &files, &["--env", "MODE=init_error"]);
    let (r, v) = invoke_json(&s, "init-error", "{}");
    assert_eq!(r.status, 502, "{v}");
    assert_eq!(v["error"]["type"], "Config.Missing", "{v}");
    assert_eq!(recorded_error(&s, &r)["phase"], "init", "{v}");
    assert!(logs_of(&s, &r).contains("cannot start: no config"));
    // Exiting before the first `next`.
    deploy_lambda(&s, "init-exit", &files, &["--env", "MODE=exit"]);
    let (r, v) = invoke_json(&s, "init-exit", "{}");
    assert_eq!(r.status, 502, "{v}");
    assert_eq!(v["error"]["type"], "Runtime.ExitError", "{v}");
    assert_eq!(recorded_error(&s, &r)["phase"], "init", "{v}");
    // No bootstrap in the code: refused at deploy.
    let dir = code_dir(&[("app.py", "x = 1\n")]);
    let out = s.cli(&[
        "fn",
        "deploy",
        "no-bootstrap",
        dir.path().to_str().unwrap(),
        "--runtime",
        "lambda",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bootstrap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // With the host's network the endpoint is a free port of the host's loopback.
    deploy_lambda(&s, "host-net", &files, &["--network", "host"]);
    let (r, v) = invoke_json(&s, "host-net", r#"{"env":1}"#);
    assert_eq!(r.status, 200, "{v}");
    let api = v["api"].as_str().unwrap();
    assert!(
        api.starts_with("127.0.0.1:") && api != "127.0.0.1:0",
        "{api}"
    );
    // The shipped echo bootstrap (what `ignis bench --runtime lambda` deploys).
    let echo = String::from_utf8(ignis_runtime::bootstrap::LAMBDA_ECHO.to_vec()).unwrap();
    deploy_lambda(&s, "echo", &[("bootstrap", &echo)], &[]);
    let (r, v) = invoke_json(&s, "echo", r#"{"ping":[1,2,3]}"#);
    assert_eq!((r.status, v), (200, serde_json::json!({"ping": [1, 2, 3]})));
}

/// The python the server runs functions with (its resolved interpreter).
fn server_python(s: &Server) -> PathBuf {
    let info = s.get("/v1/system/info").json();
    PathBuf::from(info["runtimes"]["python"].as_str().expect("python found"))
}

fn python_has(python: &Path, module: &str) -> bool {
    Command::new(python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn awslambdaric_runs_as_a_bootstrap() {
    let s = Server::start();
    let python = server_python(&s);
    if !needs(
        python_has(&python, "awslambdaric"),
        "the awslambdaric package (pip install awslambdaric)",
    ) {
        return;
    }
    // As AWS documents for a custom runtime built on awslambdaric: bootstrap runs the runtime
    // interface client with the handler.
    let bootstrap = format!(
        "#!/bin/sh\nexec {} -m awslambdaric \"$_HANDLER\"\n",
        python.display()
    );
    let app = r#"
import os
def handler(event, context):
    print("awslambdaric handler got", event)
    if event.get("fail"):
        raise ValueError("asked to fail")
    return {"echo": event, "request_id": context.aws_request_id,
            "arn": context.invoked_function_arn, "name": context.function_name,
            "memory": context.memory_limit_in_mb,
            "remaining_ms": context.get_remaining_time_in_millis()}
"#;
    deploy_lambda(
        &s,
        "ric",
        &[("bootstrap", &bootstrap), ("app.py", app)],
        &[],
    );
    let (r, v) = invoke_json(&s, "ric", r#"{"x":[1,"two"]}"#);
    assert_eq!(r.status, 200, "{v} {}", logs_of(&s, &r));
    assert_eq!(v["echo"], serde_json::json!({"x": [1, "two"]}));
    assert_eq!(v["request_id"], r.header("x-ignis-activation-id").unwrap());
    assert_eq!(v["name"], "ric");
    assert_eq!(v["memory"], "256");
    assert!(v["arn"].as_str().unwrap().ends_with(":function:ric"), "{v}");
    let remaining = v["remaining_ms"].as_i64().unwrap();
    assert!(remaining > 0 && remaining <= 5000, "{remaining}");
    assert!(logs_of(&s, &r).contains("awslambdaric handler got"));

    let (r, v) = invoke_json(&s, "ric", r#"{"fail":true}"#);
    assert_eq!(r.status, 502, "{v}");
    assert_eq!(v["error"]["type"], "ValueError", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("asked to fail")
    );
    let (r, _) = invoke_json(&s, "ric", "{}");
    assert_eq!((r.status, r.header("x-ignis-cold")), (200, Some("false")));

    // A handler that cannot be imported is an init error, reported by awslambdaric itself
    // through /init/error.
    deploy_lambda(
        &s,
        "ric-broken",
        &[
            ("bootstrap", &bootstrap),
            ("app.py", "import no_such_module\n"),
        ],
        &[],
    );
    let (r, v) = invoke_json(&s, "ric-broken", "{}");
    assert_eq!(r.status, 502, "{v}");
    assert_eq!(recorded_error(&s, &r)["phase"], "init", "{v}");
    assert!(
        v["error"]["type"]
            .as_str()
            .unwrap()
            .starts_with("Runtime.ImportModuleError"),
        "{v}"
    );
}

/// A `lambda` function (awslambdaric, so a handler nobody adapted) reaches its namespace's
/// data with plain HTTP to `$IGNIS_API_URL` and `$IGNIS_TOKEN` — with no network at all, through
/// the second listener of its network namespace, and with the host's — and nothing else: not
/// another namespace's data, not its own namespace's functions. The token dies with the
/// instance.
#[test]
fn a_lambda_function_reaches_its_namespace_s_data() {
    let s = Server::start();
    let python = server_python(&s);
    if !needs(
        python_has(&python, "awslambdaric"),
        "the awslambdaric package (pip install awslambdaric)",
    ) {
        return;
    }
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        201
    );
    let team_secret = "/v1/namespaces/team/kv/secret";
    assert_eq!(
        s.request("PUT", team_secret, Some("text/plain"), b"team's")
            .status,
        200
    );
    assert_eq!(
        s.request(
            "PUT",
            "/v1/namespaces/default/buckets/lambda-out",
            None,
            b""
        )
        .status,
        201
    );
    let bootstrap = format!(
        "#!/bin/sh\nexec {} -m awslambdaric \"$_HANDLER\"\n",
        python.display()
    );
    let app = r#"
import json, os, urllib.error, urllib.request

API = os.environ["IGNIS_API_URL"]
NS = "/v1/namespaces/" + os.environ["IGNIS_NAMESPACE"]

def call(method, path, body=b"", content_type="application/json"):
    req = urllib.request.Request(API + path, data=body, method=method, headers={
        "Authorization": "Bearer " + os.environ["IGNIS_TOKEN"], "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()

def handler(event, context):
    status, body = call("POST", NS + "/kv/lambda-hits", b'{"increment": 1}')
    assert status == 200, (status, body)
    n = json.loads(body)["value"]
    key = "%s-%d.txt" % (context.function_name, n)
    put = call("PUT", NS + "/buckets/lambda-out/objects/" + key, b"hit %d" % n, "text/plain")
    published = call("POST", NS + "/topics/lambda-hits", json.dumps({"n": n}).encode())
    return {"url": API, "token": os.environ["IGNIS_TOKEN"], "n": n, "key": key,
            "object": put[0], "publish": published[0],
            "other_kv": call("GET", "/v1/namespaces/team/kv/secret", None)[0],
            "other_put": call("PUT", "/v1/namespaces/team/kv/secret", b"mine now")[0],
            "other_buckets": call("GET", "/v1/namespaces/team/buckets", None)[0],
            "functions": call("GET", NS + "/functions", None)[0]}
"#;
    let mut hits = 0;
    for (name, network) in [("data", "none"), ("data-host", "host")] {
        deploy_lambda(
            &s,
            name,
            &[("bootstrap", &bootstrap), ("app.py", app)],
            &["--network", network],
        );
        let mut token = String::new();
        for _ in 0..2 {
            hits += 1;
            let (r, v) = invoke_json(&s, name, "{}");
            assert_eq!(r.status, 200, "{v} {}", logs_of(&s, &r));
            assert_eq!(v["n"], hits, "{v}");
            assert_eq!(
                (v["object"].as_i64(), v["publish"].as_i64()),
                (Some(200), Some(202)),
                "{v}"
            );
            for what in ["other_kv", "other_put", "other_buckets", "functions"] {
                assert_eq!(v[what], 403, "{name}: {what}: {v}");
            }
            if network == "none" {
                assert_eq!(
                    v["url"], "http://127.0.0.1:9400",
                    "the instance's own loopback"
                );
            } else {
                assert_eq!(v["url"], s.url, "the server itself");
            }
            let t = v["token"].as_str().unwrap();
            assert!(t.starts_with("ibt_"), "{t}");
            assert!(token.is_empty() || token == t, "one token per instance");
            token = t.to_string();
            let key = v["key"].as_str().unwrap();
            let r = s.get(&format!(
                "/v1/namespaces/default/buckets/lambda-out/objects/{key}"
            ));
            assert_eq!((r.status, r.text()), (200, format!("hit {hits}")));
        }
        // The token is the instance's: refused once the instance is gone.
        let bearer = format!("Bearer {token}");
        let probe = || {
            s.raw_request(
                "GET",
                "/v1/namespaces/default/kv/lambda-hits",
                &[("authorization", &bearer)],
                None,
                b"",
            )
            .status
        };
        assert_eq!(probe(), 200);
        let path = format!("/v1/namespaces/default/functions/{name}");
        assert_eq!(s.request("DELETE", &path, None, b"").status, 200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while probe() != 401 {
            assert!(
                std::time::Instant::now() < deadline,
                "the token outlived its instance"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert_eq!(s.get("/v1/namespaces/default/kv/lambda-hits").text(), "4");
    assert_eq!(s.get(team_secret).text(), "team's");
    let topics = s.get("/v1/namespaces/default/topics").json();
    assert!(topics.to_string().contains("lambda-hits"), "{topics}");
}

/// Builds the `lambda_runtime` function of tests/fixtures/rust-lambda; `None` if cargo or
/// the crate registry is not reachable.
fn rust_lambda_binary() -> Option<PathBuf> {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rust-lambda");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/fixtures");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["build", "--locked", "--quiet"])
        .current_dir(&fixture)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "building the lambda_runtime fixture failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(target.join("debug/bootstrap"))
}

#[test]
fn rust_lambda_runtime_function_runs() {
    let Some(binary) = rust_lambda_binary() else {
        needs(
            false,
            "cargo with the crate registry (to build the lambda_runtime fixture)",
        );
        return;
    };
    let s = Server::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&binary, dir.path().join("bootstrap")).unwrap();
    let out = s.cli(&[
        "fn",
        "deploy",
        "rust-fn",
        dir.path().join("bootstrap").to_str().unwrap(),
        "--runtime",
        "provided.al2023",
        "--handler",
        "bootstrap",
        "--memory",
        "128",
    ]);
    ok(&out);
    let (r, v) = invoke_json(&s, "rust-fn", r#"{"from":"ignis"}"#);
    assert_eq!(r.status, 200, "{v} {}", logs_of(&s, &r));
    assert_eq!(v["echo"], serde_json::json!({"from": "ignis"}));
    assert_eq!(v["request_id"], r.header("x-ignis-activation-id").unwrap());
    assert_eq!(v["function"], "rust-fn");
    assert_eq!(v["memory"], 128);
    assert!(v["arn"].as_str().unwrap().ends_with(":function:rust-fn"));
    assert!(logs_of(&s, &r).contains(r#"rust handler got {"from":"ignis"}"#));
    let (r, v) = invoke_json(&s, "rust-fn", r#"{"fail":1}"#);
    assert_eq!(r.status, 502, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the rust handler was asked to fail"),
        "{v}"
    );
    let (r, _) = invoke_json(&s, "rust-fn", "{}");
    assert_eq!((r.status, r.header("x-ignis-cold")), (200, Some("false")));
}

#[test]
fn boto3_drives_the_lambda_api() {
    let s = Server::start_with(&["--aws-region", "eu-west-3"]);
    let python = server_python(&s);
    if !needs(
        python_has(&python, "boto3"),
        "the boto3 package (pip install boto3)",
    ) {
        return;
    }
    // The credentials as a user gets them: from the CLI.
    let creds = ok(&s.cli(&["key", "show", "--aws", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&creds).unwrap();
    assert_eq!(v["region"], "eu-west-3");
    assert_eq!(v["endpoint_url"], s.url.as_str());
    assert_eq!(
        v["aws_access_key_id"].as_str().unwrap(),
        s.key.split_once(':').unwrap().0
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/boto3_lambda.py");
    let out = Command::new(&python)
        .arg(&script)
        .env("IGNIS_AWS", creds.trim())
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "boto3 script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    // The Event invocation ran, on the queue, under the request id the SDK was given.
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("event request id: "))
        .expect("the script printed the Event's request id")
        .trim();
    let path = format!("/v1/namespaces/default/activations/{id}");
    let mut a = s.get(&path);
    for _ in 0..200 {
        if a.status == 200 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        a = s.get(&path);
    }
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.json()["status"], "success", "{}", a.text());
}

/// Signs a request to the Lambda API as an SDK would, `skew_secs` off the current time.
fn signed(
    s: &Server,
    method: &str,
    path: &str,
    body: &[u8],
    skew_secs: i64,
) -> Vec<(String, String)> {
    signed_with(s, &s.key, method, path, body, skew_secs)
}

/// [`signed`] with another key (`id:secret`).
pub(crate) fn signed_with(
    s: &Server,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
    skew_secs: i64,
) -> Vec<(String, String)> {
    let now = (ignis_core::now_ms() / 1000) as i64 + skew_secs;
    let date = ignis_gateway::sigv4::amz_date(now as u64);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert("host", s.addr.parse().unwrap());
    headers.insert("x-amz-date", date.parse().unwrap());
    let (id, secret) = key.split_once(':').unwrap();
    let req = ignis_gateway::sigv4::Request {
        method,
        path: path.split('?').next().unwrap(),
        query: path.split_once('?').map_or("", |(_, q)| q),
        headers: &headers,
        body,
    };
    let auth = ignis_gateway::sigv4::authorization(&req, id, secret, "us-east-1", "lambda");
    vec![("x-amz-date".into(), date), ("authorization".into(), auth)]
}

pub(crate) fn lambda_call(
    s: &Server,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Resp {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    s.raw_request(method, path, &h, Some("application/json"), body)
}

#[test]
fn lambda_api_refuses_bad_requests_in_lambdas_shape() {
    let s = Server::start();
    let list = "/2015-03-31/functions/";
    // Unsigned, bearer, skewed, tampered.
    let r = lambda_call(&s, "GET", list, &[], b"");
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (403, Some("MissingAuthenticationTokenException"))
    );
    assert_eq!(r.json()["Type"], "User");
    let bearer = [("authorization".to_string(), format!("Bearer {}", s.key))];
    let r = lambda_call(&s, "GET", list, &bearer, b"");
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (400, Some("IncompleteSignatureException"))
    );
    let skewed = signed(&s, "GET", list, b"", -3600);
    let r = lambda_call(&s, "GET", list, &skewed, b"");
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (403, Some("InvalidSignatureException"))
    );
    assert!(
        r.json()["message"].as_str().unwrap().contains("expired"),
        "{}",
        r.text()
    );
    let good = signed(&s, "GET", list, b"", 0);
    let r = lambda_call(&s, "GET", list, &good, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["Functions"], serde_json::json!([]));
    // The same signature on another path does not verify.
    let other = "/2015-03-31/functions/x";
    let r = lambda_call(&s, "GET", other, &good, b"");
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (403, Some("InvalidSignatureException"))
    );
    // Signed, but wrong.
    let cases: [(&str, &str, &[u8], u16, &str); 6] = [
        ("GET", "/2015-03-31/functions/nope", b"", 404, "ResourceNotFoundException"),
        ("POST", "/2015-03-31/functions/nope/invocations", b"{}", 404, "ResourceNotFoundException"),
        ("POST", "/2015-03-31/functions", b"{not json", 400, "ValidationException"),
        ("POST", "/2015-03-31/functions", br#"{"FunctionName":"f","Runtime":"python3.12","Role":"r","Handler":"a.b","Code":{"S3Bucket":"b","S3Key":"k"}}"#, 400, "InvalidParameterValueException"),
        ("GET", "/2015-03-31/functions/f/aliases", b"", 400, "InvalidParameterValueException"),
        ("PATCH", "/2015-03-31/functions/f/frobnicate", b"", 404, "UnknownOperationException"),
    ];
    for (method, path, body, status, code) in cases {
        let h = signed(&s, method, path, body, 0);
        let r = lambda_call(&s, method, path, &h, body);
        assert_eq!(
            (r.status, r.header("x-amzn-errortype")),
            (status, Some(code)),
            "{method} {path}: {}",
            r.text()
        );
        assert!(r.json()["message"].is_string(), "{}", r.text());
    }
    // An event over 6 MiB.
    let big = vec![b' '; ignis_core::MAX_PAYLOAD_BYTES + 1];
    let path = "/2015-03-31/functions/nope/invocations";
    let h = signed(&s, "POST", path, &big, 0);
    let r = lambda_call(&s, "POST", path, &h, &big);
    assert_eq!(
        (r.status, r.header("x-amzn-errortype")),
        (413, Some("RequestTooLargeException"))
    );
}

#[test]
fn a_lambda_api_invocation_carries_the_gateways_request_id() {
    let s = Server::start();
    let r = s.deploy_file(
        "echo",
        "runtime=python&handler=app.handler&filename=app.py",
        "app.py",
        "def handler(event, context):\n    return {'id': context.aws_request_id}\n",
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let path = "/2015-03-31/functions/echo/invocations";
    for invocation_type in ["RequestResponse", "Event"] {
        let mut h = signed(&s, "POST", path, b"{}", 0);
        h.push(("x-amz-invocation-type".into(), invocation_type.into()));
        let r = lambda_call(&s, "POST", path, &h, b"{}");
        assert!(r.status == 200 || r.status == 202, "{}", r.text());
        let id = r.header("x-request-id").unwrap().to_string();
        assert_eq!(
            r.header("x-amzn-requestid"),
            Some(id.as_str()),
            "{invocation_type}"
        );
        let a = wait_activation(&s, &id, 30);
        assert_eq!(a["result"]["id"], id.as_str(), "{a}");
    }
}
