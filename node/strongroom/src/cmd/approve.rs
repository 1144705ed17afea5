//! `strongroom approve`: an approver's Ed25519 signature over a sign request's digest.
//!
//! A policy rule can ask for approvals before the nodes sign. An approval is the approver's
//! Ed25519 signature over exactly the 32 bytes of the request digest, which covers everything
//! that changes the signatures (key, transaction, inputs signed); every node verifies it
//! against the approver key its own policy lists. The command shows what is approved (the
//! digest, outputs, amounts, fee) with the result.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;
use strongroom_client::{ApiClient, ClientError};

use crate::api_args::{ApiArgs, explain};
use crate::cmd::keys::text;
use crate::cmd::sign::{check_request_id, get_request, is_final, render_summary};
use crate::output::Output;

/// The file name ending of approver key files, left out of the default approver name.
const KEY_SUFFIX: &str = ".key";

/// `strongroom approve`.
#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    #[command(flatten)]
    api: ApiArgs,
    /// The sign request to approve, as `strongroom sign list` shows it.
    request_id: String,
    /// The approver's key file: the Ed25519 secret seed, 64 hex digits (e.g.
    /// .dev/approvers/dev-approver-1.key).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The approver's name in the policy [default: the key file's name without .key].
    #[arg(long, value_name = "NAME")]
    approver: Option<String>,
}

pub(crate) fn run(args: ApproveArgs, out: &Output) -> anyhow::Result<()> {
    check_request_id(&args.request_id)?;
    let key = read_approver_key(&args.key)?;
    let approver = match args.approver {
        Some(name) => name,
        None => approver_name(&args.key)?,
    };
    let api = args.api.client()?;
    let runtime = super::runtime()?;
    runtime.block_on(approve(&api, out, &args.request_id, &approver, &key))
}

/// Approves request `request_id` as `approver` with `key`: reads the request's digest, signs
/// it, posts the approval, and reports it with what was approved.
async fn approve(
    api: &ApiClient,
    out: &Output,
    request_id: &str,
    approver: &str,
    key: &SigningKey,
) -> anyhow::Result<()> {
    let request = get_request(api, None, request_id, None).await?;
    let state = text(&request["state"]);
    if is_final(&state) {
        bail!("sign request {request_id} is already {state}: there is nothing to approve");
    }
    let digest_hex = text(&request["digest"]);
    let digest = parse_digest(&digest_hex)
        .with_context(|| format!("sign request {request_id} has no usable digest"))?;
    out.progress(&format!(
        "approving sign request {request_id} as {approver}: digest {digest_hex}"
    ));
    let signature = sign_digest(key, &digest);
    let path = format!("/v1/sign-requests/{request_id}/approvals");
    let body = json!({"approver": approver, "signature": hex::encode(signature)});
    let answer = api
        .post(&path, &body)
        .await
        .map_err(explain)?
        .into_result()
        .map_err(|e| match e {
            ClientError::Api {
                status: 403,
                ref kind,
                ..
            } if kind != "missing-role" => anyhow::anyhow!(
                "{e} (the approver must be named as in the nodes' policy, with --approver if the \
                 key file is named otherwise, and --key must be that approver's key)"
            ),
            other => explain(other),
        })?;
    let summary = request["summary"].clone();
    let report = json!({
        "request_id": request_id,
        "approver": approver,
        "state": answer["state"],
        "digest": digest_hex,
        "summary": summary,
    });
    out.report(report, || {
        let mut s = format!("approved sign request {request_id} as {approver}\n");
        let _ = writeln!(s, "{:<12} {digest_hex}", "digest");
        let _ = writeln!(s, "{:<12} {}", "key", text(&request["key_id"]));
        s.push_str(&render_summary(&summary));
        let _ = writeln!(s, "{:<12} {}", "state now", text(&answer["state"]));
        s
    });
    Ok(())
}

/// Reads an approver key file: the hex Ed25519 secret seed (32 bytes), whitespace around it
/// ignored.
pub(crate) fn read_approver_key(path: &Path) -> anyhow::Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the approver key file {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| {
            format!(
                "{} does not hold an approver key: expected 64 hex digits (an Ed25519 secret seed)",
                path.display()
            )
        })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The default approver name: the key file's name without `.key`.
pub(crate) fn approver_name(path: &Path) -> anyhow::Result<String> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(KEY_SUFFIX).unwrap_or(n))
        .filter(|n| !n.is_empty())
        .with_context(|| {
            format!(
                "cannot take an approver name from {}: pass --approver <name>",
                path.display()
            )
        })?;
    Ok(name.to_owned())
}

