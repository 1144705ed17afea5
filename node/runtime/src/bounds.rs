//! Bounds on what a peer may send: every field of every control message is checked once, before
//! the message is handled, as the API checks what a client sends.
//!
//! A peer is authenticated, not trusted: a compromised member can send any message it likes.
//! [`Request::check`] refuses one whose ids are not hex of their fixed length, whose names break
//! the naming rules, whose texts are too long or hold control characters, or whose lists are
//! longer than the cluster makes sense of. The limits are generous for every message an honest
//! node sends (see each constant); what they keep out is data no honest node produces, before it
//! reaches the database, the logs or the audit log. Meaning (is this key known, is this vote
//! valid) is checked later, by the handler.
//!
//! The checks destructure every message completely, so a field added to [`Request`] does not
//! compile until it is given a bound here.

use strongroom_transport::{ClientName, ClusterId, NodeId};

use crate::control::{Request, SignTarget};
use crate::votes::{SIGNATURE_LEN, SignedVote, Vote};

/// Hex digits of a request id (16 bytes: the first half of the request digest).
pub const REQUEST_ID_HEX: usize = 32;
/// Hex digits of a 32-byte id or value: key ids, session, aux info and presignature ids,
/// entropy, digests.
pub const ID32_HEX: usize = 64;
/// Hex digits of a 64-byte signature: an approval's Ed25519 signature, a compact ECDSA `r || s`.
pub const SIGNATURE_HEX: usize = 128;
/// Longest memo, in characters (the API holds clients to the same).
pub const MAX_MEMO_CHARS: usize = 500;
/// Longest key name, in bytes (the API holds admins to the same).
pub const MAX_KEY_NAME_BYTES: usize = 64;
/// Longest approver name, in characters. Policy files set no limit; real names are far shorter.
pub const MAX_APPROVER_CHARS: usize = 256;
/// Longest approval signature as relayed, whitespace around the hex included.
pub const MAX_APPROVAL_SIGNATURE_CHARS: usize = 256;
/// Longest free text (an error in `failed`, a reason in a vote), in characters. A vote's reason
/// is one decision line: the rule's name and the policy's reason for it.
pub const MAX_TEXT_CHARS: usize = 8_192;
/// Most reasons in one vote (nodes send one).
pub const MAX_REASONS: usize = 16;
/// Longest derivation path, in characters: BIP-32 allows 255 steps of at most 10 digits and a
/// separator each, plus `m/`.
pub const MAX_PATH_CHARS: usize = 2 + 255 * 11;
/// The reservation id under which the leader discards the pieces of a failed presign session
/// (no signing request is involved).
pub const PRESIGN_FAILED: &str = "presign-failed";
/// Smallest encoding of one transaction input (outpoint, empty script, sequence), in bytes:
/// bounds the inputs a PSBT of a given size can have.
const MIN_INPUT_BYTES: usize = 41;

/// What the bounds depend on: the cluster's size and the API's body limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Members of the cluster: bounds party indices, signer sets, entropy lists and votes.
    pub members: usize,
    /// Longest PSBT, in base64 characters.
    pub max_psbt_chars: usize,
}

impl PeerLimits {
    /// The limits of a cluster of `members`, with PSBTs bounded by the API's body limit (a
    /// proposal carries the PSBT a client handed in, which fits in one API request body).
    pub fn new(members: usize) -> Self {
        Self {
            members,
            max_psbt_chars: strongroom_api::Limits::default().max_body_bytes,
        }
    }

    /// The most inputs a PSBT within [`PeerLimits::max_psbt_chars`] can have.
    pub fn max_inputs(&self) -> usize {
        (self.max_psbt_chars / 4 * 3 / MIN_INPUT_BYTES).max(1)
    }
}

