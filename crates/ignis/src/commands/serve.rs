//! `ignis serve`: the whole platform in one process, with the embedded store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ignis_client::CliConfig;
use ignis_controller::Controller;
use ignis_gateway::{AppState, KeyRing, MasterKey};
use ignis_invoker::{CodeSource, Invoker, InvokerConfig};
use ignis_sandbox::{Sandbox, SandboxConfig};
use ignis_store::{BlobStore, Role, SqliteStore, Store};
use serde::Deserialize;

use super::GlobalOpts;
use super::cluster_mode::{self, NodeRole};

/// Prints a line to stdout, ignoring a closed stdout (`ignis serve | head`): the server must
/// keep running and shut down cleanly whatever happens to its output.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Settings of the server. The same type is read from the config file (TOML) and filled from
/// flags and environment variables, which win over the file.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Seconds an idle instance is kept.
    pub keep_alive_secs: Option<u64>,
    /// Invocations of one function that may wait for an instance.
    pub queue_per_function: Option<usize>,
    /// Python interpreter.
    pub python: Option<PathBuf>,
    /// Node.js.
    pub node: Option<PathBuf>,
    /// Most processes and threads in one instance (cgroup pids limit).
    pub pids_max: Option<u32>,
    /// Stem cells (pre-started runtime instances) kept ready per runtime.
    pub stem_cells: Option<usize>,
    /// Most memory (MiB) the limits of all live instances may add up to.
    pub memory_budget_mb: Option<u64>,
    /// Use the sandbox's isolation layers (default true).
    pub isolation: Option<bool>,
    /// Fork python stem cells from a warmed interpreter (default true).
    pub zygote: Option<bool>,
    /// The AWS region of the Lambda-compatible API and of `lambda` instances.
    pub aws_region: Option<String>,
    /// Invocations of one namespace running at once, for namespaces without their own quota
    /// (0: no limit).
    pub namespace_concurrency: Option<u32>,
    /// Invocations one namespace may start per minute, for namespaces without their own quota
    /// (0: no limit).
    pub namespace_invocations_per_minute: Option<u32>,
    /// Days an activation is kept, for namespaces without their own quota (0: for good).
    pub activation_retention_days: Option<u32>,
    /// Activations one namespace keeps at most, for namespaces without their own quota (0: no
    /// limit).
    pub activation_retention_count: Option<u32>,
    /// MiB the memory limits of one namespace's live instances may add up to, for namespaces
    /// without their own quota (0: no limit but the memory budget).
    pub namespace_memory_mb: Option<u32>,
    /// Functions one namespace may have, for namespaces without their own quota (0: no limit).
    pub namespace_functions: Option<u32>,
    /// MiB of one function's code as uploaded, for namespaces without their own quota.
    pub code_mb: Option<u32>,
    /// MiB of one function's code once unpacked, for namespaces without their own quota.
    pub code_unpacked_mb: Option<u32>,
    /// HTTP connections served at once.
    pub max_connections: Option<usize>,
    /// Seconds a client has to send a request's head; idle connections close after it too.
    pub header_timeout_secs: Option<u64>,
    /// Seconds a request body may stall.
    pub body_timeout_secs: Option<u64>,
    /// Serve `/metrics` without a key (default false: an admin key is needed).
    pub metrics_public: Option<bool>,
    /// Cluster mode: NATS server URLs, comma-separated (docs/cluster.md).
    pub cluster: Option<String>,
    /// Cluster mode: what this node does (gateway, invoker, all).
    pub role: Option<super::cluster_mode::NodeRole>,
    /// Cluster mode: this node's name, unique in the cluster.
    pub node_name: Option<String>,
    /// Cluster mode: copies JetStream keeps of the log, the code and the KV buckets.
    pub cluster_replicas: Option<usize>,
    /// Cluster mode: log entries between two compactions (snapshot, then older entries
    /// deleted); 0 never compacts.
    pub cluster_compact_entries: Option<u64>,
    /// The price model of usage reports (`[pricing]`: per_million_requests, per_gb_second,
    /// free_tier, free_requests_per_month, free_gb_seconds_per_month).
    pub pricing: Option<ignis_core::usage::PriceModel>,
}

