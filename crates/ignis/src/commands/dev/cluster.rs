//! `ignis dev cluster`: a whole cluster on this machine (docs/cluster.md), to try cluster mode
//! and to measure it (`bench/cluster/run.sh`).
//!
//! ```text
//!  nats-server ×K   clustered on loopback ports, JetStream, max_payload 16 MB (ignis_cluster::natsd)
//!      │            wait until JetStream answers (a fresh cluster elects its leader first)
//!  gateway-1        ignis serve --role gateway: makes the admin key, writes the CLI config
//!      │            its admin.key copied into every other node's data directory
//!  gateway-2…,      ignis serve --role gateway|invoker, started together, each waited for
//!  invoker-1…N      ("listening on" in its output), then until every gateway counts every
//!                   invoker live (GET /v1/system/cluster)
//!      │
//!  summary on stdout, then wait for Ctrl-C or SIGTERM (a node that dies is reported)
//!      │
//!  SIGTERM to the gateways, then to the invokers (each finishes its invocations), then to NATS
//! ```
//!
//! Every `ignis serve` is a child of this process, started from the main thread (which lives
//! until the end) with a parent-death signal, so that it stops gracefully even if this process
//! is killed; each child, NATS servers included, has its own process group, so that a Ctrl-C in
//! the terminal reaches only this process, which then stops them in order. A node's stdout and
//! stderr go to `<dir>/<node>.log`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use ignis_cluster::natsd::{self, NatsServer};
use ignis_cluster::{Cluster, ClusterConfig};

use crate::commands::GlobalOpts;

/// Prints a line to stdout, ignoring a closed stdout: the nodes must still be stopped in order.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Prints a progress line to stderr, ignoring a closed stderr.
macro_rules! note {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), "dev cluster: {}", format_args!($($arg)*));
    }};
}

mod node;
mod summary;

use crate::commands::serve::write_private;
use node::{Launch, Node, Role, create_private_dir, spawn_node, wait_listening};
use summary::{admin_key, print_summary, summary_json};

/// How long a node may take to listen: joining, rebuilding its replica from the log, probing
/// the sandbox and the interpreters.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a node may take to stop after SIGTERM (it finishes its invocations) before it is
/// killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a fresh NATS cluster may take before JetStream answers.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the gateways may take to see every invoker live once all listen.
const INVOKERS_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a NATS server may take to stop after SIGTERM.
const NATS_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Copies JetStream keeps at most (the usual size of a JetStream cluster's replica group).
const MAX_REPLICAS: usize = 3;

const NO_NATS_SERVER: &str = "nats-server is not installed (looked on PATH and in /usr/sbin): \
    `ignis dev cluster` runs NATS servers with JetStream (2.9 or later) as children. \
    Install it (Debian and Ubuntu: apt-get install nats-server; elsewhere: the release archive \
    of nats-server for your platform), or name it with --nats-server PATH";

/// Run a cluster on this machine: NATS servers, gateways and invokers, until Ctrl-C.
#[derive(Args)]
pub struct ClusterCommand {
    /// Invokers to start: nodes that run the instances (`ignis serve --role invoker`)
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=32))]
    invokers: u16,
    /// Gateways to start: nodes that serve the API and take turns at the background work
    /// (`ignis serve --role gateway`)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=8))]
    gateways: u16,
    /// NATS servers to start, clustered with each other; JetStream keeps min(N, 3) copies of
    /// the store's log, the code and the KV buckets
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u16).range(1..=5))]
    nats: u16,
    /// Directory for the nodes' data directories, their logs and the NATS servers' data; kept
    /// at the end, and used again by the next run with this directory (same --nats) [default:
    /// a temporary directory, removed at the end]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The nats-server to run [default: nats-server on PATH, else /usr/sbin/nats-server]
    #[arg(long, env = "IGNIS_NATS_SERVER", value_name = "PATH")]
    nats_server: Option<PathBuf>,
}

/// Where everything lives: a temporary directory removed at the end, or one given.
enum Base {
    Temporary(tempfile::TempDir),
    Given(PathBuf),
}

