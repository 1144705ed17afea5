//! The bare library, measured: every signer in one process, no network, no storage.
//!
//! `strongroom bench presign` compares the cluster's presign pipeline against
//! [`presign_throughput`] on the same machine, with the same signer count and concurrency; the
//! online step is timed with [`time_online_signing`]. Protocol runs here use round-based's
//! synchronous simulation: each run executes its `t` parties on one thread, and `concurrency`
//! runs proceed at once on their own threads.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand_core::OsRng;

use crate::hd::DerivationPath;
use crate::keys::{PublicKeyInfo, SecretKeyShare};
use crate::online::{
    CombineError, EcdsaSignature, NodeComputedSighash, OnlineSignError, OnlineSigning,
    SignerEntropy,
};
use crate::presign::{
    GeneratedPresignature, PresignError, PresignaturePublic, SecretPresignature, run_presign,
};
use crate::session::{ProtocolKind, SessionDescriptor, SessionError, SessionId, SignerSet};

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Caller misuse: the shares are not exactly `threshold` distinct holders of one key.
    #[error("the shares must be exactly `threshold` distinct holders of one key: {0}")]
    Shares(String),
    /// Caller misuse: the signer set is malformed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Caller misuse: `count` or `concurrency` is zero.
    #[error("count and concurrency must be at least 1")]
    Zero,
    /// A presign run failed (in one process, this is a bug).
    #[error(transparent)]
    Presign(#[from] PresignError),
    /// Bug: the simulation failed to deliver messages.
    #[error("bug: simulation failed: {0}")]
    Simulation(String),
    /// Bug: a worker thread panicked.
    #[error("bug: a benchmark worker panicked")]
    WorkerPanicked,
    /// An online signing could not be prepared (in one process, a bug or caller misuse).
    #[error(transparent)]
    Online(#[from] OnlineSignError),
    /// Partials could not be combined (in one process, a bug).
    #[error(transparent)]
    Combine(#[from] CombineError),
}

/// A presignature generated in one process: every signer's piece, in signer order, and the
/// public data.
#[derive(Debug)]
pub struct InProcessPresignature {
    /// Every signer's secret piece, in signer-set order.
    pub pieces: Vec<SecretPresignature>,
    /// The public data.
    pub public: PresignaturePublic,
}

/// Presigning throughput of the bare library.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresignThroughput {
    /// Presignatures generated.
    pub presignatures: usize,
    /// Signers per presignature.
    pub signers: usize,
    /// Runs in flight at once.
    pub concurrency: usize,
    /// Wall-clock time of the whole batch.
    pub elapsed: Duration,
}

impl PresignThroughput {
    /// Presignatures per second.
    pub fn per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.presignatures as f64 / secs
        } else {
            0.0
        }
    }
}

fn signer_set(shares: &[&SecretKeyShare]) -> Result<SignerSet, BenchError> {
    let first = shares
        .first()
        .ok_or_else(|| BenchError::Shares("no shares".into()))?;
    if shares.len() != usize::from(first.threshold()) {
        return Err(BenchError::Shares(format!(
            "{} shares for threshold {}",
            shares.len(),
            first.threshold()
        )));
    }
    if shares.iter().any(|s| s.key_id() != first.key_id()) {
        return Err(BenchError::Shares("shares of different keys".into()));
    }
    Ok(SignerSet::new(shares.iter().map(|s| s.index()).collect())?)
}

/// Runs one presign session among `shares` (in signer order) in this thread.
pub fn presign_once(shares: &[&SecretKeyShare]) -> Result<InProcessPresignature, BenchError> {
    let signers = signer_set(shares)?;
    let key_id = shares
        .first()
        .map(|s| s.key_id())
        .ok_or_else(|| BenchError::Shares("no shares".into()))?;
    let session = SessionDescriptor::signing(
        ProtocolKind::Presign,
        SessionId::random(&mut OsRng),
        key_id,
        signers,
    )?;
    let outputs = round_based::sim::run_with_setup(shares.iter().copied(), |_, party, share| {
        let session = &session;
        async move {
            let mut rng = OsRng;
            run_presign(session, share, &mut rng, party, None).await
        }
    })
    .map_err(|err| BenchError::Simulation(err.to_string()))?;
    let mut pieces = Vec::with_capacity(shares.len());
    let mut public = None;
    for output in outputs {
        let GeneratedPresignature {
            secret,
            public: this,
        } = output?;
        pieces.push(secret);
        public = Some(this);
    }
    let public = public.ok_or_else(|| BenchError::Shares("no shares".into()))?;
    Ok(InProcessPresignature { pieces, public })
}

