//! `strongroom node`: run a node from its configuration file.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use strongroom_node::Config;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum NodeCommand {
    /// Run the node until SIGTERM or Ctrl-C. Every field of the configuration is documented in
    /// node/runtime/examples/node.toml; STRONGROOM__<SECTION>__<FIELD> overrides a field.
    Run {
        /// The node's configuration file.
        #[arg(long, env = "STRONGROOM_CONFIG")]
        config: PathBuf,
    },
    /// Read and validate a configuration file (with environment overrides), print the result
    /// and exit.
    CheckConfig {
        /// The node's configuration file.
        #[arg(long, env = "STRONGROOM_CONFIG")]
        config: PathBuf,
    },
}

pub(crate) fn run(cmd: NodeCommand, out: &Output) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Run { config } => {
            let config = Config::load(&config)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("strongroom-node")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(strongroom_node::run(config, shutdown_signal()))?;
            Ok(())
        }
        NodeCommand::CheckConfig { config } => {
            let c = Config::load(&config)?;
            let policy = strongroom_node::run::load_policy(&c)?;
            let policy_json = policy.as_ref().map(|p| {
                json!({"file": c.policy.file, "id": p.id(), "hash": p.hash().to_hex(), "rules": p.rules().len()})
            });
            let profile = strongroom_node::admission::check_profile(&c)?;
            let profile_json = profile.as_ref().map(|p| {
                json!({"file": c.attestation.profile, "id": p.id, "mode": p.mode.as_str(),
                       "unfilled": p.unfilled_fields()})
            });
            let profile_text = match &profile {
                Some(p) if p.unfilled_fields().is_empty() => {
                    format!("firmware profile '{}' ({})", p.id, p.mode.as_str())
                }
                Some(p) => format!(
                    "firmware profile '{}' ({}), NOT FILLED IN: {} (no peer is admitted until it is)",
                    p.id,
                    p.mode.as_str(),
                    p.unfilled_fields().join(", ")
                ),
                None => "NO FIRMWARE PROFILE: peers admitted on their certificate alone".to_owned(),
            };
            let policy_text = match &policy {
                Some(p) => format!("policy '{}' ({})", p.id(), p.hash().to_hex()),
                None => "NO POLICY: every signing request is denied".to_owned(),
            };
            out.report(
                json!({
                    "policy": policy_json,
                    "firmware_profile": profile_json,
                    "config": c.source, "node_id": c.node.id, "cluster_id": c.node.cluster_id,
                    "members": c.members(), "network": c.node.network, "dev_mode": c.node.dev_mode,
                    "pool": {"target": c.pool.target, "low_water": c.pool.low_water, "max": c.pool.max,
                             "concurrency": c.pool.effective_concurrency()},
                }),
                || {
                    format!(
                        "{}: valid (node {}, cluster {}, {} members, network {}{}; {policy_text}; {profile_text})\n",
                        c.source.display(),
                        c.node.id,
                        c.node.cluster_id,
                        c.members().len(),
                        c.node.network,
                        if c.node.dev_mode { ", DEV MODE" } else { "" }
                    )
                },
            );
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
