//! `ignis fn …`: deploy, list, inspect and delete functions.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ignis_client::display::{Table, rfc3339_s};
use ignis_client::{Client, ClientError, CodeUpload, DeployRequest, package_code};
use ignis_core::{CodeFormat, FunctionSpec, FunctionVersion, Network, Runtime, Web, WorkflowDef};

use super::GlobalOpts;

/// Deploy, list, inspect and delete functions.
#[derive(Args)]
pub struct FnCommand {
    #[command(subcommand)]
    command: FnSubcommand,
}

#[derive(Subcommand)]
enum FnSubcommand {
    /// Deploy a new version of a function from a file or a directory
    Deploy(Box<DeployArgs>),
    /// List the functions of the namespace (the latest version of each)
    #[command(alias = "ls")]
    List,
    /// Show a function: its latest version, or NAME@VERSION
    Get {
        /// NAME or NAME@VERSION
        name: String,
    },
    /// List every version of a function, oldest first
    Versions {
        /// Function name
        name: String,
    },
    /// Delete a function and all its versions
    #[command(alias = "rm")]
    Delete {
        /// Function name
        name: String,
    },
}

#[derive(Args)]
struct DeployArgs {
    /// Function name
    name: String,
    /// The code: a file (uploaded as is) or a directory (uploaded as a zip, `.git` left out).
    /// Without it the latest version's code is kept and only the configuration changes
    path: Option<PathBuf>,
    /// Runtime: python, node, exec, lambda, wasm (Lambda names too: python3.12, nodejs20.x,
    /// provided.al2023), sequence or workflow; implied by --sequence and --workflow
    #[arg(long, short = 'r')]
    runtime: Option<Runtime>,
    /// Make a sequence of these functions (NAME or NAME@VERSION, comma-separated): the output
    /// of each is the input of the next
    #[arg(
        long,
        alias = "components",
        value_name = "F1,F2,…",
        value_delimiter = ','
    )]
    sequence: Vec<String>,
    /// Make a workflow from this definition file (YAML or JSON; see docs/composition.md)
    #[arg(long, value_name = "FILE", conflicts_with = "sequence")]
    workflow: Option<PathBuf>,
    /// `module.function` for python and node (e.g. app.handler); for exec, the executable's
    /// path inside the code; for wasm, the module's file name (default: the uploaded file)
    #[arg(long)]
    handler: Option<String>,
    /// Memory limit of one instance, in MiB
    #[arg(long, value_name = "MB")]
    memory: Option<u32>,
    /// Time limit of one invocation: 500ms, 30s, 2m, 1h, or a number of milliseconds
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    timeout: Option<u64>,
    /// Environment variable of the function (repeatable)
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_env_pair)]
    env: Vec<(String, String)>,
    /// Most instances of the function running at once
    #[arg(long, value_name = "N")]
    max_instances: Option<u32>,
    /// Instances kept warm at all times (provisioned concurrency)
    #[arg(long, value_name = "N")]
    min_instances: Option<u32>,
    /// Invocations one instance runs at once, for I/O-bound handlers (python and node)
    #[arg(long, value_name = "N")]
    instance_concurrency: Option<u32>,
    /// Network access of its instances: none (loopback only, the default) or host
    #[arg(long, value_name = "none|host")]
    network: Option<Network>,
    /// Answer plain HTTP at /fn/NAMESPACE/NAME/…: true (callers need a key) or public
    #[arg(long, value_name = "true|public|false")]
    web: Option<Web>,
    /// A browser origin allowed to call the web function (repeatable; * for any)
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    cors_origins: Vec<String>,
    /// Function invoked with the result of each successful asynchronous invocation
    #[arg(long, value_name = "FUNCTION")]
    on_success: Option<String>,
    /// Function invoked with the error of each asynchronous invocation that failed every attempt
    #[arg(long, value_name = "FUNCTION")]
    on_failure: Option<String>,
    /// Further attempts of a failed asynchronous invocation [default: 2]
    #[arg(long, value_name = "N")]
    retries: Option<u32>,
    /// Size of each instance's private /tmp, in MiB [default: 512]
    #[arg(long = "tmp", value_name = "MB")]
    tmp_mb: Option<u32>,
    /// Fail if the function already exists instead of adding a version
    #[arg(long)]
    no_overwrite: bool,
}

