//! The validated policy: what a policy file means once it has been parsed and checked.
//!
//! A [`Policy`] can only be obtained from [`Policy::from_toml_str`] or [`Policy::load`], so
//! every policy in memory has passed validation: groups exist, thresholds fit their groups,
//! windows are non-empty, bounds are ordered, keys are valid Ed25519 points.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::hash::PolicyHash;

/// The policy file format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Length of a key id: 32 bytes, hex.
pub const KEY_ID_HEX_LEN: usize = 64;

/// Whether a `keys` entry names a key by its id (exactly [`KEY_ID_HEX_LEN`] hex digits, either
/// case) rather than by its name.
pub fn is_key_id(entry: &str) -> bool {
    entry.len() == KEY_ID_HEX_LEN && entry.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A validated policy: approvers, approver groups and the ordered rule list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub(crate) id: String,
    pub(crate) description: Option<String>,
    pub(crate) approvers: BTreeMap<String, Approver>,
    pub(crate) groups: BTreeMap<String, BTreeSet<String>>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) hash: PolicyHash,
}

impl Policy {
    /// Parses and validates a policy from the text of a policy file.
    pub fn from_toml_str(text: &str) -> Result<Self, PolicyError> {
        crate::file::parse(text)
    }

    /// Reads, parses and validates the policy file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text)
    }

    /// The policy's identifier (`id` in the file).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The free-text description, if the file has one.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The format version of the policy (always [`FORMAT_VERSION`] for a loaded policy).
    pub fn version(&self) -> u32 {
        FORMAT_VERSION
    }

    /// The SHA-256 hash of the policy's canonical encoding (see [`crate::hash`]).
    ///
    /// Two files that differ only in layout, comments, key order or the order of set-like
    /// lists hash the same; every change to what the policy decides changes the hash.
    pub fn hash(&self) -> PolicyHash {
        self.hash
    }

    /// The canonical encoding the hash is computed over.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        crate::hash::canonical_bytes(self)
    }

    /// The rules, in the order they are tried.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The approver with this name, if the policy lists one.
    pub fn approver(&self, name: &str) -> Option<&Approver> {
        self.approvers.get(name)
    }

    /// Every approver, ordered by name.
    pub fn approvers(&self) -> impl Iterator<Item = &Approver> {
        self.approvers.values()
    }

    /// The members of the approver group with this name, ordered by name.
    pub fn group(&self, name: &str) -> Option<&BTreeSet<String>> {
        self.groups.get(name)
    }

    /// Every approver group and its members, ordered by group name.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.groups
            .iter()
            .map(|(name, members)| (name.as_str(), members))
    }

    /// The longest rolling window any rule uses, in seconds.
    ///
    /// The caller must put into [`crate::Context::window_history`] every signed spend of the
    /// key from at least this far back; `None` means no rule looks at the history.
    pub fn longest_window(&self) -> Option<u64> {
        self.rules
            .iter()
            .filter_map(|rule| rule.conditions.rolling_amount_sat.as_ref())
            .map(|window| window.seconds)
            .max()
    }
}

/// A person (or their signing device) whose Ed25519 signature counts as an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approver {
    pub(crate) name: String,
    pub(crate) public_key: VerifyingKey,
}

impl Approver {
    /// The approver's name, unique within the policy.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The approver's Ed25519 public key.
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }
}

/// Names a rule in decisions and errors: its zero-based position in the rule list and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleRef {
    /// Zero-based position of the rule in the policy file (`rules[index]`).
    pub index: usize,
    /// The rule's `name`.
    pub name: String,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rules[{}] '{}'", self.index, self.name)
    }
}

/// One rule: when every present condition holds, its action decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's name, unique within the policy.
    pub name: String,
    /// The conditions; a rule without conditions matches every transaction.
    pub conditions: Conditions,
    /// What the rule decides when it matches.
    pub action: Action,
}

