//! Generates the dev-only prime fixture that tests and the local dev cluster load through
//! `Primes::dangerous_dev_fixture`.
//!
//! ```text
//! nice cargo run --release -p strongroom-mpc --example gen-fixture-primes -- \
//!     --count 5 --out node/mpc/fixtures/dev-primes.json
//! ```
//!
//! Each entry takes about a minute of CPU. The output is public: never load it outside dev mode.
#![allow(
    clippy::print_stderr,
    reason = "a command-line tool reporting progress"
)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use strongroom_mpc::primes::Primes;

/// Generates dev-only safe primes for the test fixture.
#[derive(Parser)]
struct Args {
    /// How many parties to generate primes for.
    #[arg(long, default_value_t = 5)]
    count: u16,
    /// Where to write the fixture (written to a temporary file first, then renamed).
    #[arg(long)]
    out: PathBuf,
}

/// The fixture file; fields are written in this order, the warning first.
#[derive(serde::Serialize)]
struct Fixture {
    warning: &'static str,
    format: &'static str,
    version: u32,
    security_level: &'static str,
    prime_bits: u32,
    primes_per_party: usize,
    generated_by: &'static str,
    parties: Vec<[String; 4]>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut parties = Vec::new();
    for party in 0..args.count {
        let primes = Primes::generate(&mut rand_core::OsRng, |p| {
            eprintln!(
                "party {}/{}: prime {}/{} found after {:.1?}",
                party + 1,
                args.count,
                p.found,
                p.total,
                p.elapsed
            );
        })
        .context("generating primes")?;
        parties.push(primes.dangerous_export_hex());
    }
    let fixture = Fixture {
        warning: "DEV-ONLY FIXTURE. These safe primes are public; Paillier keys built from them \
                  protect nothing. Tests and the local dev cluster load them through \
                  Primes::dangerous_dev_fixture; a node outside dev mode refuses them.",
        format: "strongroom-dev-primes",
        version: 1,
        security_level: "cggmp24 SecurityLevel128",
        prime_bits: 1536,
        primes_per_party: 4,
        generated_by: "cargo run --release -p strongroom-mpc --example gen-fixture-primes -- \
                       --count 5 --out node/mpc/fixtures/dev-primes.json",
        parties,
    };
    let tmp = args.out.with_extension("json.tmp");
    let mut text = serde_json::to_string_pretty(&fixture)?;
    text.push('\n');
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming to {}", args.out.display()))?;
    eprintln!("wrote {} entries to {}", args.count, args.out.display());
    Ok(())
}
