//! Messaging: topics (publish, list), topic triggers (batches, rules, retries and dead letters,
//! durability across `kill -9`) and `nats` triggers against a real `nats-server`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::*;

fn put(s: &Server, path: &str, body: &str) -> Resp {
    s.request(
        "PUT",
        &format!("/v1/namespaces/default{path}"),
        Some("application/json"),
        body.as_bytes(),
    )
}

fn publish(s: &Server, topic: &str, content_type: &str, body: &[u8]) -> Resp {
    s.request(
        "POST",
        &format!("/v1/namespaces/default/topics/{topic}"),
        Some(content_type),
        body,
    )
}

/// Every activation of a function in `ns`, with its result, through all pages.
pub(crate) fn results_of(s: &Server, ns: &str, name: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("/v1/namespaces/{ns}/activations?function={name}&limit=200");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = s.get(&url).json();
        for a in page["activations"].as_array().unwrap() {
            let id = a["id"].as_str().unwrap();
            all.push(
                s.get(&format!("/v1/namespaces/{ns}/activations/{id}"))
                    .json(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return all,
        }
    }
}

/// The message ids the successful activations of `name` returned (`{"ids": [...]}`), each
/// with how many times it was seen.
fn ids_seen(s: &Server, name: &str) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for a in results_of(s, "default", name) {
        if a["status"] != "success" {
            continue;
        }
        for id in a["result"]["ids"].as_array().into_iter().flatten() {
            *seen.entry(id.as_str().unwrap().to_string()).or_insert(0) += 1;
        }
    }
    seen
}

/// Waits until every id of `want` was seen by `name`; returns the sightings.
fn wait_all_seen(s: &Server, name: &str, want: &[String], secs: u64) -> HashMap<String, usize> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let seen = ids_seen(s, name);
        let missing = want.iter().filter(|id| !seen.contains_key(*id)).count();
        if missing == 0 {
            return seen;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} messages never reached {name}",
            want.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

const COLLECT: &str = "def handler(e, c):\n    return {'ids': [m['id'] for m in e['messages']], 'messages': e['messages'], 'topic': e['topic']}\n";

