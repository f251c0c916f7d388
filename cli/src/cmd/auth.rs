//! `loadshift auth init`: the NATS identities of a deployment, written once
//! on one machine and copied to each (deploy/provision does it), the same
//! files `loadshift up` writes for a cluster on one machine.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use loadshift_events::NodeName;

use crate::up::auth::{self, AuthDir};

/// The `auth` commands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    // The help text is the argument struct's doc comment.
    Init(InitArgs),
}

/// Write one NATS identity per role, the images key and the server's
/// authorization block into a folder.
///
/// Files: `<role>.nk` (operator, brain, webui, agent-<node> for every node,
/// executor-<worker> for every worker; mode 0600), `images.key` (the key
/// executors seal checkpoint images with) and `nats-auth.conf` (include it
/// in the nats-server configuration). Existing seeds are kept, so running
/// it again with more nodes adds their identities without changing the others.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  loadshift auth init --dir /etc/loadshift/auth --nodes node1,node2,node3 --workers node2,node3")]
pub struct InitArgs {
    /// The folder to write (created with mode 0700).
    #[arg(long)]
    pub dir: PathBuf,
    /// Every node that runs an agent, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub nodes: Vec<NodeName>,
    /// The worker nodes (they run an executor), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub workers: Vec<NodeName>,
}

/// `auth init`.
///
/// # Errors
/// When a file cannot be written.
pub fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    let dir = AuthDir::generate(&a.dir, &auth::roles(&a.nodes, &a.workers))
        .with_context(|| format!("writing the identities into {}", a.dir.display()))?;
    for (role, public) in &dir.users {
        println!("{:<20} {public}", role.name());
    }
    println!(
        "wrote {} identities, {} and {} into {}",
        dir.users.len(),
        auth::IMAGES_KEY,
        auth::SERVER_CONF,
        a.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
