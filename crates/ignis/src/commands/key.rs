//! `ignis key show [--aws]`: the API key in use, and how to use it with the AWS SDKs and CLI
//! against the Lambda-compatible API (the key's id is the access key id, its secret the secret
//! access key, requests signed with SigV4 for the server's region). `ignis key create|list|
//! revoke`: a namespace's keys (or, with `--all`, every key).

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ignis_client::Method;
use ignis_client::display::{Table, rfc3339_s};

use super::GlobalOpts;

/// Show the API key in use; create, list and revoke keys.
#[derive(Args)]
pub struct KeyCommand {
    #[command(subcommand)]
    action: KeyAction,
}

#[derive(Subcommand)]
enum KeyAction {
    /// Print the key's id (and, with --aws, AWS credentials and an endpoint for boto3 and the
    /// AWS CLI); checks the key against the server
    Show {
        /// Print the key as AWS credentials with the server's Lambda endpoint and region
        #[arg(long)]
        aws: bool,
    },
    /// Make a key for the namespace (-n) with a role: owner (everything in the namespace, its
    /// keys included), invoke (invoke functions, fire triggers), read (read only); or an admin
    /// key (every namespace). Its secret is printed once
    Create {
        /// owner, invoke, read or admin
        #[arg(long)]
        role: String,
    },
    /// List the namespace's keys (never their secrets)
    #[command(alias = "ls")]
    List {
        /// Every key of every namespace, admin keys included (admin keys only)
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key: it is refused at once
    #[command(alias = "rm")]
    Revoke {
        /// The key's id (the part before `:`)
        id: String,
        /// A key of any namespace, or an admin key (admin keys only)
        #[arg(long)]
        all: bool,
    },
}

/// What `--aws` prints.
#[derive(Debug, PartialEq, Eq)]
struct AwsCredentials {
    access_key_id: String,
    secret_access_key: String,
    region: String,
    endpoint_url: String,
}

impl AwsCredentials {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
            "region": self.region,
            "endpoint_url": self.endpoint_url,
        })
    }

    fn text(&self) -> String {
        let AwsCredentials {
            access_key_id: id,
            secret_access_key: secret,
            region,
            endpoint_url: url,
        } = self;
        format!(
            "# AWS credentials for the Lambda-compatible API of {url}\n\
             # (~/.aws/credentials profile, or the environment variables below)\n\
             [ignis]\n\
             aws_access_key_id = {id}\n\
             aws_secret_access_key = {secret}\n\
             region = {region}\n\
             endpoint_url = {url}\n\
             \n\
             # environment\n\
             export AWS_ACCESS_KEY_ID={id}\n\
             export AWS_SECRET_ACCESS_KEY={secret}\n\
             export AWS_DEFAULT_REGION={region}\n\
             export AWS_ENDPOINT_URL_LAMBDA={url}\n\
             \n\
             # boto3\n\
             boto3.client(\"lambda\", endpoint_url=\"{url}\", region_name=\"{region}\",\n\
             \x20            aws_access_key_id=\"{id}\", aws_secret_access_key=\"{secret}\")\n\
             \n\
             # AWS CLI\n\
             aws --endpoint-url {url} --region {region} lambda list-functions\n"
        )
    }
}

impl KeyCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let aws = match self.action {
            KeyAction::Show { aws } => aws,
            KeyAction::Create { role } => return create(global, &role).await,
            KeyAction::List { all } => return list(global, all).await,
            KeyAction::Revoke { id, all } => {
                let v = global
                    .client()?
                    .keys(Method::DELETE, all, Some(&id), None)
                    .await?;
                if global.json {
                    println!("{v}");
                } else {
                    println!("revoked key {id}");
                }
                return Ok(());
            }
        };
        let client = global.client()?;
        let Some((id, secret)) = client.key_parts() else {
            bail!("no API key configured: pass --key or set IGNIS_KEY");
        };
        // Also proves that the server accepts the key.
        let info = client.system_info().await?;
        if !aws {
            if global.json {
                println!("{}", serde_json::json!({ "id": id, "url": client.url() }));
            } else {
                println!("key {id} for {}", client.url());
            }
            return Ok(());
        }
        let region = info["aws"]["region"]
            .as_str()
            .context("this server has no Lambda-compatible API (no aws.region in its info)")?;
        let creds = AwsCredentials {
            access_key_id: id.to_string(),
            secret_access_key: secret.to_string(),
            region: region.to_string(),
            endpoint_url: client.url().to_string(),
        };
        if global.json {
            println!("{}", serde_json::to_string_pretty(&creds.json())?);
        } else {
            print!("{}", creds.text());
        }
        Ok(())
    }
}

async fn create(global: &GlobalOpts, role: &str) -> anyhow::Result<()> {
    let client = global.client()?;
    let v = if role == "admin" {
        client.keys(Method::POST, true, None, None).await?
    } else {
        let body = serde_json::json!({ "role": role });
        client.keys(Method::POST, false, None, Some(body)).await?
    };
    if global.json {
        println!("{v}");
        return Ok(());
    }
    let key = v["key"].as_str().context("the server sent no key")?;
    let scope = v["namespace"].as_str().unwrap_or("every namespace");
    println!("{key}");
    eprintln!(
        "{} key {} for {scope}; the secret is shown only now: keep it",
        v["role"].as_str().unwrap_or(role),
        v["id"].as_str().unwrap_or_default()
    );
    Ok(())
}

async fn list(global: &GlobalOpts, all: bool) -> anyhow::Result<()> {
    let v = global.client()?.keys(Method::GET, all, None, None).await?;
    if global.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mut t = Table::new(["ID", "ROLE", "NAMESPACE", "CREATED"]);
    for k in v["keys"].as_array().into_iter().flatten() {
        t.row([
            k["id"].as_str().unwrap_or_default().to_string(),
            k["role"].as_str().unwrap_or_default().to_string(),
            k["namespace"].as_str().unwrap_or("*").to_string(),
            rfc3339_s(k["created_ms"].as_u64().unwrap_or(0)),
        ]);
    }
    if t.is_empty() {
        println!("no keys");
    } else {
        print!("{t}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_credentials_are_printed_in_every_form() {
        let c = AwsCredentials {
            access_key_id: "ik_1".into(),
            secret_access_key: "s3cr3t".into(),
            region: "eu-west-1".into(),
            endpoint_url: "http://127.0.0.1:8080".into(),
        };
        let t = c.text();
        assert!(t.contains("aws_access_key_id = ik_1\n"));
        assert!(t.contains("export AWS_SECRET_ACCESS_KEY=s3cr3t\n"));
        assert!(t.contains("endpoint_url=\"http://127.0.0.1:8080\", region_name=\"eu-west-1\""));
        assert!(t.contains("aws --endpoint-url http://127.0.0.1:8080 --region eu-west-1"));
        assert_eq!(c.json()["aws_access_key_id"], "ik_1");
        assert_eq!(c.json()["region"], "eu-west-1");
    }
}