/// A request digest: 64 hex digits.
fn parse_digest(hex_text: &str) -> anyhow::Result<[u8; 32]> {
    hex::decode(hex_text)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("'{hex_text}' is not 32 bytes of hex"))
}

/// The approval signature: Ed25519 over exactly the 32 digest bytes.
pub(crate) fn sign_digest(key: &SigningKey, digest: &[u8; 32]) -> [u8; 64] {
    key.sign(digest).to_bytes()
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use sha2::{Digest, Sha256};
    use strongroom_policies::{Policy, verify_approval};

    use super::*;

    const DEV_POLICY: &str = include_str!("../../../../policies/examples/dev.toml");

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        approve: ApproveArgs,
    }

    fn dev_key_file(dir: &Path, i: u32) -> PathBuf {
        let path = dir.join(format!("dev-approver-{i}.key"));
        let seed = Sha256::digest(format!("strongroom-dev-approver-{i}"));
        std::fs::write(&path, format!("{}\n", hex::encode(seed))).unwrap();
        path
    }

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "approve",
            "req-1",
            "--key",
            ".dev/approvers/dev-approver-1.key",
        ])
        .unwrap();
        assert_eq!(cli.approve.request_id, "req-1");
        assert_eq!(
            cli.approve.key,
            PathBuf::from(".dev/approvers/dev-approver-1.key")
        );
        assert_eq!(cli.approve.approver, None);
        let cli =
            Cli::try_parse_from(["approve", "req-1", "--key", "k", "--approver", "alice"]).unwrap();
        assert_eq!(cli.approve.approver.as_deref(), Some("alice"));
        // The key file is required.
        assert!(Cli::try_parse_from(["approve", "req-1"]).is_err());
    }

    #[test]
    fn the_approver_is_named_after_the_key_file() {
        assert_eq!(
            approver_name(Path::new(".dev/approvers/dev-approver-1.key")).unwrap(),
            "dev-approver-1"
        );
        assert_eq!(approver_name(Path::new("alice")).unwrap(), "alice");
        assert_eq!(approver_name(Path::new("/k/bob.seed")).unwrap(), "bob.seed");
        assert!(approver_name(Path::new("/")).is_err());
        assert!(approver_name(Path::new(".key")).is_err());
    }

    #[test]
    fn approvals_verify_against_the_dev_policy() {
        let policy = Policy::from_toml_str(DEV_POLICY).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let digest: [u8; 32] = Sha256::digest(b"a request").into();
        for i in [1, 2] {
            let path = dev_key_file(dir.path(), i);
            let key = read_approver_key(&path).unwrap();
            let name = approver_name(&path).unwrap();
            let signature = sign_digest(&key, &digest);
            let verified = verify_approval(&policy, &name, &digest, &signature).unwrap();
            assert_eq!(verified.approver(), format!("dev-approver-{i}"));
            assert_eq!(verified.digest(), &digest);
            // Over exactly this digest, by exactly this approver.
            let mut other = digest;
            other[0] ^= 1;
            assert!(verify_approval(&policy, &name, &other, &signature).is_err());
            let someone_else = if i == 1 {
                "dev-approver-2"
            } else {
                "dev-approver-1"
            };
            assert!(verify_approval(&policy, someone_else, &digest, &signature).is_err());
        }
        // The third dev key is in no policy.
        let key = read_approver_key(&dev_key_file(dir.path(), 3)).unwrap();
        let signature = sign_digest(&key, &digest);
        assert!(verify_approval(&policy, "dev-approver-3", &digest, &signature).is_err());
    }

    #[test]
    fn key_files_hold_64_hex_digits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        std::fs::write(&path, format!("  {}\n\n", "ab".repeat(32))).unwrap();
        assert!(read_approver_key(&path).is_ok());
        for bad in ["", "ab", &"ab".repeat(33), &"zz".repeat(32)] {
            std::fs::write(&path, bad).unwrap();
            let err = read_approver_key(&path).unwrap_err().to_string();
            assert!(err.contains("expected 64 hex digits"), "{err}");
        }
        let err = read_approver_key(&dir.path().join("missing.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the approver key file"), "{err}");
    }

    #[test]
    fn digests_are_32_bytes_of_hex() {
        assert_eq!(parse_digest(&"01".repeat(32)).unwrap()[0], 1);
        assert!(parse_digest("01").is_err());
        assert!(parse_digest("-").is_err());
    }
}