impl FnCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        match self.command {
            FnSubcommand::Deploy(args) => deploy(&client, *args, global.json).await,
            FnSubcommand::List => list(&client, global.json).await,
            FnSubcommand::Get { name } => {
                let v = client.get_function(&name).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    print!("{}", describe(&v));
                }
                Ok(())
            }
            FnSubcommand::Versions { name } => versions(&client, &name, global.json).await,
            FnSubcommand::Delete { name } => {
                let answer = client.delete_function(&name).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&answer)?);
                } else {
                    match answer.get("versions").and_then(|v| v.as_u64()) {
                        Some(1) => println!("deleted {name} (1 version)"),
                        Some(n) => println!("deleted {name} ({n} versions)"),
                        None => println!("deleted {name}"),
                    }
                }
                Ok(())
            }
        }
    }
}

/// Reads a workflow definition: YAML (JSON is YAML too).
fn read_workflow(path: &std::path::Path) -> anyhow::Result<WorkflowDef> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let def: WorkflowDef = serde_yaml::from_str(&text)
        .map_err(|e| ClientError::Config(format!("--workflow {}: {e}", path.display())))?;
    Ok(def)
}

async fn deploy(client: &Client, args: DeployArgs, json: bool) -> anyhow::Result<()> {
    let runtime = match (args.runtime, args.sequence.is_empty(), &args.workflow) {
        (Some(r), _, _) => r,
        (None, false, _) => Runtime::Sequence,
        (None, true, Some(_)) => Runtime::Workflow,
        (None, true, None) => {
            return Err(ClientError::Config(
                "--runtime is required (or --sequence, or --workflow)".into(),
            )
            .into());
        }
    };
    let workflow = args.workflow.as_deref().map(read_workflow).transpose()?;
    if runtime.is_composition() && args.path.is_some() {
        return Err(ClientError::Config(format!(
            "a {runtime} has no code: give --sequence or --workflow, not a path"
        ))
        .into());
    }
    let code = match args.path {
        Some(path) => {
            let shown = path.display().to_string();
            let packaged = tokio::task::spawn_blocking(move || package_code(&path)).await?;
            Some(packaged.with_context(|| format!("cannot package {shown}"))?)
        }
        None => None,
    };
    let handler = match (args.handler, &code) {
        (Some(h), _) => h,
        (None, Some(CodeUpload::File { filename, .. }))
            if matches!(runtime, Runtime::Exec | Runtime::Wasm) =>
        {
            filename.clone()
        }
        (None, _) => String::new(),
    };
    let mut req = DeployRequest::new(runtime, handler, code);
    req.components = args.sequence;
    req.workflow = workflow;
    req.memory_mb = args.memory;
    req.timeout_ms = args.timeout;
    req.max_instances = args.max_instances;
    req.min_instances = args.min_instances;
    req.instance_concurrency = args.instance_concurrency;
    req.network = args.network;
    req.web = args.web;
    req.cors_origins = args.cors_origins;
    req.retries = args.retries;
    req.on_success = args.on_success;
    req.on_failure = args.on_failure;
    req.tmp_mb = args.tmp_mb;
    req.env = args.env.into_iter().collect();
    req.overwrite = !args.no_overwrite;
    check_spec(&req)?;

    let v = client.deploy(&args.name, &req).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "deployed {} version {} ({}, sha256 {})",
            v.name,
            v.version,
            v.spec.runtime,
            short_sha(&v.code.sha256)
        );
    }
    Ok(())
}

