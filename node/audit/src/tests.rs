//! Bundles end to end: a good bundle verifies; every kind of tampering fails and names the
//! entry, checkpoint or file at fault.

use std::path::{Path, PathBuf};

use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::json;
use strongroom_transport::pki::{ClusterCa, SoftwareKey, Validity};
use strongroom_transport::{ClusterId, NodeId, Subject};
use tempfile::TempDir;

use crate::bundle::{CHAIN_FILE, CHECKPOINTS_FILE, ENTRIES_FILE, MANIFEST_FILE};
use crate::*;

const CLUSTER: &str = "vault";
const NODE: &str = "node-1";
const EXPORTED_AT: u64 = 1_800_000_000_000;

/// A cluster CA and one node with its certificate and signing key.
struct Pki {
    ca_pem: String,
    chain_pem: String,
    key: SigningKey,
}

impl Pki {
    fn new(cluster: &str, node: &str) -> Pki {
        let ca = ClusterCa::generate(
            &ClusterId::new(cluster).unwrap(),
            Validity {
                not_before: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000),
                not_after: std::time::UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000),
            },
        )
        .unwrap();
        let node_key = SoftwareKey::generate().unwrap();
        let cert = ca
            .issue(
                Subject::Node(NodeId::new(node).unwrap()),
                node_key.rcgen_key(),
                Validity {
                    not_before: std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_700_000_000),
                    not_after: std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_900_000_000),
                },
            )
            .unwrap();
        Pki {
            ca_pem: ca.cert_pem(),
            chain_pem: cert.pem(),
            key: SigningKey::from_pkcs8_pem(&node_key.to_pem()).unwrap(),
        }
    }

    fn signer(&self) -> impl Fn(&[u8]) -> Result<[u8; 64], String> + '_ {
        |msg: &[u8]| {
            let sig: Signature = self.key.sign(msg);
            Ok(sig.to_bytes().into())
        }
    }

    fn checkpoint(&self, entry: &AuditEntry) -> Checkpoint {
        Checkpoint::sign(
            CLUSTER,
            NODE,
            entry.seq,
            entry.hash,
            entry.time_unix_ms + 1,
            &self.signer(),
        )
        .unwrap()
    }
}

/// Entries `from..to` of a log (`prev_hash` chained from seq 0).
fn log(to: u64) -> Vec<AuditEntry> {
    let key = SoftwareAuditKey::new([5; 32]);
    let mut prev = GENESIS_PREV_HASH;
    (0..to)
        .map(|seq| {
            let e = AuditEvent::new(NODE, EventKind::SignRequestReceived)
                .request(format!("req-{seq}"))
                .field("note", format!("entry-{seq}"))
                .field("spend_sat", 1000 * seq)
                .field("outputs", json!([{"value_sat": seq, "address": "tb1qxyz"}]))
                .sensitive(&key, "memo", format!("memo {seq}").as_bytes())
                .unwrap()
                .seal(seq, 1_750_000_000_000 + seq * 1000, prev)
                .unwrap();
            prev = e.hash;
            e
        })
        .collect()
}

struct Bundle {
    _tmp: TempDir,
    dir: PathBuf,
    ca: PathBuf,
}

fn write(
    pki: &Pki,
    trusted_ca_pem: &str,
    entries: &[AuditEntry],
    checkpoints: &[Checkpoint],
) -> Bundle {
    let tmp = TempDir::new().unwrap();
    let dir = tmp.path().join("bundle");
    write_bundle(
        &dir,
        &BundleContents {
            cluster_id: CLUSTER,
            node_id: NODE,
            exported_at_unix_ms: EXPORTED_AT,
            entries,
            checkpoints,
            chain_pem: &pki.chain_pem,
            ca_pem: &pki.ca_pem,
        },
    )
    .unwrap();
    let ca = tmp.path().join("trusted-ca.pem");
    std::fs::write(&ca, trusted_ca_pem).unwrap();
    Bundle { _tmp: tmp, dir, ca }
}

/// Ten entries, checkpoints at seq 3 and 7 (entries 8 and 9 not yet covered).
fn good() -> (Pki, Bundle) {
    let pki = Pki::new(CLUSTER, NODE);
    let entries = log(10);
    let checkpoints = [pki.checkpoint(&entries[3]), pki.checkpoint(&entries[7])];
    let bundle = write(&pki, &pki.ca_pem, &entries, &checkpoints);
    (pki, bundle)
}

fn verify(b: &Bundle) -> VerifyReport {
    verify_bundle(&b.dir, Some(&b.ca))
}

