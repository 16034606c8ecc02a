//! `nats` triggers on a JetStream stream, against a real `nats-server -js`: messages published
//! while Ignis is down are fired after it starts, and through `kill -9` and restarts every
//! message is fired exactly once (also when the NATS server delivers them all again).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use serde_json::{Value, json};

use crate::harness::*;
use crate::messaging::{free_port, nats_server_binary, results_of};

/// `nats-server`, or `None` (and a note of why the test skips) when it is not installed —
/// unless `IGNIS_REQUIRE_NATS=1` (or `IGNIS_REQUIRE_SANDBOX=1`) makes that a failure.
fn nats_server_or_skip() -> Option<PathBuf> {
    let bin = nats_server_binary();
    if bin.is_none() {
        let required = ["IGNIS_REQUIRE_NATS", "IGNIS_REQUIRE_SANDBOX"]
            .iter()
            .any(|v| std::env::var(v).as_deref() == Ok("1"));
        assert!(
            !required,
            "nats-server is not installed (apt-get install nats-server)"
        );
        eprintln!(
            "skipped: nats-server is not installed (IGNIS_REQUIRE_NATS=1 makes this a failure)"
        );
    }
    bin
}

/// A `nats-server -js` child on a free port with its store in a temporary directory; killed
/// (by its pid) when dropped.
struct JetStreamServer {
    bin: PathBuf,
    child: std::process::Child,
    port: u16,
    store: tempfile::TempDir,
}

impl JetStreamServer {
    fn start(bin: &Path) -> JetStreamServer {
        let store = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Self::spawn(bin, port, store.path());
        JetStreamServer {
            bin: bin.to_path_buf(),
            child,
            port,
            store,
        }
    }

    fn spawn(bin: &Path, port: u16, store: &Path) -> std::process::Child {
        let child = std::process::Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    }

