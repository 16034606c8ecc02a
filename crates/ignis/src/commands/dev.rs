//! `ignis dev`: tools for trying and working on Ignis on one machine.

mod cluster;

use clap::{Args, Subcommand};

use super::GlobalOpts;

/// Tools for trying Ignis on one machine.
#[derive(Args)]
pub struct DevCommand {
    #[command(subcommand)]
    command: DevSubcommand,
}

#[derive(Subcommand)]
enum DevSubcommand {
    /// Run a whole cluster on this machine: NATS servers, gateways and invokers, until Ctrl-C
    Cluster(cluster::ClusterCommand),
}

impl DevCommand {
    /// Runs the subcommand.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        match self.command {
            DevSubcommand::Cluster(c) => c.execute(global).await,
        }
    }
}
