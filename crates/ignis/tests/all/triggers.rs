//! Triggers, rules and cron schedules.

use crate::harness::*;
use std::time::{Duration, Instant};

fn put(s: &Server, path: &str, body: &str) -> Resp {
    s.request(
        "PUT",
        &format!("/v1/namespaces/default{path}"),
        Some("application/json"),
        body.as_bytes(),
    )
}

fn post(s: &Server, path: &str, body: &str) -> Resp {
    s.request(
        "POST",
        &format!("/v1/namespaces/default{path}"),
        Some("application/json"),
        body.as_bytes(),
    )
}

fn wait_success(s: &Server, id: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = s.get(&format!("/v1/namespaces/default/activations/{id}"));
        if r.status == 200 && r.json()["status"] == "success" {
            return r.json();
        }
        assert!(Instant::now() < deadline, "activation {id} did not succeed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn firing_a_trigger_invokes_every_enabled_rule() {
    let s = Server::start();
    let code = "def handler(e, c):\n    return {'who': c.function_name, 'order': e.get('order')}\n";
    for f in ["billing", "shipping"] {
        assert_eq!(
            s.deploy_file(f, "runtime=python&handler=app.handler", "app.py", code)
                .status,
            201
        );
    }
    assert_eq!(put(&s, "/triggers/order-placed", "{}").status, 201);
    assert_eq!(
        put(
            &s,
            "/rules/bill",
            r#"{"trigger":"order-placed","function":"billing"}"#
        )
        .status,
        201
    );
    assert_eq!(
        put(
            &s,
            "/rules/ship",
            r#"{"trigger":"order-placed","function":"shipping"}"#
        )
        .status,
        201
    );
    let r = post(&s, "/triggers/order-placed/fire", r#"{"order": 7}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let firing = r.json();
    let acts = firing["activations"].as_array().unwrap();
    assert_eq!(acts.len(), 2);
    for a in acts {
        let done = wait_success(&s, a["activation_id"].as_str().unwrap());
        assert_eq!(done["trigger"], "order-placed");
        assert_eq!(done["result"]["order"], 7);
        assert_eq!(done["result"]["who"], a["function"]);
    }
    // A disabled rule does not invoke.
    assert_eq!(post(&s, "/rules/ship/disable", "").json()["enabled"], false);
    let r = ok(&s.cli(&["trigger", "fire", "order-placed", "-d", r#"{"order": 8}"#]));
    assert!(r.contains("billing") && !r.contains("shipping"), "{r}");
    let firings = s
        .get("/v1/namespaces/default/triggers/order-placed/firings")
        .json();
    assert_eq!(firings["firings"].as_array().unwrap().len(), 2);
    assert_eq!(
        firings["firings"][0]["activations"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Activations can be listed by the trigger that caused them.
    std::thread::sleep(Duration::from_millis(500));
    let caused = s
        .get("/v1/namespaces/default/activations?trigger=order-placed")
        .json();
    assert_eq!(caused["activations"].as_array().unwrap().len(), 3);
    let out = ok(&s.cli(&["activations", "list", "--trigger", "order-placed"]));
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(ok(&s.cli(&["rule", "list"])).contains("order-placed"));
    // Deleting the trigger deletes its rules.
    ok(&s.cli(&["trigger", "delete", "order-placed"]));
    assert_eq!(
        s.get("/v1/namespaces/default/rules").json()["rules"],
        serde_json::json!([])
    );
    assert_eq!(post(&s, "/triggers/order-placed/fire", "{}").status, 404);
    // A new trigger of the same name starts with no history.
    assert_eq!(put(&s, "/triggers/order-placed", "{}").status, 201);
    let firings = s
        .get("/v1/namespaces/default/triggers/order-placed/firings")
        .json();
    assert_eq!(firings["firings"], serde_json::json!([]));
}

#[test]
fn trigger_and_rule_errors() {
    let s = Server::start();
    let code = "def handler(e, c):\n    return 1\n";
    assert_eq!(
        s.deploy_file("f", "runtime=python&handler=app.handler", "app.py", code)
            .status,
        201
    );
    let r = put(
        &s,
        "/triggers/t",
        r#"{"kind":"cron","schedule":"61 * * * *"}"#,
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "schedule");
    let r = put(&s, "/triggers/t", r#"{"kind":"cron","schedule":"* * *"}"#);
    assert!(r.text().contains("5 fields"), "{}", r.text());
    let r = put(
        &s,
        "/triggers/t",
        r#"{"kind":"cron","schedule":"* * * * *","timezone":"Mars/Base"}"#,
    );
    assert_eq!(r.json()["error"]["field"], "timezone");
    let r = put(
        &s,
        "/triggers/t",
        r#"{"kind":"plain","schedule":"* * * * *"}"#,
    );
    assert_eq!(r.status, 400);
    let r = put(&s, "/triggers/t", r#"{"kind":"sometimes"}"#);
    assert_eq!(r.status, 400);
    assert_eq!(put(&s, "/triggers/t", "{}").status, 201);
    assert_eq!(
        s.request(
            "PUT",
            "/v1/namespaces/default/triggers/t?overwrite=false",
            Some("application/json"),
            b"{}"
        )
        .status,
        409
    );
    assert_eq!(
        put(&s, "/rules/r", r#"{"trigger":"t","function":"missing"}"#).status,
        404
    );
    assert_eq!(
        put(&s, "/rules/r", r#"{"trigger":"missing","function":"f"}"#).status,
        404
    );
    assert_eq!(put(&s, "/rules/r", r#"{"trigger":"t"}"#).status, 400);
    assert_eq!(post(&s, "/triggers/t/fire", "{oops").status, 400);
    assert_eq!(s.get("/v1/namespaces/default/triggers/nope").status, 404);
    assert_eq!(
        s.request("DELETE", "/v1/namespaces/default/rules/nope", None, b"")
            .status,
        404
    );
}

#[test]
fn a_cron_trigger_fires_on_time_and_never_twice() {
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    let code = "def handler(e, c):\n    return e\n";
    assert_eq!(
        s.deploy_file("tick", "runtime=python&handler=app.handler", "app.py", code)
            .status,
        201
    );
    let r = put(
        &s,
        "/triggers/every-second",
        r#"{"kind":"cron","schedule":"* * * * * *","payload":{"beat":true}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        put(
            &s,
            "/rules/beat",
            r#"{"trigger":"every-second","function":"tick"}"#
        )
        .status,
        201
    );
    std::thread::sleep(Duration::from_secs(10));
    let times = scheduled_times(&s, "every-second");
    assert!(
        (9..=11).contains(&times.len()),
        "{} firings in 10 s: {times:?}",
        times.len()
    );
    assert!(
        times.windows(2).all(|w| w[1] - w[0] == 1000),
        "one per second: {times:?}"
    );
    let a = s
        .get("/v1/namespaces/default/activations?trigger=every-second&limit=200")
        .json();
    let acts = a["activations"].as_array().unwrap();
    assert!(
        acts.len() >= times.len() - 1,
        "{} activations for {} firings",
        acts.len(),
        times.len()
    );
    // Down for 3 s, then back: the missed seconds are skipped, none fires twice.
    s.kill();
    std::thread::sleep(Duration::from_secs(3));
    s = Server::launch(tmp.path(), &[]);
    std::thread::sleep(Duration::from_secs(3));
    let after = scheduled_times(&s, "every-second");
    let mut dedup = after.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), after.len(), "a time fired twice: {after:?}");
    let new = after.len() - times.len();
    assert!(
        (2..=5).contains(&new),
        "{new} firings in 3 s after restart (no burst): {after:?}"
    );
}
