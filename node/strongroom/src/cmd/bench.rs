//! `strongroom bench`: throughput measurements on this machine.

use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use strongroom_keystore::{ObjectKind, ObjectRef, Token};

use crate::output::Output;
use crate::token_args::TokenArgs;

/// Blob sizes measured: a presignature-sized and a key-share-sized payload.
const SIZES: [usize; 2] = [400, 16 * 1024];

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Seal and unseal throughput through the token, for 400 B and 16 KiB payloads.
    Keystore {
        /// Number of timed runs per measurement; the median is reported.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Operations per run.
        #[arg(long, default_value_t = 500)]
        ops: usize,
    },
    /// Session round-trip latency (p50, p99) and messages per second between two nodes on
    /// loopback (QUIC with mTLS, software handshake keys).
    Transport {
        /// Sessions timed for the round-trip latency.
        #[arg(long, default_value_t = 1000)]
        round_trips: usize,
        /// Messages sent for the throughput measurement.
        #[arg(long, default_value_t = 100_000)]
        messages: usize,
        /// Payload size of every message, bytes.
        #[arg(long, default_value_t = 256)]
        payload_bytes: usize,
    },
}

/// Median, minimum and maximum of per-run rates.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
}

fn summarize(mut rates: Vec<f64>) -> Summary {
    rates.sort_by(f64::total_cmp);
    let n = rates.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => rates[n / 2],
        _ => (rates[n / 2 - 1] + rates[n / 2]) / 2.0,
    };
    Summary {
        median,
        min: rates.first().copied().unwrap_or(0.0),
        max: rates.last().copied().unwrap_or(0.0),
    }
}

pub(crate) fn run(cmd: BenchCommand, args: &TokenArgs, out: &Output) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Keystore { runs, ops } => keystore(runs, ops, args, out),
        BenchCommand::Transport {
            round_trips,
            messages,
            payload_bytes,
        } => transport(round_trips, messages, payload_bytes, out),
    }
}

fn transport(
    round_trips: usize,
    messages: usize,
    payload_bytes: usize,
    out: &Output,
) -> anyhow::Result<()> {
    if round_trips == 0 || messages == 0 {
        bail!("--round-trips and --messages must be at least 1");
    }
    let options = strongroom_transport::bench::BenchOptions {
        round_trips,
        warmup: (round_trips / 10).max(1),
        messages,
        payload_bytes,
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let report = runtime.block_on(strongroom_transport::bench::run(&options))?;
    let mps = report.messages_per_sec;
    out.report(
        json!({
            "round_trips": report.round_trips,
            "rtt_p50_us": report.rtt_p50.as_secs_f64() * 1e6,
            "rtt_p99_us": report.rtt_p99.as_secs_f64() * 1e6,
            "rtt_max_us": report.rtt_max.as_secs_f64() * 1e6,
            "messages": report.messages,
            "payload_bytes": report.payload_bytes,
            "messages_per_second": mps,
        }),
        || {
            format!(
                "transport, two nodes on loopback ({} sessions, {} messages of {} B)\n  \
                 session round trip  p50 {:>8.1} us  p99 {:>8.1} us  max {:>8.1} us\n  \
                 throughput          {:>12.0} messages/s\n",
                report.round_trips,
                report.messages,
                report.payload_bytes,
                report.rtt_p50.as_secs_f64() * 1e6,
                report.rtt_p99.as_secs_f64() * 1e6,
                report.rtt_max.as_secs_f64() * 1e6,
                mps,
            )
        },
    );
    Ok(())
}

fn keystore(runs: usize, ops: usize, args: &TokenArgs, out: &Output) -> anyhow::Result<()> {
    if runs == 0 || ops == 0 {
        bail!("--runs and --ops must be at least 1");
    }
    let token = Token::open(&args.config()?)?;
    let object = ObjectRef {
        cluster_id: "bench",
        node_id: "bench-node",
        kind: ObjectKind::Opaque,
        object_id: b"bench",
    };
    let mut results = Vec::new();
    for size in SIZES {
        let payload = vec![0x5a; size];
        let (mut seal_rates, mut unseal_rates) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let start = Instant::now();
            let mut blobs = Vec::with_capacity(ops);
            for generation in 0..ops as u64 {
                blobs.push(token.seal(&object, generation, &payload).context("seal")?);
            }
            seal_rates.push(ops as f64 / start.elapsed().as_secs_f64());
            let start = Instant::now();
            for blob in &blobs {
                let opened = token.unseal(&object, blob).context("unseal")?;
                if opened.plaintext.len() != size {
                    bail!("unsealed {} bytes, sealed {size}", opened.plaintext.len());
                }
            }
            unseal_rates.push(ops as f64 / start.elapsed().as_secs_f64());
        }
        results.push((size, summarize(seal_rates), summarize(unseal_rates)));
    }
    let to_json = |s: &Summary| json!({ "median": s.median, "min": s.min, "max": s.max });
    out.report(
        json!({
            "token": token.label(),
            "manufacturer": token.info().manufacturer,
            "model": token.info().model,
            "runs": runs,
            "ops_per_run": ops,
            "results": results.iter().map(|(size, seal, unseal)| json!({
                "payload_bytes": size,
                "seal_ops_per_sec": to_json(seal),
                "unseal_ops_per_sec": to_json(unseal),
            })).collect::<Vec<_>>(),
        }),
        || {
            let mut s = String::new();
            let _ = writeln!(
                s,
                "keystore throughput on token '{}' ({} {}), {runs} runs of {ops} ops, ops/s median (min-max):",
                token.label(),
                token.info().manufacturer,
                token.info().model
            );
            for (size, seal, unseal) in &results {
                let _ = writeln!(
                    s,
                    "  {:>6} B   seal {:>8.0} ({:.0}-{:.0})   unseal {:>8.0} ({:.0}-{:.0})",
                    size, seal.median, seal.min, seal.max, unseal.median, unseal.min, unseal.max
                );
            }
            s
        },
    );
    Ok(())
}
