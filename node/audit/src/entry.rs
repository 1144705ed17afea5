//! Audit entries: what happened ([`AuditEvent`]), and its place in the hash chain
//! ([`AuditEntry`]).
//!
//! # Canonical encoding of an entry (version 1)
//!
//! ```text
//! "strongroom/audit-entry/v1" 0x00   domain-separation prefix (26 bytes, not length-prefixed)
//! then every field as  u32 BE length || bytes, in this order:
//!   1 seq            u64 BE (8 bytes)
//!   2 time_unix_ms   u64 BE (8 bytes)
//!   3 node_id        UTF-8
//!   4 kind           UTF-8
//!   5 request_id     0x00 when absent | 0x01 || UTF-8
//!   6 fields         canonical JSON of the object (see `encoding`)
//!   7 hmacs          u32 BE count, then per name in byte order:
//!                      u32 BE length || name, u32 BE length (32) || HMAC
//!   8 prev_hash      32 bytes
//!
//! hash = SHA-256(canonical encoding)
//! ```
//!
//! Every field carries its length, so no two different entries share an encoding, and the
//! prefix keeps an entry hash from colliding with any other hash the system computes. The
//! first entry of a node's log (seq 0) has `prev_hash` = 32 zero bytes ([`GENESIS_PREV_HASH`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use strongroom_transport::NodeId;

use crate::encoding::{Encoder, canonical_json};
use crate::hexser::{hex32, hex32_map};
use crate::key::{AuditKey, AuditKeyError};

/// Domain-separation prefix of the canonical entry encoding.
pub const ENTRY_DOMAIN: &[u8] = b"strongroom/audit-entry/v1\0";

/// `prev_hash` of the first entry (seq 0).
pub const GENESIS_PREV_HASH: [u8; 32] = [0; 32];

/// Longest kind, field name or HMAC label, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// Longest request id, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 256;

/// An entry or event that cannot be encoded. Whoever built it is at fault (a bug in the
/// recording code, or a damaged bundle).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// A kind, field name or HMAC label is not snake_case (`[a-z][a-z0-9_]*`, at most
    /// [`MAX_NAME_LEN`] bytes).
    #[error("{what} '{name}' is not a snake_case name of at most {MAX_NAME_LEN} bytes")]
    BadName {
        /// What the name names: `kind`, `field` or `hmac label`.
        what: &'static str,
        /// The name.
        name: String,
    },
    /// A name is both a public field and an HMAC label.
    #[error("'{0}' is both a public field and an HMAC label")]
    DuplicateName(String),
    /// The node id breaks the naming rules of node ids.
    #[error("node id '{node_id}' is not valid: {reason}")]
    BadNodeId {
        /// The node id.
        node_id: String,
        /// Why.
        reason: String,
    },
    /// The request id is empty or longer than [`MAX_REQUEST_ID_LEN`] bytes.
    #[error("the request id is empty or longer than {MAX_REQUEST_ID_LEN} bytes")]
    BadRequestId,
    /// A JSON number in `fields` is not an integer within `i64` or `u64`.
    #[error("{path} is not an integer (the audit log records integers only)")]
    NotAnInteger {
        /// Where, e.g. `fields.amounts[2]`.
        path: String,
    },
    /// `fields` nests arrays and objects deeper than the canonical encoding allows.
    #[error("{path} nests too deep")]
    TooDeep {
        /// Where.
        path: String,
    },
    /// A field does not fit its `u32` length prefix.
    #[error("{field} is {len} bytes, longer than a u32 length")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
}

