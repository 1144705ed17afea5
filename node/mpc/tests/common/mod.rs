//! Shared harness: a 2-of-3 cluster key from the dev prime fixture, run in round-based's
//! deterministic simulation with seeded RNGs, cached on disk so each test process does not pay
//! for aux info and key generation again.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test harness"
)]

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bitcoin::bip32::{ChainCode, ChildNumber, Fingerprint, Xpub};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, ecdsa};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};
use strongroom_mpc::hd::DerivationPath;
use strongroom_mpc::keys::{
    PublicKeyInfo, SecretAuxInfo, SecretKeyShare, run_aux_info, run_keygen,
};
use strongroom_mpc::online::{EcdsaSignature, NodeComputedSighash};
use strongroom_mpc::presign::{GeneratedPresignature, run_presign};
use strongroom_mpc::primes::{Primes, PrimesPolicy};
use strongroom_mpc::session::{KeyId, ProtocolKind, SessionDescriptor, SessionId, SignerSet};

pub const N: u16 = 3;
pub const T: u16 = 2;

pub fn rng(seed: u64, party: u16) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed.wrapping_mul(1000) + u64::from(party))
}

pub struct Cluster {
    pub aux: Vec<SecretAuxInfo>,
    pub shares: Vec<SecretKeyShare>,
    pub public: PublicKeyInfo,
}

pub struct Timings {
    pub aux_info: Duration,
    pub keygen: Duration,
}

/// Runs aux info and key generation from scratch.
pub fn generate_cluster(seed: u64) -> (Cluster, Timings) {
    let aux_session = SessionDescriptor::aux_info(SessionId::from_bytes([0xa0; 32]), N).unwrap();
    let primes: Vec<Primes> = (0..N)
        .map(|i| Primes::dangerous_dev_fixture(i).unwrap())
        .collect();
    let started = Instant::now();
    let aux: Vec<SecretAuxInfo> = round_based::sim::run_with_setup(primes, |i, party, primes| {
        let session = &aux_session;
        async move {
            let mut rng = rng(seed, i);
            run_aux_info(
                session,
                i,
                primes,
                PrimesPolicy::DangerousAllowDevFixture,
                &mut rng,
                party,
                None,
            )
            .await
        }
    })
    .unwrap()
    .expect_ok()
    .into_vec();
    let aux_time = started.elapsed();

    let key_id = KeyId::from_bytes([0x4b; 32]);
    let keygen_session =
        SessionDescriptor::keygen(SessionId::from_bytes([0xb0; 32]), key_id, N, T).unwrap();
    let started = Instant::now();
    let generated = round_based::sim::run_with_setup(aux.iter(), |i, party, aux| {
        let session = &keygen_session;
        async move {
            let mut rng = rng(seed + 1, i);
            run_keygen(session, aux, &mut rng, party, None).await
        }
    })
    .unwrap()
    .expect_ok()
    .into_vec();
    let keygen_time = started.elapsed();

    let public = generated[0].public.clone();
    for g in &generated {
        assert_eq!(g.public, public, "every party sees the same public key");
    }
    let shares = generated.into_iter().map(|g| g.share).collect();
    (
        Cluster {
            aux,
            shares,
            public,
        },
        Timings {
            aux_info: aux_time,
            keygen: keygen_time,
        },
    )
}

#[derive(Serialize, Deserialize)]
struct CachedCluster {
    aux: Vec<Vec<u8>>,
    shares: Vec<Vec<u8>>,
}

fn cache_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("strongroom-mpc-cluster-2of3-v1.cbor")
}

fn load_cached() -> Option<Cluster> {
    let bytes = std::fs::read(cache_path()).ok()?;
    let cached: CachedCluster = ciborium::from_reader(&bytes[..]).ok()?;
    let aux = cached
        .aux
        .iter()
        .map(|b| SecretAuxInfo::from_sealed_bytes(b).ok())
        .collect::<Option<Vec<_>>>()?;
    let shares = cached
        .shares
        .iter()
        .map(|b| SecretKeyShare::from_sealed_bytes(b).ok())
        .collect::<Option<Vec<_>>>()?;
    let public = shares.first()?.public_info();
    Some(Cluster {
        aux,
        shares,
        public,
    })
}

