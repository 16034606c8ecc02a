//! `ignis publish` and `ignis topic`: messages published to the topics of a namespace.

use std::io::Read;

use bytes::Bytes;
use clap::{Args, Subcommand};
use ignis_client::Method;
use ignis_client::display::{Table, rfc3339_s};

/// Publish a message to a topic: the topic triggers subscribed to it invoke their functions.
#[derive(Args)]
pub struct PublishCommand {
    /// Topic name
    topic: String,
    /// The message: JSON unless --content-type says otherwise; `-` reads it from stdin
    message: String,
    /// Content type of the message; anything but JSON reaches functions base64-encoded
    #[arg(long, value_name = "TYPE")]
    content_type: Option<String>,
}

impl PublishCommand {
    /// Runs the command.
    pub async fn execute(self, global: &super::GlobalOpts) -> anyhow::Result<()> {
        let c = global.client()?;
        let message = if self.message == "-" {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            buf
        } else {
            self.message.into_bytes()
        };
        let v = c
            .publish(
                &self.topic,
                self.content_type.as_deref(),
                Bytes::from(message),
            )
            .await?;
        if global.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        let n = v["triggers"].as_u64().unwrap_or(0);
        println!(
            "published {} to {} ({n} trigger{})",
            v["id"].as_str().unwrap_or(""),
            self.topic,
            if n == 1 { "" } else { "s" }
        );
        Ok(())
    }
}

/// Topics of the namespace.
#[derive(Args)]
pub struct TopicCommand {
    #[command(subcommand)]
    action: TopicAction,
}

#[derive(Subcommand)]
enum TopicAction {
    /// List the topics published to, with their counts
    #[command(alias = "ls")]
    List,
}

impl TopicCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &super::GlobalOpts) -> anyhow::Result<()> {
        let c = global.client()?;
        match self.action {
            TopicAction::List => {
                let v = c.namespace_json(Method::GET, "/topics", None).await?;
                if global.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                    return Ok(());
                }
                let mut t = Table::new(["TOPIC", "PUBLISHED", "PENDING", "LAST PUBLISHED"]);
                for topic in v["topics"].as_array().into_iter().flatten() {
                    let count = |k: &str| topic[k].as_u64().unwrap_or(0).to_string();
                    t.row([
                        topic["name"].as_str().unwrap_or("").to_string(),
                        count("published"),
                        count("pending"),
                        rfc3339_s(topic["last_published_ms"].as_u64().unwrap_or(0)),
                    ]);
                }
                if t.is_empty() {
                    println!("no topics");
                } else {
                    print!("{t}");
                }
            }
        }
        Ok(())
    }
}
