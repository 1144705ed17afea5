//! The hash-chain rules, checked one entry at a time.
//!
//! For consecutive entries `a`, `b` of one node's log:
//!
//! - `b.seq == a.seq + 1` (no gap, no repeat, no reordering);
//! - `b.prev_hash == a.hash`;
//! - every entry's `hash` is the SHA-256 of its own canonical encoding;
//! - every entry names the same node;
//! - the entry with seq 0 has `prev_hash` = [`GENESIS_PREV_HASH`].
//!
//! A run of entries may start anywhere in the log (an export of seq 1000..2000). Its first
//! entry's `prev_hash` then cannot be checked against an entry; only a checkpoint can anchor it
//! (a checkpoint at the seq just before, or any checkpoint inside the run, which vouches for
//! every entry up to its seq, `prev_hash` values included).

use crate::entry::{AuditEntry, FormatError, GENESIS_PREV_HASH};

/// Why an entry breaks the chain. The entry, or whoever altered the log, is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// The entry is not well-formed.
    #[error("entry seq {seq} is not well-formed: {source}")]
    Format {
        /// The entry's seq.
        seq: u64,
        /// What is wrong.
        source: FormatError,
    },
    /// The entry's hash is not the hash of its content: the entry was altered.
    #[error(
        "entry seq {seq}: its content does not match its hash (the entry was altered after it \
         was written)"
    )]
    HashMismatch {
        /// The entry's seq.
        seq: u64,
    },
    /// The entry does not follow the one before.
    #[error("entry seq {found} follows seq {previous}: expected seq {expected} ({})", gap_reason(.previous, .found))]
    Sequence {
        /// The previous entry's seq.
        previous: u64,
        /// The seq that should have followed.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// The entry's `prev_hash` is not the previous entry's hash.
    #[error(
        "entry seq {seq}: prev_hash does not equal the hash of entry seq {previous} (an entry \
         before it was removed, replaced or rewritten)"
    )]
    Link {
        /// The entry's seq.
        seq: u64,
        /// The previous entry's seq.
        previous: u64,
    },
    /// The first entry of the log does not start from the genesis hash.
    #[error("entry seq 0: prev_hash is not the genesis value (32 zero bytes)")]
    Genesis,
    /// The entry names another node than the log's.
    #[error("entry seq {seq} was recorded by node '{found}', this log is node '{expected}''s")]
    WrongNode {
        /// The entry's seq.
        seq: u64,
        /// The log's node.
        expected: String,
        /// The node the entry names.
        found: String,
    },
}

fn gap_reason(previous: &u64, found: &u64) -> &'static str {
    if found <= previous {
        "an entry is repeated or out of order"
    } else {
        "entries are missing or out of order"
    }
}

impl ChainError {
    /// The seq of the entry at fault.
    pub fn seq(&self) -> u64 {
        match self {
            ChainError::Format { seq, .. }
            | ChainError::HashMismatch { seq }
            | ChainError::Link { seq, .. }
            | ChainError::WrongNode { seq, .. } => *seq,
            ChainError::Sequence { found, .. } => *found,
            ChainError::Genesis => 0,
        }
    }

    /// The message without the leading `entry seq N: `, for callers that name the entry
    /// themselves.
    pub fn reason(&self) -> String {
        let text = self.to_string();
        let prefix = format!("entry seq {}: ", self.seq());
        text.strip_prefix(&prefix)
            .map(str::to_owned)
            .unwrap_or(text)
    }
}

/// Checks entries one at a time, in log order.
#[derive(Debug, Clone, Default)]
pub struct ChainVerifier {
    node_id: Option<String>,
    last: Option<(u64, [u8; 32])>,
    count: u64,
}

impl ChainVerifier {
    /// A verifier for the log of `node_id`, or of whichever node the first entry names.
    pub fn new(node_id: Option<&str>) -> Self {
        ChainVerifier {
            node_id: node_id.map(str::to_owned),
            last: None,
            count: 0,
        }
    }