impl Base {
    fn path(&self) -> &Path {
        match self {
            Base::Temporary(t) => t.path(),
            Base::Given(p) => p,
        }
    }
}

/// SIGINT and SIGTERM received so far: the first stops the cluster in order, a second kills
/// what is left.
#[derive(Clone)]
struct Signals {
    count: Arc<AtomicUsize>,
    notify: Arc<tokio::sync::Notify>,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let signals = Signals {
            count: Arc::default(),
            notify: Arc::default(),
        };
        let s = signals.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                s.count.fetch_add(1, Ordering::SeqCst);
                s.notify.notify_one();
            }
        });
        Ok(signals)
    }

    fn received(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// The start-up was stopped by a signal: not a failure.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Everything started so far.
#[derive(Default)]
struct Running {
    nats: Vec<NatsServer>,
    nodes: Vec<Node>,
    replicas: usize,
}

impl ClusterCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let signals = Signals::install()?;
        let nats_bin = match &self.nats_server {
            Some(p) if p.is_file() => p.clone(),
            Some(p) => anyhow::bail!("--nats-server: {} is not a file", p.display()),
            None => natsd::binary().ok_or_else(|| anyhow::anyhow!(NO_NATS_SERVER))?,
        };
        let exe = std::env::current_exe().context("cannot find the path of this program")?;
        let base = match &self.dir {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .with_context(|| format!("cannot create {}", d.display()))?;
                Base::Given(d.canonicalize()?)
            }
            None => Base::Temporary(
                tempfile::Builder::new()
                    .prefix("ignis-dev-cluster-")
                    .tempdir()
                    .context("cannot create a temporary directory")?,
            ),
        };
        let mut running = Running::default();
        let started = match self.start(&mut running, &nats_bin, &exe, base.path(), &signals) {
            Ok(()) => wait_until_invokers_live(&running, &signals).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(()) => {
                if global.json {
                    say!("{}", summary_json(&running, base.path()));
                } else {
                    print_summary(&running, base.path(), matches!(base, Base::Temporary(_)));
                }
                let _ = std::io::stdout().flush();
                watch(&mut running, &signals, base.path()).await;
            }
            Err(e) if e.is::<Interrupted>() => note!("interrupted while starting"),
            Err(e) => {
                stop(&mut running, &signals);
                let dir = match base {
                    Base::Temporary(t) => t.keep(),
                    Base::Given(p) => p,
                };
                return Err(e.context(format!(
                    "the cluster did not start (logs kept in {})",
                    dir.display()
                )));
            }
        }
        say!("stopping: the gateways, then the invokers, then NATS");
        stop(&mut running, &signals);
        if let Base::Temporary(t) = base {
            let path = t.path().to_path_buf();
            match t.close() {
                Ok(()) => say!("removed {}", path.display()),
                Err(e) => note!("cannot remove {}: {e}", path.display()),
            }
        }
        say!("stopped");
        Ok(())
    }

    /// Starts NATS, the first gateway, then every other node; returns once all listen.
    fn start(
        &self,
        running: &mut Running,
        nats_bin: &Path,
        exe: &Path,
        base: &Path,
        signals: &Signals,
    ) -> anyhow::Result<()> {
        let n = usize::from(self.nats);
        running.replicas = n.min(MAX_REPLICAS);
        note!(
            "starting {n} NATS server{} ({})",
            plural(n),
            nats_bin.display()
        );
        running.nats =
            natsd::start_cluster(nats_bin, &base.join("nats"), n).with_context(|| {
                format!(
                    "cannot start nats-server (its log: {})",
                    base.join("nats").display()
                )
            })?;
        let nats_urls: Vec<String> = running.nats.iter().map(NatsServer::url).collect();
        let nats_urls = nats_urls.join(",");
        wait_for_jetstream(&nats_urls, running.replicas, signals)
            .with_context(|| format!("NATS logs: {}/n*.log", base.join("nats").display()))?;

        let launch = Launch {
            exe,
            nats_urls: &nats_urls,
            replicas: running.replicas,
            base,
        };
        // The first gateway alone: it makes the admin key, which the others must find in the
        // store (two nodes starting on an empty store would each make one).
        note!("starting gateway-1");
        running
            .nodes
            .push(spawn_node(&launch, "gateway-1", Role::Gateway, true)?);
        wait_listening(running.nodes.last_mut().expect("pushed"), signals)?;
        let admin_key = running.nodes[0].data_dir.join("admin.key");
        let key = std::fs::read_to_string(&admin_key)
            .with_context(|| format!("cannot read {}", admin_key.display()))?;

        let others: Vec<(String, Role)> = (2..=self.gateways)
            .map(|i| (format!("gateway-{i}"), Role::Gateway))
            .chain((1..=self.invokers).map(|i| (format!("invoker-{i}"), Role::Invoker)))
            .collect();
        note!(
            "starting {}",
            others
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let first_new = running.nodes.len();
        for (name, role) in &others {
            let dir = base.join(name);
            create_private_dir(&dir)?;
            write_private(&dir.join("admin.key"), &key)?;
            running.nodes.push(spawn_node(&launch, name, *role, false)?);
        }
        for node in &mut running.nodes[first_new..] {
            wait_listening(node, signals)?;
        }
        for node in &mut running.nodes {
            node.read_banner();
        }
        Ok(())
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Waits until JetStream answers: a NATS cluster just started elects its JetStream leader
/// first. The nodes would wait for it too (for 30 s), but a NATS set-up that never gets there
/// (JetStream off, servers that cannot reach each other) is then reported here, naming NATS,
/// instead of as the first gateway's failure to create the store's stream.
fn wait_for_jetstream(urls: &str, replicas: usize, signals: &Signals) -> anyhow::Result<()> {
    let cluster = Cluster::connect(
        ClusterConfig {
            urls: urls.to_string(),
            node: "dev-cluster".into(),
            replicas,
        },
        Duration::from_secs(15),
    )?;
    let deadline = Instant::now() + JETSTREAM_TIMEOUT;
    loop {
        let client = cluster.client().clone();
        let answer = cluster.wait(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                client.request("$JS.API.INFO", bytes::Bytes::new()),
            )
            .await
        });
        let why = match answer {
            Ok(Ok(msg)) => match serde_json::from_slice::<serde_json::Value>(&msg.payload) {
                Ok(v) if v.get("error").is_none() => return Ok(()),
                Ok(v) => v["error"]["description"]
                    .as_str()
                    .unwrap_or("an error")
                    .to_string(),
                Err(e) => format!("an unreadable answer: {e}"),
            },
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer".to_string(),
        };
        if signals.received() > 0 {
            return Err(Interrupted.into());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "JetStream did not answer within {} s ({why}): is it enabled?",
                JETSTREAM_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every gateway counts every invoker live (`GET /v1/system/cluster`): a node
/// prints `listening on` before it joins the cluster's invokers (its heartbeats start after),
/// and an invocation sent to a gateway that knows no invoker yet fails with `503 no_invoker`.
async fn wait_until_invokers_live(running: &Running, signals: &Signals) -> anyhow::Result<()> {
    let key = admin_key(running);
    let wanted: Vec<&str> = running
        .nodes
        .iter()
        .filter(|n| n.role == Role::Invoker)
        .map(|n| n.name.as_str())
        .collect();
    note!("waiting until the gateways see the invokers");
    let deadline = Instant::now() + INVOKERS_TIMEOUT;
    for gateway in running.nodes.iter().filter(|n| n.role == Role::Gateway) {
        let client =
            ignis_client::Client::new(gateway.url.as_deref().unwrap_or(""), &key, "default")?;
        loop {
            let seen = live_invokers(&client).await;
            if let Ok(seen) = &seen
                && wanted.iter().all(|w| seen.iter().any(|s| s == w))
            {
                break;
            }
            if signals.received() > 0 {
                return Err(Interrupted.into());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} does not count every invoker live {} s after they listened (it sees: {}); \
                     see the invokers' logs",
                    gateway.name,
                    INVOKERS_TIMEOUT.as_secs(),
                    match seen {
                        Ok(s) if s.is_empty() => "none".to_string(),
                        Ok(s) => s.join(", "),
                        Err(e) => e,
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// The invokers a node counts live, by name.
async fn live_invokers(client: &ignis_client::Client) -> Result<Vec<String>, String> {
    let (status, _, body) = client
        .request(ignis_client::Method::GET, "/v1/system/cluster", None)
        .await
        .map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("GET /v1/system/cluster answered {status}"));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(v["invokers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["node"].as_str().map(str::to_string))
        .collect())
}

/// Waits for a signal, saying so when a node ends on its own meanwhile (the others go on: a
/// node killed by hand is how failures are tried).
async fn watch(running: &mut Running, signals: &Signals, base: &Path) {
    let mut nats_gone = std::collections::HashSet::new();
    while signals.received() == 0 {
        for server in &running.nats {
            if let Some(pid) = server.pid()
                && has_exited(pid)
                && nats_gone.insert(pid)
            {
                note!(
                    "NATS server {} (pid {pid}) exited; the others go on (its log: {})",
                    server.name,
                    base.join("nats")
                        .join(format!("{}.log", server.name))
                        .display()
                );
            }
        }
        for node in &mut running.nodes {
            if node.exited.is_none() && node.ended() {
                note!(
                    "{} (pid {}) exited: {}; the others go on (its log: {})",
                    node.name,
                    node.pid(),
                    node.exited.expect("ended"),
                    node.log.display()
                );
            }
        }
        let _ = tokio::time::timeout(Duration::from_millis(500), signals.notify.notified()).await;
    }
}

/// Stops the gateways, then the invokers (SIGTERM: each finishes its invocations), then the
/// NATS servers. Another signal meanwhile, or a node slower than [`STOP_TIMEOUT`], is SIGKILL.
fn stop(running: &mut Running, signals: &Signals) {
    let seen = signals.received();
    for role in [Role::Gateway, Role::Invoker] {
        for node in &mut running.nodes {
            node.ended();
        }
        let mut group: Vec<&mut Node> = running
            .nodes
            .iter_mut()
            .filter(|n| n.role == role && n.exited.is_none())
            .collect();
        for node in &group {
            signal(node.pid(), libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            group.retain_mut(|n| !n.ended());
            if group.is_empty() {
                break;
            }
            let again = signals.received() > seen;
            if again || Instant::now() >= deadline {
                for node in &mut group {
                    note!(
                        "{} (pid {}) {}: killed",
                        node.name,
                        node.pid(),
                        if again {
                            "is still stopping and another signal came"
                        } else {
                            "did not stop within a minute of SIGTERM"
                        }
                    );
                    let _ = node.child.kill();
                    let _ = node.child.wait();
                    node.exited = node.child.try_wait().ok().flatten();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // NATS last: SIGTERM lets it close its JetStream files; dropping a server kills and reaps it.
    for server in &running.nats {
        if let Some(pid) = server.pid() {
            signal(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + NATS_STOP_TIMEOUT;
    while Instant::now() < deadline
        && running
            .nats
            .iter()
            .filter_map(NatsServer::pid)
            .any(|pid| !has_exited(pid))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    running.nats.clear();
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child of ours that has not been reaped yet (so the pid is still its).
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Whether a child of ours has exited (it is a zombie until reaped, or gone).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterCommand,
    }

    #[test]
    fn arguments_have_defaults_and_bounds() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["cluster"]).unwrap().cluster;
        assert_eq!((c.invokers, c.gateways, c.nats), (3, 1, 3));
        assert!(c.dir.is_none());
        let c = Cli::try_parse_from(["cluster", "--invokers", "2", "--nats", "1"])
            .unwrap()
            .cluster;
        assert_eq!((c.invokers, c.nats), (2, 1));
        assert!(Cli::try_parse_from(["cluster", "--invokers", "0"]).is_err());
        assert!(Cli::try_parse_from(["cluster", "--nats", "6"]).is_err());
        assert!(Cli::try_parse_from(["cluster", "--gateways", "0"]).is_err());
    }

    #[test]
    fn exited_children_are_seen_in_proc() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !has_exited(pid) {
            assert!(Instant::now() < deadline, "a zombie is an exited child");
            std::thread::sleep(Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert!(has_exited(pid));
        assert!(!has_exited(std::process::id()));
    }
}