/// Every kind of event the node records, by its stable name (the `kind` of an entry).
///
/// Entries store the name as a string, so a verifier accepts kinds it does not know: the hash
/// covers the name whatever it is. Names are never reused for another meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The node started: its version and configuration digest.
    NodeStarted,
    /// The node is stopping (clean shutdown).
    NodeStopping,
    /// The node configuration was loaded (its SHA-256).
    ConfigLoaded,
    /// A policy was loaded (its id and hash).
    PolicyLoaded,
    /// A threshold key was created (key id, name, threshold, participants, public key).
    KeyCreated,
    /// Key generation failed (key id, reason).
    KeyGenerationFailed,
    /// A signing request was received (key id, request digest, submitter, amounts; the PSBT
    /// and memo as HMACs).
    SignRequestReceived,
    /// This node evaluated its policy and cast its vote (decision, reasons, policy hash).
    VoteCast,
    /// A peer's signed vote was received and verified (voter, decision, policy hash).
    VoteReceived,
    /// A request moved to another state (from, to, reason).
    RequestStateChanged,
    /// An approval was verified and counted (approver).
    ApprovalAccepted,
    /// An approval was refused (approver, reason).
    ApprovalRefused,
    /// A presignature was reserved for a request (presignature id, key, signer set).
    PresignatureReserved,
    /// A presignature was consumed for a request (presignature id, token counter, nonce point).
    PresignatureConsumed,
    /// A presignature was discarded (presignature id, reason).
    PresignatureDiscarded,
    /// This node released its partial signature (presignature id, input, coordinator).
    PartialReleased,
    /// A signature was completed and verified (input, signers, mode).
    SignatureCompleted,
    /// A signing attempt failed (reason, culprits).
    SigningFailed,
    /// A peer's attestation evidence passed this node's firmware profile (peer, profile, binary digest, token).
    PeerAdmitted,
    /// A peer's attestation evidence failed the firmware profile (peer, field, reason).
    PeerRefused,
    /// An API client failed authentication (presented identity, reason; address as an HMAC).
    ClientAuthFailed,
    /// The audit log was exported (client, seq range).
    AuditExported,
    /// A control message from a peer was refused (peer, message, reason).
    PeerMessageRefused,
}

impl EventKind {
    /// Every kind, in declaration order.
    pub const ALL: &'static [EventKind] = &[
        EventKind::NodeStarted,
        EventKind::NodeStopping,
        EventKind::ConfigLoaded,
        EventKind::PolicyLoaded,
        EventKind::KeyCreated,
        EventKind::KeyGenerationFailed,
        EventKind::SignRequestReceived,
        EventKind::VoteCast,
        EventKind::VoteReceived,
        EventKind::RequestStateChanged,
        EventKind::ApprovalAccepted,
        EventKind::ApprovalRefused,
        EventKind::PresignatureReserved,
        EventKind::PresignatureConsumed,
        EventKind::PresignatureDiscarded,
        EventKind::PartialReleased,
        EventKind::SignatureCompleted,
        EventKind::SigningFailed,
        EventKind::PeerAdmitted,
        EventKind::PeerRefused,
        EventKind::ClientAuthFailed,
        EventKind::AuditExported,
        EventKind::PeerMessageRefused,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::NodeStarted => "node_started",
            EventKind::NodeStopping => "node_stopping",
            EventKind::ConfigLoaded => "config_loaded",
            EventKind::PolicyLoaded => "policy_loaded",
            EventKind::KeyCreated => "key_created",
            EventKind::KeyGenerationFailed => "key_generation_failed",
            EventKind::SignRequestReceived => "sign_request_received",
            EventKind::VoteCast => "vote_cast",
            EventKind::VoteReceived => "vote_received",
            EventKind::RequestStateChanged => "request_state_changed",
            EventKind::ApprovalAccepted => "approval_accepted",
            EventKind::ApprovalRefused => "approval_refused",
            EventKind::PresignatureReserved => "presignature_reserved",
            EventKind::PresignatureConsumed => "presignature_consumed",
            EventKind::PresignatureDiscarded => "presignature_discarded",
            EventKind::PartialReleased => "partial_released",
            EventKind::SignatureCompleted => "signature_completed",
            EventKind::SigningFailed => "signing_failed",
            EventKind::PeerAdmitted => "peer_admitted",
            EventKind::PeerRefused => "peer_refused",
            EventKind::ClientAuthFailed => "client_auth_failed",
            EventKind::AuditExported => "audit_exported",
            EventKind::PeerMessageRefused => "peer_message_refused",
        }
    }

    /// The kind with this name, if it is one this version knows.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened, before it takes its place in the chain. Built by the node where
