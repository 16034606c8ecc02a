//! `ignis execution …`: list workflow executions and show one as a tree of its steps.

use clap::{Args, Subcommand};
use ignis_client::Client;
use ignis_client::display::{Table, rfc3339_s};
use ignis_core::{ExecutionRecord, StepRecord, StepStatus, WorkflowDef};

use super::GlobalOpts;

/// How many items of a map step the tree shows (the first ones, then the failed ones).
const ITEMS_SHOWN: usize = 5;

/// List and inspect workflow executions.
#[derive(Args)]
pub struct ExecutionCommand {
    #[command(subcommand)]
    command: ExecutionSubcommand,
}

#[derive(Subcommand)]
enum ExecutionSubcommand {
    /// List workflow executions, newest first
    #[command(alias = "ls")]
    List {
        /// Only this workflow's executions
        #[arg(long, short = 'f')]
        function: Option<String>,
        /// At most this many (the server's default is 50)
        #[arg(long, short = 'l', value_parser = clap::value_parser!(u32).range(1..=200))]
        limit: Option<u32>,
    },
    /// Show an execution (its id is the workflow's activation id) as a tree of its steps
    Get {
        /// Execution id
        id: String,
        /// Show every item of map steps, not only the first and the failed ones
        #[arg(long)]
        all: bool,
    },
}

impl ExecutionCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        match self.command {
            ExecutionSubcommand::List { function, limit } => {
                let list = client
                    .list_executions(function.as_deref(), limit.map(|l| l as usize))
                    .await?;
                if global.json {
                    let doc = serde_json::json!({ "executions": list });
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                    return Ok(());
                }
                if list.is_empty() {
                    eprintln!("no executions in namespace {}", client.namespace());
                    return Ok(());
                }
                let mut t = Table::new(["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION"]);
                for e in &list {
                    t.row([
                        e.id.to_string(),
                        format!("{}@{}", e.function, e.version),
                        e.status.as_str().to_string(),
                        rfc3339_s(e.start_ms),
                        e.end_ms
                            .map(|end| format!("{} ms", end.saturating_sub(e.start_ms)))
                            .unwrap_or_else(|| "-".into()),
                    ]);
                }
                print!("{t}");
                Ok(())
            }
            ExecutionSubcommand::Get { id, all } => {
                let e = client.get_execution(&id).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&e)?);
                    return Ok(());
                }
                let def = definition(&client, &e).await;
                print!("{}", tree(&e, def.as_ref(), all));
                Ok(())
            }
        }
    }
}

/// The definition the execution runs, to show steps in their order (and those yet to run).
async fn definition(client: &Client, e: &ExecutionRecord) -> Option<WorkflowDef> {
    let f = client
        .get_function(&format!("{}@{}", e.function, e.version))
        .await
        .ok()?;
    f.spec.workflow
}

fn ms(r: &StepRecord) -> String {
    format!("{} ms", r.end_ms.saturating_sub(r.start_ms))
}

fn status(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
    }
}

