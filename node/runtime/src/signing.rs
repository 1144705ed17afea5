//! Online signing as a coordinator: reserve one presignature on every signer of a pool, collect
//! the signers' entropy, ask each for its partial signature (each signer consumes its piece
//! durably before it answers), check every partial against the presignature's public
//! commitments (a cheating signer is named), combine, and verify the signature under the child
//! key before anything leaves the node. When no pool can serve, run interactive signing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use strongroom_mpc::online::{NodeComputedSighash, OnlineSigning, PartialSignature, SignerEntropy};
use strongroom_mpc::presign::PresignaturePublic;
use strongroom_store::SignatureRecord;

use crate::control::{Reply, Request, SignTarget};
use crate::engine::{Engine, EngineError, hex32, parse_path, random_id};
use crate::leader::signer_sets;

/// A completed signing.
#[derive(Debug, Clone, Serialize)]
pub struct SignOutcome {
    /// The request id.
    pub request_id: String,
    /// Key id.
    pub key_id: String,
    /// Derivation path.
    pub path: String,
    /// The digest signed, hex.
    pub digest: String,
    /// r, hex.
    pub r: String,
    /// s (low-S), hex.
    pub s: String,
    /// DER signature, hex (without a sighash type byte).
    pub der: String,
    /// The child public key the signature verifies under, hex.
    pub public_key: String,
    /// The nonce point R (pool signings), hex.
    pub nonce_point: Option<String>,
    /// The presignature used (pool signings), hex.
    pub presignature_id: Option<String>,
    /// The signers, node ids.
    pub signers: Vec<String>,
    /// `pool` or `interactive`.
    pub mode: String,
    /// Milliseconds the coordinator spent.
    pub duration_ms: f64,
}

/// How many presignatures of one pool a signing tries before moving on.
const TRIES_PER_POOL: usize = 2;

/// Signs `digest` at `path` with key `key_id`: from a pool if one can serve, else interactively
/// if configured. Dev mode only: the PSBT path ([`crate::requests`]) has every node compute the
/// message itself.
pub async fn sign_digest(
    engine: &Arc<Engine>,
    key_id: &str,
    path_text: &str,
    digest_hex: &str,
) -> Result<SignOutcome, EngineError> {
    engine.require_raw_digests()?;
    let digest = hex32(digest_hex, "digest")?;
    let request_id = hex::encode(random_id::<16>());
    let target = SignTarget::Digest {
        path: path_text.to_owned(),
        digest: digest_hex.to_owned(),
    };
    sign_message(
        engine,
        &request_id,
        key_id,
        path_text,
        digest,
        &target,
        None,
    )
    .await
}

