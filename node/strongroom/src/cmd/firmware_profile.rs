//! `strongroom firmware-profile`: the digests of a build, for a firmware profile.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum FirmwareProfileCommand {
    /// Print the SHA-256 of a built `strongroom` binary as a line for a profile's `[binary]` section.
    Digest {
        /// The binary, e.g. target/release/strongroom.
        file: PathBuf,
    },
}

pub(crate) fn run(command: FirmwareProfileCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        FirmwareProfileCommand::Digest { file } => {
            let digest = strongroom_attest::file_sha256(&file)?;
            out.report(
                json!({ "file": file.display().to_string(), "sha256": digest.to_hex() }),
                || format!("{}\n", strongroom_attest::profile_line(&file, &digest)),
            );
        }
    }
    Ok(())
}