/// Checks the limits, environment and handler before uploading anything, so that a mistake is
/// reported at once and named by its flag. Limits left out are checked with the defaults,
/// which are valid.
fn check_spec(req: &DeployRequest) -> Result<(), ClientError> {
    let mut spec = FunctionSpec::new(req.runtime, req.handler.clone());
    spec.memory_mb = req.memory_mb.unwrap_or(spec.memory_mb);
    spec.timeout_ms = req.timeout_ms.unwrap_or(spec.timeout_ms);
    spec.max_instances = req.max_instances.unwrap_or(spec.max_instances);
    spec.tmp_mb = req.tmp_mb.unwrap_or(spec.tmp_mb);
    spec.min_instances = req.min_instances.unwrap_or(spec.min_instances);
    spec.instance_concurrency = req
        .instance_concurrency
        .unwrap_or(spec.instance_concurrency);
    spec.retries = req.retries.unwrap_or(spec.retries);
    spec.cors_origins = req.cors_origins.clone();
    spec.env = req.env.clone();
    spec.components = req.components.clone();
    spec.workflow = req.workflow.clone();
    spec.validate().map_err(|e| {
        let flag = match e.field {
            "memory_mb" => "--memory",
            "timeout_ms" => "--timeout",
            "max_instances" => "--max-instances",
            "tmp_mb" => "--tmp",
            "min_instances" => "--min-instances",
            "instance_concurrency" => "--instance-concurrency",
            "retries" => "--retries",
            "cors_origins" => "--cors-origin",
            "env" => "--env",
            "handler" => "--handler",
            "components" => "--sequence",
            "workflow" => "--workflow",
            other => other,
        };
        ClientError::Config(format!("{flag}: {}", e.message))
    })
}

async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let functions = client.list_functions().await?;
    if json {
        let doc = serde_json::json!({ "functions": functions });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    if functions.is_empty() {
        eprintln!("no functions in namespace {}", client.namespace());
        return Ok(());
    }
    let mut table = Table::new([
        "NAME", "VERSION", "RUNTIME", "HANDLER", "MEMORY", "TIMEOUT", "DEPLOYED",
    ]);
    for f in &functions {
        table.row([
            f.name.clone(),
            f.version.to_string(),
            f.spec.runtime.to_string(),
            f.spec.handler.clone(),
            format!("{} MB", f.spec.memory_mb),
            format_duration_ms(f.spec.timeout_ms),
            rfc3339_s(f.created_ms),
        ]);
    }
    print!("{table}");
    Ok(())
}

