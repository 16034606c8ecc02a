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
    /// Create a namespace (nothing happens if it exists)
    Create {
        /// Its name: 1 to 64 characters of [A-Za-z0-9_.-]
        name: String,
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
        let (method, name) = match &self.action {
            NsAction::Create { name } => (Method::PUT, Some(name.as_str())),
            NsAction::List => (Method::GET, None),
            NsAction::Get { name } => (Method::GET, Some(name.as_str())),
            NsAction::Delete { name } => (Method::DELETE, Some(name.as_str())),
        };
        let v = client.namespaces(method, name).await?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        match self.action {
            NsAction::Create { name } => println!("namespace {name} ready"),
            NsAction::Delete { name } => {
                let n = v["functions"].as_array().map_or(0, Vec::len);
                println!("deleted namespace {name} and its {n} function(s)");
            }
            NsAction::Get { .. } => println!(
                "{}\tcreated {}",
                v["name"].as_str().unwrap_or_default(),
                rfc3339_s(v["created_ms"].as_u64().unwrap_or(0))
            ),
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