    /// Checks the next entry against the rules and the entries before it.
    pub fn push(&mut self, entry: &AuditEntry) -> Result<(), ChainError> {
        let seq = entry.seq;
        let node = self.node_id.get_or_insert_with(|| entry.node_id.clone());
        if entry.node_id != *node {
            return Err(ChainError::WrongNode {
                seq,
                expected: node.clone(),
                found: entry.node_id.clone(),
            });
        }
        if let Some((previous, _)) = self.last {
            let expected = previous.checked_add(1);
            if expected != Some(seq) {
                return Err(ChainError::Sequence {
                    previous,
                    expected: expected.unwrap_or(u64::MAX),
                    found: seq,
                });
            }
        }
        let hash = entry
            .compute_hash()
            .map_err(|source| ChainError::Format { seq, source })?;
        if hash != entry.hash {
            return Err(ChainError::HashMismatch { seq });
        }
        match self.last {
            Some((previous, previous_hash)) if entry.prev_hash != previous_hash => {
                return Err(ChainError::Link { seq, previous });
            }
            None if seq == 0 && entry.prev_hash != GENESIS_PREV_HASH => {
                return Err(ChainError::Genesis);
            }
            _ => {}
        }
        self.last = Some((seq, entry.hash));
        self.count += 1;
        Ok(())
    }

    /// The newest entry checked: its seq and hash.
    pub fn head(&self) -> Option<(u64, [u8; 32])> {
        self.last
    }

    /// How many entries were checked.
    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Checks a run of entries in log order (see the [module docs](self)).
pub fn verify_chain(entries: &[AuditEntry]) -> Result<(), ChainError> {
    let mut verifier = ChainVerifier::new(None);
    entries.iter().try_for_each(|e| verifier.push(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{AuditEvent, EventKind};

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut prev = GENESIS_PREV_HASH;
        (0..n)
            .map(|seq| {
                let e = AuditEvent::new("node-1", EventKind::VoteCast)
                    .field("n", seq)
                    .seal(seq, 1000 + seq, prev)
                    .unwrap();
                prev = e.hash;
                e
            })
            .collect()
    }

    #[test]
    fn a_good_chain_passes_from_anywhere() {
        let c = chain(6);
        verify_chain(&c).unwrap();
        verify_chain(&c[2..]).unwrap();
        verify_chain(&[]).unwrap();
    }

    #[test]
    fn each_break_names_the_entry() {
        let c = chain(6);
        let mut removed = c.clone();
        removed.remove(3);
        let err = verify_chain(&removed).unwrap_err();
        assert_eq!(
            err,
            ChainError::Sequence {
                previous: 2,
                expected: 3,
                found: 4
            }
        );
        assert_eq!(err.seq(), 4);
        assert!(err.to_string().contains("missing"), "{err}");

        let mut swapped = c.clone();
        swapped.swap(2, 3);
        assert_eq!(verify_chain(&swapped).unwrap_err().seq(), 3);

        let mut altered = c.clone();
        altered[4].fields.insert("n".into(), 99.into());
        assert_eq!(
            verify_chain(&altered).unwrap_err(),
            ChainError::HashMismatch { seq: 4 }
        );

        // Rewriting one entry and its hash breaks the link of the next one.
        let mut rewritten = c.clone();
        rewritten[4].fields.insert("n".into(), 99.into());
        rewritten[4].hash = rewritten[4].compute_hash().unwrap();
        assert_eq!(
            verify_chain(&rewritten).unwrap_err(),
            ChainError::Link {
                seq: 5,
                previous: 4
            }
        );

        let mut genesis = c.clone();
        genesis[0].prev_hash = [1; 32];
        genesis[0].hash = genesis[0].compute_hash().unwrap();
        assert_eq!(verify_chain(&genesis).unwrap_err(), ChainError::Genesis);

        let mut other = c;
        other[1].node_id = "node-2".into();
        assert!(matches!(
            verify_chain(&other).unwrap_err(),
            ChainError::WrongNode { seq: 1, .. }
        ));
    }
}
