//! `strongroom tpm`: the appliance's TPM attestation key (enroll, status).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};
use strongroom_attest::{FirmwareProfile, Sha256Digest};
use strongroom_node::tpm::{DEFAULT_PCRS, Tpm2Tools, hex_handle, parse_handle, quoted_pcrs};

use crate::output::{Output, Reported};

#[derive(Debug, Subcommand)]
pub(crate) enum TpmCommand {
    /// Create the ECDSA P-256 attestation key under the endorsement key and make it persistent
    /// (once; run again, it reports the key already there), and print the digest that goes
    /// into the firmware profile's `tpm.enrolled_aks`.
    Enroll(TpmArgs),
    /// Show the attestation key's digest and the boot PCRs, and with `--profile` whether they
    /// pass that firmware profile (exit 1 if not).
    Status {
        #[command(flatten)]
        tpm: TpmArgs,
        /// A firmware profile to check the key and the PCR values against.
        #[arg(long)]
        profile: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub(crate) struct TpmArgs {
    /// The TPM, as a tpm2-tools TCTI (as `[attestation.tpm] tcti` in node.toml).
    #[arg(long, env = "STRONGROOM_TPM_TCTI", default_value = strongroom_node::tpm::DEFAULT_TCTI)]
    tcti: String,
    /// Persistent handle of the attestation key (as `[attestation.tpm] ak_handle`).
    #[arg(long, default_value = "0x81010002")]
    handle: String,
}

pub(crate) fn run(command: TpmCommand, out: &Output) -> anyhow::Result<()> {
    match command {
        TpmCommand::Enroll(args) => {
            let handle = parse_handle(&args.handle)?;
            let tools = Tpm2Tools::new(args.tcti.clone());
            out.progress(&format!(
                "enrolling the attestation key at {} on TPM {}",
                hex_handle(handle),
                args.tcti
            ));
            let enrolled = tools.enroll(handle)?;
            let digest = enrolled.ak_sha256.to_hex();
            out.report(
                json!({
                    "tcti": args.tcti,
                    "ak_handle": hex_handle(handle),
                    "ak_sha256": digest,
                    "created": enrolled.created,
                }),
                || {
                    format!(
                        "{} attestation key at {} (ECDSA P-256).\n\
                         Add its digest to tpm.enrolled_aks of the cluster's firmware profile, on every node:\n  \"{digest}\"\n\
                         and to node.toml:\n  [attestation.tpm]\n  tcti = \"{}\"\n  ak_handle = {}\n",
                        if enrolled.created { "Created the" } else { "Already enrolled: the" },
                        hex_handle(handle),
                        args.tcti,
                        hex_handle(handle),
                    )
                },
            );
            Ok(())
        }
        TpmCommand::Status { tpm, profile } => status(&tpm, profile, out),
    }
}

fn status(args: &TpmArgs, profile: Option<PathBuf>, out: &Output) -> anyhow::Result<()> {
    let handle = parse_handle(&args.handle)?;
    let tools = Tpm2Tools::new(args.tcti.clone());
    let profile = profile
        .map(|p| FirmwareProfile::load(&p).map(|loaded| (p, loaded)))
        .transpose()?;
    let ak = tools.read_ak(handle)?;
    let ak_sha256 = Sha256Digest::of(&ak);
    let pcrs: Vec<u8> = match &profile {
        Some((_, p)) => quoted_pcrs(p),
        None => DEFAULT_PCRS.to_vec(),
    };
    let values = tools.read_pcrs(&pcrs)?;

    let mut problems: Vec<String> = Vec::new();
    let mut pcr_rows: Vec<Value> = Vec::new();
    for v in &values {
        let expected = profile
            .as_ref()
            .and_then(|(_, p)| p.tpm.pcrs.get(&v.index).cloned());
        let verdict = match &expected {
            None => "not checked",
            Some(None) => "profile value not filled in",
            Some(Some(e)) if *e == v.value => "matches",
            Some(Some(_)) => "differs",
        };
        if matches!(verdict, "differs" | "profile value not filled in") {
            problems.push(format!("PCR {}: {verdict}", v.index));
        }
        pcr_rows.push(json!({
            "index": v.index,
            "value": v.value.to_hex(),
            "expected": expected.flatten().map(|e| e.to_hex()),
            "verdict": verdict,
        }));
    }
    let enrolled = profile
        .as_ref()
        .map(|(_, p)| p.tpm.enrolled_aks.contains(&ak_sha256));
    if enrolled == Some(false) {
        problems.push(format!(
            "attestation key {ak_sha256} is not in tpm.enrolled_aks"
        ));
    }
    let profile_json = profile.as_ref().map(|(path, p)| {
        json!({
            "file": path.display().to_string(),
            "id": p.id,
            "tpm_required": p.tpm.required,
            "passes": problems.is_empty(),
            "problems": problems,
        })
    });
    out.report(
        json!({
            "tcti": args.tcti,
            "ak_handle": hex_handle(handle),
            "ak_sha256": ak_sha256.to_hex(),
            "ak_enrolled": enrolled,
            "pcrs": pcr_rows,
            "profile": profile_json,
        }),
        || {
            let mut text = format!(
                "TPM {}\nattestation key at {}: sha256 {}{}\n",
                args.tcti,
                hex_handle(handle),
                ak_sha256,
                match enrolled {
                    Some(true) => " (enrolled in the profile)",
                    Some(false) => " (NOT in the profile's tpm.enrolled_aks)",
                    None => "",
                }
            );
            for row in &pcr_rows {
                text.push_str(&format!(
                    "PCR {:>2} (sha256): {}  {}\n",
                    row["index"],
                    row["value"].as_str().unwrap_or_default(),
                    row["verdict"].as_str().unwrap_or_default()
                ));
            }
            if let Some((path, p)) = &profile {
                if problems.is_empty() {
                    text.push_str(&format!("passes profile '{}' ({})\n", p.id, path.display()));
                }
            }
            text
        },
    );
    if let Some((path, p)) = &profile {
        if !problems.is_empty() {
            return Err(Reported(format!(
                "this TPM does not pass profile '{}' ({}): {}",
                p.id,
                path.display(),
                problems.join("; ")
            ))
            .into());
        }
    }
    Ok(())
}
