//! `ignis kv` and `ignis objects`: the namespace's key-value store and object storage.

use std::io::{Read, Write};

use clap::{Args, Subcommand};
use ignis_client::ClientError;
use ignis_client::display::{Table, rfc3339_s};
use serde_json::Value;

use super::GlobalOpts;

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// A value from the command line, or from stdin for `-`.
fn value_arg(value: Option<String>, file: Option<std::path::PathBuf>) -> anyhow::Result<Vec<u8>> {
    match (value, file) {
        (Some(v), None) if v == "-" => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf)?;
            Ok(buf)
        }
        (Some(v), None) => Ok(v.into_bytes()),
        (None, Some(path)) => std::fs::read(&path).map_err(|e| {
            ClientError::Config(format!("cannot read {}: {e}", path.display())).into()
        }),
        _ => Err(ClientError::Config("give a value, `-` for stdin, or --file".into()).into()),
    }
}

fn not_found(what: String) -> anyhow::Error {
    ClientError::Api {
        status: 404,
        code: "not_found".into(),
        message: format!("{what} not found"),
        retry_after: None,
    }
    .into()
}

/// The namespace's key-value store.
#[derive(Args)]
pub struct KvCommand {
    #[command(subcommand)]
    action: KvAction,
}

#[derive(Subcommand)]
enum KvAction {
    /// Print a value (raw bytes, no newline added)
    Get {
        /// The key
        #[arg(value_name = "KEY")]
        name: String,
    },
    /// Write a value
    #[command(alias = "set")]
    Put {
        /// The key
        #[arg(value_name = "KEY")]
        name: String,
        /// The value (`-` reads stdin)
        value: Option<String>,
        /// Read the value from a file
        #[arg(long, conflicts_with = "value")]
        file: Option<std::path::PathBuf>,
        /// Expire the entry after this many seconds
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
        /// Only if the entry is at this version (compare-and-swap)
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Only if there is no entry
        #[arg(long)]
        if_absent: bool,
    },
    /// Add to an integer entry atomically and print the new value
    #[command(alias = "increment")]
    Incr {
        /// The key
        #[arg(value_name = "KEY")]
        name: String,
        /// How much to add (may be negative)
        #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
        by: i64,
        /// Expire the entry after this many seconds
        #[arg(long, value_name = "SECONDS")]
        ttl: Option<u64>,
    },
    /// Delete an entry
    #[command(alias = "rm")]
    Delete {
        /// The key
        #[arg(value_name = "KEY")]
        name: String,
        /// Only if the entry is at this version
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// List keys
    #[command(alias = "ls")]
    List {
        /// Only keys starting with this
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

impl KvCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let c = global.client()?;
        match self.action {
            KvAction::Get { name: key } => {
                let Some((value, version)) = c.kv_get(&key).await? else {
                    return Err(not_found(format!("key {key:?}")));
                };
                if global.json {
                    return print_json(&serde_json::json!({
                        "key": key,
                        "version": version,
                        "value": String::from_utf8_lossy(&value),
                    }));
                }
                std::io::stdout().write_all(&value)?;
            }
            KvAction::Put {
                name: key,
                value,
                file,
                ttl,
                if_version,
                if_absent,
            } => {
                let value = value_arg(value, file)?;
                let version = c
                    .kv_put(&key, value.into(), ttl, if_version, if_absent)
                    .await?;
                if global.json {
                    return print_json(&serde_json::json!({"key": key, "version": version}));
                }
                println!("{key} version {version}");
            }
            KvAction::Incr { name: key, by, ttl } => {
                let (value, version) = c.kv_increment(&key, by, ttl).await?;
                if global.json {
                    return print_json(
                        &serde_json::json!({"key": key, "value": value, "version": version}),
                    );
                }
                println!("{value}");
            }
            KvAction::Delete {
                name: key,
                if_version,
            } => {
                if !c.kv_delete(&key, if_version).await? {
                    return Err(not_found(format!("key {key:?}")));
                }
                if !global.json {
                    println!("deleted {key}");
                }
            }
            KvAction::List { prefix, limit } => {
                let page = c.kv_list(&prefix, None, Some(limit)).await?;
                if global.json {
                    return print_json(&page);
                }
                let mut t = Table::new(["KEY", "VERSION", "SIZE", "UPDATED", "EXPIRES"]);
                for e in page["keys"].as_array().into_iter().flatten() {
                    t.row([
                        e["key"].as_str().unwrap_or_default().to_string(),
                        e["version"].to_string(),
                        e["size"].to_string(),
                        rfc3339_s(e["updated_ms"].as_u64().unwrap_or_default()),
                        e["expires_ms"].as_u64().map(rfc3339_s).unwrap_or_default(),
                    ]);
                }
                if t.is_empty() {
                    println!("no keys");
                } else {
                    print!("{t}");
                }
            }
        }
        Ok(())
    }
}

/// The namespace's object storage: buckets and objects.
#[derive(Args)]
pub struct ObjectsCommand {
    #[command(subcommand)]
    action: ObjectsAction,
}

#[derive(Subcommand)]
enum ObjectsAction {
    /// Create a bucket
    #[command(name = "mb", alias = "create-bucket")]
    MakeBucket {
        /// Bucket name (3-63 of a-z 0-9 - .)
        bucket: String,
    },
    /// Delete an empty bucket
    #[command(name = "rb", alias = "delete-bucket")]
    RemoveBucket {
        /// Bucket name
        bucket: String,
    },
    /// List buckets
    Buckets,
    /// Upload a file (`-`: stdin) as an object
    Put {
        /// Bucket
        bucket: String,
        /// Object key
        #[arg(value_name = "KEY")]
        name: String,
        /// The file to upload (`-` reads stdin)
        file: String,
        /// Content type
        #[arg(long)]
        content_type: Option<String>,
    },
    /// Download an object to stdout or a file
    Get {
        /// Bucket
        bucket: String,
        /// Object key
        #[arg(value_name = "KEY")]
        name: String,
        /// Write to this file instead of stdout
        #[arg(long, short = 'o')]
        output: Option<std::path::PathBuf>,
    },
    /// List objects
    #[command(alias = "ls")]
    List {
        /// Bucket
        bucket: String,
        /// Only keys starting with this
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Delete an object
    #[command(alias = "rm")]
    Delete {
        /// Bucket
        bucket: String,
        /// Object key
        #[arg(value_name = "KEY")]
        name: String,
    },
}

impl ObjectsCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let c = global.client()?;
        match self.action {
            ObjectsAction::MakeBucket { bucket } => {
                let new = c.create_bucket(&bucket).await?;
                if !global.json {
                    println!("bucket {bucket} {}", if new { "created" } else { "exists" });
                }
            }
            ObjectsAction::RemoveBucket { bucket } => {
                c.delete_bucket(&bucket).await?;
                if !global.json {
                    println!("deleted bucket {bucket}");
                }
            }
            ObjectsAction::Buckets => {
                let v = c
                    .namespace_json(ignis_client::Method::GET, "/buckets", None)
                    .await?;
                if global.json {
                    return print_json(&v);
                }
                let mut t = Table::new(["BUCKET", "CREATED"]);
                for b in v["buckets"].as_array().into_iter().flatten() {
                    t.row([
                        b["name"].as_str().unwrap_or_default().to_string(),
                        rfc3339_s(b["created_ms"].as_u64().unwrap_or_default()),
                    ]);
                }
                if t.is_empty() {
                    println!("no buckets");
                } else {
                    print!("{t}");
                }
            }
            ObjectsAction::Put {
                bucket,
                name: key,
                file,
                content_type,
            } => {
                let body = if file == "-" {
                    value_arg(Some(file), None)?
                } else {
                    value_arg(None, Some(file.into()))?
                };
                let meta = c
                    .put_object(&bucket, &key, body.into(), content_type.as_deref())
                    .await?;
                if global.json {
                    return print_json(&meta);
                }
                println!(
                    "{bucket}/{key}: {} bytes, etag {}",
                    meta["size"],
                    meta["etag"].as_str().unwrap_or_default()
                );
            }
            ObjectsAction::Get {
                bucket,
                name: key,
                output,
            } => {
                let body = c.get_object(&bucket, &key).await?;
                match output {
                    Some(path) => std::fs::write(&path, &body).map_err(|e| {
                        ClientError::Config(format!("cannot write {}: {e}", path.display()))
                    })?,
                    None => std::io::stdout().write_all(&body)?,
                }
            }
            ObjectsAction::List {
                bucket,
                prefix,
                limit,
            } => {
                let page = c.list_objects(&bucket, &prefix, None, Some(limit)).await?;
                if global.json {
                    return print_json(&page);
                }
                let mut t = Table::new(["KEY", "SIZE", "ETAG", "CONTENT TYPE", "MODIFIED"]);
                for o in page["objects"].as_array().into_iter().flatten() {
                    t.row([
                        o["key"].as_str().unwrap_or_default().to_string(),
                        o["size"].to_string(),
                        o["etag"].as_str().unwrap_or_default().to_string(),
                        o["content_type"].as_str().unwrap_or_default().to_string(),
                        rfc3339_s(o["modified_ms"].as_u64().unwrap_or_default()),
                    ]);
                }
                if t.is_empty() {
                    println!("no objects");
                } else {
                    print!("{t}");
                }
            }
            ObjectsAction::Delete { bucket, name: key } => {
                c.delete_object(&bucket, &key).await?;
                if !global.json {
                    println!("deleted {bucket}/{key}");
                }
            }
        }
        Ok(())
    }
}
