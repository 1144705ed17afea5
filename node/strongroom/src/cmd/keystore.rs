//! `strongroom keystore`: provision and inspect the token.

use std::fmt::Write as _;

use anyhow::{Context, bail};
use clap::Subcommand;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use strongroom_keystore::{
    KekAttributes, ObjectKind, ObjectRef, SealedBlob, Token, TokenInfo, UnsealError,
};

use crate::output::Output;
use crate::token_args::TokenArgs;

/// Counter whose value is the generation of the demo's sealed secret.
const DEMO_COUNTER: &str = "demo-generation";

#[derive(Debug, Subcommand)]
pub(crate) enum KeystoreCommand {
    /// Create the key-encryption key and the identity key on the token, if absent.
    Init,
    /// Show what is on the token: token facts, KEK versions, identity key, counters.
    Status,
    /// Create a new KEK version and make it current for new seals.
    Rotate,
    /// Read (or increment) a monotonic counter kept in the token.
    Counter {
        /// Counter name (a-z, 0-9, '.', '_', '-').
        name: String,
        /// Increment the counter and print the new value.
        #[arg(long)]
        increment: bool,
    },
    /// Seal a random secret through the token, show the sealed blob, and unseal it again.
    Demo {
        /// Cluster id bound into the blob.
        #[arg(long, default_value = "dev-cluster")]
        cluster_id: String,
        /// Node id bound into the blob.
        #[arg(long, default_value = "node-1")]
        node_id: String,
        /// Size of the secret in bytes.
        #[arg(long, default_value_t = 400)]
        size: usize,
    },
}

pub(crate) fn run(cmd: KeystoreCommand, args: &TokenArgs, out: &Output) -> anyhow::Result<()> {
    let config = args.config()?;
    match cmd {
        KeystoreCommand::Init => {
            let (token, report) = Token::provision(&config)?;
            let fingerprint = token.identity().public_key().fingerprint_hex();
            let verb = |created| if created { "created" } else { "found" };
            out.report(
                json!({
                    "token": info_json(token.info()),
                    "kek_created": report.kek_created,
                    "identity_created": report.identity_created,
                    "kek_versions": report.kek_versions,
                    "identity_fingerprint_sha256": fingerprint,
                }),
                || {
                    let mut s = String::new();
                    let _ = writeln!(s, "token '{}' is provisioned", token.label());
                    let _ = writeln!(
                        s,
                        "  key-encryption key: {} (versions {:?})",
                        verb(report.kek_created),
                        report.kek_versions
                    );
                    let _ = writeln!(
                        s,
                        "  identity key:       {} (sha256:{fingerprint})",
                        verb(report.identity_created)
                    );
                    s
                },
            );
        }
        KeystoreCommand::Status => {
            let status = Token::inspect(&config)?;
            let identity = status.identity.map(|k| k.fingerprint_hex());
            let provisioned = !status.keks.is_empty() && identity.is_some();
            out.report(
                json!({
                    "token": info_json(&status.info),
                    "provisioned": provisioned,
                    "keks": status.keks.iter().map(|(v, a)| json!({
                        "version": v,
                        "attributes": kek_json(a),
                    })).collect::<Vec<_>>(),
                    "current_kek_version": status.keks.last().map(|(v, _)| v),
                    "identity_fingerprint_sha256": identity,
                    "counters": status.counters.iter()
                        .map(|(n, v)| (n.clone(), json!(v)))
                        .collect::<serde_json::Map<_, _>>(),
                }),
                || {
                    let mut s = info_text(&status.info);
                    if status.keks.is_empty() {
                        let _ = writeln!(s, "KEKs:          none (run `strongroom keystore init`)");
                    }
                    for (v, a) in &status.keks {
                        let _ = writeln!(
                            s,
                            "KEK v{v}:        sensitive={} extractable={} never-extractable={} modifiable={}",
                            a.sensitive, a.extractable, a.never_extractable, a.modifiable
                        );
                    }
                    let _ = match &identity {
                        Some(f) => writeln!(s, "identity key:  sha256:{f}"),
                        None => writeln!(s, "identity key:  none (run `strongroom keystore init`)"),
                    };
                    if status.counters.is_empty() {
                        let _ = writeln!(s, "counters:      none");
                    }
                    for (name, value) in &status.counters {
                        let _ = writeln!(s, "counter {name}: {value}");
                    }
                    s
                },
            );
        }
        KeystoreCommand::Rotate => {
            let token = Token::open(&config)?;
            let version = token.rotate_kek()?;
            let versions = token.kek_versions();
            out.report(
                json!({ "current_kek_version": version, "kek_versions": versions }),
                || {
                    format!(
                        "created KEK version {version}; new seals use it. Versions on the token: \
                         {versions:?}. Re-seal stored blobs before retiring older versions.\n"
                    )
                },
            );
        }
        KeystoreCommand::Counter { name, increment } => {
            let token = Token::open(&config)?;
            let value = if increment {
                token.counter_increment(&name)?
            } else {
                token.counter_read(&name)?
            };
            out.report(
                json!({ "name": name, "value": value, "incremented": increment }),
                || format!("{name} = {value}\n"),
            );
        }
        KeystoreCommand::Demo {
            cluster_id,
            node_id,
            size,
        } => demo(&config, &cluster_id, &node_id, size, out)?,
    }
    Ok(())
}

