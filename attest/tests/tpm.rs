//! TPM quotes: a quote recorded from swtpm (always), and a live swtpm with tpm2-tools when
//! they are installed (Debian `swtpm`, `tpm2-tools`).
//!
//! To record the fixture again: `STRONGROOM_ATTEST_WRITE_TPM_FIXTURE=1 cargo test -p
//! strongroom-attest --test tpm live_swtpm`.
#![cfg(test)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Ctx, claims, production_profile, sign_with};
use strongroom_attest::{
    Claims, FirmwareProfile, PcrValue, Sha256Digest, TpmError, TpmQuote, VerifyError, parse_quote,
    verify,
};
use strongroom_devenv::swtpm::{self, Swtpm};

const PCRS: [u8; 4] = [0, 2, 4, 7];

/// What the simulated measured boot extends into PCR `index`.
fn measurement(index: u8) -> Sha256Digest {
    Sha256Digest::of(format!("strongroom test measurement pcr {index}").as_bytes())
}

/// PCR value after one extend from the reset value (all zero): SHA-256(zeros ‖ measurement).
fn expected_pcr(index: u8) -> Sha256Digest {
    let mut data = [0u8; 64];
    data[32..].copy_from_slice(measurement(index).as_bytes());
    Sha256Digest::of(&data)
}

fn tpm_profile(ak_spki: &[u8]) -> FirmwareProfile {
    let mut p = production_profile();
    p.tpm.required = true;
    p.tpm.pcrs = PCRS.iter().map(|i| (*i, Some(expected_pcr(*i)))).collect();
    p.tpm.enrolled_aks = vec![Sha256Digest::of(ak_spki)];
    p.validate().unwrap();
    p
}

fn pcr_values(raw: &[u8]) -> Vec<PcrValue> {
    assert_eq!(raw.len(), 32 * PCRS.len());
    PCRS.iter()
        .zip(raw.chunks(32))
        .map(|(index, value)| PcrValue {
            index: *index,
            value: Sha256Digest(value.try_into().unwrap()),
        })
        .collect()
}

fn with_quote(mut c: Claims, quote: TpmQuote) -> Vec<u8> {
    c.tpm_quote = Some(quote);
    sign_with(&common::node_key(), c).to_bytes()
}

fn tpm_err(evidence: &[u8], profile: &FirmwareProfile) -> TpmError {
    match verify(evidence, profile, &Ctx::new().get()) {
        Err(VerifyError::Tpm(e)) => e,
        other => panic!("expected a TPM refusal, got {other:?}"),
    }
}

/// Every check of the quote, on a quote `quote` made for `claims("test-production")`.
fn check_quote_cases(quote: &TpmQuote) {
    let base = claims("test-production");
    let profile = tpm_profile(&quote.ak_spki_der);
    let good = with_quote(base.clone(), quote.clone());
    let verified = verify(&good, &profile, &Ctx::new().get()).unwrap();
    assert_eq!(verified.claims().tpm_quote.as_ref(), Some(quote));

    let info = parse_quote(&quote.attest).unwrap();
    assert_eq!(info.pcr_indices, PCRS.to_vec());
    assert_eq!(
        info.extra_data,
        base.tpm_qualifying_data().unwrap().to_vec()
    );

    // A PCR of the appliance differs from the profile.
    let mut p = profile.clone();
    p.tpm
        .pcrs
        .insert(7, Some(Sha256Digest::of(b"another boot policy")));
    let e = tpm_err(&good, &p);
    assert!(
        matches!(&e, TpmError::PcrValue { index: 7, expected, found }
            if *expected == Sha256Digest::of(b"another boot policy").to_hex()
            && *found == expected_pcr(7).to_hex()),
        "{e}"
    );
    // The profile wants a PCR the quote does not cover.
    let mut p = profile.clone();
    p.tpm.pcrs.insert(8, Some(Sha256Digest::of(b"cmdline")));
    assert!(matches!(
        tpm_err(&good, &p),
        TpmError::PcrNotQuoted { index: 8, .. }
    ));
    // An attestation key the profile did not enroll.
    let mut p = profile.clone();
    p.tpm.enrolled_aks = vec![Sha256Digest::of(b"another appliance")];
    assert!(matches!(tpm_err(&good, &p), TpmError::AkNotEnrolled { .. }));
    // A reported PCR value that is not what the TPM quoted.
    let mut q = quote.clone();
    q.pcrs[1].value = Sha256Digest::of(b"lie");
    assert!(matches!(
        tpm_err(&with_quote(base.clone(), q), &profile),
        TpmError::PcrDigest { .. }
    ));
    // A reported PCR list that is not the quoted selection.
    let mut q = quote.clone();
    q.pcrs.pop();
    assert!(matches!(
        tpm_err(&with_quote(base.clone(), q), &profile),
        TpmError::PcrSelection { .. }
    ));
    // A changed quote no longer verifies under the AK.
    let mut q = quote.clone();
    let last = q.attest.len() - 1;
    q.attest[last] ^= 1;
    assert!(matches!(
        tpm_err(&with_quote(base.clone(), q), &profile),
        TpmError::BadSignature
    ));
    // The quote replayed in evidence for another connection: every other check passes, the
    // qualifying data does not.
    let mut replay = base.clone();
    replay.channel_binding = vec![0x77; 32];
    let mut ctx = Ctx::new();
    ctx.binding = vec![0x77; 32];
    let replayed = with_quote(replay, quote.clone());
    match verify(&replayed, &profile, &ctx.get()) {
        Err(VerifyError::Tpm(TpmError::QualifyingData { expected, found })) => {
            assert_eq!(found, hex::encode(base.tpm_qualifying_data().unwrap()));
            assert_ne!(expected, found);
        }
        other => panic!("expected a qualifying-data refusal, got {other:?}"),
    }
}

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/swtpm")
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap()
}