/// Signs `digest` (the message of `target`) at `path_text` with key `key_id` for `request_id`:
/// from a pool of a signer set inside `allowed` (every party when `None`) if one can serve,
/// else interactively if configured.
pub(crate) async fn sign_message(
    engine: &Arc<Engine>,
    request_id: &str,
    key_id: &str,
    path_text: &str,
    digest: [u8; 32],
    target: &SignTarget,
    allowed: Option<&[u16]>,
) -> Result<SignOutcome, EngineError> {
    let started = Instant::now();
    let path = parse_path(path_text)?;
    let key = engine.public_info(key_id).await?;
    let child = key
        .child_public_key(&path)
        .map_err(|e| EngineError::refused("invalid-path", e.to_string()))?;
    let timeout = Duration::from_secs(engine.cfg.signing.timeout_secs);
    let usable = |set: &[u16]| {
        set.iter().all(|i| engine.reachable(*i))
            && allowed.is_none_or(|a| set.iter().all(|i| a.contains(i)))
    };

    // Pools whose signers are all reachable (and allowed); those this node belongs to first,
    // fullest first.
    let own_counts = engine.store.available_counts(key_id).await?;
    let mut candidates: Vec<(Vec<u16>, i64)> = Vec::new();
    for set in signer_sets(key.n, key.threshold) {
        if !usable(&set) {
            continue;
        }
        let name = engine.signer_set_name(&set)?;
        let mine = set.contains(&engine.my_index);
        let available = own_counts
            .iter()
            .find(|(set, _)| *set == name)
            .map_or(0, |(_, n)| *n);
        if mine && available == 0 {
            continue;
        }
        candidates.push((set, if mine { available } else { -1 }));
    }
    candidates.sort_by_key(|(_, a)| std::cmp::Reverse(*a));

    let mut last_error: Option<EngineError> = None;
    for (set, _) in &candidates {
        for _ in 0..TRIES_PER_POOL {
            match sign_from_pool(
                engine, request_id, key_id, &key, &path, path_text, digest, target, set, timeout,
            )
            .await
            {
                Ok(mut out) => {
                    let took = started.elapsed();
                    out.duration_ms = took.as_secs_f64() * 1000.0;
                    out.public_key = hex::encode(child);
                    engine.metrics.signed("pool", took);
                    return Ok(out);
                }
                Err(e @ EngineError::Protocol { .. }) => return Err(e),
                Err(e) => {
                    let empty = matches!(&e, EngineError::Remote { error, .. } if error.kind == "pool-empty");
                    tracing::debug!(request_id = %request_id, signers = ?set, error = %e, "pool could not serve");
                    last_error = Some(e);
                    if empty {
                        break;
                    }
                }
            }
        }
    }

    if !engine.cfg.signing.interactive_fallback {
        return Err(EngineError::refused(
            "no-presignature",
            format!(
                "no presignature pool of key {key_id} can serve now and interactive signing is off{}",
                last_error
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default()
            ),
        ));
    }
    let sets: Vec<Vec<u16>> = signer_sets(key.n, key.threshold)
        .into_iter()
        .filter(|s| usable(s))
        .collect();
    let Some(set) = sets.first() else {
        return Err(EngineError::refused(
            "signers-unavailable",
            format!(
                "fewer than {} members that may sign are reachable",
                key.threshold
            ),
        ));
    };
    let sig = interactive(engine, request_id, key_id, set, target, timeout).await?;
    verify_independently(&child, &digest, &sig)?;
    let took = started.elapsed();
    engine.metrics.signed("interactive", took);
    let signers = engine.signer_set_name(set)?;
    engine
        .store
        .record_signature(&SignatureRecord {
            request_id,
            input_index: input_of(target),
            key_id,
            presig_id: None,
            path: path_text,
            sighash: &digest,
            r: &sig.r,
            s: &sig.s,
            nonce_point: None,
            signers: &signers,
            mode: "interactive",
        })
        .await?;
    Ok(SignOutcome {
        request_id: request_id.to_owned(),
        key_id: key_id.to_owned(),
        path: path.to_string(),
        digest: hex::encode(digest),
        r: hex::encode(sig.r),
        s: hex::encode(sig.s),
        der: hex::encode(sig.to_der()),
        public_key: hex::encode(child),
        nonce_point: None,
        presignature_id: None,
        signers: signers.split(',').map(str::to_owned).collect(),
        mode: "interactive".into(),
        duration_ms: took.as_secs_f64() * 1000.0,
    })
}

