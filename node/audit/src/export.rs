//! The export contract between a node's API and the `strongroom audit export` command.
//!
//! - `GET /v1/audit/export?from_seq=<a>&to_seq=<b>` (both optional, inclusive) answers JSON
//!   Lines (`application/jsonl`): one [`ExportRecord`] per line, the entries of the range in
//!   seq order and the checkpoints whose seq lies in the range, e.g.
//!   `{"type":"entry","seq":0,...}` and `{"type":"checkpoint","cluster_id":"vault",...}`.
//! - `GET /v1/audit/chain` answers [`AuditChain`] as JSON: the node's certificate chain and
//!   the cluster CA it was issued by.
//!
//! Nothing in an export is trusted because it came from the node: the bundle the command
//! writes is verified like any other ([`crate::verify_bundle`]).

use serde::{Deserialize, Serialize};

use crate::checkpoint::Checkpoint;
use crate::entry::AuditEntry;

/// Path of the export endpoint.
pub const EXPORT_PATH: &str = "/v1/audit/export";

/// Path of the certificate-chain endpoint.
pub const CHAIN_PATH: &str = "/v1/audit/chain";

/// One line of the export endpoint's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportRecord {
    /// An entry of the log.
    Entry(AuditEntry),
    /// A checkpoint.
    Checkpoint(Checkpoint),
}

/// The answer of the certificate-chain endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditChain {
    /// PEM: the node's certificate first, then any intermediates.
    pub chain_pem: String,
    /// PEM: the cluster CA certificate the node was issued by.
    pub ca_pem: String,
}

/// A line of an export answer is not an [`ExportRecord`]; the node that answered is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} of the export: {reason}")]
pub struct ExportError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// Splits an export answer into its entries and checkpoints, each in the order received.
/// Blank lines are skipped; the records are not checked beyond their shape.
pub fn parse_export(text: &str) -> Result<(Vec<AuditEntry>, Vec<Checkpoint>), ExportError> {
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: ExportRecord = serde_json::from_str(line).map_err(|e| ExportError {
            line: i + 1,
            reason: e.to_string(),
        })?;
        match record {
            ExportRecord::Entry(e) => entries.push(e),
            ExportRecord::Checkpoint(c) => checkpoints.push(c),
        }
    }
    Ok((entries, checkpoints))
}

/// The JSON Lines an export endpoint answers for `entries` and `checkpoints` (entries first).
pub fn export_lines(
    entries: &[AuditEntry],
    checkpoints: &[Checkpoint],
) -> Result<String, serde_json::Error> {
    let mut out = String::new();
    for e in entries {
        out.push_str(&serde_json::to_string(&ExportRecord::Entry(e.clone()))?);
        out.push('\n');
    }
    for c in checkpoints {
        out.push_str(&serde_json::to_string(&ExportRecord::Checkpoint(
            c.clone(),
        ))?);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{AuditEvent, EventKind, GENESIS_PREV_HASH};

    #[test]
    fn records_round_trip_with_their_type_tag() {
        let entry = AuditEvent::new("node-1", EventKind::NodeStarted)
            .field("version", "0.1.0")
            .seal(0, 5, GENESIS_PREV_HASH)
            .unwrap();
        let checkpoint = Checkpoint {
            cluster_id: "vault".into(),
            node_id: "node-1".into(),
            seq: 0,
            head_hash: entry.hash,
            time_unix_ms: 6,
            signature: [3; 64],
        };
        let text = export_lines(
            std::slice::from_ref(&entry),
            std::slice::from_ref(&checkpoint),
        )
        .unwrap();
        assert!(text.starts_with(r#"{"type":"entry","seq":0,"#), "{text}");
        assert!(
            text.contains(r#"{"type":"checkpoint","cluster_id":"vault","#),
            "{text}"
        );
        let (entries, checkpoints) = parse_export(&format!("{text}\n")).unwrap();
        assert_eq!(entries, [entry]);
        assert_eq!(checkpoints, [checkpoint]);
    }

    #[test]
    fn a_bad_line_is_named() {
        let err = parse_export("\n{\"type\":\"gossip\"}\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse_export("{\"type\":\"entry\",\"seq\":1,\"surprise\":true}").unwrap_err();
        assert_eq!(err.line, 1);
    }
}
