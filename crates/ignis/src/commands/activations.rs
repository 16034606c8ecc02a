//! `ignis activations …`: list and inspect the records of invocations.

use clap::{Args, Subcommand};
use ignis_client::ActivationFilter;
use ignis_client::display::{Table, rfc3339_ms, rfc3339_s};
use ignis_core::{ActivationRecord, LogLine, LogStream, Status};

use super::GlobalOpts;

/// List and inspect activations.
#[derive(Args)]
pub struct ActivationsCommand {
    #[command(subcommand)]
    command: ActivationsSubcommand,
}

#[derive(Subcommand)]
enum ActivationsSubcommand {
    /// List activations, newest first
    #[command(alias = "ls")]
    List(ListArgs),
    /// Show one activation: timings, result or error, and logs
    Get {
        /// Activation id
        id: String,
    },
    /// Print the logs of one activation
    Logs {
        /// Activation id
        id: String,
    },
}

#[derive(Args)]
struct ListArgs {
    /// Only this function's activations
    #[arg(long, short = 'f')]
    function: Option<String>,
    /// Only activations caused by firings of this trigger
    #[arg(long, short = 't')]
    trigger: Option<String>,
    /// Only activations that ended so: success, application_error, timeout, oom, crash,
    /// platform_error
    #[arg(long, short = 's')]
    status: Option<Status>,
    /// Only activations started at or after this time (ms since the epoch)
    #[arg(long, value_name = "MS")]
    since: Option<u64>,
    /// Only activations started before this time (ms since the epoch)
    #[arg(long, value_name = "MS")]
    until: Option<u64>,
    /// At most this many (the server's default is 50)
    #[arg(long, short = 'l', value_parser = clap::value_parser!(u32).range(1..=200))]
    limit: Option<u32>,
    /// Continue after a previous page
    #[arg(long)]
    cursor: Option<String>,
}

impl ActivationsCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        match self.command {
            ActivationsSubcommand::List(args) => {
                let filter = ActivationFilter {
                    function: args.function,
                    trigger: args.trigger,
                    status: args.status,
                    since: args.since,
                    until: args.until,
                    limit: args.limit,
                    cursor: args.cursor,
                };
                let page = client.list_activations(&filter).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&page)?);
                    return Ok(());
                }
                if page.activations.is_empty() {
                    eprintln!("no activations");
                } else {
                    print!("{}", activation_table(&page.activations));
                }
                if let Some(cursor) = page.next_cursor {
                    eprintln!("more: add --cursor {cursor}");
                }
                Ok(())
            }
            ActivationsSubcommand::Get { id } => {
                let record = client.get_activation(&id).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&record)?);
                } else {
                    print!("{}", describe(&record));
                }
                Ok(())
            }
            ActivationsSubcommand::Logs { id } => {
                let logs = client.activation_logs(&id).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&logs)?);
                } else {
                    print!("{}", log_lines(&logs.logs, logs.truncated));
                }
                Ok(())
            }
        }
    }
}

fn activation_table(records: &[ActivationRecord]) -> Table {
    let mut table = Table::new([
        "ID",
        "FUNCTION",
        "VERSION",
        "STATUS",
        "COLD/WARM",
        "DURATION",
        "START",
    ]);
    for a in records {
        table.row([
            a.id.to_string(),
            a.function.clone(),
            a.version.to_string(),
            a.status.to_string(),
            cold_or_warm(a.cold).to_owned(),
            format!("{} ms", a.duration_ms),
            rfc3339_s(a.start_ms),
        ]);
    }
    table
}

fn cold_or_warm(cold: bool) -> &'static str {
    if cold { "cold" } else { "warm" }
}