/// The execution as a tree: one branch per step, map items under their step.
fn tree(e: &ExecutionRecord, def: Option<&WorkflowDef>, all: bool) -> String {
    let mut out = format!(
        "execution {} · {}@{} · {}",
        e.id,
        e.function,
        e.version,
        e.status.as_str()
    );
    if let Some(end) = e.end_ms {
        out.push_str(&format!(" · {} ms", end.saturating_sub(e.start_ms)));
    }
    if e.resumed > 0 {
        out.push_str(&format!(" · resumed {}×", e.resumed));
    }
    out.push('\n');
    if let Some(err) = &e.error {
        out.push_str(&format!("error: {err}\n"));
    }
    // Steps in the definition's order; any other recorded step after them.
    let mut names: Vec<(String, String)> = def
        .map(|d| {
            d.steps
                .iter()
                .map(|s| (s.name.clone(), s.function.clone()))
                .collect()
        })
        .unwrap_or_default();
    for r in &e.steps {
        if !names.iter().any(|(n, _)| n == &r.step) {
            names.push((r.step.clone(), r.function.clone()));
        }
    }
    let count = names.len();
    for (i, (name, function)) in names.iter().enumerate() {
        let last = i + 1 == count;
        let (branch, under) = if last {
            ("└─ ", "   ")
        } else {
            ("├─ ", "│  ")
        };
        let whole = e
            .steps
            .iter()
            .find(|r| &r.step == name && r.index.is_none());
        let items: Vec<&StepRecord> = e
            .steps
            .iter()
            .filter(|r| &r.step == name && r.index.is_some())
            .collect();
        let head = match whole {
            Some(r) if r.status == StepStatus::Skipped => format!("{name} ({function}) skipped"),
            Some(r) => {
                let mut h = format!("{name} ({function}) {} {}", status(r.status), ms(r));
                if let Some(id) = r.activation_id {
                    h.push_str(&format!(" {id}"));
                }
                if r.attempts > 1 && items.is_empty() {
                    h.push_str(&format!(" after {} attempts", r.attempts));
                }
                if let Some(err) = &r.error {
                    h.push_str(&format!(": {err}"));
                }
                h
            }
            None if !items.is_empty() => {
                format!("{name} ({function}) {} of its items ended", items.len())
            }
            None => format!("{name} ({function}) not ended"),
        };
        out.push_str(&format!("{branch}{head}\n"));
        if items.is_empty() {
            continue;
        }
        let mut sorted = items.clone();
        sorted.sort_by_key(|r| r.index);
        let shown: Vec<&StepRecord> = if all {
            sorted.clone()
        } else {
            let mut v: Vec<&StepRecord> = sorted.iter().take(ITEMS_SHOWN).copied().collect();
            v.extend(
                sorted
                    .iter()
                    .skip(ITEMS_SHOWN)
                    .filter(|r| r.status != StepStatus::Succeeded)
                    .copied(),
            );
            v
        };
        let hidden = sorted.len() - shown.len();
        for (j, r) in shown.iter().enumerate() {
            let last_item = j + 1 == shown.len() && hidden == 0;
            let mut line = format!(
                "[{}] {} {}",
                r.index.unwrap_or_default(),
                status(r.status),
                ms(r)
            );
            if let Some(id) = r.activation_id {
                line.push_str(&format!(" {id}"));
            }
            if r.attempts > 1 {
                line.push_str(&format!(" after {} attempts", r.attempts));
            }
            if let Some(err) = &r.error {
                line.push_str(&format!(": {err}"));
            }
            let b = if last_item { "└─ " } else { "├─ " };
            out.push_str(&format!("{under}{b}{line}\n"));
        }
        if hidden > 0 {
            out.push_str(&format!(
                "{under}└─ … {hidden} more items succeeded (--all shows them)\n"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_core::{ActivationId, ExecutionStatus};

    #[test]
    fn trees_show_steps_in_order_with_items_folded() {
        let step = |name: &str, index: Option<u32>, status: StepStatus| StepRecord {
            step: name.into(),
            index,
            function: "f".into(),
            status,
            activation_id: (status != StepStatus::Skipped).then(ActivationId::new),
            attempts: 1,
            start_ms: 0,
            end_ms: 3,
            output: None,
            error: None,
        };
        let mut steps: Vec<StepRecord> = (0..8)
            .map(|i| step("count", Some(i), StepStatus::Succeeded))
            .collect();
        steps.push(step("count", None, StepStatus::Succeeded));
        steps.push(step("small", None, StepStatus::Skipped));
        let e = ExecutionRecord {
            id: ActivationId::new(),
            namespace: "default".into(),
            function: "wc".into(),
            version: 2,
            status: ExecutionStatus::Succeeded,
            input: serde_json::Value::Null,
            output: None,
            error: None,
            start_ms: 0,
            end_ms: Some(10),
            trigger: None,
            resumed: 1,
            parent: None,
            steps,
        };
        let t = tree(&e, None, false);
        assert!(t.contains("wc@2 · succeeded · 10 ms · resumed 1×"), "{t}");
        assert!(t.contains("├─ count (f) succeeded 3 ms"), "{t}");
        assert!(t.contains("│  ├─ [0] succeeded"), "{t}");
        assert!(t.contains("… 3 more items succeeded"), "{t}");
        assert!(t.contains("└─ small (f) skipped"), "{t}");
        assert!(!t.contains("[5]"), "{t}");
        assert!(tree(&e, None, true).contains("[7]"));
    }
}
