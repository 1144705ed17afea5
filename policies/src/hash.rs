//! The policy hash: SHA-256 over a canonical binary encoding of the validated policy.
//!
//! The hash is computed from what the policy means, not from the file's bytes, so layout,
//! comments, the order of TOML keys and tables, and the order of set-like lists (key names
//! and ids, addresses, initiator names and roles, days, group members) do not change it. Everything
//! that appears in a decision or changes one does: the id, the description, approvers and
//! their keys, groups, and every rule with its name, position, conditions and action.
//!
//! # Encoding (format version 1)
//!
//! Primitives: `u8`, `u16`, `u32` and `u64` are big-endian; a string is its UTF-8 length as
//! `u64` then its bytes; a list or set is its element count as `u64` then the elements (sets
//! in ascending byte order); an optional value is `0x00` when absent, or `0x01` then the value.
//! Bounds are `optional u64 min` then `optional u64 max`.
//!
//! ```text
//! "strongroom-policy" 0x00        domain tag (18 bytes)
//! u32 format version              1
//! string id, optional string description
//! list of approvers, by name:     string name, 32-byte Ed25519 public key
//! list of groups, by name:        string name, set of string members
//! list of rules, in file order:   string name, conditions, action
//!
//! conditions, every one in this order:
//!   optional set of string        keys                    (names as written, ids lowercased)
//!   optional (set names, set roles)  initiator
//!   optional set of string        any_output_to           (bech32 addresses lowercased)
//!   optional set of string        external_outputs_only_to (bech32 addresses lowercased)
//!   u8 0 or 1                     own_outputs_only
//!   optional bounds               amount_sat
//!   optional (u64 seconds, bounds) rolling_amount_sat
//!   optional bounds               fee_sat
//!   optional bounds               fee_rate_sat_per_vb
//!   optional bounds               output_count
//!   optional (optional u8 day mask, optional (u16 from, u16 until))  utc_time
//!     day mask: bit 0 Monday … bit 6 Sunday; times in minutes after 00:00
//!
//! action: u8 0 allow | u8 1 deny, string reason | u8 2 require_approvals, string group, u32 k
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::model::{Action, Bounds, Conditions, FORMAT_VERSION, Policy};

/// The SHA-256 hash of a policy's canonical encoding. Displayed and serialized as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyHash([u8; 32]);

impl PolicyHash {
    /// Wraps 32 hash bytes (e.g. from a peer's vote).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The hash bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash as 64 lowercase hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PolicyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyHash({})", self.to_hex())
    }
}

/// A policy hash that is not 64 hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a policy hash is 64 hex characters (32 bytes), got {0:?}")]
pub struct PolicyHashParseError(String);

impl FromStr for PolicyHash {
    type Err = PolicyHashParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes)
            .map_err(|_| PolicyHashParseError(text.to_owned()))?;
        Ok(Self(bytes))
    }
}

impl Serialize for PolicyHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PolicyHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The domain tag that starts every canonical encoding.
const DOMAIN: &[u8] = b"strongroom-policy\0";

pub(crate) fn compute(policy: &Policy) -> PolicyHash {
    PolicyHash(Sha256::digest(canonical_bytes(policy)).into())
}

pub(crate) fn canonical_bytes(policy: &Policy) -> Vec<u8> {
    let mut out = Encoder(Vec::with_capacity(1024));
    out.bytes(DOMAIN);
    out.u32(FORMAT_VERSION);
    out.str(&policy.id);
    out.option(policy.description.as_deref(), |out, text| out.str(text));
    out.len(policy.approvers.len());
    for approver in policy.approvers.values() {
        out.str(&approver.name);
        out.bytes(approver.public_key.as_bytes());
    }
    out.len(policy.groups.len());
    for (name, members) in &policy.groups {
        out.str(name);
        out.set(members);
    }
    out.len(policy.rules.len());
    for rule in &policy.rules {
        out.str(&rule.name);
        conditions(&mut out, &rule.conditions);
        match &rule.action {
            Action::Allow => out.u8(0),
            Action::Deny { reason } => {
                out.u8(1);
                out.str(reason);
            }
            Action::RequireApprovals { group, approvals } => {
                out.u8(2);
                out.str(group);
                out.u32(*approvals);
            }
        }
    }
    out.0
}

fn conditions(out: &mut Encoder, c: &Conditions) {
    out.option(c.keys.as_ref(), Encoder::set);
    out.option(c.initiator.as_ref(), |out, initiator| {
        out.set(&initiator.names);
        out.set(&initiator.roles);
    });
    out.option(c.any_output_to.as_ref(), Encoder::set);
    out.option(c.external_outputs_only_to.as_ref(), Encoder::set);
    out.u8(u8::from(c.own_outputs_only));
    out.option(c.amount_sat.as_ref(), Encoder::bounds);
    out.option(c.rolling_amount_sat.as_ref(), |out, window| {
        out.u64(window.seconds);
        out.bounds(&window.bounds);
    });
    out.option(c.fee_sat.as_ref(), Encoder::bounds);
    out.option(c.fee_rate_sat_per_vb.as_ref(), Encoder::bounds);
    out.option(c.output_count.as_ref(), Encoder::bounds);
    out.option(c.utc_time.as_ref(), |out, window| {
        out.option(window.days.as_ref(), |out, days| {
            let mask = days
                .iter()
                .fold(0u8, |mask, day| mask | (1 << day.monday_index()));
            out.u8(mask);
        });
        out.option(window.hours.as_ref(), |out, hours| {
            out.u16(hours.from_minute);
            out.u16(hours.until_minute);
        });
    });
}

struct Encoder(Vec<u8>);

impl Encoder {
    fn bytes(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn u8(&mut self, value: u8) {
        self.0.push(value);
    }

    fn u16(&mut self, value: u16) {
        self.bytes(&value.to_be_bytes());
    }

    fn u32(&mut self, value: u32) {
        self.bytes(&value.to_be_bytes());
    }

    fn u64(&mut self, value: u64) {
        self.bytes(&value.to_be_bytes());
    }

    fn len(&mut self, len: usize) {
        // usize is at most 64 bits on every supported target.
        self.u64(len as u64);
    }

    fn str(&mut self, text: &str) {
        self.len(text.len());
        self.bytes(text.as_bytes());
    }

    fn set(&mut self, set: &BTreeSet<String>) {
        self.len(set.len());
        for item in set {
            self.str(item);
        }
    }

    fn bounds(&mut self, bounds: &Bounds) {
        self.option(bounds.min, |out, min| out.u64(min));
        self.option(bounds.max, |out, max| out.u64(max));
    }

    fn option<T>(&mut self, value: Option<T>, encode: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.u8(0),
            Some(value) => {
                self.u8(1);
                encode(self, value);
            }
        }
    }
}