async fn versions(client: &Client, name: &str, json: bool) -> anyhow::Result<()> {
    let versions = client.list_versions(name).await?;
    if json {
        let doc = serde_json::json!({ "versions": versions });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    let mut table = Table::new([
        "VERSION", "RUNTIME", "HANDLER", "MEMORY", "TIMEOUT", "CODE", "SIZE", "DEPLOYED",
    ]);
    for v in &versions {
        table.row([
            v.version.to_string(),
            v.spec.runtime.to_string(),
            v.spec.handler.clone(),
            format!("{} MB", v.spec.memory_mb),
            format_duration_ms(v.spec.timeout_ms),
            short_sha(&v.code.sha256).to_owned(),
            format_bytes(v.code.size),
            rfc3339_s(v.created_ms),
        ]);
    }
    print!("{table}");
    Ok(())
}

/// A function version as a key/value listing.
fn describe(v: &FunctionVersion) -> String {
    let mut t = Table::new(Vec::<String>::new());
    t.row(["name", &v.name]);
    t.row(["namespace", &v.namespace]);
    t.row(["version", &v.version.to_string()]);
    t.row(["runtime", v.spec.runtime.as_str()]);
    if !v.spec.runtime.is_composition() {
        t.row(["handler", &v.spec.handler]);
    }
    if !v.spec.components.is_empty() {
        t.row(["components", &v.spec.components.join(" → ")]);
    }
    if let Some(w) = &v.spec.workflow {
        let steps: Vec<String> = w
            .steps
            .iter()
            .map(|s| match &s.map {
                Some(_) => format!("{} (map {})", s.name, s.function),
                None => format!("{} ({})", s.name, s.function),
            })
            .collect();
        t.row(["steps", &steps.join(", ")]);
    }
    t.row(["memory", &format!("{} MB", v.spec.memory_mb)]);
    t.row(["timeout", &format_duration_ms(v.spec.timeout_ms)]);
    t.row(["max instances", &v.spec.max_instances.to_string()]);
    if v.spec.min_instances > 0 {
        t.row(["min instances", &v.spec.min_instances.to_string()]);
    }
    if v.spec.instance_concurrency > 1 {
        t.row([
            "instance concurrency",
            &v.spec.instance_concurrency.to_string(),
        ]);
    }
    t.row([
        "network",
        if v.spec.network == Network::Host {
            "host"
        } else {
            "none"
        },
    ]);
    t.row(["tmp", &format!("{} MB", v.spec.tmp_mb)]);
    t.row(["async retries", &v.spec.retries.to_string()]);
    if let Some(f) = &v.spec.on_success {
        t.row(["on success", f]);
    }
    if let Some(f) = &v.spec.on_failure {
        t.row(["on failure", f]);
    }
    match v.spec.web {
        Web::Off => {}
        Web::On => {
            t.row(["web", "yes (with a key)"]);
        }
        Web::Public => {
            t.row(["web", "public"]);
        }
    }
    if !v.spec.cors_origins.is_empty() {
        t.row(["cors origins", &v.spec.cors_origins.join(", ")]);
    }
    let code = match (&v.code.format, &v.code.filename) {
        (CodeFormat::File, Some(name)) => format!("file {name}"),
        (CodeFormat::File, None) => "file".to_owned(),
        (CodeFormat::Zip, _) => "zip".to_owned(),
    };
    t.row([
        "code",
        &format!(
            "{code}, {}, sha256 {}",
            format_bytes(v.code.size),
            v.code.sha256
        ),
    ]);
    t.row(["deployed", &rfc3339_s(v.created_ms)]);
    for (i, (k, val)) in v.spec.env.iter().enumerate() {
        t.row([if i == 0 { "env" } else { "" }, &format!("{k}={val}")]);
    }
    t.to_string()
}

fn short_sha(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Parses a duration given on the command line into milliseconds: `500ms`, `30s`, `2m`, `1h`,
/// or a bare number of milliseconds.
fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "expected a duration like 500ms, 30s or 2m, got {s:?}"
        ));
    }
    let scale: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use ms, s, m or h"
            ));
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// Formats milliseconds in the largest unit that expresses them exactly: `500ms`, `30s`,
/// `2m`, `1h`.
fn format_duration_ms(ms: u64) -> String {
    match ms {
        0 => "0ms".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Parses `KEY=VALUE` (the value may contain `=` and be empty).
fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("expected KEY=VALUE, got {s:?}"));
    };
    if key.is_empty() {
        return Err(format!("missing the variable name before '=' in {s:?}"));
    }
    let valid = !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{key:?} is not a valid variable name: use letters, digits and '_', not starting with a digit"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Sizes in bytes, KiB or MiB.