/// A field of a peer's message is out of bounds. The sender is at fault; the value itself is
/// never repeated (it may be huge or hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoundsError {
    /// A text is longer than its limit.
    #[error("`{field}` is longer than {max} {unit}")]
    TooLong {
        /// The field, e.g. `memo` or `votes[1].reasons[0]`.
        field: String,
        /// The limit.
        max: usize,
        /// What the limit counts: `characters` or `bytes`.
        unit: &'static str,
    },
    /// A field that must have content is empty.
    #[error("`{field}` is empty")]
    Empty {
        /// The field.
        field: String,
    },
    /// A text holds a control character, or a name has spaces around it.
    #[error("`{field}` must be printable text{extra}")]
    NotPrintable {
        /// The field.
        field: String,
        /// What else the rule asks, e.g. " without leading or trailing spaces".
        extra: &'static str,
    },
    /// A hex field is not hex of its fixed length.
    #[error("`{field}` must be {digits} hex digits")]
    NotHex {
        /// The field.
        field: String,
        /// The digits expected.
        digits: usize,
    },
    /// A list has more entries than its limit (or none where one is needed).
    #[error("`{field}` has {len} entries; between {min} and {max} are allowed")]
    Count {
        /// The field.
        field: String,
        /// Its entries.
        len: usize,
        /// The fewest allowed.
        min: usize,
        /// The most allowed.
        max: usize,
    },
    /// A party index or a threshold outside the cluster.
    #[error("`{field}` is {value}; the cluster has {members} members")]
    OutsideCluster {
        /// The field.
        field: String,
        /// The value sent.
        value: u64,
        /// Members of the cluster.
        members: usize,
    },
    /// A node id, client name or cluster id breaks the naming rules.
    #[error("`{field}` is not a valid {kind} (1 to 63 of a-z, 0-9 and '-')")]
    BadIdentifier {
        /// The field.
        field: String,
        /// Which kind of identifier.
        kind: &'static str,
    },
    /// A field has the wrong shape otherwise.
    #[error("`{field}` {problem}")]
    Malformed {
        /// The field.
        field: String,
        /// What shape it must have.
        problem: &'static str,
    },
}

impl BoundsError {
    /// The field that is out of bounds.
    pub fn field(&self) -> &str {
        match self {
            BoundsError::TooLong { field, .. }
            | BoundsError::Empty { field }
            | BoundsError::NotPrintable { field, .. }
            | BoundsError::NotHex { field, .. }
            | BoundsError::Count { field, .. }
            | BoundsError::OutsideCluster { field, .. }
            | BoundsError::BadIdentifier { field, .. }
            | BoundsError::Malformed { field, .. } => field,
        }
    }
}

type Checked = Result<(), BoundsError>;

/// At most `max` characters (bytes are checked first, so a huge value is not walked).
fn max_chars(field: &str, value: &str, max: usize) -> Checked {
    if value.len() > max.saturating_mul(4) || value.chars().count() > max {
        return Err(BoundsError::TooLong {
            field: field.to_owned(),
            max,
            unit: "characters",
        });
    }
    Ok(())
}

/// Printable text of at most `max` characters (the API's rule for memos).
fn printable(field: &str, value: &str, max: usize) -> Checked {
    max_chars(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(BoundsError::NotPrintable {
            field: field.to_owned(),
            extra: "",
        });
    }
    Ok(())
}

/// Free text (errors, reasons): line breaks and tabs allowed, other control characters not.
fn free_text(field: &str, value: &str) -> Checked {
    max_chars(field, value, MAX_TEXT_CHARS)?;
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(BoundsError::NotPrintable {
            field: field.to_owned(),
            extra: " (line breaks and tabs allowed)",
        });
    }
    Ok(())
}

/// A name: non-empty printable text without spaces around it, of at most `max` characters.
fn name(field: &str, value: &str, max: usize) -> Checked {
    if value.is_empty() {
        return Err(BoundsError::Empty {
            field: field.to_owned(),
        });
    }
    printable(field, value, max)?;
    if value.trim() != value {
        return Err(BoundsError::NotPrintable {
            field: field.to_owned(),
            extra: " without leading or trailing spaces",
        });
    }
    Ok(())
}

/// A key name as the API accepts it: 1 to [`MAX_KEY_NAME_BYTES`] bytes of printable text,
/// without spaces around it.
fn key_name(field: &str, value: &str) -> Checked {
    if value.len() > MAX_KEY_NAME_BYTES {
        return Err(BoundsError::TooLong {
            field: field.to_owned(),
            max: MAX_KEY_NAME_BYTES,
            unit: "bytes",
        });
    }
    name(field, value, MAX_KEY_NAME_BYTES)
}

fn hex(field: &str, value: &str, digits: usize) -> Checked {
    if value.len() != digits || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BoundsError::NotHex {
            field: field.to_owned(),
            digits,
        });
    }
    Ok(())
}

fn request_id(field: &str, value: &str) -> Checked {
    hex(field, value, REQUEST_ID_HEX)
}

