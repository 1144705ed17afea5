//! Times the bare library on this machine: aux info and 2-of-3 key generation from the dev prime
//! fixture, presigning throughput, and the online step.
//!
//! ```text
//! cargo run --release -p strongroom-mpc --example mpc-timings -- --presignatures 8 --concurrency 2
//! ```
#![allow(
    clippy::print_stderr,
    reason = "a command-line tool reporting measurements"
)]

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rand_core::OsRng;
use strongroom_mpc::bench::{LatencySummary, presign_in_process, time_online_signing};
use strongroom_mpc::hd::DerivationPath;
use strongroom_mpc::keys::{SecretAuxInfo, SecretKeyShare, run_aux_info, run_keygen};
use strongroom_mpc::online::NodeComputedSighash;
use strongroom_mpc::primes::{Primes, PrimesPolicy};
use strongroom_mpc::session::{KeyId, SessionDescriptor, SessionId};

/// Times aux info, key generation, presigning and online signing of the bare library.
#[derive(Parser)]
struct Args {
    /// Key holders (at most 5: the dev prime fixture has 5 entries).
    #[arg(long, default_value_t = 3)]
    n: u16,
    /// Signers needed.
    #[arg(long, default_value_t = 2)]
    threshold: u16,
    /// Presignatures to generate.
    #[arg(long, default_value_t = 8)]
    presignatures: usize,
    /// Presign runs at once.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat` (Linux; 10 ms ticks).
/// The machine may be shared, so CPU time says more about the protocols than wall time.
fn cpu_time() -> Duration {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = fields.get(11)?.parse().ok()?;
            let stime: u64 = fields.get(12)?.parse().ok()?;
            Some(utime + stime)
        })
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let primes = (0..args.n)
        .map(Primes::dangerous_dev_fixture)
        .collect::<Result<Vec<_>, _>>()?;
    let session = SessionDescriptor::aux_info(SessionId::random(&mut OsRng), args.n)?;
    let started = Instant::now();
    let cpu = cpu_time();
    let aux: Vec<SecretAuxInfo> = round_based::sim::run_with_setup(primes, |i, party, primes| {
        let session = &session;
        async move {
            let mut rng = OsRng;
            let policy = PrimesPolicy::DangerousAllowDevFixture;
            run_aux_info(session, i, primes, policy, &mut rng, party, None).await
        }
    })?
    .into_vec()
    .into_iter()
    .collect::<Result<_, _>>()?;
    let aux_time = started.elapsed();
    let aux_cpu = cpu_time() - cpu;
    eprintln!(
        "aux info, {} parties on one thread: wall {aux_time:.2?}, CPU {aux_cpu:.2?} \
         ({:.2?} CPU per party)",
        args.n,
        aux_cpu / u32::from(args.n)
    );

    let session = SessionDescriptor::keygen(
        SessionId::random(&mut OsRng),
        KeyId::random(&mut OsRng),
        args.n,
        args.threshold,
    )?;
    let started = Instant::now();
    let generated = round_based::sim::run_with_setup(aux.iter(), |_, party, aux| {
        let session = &session;
        async move {
            let mut rng = OsRng;
            run_keygen(session, aux, &mut rng, party, None).await
        }
    })?
    .into_vec()
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "keygen {}-of-{}, all parties on one thread: {:.2?}",
        args.threshold,
        args.n,
        started.elapsed()
    );
    let public = generated.first().context("no key")?.public.clone();
    let shares: Vec<&SecretKeyShare> = generated
        .iter()
        .take(usize::from(args.threshold))
        .map(|g| &g.share)
        .collect();

    let cpu = cpu_time();
    let (presignatures, throughput) =
        presign_in_process(&shares, args.presignatures, args.concurrency)?;
    let presign_cpu = cpu_time() - cpu;
    eprintln!(
        "presign {}-signer, {} at once: {} in {:.2?} = {:.2} presignatures/s \
         ({:.2?} of wall clock, {:.2?} of CPU (all signers) each)",
        throughput.signers,
        throughput.concurrency,
        throughput.presignatures,
        throughput.elapsed,
        throughput.per_second(),
        throughput.elapsed / u32::try_from(throughput.presignatures.max(1))?,
        presign_cpu / u32::try_from(throughput.presignatures.max(1))?
    );

    let mut totals: Vec<Duration> = Vec::new();
    let mut issues: Vec<Duration> = Vec::new();
    for (i, presignature) in presignatures.into_iter().enumerate() {
        let index = u32::try_from(i)?;
        let path = DerivationPath::new(vec![0, index])?;
        let sighash = NodeComputedSighash::from_node_computed([u8::try_from(i % 256)?; 32]);
        let (_, timing) = time_online_signing(&public, presignature, &path, &sighash)?;
        totals.push(timing.total());
        issues.push(timing.issue);
    }
    if let (Some(total), Some(issue)) = (
        LatencySummary::from_durations(&totals),
        LatencySummary::from_durations(&issues),
    ) {
        eprintln!(
            "online step (prepare + every partial + check + combine + verify), {} samples: \
             p50 {:.2?}, p99 {:.2?}, max {:.2?}; issuing the partials alone: p50 {:.2?}",
            total.samples, total.p50, total.p99, total.max, issue.p50
        );
    }
    Ok(())
}