/// Run the Ignis server.
#[derive(Args, Debug)]
pub struct ServeCommand {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, env = "IGNIS_LISTEN")]
    listen: Option<String>,
    /// Directory for the database, code and runtime files [default: ~/.local/share/ignis]
    #[arg(long, env = "IGNIS_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Server config file (TOML; keys: listen, data_dir, keep_alive_secs, queue_per_function,
    /// python, node, pids_max, stem_cells, memory_budget_mb, isolation, zygote, aws_region,
    /// namespace_concurrency, namespace_invocations_per_minute, activation_retention_days,
    /// activation_retention_count, namespace_memory_mb, namespace_functions, code_mb,
    /// code_unpacked_mb, max_connections, header_timeout_secs, body_timeout_secs,
    /// metrics_public, cluster, role, node_name, cluster_replicas, cluster_compact_entries, and a
    /// [pricing] table)
    #[arg(long, env = "IGNIS_SERVER_CONFIG")]
    config: Option<PathBuf>,
    /// Seconds an idle instance is kept before it is reclaimed (scale to zero) [default: 600]
    #[arg(long, env = "IGNIS_KEEP_ALIVE_SECS")]
    keep_alive_secs: Option<u64>,
    /// How many invocations of one function may wait for a free instance [default: 100]
    #[arg(long, env = "IGNIS_QUEUE_PER_FUNCTION")]
    queue_per_function: Option<usize>,
    /// Default quota: invocations of one namespace running at once; 0 for no limit (a
    /// namespace's own quota wins) [default: 1000]
    #[arg(long, env = "IGNIS_NAMESPACE_CONCURRENCY")]
    namespace_concurrency: Option<u32>,
    /// Default quota: invocations one namespace may start per minute; 0 for no limit (a
    /// namespace's own quota wins) [default: 0]
    #[arg(long, env = "IGNIS_NAMESPACE_INVOCATIONS_PER_MINUTE")]
    namespace_invocations_per_minute: Option<u32>,
    /// Default quota: days an activation is kept, then deleted by a task every minute; 0 keeps
    /// them for good (a namespace's own quota wins) [default: 0]
    #[arg(long, env = "IGNIS_ACTIVATION_RETENTION_DAYS")]
    activation_retention_days: Option<u32>,
    /// Default quota: activations one namespace keeps, the newest; 0 for no limit (a
    /// namespace's own quota wins) [default: 0]
    #[arg(long, env = "IGNIS_ACTIVATION_RETENTION_COUNT")]
    activation_retention_count: Option<u32>,
    /// Default quota: MiB the memory limits of one namespace's live instances may add up to;
    /// idle instances of the namespace are evicted to make room, then 429; 0 for no limit but
    /// the memory budget (a namespace's own quota wins) [default: 0]
    #[arg(long, env = "IGNIS_NAMESPACE_MEMORY_MB")]
    namespace_memory_mb: Option<u32>,
    /// Default quota: functions one namespace may have; 0 for no limit (a namespace's own
    /// quota wins) [default: 1000]
    #[arg(long, env = "IGNIS_NAMESPACE_FUNCTIONS")]
    namespace_functions: Option<u32>,
    /// Default quota: MiB of one function's code as uploaded, zip or file; 0 for no limit but
    /// the request size (a namespace's own quota wins) [default: 50]
    #[arg(long, env = "IGNIS_CODE_MB")]
    code_mb: Option<u32>,
    /// Default quota: MiB of one function's code once unpacked; 0 for no limit (a namespace's
    /// own quota wins) [default: 250]
    #[arg(long, env = "IGNIS_CODE_UNPACKED_MB")]
    code_unpacked_mb: Option<u32>,
    /// HTTP connections served at once; more wait to be accepted [default: 4096]
    #[arg(long, env = "IGNIS_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Seconds a client has to send a request's line and headers (slow clients are cut off);
    /// idle keep-alive connections are closed after it too [default: 15]
    #[arg(long, env = "IGNIS_HEADER_TIMEOUT_SECS")]
    header_timeout_secs: Option<u64>,
    /// Seconds a request body may stall before the request fails with 408 [default: 30]
    #[arg(long, env = "IGNIS_BODY_TIMEOUT_SECS")]
    body_timeout_secs: Option<u64>,
    /// Stem cells (pre-started sandboxed python/node instances) kept ready per runtime; 0 turns
    /// them off [default: 2]
    #[arg(long, env = "IGNIS_STEM_CELLS")]
    stem_cells: Option<usize>,
    /// Most memory (MiB) the limits of all live instances may add up to; idle instances are
    /// evicted (least recently used first) to make room [default: 80% of the machine's memory]
    #[arg(long, env = "IGNIS_MEMORY_BUDGET_MB")]
    memory_budget_mb: Option<u64>,
    /// Fork python stem cells from a warmed interpreter (the zygote) instead of starting one
    /// each; used where the sandbox allows it (root, namespaces, cgroups) [default: true]
    #[arg(long, env = "IGNIS_ZYGOTE", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new())]
    zygote: Option<bool>,
    /// The AWS region of the Lambda-compatible API: requests must be signed for it, ARNs and
    /// `AWS_REGION` of `lambda` instances name it [default: us-east-1]
    #[arg(long, env = "IGNIS_AWS_REGION")]
    aws_region: Option<String>,
    /// Serve /metrics to anyone, without a key (by default it needs an admin key)
    #[arg(long, env = "IGNIS_METRICS_PUBLIC", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    metrics_public: Option<bool>,
    /// Price of one million requests in usage reports [default: 0.20]
    #[arg(long, env = "IGNIS_PRICE_PER_MILLION_REQUESTS")]
    price_per_million_requests: Option<f64>,
    /// Price of one GB-second in usage reports [default: 0.0000166667]
    #[arg(long, env = "IGNIS_PRICE_PER_GB_SECOND")]
    price_per_gb_second: Option<f64>,
    /// Take a monthly free tier (1M requests, 400 000 GB-s per namespace) off usage costs
    /// [default: false]
    #[arg(long, env = "IGNIS_FREE_TIER", value_name = "BOOL", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    free_tier: Option<bool>,
    /// Join a cluster: the NATS server URLs (with JetStream), comma-separated; the store, the
    /// code and the async queue are then the cluster's (docs/cluster.md)
    #[arg(long, env = "IGNIS_CLUSTER", value_name = "URLS")]
    cluster: Option<String>,
    /// Cluster mode: what this node does: gateway (API, background work under a lease, no
    /// instances), invoker (runs instances) or all [default: all]
    #[arg(long, env = "IGNIS_ROLE", value_enum)]
    role: Option<super::cluster_mode::NodeRole>,
    /// Cluster mode: this node's name, unique in the cluster [default: host name and a hash of
    /// the data directory]
    #[arg(long, env = "IGNIS_NODE_NAME")]
    node_name: Option<String>,
    /// Cluster mode: copies JetStream keeps of the store's log, the code and the KV buckets
    /// (3 for a cluster of three NATS servers) [default: 1]
    #[arg(long, env = "IGNIS_CLUSTER_REPLICAS")]
    cluster_replicas: Option<usize>,
    /// Cluster mode: entries the store's log grows by between two compactions (a snapshot of
    /// the store, then the entries before it deleted but as many again); 0 never compacts
    /// [default: 100000]
    #[arg(long, env = "IGNIS_CLUSTER_COMPACT_ENTRIES")]
    cluster_compact_entries: Option<u64>,
    /// Do not write the CLI config file on first start
    #[arg(long)]
    no_cli_config: bool,
    /// Refuse to start unless every sandbox layer (namespaces, private filesystem, network
    /// isolation, cgroups, seccomp, unprivileged user) is available
    #[arg(long, env = "IGNIS_REQUIRE_ISOLATION", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    require_isolation: bool,
    /// Run instances without namespaces, cgroups or seccomp (debugging only)
    #[arg(long, env = "IGNIS_NO_ISOLATION", conflicts_with = "require_isolation", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true")]
    no_isolation: bool,
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ignis");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/share/ignis"),
        None => PathBuf::from("ignis-data"),
    }
}