fn id32(field: &str, value: &str) -> Checked {
    hex(field, value, ID32_HEX)
}

/// A reservation id ([`SignTarget::reservation_id`]): a request id, or `<request id>/<input>`,
/// or [`PRESIGN_FAILED`].
fn reservation_id(field: &str, value: &str) -> Checked {
    if value == PRESIGN_FAILED {
        return Ok(());
    }
    match value.split_once('/') {
        None => request_id(field, value),
        Some((request, input)) => {
            request_id(field, request)?;
            if input.is_empty()
                || !input.bytes().all(|b| b.is_ascii_digit())
                || input.parse::<u32>().is_err()
            {
                return Err(BoundsError::Malformed {
                    field: field.to_owned(),
                    problem: "must be a request id, optionally followed by '/' and an input \
                              index, or `presign-failed`",
                });
            }
            Ok(())
        }
    }
}

fn count(field: &str, len: usize, min: usize, max: usize) -> Checked {
    if len < min || len > max {
        return Err(BoundsError::Count {
            field: field.to_owned(),
            len,
            min,
            max,
        });
    }
    Ok(())
}

fn party(field: &str, index: u16, limits: &PeerLimits) -> Checked {
    if usize::from(index) >= limits.members {
        return Err(BoundsError::OutsideCluster {
            field: field.to_owned(),
            value: u64::from(index),
            members: limits.members,
        });
    }
    Ok(())
}

/// A signer set: 1 to `members` party indices, each a member's.
fn parties(field: &str, list: &[u16], limits: &PeerLimits) -> Checked {
    count(field, list.len(), 1, limits.members)?;
    for (i, index) in list.iter().enumerate() {
        party(&format!("{field}[{i}]"), *index, limits)?;
    }
    Ok(())
}

fn node_id(field: &str, value: &str) -> Checked {
    NodeId::new(value)
        .map(drop)
        .map_err(|_| BoundsError::BadIdentifier {
            field: field.to_owned(),
            kind: "node id",
        })
}

fn client_name(field: &str, value: &str) -> Checked {
    ClientName::new(value)
        .map(drop)
        .map_err(|_| BoundsError::BadIdentifier {
            field: field.to_owned(),
            kind: "client name",
        })
}

fn cluster_id(field: &str, value: &str) -> Checked {
    ClusterId::new(value)
        .map(drop)
        .map_err(|_| BoundsError::BadIdentifier {
            field: field.to_owned(),
            kind: "cluster id",
        })
}

fn target(field: &str, value: &SignTarget) -> Checked {
    match value {
        SignTarget::Digest { path, digest } => {
            printable(&format!("{field}.path"), path, MAX_PATH_CHARS)?;
            id32(&format!("{field}.digest"), digest)
        }
        SignTarget::Input { input_index: _ } => Ok(()),
    }
}

fn signed_vote(field: &str, signed: &SignedVote) -> Checked {
    let Vote {
        cluster_id: cluster,
        request_id: request,
        request_digest: _,
        policy_hash: _,
        decision: _,
        reasons,
        entropy: _,
        node_id: node,
        time_unix_ms: _,
    } = signed.unverified_vote();
    cluster_id(&format!("{field}.cluster_id"), cluster)?;
    request_id(&format!("{field}.request_id"), request)?;
    node_id(&format!("{field}.node_id"), node)?;
    let reasons_field = format!("{field}.reasons");
    count(&reasons_field, reasons.len(), 0, MAX_REASONS)?;
    for (i, reason) in reasons.iter().enumerate() {
        free_text(&format!("{reasons_field}[{i}]"), reason)?;
    }
    if signed.signature().len() != SIGNATURE_LEN {
        return Err(BoundsError::Malformed {
            field: format!("{field}.signature"),
            problem: "must be the 64-byte r || s form",
        });
    }
    Ok(())
}