fn format_bytes(n: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * 1024;
    match n {
        n if n < KIB => format!("{n} B"),
        n if n < MIB => format!("{:.1} KiB", n as f64 / KIB as f64),
        n => format!("{:.1} MiB", n as f64 / MIB as f64),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::{CommandFactory, Parser};
    use ignis_core::CodeRef;

    use super::*;

    /// The command as `ignis` mounts it: with a `--version` flag propagated to subcommands.
    #[derive(Parser)]
    #[command(version, propagate_version = true)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand)]
    enum Sub {
        Fn(FnCommand),
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
        Cli::try_parse_from([
            "ignis",
            "fn",
            "deploy",
            "hello",
            "dir",
            "--runtime",
            "python",
            "--handler",
            "app.handler",
            "--timeout",
            "2m",
            "--env",
            "A=1",
            "-e",
            "B=x=y",
        ])
        .unwrap();
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration_ms("500ms"), Ok(500));
        assert_eq!(parse_duration_ms("30s"), Ok(30_000));
        assert_eq!(parse_duration_ms("2m"), Ok(120_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("1500"), Ok(1500));
        assert_eq!(parse_duration_ms(" 10 s "), Ok(10_000));
        assert!(parse_duration_ms("").unwrap_err().contains("like 500ms"));
        assert!(parse_duration_ms("s").unwrap_err().contains("like 500ms"));
        assert!(
            parse_duration_ms("1.5s")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_duration_ms("3d").unwrap_err().contains("\"d\""));
        assert!(
            parse_duration_ms("99999999999999999999h")
                .unwrap_err()
                .contains("too long")
        );
    }

    #[test]
    fn formats_durations_in_the_largest_exact_unit() {
        for (ms, text) in [
            (0, "0ms"),
            (500, "500ms"),
            (1500, "1500ms"),
            (30_000, "30s"),
            (90_000, "90s"),
            (120_000, "2m"),
            (7_200_000, "2h"),
        ] {
            assert_eq!(format_duration_ms(ms), text);
            assert_eq!(parse_duration_ms(text), Ok(ms));
        }
    }

    #[test]
    fn parses_env_pairs() {
        assert_eq!(parse_env_pair("A=1"), Ok(("A".into(), "1".into())));
        assert_eq!(
            parse_env_pair("URL=http://x?a=b"),
            Ok(("URL".into(), "http://x?a=b".into()))
        );
        assert_eq!(parse_env_pair("EMPTY="), Ok(("EMPTY".into(), "".into())));
        assert!(parse_env_pair("NOVALUE").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_env_pair("=x").unwrap_err().contains("variable name"));
        assert!(parse_env_pair("1A=x").unwrap_err().contains("\"1A\""));
        assert!(parse_env_pair("A-B=x").unwrap_err().contains("not a valid"));
    }

    #[test]
    fn spec_mistakes_name_the_flag() {
        let mut req = DeployRequest::new(Runtime::Python, "", None);
        assert!(
            check_spec(&req)
                .unwrap_err()
                .to_string()
                .starts_with("--handler: ")
        );
        req.handler = "app.handler".into();
        check_spec(&req).unwrap();
        req.memory_mb = Some(1);
        assert!(
            check_spec(&req)
                .unwrap_err()
                .to_string()
                .starts_with("--memory: ")
        );
        req.memory_mb = None;
        req.timeout_ms = Some(0);
        assert!(
            check_spec(&req)
                .unwrap_err()
                .to_string()
                .starts_with("--timeout: ")
        );
        req.timeout_ms = None;
        req.env.insert("IGNIS_X".into(), "1".into());
        assert!(
            check_spec(&req)
                .unwrap_err()
                .to_string()
                .starts_with("--env: ")
        );
    }

    #[test]
    fn describes_a_version() {
        let v = FunctionVersion {
            namespace: "default".into(),
            name: "hello".into(),
            version: 2,
            spec: FunctionSpec {
                env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
                ..FunctionSpec::new(Runtime::Python, "app.handler")
            },
            code: CodeRef {
                sha256: "ab".repeat(32),
                size: 2048,
                format: CodeFormat::Zip,
                filename: None,
            },
            created_ms: 0,
        };
        let text = describe(&v);
        assert!(text.starts_with("name           hello\n"), "{text}");
        assert!(text.contains("\ntimeout        1m\n"), "{text}");
        assert!(
            text.contains("\ncode           zip, 2.0 KiB, sha256 abab"),
            "{text}"
        );
        assert!(
            text.ends_with("\nenv            A=1\n               B=2\n"),
            "{text}"
        );
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_bytes(10), "10 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