/// the event happens; the store assigns its sequence number, time and previous hash when it
/// appends it ([`AuditEvent::seal`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    node_id: String,
    kind: String,
    request_id: Option<String>,
    fields: Map<String, Value>,
    hmacs: BTreeMap<String, [u8; 32]>,
}

impl AuditEvent {
    /// An event of `kind` recorded by node `node_id`, with no fields yet.
    pub fn new(node_id: impl Into<String>, kind: EventKind) -> Self {
        AuditEvent {
            node_id: node_id.into(),
            kind: kind.as_str().to_owned(),
            request_id: None,
            fields: Map::new(),
            hmacs: BTreeMap::new(),
        }
    }

    /// The signing request the event belongs to.
    pub fn request(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Records a public value (integers, strings, booleans, arrays and objects of them;
    /// checked when the event is sealed). A second value under the same name replaces the
    /// first.
    pub fn field(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }

    /// Records a sensitive value as its HMAC under the node's audit key; the value itself is
    /// not kept.
    pub fn sensitive<K: AuditKey + ?Sized>(
        mut self,
        key: &K,
        name: &str,
        value: &[u8],
    ) -> Result<Self, AuditKeyError> {
        let mac = key.hmac(name, value)?;
        self.hmacs.insert(name.to_owned(), mac);
        Ok(self)
    }

    /// The recording node.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The kind's name.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The request, if any.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Gives the event its place in the chain and computes its hash. Fails if a name, the node
    /// id, the request id or a field value breaks the format's rules.
    pub fn seal(
        self,
        seq: u64,
        time_unix_ms: u64,
        prev_hash: [u8; 32],
    ) -> Result<AuditEntry, FormatError> {
        let mut entry = AuditEntry {
            seq,
            time_unix_ms,
            node_id: self.node_id,
            kind: self.kind,
            request_id: self.request_id,
            fields: self.fields,
            hmacs: self.hmacs,
            prev_hash,
            hash: [0; 32],
        };
        entry.hash = entry.compute_hash()?;
        Ok(entry)
    }
}

/// One entry of a node's audit log. Byte arrays serialize as lowercase hex; this is also the
/// JSON of one line of a bundle's `entries.jsonl` (unknown members are refused).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the node's log: 0, 1, 2, ... without gaps.
    pub seq: u64,
    /// When it was recorded, milliseconds since the Unix epoch (the node's clock).
    pub time_unix_ms: u64,
    /// The recording node.
    pub node_id: String,
    /// What happened: an [`EventKind`] name.
    pub kind: String,
    /// The signing request it belongs to, if any.
    pub request_id: Option<String>,
    /// Public values.
    pub fields: Map<String, Value>,
    /// Sensitive values, as HMAC-SHA256 under the node's audit key ([`crate::AuditKey`]).
    #[serde(with = "hex32_map")]
    pub hmacs: BTreeMap<String, [u8; 32]>,
    /// The hash of the entry before (seq − 1); [`GENESIS_PREV_HASH`] for seq 0.
    #[serde(with = "hex32")]
    pub prev_hash: [u8; 32],
    /// SHA-256 of the canonical encoding of every other member.
    #[serde(with = "hex32")]
    pub hash: [u8; 32],
}

impl AuditEntry {
    /// The canonical encoding the hash covers (see the [module docs](self)). Checks the
    /// format's rules on the way.
    pub fn canonical_bytes(&self) -> Result<Vec<u8>, FormatError> {
        check_name("kind", &self.kind)?;
        NodeId::new(self.node_id.as_str()).map_err(|e| FormatError::BadNodeId {
            node_id: self.node_id.clone(),
            reason: e.to_string(),
        })?;
        for name in self.fields.keys() {
            check_name("field", name)?;
        }
        for name in self.hmacs.keys() {
            check_name("hmac label", name)?;
            if self.fields.contains_key(name) {
                return Err(FormatError::DuplicateName(name.clone()));
            }
        }
        let mut enc = Encoder::new(ENTRY_DOMAIN);
        enc.field("seq", &self.seq.to_be_bytes())?;
        enc.field("time_unix_ms", &self.time_unix_ms.to_be_bytes())?;
        enc.field("node_id", self.node_id.as_bytes())?;
        enc.field("kind", self.kind.as_bytes())?;
        match &self.request_id {
            None => enc.field("request_id", &[0])?,
            Some(id) => {
                if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
                    return Err(FormatError::BadRequestId);
                }
                let mut bytes = Vec::with_capacity(1 + id.len());
                bytes.push(1);
                bytes.extend_from_slice(id.as_bytes());
                enc.field("request_id", &bytes)?;
            }
        }
        let fields = canonical_json(&Value::Object(self.fields.clone()))?;
        enc.field("fields", fields.as_bytes())?;
        let count = u32::try_from(self.hmacs.len()).map_err(|_| FormatError::TooLong {
            field: "hmacs",
            len: self.hmacs.len(),
        })?;
        let mut hmacs = Encoder::new(&count.to_be_bytes());
        for (name, mac) in &self.hmacs {
            hmacs.field("hmacs", name.as_bytes())?;
            hmacs.field("hmacs", mac)?;
        }
        enc.field("hmacs", &hmacs.finish())?;
        enc.field("prev_hash", &self.prev_hash)?;
        Ok(enc.finish())
    }

