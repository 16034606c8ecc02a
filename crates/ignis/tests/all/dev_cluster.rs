//! `ignis dev cluster`: a whole cluster on this machine (a NATS server, a gateway, two
//! invokers), used through its gateway and the CLI config it wrote, then stopped with SIGTERM
//! without leaving a process behind.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::harness::{self, BIN, Server, code_dir, ok, wait_activation};

/// `ignis dev cluster`, stopped (SIGTERM, then SIGKILL of it and every descendant) if the test
/// fails.
struct DevCluster {
    child: Option<Child>,
    pid: u32,
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let family = descendants(self.pid);
        signal(self.pid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        for pid in family {
            signal(pid, libc::SIGKILL);
        }
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with plain integers.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// The parent and state of process `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Every process below `pid`: its children, theirs, and so on.
fn descendants(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Some(p) = entry.file_name().to_str().and_then(|n| n.parse().ok())
            && let Some((ppid, _)) = stat(p)
        {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            found.push(c);
            next.push(c);
        }
    }
    found
}

/// Gone, or a zombie nobody reaped yet.
fn has_exited(pid: u32) -> bool {
    stat(pid).is_none_or(|(_, state)| matches!(state, 'Z' | 'X'))
}

/// The rest of the line after `label` among `lines`.
fn field<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in the summary:\n{}", lines.join("\n")))
        .trim()
}

#[test]
fn a_dev_cluster_runs_functions_and_stops_every_child() {
    let Some(_) = ignis_cluster::natsd::binary_for_test() else {
        return;
    };
    let _counted = harness::counted();
    let tmp = tempfile::tempdir().unwrap();
    let child = Command::new(BIN)
        .args(["dev", "cluster", "--invokers", "2", "--nats", "1"])
        .env("TMPDIR", tmp.path())
        .env("IGNIS_CONFIG", tmp.path().join("cli.toml"))
        .env("HOME", tmp.path())
        .env("IGNIS_LOG", "warn")
        .env_remove("IGNIS_URL")
        .env_remove("IGNIS_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start ignis dev cluster");
    let mut cluster = DevCluster {
        pid: child.id(),
        child: Some(child),
    };
    let stdout = cluster.child.as_mut().unwrap().stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut summary = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while !summary.iter().any(|l: &String| l.contains("stop:")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => summary.push(line),
            Err(e) => panic!("no summary ({e}); printed so far:\n{}", summary.join("\n")),
        }
    }
    let url = field(&summary, "gateway:").to_string();
    let key = field(&summary, "admin key:").to_string();
    let dir = field(&summary, "data:")
        .split("/<node>/")
        .next()
        .unwrap()
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert!(
        dir.starts_with(tmp.path().to_str().unwrap()),
        "a temporary directory under TMPDIR: {dir}"
    );

    // What runs: one NATS server and three nodes, children of the command, each printed.
    let children: Vec<u32> = descendants(cluster.pid)
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|(ppid, _)| ppid == cluster.pid))
        .collect();
    assert_eq!(
        children.len(),
        4,
        "nats + gateway + 2 invokers: {summary:?}"
    );
    for pid in &children {
        assert!(
            summary.iter().any(|l| l.ends_with(&format!(" {pid}"))),
            "pid {pid} is in the summary:\n{}",
            summary.join("\n")
        );
    }
    for node in ["gateway-1", "invoker-1", "invoker-2"] {
        let data = format!("{dir}/{node}");
        assert_eq!(
            std::fs::read_to_string(format!("{data}/admin.key"))
                .unwrap()
                .trim(),
            key,
            "every node has the admin key"
        );
    }

    // The CLI config the gateway wrote works with no other setting.
    let out = Command::new(BIN)
        .args(["fn", "list"])
        .env("IGNIS_CONFIG", tmp.path().join("cli.toml"))
        .env_remove("IGNIS_URL")
        .env_remove("IGNIS_KEY")
        .output()
        .unwrap();
    ok(&out);

    // A python function, deployed and invoked through the gateway, blocking and queued.
    let code = code_dir(&[(
        "app.py",
        "def handler(event, context):\n    return {'hello': event.get('name')}\n",
    )]);
    let gateway = Server::attach(url.trim_start_matches("http://"), &key, tmp.path());
    let app = code.path().join("app.py");
    ok(&gateway.cli(&[
        "fn",
        "deploy",
        "hello",
        "--runtime",
        "python",
        "--handler",
        "app.handler",
        app.to_str().unwrap(),
    ]));
    let out = ok(&gateway.cli(&["invoke", "hello", "-d", r#"{"name": "Ada"}"#]));
    assert_eq!(out.trim(), r#"{"hello":"Ada"}"#);
    let r = gateway.request(
        "POST",
        "/v1/namespaces/default/functions/hello/invoke?blocking=false",
        Some("application/json"),
        br#"{"name": "Grace"}"#,
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["activation_id"].as_str().unwrap().to_string();
    let activation = wait_activation(&gateway, &id, 60);
    assert_eq!(activation["status"], "success", "{activation}");

    // SIGTERM: every node, its instances and NATS are gone, and so is the directory.
    let family = descendants(cluster.pid);
    assert!(family.len() > children.len(), "instances run: {family:?}");
    signal(cluster.pid, libc::SIGTERM);
    let mut child = cluster.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ignis dev cluster did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter().any(|l| l == "stopped"),
        "it said it stopped: {rest:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = family.iter().copied().filter(|&p| !has_exited(p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running after the stop: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !std::path::Path::new(&dir).exists(),
        "{dir} is removed at the end"
    );
}