/// Generates `count` presignatures among `shares` (exactly `threshold` holders of one key, in
/// signer order), `concurrency` runs at once, and returns them with the throughput.
pub fn presign_in_process(
    shares: &[&SecretKeyShare],
    count: usize,
    concurrency: usize,
) -> Result<(Vec<InProcessPresignature>, PresignThroughput), BenchError> {
    if count == 0 || concurrency == 0 {
        return Err(BenchError::Zero);
    }
    let signers = signer_set(shares)?;
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(count));
    let started = Instant::now();
    let results: Vec<Result<(), BenchError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency.min(count))
            .map(|_| {
                scope.spawn(|| -> Result<(), BenchError> {
                    while next.fetch_add(1, Ordering::Relaxed) < count {
                        let presignature = presign_once(shares)?;
                        done.lock()
                            .map_err(|_| BenchError::WorkerPanicked)?
                            .push(presignature);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or(Err(BenchError::WorkerPanicked)))
            .collect()
    });
    let elapsed = started.elapsed();
    for result in results {
        result?;
    }
    let presignatures = done.into_inner().map_err(|_| BenchError::WorkerPanicked)?;
    let throughput = PresignThroughput {
        presignatures: presignatures.len(),
        signers: signers.len(),
        concurrency,
        elapsed,
    };
    Ok((presignatures, throughput))
}

/// Presigning throughput of the bare library: like [`presign_in_process`], discarding the
/// presignatures.
pub fn presign_throughput(
    shares: &[&SecretKeyShare],
    count: usize,
    concurrency: usize,
) -> Result<PresignThroughput, BenchError> {
    presign_in_process(shares, count, concurrency).map(|(_, throughput)| throughput)
}

/// Time spent in each part of one online signing, all signers in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnlineTiming {
    /// Preparing the signing (re-randomizer, HD shift, `Γ′`), once.
    pub prepare: Duration,
    /// Issuing every signer's partial (each includes the self-check).
    pub issue: Duration,
    /// Checking every partial, summing and verifying the signature.
    pub combine: Duration,
}

impl OnlineTiming {
    /// The whole online step.
    pub fn total(&self) -> Duration {
        self.prepare + self.issue + self.combine
    }
}

/// Signs `sighash` at `path` with an in-process presignature, timing each part.
pub fn time_online_signing(
    key: &PublicKeyInfo,
    presignature: InProcessPresignature,
    path: &DerivationPath,
    sighash: &NodeComputedSighash,
) -> Result<(EcdsaSignature, OnlineTiming), BenchError> {
    let entropy: BTreeMap<_, _> = presignature
        .public
        .signers()
        .parties()
        .iter()
        .map(|p| (*p, SignerEntropy::random(&mut OsRng)))
        .collect();
    let t0 = Instant::now();
    let signing = OnlineSigning::new(key, &presignature.public, path, sighash, &entropy)?;
    let t1 = Instant::now();
    let mut partials = BTreeMap::new();
    for piece in presignature.pieces {
        let holder = piece.holder();
        partials.insert(holder, signing.issue_partial(piece)?);
    }
    let t2 = Instant::now();
    let signature = signing.combine(&partials)?;
    let t3 = Instant::now();
    Ok((
        signature,
        OnlineTiming {
            prepare: t1 - t0,
            issue: t2 - t1,
            combine: t3 - t2,
        },
    ))
}

/// Median, tail and extremes of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Samples.
    pub samples: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

impl LatencySummary {
    /// Summarizes `durations`; `None` when empty.
    pub fn from_durations(durations: &[Duration]) -> Option<Self> {
        let mut sorted = durations.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let rank = |q: f64| -> Option<Duration> {
            let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            sorted.get(idx).copied()
        };
        let total: Duration = sorted.iter().sum();
        Some(Self {
            samples: n,
            p50: rank(0.50)?,
            p99: rank(0.99)?,
            max: *sorted.last()?,
            mean: total / u32::try_from(n).ok()?,
        })
    }
}