pub fn store_cache(cluster: &Cluster) {
    let cached = CachedCluster {
        aux: cluster
            .aux
            .iter()
            .map(|a| a.to_sealable_bytes().unwrap().to_vec())
            .collect(),
        shares: cluster
            .shares
            .iter()
            .map(|s| s.to_sealable_bytes().unwrap().to_vec())
            .collect(),
    };
    let mut bytes = Vec::new();
    ciborium::into_writer(&cached, &mut bytes).unwrap();
    let tmp = cache_path().with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, cache_path()).unwrap();
}

/// A cross-process lock: a lock file created exclusively, removed on drop; a lock older than ten
/// minutes is taken to be left over from a killed run.
struct CacheLock(PathBuf);

impl CacheLock {
    fn acquire() -> Self {
        let path = cache_path().with_extension("lock");
        loop {
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(_) => return Self(path),
                Err(_) => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| SystemTime::now().duration_since(t).ok())
                        .is_some_and(|age| age > Duration::from_secs(600));
                    if stale {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The cluster key, from the cache or generated (once across concurrently running tests).
pub fn cluster() -> Cluster {
    if let Some(cluster) = load_cached() {
        return cluster;
    }
    let _lock = CacheLock::acquire();
    if let Some(cluster) = load_cached() {
        return cluster;
    }
    let (cluster, timings) = generate_cluster(7);
    eprintln!(
        "generated cluster key: aux info {:?}, keygen {:?}",
        timings.aux_info, timings.keygen
    );
    store_cache(&cluster);
    cluster
}

/// Runs one presign session among `signers` (party indices, in order).
pub fn presign(
    cluster: &Cluster,
    signers: &[u16],
    session: [u8; 32],
    seed: u64,
) -> Vec<GeneratedPresignature> {
    let set = SignerSet::new(signers.to_vec()).unwrap();
    let descriptor = SessionDescriptor::signing(
        ProtocolKind::Presign,
        SessionId::from_bytes(session),
        cluster.public.key_id,
        set,
    )
    .unwrap();
    let shares: Vec<&SecretKeyShare> = signers
        .iter()
        .map(|i| &cluster.shares[usize::from(*i)])
        .collect();
    round_based::sim::run_with_setup(shares, |i, party, share| {
        let descriptor = &descriptor;
        async move {
            let mut rng = rng(seed, i);
            run_presign(descriptor, share, &mut rng, party, None).await
        }
    })
    .unwrap()
    .expect_ok()
    .into_vec()
}

/// The depth-0 xpub, built by the `bitcoin` crate from the public key info alone.
pub fn xpub(public: &PublicKeyInfo) -> Xpub {
    Xpub {
        network: bitcoin::NetworkKind::Test,
        depth: 0,
        parent_fingerprint: Fingerprint::default(),
        child_number: ChildNumber::from_normal_idx(0).unwrap(),
        public_key: PublicKey::from_slice(&public.public_key).unwrap(),
        chain_code: ChainCode::from(public.chain_code),
    }
}

/// Verifies `signature` over `sighash` under the child at `path` of the xpub, using only the
/// `bitcoin` crate: derivation with its bip32, verification with libsecp256k1. Also checks that
/// the signature is low-S and that compact and DER forms agree.
pub fn verify_with_bitcoin(
    public: &PublicKeyInfo,
    path: &DerivationPath,
    sighash: &NodeComputedSighash,
    signature: &EcdsaSignature,
) {
    let secp = Secp256k1::verification_only();
    let path: Vec<ChildNumber> = path
        .indices()
        .iter()
        .map(|i| ChildNumber::from_normal_idx(*i).unwrap())
        .collect();
    let child = xpub(public).derive_pub(&secp, &path).unwrap();
    let compact = ecdsa::Signature::from_compact(&signature.to_compact()).unwrap();
    let der = ecdsa::Signature::from_der(&signature.to_der()).unwrap();
    assert_eq!(compact, der);
    assert_eq!(compact.serialize_der().to_vec(), signature.to_der());
    let mut normalized = compact;
    normalized.normalize_s();
    assert_eq!(normalized, compact, "signature is low-S");
    secp.verify_ecdsa(
        &Message::from_digest(*sighash.as_bytes()),
        &compact,
        &child.public_key,
    )
    .expect("signature verifies under the child key derived by the bitcoin crate");
}