#[test]
fn published_messages_reach_topic_triggers_in_batches() {
    let s = Server::start();
    assert_eq!(
        s.deploy_file(
            "collect",
            "runtime=python&handler=app.handler",
            "app.py",
            COLLECT
        )
        .status,
        201
    );
    // A topic trigger is made without "kind" too: its topic says what it is.
    let r = put(
        &s,
        "/triggers/orders-in",
        r#"{"topic":"orders","batch_size":5,"batch_window_ms":2000}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["kind"], "topic");
    // No rule yet: messages wait for one.
    let r = publish(&s, "orders", "application/json", br#"{"i": 0}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["triggers"], 1);
    let mut ids = vec![r.json()["id"].as_str().unwrap().to_string()];
    std::thread::sleep(Duration::from_millis(300));
    let topics = s.get("/v1/namespaces/default/topics").json();
    assert_eq!(
        topics["topics"][0],
        json!({"name": "orders", "published": 1, "pending": 1, "last_published_ms": topics["topics"][0]["last_published_ms"]})
    );
    let r = put(
        &s,
        "/rules/collect-orders",
        r#"{"trigger":"orders-in","function":"collect"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for i in 1..=10 {
        let r = publish(
            &s,
            "orders",
            "application/json",
            format!(r#"{{"i": {i}}}"#).as_bytes(),
        );
        assert_eq!(r.status, 202, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    // From the CLI, and raw bytes with their own content type.
    let out = ok(&s.cli(&["publish", "orders", r#"{"i": 11}"#, "--json"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    ids.push(v["id"].as_str().unwrap().to_string());
    let r = publish(&s, "orders", "text/plain", b"hello");
    assert_eq!(r.status, 202, "{}", r.text());
    let raw_id = r.json()["id"].as_str().unwrap().to_string();
    ids.push(raw_id.clone());
    // Nobody listens to this one: counted, not kept.
    let r = publish(&s, "audit", "application/json", b"[1, 2]");
    assert_eq!((r.status, r.json()["triggers"].clone()), (202, json!(0)));

    let seen = wait_all_seen(&s, "collect", &ids, 30);
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let acts = results_of(&s, "default", "collect");
    let sizes: Vec<usize> = acts
        .iter()
        .map(|a| a["result"]["ids"].as_array().unwrap().len())
        .collect();
    assert!(sizes.iter().all(|n| (1..=5).contains(n)), "{sizes:?}");
    assert!(sizes.len() < ids.len(), "no batching: {sizes:?}");
    for a in &acts {
        assert_eq!(a["trigger"], "orders-in");
        assert_eq!(a["result"]["topic"], "orders");
        for m in a["result"]["messages"].as_array().unwrap() {
            if m["id"] == raw_id.as_str() {
                assert_eq!(m["content_type"], "text/plain");
                assert_eq!(m["data_base64"], "aGVsbG8=");
            } else {
                assert!(m["data"]["i"].is_u64(), "{m}");
                assert!(m["published_ms"].is_u64(), "{m}");
            }
        }
    }
    let topics = s.get("/v1/namespaces/default/topics").json();
    let counts: Vec<(String, u64, u64)> = topics["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["published"].as_u64().unwrap(),
                t["pending"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("audit".to_string(), 1, 0), ("orders".to_string(), 13, 0)]
    );
    let out = ok(&s.cli(&["topic", "list"]));
    assert!(out.contains("orders") && out.contains("13"), "{out}");
    let out = ok(&s.cli(&["trigger", "list"]));
    assert!(
        out.contains("topic orders, batches of 5 within 2000 ms"),
        "{out}"
    );
}

#[test]
fn bad_messages_and_topic_triggers_are_refused() {
    let s = Server::start();
    let r = publish(&s, "orders", "application/json", b"{nope");
    assert_eq!(
        (r.status, r.error_code()),
        (400, "bad_request".into()),
        "{}",
        r.text()
    );
    let r = publish(&s, "orders", "application/json", b"");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = publish(&s, ".hidden", "application/json", b"{}");
    assert_eq!(r.status, 400, "{}", r.text());
    let r = s.request(
        "POST",
        "/v1/namespaces/nowhere/topics/orders",
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let big = vec![b'1'; 1024 * 1024 + 1];
    let r = publish(&s, "orders", "application/json", &big);
    assert_eq!(
        (r.status, r.error_code()),
        (413, "payload_too_large".into())
    );
    for (body, field) in [
        (r#"{"topic":"orders","batch_size":0}"#, "batch_size"),
        (r#"{"topic":"orders","batch_size":1001}"#, "batch_size"),
        (
            r#"{"topic":"orders","batch_window_ms":300001}"#,
            "batch_window_ms",
        ),
        (r#"{"kind":"topic"}"#, "topic"),
        (
            r#"{"kind":"cron","schedule":"* * * * *","topic":"x"}"#,
            "topic",
        ),
        (r#"{"batch_size":3}"#, "batch_size"),
        (r#"{"kind":"nats"}"#, "nats"),
        (r#"{"nats":{"url":"http://h:1","subject":"a"}}"#, "nats.url"),
        (
            r#"{"nats":{"url":"nats://h:1","subject":"a b"}}"#,
            "nats.subject",
        ),
    ] {
        let r = put(&s, "/triggers/t", body);
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["field"], field, "{body}: {}", r.text());
    }
    let r = put(
        &s,
        "/triggers/t",
        r#"{"nats":{"url":"nats://h:1","subject":"a","extra":1}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
}

#[test]
fn waiting_messages_go_with_their_trigger_kind_and_namespace() {
    let s = Server::start();
    let ns = |path: &str| format!("/v1/namespaces/team-t{path}");
    assert_eq!(s.request("PUT", &ns(""), None, b"").status, 201);
    let r = s.request(
        "PUT",
        &ns("/triggers/in"),
        Some("application/json"),
        br#"{"topic":"jobs"}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // No rule: the message waits.
    let r = s.request("POST", &ns("/topics/jobs"), Some("application/json"), b"{}");
    assert_eq!(r.json()["triggers"], 1, "{}", r.text());
    assert_eq!(s.get(&ns("/topics")).json()["topics"][0]["pending"], 1);
    // Made a plain trigger, it lets go of the message.
    let r = s.request("PUT", &ns("/triggers/in"), Some("application/json"), b"{}");
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.get(&ns("/topics")).json()["topics"][0]["pending"] != 0 {
        assert!(
            Instant::now() < deadline,
            "the plain trigger kept its message"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = s.request(
        "PUT",
        &ns("/triggers/in"),
        Some("application/json"),
        br#"{"topic":"jobs"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = s.request("POST", &ns("/topics/jobs"), Some("application/json"), b"{}");
    assert_eq!(r.json()["triggers"], 1, "{}", r.text());
    assert_eq!(s.request("DELETE", &ns(""), None, b"").status, 200);
    assert_eq!(s.get(&ns("/topics")).status, 404);
    assert_eq!(s.request("PUT", &ns(""), None, b"").status, 201);
    assert_eq!(s.get(&ns("/topics")).json(), json!({"topics": []}));
}

#[test]
fn failing_batches_are_retried_then_dead_lettered() {
    let s = Server::start();
    let code = "def handler(e, c):\n    if any(m['data'].get('poison') for m in e['messages']):\n        raise ValueError('poison')\n    return {'ids': [m['id'] for m in e['messages']]}\n";
    assert_eq!(
        s.deploy_file(
            "picky",
            "runtime=python&handler=app.handler&retries=1",
            "app.py",
            code
        )
        .status,
        201
    );
    assert_eq!(put(&s, "/triggers/in", r#"{"topic":"jobs"}"#).status, 201);
    assert_eq!(
        put(&s, "/rules/r", r#"{"trigger":"in","function":"picky"}"#).status,
        201
    );
    let good = publish(&s, "jobs", "application/json", br#"{"ok": 1}"#).json();
    let bad = publish(&s, "jobs", "application/json", br#"{"poison": true}"#).json();
    assert!(bad["id"].is_string(), "{bad}");
    wait_all_seen(&s, "picky", &[good["id"].as_str().unwrap().to_string()], 20);
    // One retry (1 s later), then the dead-letter list, with the message in its event.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let dlq = s.get("/v1/namespaces/default/dlq").json();
        if let Some(d) = dlq["dead_letters"].as_array().and_then(|a| a.first()) {
            assert_eq!(d["attempts"], 2, "{d}");
            assert!(d["last_error"].as_str().unwrap().contains("poison"), "{d}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the poison batch never reached the DLQ"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An HTTP server on a free port that counts the message ids POSTed to it (a JSON array per
/// request): what functions really ran, reruns included. Returns its URL and the counts.
fn id_sink() -> (
    String,
    std::sync::Arc<std::sync::Mutex<HashMap<String, usize>>>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/ids", listener.local_addr().unwrap());
    let counts = std::sync::Arc::new(std::sync::Mutex::new(HashMap::new()));
    let sink = counts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let Some(body) = answer_one_request(stream) else {
                continue;
            };
            let ids: Vec<String> = serde_json::from_slice(&body).unwrap_or_default();
            let mut c = sink.lock().unwrap();
            for id in ids {
                *c.entry(id).or_insert(0) += 1;
            }
        }
    });
    (url, counts)
}

#[test]
fn accepted_messages_survive_kill_9() {
    let n: usize = std::env::var("IGNIS_MSG_CRASH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let (sink, ran) = id_sink();
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    // Slow batches, so that the kill lands while they are worked through; each run reports
    // its message ids to the sink before it returns, so that runs repeated after the restart
    // are counted.
    let code = format!(
        "import json, time, urllib.request\n\
         def handler(e, c):\n\
         \x20   ids = [m['id'] for m in e['messages']]\n\
         \x20   time.sleep(0.05)\n\
         \x20   urllib.request.urlopen(urllib.request.Request('{sink}', data=json.dumps(ids).encode(), method='POST'), timeout=10).read()\n\
         \x20   return {{'ids': ids}}\n"
    );
    assert_eq!(
        s.deploy_file(
            "slow",
            "runtime=python&handler=app.handler&max_instances=2&network=host",
            "app.py",
            &code
        )
        .status,
        201
    );
    assert_eq!(
        put(
            &s,
            "/triggers/in",
            r#"{"topic":"work","batch_size":10,"batch_window_ms":50}"#
        )
        .status,
        201
    );
    assert_eq!(
        put(&s, "/rules/r", r#"{"trigger":"in","function":"slow"}"#).status,
        201
    );
    let ids = std::sync::Mutex::new(Vec::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= n {
                        return;
                    }
                    let r = publish(
                        &s,
                        "work",
                        "application/json",
                        format!(r#"{{"i": {i}}}"#).as_bytes(),
                    );
                    assert_eq!(r.status, 202, "{}", r.text());
                    ids.lock()
                        .unwrap()
                        .push(r.json()["id"].as_str().unwrap().to_string());
                }
            });
        }
    });
    let ids = ids.into_inner().unwrap();
    // Kill once the function is well into the work.
    let deadline = Instant::now() + Duration::from_secs(30);
    while ran.lock().unwrap().len() < 30 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let before = ran.lock().unwrap().len();
    s.kill();
    eprintln!("killed with {before} of {n} messages processed");
    assert!(
        before < n,
        "the kill came after every message was processed"
    );
    let s = Server::launch(tmp.path(), &[]);
    let seen = wait_all_seen(&s, "slow", &ids, 120);
    assert_eq!(seen.len(), ids.len());
    assert!(seen.values().all(|c| *c == 1), "a message in two batches");
    // The sink counts a run just after answering it.
    std::thread::sleep(Duration::from_millis(200));
    let ran = ran.lock().unwrap().clone();
    for id in &ids {
        assert!(ran.contains_key(id), "acknowledged message {id} never ran");
    }
    let duplicates: usize = ran.values().map(|c| c - 1).sum();
    eprintln!(
        "{} messages acknowledged, every one processed at least once; {duplicates} processed \
         twice or more (batches run again after the restart)",
        ids.len()
    );
    let topics = s.get("/v1/namespaces/default/topics").json();
    assert_eq!(topics["topics"][0]["pending"], 0, "{topics}");

    // Then killed in the middle of publishing: every message acknowledged with a 202 before
    // the kill is processed after the restart.
    let mut s = s;
    let acked = std::sync::Mutex::new(Vec::new());
    let (addr, key) = (s.addr.clone(), s.key.clone());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (acked, addr, key) = (&acked, &addr, &key);
            scope.spawn(move || {
                for i in 0.. {
                    match try_publish(addr, key, "work", &format!(r#"{{"t": {t}, "i": {i}}}"#)) {
                        Some(id) => acked.lock().unwrap().push(id),
                        None => return,
                    }
                }
            });
        }
        while acked.lock().unwrap().len() < 100 {
            std::thread::sleep(Duration::from_millis(2));
        }
        unsafe {
            libc::kill(s.pid(), libc::SIGKILL);
        }
    });
    s.kill();
    let acked = acked.into_inner().unwrap();
    let s = Server::launch(tmp.path(), &[]);
    wait_all_seen(&s, "slow", &acked, 120);
    eprintln!(
        "killed while publishing: {} messages acknowledged, every one processed",
        acked.len()
    );
}

/// Publishes without panicking when the server is gone: the message id if it answered 202.
fn try_publish(addr: &str, key: &str, topic: &str, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let req = format!(
        "POST /v1/namespaces/default/topics/{topic} HTTP/1.1\r\nhost: {addr}\r\n\
         authorization: Bearer {key}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    if !text.starts_with("HTTP/1.1 202") {
        return None;
    }
    let (_, json) = text.split_once("\r\n\r\n")?;
    let v: Value = serde_json::from_str(json).ok()?;
    Some(v["id"].as_str()?.to_string())
}

/// `nats-server`, from PATH or /usr/sbin (where Debian puts it).
pub(crate) fn nats_server_binary() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A `nats-server` child on a port of its own; killed when dropped.
struct NatsServer {
    child: std::process::Child,
    port: u16,
}

impl NatsServer {
    fn start(bin: &std::path::Path, port: u16) -> NatsServer {
        let child = std::process::Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start nats-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        NatsServer { child, port }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends a NATS request until someone answers (the trigger's subscription is up); returns
/// the answer.
async fn request_until_answered(client: &async_nats::Client, subject: &str, body: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.to_string(), body.to_string().into()),
        )
        .await;
        if let Ok(Ok(reply)) = asked {
            return serde_json::from_slice(&reply.payload).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no nats trigger answered on {subject}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends requests until nobody answers any more (the subscription is gone).
async fn wait_no_responders(client: &async_nats::Client, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let asked = tokio::time::timeout(
            Duration::from_secs(2),
            client.request(subject.to_string(), "{}".into()),
        )
        .await;
        if let Ok(Err(e)) = &asked
            && e.kind() == async_nats::RequestErrorKind::NoResponders
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a subscription on {subject} is still there: {asked:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_nats_subject_invokes_functions_through_a_real_nats_server() {
    let Some(bin) = nats_server_binary() else {
        assert!(
            std::env::var("IGNIS_REQUIRE_SANDBOX").as_deref() != Ok("1"),
            "nats-server is not installed (apt-get install nats-server)"
        );
        eprintln!("skipped: nats-server is not installed");
        return;
    };
    let port = free_port();
    let mut nats = NatsServer::start(&bin, port);
    let s = Server::start();
    let echo = "def handler(e, c):\n    return e\n";
    assert_eq!(
        s.deploy_file("echo", "runtime=python&handler=app.handler", "app.py", echo)
            .status,
        201
    );
    let r = put(
        &s,
        "/triggers/orders",
        &json!({"nats": {"url": nats.url(), "subject": "orders.>", "queue_group": "ignis"}})
            .to_string(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["kind"], "nats");
    assert_eq!(
        put(&s, "/rules/r", r#"{"trigger":"orders","function":"echo"}"#).status,
        201
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        // A request is answered once the firing is on disk, with its activations.
        let answer = request_until_answered(&client, "orders.new", r#"{"order": 1}"#).await;
        let act = answer["activations"][0]["activation_id"]
            .as_str()
            .unwrap()
            .to_string();
        let done = wait_activation(&s, &act, 20);
        assert_eq!(done["trigger"], "orders");
        // Plain publishes, one with headers and one that is not JSON.
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("X-Order", "2");
        client
            .publish_with_headers("orders.eu.new", headers, r#"{"order": 2}"#.into())
            .await
            .unwrap();
        client
            .publish("orders.text", "plain words".into())
            .await
            .unwrap();
        client.publish("elsewhere", "{}".into()).await.unwrap();
        client.flush().await.unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let acts: Vec<Value> = results_of(&s, "default", "echo")
            .into_iter()
            .filter(|a| a["status"] == "success")
            .collect();
        if acts.len() >= 3 {
            break acts;
        }
        assert!(
            Instant::now() < deadline,
            "only {} nats messages handled",
            acts.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let by_subject: HashMap<String, Value> = events
        .iter()
        .map(|a| {
            (
                a["result"]["subject"].as_str().unwrap().to_string(),
                a["result"].clone(),
            )
        })
        .collect();
    assert_eq!(by_subject.len(), 3, "{by_subject:?}");
    assert_eq!(by_subject["orders.new"]["data"], json!({"order": 1}));
    assert!(by_subject["orders.new"]["reply"].is_string());
    assert_eq!(by_subject["orders.eu.new"]["data"], json!({"order": 2}));
    assert_eq!(
        by_subject["orders.eu.new"]["headers"]["X-Order"],
        json!(["2"])
    );
    assert_eq!(by_subject["orders.text"]["data"], "plain words");
    let out = ok(&s.cli(&["trigger", "list"]));
    assert!(
        out.contains("orders.> at nats://") && out.contains("queue group ignis"),
        "{out}"
    );

    // The NATS server goes away and comes back: the subscription comes back with it.
    drop(nats);
    nats = NatsServer::start(&bin, port);
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let answer = request_until_answered(&client, "orders.again", r#"{"order": 3}"#).await;
        assert!(answer["firing"].is_string(), "{answer}");
        // Deleting the trigger stops its subscription.
        assert_eq!(
            s.request(
                "DELETE",
                "/v1/namespaces/default/triggers/orders",
                None,
                b""
            )
            .status,
            200
        );
        wait_no_responders(&client, "orders.x").await;
    });

    // Deleting a namespace stops the subscriptions of its nats triggers.
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team-n", None, b"").status,
        201
    );
    let r = s.request(
        "PUT",
        "/v1/namespaces/team-n/triggers/feed",
        Some("application/json"),
        json!({"nats": {"url": nats.url(), "subject": "feed"}})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let answer = request_until_answered(&client, "feed", "{}").await;
        // No rule: the firing has no activation, and says so.
        assert_eq!(answer["activations"], json!([]), "{answer}");
        assert_eq!(
            s.request("DELETE", "/v1/namespaces/team-n", None, b"")
                .status,
            200
        );
        wait_no_responders(&client, "feed").await;
    });
    let unique: HashSet<&String> = by_subject.keys().collect();
    assert_eq!(unique.len(), 3);
}
