//! The data services of namespaces (docs/baas.md): the key-value store and object storage
//! through the API and the CLI, from inside functions (the `ignis` module of python and node,
//! with the instance's token), storage triggers, and isolation between namespaces.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::harness::*;

const KV: &str = "/v1/namespaces/default/kv";
const BUCKETS: &str = "/v1/namespaces/default/buckets";

fn put(s: &Server, path: &str, body: &[u8]) -> Resp {
    s.request("PUT", path, Some("application/octet-stream"), body)
}

#[test]
fn kv_through_the_api_and_the_cli() {
    let s = Server::start();
    let r = put(&s, &format!("{KV}/users/1/name"), b"ada");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["version"], 1);
    let r = s.get(&format!("{KV}/users/1/name"));
    assert_eq!((r.status, r.text().as_str()), (200, "ada"));
    assert_eq!(r.header("x-ignis-version"), Some("1"));

    // Compare-and-swap: by version (query or If-Match) and on absence.
    let r = put(&s, &format!("{KV}/users/1/name?if_version=7"), b"bob");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (412, "precondition_failed")
    );
    let r = put(&s, &format!("{KV}/users/1/name?if_absent=true"), b"bob");
    assert_eq!(r.status, 412, "{}", r.text());
    let r = s.raw_request(
        "PUT",
        &format!("{KV}/users/1/name"),
        &[
            ("authorization", &format!("Bearer {}", s.key)),
            ("if-match", "\"1\""),
        ],
        None,
        b"bob",
    );
    assert_eq!(r.json()["version"], 2, "{}", r.text());
    assert_eq!(s.get(&format!("{KV}/users/1/name")).text(), "bob");

    // Increment: atomic, from 0 when absent; a value that is not an integer is refused.
    for want in [1, 2] {
        let r = s.request(
            "POST",
            &format!("{KV}/hits"),
            Some("application/json"),
            br#"{"increment": 1}"#,
        );
        assert_eq!(r.json()["value"], want, "{}", r.text());
    }
    let r = s.request(
        "POST",
        &format!("{KV}/users/1/name"),
        Some("application/json"),
        br#"{"increment": 1}"#,
    );
    assert_eq!(r.status, 412, "{}", r.text());
    let r = s.request(
        "POST",
        &format!("{KV}/hits"),
        Some("application/json"),
        b"{}",
    );
    assert_eq!(r.status, 400, "{}", r.text());

    // TTL.
    let r = put(&s, &format!("{KV}/session?ttl=1"), b"x");
    assert_eq!(r.status, 200);
    assert!(
        s.get(&format!("{KV}/session"))
            .header("x-ignis-expires-ms")
            .is_some()
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.get(&format!("{KV}/session")).status, 404);

    // Listing by prefix, paged.
    for i in 2..=5 {
        put(&s, &format!("{KV}/users/{i}/name"), b"n");
    }
    let r = s.get(&format!("{KV}?prefix=users/&limit=3"));
    assert_eq!(
        names_in(&r.json()["keys"], "key"),
        ["users/1/name", "users/2/name", "users/3/name"]
    );
    let next = r.json()["next"].as_str().unwrap().to_string();
    let r = s.get(&format!("{KV}?prefix=users/&limit=3&after={next}"));
    assert_eq!(
        names_in(&r.json()["keys"], "key"),
        ["users/4/name", "users/5/name"]
    );
    assert!(r.json()["next"].is_null());

    // Errors: bad input is a clear 4xx.
    assert_eq!(
        s.request("DELETE", &format!("{KV}/nope"), None, b"").status,
        404
    );
    assert_eq!(
        s.request(
            "DELETE",
            &format!("{KV}/users/5/name?if_version=9"),
            None,
            b""
        )
        .status,
        412
    );
    assert_eq!(
        s.request("DELETE", &format!("{KV}/users/5/name"), None, b"")
            .status,
        204
    );
    assert_eq!(
        put(&s, &format!("{KV}/big"), &vec![b'x'; 1024 * 1024 + 1]).status,
        413
    );
    assert_eq!(put(&s, &format!("{KV}/x?ttl=0"), b"v").status, 400);
    assert_eq!(put(&s, &format!("{KV}/x?bogus=1"), b"v").status, 400);
    assert_eq!(put(&s, &format!("{KV}/a%0Ab"), b"v").status, 400);
    assert_eq!(
        s.get("/v1/namespaces/nope/kv/x").error_code(),
        "namespace_not_found"
    );

    // The CLI.
    assert_eq!(
        ok(&s.cli(&["kv", "put", "greeting", "hello", "--ttl", "60"])),
        "greeting version 1\n"
    );
    assert_eq!(ok(&s.cli(&["kv", "get", "greeting"])), "hello");
    assert_eq!(ok(&s.cli(&["kv", "incr", "hits", "--by", "-5"])), "-3\n");
    let out = s.cli(&["kv", "put", "greeting", "x", "--if-version", "5"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let listed = ok(&s.cli(&["kv", "list", "--prefix", "gr"]));
    assert!(listed.contains("greeting"), "{listed}");
    ok(&s.cli(&["kv", "delete", "greeting"]));
    assert_eq!(s.cli(&["kv", "get", "greeting"]).status.code(), Some(4));
}

#[test]
fn objects_through_the_api_and_the_cli() {
    let s = Server::start();
    let obj = |b: &str, k: &str| format!("{BUCKETS}/{b}/objects/{k}");
    assert_eq!(
        put(&s, &obj("photos", "a.txt"), b"x").status,
        404,
        "no bucket yet"
    );
    assert_eq!(put(&s, &format!("{BUCKETS}/photos"), b"").status, 201);
    assert_eq!(put(&s, &format!("{BUCKETS}/photos"), b"").status, 200);
    assert_eq!(put(&s, &format!("{BUCKETS}/Bad_Name"), b"").status, 400);

    let r = s.raw_request(
        "PUT",
        &obj("photos", "2024/a.txt"),
        &[
            ("authorization", &format!("Bearer {}", s.key)),
            ("x-ignis-meta-owner", "ada"),
        ],
        Some("text/plain"),
        b"hello world",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["etag"],
        "5eb63bbbe01eeed093cb22bb8f5acdc3",
        "MD5, as S3"
    );
    let r = s.get(&obj("photos", "2024/a.txt"));
    assert_eq!((r.status, r.text().as_str()), (200, "hello world"));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(
        r.header("etag"),
        Some("\"5eb63bbbe01eeed093cb22bb8f5acdc3\"")
    );
    assert_eq!(r.header("x-ignis-meta-owner"), Some("ada"));
    let ranged = |range: &str| {
        s.raw_request(
            "GET",
            &obj("photos", "2024/a.txt"),
            &[
                ("authorization", &format!("Bearer {}", s.key)),
                ("range", range),
            ],
            None,
            b"",
        )
    };
    let r = ranged("bytes=6-");
    assert_eq!((r.status, r.text().as_str()), (206, "world"));
    assert_eq!(r.header("content-range"), Some("bytes 6-10/11"));
    assert_eq!(ranged("bytes=-3").text(), "rld");
    assert_eq!(ranged("bytes=99-").status, 416);
    let r = s.request("HEAD", &obj("photos", "2024/a.txt"), None, b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("11"));

    for k in ["2024/b.txt", "2024/c.txt", "2025/d.txt"] {
        assert_eq!(put(&s, &obj("photos", k), k.as_bytes()).status, 200);
    }
    let r = s.get(&format!("{BUCKETS}/photos/objects?prefix=2024/&limit=2"));
    assert_eq!(
        names_in(&r.json()["objects"], "key"),
        ["2024/a.txt", "2024/b.txt"]
    );
    let r = s.get(&format!(
        "{BUCKETS}/photos/objects?prefix=2024/&after=2024/b.txt"
    ));
    assert_eq!(names_in(&r.json()["objects"], "key"), ["2024/c.txt"]);

    assert_eq!(
        s.request("DELETE", &format!("{BUCKETS}/photos"), None, b"")
            .status,
        409
    );
    assert_eq!(
        s.request("DELETE", &obj("photos", "2025/d.txt"), None, b"")
            .status,
        204
    );
    assert_eq!(
        s.request("DELETE", &obj("photos", "2025/d.txt"), None, b"")
            .status,
        404
    );
    assert_eq!(s.get(&obj("photos", "2025/d.txt")).status, 404);

    // The CLI.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.bin");
    std::fs::write(&file, b"\x00\x01binary").unwrap();
    ok(&s.cli(&["objects", "mb", "docs"]));
    let out = ok(&s.cli(&["objects", "put", "docs", "x/in.bin", file.to_str().unwrap()]));
    assert!(out.contains("8 bytes"), "{out}");
    let back = dir.path().join("out.bin");
    ok(&s.cli(&[
        "objects",
        "get",
        "docs",
        "x/in.bin",
        "-o",
        back.to_str().unwrap(),
    ]));
    assert_eq!(std::fs::read(&back).unwrap(), b"\x00\x01binary");
    assert!(ok(&s.cli(&["objects", "ls", "docs"])).contains("x/in.bin"));
    assert!(ok(&s.cli(&["objects", "buckets"])).contains("photos"));
    ok(&s.cli(&["objects", "rm", "docs", "x/in.bin"]));
    ok(&s.cli(&["objects", "rb", "docs"]));
}

fn deploy_in(s: &Server, ns: &str, name: &str, query: &str, filename: &str, code: &str) {
    let r = s.request(
        "PUT",
        &format!("/v1/namespaces/{ns}/functions/{name}?{query}&filename={filename}"),
        Some("application/octet-stream"),
        code.as_bytes(),
    );
    assert!(matches!(r.status, 200 | 201), "{}", r.text());
}

fn invoke_in(s: &Server, ns: &str, name: &str, body: &str) -> Resp {
    s.request(
        "POST",
        &format!("/v1/namespaces/{ns}/functions/{name}/invoke"),
        Some("application/json"),
        body.as_bytes(),
    )
}

/// 200 invocations at once, each counting one visit: with `incr` (python) and with a
/// compare-and-swap loop (node). No visit is lost.
#[test]
fn visits_are_counted_exactly_under_200_concurrent_invocations() {
    let s = Server::start_with(&["--queue-per-function", "500"]);
    let py = "import ignis\ndef handler(event, context):\n    return ignis.kv.incr('visits')\n";
    deploy_in(
        &s,
        "default",
        "count",
        "runtime=python&handler=app.handler&max_instances=16",
        "app.py",
        py,
    );
    let js = r#"
const ignis = require('ignis');
exports.handler = async () => {
  for (let attempt = 0; ; attempt++) {
    const { value, version } = await ignis.kv.getVersioned('cas-visits');
    const n = value === null ? 0 : Number(value.toString());
    try {
      await ignis.kv.put('cas-visits', String(n + 1), value === null ? { ifAbsent: true } : { ifVersion: version });
      return { n: n + 1, attempts: attempt + 1 };
    } catch (e) {
      if (e.status !== 412) throw e;
    }
  }
};
"#;
    deploy_in(
        &s,
        "default",
        "cas",
        "runtime=node&handler=app.handler&max_instances=16",
        "app.js",
        js,
    );
    for (name, key) in [("count", "visits"), ("cas", "cas-visits")] {
        let t = Instant::now();
        let results: Vec<serde_json::Value> = std::thread::scope(|scope| {
            let hs: Vec<_> = (0..200)
                .map(|_| {
                    let s = &s;
                    scope.spawn(move || {
                        let r = s.invoke(name, "{}");
                        assert_eq!(r.status, 200, "{name}: {}", r.text());
                        r.json()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        eprintln!("{name}: 200 concurrent visits in {:?}", t.elapsed());
        let r = s.get(&format!("{KV}/{key}"));
        assert_eq!(r.text(), "200", "{name}");
        // Every invocation saw a different count: 1..=200.
        let mut seen: Vec<i64> = results
            .iter()
            .map(|v| v.as_i64().or_else(|| v["n"].as_i64()).unwrap())
            .collect();
        seen.sort();
        assert_eq!(seen, (1..=200).collect::<Vec<_>>(), "{name}");
    }
}

/// A function reaches its own namespace's data with its instance's token, and nothing else:
/// not another namespace's data, not its own namespace's functions or keys; the token dies
/// with the instance.
#[test]
fn a_function_reaches_only_its_own_namespace_s_data() {
    let s = Server::start();
    assert_eq!(
        s.request("PUT", "/v1/namespaces/team", None, b"").status,
        201
    );
    assert_eq!(put(&s, &format!("{KV}/secret"), b"default's").status, 200);
    let code = r#"
import http.client, json, os
import ignis

def call(method, path):
    c = http.client.HTTPConnection(os.environ["IGNIS_API_URL"].split("//")[1])
    c.request(method, path, headers={"Authorization": "Bearer " + os.environ["IGNIS_TOKEN"]})
    r = c.getresponse()
    r.read()
    return r.status

def handler(event, context):
    ignis.kv.put("mine", "team's")
    ignis.objects.create_bucket("team-bucket")
    ignis.objects.put("team-bucket", "k", b"v")
    return {
        "own": ignis.kv.get("mine").decode(),
        "own_object": ignis.objects.get("team-bucket", "k").decode(),
        "url": os.environ["IGNIS_API_URL"],
        "token": os.environ["IGNIS_TOKEN"],
        "other_kv": call("GET", "/v1/namespaces/default/kv/secret"),
        "other_put": call("PUT", "/v1/namespaces/default/kv/secret"),
        "other_buckets": call("GET", "/v1/namespaces/default/buckets"),
        "invoke": call("POST", "/v1/namespaces/team/functions/f/invoke"),
        "keys": call("GET", "/v1/namespaces/team/keys"),
        "functions": call("GET", "/v1/namespaces/team/functions"),
        "info": call("GET", "/v1/system/info"),
    }
"#;
    for (name, network) in [("f", "none"), ("h", "host")] {
        deploy_in(
            &s,
            "team",
            name,
            &format!("runtime=python&handler=app.handler&network={network}"),
            "app.py",
            code,
        );
        let r = invoke_in(&s, "team", name, "{}");
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        assert_eq!(
            (v["own"].as_str(), v["own_object"].as_str()),
            (Some("team's"), Some("v")),
            "{v}"
        );
        if network == "none" {
            assert_eq!(
                v["url"], "http://127.0.0.1:9400",
                "reached through the instance's own loopback"
            );
        }
        for what in [
            "other_kv",
            "other_put",
            "other_buckets",
            "invoke",
            "keys",
            "functions",
            "info",
        ] {
            assert_eq!(v[what], 403, "{name}: {what}: {v}");
        }
        // The token works from outside too while its instance lives, for its data only…
        let token = v["token"].as_str().unwrap().to_string();
        let bearer = format!("Bearer {token}");
        let r = s.raw_request(
            "GET",
            "/v1/namespaces/team/kv/mine",
            &[("authorization", &bearer)],
            None,
            b"",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        // …and is refused once the instance is gone.
        assert_eq!(
            s.request(
                "DELETE",
                &format!("/v1/namespaces/team/functions/{name}"),
                None,
                b""
            )
            .status,
            200
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = s.raw_request(
                "GET",
                "/v1/namespaces/team/kv/mine",
                &[("authorization", &bearer)],
                None,
                b"",
            );
            if r.status == 401 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the token outlived its instance: {}",
                r.status
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(
            s.request(
                "DELETE",
                "/v1/namespaces/team/buckets/team-bucket/objects/k",
                None,
                b""
            )
            .status,
            204
        );
    }
    assert_eq!(s.get(&format!("{KV}/secret")).text(), "default's");
}

#[test]
fn deleting_a_namespace_deletes_its_data() {
    let s = Server::start();
    assert_eq!(
        s.request("PUT", "/v1/namespaces/gone", None, b"").status,
        201
    );
    let ns = "/v1/namespaces/gone";
    assert_eq!(put(&s, &format!("{ns}/kv/k"), b"v").status, 200);
    assert_eq!(put(&s, &format!("{ns}/buckets/b01"), b"").status, 201);
    assert_eq!(
        put(&s, &format!("{ns}/buckets/b01/objects/o"), b"body").status,
        200
    );
    assert!(s.dir.join("data/objects/gone").exists() || s.dir.join("objects/gone").exists());
    assert_eq!(s.request("DELETE", ns, None, b"").status, 200);
    assert!(!s.dir.join("data/objects/gone").exists() && !s.dir.join("objects/gone").exists());
    assert_eq!(s.request("PUT", ns, None, b"").status, 201);
    assert_eq!(s.get(&format!("{ns}/kv/k")).status, 404);
    assert_eq!(
        s.get(&format!("{ns}/buckets")).json()["buckets"],
        serde_json::json!([])
    );
}

/// Peak resident memory of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    proc_status_kib(pid, "VmHWM").expect("VmHWM of the server")
}

/// One MiB of CSV lines.
fn csv_block() -> Vec<u8> {
    let mut block = Vec::with_capacity(1 << 20);
    let mut i = 0u64;
    while block.len() < (1 << 20) {
        block.extend_from_slice(format!("row-{i:08},sensor-{},value\n", i % 7).as_bytes());
        i += 1;
    }
    block.truncate(1 << 20);
    *block.last_mut().unwrap() = b'\n';
    block
}

/// An upload of 1 GiB (`IGNIS_ETL_MB` to change) streams through the server with bounded
/// memory and fires a storage trigger whose function extracts it from storage, transforms it
/// (upper case) and loads the result into another bucket, streaming both ways.
#[test]
fn a_large_upload_streams_and_fires_a_storage_trigger_that_transforms_it() {
    let mb: usize = std::env::var("IGNIS_ETL_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let s = Server::start();
    for b in ["raw", "clean"] {
        assert_eq!(put(&s, &format!("{BUCKETS}/{b}"), b"").status, 201);
    }
    let etl = r#"
import ignis

def handler(event, context):
    src = ignis.objects.open(event["bucket"], event["key"])
    lines = 0

    class Upper:
        def read(self, n):
            nonlocal lines
            chunk = src.read(1 << 20)
            lines += chunk.count(b"\n")
            return chunk.upper()

    meta = ignis.objects.put("clean", event["key"], Upper(), content_type="text/csv")
    ignis.kv.put("etl/" + event["key"], str(lines))
    return {"lines": lines, "size": meta["size"], "etag": meta["etag"]}
"#;
    deploy_in(
        &s,
        "default",
        "etl",
        "runtime=python&handler=app.handler&timeout_ms=900000&memory_mb=256",
        "app.py",
        etl,
    );
    let trigger =
        r#"{"kind": "storage", "bucket": "raw", "events": ["object:created"], "suffix": ".csv"}"#;
    assert_eq!(
        s.request(
            "PUT",
            "/v1/namespaces/default/triggers/uploads",
            Some("application/json"),
            trigger.as_bytes()
        )
        .status,
        201
    );
    assert_eq!(
        s.request(
            "PUT",
            "/v1/namespaces/default/rules/etl",
            Some("application/json"),
            br#"{"trigger": "uploads", "function": "etl"}"#
        )
        .status,
        201
    );
    // Not a .csv: no firing.
    assert_eq!(
        put(&s, &format!("{BUCKETS}/raw/objects/notes.txt"), b"x").status,
        200
    );

    let block = csv_block();
    let (mut want_in, mut want_out) = (Md5::new(), Md5::new());
    let upper = block.to_ascii_uppercase();
    let before = peak_rss_kib(s.pid());
    let t = Instant::now();
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    write!(
        conn,
        "PUT {BUCKETS}/raw/objects/big.csv HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: text/csv\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        s.key,
        mb << 20
    )
    .unwrap();
    for _ in 0..mb {
        conn.write_all(&block).unwrap();
        want_in.update(&block);
        want_out.update(&upper);
    }
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    eprintln!("uploaded {mb} MiB in {:?}", t.elapsed());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let want_in = hex(&want_in.finalize());
    assert!(answer.contains(&want_in), "{answer}");
    let growth_mib = (peak_rss_kib(s.pid()).saturating_sub(before)) / 1024;
    assert!(
        growth_mib < 64,
        "the server's peak RSS grew by {growth_mib} MiB"
    );

    // The trigger fired once, for big.csv; its function loaded the transformed copy.
    let deadline = Instant::now() + Duration::from_secs(600);
    let firing = loop {
        let f = s
            .get("/v1/namespaces/default/triggers/uploads/firings")
            .json();
        if let Some(first) = f["firings"].as_array().and_then(|a| a.first()).cloned() {
            break first;
        }
        assert!(Instant::now() < deadline, "no firing");
        std::thread::sleep(Duration::from_millis(100));
    };
    let id = firing["activations"][0]["activation_id"]
        .as_str()
        .unwrap()
        .to_string();
    let a = wait_activation(&s, &id, 900);
    assert_eq!(a["status"], "success", "{a}");
    let lines = block.iter().filter(|b| **b == b'\n').count() * mb;
    assert_eq!(a["result"]["lines"], lines, "{a}");
    assert_eq!(a["result"]["size"], (mb << 20) as u64);
    assert_eq!(a["result"]["etag"], hex(&want_out.finalize()));
    assert_eq!(
        s.get(&format!("{KV}/etl/big.csv")).text(),
        lines.to_string()
    );
    let head = s.request(
        "HEAD",
        &format!("{BUCKETS}/clean/objects/big.csv"),
        None,
        b"",
    );
    assert_eq!(head.header("content-type"), Some("text/csv"));
    let firings = s
        .get("/v1/namespaces/default/triggers/uploads/firings")
        .json();
    assert_eq!(firings["firings"].as_array().unwrap().len(), 1, "{firings}");
    eprintln!("upload and ETL of {mb} MiB in {:?}", t.elapsed());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a boto3 script of tests/fixtures against the server's S3 API with its admin key;
/// returns what it printed, once it succeeded.
fn boto3(s: &Server, script: &str, args: &[&str]) -> String {
    let region = s.get("/v1/system/info").json()["aws"]["region"]
        .as_str()
        .unwrap()
        .to_string();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let out = std::process::Command::new("python3")
        .arg(&script)
        .args(args)
        .env("IGNIS_S3_URL", format!("{}/s3", s.url))
        .env("IGNIS_S3_KEY", &s.key)
        .env("IGNIS_S3_REGION", region)
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "boto3 script {script:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// boto3's s3 client, with `endpoint_url` at `/s3` and path-style addressing: buckets,
/// objects with metadata, listings with pages and with a delimiter, copies, multipart uploads
/// (by hand, listed, and through the transfer manager), errors (tests/fixtures/boto3_s3.py).
#[test]
fn boto3_s3_client_round_trip() {
    let s = Server::start();
    let stdout = boto3(&s, "boto3_s3.py", &[]);
    assert!(stdout.contains("checks passed"), "{stdout}");
    // What boto3 stored is what the REST API sees, and a bearer key is refused on /s3.
    assert_eq!(s.get(BUCKETS).json()["buckets"], serde_json::json!([]));
    let r = s.request("GET", "/s3/", None, b"");
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("<Code>InvalidRequest</Code>"),
        "{}",
        r.text()
    );
}

/// Multipart uploads in progress survive a `kill -9` of the server: the parts uploaded before
/// it are listed after the restart, the upload completes with S3's ETag and reads back whole,
/// another is aborted, and no part's file is left (tests/fixtures/boto3_s3_restart.py). The
/// firings of a storage trigger, committed with their changes, are there after the restart.
#[test]
fn multipart_uploads_survive_kill_9() {
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    let trigger = s.request(
        "PUT",
        "/v1/namespaces/default/triggers/mpu-events",
        Some("application/json"),
        br#"{"bucket": "mpu"}"#,
    );
    assert_eq!(trigger.status, 201, "{}", trigger.text());
    let out = boto3(&s, "boto3_s3_restart.py", &["before"]);
    let ids: Vec<String> = out
        .lines()
        .find_map(|l| l.strip_prefix("upload "))
        .unwrap_or_else(|| panic!("no upload ids in {out:?}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(ids.len(), 2, "{out}");
    assert_eq!(
        put(&s, &format!("{BUCKETS}/mpu/objects/small"), b"x").status,
        200
    );
    s.kill();

    let s = Server::launch(tmp.path(), &[]);
    let firings = || {
        s.get("/v1/namespaces/default/triggers/mpu-events/firings")
            .json()["firings"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(firings(), 1, "the firing of the put before the kill");
    let out = boto3(&s, "boto3_s3_restart.py", &["after", &ids[0], &ids[1]]);
    assert!(out.contains("checks passed"), "{out}");
    assert_eq!(firings(), 2, "and the completed upload's");
    // Left: the bodies of `small` and `big.bin`; the parts' files went with their uploads.
    let files = std::fs::read_dir(tmp.path().join("data/objects/default"))
        .unwrap()
        .count();
    assert_eq!(files, 2);
}

/// Other languages use HTTP: an exec function (bash, with no network) increments a counter
/// through `$IGNIS_API_URL` with `$IGNIS_TOKEN`.
#[test]
fn an_exec_function_reaches_its_data_over_http() {
    let s = Server::start();
    let script = r#"#!/bin/bash
hostport=${IGNIS_API_URL#http://}
exec 3<>/dev/tcp/${hostport%:*}/${hostport##*:}
printf 'POST /v1/namespaces/%s/kv/exec-hits HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: 15\r\nConnection: close\r\n\r\n{"increment":1}' "$IGNIS_NAMESPACE" "$IGNIS_TOKEN" >&3
body=$(cat <&3 | tail -n 1)
echo "$IGNIS_API_URL $body"
"#;
    let r = s.deploy_file("hits", "runtime=exec&handler=run.sh", "run.sh", script);
    assert_eq!(r.status, 201, "{}", r.text());
    for want in [1, 2] {
        let r = s.invoke("hits", "{}");
        assert_eq!(r.status, 200, "{}", r.text());
        let out = r.text();
        assert!(out.starts_with("http://127.0.0.1:9400 "), "{out}");
        assert!(out.contains(&format!(r#""value":{want}"#)), "{out}");
    }
    assert_eq!(s.get(&format!("{KV}/exec-hits")).text(), "2");
}

/// Entries and objects acknowledged before a `kill -9` are there after the restart, bodies
/// whole; an upload cut off mid-body leaves nothing.
#[test]
fn data_survives_kill_9() {
    let mut s = Server::start();
    let tmp = s.take_dir().unwrap();
    assert_eq!(put(&s, &format!("{KV}/k?ttl=3600"), b"v1").status, 200);
    let r = s.request(
        "POST",
        &format!("{KV}/n"),
        Some("application/json"),
        br#"{"increment": 41}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(put(&s, &format!("{BUCKETS}/keep"), b"").status, 201);
    let body = vec![7u8; 3 << 20];
    assert_eq!(
        put(&s, &format!("{BUCKETS}/keep/objects/o"), &body).status,
        200
    );
    // An upload the server never finishes receiving.
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    write!(
        conn,
        "PUT {BUCKETS}/keep/objects/partial HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 1000000\r\n\r\n",
        s.key
    )
    .unwrap();
    conn.write_all(&[1u8; 4096]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.kill();
    drop(conn);
    let s = Server::launch(tmp.path(), &[]);
    assert_eq!(s.get(&format!("{KV}/k")).text(), "v1");
    let r = s.request(
        "POST",
        &format!("{KV}/n"),
        Some("application/json"),
        br#"{"increment": 1}"#,
    );
    assert_eq!(r.json()["value"], 42);
    let r = s.get(&format!("{BUCKETS}/keep/objects/o"));
    assert_eq!(r.status, 200);
    assert!(r.body == body, "the body is whole");
    assert_eq!(
        s.get(&format!("{BUCKETS}/keep/objects/partial")).status,
        404
    );
    let listed = s.get(&format!("{BUCKETS}/keep/objects")).json();
    assert_eq!(names_in(&listed["objects"], "key"), ["o"]);
}