fn failure_of(b: &Bundle) -> Failure {
    let report = verify(b);
    assert!(!report.ok, "expected a failure: {report}");
    report.failure.unwrap()
}

fn lines(dir: &Path, file: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(file))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn set_lines(dir: &Path, file: &str, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(dir.join(file), text).unwrap();
}

#[test]
fn a_good_bundle_verifies() {
    let (_, b) = good();
    let report = verify(&b);
    assert!(report.ok, "{report}");
    assert_eq!(report.entries, 10);
    assert_eq!(report.checkpoints, 2);
    assert_eq!((report.first_seq, report.last_seq), (Some(0), Some(9)));
    assert_eq!(report.covered_to_seq, Some(7));
    assert_eq!(report.trust_anchor, TrustAnchorSource::Operator);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("entries seq 8..9 are not covered by a checkpoint"));
    let text = report.to_string();
    assert!(
        text.starts_with("OK: 10 entries (seq 0..9), 2 checkpoints\n"),
        "{text}"
    );
    // The JSON form carries the same facts.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], true);
    assert_eq!(json["failure"], serde_json::Value::Null);
    assert_eq!(json["trust_anchor"], "operator");
}

#[test]
fn without_a_trusted_ca_the_report_says_the_bundle_vouched_for_itself() {
    let (_, b) = good();
    let report = verify_bundle(&b.dir, None);
    assert!(report.ok, "{report}");
    assert_eq!(report.trust_anchor, TrustAnchorSource::Bundle);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("no trusted CA given")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn a_fully_checkpointed_bundle_has_no_warning() {
    let pki = Pki::new(CLUSTER, NODE);
    let entries = log(4);
    let b = write(&pki, &pki.ca_pem, &entries, &[pki.checkpoint(&entries[3])]);
    let report = verify(&b);
    assert!(report.ok, "{report}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}

#[test]
fn every_flipped_byte_of_an_entry_fails_at_that_entry() {
    let (_, b) = good();
    let original = lines(&b.dir, ENTRIES_FILE);
    let line = original[3].clone().into_bytes();
    for i in 0..line.len() {
        let mut changed = line.clone();
        changed[i] ^= 0x01;
        let mut all = original.clone();
        all[3] = String::from_utf8_lossy(&changed).into_owned();
        set_lines(&b.dir, ENTRIES_FILE, &all);
        let f = failure_of(&b);
        assert_eq!(f.file.as_deref(), Some(ENTRIES_FILE), "byte {i}: {f}");
        assert_eq!(f.line, Some(4), "byte {i}: {f}");
    }
}

#[test]
fn a_changed_value_is_a_hash_mismatch() {
    let (_, b) = good();
    let mut all = lines(&b.dir, ENTRIES_FILE);
    all[3] = all[3].replace("\"entry-3\"", "\"entry-X\"");
    set_lines(&b.dir, ENTRIES_FILE, &all);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::HashMismatch);
    assert_eq!((f.seq, f.line), (Some(3), Some(4)));
    let report = verify(&b).to_string();
    assert!(
        report.starts_with(
            "FAILED at entry seq 3 (line 4 of entries.jsonl): its content does not match its hash"
        ),
        "{report}"
    );
}

#[test]
fn a_deleted_entry_is_named() {
    let (_, b) = good();
    let mut all = lines(&b.dir, ENTRIES_FILE);
    all.remove(3);
    set_lines(&b.dir, ENTRIES_FILE, &all);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::SequenceBreak);
    assert_eq!((f.seq, f.line), (Some(4), Some(4)));
    assert!(f.reason.contains("expected seq 3"), "{f}");
}

#[test]
fn deleted_first_and_last_entries_are_named() {
    let (_, b) = good();
    let all = lines(&b.dir, ENTRIES_FILE);
    set_lines(&b.dir, ENTRIES_FILE, &all[1..]);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::SequenceBreak);
    assert_eq!((f.seq, f.line), (Some(1), Some(1)));
    assert!(f.reason.contains("entries 0..0 are missing"), "{f}");

    set_lines(&b.dir, ENTRIES_FILE, &all[..9]);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::SequenceBreak);
    assert_eq!(f.seq, Some(9));
    assert!(f.reason.contains("removed from the end"), "{f}");
}

#[test]
fn swapped_entries_are_named() {
    let (_, b) = good();
    let mut all = lines(&b.dir, ENTRIES_FILE);
    all.swap(3, 4);
    set_lines(&b.dir, ENTRIES_FILE, &all);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::SequenceBreak);
    assert_eq!((f.seq, f.line), (Some(4), Some(4)));
}