#[test]
fn recorded_swtpm_quote_verifies() {
    let quote = TpmQuote {
        ak_spki_der: read_fixture("ak.der"),
        attest: read_fixture("quote.attest"),
        signature: read_fixture("quote.sig"),
        pcrs: pcr_values(&read_fixture("pcrs.bin")),
    };
    for pcr in &quote.pcrs {
        assert_eq!(pcr.value, expected_pcr(pcr.index), "PCR {}", pcr.index);
    }
    check_quote_cases(&quote);
}

// ---- live swtpm ------------------------------------------------------------------------------

/// Runs a tpm2-tools command in `dir` against the TPM at `tcti`.
fn run(tcti: &str, dir: &Path, tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .env("TPM2TOOLS_TCTI", tcti)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn live_swtpm_quote_verifies() {
    let missing = swtpm::missing_tools();
    if !missing.is_empty() {
        eprintln!(
            "skipped: {} not installed (Debian packages swtpm, tpm2-tools); the recorded quote is still checked",
            missing.join(", ")
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tpm = Swtpm::start("swtpm", d).unwrap();
    let tcti = tpm.tcti();

    // A measured boot: one measurement into each PCR of the profile.
    for i in PCRS {
        tpm.extend(i, measurement(i).as_bytes()).unwrap();
    }
    // Endorsement key, then an ECDSA P-256 attestation key under it. Without a resource
    // manager, transient objects and sessions are flushed by hand between commands.
    run(
        &tcti,
        d,
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "ecc", "-u", "ek.pub"],
    );
    run(&tcti, d, "tpm2_flushcontext", &["-t"]);
    run(
        &tcti,
        d,
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.der", "-f", "der", "-n", "ak.name",
        ],
    );
    run(&tcti, d, "tpm2_flushcontext", &["-t"]);
    run(&tcti, d, "tpm2_flushcontext", &["-s"]);

    let qualifying = hex::encode(claims("test-production").tpm_qualifying_data().unwrap());
    let selection = format!(
        "sha256:{}",
        PCRS.iter().map(u8::to_string).collect::<Vec<_>>().join(",")
    );
    run(
        &tcti,
        d,
        "tpm2_quote",
        &[
            "-c",
            "ak.ctx",
            "-l",
            &selection,
            "-q",
            &qualifying,
            "-g",
            "sha256",
            "-m",
            "quote.attest",
            "-s",
            "quote.sig",
        ],
    );
    run(&tcti, d, "tpm2_pcrread", &[&selection, "-o", "pcrs.bin"]);

    let read = |name: &str| std::fs::read(d.join(name)).unwrap();
    let quote = TpmQuote {
        ak_spki_der: read("ak.der"),
        attest: read("quote.attest"),
        signature: read("quote.sig"),
        pcrs: pcr_values(&read("pcrs.bin")),
    };
    for pcr in &quote.pcrs {
        assert_eq!(pcr.value, expected_pcr(pcr.index), "PCR {}", pcr.index);
    }
    check_quote_cases(&quote);

    if std::env::var_os("STRONGROOM_ATTEST_WRITE_TPM_FIXTURE").is_some() {
        let out = fixture_dir();
        std::fs::create_dir_all(&out).unwrap();
        for name in ["ak.der", "quote.attest", "quote.sig", "pcrs.bin"] {
            std::fs::copy(d.join(name), out.join(name)).unwrap();
        }
    }
}
