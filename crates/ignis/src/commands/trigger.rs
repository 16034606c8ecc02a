//! `ignis trigger` and `ignis rule`: event sources and the rules linking them to functions.

use clap::{Args, Subcommand};
use ignis_client::Method;
use ignis_client::display::{Table, rfc3339_s};
use serde_json::{Value, json};

use super::GlobalOpts;

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn text(v: &Value, k: &str) -> String {
    match &v[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// What fires a trigger, in a few words: its schedule, topic or NATS subject.
fn source(t: &Value) -> String {
    match t["kind"].as_str() {
        Some("cron") => format!(
            "{} ({})",
            text(t, "schedule"),
            t["timezone"].as_str().unwrap_or("UTC")
        ),
        Some("topic") => {
            let mut s = format!("topic {}", text(t, "topic"));
            if let Some(n) = t["batch_size"].as_u64() {
                s.push_str(&format!(", batches of {n}"));
            }
            if let Some(ms) = t["batch_window_ms"].as_u64() {
                s.push_str(&format!(" within {ms} ms"));
            }
            s
        }
        Some("nats") => {
            let n = &t["nats"];
            let mut s = format!("{} at {}", text(n, "subject"), text(n, "url"));
            if let Some(g) = n["queue_group"].as_str() {
                s.push_str(&format!(" (queue group {g})"));
            }
            if let Some(stream) = n["stream"].as_str() {
                s.push_str(&format!(
                    " (stream {stream}, consumer {})",
                    text(n, "consumer")
                ));
            }
            s
        }
        _ => String::new(),
    }
}

/// Create, fire and inspect triggers.
#[derive(Args)]
pub struct TriggerCommand {
    #[command(subcommand)]
    action: TriggerAction,
}

// Parsed once per command line: the size of its largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum TriggerAction {
    /// Create (or replace) a trigger: plain (fired by API), cron (on a schedule), storage (on
    /// object changes in a bucket), topic (by the messages published to a topic) or nats (by the
    /// messages of a NATS subject)
    Create {
        /// Trigger name
        name: String,
        /// A cron schedule: 5 fields (minute hour day month weekday) or 6 (seconds first)
        #[arg(long, conflicts_with = "bucket")]
        cron: Option<String>,
        /// A storage trigger: fire when objects of this bucket change
        #[arg(long)]
        bucket: Option<String>,
        /// Storage events that fire it: object:created, object:deleted [default: both]
        #[arg(long = "event", requires = "bucket", value_name = "EVENT")]
        events: Vec<String>,
        /// Only objects whose key starts with this
        #[arg(long, requires = "bucket")]
        prefix: Option<String>,
        /// Only objects whose key ends with this
        #[arg(long, requires = "bucket")]
        suffix: Option<String>,
        /// Time zone of the schedule (IANA name) [default: UTC]
        #[arg(long, requires = "cron")]
        timezone: Option<String>,
        /// After downtime, fire once for every missed time instead of skipping them
        #[arg(long, requires = "cron")]
        catch_up: bool,
        /// Payload of scheduled firings (JSON)
        #[arg(long, short = 'd', value_name = "JSON")]
        payload: Option<String>,
        /// Fire on the messages published to this topic of the namespace
        #[arg(long, conflicts_with_all = ["cron", "nats_url", "bucket"])]
        topic: Option<String>,
        /// Most messages per invocation (topic triggers) [default: 1]
        #[arg(long, requires = "topic")]
        batch_size: Option<u32>,
        /// How long a message may wait for its batch to fill (topic triggers) [default: 0]
        #[arg(long, requires = "topic", value_name = "MS")]
        batch_window_ms: Option<u64>,
        /// Fire on the messages of a subject of this NATS server (nats://host:port)
        #[arg(long, requires = "nats_subject", conflicts_with_all = ["cron", "bucket"])]
        nats_url: Option<String>,
        /// The NATS subject (wildcards allowed: orders.*, orders.>)
        #[arg(long, requires = "nats_url")]
        nats_subject: Option<String>,
        /// A NATS queue group, to share the subject's messages with other subscribers
        #[arg(long, requires = "nats_url", conflicts_with = "stream")]
        queue_group: Option<String>,
        /// Read the subject's messages from this JetStream stream, through a durable consumer:
        /// at least once, also those published while Ignis is down
        #[arg(long, requires = "nats_url")]
        stream: Option<String>,
        /// With --stream: the durable consumer's name [default: one Ignis makes for the trigger]
        #[arg(long, requires = "stream")]
        consumer: Option<String>,
        /// With --stream: where a consumer Ignis makes starts: new (messages stored from now on)
        /// or all (the stream's first message) [default: new]
        #[arg(long, requires = "stream", value_parser = ["new", "all"])]
        deliver: Option<String>,
    },
    /// List triggers
    #[command(alias = "ls")]
    List,
    /// Show a trigger and its last firings
    Get {
        /// Trigger name
        name: String,
    },
    /// Fire a trigger: every enabled rule queues an invocation of its function
    Fire {
        /// Trigger name
        name: String,
        /// Payload (JSON)
        #[arg(long, short = 'd', value_name = "JSON")]
        data: Option<String>,
    },
    /// Delete a trigger and its rules
    #[command(alias = "rm")]
    Delete {
        /// Trigger name
        name: String,
    },
}

impl TriggerCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let c = global.client()?;
        match self.action {
            TriggerAction::Create {
                name,
                cron,
                bucket,
                events,
                prefix,
                suffix,
                timezone,
                catch_up,
                payload,
                topic,
                batch_size,
                batch_window_ms,
                nats_url,
                nats_subject,
                queue_group,
                stream,
                consumer,
                deliver,
            } => {
                let payload: Option<Value> = payload
                    .map(|p| serde_json::from_str(&p))
                    .transpose()
                    .map_err(|e| {
                        ignis_client::ClientError::Config(format!("--payload is not JSON: {e}"))
                    })?;
                let kind = if cron.is_some() {
                    "cron"
                } else if bucket.is_some() {
                    "storage"
                } else if topic.is_some() {
                    "topic"
                } else if nats_url.is_some() {
                    "nats"
                } else {
                    "plain"
                };
                let mut body = json!({ "kind": kind });
                if let Some(b) = bucket {
                    body["bucket"] = Value::from(b);
                }
                if !events.is_empty() {
                    body["events"] = Value::from(events);
                }
                if let Some(p) = prefix {
                    body["prefix"] = Value::from(p);
                }
                if let Some(s) = suffix {
                    body["suffix"] = Value::from(s);
                }
                if let Some(t) = topic {
                    body["topic"] = Value::from(t);
                }
                if let Some(n) = batch_size {
                    body["batch_size"] = Value::from(n);
                }
                if let Some(ms) = batch_window_ms {
                    body["batch_window_ms"] = Value::from(ms);
                }
                if let (Some(url), Some(subject)) = (nats_url, nats_subject) {
                    body["nats"] = json!({ "url": url, "subject": subject });
                    if let Some(g) = queue_group {
                        body["nats"]["queue_group"] = Value::from(g);
                    }
                    if let Some(s) = stream {
                        body["nats"]["stream"] = Value::from(s);
                    }
                    if let Some(c) = consumer {
                        body["nats"]["consumer"] = Value::from(c);
                    }
                    if let Some(d) = deliver {
                        body["nats"]["deliver"] = Value::from(d);
                    }
                }
                if let Some(s) = cron {
                    body["schedule"] = Value::from(s);
                }
                if let Some(tz) = timezone {
                    body["timezone"] = Value::from(tz);
                }
                if catch_up {
                    body["catch_up"] = Value::from(true);
                }
                if let Some(p) = payload {
                    body["payload"] = p;
                }
                let t = c
                    .namespace_json(Method::PUT, &format!("/triggers/{name}"), Some(body))
                    .await?;
                if global.json {
                    return print_json(&t);
                }
                println!("trigger {name} ({})", text(&t, "kind"));
            }
            TriggerAction::List => {
                let v = c.namespace_json(Method::GET, "/triggers", None).await?;
                if global.json {
                    return print_json(&v);
                }
                let mut t = Table::new(["NAME", "KIND", "SOURCE"]);
                for tr in v["triggers"].as_array().into_iter().flatten() {
                    t.row([text(tr, "name"), text(tr, "kind"), source(tr)]);
                }
                if t.is_empty() {
                    println!("no triggers");
                } else {
                    print!("{t}");
                }
            }
            TriggerAction::Get { name } => {
                let tr = c
                    .namespace_json(Method::GET, &format!("/triggers/{name}"), None)
                    .await?;
                let firings = c
                    .namespace_json(
                        Method::GET,
                        &format!("/triggers/{name}/firings?limit=10"),
                        None,
                    )
                    .await?;
                if global.json {
                    return print_json(&json!({ "trigger": tr, "firings": firings["firings"] }));
                }
                println!("trigger   {name} ({})", text(&tr, "kind"));
                let from = source(&tr);
                if !from.is_empty() {
                    println!("source    {from}");
                }
                let mut t = Table::new(["FIRING", "FIRED", "ACTIVATIONS"]);
                for f in firings["firings"].as_array().into_iter().flatten() {
                    let acts: Vec<String> = f["activations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| format!("{} → {}", text(a, "function"), text(a, "activation_id")))
                        .collect();
                    t.row([
                        text(f, "id"),
                        rfc3339_s(f["fired_ms"].as_u64().unwrap_or(0)),
                        acts.join(", "),
                    ]);
                }
                if !t.is_empty() {
                    print!("{t}");
                }
            }
            TriggerAction::Fire { name, data } => {
                let body: Value = match data {
                    Some(d) => serde_json::from_str(&d)
                        .map_err(|e| anyhow::anyhow!("-d is not JSON: {e}"))?,
                    None => json!({}),
                };
                let f = c
                    .namespace_json(Method::POST, &format!("/triggers/{name}/fire"), Some(body))
                    .await?;
                if global.json {
                    return print_json(&f);
                }
                println!("fired {name}: firing {}", text(&f, "id"));
                for a in f["activations"].as_array().into_iter().flatten() {
                    println!(
                        "  rule {} → {} (activation {})",
                        text(a, "rule"),
                        text(a, "function"),
                        text(a, "activation_id")
                    );
                }
            }
            TriggerAction::Delete { name } => {
                c.namespace_json(Method::DELETE, &format!("/triggers/{name}"), None)
                    .await?;
                println!("deleted trigger {name}");
            }
        }
        Ok(())
    }
}

