//! The `strongroom` binary: wires the keystore, transport, store, coordination and API together.
//!
//! Each command group lives in its own module under `cmd/`; this file only parses the command
//! line, sets up logging and reports errors.

mod api_args;
mod cmd;
mod output;
mod token_args;

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{Output, Reported};
use crate::token_args::TokenArgs;

/// strongroom: an HSM-backed threshold-signing appliance for Bitcoin custody.
#[derive(Debug, Parser)]
#[command(name = "strongroom", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    token: TokenArgs,
    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Provision and inspect the token that seals this node's secrets.
    #[command(subcommand)]
    Keystore(cmd::keystore::KeystoreCommand),
    /// Run a node.
    #[command(subcommand)]
    Node(cmd::node::NodeCommand),
    /// Measure performance on this machine.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
    /// Cluster status through the API; cluster CA, node and client certificates (dev init; CSR
    /// ceremony: csr, sign, install).
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Firmware profiles: the digests of a build.
    #[command(subcommand)]
    FirmwareProfile(cmd::firmware_profile::FirmwareProfileCommand),
    /// The TPM attestation key of this appliance (enroll, status).
    #[command(subcommand)]
    Tpm(cmd::tpm::TpmCommand),
    /// Threshold keys of the cluster, through the node API (create, list, show).
    Keys(cmd::keys::KeysArgs),
    /// Sign PSBTs under the nodes' policies, through the node API (submit, status, wait, list).
    Sign(cmd::sign::SignArgs),
    /// Approve a sign request that a policy holds for approvals: sign its digest with an
    /// approver key.
    Approve(cmd::approve::ApproveArgs),
    /// The local dev cluster under .dev/ that stays up between commands (up, status, down,
    /// demo).
    #[command(subcommand)]
    Dev(cmd::dev::DevCommand),
    /// The tamper-evident audit log: export a node's log as a bundle, verify a bundle offline.
    Audit(cmd::audit::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // cryptoki logs an error for every vendor mechanism it has no name for when it lists a
    // token's mechanisms; that is noise, not a fault.
    // A node logs what it does; one-shot commands only warnings. STRONGROOM_LOG (or RUST_LOG)
    // overrides either.
    // The API commands say which node failed in their error; the client's warning for every
    // node it fails over from would only repeat it.
    let default_filter = match cli.command {
        Command::Node(_) => "info,cryptoki::mechanism=off",
        Command::Keys(_)
        | Command::Sign(_)
        | Command::Approve(_)
        | Command::Cluster(cmd::cluster::ClusterCommand::Status(_))
        | Command::Dev(cmd::dev::DevCommand::Demo { .. }) => {
            "warn,strongroom_client=error,cryptoki::mechanism=off"
        }
        _ => "warn,cryptoki::mechanism=off",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRONGROOM_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();
    let out = Output::new(cli.json);
    let result = match cli.command {
        Command::Keystore(c) => cmd::keystore::run(c, &cli.token, &out),
        Command::Node(c) => cmd::node::run(c, &out),
        Command::Bench(c) => cmd::bench::run(c, &cli.token, &out),
        Command::Cluster(c) => cmd::cluster::run(c, &cli.token, &out),
        Command::FirmwareProfile(c) => cmd::firmware_profile::run(c, &out),
        Command::Tpm(c) => cmd::tpm::run(c, &out),
        Command::Keys(c) => cmd::keys::run(c, &out),
        Command::Sign(c) => cmd::sign::run(c, &out),
        Command::Approve(c) => cmd::approve::run(c, &out),
        Command::Dev(c) => cmd::dev::run(c, &out),
        Command::Audit(c) => cmd::audit::run(c, &out),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<Reported>().is_none() {
                out.error(&error_chain(&e));
            }
            let _ = writeln!(std::io::stderr(), "error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the previous
/// message already includes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
