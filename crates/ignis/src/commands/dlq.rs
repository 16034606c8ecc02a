//! `ignis dlq`: the dead-letter list of asynchronous invocations.

use clap::{Args, Subcommand};
use ignis_client::display::{Table, rfc3339_s};

use super::GlobalOpts;

/// List and replay asynchronous invocations that failed every attempt.
#[derive(Args)]
pub struct DlqCommand {
    #[command(subcommand)]
    action: DlqAction,
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead-letter items, newest first
    #[command(alias = "ls")]
    List,
    /// Queue an item again with fresh retries (after fixing the function)
    Replay {
        /// The activation id of the item
        id: String,
    },
}

impl DlqCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        match self.action {
            DlqAction::List => {
                let v = client.dead_letters().await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                let mut t = Table::new(["ID", "FUNCTION", "ATTEMPTS", "ACCEPTED", "LAST ERROR"]);
                for d in v["dead_letters"].as_array().into_iter().flatten() {
                    t.row([
                        d["id"].as_str().unwrap_or_default().to_string(),
                        d["function"].as_str().unwrap_or_default().to_string(),
                        d["attempts"].to_string(),
                        rfc3339_s(d["created_ms"].as_u64().unwrap_or(0)),
                        d["last_error"].as_str().unwrap_or_default().to_string(),
                    ]);
                }
                if t.is_empty() {
                    println!("no dead letters");
                } else {
                    print!("{t}");
                }
            }
            DlqAction::Replay { id } => {
                let v = client.replay_dead_letter(&id).await?;
                if global.json {
                    println!("{v}");
                } else {
                    println!("queued again: activation {id}");
                }
            }
        }
        Ok(())
    }
}
