//! What `ignis dev cluster` prints once everything listens: a table for people, or one line
//! of JSON (`--json`) for scripts.

use std::io::Write;
use std::path::Path;

use ignis_cluster::natsd::NatsServer;

use super::node::{Node, Role};
use super::{Running, plural};

fn gateways(running: &Running) -> impl Iterator<Item = &Node> {
    running.nodes.iter().filter(|n| n.role == Role::Gateway)
}

pub(super) fn admin_key(running: &Running) -> String {
    std::fs::read_to_string(running.nodes[0].data_dir.join("admin.key"))
        .map(|k| k.trim().to_string())
        .unwrap_or_default()
}

fn nats_urls(running: &Running) -> String {
    let urls: Vec<String> = running.nats.iter().map(NatsServer::url).collect();
    urls.join(",")
}

/// The summary as one line of JSON (`--json`), for scripts.
pub(super) fn summary_json(running: &Running, base: &Path) -> serde_json::Value {
    let node = |n: &Node| {
        serde_json::json!({
            "name": n.name,
            "role": n.role.as_str(),
            "url": n.url,
            "pid": n.pid(),
            "data_dir": n.data_dir,
            "log": n.log,
        })
    };
    serde_json::json!({
        "gateways": gateways(running).map(|n| n.url.clone()).collect::<Vec<_>>(),
        "admin_key": admin_key(running),
        "nodes": running.nodes.iter().map(node).collect::<Vec<_>>(),
        "nats": running.nats.iter().map(|s| serde_json::json!({
            "name": s.name,
            "url": s.url(),
            "pid": s.pid(),
        })).collect::<Vec<_>>(),
        "nats_urls": nats_urls(running),
        "replicas": running.replicas,
        "cli_config": running.nodes[0].cli_config,
        "dir": base,
        "pid": std::process::id(),
    })
}

pub(super) fn print_summary(running: &Running, base: &Path, temporary: bool) {
    let count = |role| running.nodes.iter().filter(|n| n.role == role).count();
    let (g, i, n) = (
        count(Role::Gateway),
        count(Role::Invoker),
        running.nats.len(),
    );
    say!(
        "Ignis dev cluster ready: {g} gateway{}, {i} invoker{}, {n} NATS server{} (JetStream \
         replicas: {})",
        plural(g),
        plural(i),
        plural(n),
        running.replicas
    );
    say!("  {:<11} {:<8} {:<28} PID", "NODE", "ROLE", "URL");
    for node in &running.nodes {
        say!(
            "  {:<11} {:<8} {:<28} {}",
            node.name,
            node.role.as_str(),
            node.url.as_deref().unwrap_or("-"),
            node.pid()
        );
    }
    for s in &running.nats {
        say!(
            "  {:<11} {:<8} {:<28} {}",
            format!("nats-{}", s.name),
            "nats",
            s.url(),
            s.pid().map(|p| p.to_string()).unwrap_or_default()
        );
    }
    say!("");
    for node in gateways(running) {
        say!("  gateway:    {}", node.url.as_deref().unwrap_or("-"));
    }
    let key = admin_key(running);
    say!("  admin key:  {key}");
    say!("  NATS:       {}", nats_urls(running));
    match &running.nodes[0].cli_config {
        Some(path) => say!("  CLI config: {path} points at gateway-1: `ignis fn list` works"),
        None => say!("  CLI config: not written (an existing one was kept): use the env line"),
    }
    say!(
        "  env:        export IGNIS_URL={} IGNIS_KEY={key}",
        running.nodes[0].url.as_deref().unwrap_or("-")
    );
    say!(
        "  data:       {0}/<node>/ (data directories), {0}/<node>.log (their output), {0}/nats/",
        base.display()
    );
    say!(
        "  stop:       Ctrl-C, or kill {} (SIGTERM): the nodes stop, then NATS{}",
        std::process::id(),
        if temporary {
            ", and the directory is removed"
        } else {
            ""
        }
    );
}