/// One activation as a key/value listing followed by its error's stack and its logs.
fn describe(a: &ActivationRecord) -> String {
    let mut t = Table::new(Vec::<String>::new());
    t.row(["id".to_owned(), a.id.to_string()]);
    t.row([
        "function".to_owned(),
        format!("{}@{}", a.function, a.version),
    ]);
    t.row(["namespace", &a.namespace]);
    t.row(["status", a.status.as_str()]);
    t.row(["start", &rfc3339_ms(a.start_ms)]);
    t.row([
        "duration".to_owned(),
        format!(
            "{} ms ({}, queue {} ms, init {} ms)",
            a.duration_ms,
            cold_or_warm(a.cold),
            a.queue_ms,
            a.init_ms
        ),
    ]);
    if !a.instance.is_empty() {
        t.row(["instance", &a.instance]);
    }
    t.row([
        "billed".to_owned(),
        format!("{} ms at {} MB", a.billed_ms, a.memory_mb),
    ]);
    if let Some(result) = &a.result {
        t.row(["result".to_owned(), result.to_string()]);
    }
    if let Some(err) = &a.error {
        let phase = match err.phase {
            ignis_core::ErrorPhase::Init => "init",
            ignis_core::ErrorPhase::Invoke => "invoke",
        };
        t.row([
            "error".to_owned(),
            format!("{}: {} (during {phase})", err.kind, err.message),
        ]);
    }
    let mut out = t.to_string();
    if let Some(stack) = a.error.as_ref().and_then(|e| e.stack.as_deref()) {
        out.push('\n');
        out.push_str(stack.trim_end());
        out.push('\n');
    }
    if !a.logs.is_empty() || a.logs_truncated {
        out.push_str("\nlogs:\n");
        out.push_str(&log_lines(&a.logs, a.logs_truncated));
    }
    out
}

/// `<RFC 3339 time> <stdout|stderr> <line>` per line, then `[logs truncated]` if lines were
/// dropped.
fn log_lines(lines: &[LogLine], truncated: bool) -> String {
    let mut out = String::new();
    for l in lines {
        let stream = match l.stream {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        };
        out.push_str(&rfc3339_ms(l.ts_ms));
        out.push(' ');
        out.push_str(stream);
        out.push(' ');
        out.push_str(&l.line);
        out.push('\n');
    }
    if truncated {
        out.push_str("[logs truncated]\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};
    use ignis_core::{ActivationError, ActivationId, ErrorPhase};

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
        Activations(ActivationsCommand),
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
        Cli::try_parse_from([
            "ignis",
            "activations",
            "list",
            "--status",
            "timeout",
            "--limit",
            "5",
        ])
        .unwrap();
    }

    fn record() -> ActivationRecord {
        ActivationRecord {
            id: ActivationId::parse("0123456789abcdef0123456789abcdef").unwrap(),
            namespace: "default".into(),
            function: "hello".into(),
            version: 2,
            start_ms: 1_709_296_496_789,
            end_ms: 1_709_296_496_831,
            duration_ms: 42,
            queue_ms: 0,
            init_ms: 30,
            cold: true,
            trigger: None,
            instance: "hello/1".into(),
            status: Status::ApplicationError,
            result: None,
            error: Some(ActivationError {
                kind: "ValueError".into(),
                message: "bad".into(),
                stack: Some("Traceback\n  line 1\n".into()),
                phase: ErrorPhase::Invoke,
            }),
            logs: vec![LogLine {
                ts_ms: 1_709_296_496_800,
                stream: LogStream::Stderr,
                line: "oops".into(),
            }],
            logs_truncated: true,
            memory_mb: 256,
            billed_ms: 42,
        }
    }

    #[test]
    fn lists_activations_as_a_table() {
        let mut warm = record();
        warm.cold = false;
        warm.status = Status::Success;
        warm.function = "f".into();
        assert_eq!(
            activation_table(&[record(), warm]).to_string(),
            "ID                                FUNCTION  VERSION  STATUS             COLD/WARM  DURATION  START\n\
             0123456789abcdef0123456789abcdef  hello     2        application_error  cold       42 ms     2024-03-01T12:34:56Z\n\
             0123456789abcdef0123456789abcdef  f         2        success            warm       42 ms     2024-03-01T12:34:56Z\n"
        );
    }

    #[test]
    fn formats_log_lines() {
        let r = record();
        assert_eq!(
            log_lines(&r.logs, true),
            "2024-03-01T12:34:56.800Z stderr oops\n[logs truncated]\n"
        );
        assert_eq!(log_lines(&[], false), "");
    }

    #[test]
    fn describes_an_activation() {
        let text = describe(&record());
        assert!(
            text.starts_with("id         0123456789abcdef0123456789abcdef\n"),
            "{text}"
        );
        assert!(text.contains("\nfunction   hello@2\n"), "{text}");
        assert!(
            text.contains("\nduration   42 ms (cold, queue 0 ms, init 30 ms)\n"),
            "{text}"
        );
        assert!(text.contains("\ninstance   hello/1\n"), "{text}");
        assert!(
            text.contains("\nerror      ValueError: bad (during invoke)\n\nTraceback\n  line 1\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\nlogs:\n2024-03-01T12:34:56.800Z stderr oops\n[logs truncated]\n")
        );
    }
}