/// The conditions of a rule. Every condition that is present must hold for the rule to match;
/// an absent condition does not constrain anything.
///
/// Amounts are in satoshis. The *spend amount* of a transaction is the sum of its outputs that
/// are not change (not paying back to the key's own descriptors).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conditions {
    /// Holds when the signing key is one of these. An entry of 64 hex digits (see
    /// [`is_key_id`]) names a key by its id; any other entry names a key by its
    /// operator-chosen name ([`crate::TxSummary::key_name`]). So a key whose name happens to
    /// look like an id can never match a rule written for the key with that id.
    pub keys: Option<BTreeSet<String>>,
    /// Holds when the initiating client is named here or has one of the roles listed here.
    pub initiator: Option<InitiatorMatch>,
    /// Denylist: holds when **any** output (change included) pays one of these addresses.
    pub any_output_to: Option<BTreeSet<String>>,
    /// Allowlist: holds when **every** output that is not change pays one of these addresses
    /// (also when there is no such output).
    pub external_outputs_only_to: Option<BTreeSet<String>>,
    /// When `true`, holds only when every output is change (pays the key's own descriptors).
    pub own_outputs_only: bool,
    /// Holds when the spend amount is within the bounds.
    pub amount_sat: Option<Bounds>,
    /// Holds when the key's spend amounts signed within the window, plus this spend amount,
    /// are within the bounds.
    pub rolling_amount_sat: Option<RollingWindow>,
    /// Holds when the absolute fee is within the bounds.
    pub fee_sat: Option<Bounds>,
    /// Holds when the fee rate, in sat/vB **rounded up** to a whole number, is within the
    /// bounds. Because of the rounding, `max = N` holds exactly when the rate is at most N,
    /// and `min = N + 1` holds exactly when the rate is above N.
    pub fee_rate_sat_per_vb: Option<Bounds>,
    /// Holds when the number of outputs (change included) is within the bounds.
    pub output_count: Option<Bounds>,
    /// Holds when the evaluation time falls into the UTC time window.
    pub utc_time: Option<TimeWindow>,
}

/// Which initiating clients a rule applies to. At least one of the sets is non-empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitiatorMatch {
    /// Client names (from the client certificate) that match.
    pub names: BTreeSet<String>,
    /// Client roles (from node configuration) that match.
    pub roles: BTreeSet<String>,
}

/// Inclusive bounds on a quantity: `min <= value <= max`; an absent bound is open.
/// At least one bound is present, and `min <= max` when both are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    /// Smallest value that satisfies the bounds.
    pub min: Option<u64>,
    /// Largest value that satisfies the bounds.
    pub max: Option<u64>,
}

impl Bounds {
    /// Whether `value` lies within the bounds (both ends inclusive).
    pub fn contains(&self, value: u128) -> bool {
        self.min.is_none_or(|min| value >= u128::from(min))
            && self.max.is_none_or(|max| value <= u128::from(max))
    }
}

/// Bounds on the amount a key spends over a rolling window of time.
///
/// A history entry signed at time `t` is inside the window evaluated at `now` when
/// `now - t < seconds`: an entry exactly `seconds` old is outside, one a second younger is
/// inside. Entries dated after `now` (clock skew between nodes) count as inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingWindow {
    /// Window length in seconds; greater than zero.
    pub seconds: u64,
    /// Bounds on (history inside the window + this spend amount).
    pub bounds: Bounds,
}

/// A recurring UTC time window: days of the week and a daily span of hours.
///
/// When the span wraps midnight (`from` later than `until`), the part after midnight belongs
/// to the day the span started: with `days = ["fri"]` and `22:00`–`06:00`, Saturday 02:00 is
/// inside and Friday 02:00 is not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// Days on which the window opens; `None` means every day.
    pub days: Option<BTreeSet<Weekday>>,
    /// Daily span; `None` means the whole day.
    pub hours: Option<DailyHours>,
}

/// A daily span of time, `from` inclusive, `until` exclusive, in minutes after 00:00 UTC.
/// `from` and `until` differ; `from > until` wraps midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyHours {
    /// First minute inside the span (0..=1439).
    pub from_minute: u16,
    /// First minute after the span (0..=1440; 1440 is written `24:00`).
    pub until_minute: u16,
}

/// A day of the week, written `mon` … `sun` in policy files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Weekday {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Weekday {
    /// The UTC weekday of a unix time in seconds (1970-01-01 was a Thursday).
    pub fn of_unix_time(seconds: u64) -> Self {
        Self::from_monday_index((seconds / 86_400 + 3) % 7)
    }

    /// The day before this one.
    pub fn previous(self) -> Self {
        Self::from_monday_index((self.monday_index() + 6) % 7)
    }

    /// 0 for Monday … 6 for Sunday.
    pub(crate) fn monday_index(self) -> u64 {
        match self {
            Self::Mon => 0,
            Self::Tue => 1,
            Self::Wed => 2,
            Self::Thu => 3,
            Self::Fri => 4,
            Self::Sat => 5,
            Self::Sun => 6,
        }
    }

    fn from_monday_index(index: u64) -> Self {
        match index {
            0 => Self::Mon,
            1 => Self::Tue,
            2 => Self::Wed,
            3 => Self::Thu,
            4 => Self::Fri,
            5 => Self::Sat,
            // Callers pass a value reduced modulo 7, so this arm is index 6.
            _ => Self::Sun,
        }
    }
}

/// What a matching rule decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Vote to sign.
    Allow,
    /// Vote against signing, giving a reason.
    Deny {
        /// Why, in words an operator reads in the vote and the audit log.
        reason: String,
    },
    /// Vote to sign once enough distinct approvers of a group have approved the request.
    RequireApprovals {
        /// The approver group whose members may approve.
        group: String,
        /// How many distinct members must approve (1 ≤ approvals ≤ group size).
        approvals: u32,
    },
}