    /// Stops the server and starts it again on the same port and store.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.bin, self.port, self.store.path());
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for JetStreamServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A JetStream context on `url`, with a stream `name` of `subjects` made in it.
async fn with_stream(url: &str, name: &str, subjects: &str) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    js.create_stream(jetstream::stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

/// Publishes `{"n": n}` to `subject` and waits for the stream to store it.
async fn publish(js: &jetstream::Context, subject: &str, n: i64) {
    js.publish(subject.to_string(), json!({ "n": n }).to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// `(pending, ack pending, acknowledged up to)` of a consumer, or `None` if it does not exist.
async fn consumer_state(
    js: &jetstream::Context,
    stream: &str,
    consumer: &str,
) -> Option<(u64, usize, u64)> {
    let stream = js.get_stream(stream).await.unwrap();
    let info = stream.consumer_info(consumer).await.ok()?;
    Some((
        info.num_pending,
        info.num_ack_pending,
        info.ack_floor.stream_sequence,
    ))
}

/// Waits until no pull request waits on a consumer: a stopped server's last one expires (the
/// NATS server would hand it what comes meanwhile, to be delivered again after the ack wait).
async fn wait_no_pull(js: &jetstream::Context, stream: &str, consumer: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stream = js.get_stream(stream).await.unwrap();
        let waiting = stream.consumer_info(consumer).await.unwrap().num_waiting;
        if waiting == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{waiting} pull requests wait on {consumer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a consumer has handed out and seen acknowledged every message up to `seq`.
async fn wait_all_acked(js: &jetstream::Context, stream: &str, consumer: &str, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let state = consumer_state(js, stream, consumer).await;
        if state == Some((0, 0, seq)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "consumer {consumer}: (pending, ack pending, ack floor) = {state:?}, want up to {seq} acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The activations (summaries) of `function` caused by `trigger`, through all pages.
fn activations_by(s: &Server, function: &str, trigger: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!(
            "/v1/namespaces/default/activations?function={function}&trigger={trigger}&limit=200"
        );
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = s.get(&url).json();
        all.extend(page["activations"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

/// Once `want` activations of `function` caused by `trigger` have succeeded: how many times
/// each `n` of the messages reached the function.
fn wait_seen(s: &Server, function: &str, trigger: &str, want: usize) -> BTreeMap<i64, usize> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let acts = activations_by(s, function, trigger);
        let done = acts.iter().filter(|a| a["status"] == "success").count();
        if done >= want {
            let mut seen = BTreeMap::new();
            for a in results_of(s, "default", function) {
                if a["trigger"] != trigger {
                    continue;
                }
                let n = a["result"]["n"].as_i64().unwrap_or_else(|| panic!("{a}"));
                *seen.entry(n).or_insert(0) += 1;
            }
            return seen;
        }
        if Instant::now() > deadline {
            let failed: Vec<&Value> = acts.iter().filter(|a| a["status"] != "success").collect();
            panic!(
                "{done} of {want} messages reached {function} through {trigger} ({} firings); not successful: {failed:?}; dead letters: {}",
                firings(s, trigger),
                s.get("/v1/namespaces/default/dlq").text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The number of firings of a trigger (at most 1000).
fn firings(s: &Server, trigger: &str) -> usize {
    let r = s.get(&format!(
        "/v1/namespaces/default/triggers/{trigger}/firings?limit=1000"
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["firings"].as_array().unwrap().len()
}

fn put_json(s: &Server, path: &str, body: &Value) -> Resp {
    s.request(
        "PUT",
        &format!("/v1/namespaces/default{path}"),
        Some("application/json"),
        body.to_string().as_bytes(),
    )
}

#[test]
fn jetstream_trigger_specs_are_checked() {
    let s = Server::start();
    let url = "nats://127.0.0.1:4222";
    for (nats, field) in [
        (
            json!({"url": url, "subject": "a", "stream": ""}),
            "nats.stream",
        ),
        (
            json!({"url": url, "subject": "a", "stream": "OR.DERS"}),
            "nats.stream",
        ),
        (
            json!({"url": url, "subject": "a", "stream": "ORDERS", "consumer": "a>b"}),
            "nats.consumer",
        ),
        (
            json!({"url": url, "subject": "a", "stream": "ORDERS", "queue_group": "g"}),
            "nats.queue_group",
        ),
        (
            json!({"url": url, "subject": "a", "consumer": "c"}),
            "nats.consumer",
        ),
        (
            json!({"url": url, "subject": "a", "deliver": "all"}),
            "nats.deliver",
        ),
    ] {
        let r = put_json(&s, "/triggers/t", &json!({ "nats": nats }));
        assert_eq!(r.status, 400, "{nats}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_spec", "{}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{nats}: {}", r.text());
    }
    let r = put_json(
        &s,
        "/triggers/t",
        &json!({"nats": {"url": url, "subject": "a", "stream": "ORDERS", "deliver": "sometimes"}}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), "bad_request");
    // A good one names its consumer; the CLI makes the same.
    let r = put_json(
        &s,
        "/triggers/t",
        &json!({"nats": {"url": url, "subject": "orders.>", "stream": "ORDERS"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let consumer = r.json()["nats"]["consumer"].as_str().unwrap().to_string();
    assert!(consumer.starts_with("ignis-default-t-"), "{consumer}");
    ok(&s.cli(&[
        "trigger",
        "create",
        "from-cli",
        "--nats-url",
        url,
        "--nats-subject",
        "orders.>",
        "--stream",
        "ORDERS",
        "--consumer",
        "mine",
        "--deliver",
        "all",
    ]));
    let t = s.get("/v1/namespaces/default/triggers/from-cli").json();
    assert_eq!(
        t["nats"],
        json!({"url": url, "subject": "orders.>", "stream": "ORDERS", "consumer": "mine", "deliver": "all"})
    );
    let out = ok(&s.cli(&["trigger", "list"]));
    assert!(
        out.contains("orders.> at nats://127.0.0.1:4222 (stream ORDERS, consumer mine)"),
        "{out}"
    );
    let refused = s.cli(&[
        "trigger",
        "create",
        "x",
        "--nats-url",
        url,
        "--nats-subject",
        "a",
        "--stream",
        "ORDERS",
        "--queue-group",
        "g",
    ]);
    assert!(!refused.status.success());
}

#[test]
fn a_jetstream_trigger_fires_what_was_published_while_ignis_was_down() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let mut nats = JetStreamServer::start(&bin);
    let rt = runtime();
    let js = rt.block_on(with_stream(&nats.url(), "ORDERS", "orders.>"));
    // Stored before any trigger exists: only a consumer that starts at the first message
    // (`deliver: all`) sees them.
    rt.block_on(async {
        publish(&js, "orders.old", -2).await;
        publish(&js, "orders.old", -1).await;
    });
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    let echo = "def handler(e, c):\n    return {'n': e['data']['n'], 'event': e}\n";
    assert_eq!(
        s.deploy_file("echo", "runtime=python&handler=app.handler", "app.py", echo)
            .status,
        201
    );
    let r = put_json(
        &s,
        "/triggers/orders",
        &json!({"nats": {"url": nats.url(), "subject": "orders.>", "stream": "ORDERS"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["kind"], "nats");
    let own = r.json()["nats"]["consumer"].as_str().unwrap().to_string();
    let r = put_json(
        &s,
        "/triggers/backlog",
        &json!({"nats": {"url": nats.url(), "subject": "orders.>", "stream": "ORDERS",
                         "consumer": "backlog", "deliver": "all"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for (rule, trigger) in [("r1", "orders"), ("r2", "backlog")] {
        let r = put_json(
            &s,
            &format!("/rules/{rule}"),
            &json!({"trigger": trigger, "function": "echo"}),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    rt.block_on(publish(&js, "orders.new", 0));
    let seen = wait_seen(&s, "echo", "orders", 1);
    assert_eq!(seen, BTreeMap::from([(0, 1)]));
    rt.block_on(wait_all_acked(&js, "ORDERS", &own, 3));
    rt.block_on(wait_all_acked(&js, "ORDERS", "backlog", 3));

    // Ignis stops; messages keep coming into the stream.
    s.stop();
    rt.block_on(async {
        wait_no_pull(&js, "ORDERS", &own).await;
        wait_no_pull(&js, "ORDERS", "backlog").await;
        for n in 1..=20 {
            publish(&js, &format!("orders.n{}", n % 3), n).await;
        }
    });
    assert_eq!(
        rt.block_on(consumer_state(&js, "ORDERS", &own)),
        Some((20, 0, 3)),
        "the messages wait in the stream"
    );
    let s = Server::launch(tmp.path(), &[]);
    let seen = wait_seen(&s, "echo", "orders", 21);
    assert_eq!(seen, (0..=20).map(|n| (n, 1)).collect(), "each once");
    let seen = wait_seen(&s, "echo", "backlog", 23);
    assert_eq!(seen, (-2..=20).map(|n| (n, 1)).collect(), "each once");
    // The backlog waited for its rule: no firing without one.
    assert_eq!(firings(&s, "backlog"), 23);
    rt.block_on(wait_all_acked(&js, "ORDERS", &own, 23));
    rt.block_on(wait_all_acked(&js, "ORDERS", "backlog", 23));

    // The event: the message's subject and data, the stream and sequence; no reply subject
    // (a JetStream message's is its acknowledgement).
    let acts = results_of(&s, "default", "echo");
    let first = acts
        .iter()
        .find(|a| a["trigger"] == "orders" && a["result"]["n"] == 0)
        .unwrap();
    let event = &first["result"]["event"];
    assert_eq!(event["subject"], "orders.new", "{event}");
    assert_eq!(event["data"], json!({"n": 0}));
    assert_eq!(event["stream"], "ORDERS");
    assert_eq!(event["stream_seq"], 3);
    assert!(event["published_ms"].as_u64().unwrap() > 0, "{event}");
    assert!(event.get("reply").is_none(), "{event}");

    // The NATS server restarts: the triggers read on.
    nats.restart();
    let js = rt.block_on(async {
        let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        publish(&js, "orders.after", 21).await;
        js
    });
    let seen = wait_seen(&s, "echo", "orders", 22);
    assert_eq!(seen, (0..=21).map(|n| (n, 1)).collect(), "each once");
    rt.block_on(wait_all_acked(&js, "ORDERS", &own, 24));
    assert_eq!(firings(&s, "orders"), 22);

    // A changed subject: Ignis makes its consumer again, for the new subject, from the change.
    let r = put_json(
        &s,
        "/triggers/orders",
        &json!({"nats": {"url": nats.url(), "subject": "orders.only", "stream": "ORDERS"}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["nats"]["consumer"], own.as_str(), "the same name");
    rt.block_on(async {
        // The subscription changes within moments of the PUT: until then the old one reads.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let stream = js.get_stream("ORDERS").await.unwrap();
            let filter = stream
                .consumer_info(&own)
                .await
                .map(|i| i.config.filter_subject)
                .unwrap_or_default();
            if filter == "orders.only" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "consumer {own} filters {filter:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        publish(&js, "orders.other", 22).await;
        publish(&js, "orders.only", 23).await;
    });
    let seen = wait_seen(&s, "echo", "orders", 23);
    assert_eq!(
        seen,
        (0..=21).chain([23]).map(|n| (n, 1)).collect(),
        "only the new subject"
    );
    rt.block_on(wait_all_acked(&js, "ORDERS", &own, 26));

    // Without an enabled rule, messages wait in the stream instead of firing.
    let disable = s.request("POST", "/v1/namespaces/default/rules/r1/disable", None, b"");
    assert_eq!(disable.status, 200, "{}", disable.text());
    rt.block_on(async {
        // Let the trigger see its rule go before publishing.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        publish(&js, "orders.only", 24).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    assert_eq!(firings(&s, "orders"), 23, "fired without an enabled rule");
    let enable = s.request("POST", "/v1/namespaces/default/rules/r1/enable", None, b"");
    assert_eq!(enable.status, 200, "{}", enable.text());
    let seen = wait_seen(&s, "echo", "orders", 24);
    assert_eq!(seen.get(&24), Some(&1), "{seen:?}");
    rt.block_on(wait_all_acked(&js, "ORDERS", &own, 27));

    let out = ok(&s.cli(&["trigger", "get", "orders"]));
    assert!(
        out.contains(&format!("(stream ORDERS, consumer {own})")),
        "{out}"
    );

    // Deleting the triggers deletes the consumer Ignis named, not the one the trigger named.
    for t in ["orders", "backlog"] {
        let r = s.request(
            "DELETE",
            &format!("/v1/namespaces/default/triggers/{t}"),
            None,
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while consumer_state(&js, "ORDERS", &own).await.is_some() {
            assert!(Instant::now() < deadline, "consumer {own} is still there");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(consumer_state(&js, "ORDERS", "backlog").await.is_some());
    });
}

#[test]
fn a_jetstream_trigger_fires_each_message_once_through_kill_9() {
    let Some(bin) = nats_server_or_skip() else {
        return;
    };
    let n: i64 = std::env::var("IGNIS_NATS_CRASH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    assert!((1..=1000).contains(&n), "IGNIS_NATS_CRASH_N is 1 to 1000");
    let nats = JetStreamServer::start(&bin);
    let rt = runtime();
    let js = rt.block_on(with_stream(&nats.url(), "ORDERS", "orders.>"));
    // The consumer is the test's (a user's): a short ack wait, so that what the killed
    // server had received comes again soon.
    let consumer = jetstream::consumer::pull::Config {
        durable_name: Some("crash".into()),
        filter_subject: "orders.>".into(),
        ack_wait: Duration::from_secs(2),
        ..Default::default()
    };
    rt.block_on(async {
        js.get_stream("ORDERS")
            .await
            .unwrap()
            .create_consumer(consumer.clone())
            .await
            .unwrap();
    });
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    let code = "def handler(e, c):\n    return {'n': e['data']['n']}\n";
    assert_eq!(
        s.deploy_file(
            "count",
            "runtime=python&handler=app.handler",
            "app.py",
            code
        )
        .status,
        201
    );
    let r = put_json(
        &s,
        "/triggers/orders",
        &json!({"nats": {"url": nats.url(), "subject": "orders.>", "stream": "ORDERS", "consumer": "crash"}}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = put_json(
        &s,
        "/rules/count",
        &json!({"trigger": "orders", "function": "count"}),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // A publisher of its own, while the server is killed twice.
    let url = nats.url();
    let publisher = std::thread::spawn(move || {
        runtime().block_on(async {
            let js = jetstream::new(async_nats::connect(url).await.unwrap());
            for i in 1..=n {
                publish(&js, "orders.new", i).await;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    });
    for (round, at) in [n / 4, n / 2].into_iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(60);
        while (firings(&s, "orders") as i64) < at {
            assert!(Instant::now() < deadline, "round {round}: no firings");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pending = rt.block_on(consumer_state(&js, "ORDERS", "crash"));
        s.kill();
        eprintln!(
            "round {round}: killed with {at}+ of {n} fired; (pending, ack pending, ack floor) {pending:?}"
        );
        s = Server::launch(tmp.path(), &[]);
    }
    publisher.join().unwrap();
    rt.block_on(wait_all_acked(&js, "ORDERS", "crash", n as u64));
    let seen = wait_seen(&s, "count", "orders", n as usize);
    let twice: Vec<_> = seen.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "fired more than once: {twice:?}");
    assert_eq!(seen.len() as i64, n, "every message fired");
    assert_eq!(firings(&s, "orders") as i64, n);

    // The NATS server delivers every message again (the consumer made again from the first
    // message): none fires again.
    rt.block_on(async {
        let stream = js.get_stream("ORDERS").await.unwrap();
        stream.delete_consumer("crash").await.unwrap();
        stream.create_consumer(consumer).await.unwrap();
        wait_all_acked(&js, "ORDERS", "crash", n as u64).await;
    });
    assert_eq!(firings(&s, "orders") as i64, n, "a redelivery fired again");
    let seen = wait_seen(&s, "count", "orders", n as usize);
    assert!(seen.values().all(|c| *c == 1), "{seen:?}");
}