/// 80% of the machine's memory, in MiB.
fn default_memory_budget_mb() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(4 * 1024 * 1024);
    total_kb / 1024 * 8 / 10
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

const PYTHON_PROBE: &[&str] = &[
    "-c",
    "import sys; print(sys.executable); print(sys.base_prefix)",
];
const NODE_PROBE: &[&str] = &[
    "-e",
    "const p=require('path');const e=require('fs').realpathSync(process.execPath);console.log(e);console.log(p.dirname(p.dirname(e)))",
];

/// Runs an interpreter to learn its real executable and installation prefix (a pyenv shim
/// resolves to the real python, which then runs without the shim's cost, and the prefix is
/// what the sandbox must show read-only).
fn probe_interpreter(cmd: &Path, args: &[&str]) -> Option<(PathBuf, PathBuf)> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    if !out.status.success() {
        tracing::warn!(interpreter = %cmd.display(), "interpreter probe failed");
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let exe = PathBuf::from(lines.next()?.trim());
    let prefix = PathBuf::from(lines.next()?.trim());
    Some((exe, prefix))
}

struct Blobs(BlobStore);

impl CodeSource for Blobs {
    fn read(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        self.0.get(sha256)
    }
}

impl ServeCommand {
    fn config(&self) -> anyhow::Result<ServerConfig> {
        let mut cfg = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                toml::from_str::<ServerConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => ServerConfig::default(),
        };
        if self.listen.is_some() {
            cfg.listen = self.listen.clone();
        }
        if self.data_dir.is_some() {
            cfg.data_dir = self.data_dir.clone();
        }
        if self.keep_alive_secs.is_some() {
            cfg.keep_alive_secs = self.keep_alive_secs;
        }
        if self.queue_per_function.is_some() {
            cfg.queue_per_function = self.queue_per_function;
        }
        if self.namespace_concurrency.is_some() {
            cfg.namespace_concurrency = self.namespace_concurrency;
        }
        if self.namespace_invocations_per_minute.is_some() {
            cfg.namespace_invocations_per_minute = self.namespace_invocations_per_minute;
        }
        if self.activation_retention_days.is_some() {
            cfg.activation_retention_days = self.activation_retention_days;
        }
        if self.activation_retention_count.is_some() {
            cfg.activation_retention_count = self.activation_retention_count;
        }
        if self.namespace_memory_mb.is_some() {
            cfg.namespace_memory_mb = self.namespace_memory_mb;
        }
        if self.namespace_functions.is_some() {
            cfg.namespace_functions = self.namespace_functions;
        }
        if self.code_mb.is_some() {
            cfg.code_mb = self.code_mb;
        }
        if self.code_unpacked_mb.is_some() {
            cfg.code_unpacked_mb = self.code_unpacked_mb;
        }
        if self.max_connections.is_some() {
            cfg.max_connections = self.max_connections;
        }
        if self.header_timeout_secs.is_some() {
            cfg.header_timeout_secs = self.header_timeout_secs;
        }
        if self.body_timeout_secs.is_some() {
            cfg.body_timeout_secs = self.body_timeout_secs;
        }
        if self.memory_budget_mb.is_some() {
            cfg.memory_budget_mb = self.memory_budget_mb;
        }
        if self.stem_cells.is_some() {
            cfg.stem_cells = self.stem_cells;
        }
        if self.zygote.is_some() {
            cfg.zygote = self.zygote;
        }
        if self.aws_region.is_some() {
            cfg.aws_region = self.aws_region.clone();
        }
        if self.no_isolation {
            cfg.isolation = Some(false);
        }
        if self.metrics_public.is_some() {
            cfg.metrics_public = self.metrics_public;
        }
        if self.cluster.is_some() {
            cfg.cluster = self.cluster.clone();
        }
        if self.role.is_some() {
            cfg.role = self.role;
        }
        if self.node_name.is_some() {
            cfg.node_name = self.node_name.clone();
        }
        if self.cluster_replicas.is_some() {
            cfg.cluster_replicas = self.cluster_replicas;
        }
        if self.cluster_compact_entries.is_some() {
            cfg.cluster_compact_entries = self.cluster_compact_entries;
        }
        let mut pricing = cfg.pricing.take().unwrap_or_default();
        if let Some(p) = self.price_per_million_requests {
            pricing.per_million_requests = p;
        }
        if let Some(p) = self.price_per_gb_second {
            pricing.per_gb_second = p;
        }
        if let Some(on) = self.free_tier {
            pricing.free_tier = on;
        }
        pricing.validate().map_err(anyhow::Error::msg)?;
        cfg.pricing = Some(pricing);
        Ok(cfg)
    }

    pub async fn execute(self, _global: &GlobalOpts) -> anyhow::Result<()> {
        init_logging();
        let cfg = self.config()?;
        let data_dir = cfg.data_dir.clone().unwrap_or_else(default_data_dir);
        if !data_dir.exists() {
            std::fs::create_dir_all(&data_dir)
                .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
            // It holds keys, environment variables and results: the server's user only.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let data_dir = data_dir.canonicalize()?;
        let _lock = lock_data_dir(&data_dir)?;
        let listen = cfg
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let addr: SocketAddr = listen
            .parse()
            .with_context(|| format!("invalid listen address {listen:?}"))?;

        let joined = match &cfg.cluster {
            Some(urls) => {
                let node = cfg
                    .node_name
                    .clone()
                    .unwrap_or_else(|| cluster_mode::default_node_name(&data_dir));
                cluster_mode::check_node_name(&node)?;
                let role = cfg.role.unwrap_or(NodeRole::All);
                say!("joining the cluster at {urls} as {node} ({role:?})");
                let config = ignis_cluster::ClusterConfig {
                    urls: urls.clone(),
                    node,
                    replicas: cfg.cluster_replicas.unwrap_or(1),
                };
                Some(cluster_mode::join(config, role, &data_dir)?)
            }
            None if cfg.role.is_some() || cfg.node_name.is_some() => {
                anyhow::bail!("--role and --node-name are for cluster mode: add --cluster nats://…")
            }
            None => None,
        };
        let store: Arc<dyn Store> = match &joined {
            Some(j) => j.store.clone(),
            None => Arc::new(
                SqliteStore::open(&data_dir.join("ignis.db"))
                    .context("cannot open the database")?,
            ),
        };
        let mut blobs = BlobStore::open(&data_dir.join("blobs"))?;
        if let Some(j) = &joined {
            blobs = j.share_blobs(blobs)?;
        }
        // A gateway of a cluster runs no instances: no stem cells, no zygote.
        let runs_instances = joined.as_ref().is_none_or(|j| j.role.invokes());
        let bootstraps = ignis_runtime::bootstrap::install(&data_dir.join("runtime"))?;
        let tmp_dir = data_dir.join("tmp");
        std::fs::create_dir_all(&tmp_dir)?;
        let python = cfg
            .python
            .clone()
            .or_else(|| find_in_path("python3"))
            .and_then(|p| probe_interpreter(&p, PYTHON_PROBE));
        let node = cfg
            .node
            .clone()
            .or_else(|| find_in_path("node"))
            .and_then(|p| probe_interpreter(&p, NODE_PROBE));
        let mut sandbox_config = SandboxConfig::new(data_dir.join("sandbox/root"));
        sandbox_config.isolation = cfg.isolation.unwrap_or(true);
        if let Some(n) = cfg.pids_max {
            sandbox_config.pids_max = n;
        }
        for (_, prefix) in python.iter().chain(node.iter()) {
            if !sandbox_config
                .runtime_paths
                .iter()
                .any(|p| prefix.starts_with(p))
            {
                sandbox_config.runtime_paths.push(prefix.clone());
            }
        }
        let sandbox = Sandbox::new(sandbox_config);
        let protections = sandbox.protections().clone();
        if self.require_isolation && !protections.complete() {
            anyhow::bail!(
                "--require-isolation: this host does not allow {}; run as root on Linux with namespaces and cgroups",
                protections.missing().join(", ")
            );
        }
        let python = python.map(|(exe, _)| exe);
        let node = node.map(|(exe, _)| exe);
        let invoker = Invoker::new(
            InvokerConfig {
                code_dir: data_dir.join("code"),
                tmp_dir,
                bootstraps,
                python: python.clone().unwrap_or_else(|| "python3".into()),
                node: node.clone().unwrap_or_else(|| "node".into()),
                keep_alive: Duration::from_secs(cfg.keep_alive_secs.unwrap_or(600)),
                queue_per_function: cfg.queue_per_function.unwrap_or(100),
                stem_cells: if runs_instances {
                    cfg.stem_cells.unwrap_or(2)
                } else {
                    0
                },
                memory_budget_mb: cfg
                    .memory_budget_mb
                    .unwrap_or_else(default_memory_budget_mb),
                zygote: runs_instances && cfg.zygote.unwrap_or(true),
                aws_region: cfg
                    .aws_region
                    .clone()
                    .unwrap_or_else(|| ignis_core::lambda::DEFAULT_REGION.into()),
                wasm: ignis_wasm::WasmConfig::new(data_dir.join("wasm-cache")),
            },
            sandbox.clone(),
            Arc::new(Blobs(blobs.clone())),
        );
        let invoker_region = invoker.aws_region().to_string();
        let mut objects = ignis_store::ObjectFiles::open(&data_dir.join("objects"))?;
        if let Some(j) = &joined {
            objects = j.share_objects(objects)?;
        }
        let instance_tokens = invoker.tokens().clone();
        let controller = Controller::new(store.clone(), blobs, objects, invoker.clone())?;
        controller.set_quota_defaults(ignis_controller::QuotaDefaults::default().overridden_by(
            ignis_store::NamespaceQuotas {
                concurrency: cfg.namespace_concurrency,
                invocations_per_minute: cfg.namespace_invocations_per_minute,
                activation_retention_days: cfg.activation_retention_days,
                activation_retention_count: cfg.activation_retention_count,
                memory_mb: cfg.namespace_memory_mb,
                functions: cfg.namespace_functions,
                code_mb: cfg.code_mb,
                code_unpacked_mb: cfg.code_unpacked_mb,
            },
        ));
        controller.set_pricing(cfg.pricing.clone().unwrap_or_default());

        let mut master = master_key(&data_dir)?;
        if let Some(j) = &joined {
            let local = std::fs::read_to_string(data_dir.join("master.key"))?;
            let shared = j.shared_master_key(&local)?;
            master = MasterKey::from_hex(&shared).context("the cluster's master key is corrupt")?;
        }
        let master = Arc::new(master);
        let mut keys = store.list_keys()?;
        let mut new_key = None;
        if keys.is_empty() {
            let k = ignis_gateway::generate_key(&master, None, Role::Admin)?;
            store.put_key(&k.record)?;
            write_private(&data_dir.join("admin.key"), &k.token)?;
            keys.push(k.record.clone());
            new_key = Some(k.token);
        } else {
            // Records of older data directories keep the secret in clear, or only its SHA-256
            // (then admin.key, which holds the first admin key in clear, gives the secret back):
            // hash them with argon2id and seal their secrets.
            let admin_token = std::fs::read_to_string(data_dir.join("admin.key")).ok();
            for k in keys.iter_mut() {
                if ignis_gateway::upgrade_record(k, &master, admin_token.as_deref())? {
                    store.put_key(k)?;
                }
            }
        }

        let listener = listen_on(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let bound = listener.local_addr()?;
        invoker.set_data_endpoint(bound);
        let url = format!(
            "http://{}:{}",
            if bound.ip().is_unspecified() {
                "127.0.0.1".to_string()
            } else {
                bound.ip().to_string()
            },
            bound.port()
        );
        let cli_written = if self.no_cli_config {
            None
        } else {
            write_cli_config(&url, &data_dir, new_key.is_some())?
        };

        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "protections": protections,
            "runtimes": {
                "python": python.as_ref().map(|p| p.display().to_string()),
                "node": node.as_ref().map(|p| p.display().to_string()),
                "exec": true,
                "lambda": true,
                "wasm": true,
            },
            "aws": {
                "region": invoker_region,
                "lambda_api": "/2015-03-31/functions",
            },
            "limits": {
                "max_payload_bytes": ignis_core::MAX_PAYLOAD_BYTES,
                "max_result_bytes": ignis_core::MAX_RESULT_BYTES,
                "max_log_bytes": ignis_core::MAX_LOG_BYTES,
            },
        });
        // Told when shutdown starts, so that endless responses (followed logs) end and the
        // graceful shutdown does not wait for their clients.
        let (stopping_tx, stopping_rx) = tokio::sync::watch::channel(false);
        let state = Arc::new(AppState {
            controller: controller.clone(),
            keys: Arc::new(KeyRing::new(keys, master)),
            info,
            metrics_public: cfg.metrics_public.unwrap_or(false),
            stopping: stopping_rx,
        });
        state.keys.accept_instance_tokens(instance_tokens);

        let announcement: Option<cluster_mode::Participation> = match &joined {
            Some(j) => {
                let compact = cfg.cluster_compact_entries.unwrap_or(100_000);
                Some(
                    j.start(&controller, &invoker, state.keys.clone(), compact)
                        .await?,
                )
            }
            None => {
                // Before the async worker, so that a queued workflow invocation delivered again
                // joins its execution instead of driving it twice. (Not in a cluster: another
                // live node may be driving it.)
                match controller.resume_workflows().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(executions = n, "resumed workflow executions"),
                    Err(e) => tracing::error!(error = %e, "cannot resume workflow executions"),
                }
                None
            }
        };
        // Said once the node is whole (in a cluster: it dispatches, answers, heartbeats).
        print_banner(
            &url,
            &data_dir,
            python.as_deref(),
            node.as_deref(),
            &sandbox,
            new_key.as_deref(),
            cli_written.as_deref(),
        );

        controller.start_async_worker();
        controller.start_pruner(prune_interval());
        controller.start_scheduler();
        controller.start_topic_dispatcher();
        controller.start_nats_sources();
        if joined.is_some() {
            // Provisioned instances (min_instances) are a single-server feature for now.
        } else if let Err(e) = controller.provision_all().await {
            tracing::warn!(error = %e, "cannot start provisioned instances");
        }
        let app = Arc::new(ignis_gateway::router(state));
        // wasm components reach their namespace's data through the router itself, in this
        // process (docs/baas.md); `app` outlives every invocation (kept past the shutdown).
        invoker.set_data_service(Arc::new(ignis_gateway::InProcessApi::new(&app)));
        let defaults = ignis_gateway::HttpLimits::default();
        let limits = ignis_gateway::HttpLimits {
            max_connections: cfg.max_connections.unwrap_or(defaults.max_connections),
            header_timeout: cfg
                .header_timeout_secs
                .map_or(defaults.header_timeout, |s| Duration::from_secs(s.max(1))),
            body_idle_timeout: cfg
                .body_timeout_secs
                .map_or(defaults.body_idle_timeout, |s| {
                    Duration::from_secs(s.max(1))
                }),
            ..defaults
        };
        ignis_gateway::serve(listener, (*app).clone(), limits, async move {
            shutdown_signal().await;
            let _ = stopping_tx.send(true);
        })
        .await
        .context("server failed")?;
        say!("shutting down: waiting for invocations in flight");
        if let Some(part) = &announcement {
            // Gateways stop sending here, and what they sent ends, before the instances go.
            part.leave().await;
        }
        controller.shutdown().await;
        drop(app);
        say!("stopped");
        // The process ends now: the cluster connection's runtime is not shut down under its
        // own tasks (which would print a panic on the way out), it just ends with the process.
        std::mem::forget(joined);
        Ok(())
    }
}

