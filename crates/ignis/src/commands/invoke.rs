//! `ignis invoke`: invoke a function, wait for it, and print its result.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;
use ignis_client::{ClientError, InvokeResponse};

use super::GlobalOpts;

/// Invoke a function and print its result.
#[derive(Args)]
// `--version` selects the function's version here, not the program's.
#[command(disable_version_flag = true)]
pub struct InvokeCommand {
    /// The function: NAME, or NAME@VERSION
    name: String,
    /// The event, inline: JSON for python and node functions, anything for exec and wasm
    #[arg(long, short = 'd', value_name = "JSON", conflicts_with = "file")]
    data: Option<String>,
    /// Read the event from a file (`-` for standard input)
    #[arg(long, short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    /// The version to invoke (default: the latest)
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// Also print the activation id, status, cold or warm start and timings to stderr
    #[arg(long, short = 'v')]
    verbose: bool,
    /// Queue the invocation and print its activation id at once (202), without waiting
    #[arg(long = "async")]
    async_: bool,
    /// With --async: a key that makes a retried submission return the same activation
    #[arg(long, value_name = "KEY", requires = "async_")]
    idempotency_key: Option<String>,
}

impl InvokeCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        if self.version.is_some() && self.name.contains('@') {
            return Err(ClientError::Config(format!(
                "the version is given twice: in {:?} and with --version",
                self.name
            ))
            .into());
        }
        let client = global.client()?;
        let event = self.event().await?;
        if self.async_ {
            let answer = client
                .invoke_async(
                    &self.name,
                    self.version,
                    event,
                    self.idempotency_key.as_deref(),
                )
                .await?;
            if global.json {
                println!("{answer}");
            } else {
                let id = answer["activation_id"].as_str().unwrap_or_default();
                let status = answer["status"].as_str().unwrap_or("queued");
                println!("{status}: activation {id}");
            }
            return Ok(());
        }
        let outcome = client.invoke(&self.name, self.version, event).await?;
        if self.verbose {
            eprintln!("{}", summary(&outcome));
        }
        let error = outcome.error();
        if global.json {
            let doc = outcome_json(&outcome);
            println!("{}", serde_json::to_string_pretty(&doc)?);
        } else if error.is_none() {
            write_result(&outcome.body).context("cannot write the result")?;
        } else if self.verbose
            && let Some(stack) = error.as_ref().and_then(|e| e.stack.as_deref())
        {
            eprintln!("{}", stack.trim_end());
        }
        outcome.into_result()?;
        Ok(())
    }

    async fn event(&self) -> anyhow::Result<Bytes> {
        if let Some(data) = &self.data {
            return Ok(Bytes::from(data.clone()));
        }
        let Some(path) = &self.file else {
            return Ok(Bytes::new());
        };
        if path.as_os_str() == "-" {
            let read = tokio::task::spawn_blocking(|| {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).map(|_| buf)
            });
            let buf = read
                .await?
                .context("cannot read the event from standard input")?;
            return Ok(Bytes::from(buf));
        }
        let bytes = tokio::fs::read(path)
            .await
            .with_context(|| format!("cannot read the event from {}", path.display()))?;
        Ok(Bytes::from(bytes))
    }
}

/// `activation <id> · <status> · cold|warm · <d> ms (init <n> ms) · version <v>`.
fn summary(o: &InvokeResponse) -> String {
    format!(
        "activation {} · {} · {} · {} ms (init {} ms) · version {}",
        o.activation_id,
        o.fn_status,
        if o.cold { "cold" } else { "warm" },
        o.duration_ms,
        o.init_ms,
        o.version
    )
}

/// Writes the result as it is, ending it with a newline if it does not end with one.
fn write_result(body: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(body)?;
    if !body.is_empty() && !body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The whole outcome as one JSON object; the result is embedded as JSON when it is JSON, as a
/// string otherwise.
fn outcome_json(o: &InvokeResponse) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "activation_id": o.activation_id,
        "status": o.fn_status,
        "cold": o.cold,
        "duration_ms": o.duration_ms,
        "init_ms": o.init_ms,
        "version": o.version,
    });
    match o.error() {
        Some(err) => doc["error"] = serde_json::json!(err),
        None => {
            doc["result"] = if o.body.is_empty() {
                serde_json::Value::Null
            } else {
                serde_json::from_slice(&o.body).unwrap_or_else(|_| {
                    serde_json::Value::String(String::from_utf8_lossy(&o.body).into_owned())
                })
            };
        }
    }
    doc
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

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
        Invoke(InvokeCommand),
    }

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from(["ignis", "invoke", "f", "--version", "3", "-d", "{}", "-v"])
            .unwrap();
        let Sub::Invoke(c) = cli.command;
        assert_eq!(
            (c.version, c.data.as_deref(), c.verbose),
            (Some(3), Some("{}"), true)
        );
        assert!(Cli::try_parse_from(["ignis", "invoke", "f", "-d", "{}", "-f", "x"]).is_err());
    }

    fn outcome(status: &str, body: &'static [u8]) -> InvokeResponse {
        InvokeResponse {
            status: if status == "success" { 200 } else { 502 },
            activation_id: "a1".into(),
            fn_status: status.into(),
            cold: true,
            duration_ms: 120,
            init_ms: 100,
            version: 4,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn summarises_an_outcome() {
        assert_eq!(
            summary(&outcome("success", b"{}")),
            "activation a1 · success · cold · 120 ms (init 100 ms) · version 4"
        );
    }

    #[test]
    fn embeds_json_results_and_errors() {
        let doc = outcome_json(&outcome("success", br#"{"n":1}"#));
        assert_eq!(doc["result"]["n"], 1);
        assert_eq!(doc["cold"], true);
        let doc = outcome_json(&outcome("success", b"plain text"));
        assert_eq!(doc["result"], "plain text");
        let doc = outcome_json(&outcome(
            "application_error",
            br#"{"error":{"code":"application_error","message":"m","type":"E"}}"#,
        ));
        assert_eq!(doc["error"]["type"], "E");
        assert!(doc.get("result").is_none());
    }
}
