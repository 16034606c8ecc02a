//! The subcommands of `ignis`, one module each.

mod activations;
mod bench;
mod cluster_mode;
mod data;
mod dev;
mod dlq;
mod execution;
mod function;
mod invoke;
mod key;
mod logs;
mod ns;
mod serve;
mod topic;
mod trigger;
mod usage;

use clap::{Args, Subcommand};

/// Options every client subcommand shares: where the server is and how to talk to it.
///
/// Precedence: flag, then environment variable, then the CLI config file written by
/// `ignis serve` on first start (see `ignis_client::CliConfig`).
#[derive(Args, Debug, Clone)]
pub struct GlobalOpts {
    /// URL of the Ignis server, e.g. http://127.0.0.1:8080
    #[arg(long, env = "IGNIS_URL", global = true)]
    pub url: Option<String>,
    /// API key (`id:secret`)
    #[arg(long, env = "IGNIS_KEY", global = true, hide_env_values = true)]
    pub key: Option<String>,
    /// Namespace to work in
    #[arg(long, short = 'n', env = "IGNIS_NAMESPACE", global = true)]
    pub namespace: Option<String>,
    /// Print JSON instead of human-readable tables
    #[arg(long, global = true)]
    pub json: bool,
}

impl GlobalOpts {
    /// A client for the server these options (or the environment, or the CLI config) name.
    pub fn client(&self) -> Result<ignis_client::Client, ignis_client::ClientError> {
        ignis_client::Client::from_opts(self.url.clone(), self.key.clone(), self.namespace.clone())
    }
}

/// Every subcommand.
#[derive(Subcommand)]
pub enum Command {
    /// Run the Ignis server: gateway, controller and invoker in one process
    Serve(serve::ServeCommand),
    /// Deploy, list, inspect and delete functions
    #[command(name = "fn", alias = "function")]
    Fn(function::FnCommand),
    /// Invoke a function and print its result
    Invoke(invoke::InvokeCommand),
    /// Create, fire and inspect triggers (event sources, cron schedules)
    Trigger(trigger::TriggerCommand),
    /// Link triggers to functions
    Rule(trigger::RuleCommand),
    /// Publish a message to a topic
    Publish(topic::PublishCommand),
    /// Topics of the namespace: list them with their counts
    Topic(topic::TopicCommand),
    /// List and replay asynchronous invocations that failed every attempt
    Dlq(dlq::DlqCommand),
    /// List and inspect activations (records of invocations)
    #[command(alias = "activation")]
    Activations(activations::ActivationsCommand),
    /// List workflow executions and show one as a tree of its steps
    #[command(alias = "executions")]
    Execution(execution::ExecutionCommand),
    /// Print a function's logs from every instance; -f follows new lines as they are written
    Logs(logs::LogsCommand),
    /// Requests, GB-seconds and cost of the namespace over a period
    Usage(usage::UsageCommand),
    /// Load-test a function: many concurrent invocations, then throughput and latency
    Bench(bench::BenchCommand),
    /// API keys: the one in use (and its AWS credentials), create, list, revoke
    Key(key::KeyCommand),
    /// The namespace's key-value store: get, put (TTL, compare-and-swap), incr, delete, list
    Kv(data::KvCommand),
    /// The namespace's object storage: buckets, put, get, list, delete
    #[command(alias = "object")]
    Objects(data::ObjectsCommand),
    /// Namespaces (tenants): create, list, delete (admin keys only)
    #[command(alias = "namespace")]
    Ns(ns::NsCommand),
    /// Tools for trying Ignis on one machine: `dev cluster` runs a whole cluster
    Dev(dev::DevCommand),
}

impl Command {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        match self {
            Command::Serve(c) => c.execute(global).await,
            Command::Fn(c) => c.execute(global).await,
            Command::Invoke(c) => c.execute(global).await,
            Command::Activations(c) => c.execute(global).await,
            Command::Dlq(c) => c.execute(global).await,
            Command::Trigger(c) => c.execute(global).await,
            Command::Rule(c) => c.execute(global).await,
            Command::Logs(c) => c.execute(global).await,
            Command::Usage(c) => c.execute(global).await,
            Command::Publish(c) => c.execute(global).await,
            Command::Topic(c) => c.execute(global).await,
            Command::Execution(c) => c.execute(global).await,
            Command::Bench(c) => c.execute(global).await,
            Command::Key(c) => c.execute(global).await,
            Command::Ns(c) => c.execute(global).await,
            Command::Kv(c) => c.execute(global).await,
            Command::Objects(c) => c.execute(global).await,
            Command::Dev(c) => c.execute(global).await,
        }
    }
}

/// Maps an error to the process exit code: 2 for usage and configuration errors, 3 when the
/// server could not be reached, 4 when the server refused the request, 5 when an invoked
/// function failed, 1 otherwise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    use ignis_client::ClientError;
    match err.downcast_ref::<ClientError>() {
        Some(ClientError::Config(_)) => 2,
        Some(ClientError::Connect { .. }) => 3,
        Some(ClientError::Api { .. }) => 4,
        Some(ClientError::FunctionFailed { .. }) => 5,
        _ => 1,
    }
}
