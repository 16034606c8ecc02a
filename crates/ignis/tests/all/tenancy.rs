//! Namespaces and API keys end to end: a namespace's life and death with everything in it,
//! keys with roles, rotation without downtime, basic auth, restarts, and the CLI.

use crate::harness::*;

fn as_key(s: &Server, key: &str, method: &str, path: &str, body: &[u8]) -> Resp {
    let auth = format!("Bearer {key}");
    s.raw_request(
        method,
        path,
        &[("authorization", &auth)],
        Some("application/json"),
        body,
    )
}

/// Checks the status of each (key, method, path) request.
fn expect(s: &Server, cases: &[(&String, &str, &str, u16)]) {
    for (key, method, path, status) in cases {
        let r = as_key(s, key, method, path, b"{}");
        assert_eq!(r.status, *status, "{method} {path}: {}", r.text());
    }
}

fn new_key(s: &Server, with: &str, ns: &str, role: &str) -> String {
    let r = as_key(
        s,
        with,
        "POST",
        &format!("/v1/namespaces/{ns}/keys"),
        format!(r#"{{"role":"{role}"}}"#).as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(
        (v["namespace"].as_str(), v["role"].as_str()),
        (Some(ns), Some(role))
    );
    v["key"].as_str().unwrap().to_string()
}

const HELLO: &str =
    "def handler(event, context):\n    return {'hello': event.get('who', 'world')}\n";

fn deploy(s: &Server, key: &str, ns: &str, name: &str) -> Resp {
    let auth = format!("Bearer {key}");
    s.raw_request(
        "PUT",
        &format!(
            "/v1/namespaces/{ns}/functions/{name}?runtime=python&handler=app.handler&filename=app.py"
        ),
        &[("authorization", &auth)],
        Some("application/octet-stream"),
        HELLO.as_bytes(),
    )
}

#[test]
fn a_namespace_lives_and_dies_with_everything_in_it() {
    let s = Server::start();
    let r = s.get("/v1/namespaces");
    assert_eq!(r.json()["namespaces"][0]["name"], "default", "{}", r.text());
    let r = s.get("/v1/namespaces/team/functions");
    assert_eq!(
        (r.status, r.error_code()),
        (404, "namespace_not_found".into())
    );
    let r = s.request("PUT", "/v1/namespaces/team", None, b"");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        200
    );
    let r = s.request("PUT", "/v1/namespaces/bad%20name", None, b"");
    assert_eq!((r.status, r.error_code()), (400, "invalid_spec".into()));
    let r = s.get("/v1/namespaces");
    assert_eq!(
        names_in(&r.json()["namespaces"], "name"),
        ["default", "team"]
    );

    // The namespace gets a function (warm instance), a trigger, a rule, a firing, activations,
    // a queued invocation and a key; default gets a function of the same name.
    let owner = new_key(&s, &s.key, "team", "owner");
    assert_eq!(deploy(&s, &owner, "team", "hello").status, 201);
    assert_eq!(deploy(&s, &s.key, "default", "hello").status, 201);
    let invoke = |ns: &str| {
        as_key(
            &s,
            &s.key,
            "POST",
            &format!("/v1/namespaces/{ns}/functions/hello/invoke"),
            br#"{"who":"team"}"#,
        )
    };
    let r = invoke("team");
    assert_eq!(r.status, 200, "{}", r.text());
    let activation = r.header("x-ignis-activation-id").unwrap().to_string();
    let put = |path: &str, body: &str| {
        let r = as_key(&s, &owner, "PUT", path, body.as_bytes());
        assert_eq!(r.status, 201, "{path}: {}", r.text());
    };
    put("/v1/namespaces/team/triggers/t", "{}");
    put(
        "/v1/namespaces/team/rules/r",
        r#"{"trigger":"t","function":"hello"}"#,
    );
    let r = as_key(
        &s,
        &owner,
        "POST",
        "/v1/namespaces/team/triggers/t/fire",
        b"{}",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let instances = |ns: &str| {
        s.get("/v1/system/instances").json()["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["namespace"] == ns)
            .count()
    };
    assert!(instances("team") > 0);

    let r = s.request("DELETE", "/v1/namespaces/team", None, b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["functions"], serde_json::json!(["hello"]));
    for path in [
        "/v1/namespaces/team",
        "/v1/namespaces/team/functions",
        &format!("/v1/namespaces/team/activations/{activation}"),
    ] {
        let r = s.get(path);
        assert_eq!(
            (r.status, r.error_code()),
            (404, "namespace_not_found".into()),
            "{path}"
        );
    }
    let r = as_key(&s, &owner, "GET", "/v1/namespaces/team/functions", b"");
    assert_eq!(
        r.status,
        401,
        "the namespace's keys went with it: {}",
        r.text()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while instances("team") > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(instances("team"), 0, "its instances are stopped");
    let r = s.request("DELETE", "/v1/namespaces/team", None, b"");
    assert_eq!(
        (r.status, r.error_code()),
        (404, "namespace_not_found".into())
    );
    let r = s.request("DELETE", "/v1/namespaces/default", None, b"");
    assert_eq!(r.status, 400, "{}", r.text());

    // The other namespace is untouched; a namespace made again under the name starts empty.
    assert_eq!(invoke("default").status, 200);
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        201
    );
    let r = s.get("/v1/namespaces/team/functions");
    assert_eq!(r.json()["functions"], serde_json::json!([]));
    let r = s.get("/v1/namespaces/team/triggers");
    assert_eq!(r.json()["triggers"], serde_json::json!([]));
    let r = s.get("/v1/namespaces/team/activations");
    assert_eq!(
        r.json()["activations"],
        serde_json::json!([]),
        "{}",
        r.text()
    );
    let r = deploy(&s, &s.key, "team", "hello");
    assert_eq!(r.json()["version"], 1, "{}", r.text());
}

#[test]
fn keys_have_roles_rotate_without_downtime_and_survive_restarts() {
    let mut s = Server::start();
    for ns in ["team", "other"] {
        assert_eq!(
            s.request("PUT", &format!("/v1/namespaces/{ns}"), None, b"")
                .status,
            201
        );
    }
    let owner = new_key(&s, &s.key, "team", "owner");
    assert_eq!(deploy(&s, &owner, "team", "hello").status, 201);
    let invoker = new_key(&s, &owner, "team", "invoke");
    let reader = new_key(&s, &owner, "team", "read");
    let stranger = new_key(&s, &s.key, "other", "owner");
    let invoke_path = "/v1/namespaces/team/functions/hello/invoke";

    // Roles.
    let functions = "/v1/namespaces/team/functions";
    expect(
        &s,
        &[
            (&invoker, "POST", invoke_path, 200),
            (&invoker, "GET", functions, 403),
            (&reader, "GET", functions, 200),
            (&reader, "POST", invoke_path, 403),
            // A reader cannot make itself an owner; an owner is no admin; a key of another
            // namespace can do nothing here.
            (&reader, "POST", "/v1/namespaces/team/keys", 403),
            (&owner, "GET", "/v1/namespaces", 403),
            (&stranger, "POST", invoke_path, 403),
            (&stranger, "GET", "/v1/namespaces/team/keys", 403),
        ],
    );
    assert_eq!(deploy(&s, &reader, "team", "hello").status, 403);
    let r = as_key(
        &s,
        &owner,
        "POST",
        "/v1/namespaces/team/keys",
        br#"{"role":"admin"}"#,
    );
    assert_eq!((r.status, r.error_code()), (400, "invalid_spec".into()));

    // Listing shows ids and roles, never secrets or hashes.
    let r = as_key(&s, &owner, "GET", "/v1/namespaces/team/keys", b"");
    assert_eq!(r.status, 200);
    let listed = r.text();
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 3, "{listed}");
    for k in [&owner, &invoker, &reader] {
        let (id, secret) = k.split_once(':').unwrap();
        assert!(listed.contains(id) && !listed.contains(secret), "{listed}");
    }
    assert!(!listed.contains("argon2"), "{listed}");
    let r = s.get("/v1/keys");
    assert_eq!(
        r.json()["keys"].as_array().unwrap().len(),
        5,
        "{}",
        r.text()
    );

    // OpenWhisk-style basic auth with id:secret.
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(&invoker)
    );
    let r = s.raw_request("POST", invoke_path, &[("authorization", &basic)], None, b"");
    assert_eq!(r.status, 200, "{}", r.text());

    // Rotation: a second invoke key works alongside the first, then the first is revoked and
    // refused at once while the second keeps working.
    let rotated = new_key(&s, &owner, "team", "invoke");
    assert_eq!(as_key(&s, &rotated, "POST", invoke_path, b"{}").status, 200);
    assert_eq!(as_key(&s, &invoker, "POST", invoke_path, b"{}").status, 200);
    let old_id = invoker.split_once(':').unwrap().0;
    let r = as_key(
        &s,
        &stranger,
        "DELETE",
        &format!("/v1/namespaces/other/keys/{old_id}"),
        b"",
    );
    assert_eq!(r.status, 404, "not a key of that namespace: {}", r.text());
    let r = as_key(
        &s,
        &owner,
        "DELETE",
        &format!("/v1/namespaces/team/keys/{old_id}"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = as_key(&s, &invoker, "POST", invoke_path, b"{}");
    assert_eq!((r.status, r.error_code()), (401, "unauthorized".into()));
    assert!(!r.text().contains(invoker.split_once(':').unwrap().1));
    assert_eq!(as_key(&s, &rotated, "POST", invoke_path, b"{}").status, 200);

    // Admin keys rotate too, but the last one cannot be revoked.
    let admin_id = s.key.split_once(':').unwrap().0.to_string();
    let r = s.request("DELETE", &format!("/v1/keys/{admin_id}"), None, b"");
    assert_eq!((r.status, r.error_code()), (409, "conflict".into()));
    let r = s.request("POST", "/v1/keys", None, b"");
    assert_eq!(r.status, 201, "{}", r.text());
    let admin2 = r.json()["key"].as_str().unwrap().to_string();
    assert_eq!(
        as_key(&s, &admin2, "GET", "/v1/namespaces", b"").status,
        200
    );

    // Nothing secret is stored in clear, and every key still works after a restart (the
    // master key is read back from the data directory).
    let db = std::fs::read(s.dir.join("data/ignis.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    for k in [&owner, &rotated, &admin2, &s.key] {
        assert!(
            !db.contains(k.split_once(':').unwrap().1),
            "a secret in ignis.db"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.dir.join("data/master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir = s.take_dir().unwrap();
    s.stop();
    let s = Server::launch(dir.path(), &[]);
    expect(
        &s,
        &[
            (&rotated, "POST", invoke_path, 200),
            (&owner, "GET", "/v1/namespaces/team/keys", 200),
            (&admin2, "GET", "/v1/namespaces", 200),
            (&invoker, "POST", invoke_path, 401),
        ],
    );
    drop(dir);
}

#[test]
fn the_cli_manages_namespaces_and_keys() {
    let s = Server::start();
    ok(&s.cli(&[
        "ns",
        "create",
        "team",
        "--quota",
        "functions=3",
        "--quota",
        "memory_mb=512",
    ]));
    let shown = ok(&s.cli(&["ns", "get", "team"]));
    let line = |name: &str| {
        shown
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {shown}"))
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
    };
    assert_eq!(line("functions"), ["3", "3"], "{shown}");
    assert_eq!(line("memory_mb"), ["512", "512"], "{shown}");
    assert_eq!(line("code_mb"), ["50", "-"], "{shown}");
    let out = s.cli(&["ns", "create", "team", "--quota", "fuctions=3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("unknown field `fuctions`"),
        "unknown quota names are refused: {out:?}"
    );
    let out = s.cli(&["ns", "create", "team", "--quota", "functions"]);
    assert!(!out.status.success(), "{out:?}");
    let list = ok(&s.cli(&["ns", "list"]));
    assert!(list.contains("default") && list.contains("team"), "{list}");
    let key = ok(&s.cli(&["key", "create", "--role", "owner", "-n", "team"]));
    let key = key.trim();
    assert!(key.starts_with("ik_") && key.contains(':'), "{key}");
    let listed = ok(&s.cli(&["key", "list", "-n", "team"]));
    let (id, secret) = key.split_once(':').unwrap();
    assert!(listed.contains(id) && listed.contains("owner"), "{listed}");
    assert!(!listed.contains(secret));
    // The new key works for its namespace, through the CLI.
    let out = std::process::Command::new(BIN)
        .args(["fn", "list", "-n", "team"])
        .env("IGNIS_URL", &s.url)
        .env("IGNIS_KEY", key)
        .env("IGNIS_CONFIG", s.dir.join("no-such-cli.toml"))
        .output()
        .unwrap();
    ok(&out);
    ok(&s.cli(&["key", "revoke", id, "-n", "team"]));
    assert!(!ok(&s.cli(&["key", "list", "-n", "team"])).contains(id));
    let out = ok(&s.cli(&["ns", "delete", "team"]));
    assert!(out.contains("deleted namespace team"), "{out}");
    let out = s.cli(&["ns", "get", "team"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

#[test]
fn quotas_refuse_with_retry_after_and_only_in_their_namespace() {
    // The server's default: 2 invocations per minute per namespace.
    let s = Server::start_with(&["--namespace-invocations-per-minute", "2"]);
    let put_ns = |ns: &str, body: &str| {
        let r = s.request(
            "PUT",
            &format!("/v1/namespaces/{ns}"),
            Some("application/json"),
            body.as_bytes(),
        );
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
        r.json()
    };
    let free = put_ns("free", r#"{"quotas":{"invocations_per_minute":0}}"#);
    assert_eq!(free["effective_quotas"]["invocations_per_minute"], 0);
    let narrow = put_ns(
        "narrow",
        r#"{"quotas":{"concurrency":1,"invocations_per_minute":0}}"#,
    );
    assert_eq!(narrow["effective_quotas"]["concurrency"], 1, "{narrow}");
    assert_eq!(narrow["quotas"]["concurrency"], 1, "{narrow}");
    let r = s.request(
        "PUT",
        "/v1/namespaces/narrow",
        Some("application/json"),
        br#"{"quotas":{"concurency":1}}"#,
    );
    assert_eq!(
        r.status,
        400,
        "unknown quota fields are refused: {}",
        r.text()
    );
    let sleepy = "import time\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n    return {'ok': True}\n";
    for ns in ["default", "free", "narrow"] {
        let r = s.raw_request(
            "PUT",
            &format!(
                "/v1/namespaces/{ns}/functions/f?runtime=python&handler=app.handler&filename=app.py"
            ),
            &[("authorization", &format!("Bearer {}", s.key))],
            Some("application/octet-stream"),
            sleepy.as_bytes(),
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let invoke = |ns: &str, body: &str| {
        as_key(
            &s,
            &s.key,
            "POST",
            &format!("/v1/namespaces/{ns}/functions/f/invoke"),
            body.as_bytes(),
        )
    };

    // Rate: the default namespace gets two, then 429 with the seconds until a token is back.
    assert_eq!(invoke("default", "{}").status, 200);
    assert_eq!(invoke("default", "{}").status, 200);
    let r = invoke("default", "{}");
    assert_eq!(
        (r.status, r.error_code()),
        (429, "quota_exceeded".into()),
        "{}",
        r.text()
    );
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    // ...while a namespace with no rate limit goes on.
    for _ in 0..5 {
        assert_eq!(invoke("free", "{}").status, 200);
    }

    // Concurrency: one invocation of "narrow" at a time; a second at once is refused, and
    // another namespace is not.
    let slow = std::thread::scope(|scope| {
        let first = scope.spawn(|| invoke("narrow", r#"{"s": 1.5}"#));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let second = invoke("narrow", "{}");
        assert_eq!(
            (second.status, second.error_code()),
            (429, "quota_exceeded".into()),
            "{}",
            second.text()
        );
        assert_eq!(second.header("retry-after"), Some("1"));
        assert_eq!(invoke("free", r#"{"s": 0}"#).status, 200);
        first.join().unwrap()
    });
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert_eq!(
        invoke("narrow", "{}").status,
        200,
        "free again once it ended"
    );
}

#[test]
fn activations_past_their_namespace_retention_are_pruned() {
    let s = Server::start_env(&[], &[("IGNIS_PRUNE_INTERVAL_MS", "100")]);
    let r = s.request(
        "PUT",
        "/v1/namespaces/brief",
        Some("application/json"),
        br#"{"quotas":{"activation_retention_count":2}}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.json()["effective_quotas"]["activation_retention_count"],
        2
    );
    for ns in ["default", "brief"] {
        assert_eq!(deploy(&s, &s.key, ns, "hello").status, 201);
    }
    let mut ids = Vec::new();
    for ns in ["default", "brief"] {
        for _ in 0..5 {
            let r = as_key(
                &s,
                &s.key,
                "POST",
                &format!("/v1/namespaces/{ns}/functions/hello/invoke"),
                b"{}",
            );
            assert_eq!(r.status, 200, "{}", r.text());
            if ns == "brief" {
                ids.push(r.header("x-ignis-activation-id").unwrap().to_string());
                // Distinct start times, so that "the newest" is one set.
                std::thread::sleep(std::time::Duration::from_millis(3));
            }
        }
    }
    let listed = |ns: &str| {
        names_in(
            &s.get(&format!("/v1/namespaces/{ns}/activations")).json()["activations"],
            "id",
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while listed("brief").len() > 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // The newest two are kept; the default namespace keeps everything.
    let mut kept = listed("brief");
    kept.sort();
    let mut newest = vec![ids[3].clone(), ids[4].clone()];
    newest.sort();
    assert_eq!(kept, newest);
    assert_eq!(listed("default").len(), 5);
}

#[test]
fn quotas_on_functions_code_size_and_instance_memory() {
    let s = Server::start();
    let set_quotas = |q: &str| {
        let r = s.request(
            "PUT",
            "/v1/namespaces/small",
            Some("application/json"),
            format!(r#"{{"quotas":{q}}}"#).as_bytes(),
        );
        assert!(r.status == 201 || r.status == 200, "{}", r.text());
        r.json()
    };
    let ns = set_quotas(r#"{"functions":2,"code_mb":1,"memory_mb":256}"#);
    assert_eq!(ns["effective_quotas"]["functions"], 2, "{ns}");
    assert_eq!(ns["effective_quotas"]["code_unpacked_mb"], 250, "{ns}");
    let put = |ns: &str, name: &str, query: &str, ct: &str, body: &[u8]| {
        s.raw_request(
            "PUT",
            &format!("/v1/namespaces/{ns}/functions/{name}?{query}"),
            &[("authorization", &format!("Bearer {}", s.key))],
            Some(ct),
            body,
        )
    };
    let sleepy = "import time\ndef handler(event, context):\n    time.sleep(event.get('s', 0))\n    return {'ok': True}\n";
    let py = "runtime=python&handler=app.handler&filename=app.py&memory_mb=128";
    let deploy =
        |ns: &str, name: &str| put(ns, name, py, "application/octet-stream", sleepy.as_bytes());

    // Functions: two, then 429 with Retry-After; a new version of one of the two is fine, and
    // the default namespace is not affected.
    assert_eq!(deploy("small", "a").status, 201);
    assert_eq!(deploy("small", "b").status, 201);
    let r = deploy("small", "c");
    assert_eq!(
        (r.status, r.error_code()),
        (429, "quota_exceeded".into()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("2 functions"), "{}", r.text());
    assert!(r.header("retry-after").is_some());
    assert_eq!(deploy("small", "a").status, 200);
    assert_eq!(deploy("default", "c").status, 201);

    // Code size: more than 1 MiB uploaded is 413, naming the code.
    let big = format!("{sleepy}\n#{}\n", "x".repeat(1_200_000));
    let r = put("small", "a", py, "application/octet-stream", big.as_bytes());
    assert_eq!(
        (r.status, r.error_code()),
        (413, "payload_too_large".into()),
        "{}",
        r.text()
    );
    assert_eq!(r.json()["error"]["field"], "code");
    assert!(r.text().contains("1 MiB"), "{}", r.text());
    assert_eq!(
        put(
            "default",
            "a",
            py,
            "application/octet-stream",
            big.as_bytes()
        )
        .status,
        201
    );
    // Unpacked size: a zip within the upload quota that unpacks past its own quota.
    set_quotas(r#"{"functions":2,"code_unpacked_mb":1,"memory_mb":256}"#);
    let mut noise = Vec::with_capacity(1_500_000);
    let mut x: u32 = 12345;
    while noise.len() < 1_500_000 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noise.push(b'a' + (x >> 16) as u8 % 26);
    }
    let zip = {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default();
        w.start_file("app.py", opts).unwrap();
        w.write_all(sleepy.as_bytes()).unwrap();
        w.start_file("data.txt", opts).unwrap();
        w.write_all(&noise).unwrap();
        w.finish().unwrap().into_inner()
    };
    let zpy = "runtime=python&handler=app.handler&memory_mb=128";
    let r = put("small", "a", zpy, "application/zip", &zip);
    assert_eq!(
        (r.status, r.error_code()),
        (413, "payload_too_large".into()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("unpacked"), "{}", r.text());

    // Instance memory: two 128 MiB instances fill the namespace's 256 MiB; a third at once is
    // refused while both are busy, and once one is idle it is evicted to make room.
    let invoke = |ns: &str, name: &str, body: &str| {
        as_key(
            &s,
            &s.key,
            "POST",
            &format!("/v1/namespaces/{ns}/functions/{name}/invoke"),
            body.as_bytes(),
        )
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(|| invoke("small", "a", r#"{"s": 2}"#));
        let second = scope.spawn(|| invoke("small", "b", r#"{"s": 2}"#));
        std::thread::sleep(std::time::Duration::from_millis(800));
        let ns = s.get("/v1/namespaces/small").json();
        assert_eq!(ns["usage"]["instance_memory_mb"], 256, "{ns}");
        let third = invoke("small", "a", "{}");
        assert_eq!(
            (third.status, third.error_code()),
            (429, "quota_exceeded".into()),
            "{}",
            third.text()
        );
        assert!(third.text().contains("256 MiB"), "{}", third.text());
        assert_eq!(third.header("retry-after"), Some("1"));
        // Another namespace is not held by it.
        assert_eq!(invoke("default", "c", "{}").status, 200);
        assert_eq!(first.join().unwrap().status, 200);
        assert_eq!(second.join().unwrap().status, 200);
    });
    // Both idle now: "b" is evicted for a second instance of "a".
    std::thread::scope(|scope| {
        let first = scope.spawn(|| invoke("small", "a", r#"{"s": 1}"#));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(invoke("small", "a", r#"{"s": 0.1}"#).status, 200);
        assert_eq!(first.join().unwrap().status, 200);
    });
    let ns = s.get("/v1/namespaces/small").json();
    assert!(
        ns["usage"]["instance_memory_mb"].as_u64().unwrap() <= 256,
        "{ns}"
    );
}