#[allow(clippy::too_many_arguments)]
async fn sign_from_pool(
    engine: &Arc<Engine>,
    request_id: &str,
    key_id: &str,
    key: &strongroom_mpc::keys::PublicKeyInfo,
    path: &strongroom_mpc::hd::DerivationPath,
    path_text: &str,
    digest: [u8; 32],
    target: &SignTarget,
    set: &[u16],
    timeout: Duration,
) -> Result<SignOutcome, EngineError> {
    // The lowest party of a pool picks its presignatures, so that concurrent signings from
    // different coordinators never pick the same one.
    let first = set[0];
    let rest: Vec<u16> = set.iter().copied().filter(|i| *i != first).collect();
    let reservation = target.reservation_id(request_id);
    let t0 = Instant::now();
    let reserved = engine
        .call(
            first,
            Request::Reserve {
                request_id: request_id.to_owned(),
                key_id: key_id.to_owned(),
                signers: set.to_vec(),
                presig_id: None,
                target: target.clone(),
            },
            timeout,
        )
        .await?;
    let Reply::Reserved {
        presig_id,
        entropy,
        public_digest,
        public_data: Some(public_data),
    } = reserved
    else {
        return Err(EngineError::refused(
            "bad-reply",
            "the first signer's reservation lacks the public data",
        ));
    };
    let mut entropies: BTreeMap<u16, String> = BTreeMap::new();
    entropies.insert(first, entropy);
    let mut holders = vec![first];

    let others = engine
        .call_all(&rest, timeout, |_| Request::Reserve {
            request_id: request_id.to_owned(),
            key_id: key_id.to_owned(),
            signers: set.to_vec(),
            presig_id: Some(presig_id.clone()),
            target: target.clone(),
        })
        .await;
    let mut failure: Option<EngineError> = None;
    for (i, r) in others {
        match r {
            Ok(Reply::Reserved {
                entropy,
                public_digest: d,
                ..
            }) if d == public_digest => {
                entropies.insert(i, entropy);
                holders.push(i);
            }
            Ok(Reply::Reserved { .. }) => {
                holders.push(i);
                failure = Some(EngineError::refused(
                    "presignature-mismatch",
                    format!(
                        "node {} holds different public data for presignature {presig_id}",
                        engine.member(i)?
                    ),
                ));
            }
            Ok(_) => {
                failure = Some(EngineError::refused(
                    "bad-reply",
                    "unexpected reply to a reservation",
                ))
            }
            Err(e) => failure = Some(e),
        }
    }
    if let Some(e) = failure {
        discard(engine, &reservation, &presig_id, &holders).await;
        return Err(e);
    }

    let public_bytes = hex::decode(&public_data)
        .map_err(|_| EngineError::refused("bad-reply", "public data is not hex"))?;
    if hex::encode(Sha256::digest(&public_bytes)) != public_digest {
        discard(engine, &reservation, &presig_id, &holders).await;
        return Err(EngineError::refused(
            "bad-reply",
            "public data does not match its digest",
        ));
    }
    let public: PresignaturePublic = serde_json::from_slice(&public_bytes)
        .map_err(|e| EngineError::refused("bad-reply", e.to_string()))?;
    if public.key_id() != key.key_id || public.signers().parties() != set {
        discard(engine, &reservation, &presig_id, &holders).await;
        return Err(EngineError::refused(
            "presignature-mismatch",
            format!("presignature {presig_id} belongs to another key or signer set"),
        ));
    }
    let mut entropy_values = BTreeMap::new();
    for (i, e) in &entropies {
        entropy_values.insert(*i, SignerEntropy::from_bytes(hex32(e, "entropy")?));
    }
    let sighash = NodeComputedSighash::from_node_computed(digest);
    let signing = OnlineSigning::new(key, &public, path, &sighash, &entropy_values)
        .map_err(|e| EngineError::refused("internal", e.to_string()))?;

    let digest_hex = hex::encode(digest);
    let t_reserved = Instant::now();
    let answers = engine
        .call_all(set, timeout, |_| Request::Partial {
            request_id: request_id.to_owned(),
            key_id: key_id.to_owned(),
            presig_id: presig_id.clone(),
            target: target.clone(),
            entropy: entropies.iter().map(|(k, v)| (*k, v.clone())).collect(),
        })
        .await;
    let mut partials: BTreeMap<u16, PartialSignature> = BTreeMap::new();
    let mut failure: Option<EngineError> = None;
    for (i, r) in answers {
        match r {
            Ok(Reply::Partial { partial }) => {
                let parsed = hex32(&partial, "partial")
                    .ok()
                    .and_then(|b| PartialSignature::from_bytes(&b));
                match parsed {
                    Some(p) => {
                        partials.insert(i, p);
                    }
                    None => {
                        failure = Some(cheater(
                            engine,
                            &[i],
                            "sent a partial signature that is not a scalar",
                        ));
                    }
                }
            }
            Ok(_) => {
                failure = Some(EngineError::refused(
                    "bad-reply",
                    "unexpected reply to a partial request",
                ))
            }
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        // Signers that did not consume still hold the reservation: discard it there.
        discard(engine, &reservation, &presig_id, set).await;
        return Err(e);
    }
    let t_partials = Instant::now();
    let mut culprits = Vec::new();
    for (i, p) in &partials {
        if signing.verify_partial(*i, p).is_err() {
            culprits.push(*i);
        }
    }
    if !culprits.is_empty() {
        return Err(cheater(
            engine,
            &culprits,
            "released a partial signature that does not match its presignature commitments",
        ));
    }
    let signature = signing
        .combine(&partials)
        .map_err(|e| EngineError::refused("internal", format!("combining failed: {e}")))?;
    verify_independently(&signing.child_public_key(), &digest, &signature)?;
    let nonce_point = signing.nonce_point();
    let presig_bytes = hex::decode(&presig_id).unwrap_or_default();
    let signers = engine.signer_set_name(set)?;
    engine
        .store
        .record_signature(&SignatureRecord {
            request_id,
            input_index: input_of(target),
            key_id,
            presig_id: Some(&presig_bytes),
            path: path_text,
            sighash: &digest,
            r: &signature.r,
            s: &signature.s,
            nonce_point: Some(&nonce_point),
            signers: &signers,
            mode: "pool",
        })
        .await?;
    tracing::debug!(
        request_id,
        reserve_ms = (t_reserved - t0).as_secs_f64() * 1000.0,
        partials_ms = (t_partials - t_reserved).as_secs_f64() * 1000.0,
        finish_ms = t_partials.elapsed().as_secs_f64() * 1000.0,
        "pooled signing"
    );
    Ok(SignOutcome {
        request_id: request_id.to_owned(),
        key_id: key_id.to_owned(),
        path: path.to_string(),
        digest: digest_hex,
        r: hex::encode(signature.r),
        s: hex::encode(signature.s),
        der: hex::encode(signature.to_der()),
        public_key: String::new(),
        nonce_point: Some(hex::encode(nonce_point)),
        presignature_id: Some(presig_id),
        signers: signers.split(',').map(str::to_owned).collect(),
        mode: "pool".into(),
        duration_ms: 0.0,
    })
}

/// The input index a target signs (0 for a raw digest).
fn input_of(target: &SignTarget) -> i32 {
    match target {
        SignTarget::Digest { .. } => 0,
        SignTarget::Input { input_index } => i32::try_from(*input_index).unwrap_or(i32::MAX),
    }
}

fn cheater(engine: &Arc<Engine>, parties: &[u16], what: &str) -> EngineError {
    let culprits: Vec<String> = parties
        .iter()
        .filter_map(|i| engine.members().get(usize::from(*i)).cloned())
        .collect();
    engine.metrics.failure("sign", &culprits);
    tracing::error!(culprits = ?culprits, "signer {what}");
    EngineError::Protocol {
        protocol: "sign",
        detail: format!("node(s) {} {what}", culprits.join(", ")),
        culprits,
    }
}

async fn discard(engine: &Arc<Engine>, request_id: &str, presig_id: &str, holders: &[u16]) {
    let answers = engine
        .call_all(holders, Duration::from_secs(5), |_| Request::Discard {
            request_id: request_id.to_owned(),
            presig_id: presig_id.to_owned(),
        })
        .await;
    for (i, r) in answers {
        if let Err(e) = r {
            tracing::warn!(node = i, error = %e, "could not discard a presignature; its reservation expires");
        }
    }
}

async fn interactive(
    engine: &Arc<Engine>,
    request_id: &str,
    key_id: &str,
    set: &[u16],
    target: &SignTarget,
    timeout: Duration,
) -> Result<strongroom_mpc::online::EcdsaSignature, EngineError> {
    let session_hex = hex::encode(random_id::<32>());
    let answers = engine
        .call_all(set, timeout, |_| Request::InteractiveSign {
            session_id: session_hex.clone(),
            request_id: request_id.to_owned(),
            key_id: key_id.to_owned(),
            signers: set.to_vec(),
            target: target.clone(),
        })
        .await;
    let mut sig: Option<(String, String)> = None;
    for (_, r) in answers {
        match r? {
            Reply::Signature { r, s } => {
                if let Some((r0, s0)) = &sig {
                    if *r0 != r || *s0 != s {
                        return Err(EngineError::refused(
                            "internal",
                            "signers returned different interactive signatures",
                        ));
                    }
                }
                sig = Some((r, s));
            }
            _ => {
                return Err(EngineError::refused(
                    "bad-reply",
                    "unexpected reply to interactive signing",
                ));
            }
        }
    }
    let (r, s) = sig.ok_or_else(|| EngineError::refused("internal", "no signer answered"))?;
    Ok(strongroom_mpc::online::EcdsaSignature {
        r: hex32(&r, "r")?,
        s: hex32(&s, "s")?,
    })
}

/// Verifies a signature with libsecp256k1 (independently of the protocol library) before it
/// leaves the node.
pub(crate) fn verify_independently(
    child: &[u8; 33],
    digest: &[u8; 32],
    sig: &strongroom_mpc::online::EcdsaSignature,
) -> Result<(), EngineError> {
    use strongroom_bitcoin::bitcoin::secp256k1::{Message, PublicKey, Secp256k1, ecdsa};
    let bad =
        |what: &str| EngineError::refused("internal", format!("signature check failed: {what}"));
    let key = PublicKey::from_slice(child).map_err(|_| bad("child key"))?;
    let sig = ecdsa::Signature::from_compact(&sig.to_compact()).map_err(|_| bad("encoding"))?;
    Secp256k1::verification_only()
        .verify_ecdsa(&Message::from_digest(*digest), &sig, &key)
        .map_err(|_| bad("the signature does not verify under the child key"))
}