/// An attacker who removes an entry and recomputes the rest of the chain (new seqs, new
/// hashes, a consistent manifest) is caught by the first checkpoint after the change.
#[test]
fn a_recomputed_chain_is_caught_by_the_checkpoint() {
    let pki = Pki::new(CLUSTER, NODE);
    let entries = log(10);
    let checkpoints = [pki.checkpoint(&entries[3]), pki.checkpoint(&entries[7])];
    let mut forged: Vec<AuditEntry> = entries.clone();
    forged.remove(2);
    let mut prev = GENESIS_PREV_HASH;
    for (i, e) in forged.iter_mut().enumerate() {
        e.seq = u64::try_from(i).unwrap();
        e.prev_hash = prev;
        e.hash = e.compute_hash().unwrap();
        prev = e.hash;
    }
    let b = write(&pki, &pki.ca_pem, &forged, &checkpoints);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointMismatch);
    assert_eq!(f.file.as_deref(), Some(CHECKPOINTS_FILE));
    assert_eq!((f.seq, f.line), (Some(3), Some(1)));
    assert!(
        f.reason.contains("between seq 0 and seq 3 were rewritten"),
        "{f}"
    );
}

#[test]
fn a_replaced_checkpoint_signature_fails() {
    let (pki, b) = good();
    let mut all = lines(&b.dir, CHECKPOINTS_FILE);
    let mut c: Checkpoint = serde_json::from_str(&all[1]).unwrap();
    // A signature by the right key over another message.
    c.signature = (pki.signer())(b"something else").unwrap();
    all[1] = serde_json::to_string(&c).unwrap();
    set_lines(&b.dir, CHECKPOINTS_FILE, &all);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointSignature);
    assert_eq!((f.seq, f.line), (Some(7), Some(2)));
    assert!(
        verify(&b)
            .to_string()
            .starts_with("FAILED at checkpoint seq 7 (line 2 of checkpoints.jsonl)")
    );
}

#[test]
fn a_forged_checkpoint_head_fails() {
    let (_, b) = good();
    let mut all = lines(&b.dir, CHECKPOINTS_FILE);
    let mut c: Checkpoint = serde_json::from_str(&all[0]).unwrap();
    c.head_hash[0] ^= 1;
    all[0] = serde_json::to_string(&c).unwrap();
    set_lines(&b.dir, CHECKPOINTS_FILE, &all);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointSignature);
    assert_eq!((f.seq, f.line), (Some(3), Some(1)));
}

#[test]
fn a_checkpoint_from_another_key_fails() {
    let pki = Pki::new(CLUSTER, NODE);
    let other = Pki::new(CLUSTER, NODE);
    let entries = log(10);
    let checkpoints = [pki.checkpoint(&entries[3]), other.checkpoint(&entries[7])];
    let b = write(&pki, &pki.ca_pem, &entries, &checkpoints);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointSignature);
    assert_eq!((f.seq, f.line), (Some(7), Some(2)));
}

#[test]
fn a_chain_from_another_ca_fails() {
    let trusted = Pki::new(CLUSTER, NODE);
    // The whole bundle made under another CA of the same cluster name, with its own ca.pem.
    let rogue = Pki::new(CLUSTER, NODE);
    let entries = log(4);
    let b = write(
        &rogue,
        &trusted.ca_pem,
        &entries,
        &[rogue.checkpoint(&entries[3])],
    );
    let report = verify(&b);
    let f = report.failure.clone().unwrap();
    assert_eq!(f.code, FailureCode::UntrustedCertificate, "{report}");
    assert_eq!(f.file.as_deref(), Some(CHAIN_FILE));
    assert!(
        f.reason.contains("not issued by the trusted cluster CA"),
        "{f}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("is not the trusted CA")),
        "{:?}",
        report.warnings
    );
    // Trusting the bundle's own CA, it would pass: that is why the operator names the CA.
    assert!(verify_bundle(&b.dir, None).ok);
}

#[test]
fn a_certificate_of_another_node_fails() {
    let pki = Pki::new(CLUSTER, "node-2");
    let entries = log(4);
    let b = write(&pki, &pki.ca_pem, &entries, &[]);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CertificateIdentity);
    assert!(f.reason.contains("spiffe://vault/node/node-2"), "{f}");
}

#[test]
fn a_bundle_without_checkpoints_fails() {
    let pki = Pki::new(CLUSTER, NODE);
    let b = write(&pki, &pki.ca_pem, &log(4), &[]);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::NoCheckpoint);
    assert_eq!(f.seq, Some(0));
}

