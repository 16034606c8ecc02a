//! `ignis ns create|list|get|delete`: namespaces (tenants), for admin keys.

use clap::{Args, Subcommand};
use ignis_client::Method;
use ignis_client::display::{Table, rfc3339_s};

use super::GlobalOpts;

/// Create, list and delete namespaces (admin keys only).
#[derive(Args)]
pub struct NsCommand {
    #[command(subcommand)]
    action: NsAction,
}

#[derive(Subcommand)]
enum NsAction {
    /// Create a namespace, or set the quotas of one that exists
    Create {
        /// Its name: 1 to 64 characters of [A-Za-z0-9_.-]
        name: String,
        /// Its own quota, NAME=VALUE, repeatable; 0 means no limit. Names: concurrency,
        /// invocations_per_minute, memory_mb, functions, code_mb, code_unpacked_mb,
        /// activation_retention_days, activation_retention_count. Given quotas replace all the
        /// namespace's own quotas; those not given take the server's defaults.
        #[arg(long = "quota", value_name = "NAME=VALUE", value_parser = parse_quota)]
        quotas: Vec<(String, u32)>,
    },
    /// List namespaces
    #[command(alias = "ls")]
    List,
    /// Show a namespace
    Get {
        /// Its name
        name: String,
    },
    /// Delete a namespace and everything in it: functions, triggers, rules, activations,
    /// queued invocations and keys
    #[command(alias = "rm")]
    Delete {
        /// Its name
        name: String,
    },
}

impl NsCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        let (method, name, body) = match &self.action {
            NsAction::Create { name, quotas } => {
                let body = (!quotas.is_empty()).then(|| {
                    let q: serde_json::Map<String, serde_json::Value> = quotas
                        .iter()
                        .map(|(k, v)| (k.clone(), (*v).into()))
                        .collect();
                    serde_json::json!({ "quotas": q })
                });
                (Method::PUT, Some(name.as_str()), body)
            }
            NsAction::List => (Method::GET, None, None),
            NsAction::Get { name } => (Method::GET, Some(name.as_str()), None),
            NsAction::Delete { name } => (Method::DELETE, Some(name.as_str()), None),
        };
        let v = client.namespaces(method, name, body).await?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        match self.action {
            NsAction::Create { name, .. } => println!("namespace {name} ready"),
            NsAction::Delete { name } => {
                let n = v["functions"].as_array().map_or(0, Vec::len);
                println!("deleted namespace {name} and its {n} function(s)");
            }
            NsAction::Get { .. } => {
                println!(
                    "{}\tcreated {}",
                    v["name"].as_str().unwrap_or_default(),
                    rfc3339_s(v["created_ms"].as_u64().unwrap_or(0))
                );
                let mut t = Table::new(["QUOTA", "IN FORCE", "OWN"]);
                for (k, limit) in v["effective_quotas"].as_object().into_iter().flatten() {
                    let own = &v["quotas"][k];
                    t.row([
                        k.clone(),
                        match limit.as_u64() {
                            Some(0) => "no limit".to_string(),
                            _ => limit.to_string(),
                        },
                        if own.is_null() {
                            "-".into()
                        } else {
                            own.to_string()
                        },
                    ]);
                }
                print!("{t}");
                println!(
                    "running {} invocation(s), {} MiB of instances",
                    v["usage"]["running"], v["usage"]["instance_memory_mb"]
                );
            }
            NsAction::List => {
                let mut t = Table::new(["NAME", "CREATED"]);
                for n in v["namespaces"].as_array().into_iter().flatten() {
                    t.row([
                        n["name"].as_str().unwrap_or_default().to_string(),
                        rfc3339_s(n["created_ms"].as_u64().unwrap_or(0)),
                    ]);
                }
                print!("{t}");
            }
        }
        Ok(())
    }
}

fn parse_quota(s: &str) -> Result<(String, u32), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))?;
    let v = v
        .trim()
        .parse::<u32>()
        .map_err(|_| format!("quota {k}: {v:?} is not a whole number"))?;
    Ok((k.trim().to_string(), v))
}