impl Request {
    /// Checks every field of a peer's message against its bound (see the [module
    /// docs](crate::bounds)); the error names the first field out of bounds.
    pub fn check(&self, limits: &PeerLimits) -> Result<(), BoundsError> {
        match self {
            Request::Status | Request::Attestation => Ok(()),
            Request::AuxInfo { session_id } => id32("session_id", session_id),
            Request::Keygen {
                session_id,
                key_id,
                name,
                threshold,
                aux_id,
            } => {
                id32("session_id", session_id)?;
                id32("key_id", key_id)?;
                key_name("name", name)?;
                if *threshold == 0 || usize::from(*threshold) > limits.members {
                    return Err(BoundsError::OutsideCluster {
                        field: "threshold".to_owned(),
                        value: u64::from(*threshold),
                        members: limits.members,
                    });
                }
                id32("aux_id", aux_id)
            }
            Request::Presign {
                session_id,
                key_id,
                signers,
            } => {
                id32("session_id", session_id)?;
                id32("key_id", key_id)?;
                parties("signers", signers, limits)
            }
            Request::Reserve {
                request_id: request,
                key_id,
                signers,
                presig_id,
                target: sign_target,
            } => {
                request_id("request_id", request)?;
                id32("key_id", key_id)?;
                parties("signers", signers, limits)?;
                if let Some(presig) = presig_id {
                    id32("presig_id", presig)?;
                }
                target("target", sign_target)
            }
            Request::Partial {
                request_id: request,
                key_id,
                presig_id,
                target: sign_target,
                entropy,
            } => {
                request_id("request_id", request)?;
                id32("key_id", key_id)?;
                id32("presig_id", presig_id)?;
                target("target", sign_target)?;
                count("entropy", entropy.len(), 1, limits.members)?;
                for (i, (index, value)) in entropy.iter().enumerate() {
                    party(&format!("entropy[{i}].party"), *index, limits)?;
                    id32(&format!("entropy[{i}].entropy"), value)?;
                }
                Ok(())
            }
            Request::Discard {
                request_id: reservation,
                presig_id,
            } => {
                reservation_id("request_id", reservation)?;
                id32("presig_id", presig_id)
            }
            Request::InteractiveSign {
                session_id,
                request_id: request,
                key_id,
                signers,
                target: sign_target,
            } => {
                id32("session_id", session_id)?;
                request_id("request_id", request)?;
                id32("key_id", key_id)?;
                parties("signers", signers, limits)?;
                target("target", sign_target)
            }
            Request::Propose {
                request_id: request,
                key_id,
                psbt,
                memo,
                submitter,
            }
            | Request::Sequence {
                request_id: request,
                key_id,
                psbt,
                memo,
                submitter,
            } => {
                request_id("request_id", request)?;
                id32("key_id", key_id)?;
                if psbt.is_empty() {
                    return Err(BoundsError::Empty {
                        field: "psbt".to_owned(),
                    });
                }
                if psbt.len() > limits.max_psbt_chars {
                    return Err(BoundsError::TooLong {
                        field: "psbt".to_owned(),
                        max: limits.max_psbt_chars,
                        unit: "bytes",
                    });
                }
                if let Some(memo) = memo {
                    printable("memo", memo, MAX_MEMO_CHARS)?;
                }
                client_name("submitter", submitter)
            }
            Request::Votes {
                request_id: request,
                votes,
            } => {
                request_id("request_id", request)?;
                count("votes", votes.len(), 0, limits.members)?;
                for (i, vote) in votes.iter().enumerate() {
                    signed_vote(&format!("votes[{i}]"), vote)?;
                }
                Ok(())
            }
            Request::Approve {
                request_id: request,
                approver,
                signature,
            } => {
                request_id("request_id", request)?;
                name("approver", approver, MAX_APPROVER_CHARS)?;
                if signature.len() > MAX_APPROVAL_SIGNATURE_CHARS {
                    return Err(BoundsError::TooLong {
                        field: "signature".to_owned(),
                        max: MAX_APPROVAL_SIGNATURE_CHARS,
                        unit: "characters",
                    });
                }
                // The receiving node relays the signature as the approver's client sent it.
                hex("signature", signature.trim(), SIGNATURE_HEX)
            }
            Request::SignApproved {
                request_id: request,
            } => request_id("request_id", request),
            Request::Finished {
                request_id: request,
                signatures,
            } => {
                request_id("request_id", request)?;
                count("signatures", signatures.len(), 1, limits.max_inputs())?;
                for (i, (_, signature)) in signatures.iter().enumerate() {
                    hex(&format!("signatures[{i}]"), signature, SIGNATURE_HEX)?;
                }
                Ok(())
            }
            Request::Cancel {
                request_id: request,
                by,
            } => {
                request_id("request_id", request)?;
                client_name("by", by)
            }
            Request::Failed {
                request_id: request,
                error,
            } => {
                request_id("request_id", request)?;
                free_text("error", error)
            }
        }
    }
}

#[cfg(test)]
mod tests;