/// Link triggers to functions.
#[derive(Args)]
pub struct RuleCommand {
    #[command(subcommand)]
    action: RuleAction,
}

#[derive(Subcommand)]
enum RuleAction {
    /// Create (or replace) a rule: when TRIGGER fires, invoke FUNCTION
    Create {
        /// Rule name
        name: String,
        /// The trigger
        trigger: String,
        /// The function
        function: String,
        /// Create it disabled
        #[arg(long)]
        disabled: bool,
    },
    /// Enable a rule
    Enable {
        /// Rule name
        name: String,
    },
    /// Disable a rule
    Disable {
        /// Rule name
        name: String,
    },
    /// List rules
    #[command(alias = "ls")]
    List,
    /// Delete a rule
    #[command(alias = "rm")]
    Delete {
        /// Rule name
        name: String,
    },
}

impl RuleCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let c = global.client()?;
        let r = match self.action {
            RuleAction::Create {
                name,
                trigger,
                function,
                disabled,
            } => {
                let body =
                    json!({ "trigger": trigger, "function": function, "enabled": !disabled });
                c.namespace_json(Method::PUT, &format!("/rules/{name}"), Some(body))
                    .await?
            }
            RuleAction::Enable { name } => {
                c.namespace_json(Method::POST, &format!("/rules/{name}/enable"), None)
                    .await?
            }
            RuleAction::Disable { name } => {
                c.namespace_json(Method::POST, &format!("/rules/{name}/disable"), None)
                    .await?
            }
            RuleAction::List => {
                let v = c.namespace_json(Method::GET, "/rules", None).await?;
                if global.json {
                    return print_json(&v);
                }
                let mut t = Table::new(["NAME", "TRIGGER", "FUNCTION", "ENABLED"]);
                for r in v["rules"].as_array().into_iter().flatten() {
                    t.row([
                        text(r, "name"),
                        text(r, "trigger"),
                        text(r, "function"),
                        text(r, "enabled"),
                    ]);
                }
                if t.is_empty() {
                    println!("no rules");
                } else {
                    print!("{t}");
                }
                return Ok(());
            }
            RuleAction::Delete { name } => {
                c.namespace_json(Method::DELETE, &format!("/rules/{name}"), None)
                    .await?;
                println!("deleted rule {name}");
                return Ok(());
            }
        };
        if global.json {
            return print_json(&r);
        }
        println!(
            "rule {}: {} → {} ({})",
            text(&r, "name"),
            text(&r, "trigger"),
            text(&r, "function"),
            if r["enabled"] == Value::Bool(true) {
                "enabled"
            } else {
                "disabled"
            }
        );
        Ok(())
    }
}