/// Listens with a deep accept queue: a burst of connections waits there for the accept loop
/// instead of overflowing it (which resets connections).
fn listen_on(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IGNIS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Holds an exclusive lock on the data directory for as long as the server runs: two servers on
/// one data directory would each cache functions the other changes.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // A server that was just killed may still have instances starting, which hold the lock
    // for the few milliseconds until they exec or die with it: wait a little before refusing.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        // SAFETY: flock on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(file);
        }
        if std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!(
        "another ignis serve is using the data directory {}; stop it or pass another --data-dir",
        dir.display()
    )
}

/// How often activations past their namespace's retention are deleted: every minute, or
/// `IGNIS_PRUNE_INTERVAL_MS` (for tests).
fn prune_interval() -> std::time::Duration {
    let ms = std::env::var("IGNIS_PRUNE_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000u64);
    std::time::Duration::from_millis(ms.max(10))
}

/// The master key that seals key secrets: `<data dir>/master.key`, made on first start.
fn master_key(data_dir: &Path) -> anyhow::Result<MasterKey> {
    let path = data_dir.join("master.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => MasterKey::from_hex(&text)
            .with_context(|| format!("{} is corrupt: expected 64 hex digits", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (key, hex_form) = MasterKey::generate()?;
            write_private(&path, &hex_form)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a file only its owner can read, synced to disk.
pub(crate) fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Writes the CLI config when a key was just made, or when none exists yet; returns its path
/// if written.
fn write_cli_config(
    url: &str,
    data_dir: &Path,
    fresh_key: bool,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = CliConfig::default_path() else {
        return Ok(None);
    };
    if !fresh_key && path.exists() {
        // Keep the user's file, but point it at where this server listens now if it was ours.
        if let Ok(Some(mut existing)) = CliConfig::load(&path)
            && let Ok(key) = std::fs::read_to_string(data_dir.join("admin.key"))
            && existing.key == key.trim()
            && existing.url != url
        {
            existing.url = url.to_string();
            existing.save(&path)?;
            return Ok(Some(path));
        }
        return Ok(None);
    }
    let key = match std::fs::read_to_string(data_dir.join("admin.key")) {
        Ok(k) => k.trim().to_string(),
        Err(_) => return Ok(None),
    };
    let cfg = CliConfig {
        url: url.to_string(),
        key,
        namespace: None,
    };
    cfg.save(&path)
        .with_context(|| format!("cannot write the CLI config {}", path.display()))?;
    Ok(Some(path))
}

fn print_banner(
    url: &str,
    data_dir: &Path,
    python: Option<&Path>,
    node: Option<&Path>,
    sandbox: &Sandbox,
    new_key: Option<&str>,
    cli_config: Option<&Path>,
) {
    let rt = |name: &str, p: Option<&Path>| match p {
        Some(p) => format!("{name} ({})", p.display()),
        None => format!("{name} (not found: install it to use this runtime)"),
    };
    say!("Ignis {} listening on {url}", env!("CARGO_PKG_VERSION"));
    say!("  data dir:  {}", data_dir.display());
    say!(
        "  runtimes:  {}, {}, exec, wasm (wasmtime)",
        rt("python", python),
        rt("node", node)
    );
    say!("  sandbox protections:");
    for (what, on) in sandbox.protections().describe() {
        say!("    [{}] {what}", if on { "on " } else { "off" });
    }
    if let Some(k) = new_key {
        say!("  admin key: {k}");
        say!(
            "             (shown once; also saved in {})",
            data_dir.join("admin.key").display()
        );
    }
    if let Some(p) = cli_config {
        say!(
            "  CLI config written to {}: `ignis fn list` works from here",
            p.display()
        );
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // A second signal ends the process at once.
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second signal: exiting now");
        std::process::exit(130);
    });
}