fn demo(
    config: &strongroom_keystore::TokenConfig,
    cluster_id: &str,
    node_id: &str,
    size: usize,
    out: &Output,
) -> anyhow::Result<()> {
    let token = Token::open(config)?;
    let mut secret = vec![0u8; size];
    SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| anyhow::anyhow!("the operating system's random number generator failed"))?;
    let secret = strongroom_keystore::SecretBytes::new(secret);
    let generation = token.counter_increment(DEMO_COUNTER)?;
    let object = ObjectRef {
        cluster_id,
        node_id,
        kind: ObjectKind::Opaque,
        object_id: b"demo-secret",
    };
    let blob = token
        .seal(&object, generation, secret.expose_secret())
        .context("sealing the demo secret")?;
    let parsed = SealedBlob::parse(&blob).context("parsing the sealed blob")?;
    let h = &parsed.header;
    let opened = token
        .unseal(&object, &blob)
        .context("unsealing the demo secret")?;
    if opened.plaintext.expose_secret() != secret.expose_secret() {
        bail!("the unsealed secret differs from the sealed one");
    }
    let other_node = format!("{node_id}-other");
    let moved = token.unseal(
        &ObjectRef {
            node_id: &other_node,
            ..object
        },
        &blob,
    );
    let refused = match moved {
        Err(e @ UnsealError::WrongNode { .. }) => e.to_string(),
        Err(e) => bail!("a blob presented as another node's was refused for the wrong reason: {e}"),
        Ok(_) => bail!("a blob presented as another node's was accepted"),
    };
    out.report(
        json!({
            "token": token.label(),
            "header": {
                "format_version": h.format_version,
                "suite": format!("{:?}", h.suite),
                "kek_label": h.kek_label,
                "kek_version": h.kek_version,
                "protected_key_iv": hex::encode(h.protected_key.iv),
                "protected_key_len": h.protected_key.ciphertext.len(),
                "payload_nonce": hex::encode(h.payload_nonce),
                "cluster_id": h.cluster_id,
                "node_id": h.node_id,
                "kind": h.kind.name(),
                "object_id": String::from_utf8_lossy(&h.object_id),
                "generation": h.generation,
            },
            "secret_len": secret.len(),
            "header_len": parsed.header_bytes.len(),
            "payload_len": parsed.payload.len(),
            "blob_len": blob.len(),
            "unsealed_equal": true,
            "moved_blob_refused": refused,
        }),
        || {
            let mut s = String::new();
            let _ = writeln!(
                s,
                "sealed a random {}-byte secret with token '{}' (a SoftHSM dev token unless configured otherwise):",
                secret.len(),
                token.label()
            );
            let _ = writeln!(s, "  format version   {}", h.format_version);
            let _ = writeln!(s, "  suite            {:?}", h.suite);
            let _ = writeln!(s, "  KEK              {} (version {})", h.kek_label, h.kek_version);
            let _ = writeln!(
                s,
                "  protected key    {} bytes, IV {}",
                h.protected_key.ciphertext.len(),
                hex::encode(h.protected_key.iv)
            );
            let _ = writeln!(s, "  payload nonce    {}", hex::encode(h.payload_nonce));
            let _ = writeln!(s, "  cluster / node   {} / {}", h.cluster_id, h.node_id);
            let _ = writeln!(
                s,
                "  object           {} '{}'",
                h.kind,
                String::from_utf8_lossy(&h.object_id)
            );
            let _ = writeln!(s, "  generation       {} (token counter {DEMO_COUNTER})", h.generation);
            let _ = writeln!(
                s,
                "  sizes            header {} B + payload {} B = blob {} B",
                parsed.header_bytes.len(),
                parsed.payload.len(),
                blob.len()
            );
            let _ = writeln!(s, "unsealed it: identical to the original secret");
            let _ = writeln!(s, "presented as another node's blob, it was refused: {refused}");
            s
        },
    );
    Ok(())
}

fn info_json(info: &TokenInfo) -> serde_json::Value {
    json!({
        "label": info.label,
        "manufacturer": info.manufacturer,
        "model": info.model,
        "serial": info.serial,
        "firmware_version": info.firmware_version,
        "hardware_version": info.hardware_version,
        "module": info.module.display().to_string(),
    })
}

fn info_text(info: &TokenInfo) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "token:         {}", info.label);
    let _ = writeln!(s, "manufacturer:  {}", info.manufacturer);
    let _ = writeln!(s, "model:         {}", info.model);
    let _ = writeln!(s, "serial:        {}", info.serial);
    let _ = writeln!(s, "firmware:      {}", info.firmware_version);
    let _ = writeln!(s, "module:        {}", info.module.display());
    s
}

fn kek_json(a: &KekAttributes) -> serde_json::Value {
    json!({
        "sensitive": a.sensitive,
        "extractable": a.extractable,
        "always_sensitive": a.always_sensitive,
        "never_extractable": a.never_extractable,
        "modifiable": a.modifiable,
        "persistent": a.persistent,
    })
}