    /// SHA-256 of [`AuditEntry::canonical_bytes`]: what `hash` must be.
    pub fn compute_hash(&self) -> Result<[u8; 32], FormatError> {
        Ok(Sha256::digest(self.canonical_bytes()?).into())
    }

    /// The kind, if this version knows it.
    pub fn event_kind(&self) -> Option<EventKind> {
        EventKind::parse(&self.kind)
    }
}

fn check_name(what: &'static str, name: &str) -> Result<(), FormatError> {
    let mut bytes = name.bytes();
    let ok = name.len() <= MAX_NAME_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(FormatError::BadName {
            what,
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::key::SoftwareAuditKey;

    fn event() -> AuditEvent {
        AuditEvent::new("node-1", EventKind::SignRequestReceived)
            .request("req-1")
            .field("key_id", "k1")
            .field("spend_sat", 150_000)
            .field("outputs", json!([{"address": "tb1q", "value_sat": 1}]))
    }

    #[test]
    fn kinds_round_trip_and_are_snake_case() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(*kind));
            check_name("kind", kind.as_str()).unwrap();
        }
        assert_eq!(EventKind::parse("no_such_event"), None);
    }

    /// Pins the encoding: a change here breaks every log already written.
    #[test]
    fn encoding_snapshot() {
        let entry = AuditEvent::new("node-1", EventKind::NodeStarted)
            .field("version", "0.1.0")
            .seal(0, 1_700_000_000_000, GENESIS_PREV_HASH)
            .unwrap();
        let bytes = entry.canonical_bytes().unwrap();
        let mut expected = b"strongroom/audit-entry/v1\0".to_vec();
        for field in [
            &0u64.to_be_bytes()[..],
            &1_700_000_000_000u64.to_be_bytes()[..],
            b"node-1",
            b"node_started",
            &[0],
            br#"{"version":"0.1.0"}"#,
            &0u32.to_be_bytes()[..],
            &[0; 32],
        ] {
            expected.extend_from_slice(&u32::try_from(field.len()).unwrap().to_be_bytes());
            expected.extend_from_slice(field);
        }
        assert_eq!(bytes, expected);
        assert_eq!(entry.hash, <[u8; 32]>::from(Sha256::digest(&expected)));
    }

    #[test]
    fn every_member_changes_the_hash() {
        let key = SoftwareAuditKey::new([1; 32]);
        let base = event()
            .sensitive(&key, "memo", b"payroll")
            .unwrap()
            .seal(5, 1000, [9; 32])
            .unwrap();
        let mut variants = Vec::new();
        let mut e = base.clone();
        e.seq = 6;
        variants.push(e);
        let mut e = base.clone();
        e.time_unix_ms = 1001;
        variants.push(e);
        let mut e = base.clone();
        e.node_id = "node-2".into();
        variants.push(e);
        let mut e = base.clone();
        e.kind = "vote_cast".into();
        variants.push(e);
        let mut e = base.clone();
        e.request_id = None;
        variants.push(e);
        let mut e = base.clone();
        e.fields.insert("spend_sat".into(), json!(150_001));
        variants.push(e);
        let mut e = base.clone();
        e.hmacs.insert("memo".into(), [0; 32]);
        variants.push(e);
        let mut e = base.clone();
        e.prev_hash = [8; 32];
        variants.push(e);
        for v in variants {
            assert_ne!(v.compute_hash().unwrap(), base.hash, "{v:?}");
        }
    }

    #[test]
    fn json_round_trip_keeps_the_hash() {
        let entry = event().seal(3, 42, [1; 32]).unwrap();
        let text = serde_json::to_string(&entry).unwrap();
        let back: AuditEntry = serde_json::from_str(&text).unwrap();
        assert_eq!(back, entry);
        assert_eq!(back.compute_hash().unwrap(), entry.hash);
        // Key order and whitespace of the JSON do not matter, only the values.
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["fields"] = json!({"spend_sat": 150_000, "outputs": [{"value_sat": 1, "address": "tb1q"}], "key_id": "k1"});
        let back: AuditEntry = serde_json::from_str(&format!("{v:#}")).unwrap();
        assert_eq!(back.compute_hash().unwrap(), entry.hash);
    }

    #[test]
    fn bad_events_are_refused() {
        let err = event().field("Bad", 1).seal(0, 0, GENESIS_PREV_HASH);
        assert!(matches!(
            err,
            Err(FormatError::BadName { what: "field", .. })
        ));
        let err = event().field("x", 1.5).seal(0, 0, GENESIS_PREV_HASH);
        assert!(matches!(err, Err(FormatError::NotAnInteger { .. })));
        let key = SoftwareAuditKey::new([1; 32]);
        let err = event()
            .sensitive(&key, "key_id", b"x")
            .unwrap()
            .seal(0, 0, GENESIS_PREV_HASH);
        assert_eq!(err, Err(FormatError::DuplicateName("key_id".into())));
        let err = AuditEvent::new("node 1", EventKind::NodeStarted).seal(0, 0, GENESIS_PREV_HASH);
        assert!(matches!(err, Err(FormatError::BadNodeId { .. })));
        let err = event().request("").seal(0, 0, GENESIS_PREV_HASH);
        assert_eq!(err, Err(FormatError::BadRequestId));
    }

    #[test]
    fn unknown_members_and_uppercase_hex_are_refused() {
        let entry = event().seal(0, 0, GENESIS_PREV_HASH).unwrap();
        let mut v = serde_json::to_value(&entry).unwrap();
        v["extra"] = json!(1);
        assert!(serde_json::from_value::<AuditEntry>(v).is_err());
        let mut v = serde_json::to_value(&entry).unwrap();
        v["hash"] = json!(hex::encode_upper(entry.hash));
        assert!(serde_json::from_value::<AuditEntry>(v).is_err());
    }
}