#[test]
fn a_checkpoint_beyond_the_entries_reveals_a_cut_log() {
    let pki = Pki::new(CLUSTER, NODE);
    let entries = log(10);
    let checkpoints = [pki.checkpoint(&entries[3]), pki.checkpoint(&entries[9])];
    // Entries 8 and 9 cut off, the manifest rewritten to match.
    let b = write(&pki, &pki.ca_pem, &entries[..8], &checkpoints);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointOutOfRange);
    assert_eq!((f.seq, f.line), (Some(9), Some(2)));
    assert!(
        f.reason.contains("entries 8..9 were removed from the end"),
        "{f}"
    );
}

#[test]
fn reordered_checkpoints_fail() {
    let pki = Pki::new(CLUSTER, NODE);
    let entries = log(10);
    let checkpoints = [pki.checkpoint(&entries[7]), pki.checkpoint(&entries[3])];
    let b = write(&pki, &pki.ca_pem, &entries, &checkpoints);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointOrder);
    assert_eq!((f.seq, f.line), (Some(3), Some(2)));
}

/// An export may start mid-chain: a checkpoint of the entry just before anchors the first
/// entry's prev_hash, and one inside the range covers the entries.
#[test]
fn a_mid_chain_export_verifies_and_its_anchor_is_checked() {
    let pki = Pki::new(CLUSTER, NODE);
    let entries = log(10);
    let checkpoints = [pki.checkpoint(&entries[3]), pki.checkpoint(&entries[9])];
    let b = write(&pki, &pki.ca_pem, &entries[4..], &checkpoints[1..]);
    let report = verify(&b);
    assert!(report.ok, "{report}");
    assert_eq!((report.first_seq, report.last_seq), (Some(4), Some(9)));

    let b = write(&pki, &pki.ca_pem, &entries[4..], &checkpoints);
    let report = verify(&b);
    assert!(report.ok, "{report}");

    // The first entry's prev_hash altered and its hash recomputed: the anchor catches it.
    let mut altered = entries[4..].to_vec();
    altered[0].prev_hash = [7; 32];
    altered[0].hash = altered[0].compute_hash().unwrap();
    let mut prev = altered[0].hash;
    for e in &mut altered[1..] {
        e.prev_hash = prev;
        e.hash = e.compute_hash().unwrap();
        prev = e.hash;
    }
    let b = write(&pki, &pki.ca_pem, &altered, &checkpoints[..1]);
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::CheckpointMismatch);
    assert!(f.reason.contains("prev_hash was altered"), "{f}");
}

#[test]
fn a_file_changed_without_changing_records_fails_on_its_digest() {
    let (_, b) = good();
    let mut chain = std::fs::read_to_string(b.dir.join(CHAIN_FILE)).unwrap();
    chain.push_str("\n# annotated\n");
    std::fs::write(b.dir.join(CHAIN_FILE), chain).unwrap();
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::ManifestMismatch);
    assert_eq!(f.file.as_deref(), Some(CHAIN_FILE));
}

#[test]
fn an_unknown_bundle_version_is_refused() {
    let (_, b) = good();
    let path = b.dir.join(MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["version"] = json!(2);
    std::fs::write(&path, manifest.to_string()).unwrap();
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::UnsupportedBundle);
}

#[test]
fn a_missing_file_is_named() {
    let (_, b) = good();
    std::fs::remove_file(b.dir.join(CHECKPOINTS_FILE)).unwrap();
    let f = failure_of(&b);
    assert_eq!(f.code, FailureCode::Unreadable);
    assert_eq!(f.file.as_deref(), Some(CHECKPOINTS_FILE));
}

#[test]
fn a_bundle_is_never_written_over_another() {
    let (pki, b) = good();
    let err = write_bundle(
        &b.dir,
        &BundleContents {
            cluster_id: CLUSTER,
            node_id: NODE,
            exported_at_unix_ms: EXPORTED_AT,
            entries: &[],
            checkpoints: &[],
            chain_pem: &pki.chain_pem,
            ca_pem: &pki.ca_pem,
        },
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::NotEmpty(_)), "{err}");
}

#[test]
fn an_empty_bundle_verifies_with_a_warning() {
    let pki = Pki::new(CLUSTER, NODE);
    let b = write(&pki, &pki.ca_pem, &[], &[]);
    let report = verify(&b);
    assert!(report.ok, "{report}");
    assert!(report.warnings.iter().any(|w| w.contains("no entries")));
}
