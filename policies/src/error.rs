//! Errors: loading a policy, verifying an approval, and an inconsistent transaction summary.

use std::path::PathBuf;

use crate::model::RuleRef;

/// Why a policy file was refused. Every variant names where the problem is (the rule by index
/// and name, the field) and how to fix it; a refused file is never partly applied.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file could not be read from disk.
    #[error("cannot read policy file {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// The text is not TOML, or does not have the shape of a policy: an unknown field (a typo
    /// must not silently widen a policy), a missing field, or a value of the wrong type. The
    /// message names the line and column.
    #[error("policy file is malformed: {0}")]
    Syntax(#[source] toml::de::Error),

    /// The file has no `version` field.
    #[error("policy file has no `version`; add `version = {supported}` as its first line")]
    MissingVersion {
        /// The version this build reads.
        supported: u32,
    },

    /// The file's `version` is not one this build reads.
    #[error(
        "policy file has `version = {found}`, but this build reads only version {supported}; \
         run a strongroom release that reads version {found}, or rewrite the file for version {supported}"
    )]
    UnsupportedVersion {
        /// The `version` value found in the file, as written.
        found: String,
        /// The version this build reads.
        supported: u32,
    },

    /// The policy `id` is empty or uses characters outside the allowed set.
    #[error(
        "policy `id = {id:?}` is invalid: use 1 to 64 characters from a-z, A-Z, 0-9, '.', '_', '-'"
    )]
    InvalidId {
        /// The id as written.
        id: String,
    },

    /// A name (of an approver, a group or a rule) is empty or has leading or trailing whitespace.
    #[error(
        "{what}: name {name:?} is invalid; use a non-empty name without leading or trailing spaces"
    )]
    InvalidName {
        /// Which item carries the name, e.g. `approvers[2]` or `rules[0]`.
        what: String,
        /// The name as written.
        name: String,
    },

    /// Two `[[approvers]]` entries have the same name.
    #[error("approver '{name}' is listed twice under [[approvers]]; remove one or rename it")]
    DuplicateApprover {
        /// The repeated name.
        name: String,
    },

    /// An approver's `public_key` is not a usable Ed25519 public key.
    #[error(
        "approver '{approver}': `public_key` {problem}; \
         expected 64 hex characters encoding an Ed25519 public key"
    )]
    InvalidPublicKey {
        /// The approver whose key is wrong.
        approver: String,
        /// What is wrong with it.
        problem: String,
    },

    /// Two approvers share one public key, so one signature would count as two approvals.
    #[error(
        "approvers '{first}' and '{second}' have the same `public_key`; \
         give each approver their own key"
    )]
    DuplicatePublicKey {
        /// The first approver (by name order) with the key.
        first: String,
        /// The second approver with the key.
        second: String,
    },

    /// An approver group has no members.
    #[error("group '{group}' has no members; list approver names or remove the group")]
    EmptyGroup {
        /// The empty group.
        group: String,
    },

    /// An approver group lists a name that is not under `[[approvers]]`.
    #[error(
        "group '{group}' lists '{member}', who is not under [[approvers]]; \
         add the approver or fix the name"
    )]
    UnknownGroupMember {
        /// The group.
        group: String,
        /// The unknown name.
        member: String,
    },

    /// An approver group lists the same member twice.
    #[error("group '{group}' lists '{member}' twice; remove one")]
    DuplicateGroupMember {
        /// The group.
        group: String,
        /// The repeated member.
        member: String,
    },

    /// Two rules have the same name, so decisions naming the rule would be ambiguous.
    #[error(
        "{rule}: the name is already used by rules[{first_index}]; give every rule its own name"
    )]
    DuplicateRuleName {
        /// The later rule.
        rule: RuleRef,
        /// Position of the earlier rule with the same name.
        first_index: usize,
    },

    /// The rule's action needs a field that is missing (`reason` for `deny`; `group` and
    /// `approvals` for `require_approvals`).
    #[error("{rule}: `action = \"{action}\"` needs `{field}`; add it")]
    MissingActionField {
        /// The rule.
        rule: RuleRef,
        /// The action as written.
        action: &'static str,
        /// The missing field.
        field: &'static str,
    },

    /// The rule sets a field its action does not use (e.g. `reason` on `allow`).
    #[error("{rule}: `{field}` has no meaning with `action = \"{action}\"`; remove it")]
    UnexpectedActionField {
        /// The rule.
        rule: RuleRef,
        /// The action as written.
        action: &'static str,
        /// The field that does not belong.
        field: &'static str,
    },

    /// A `deny` rule has an empty `reason`.
    #[error(
        "{rule}: `reason` is empty; say why the rule denies, it is shown in votes and the audit log"
    )]
    EmptyReason {
        /// The rule.
        rule: RuleRef,
    },

    /// A `require_approvals` rule names a group that is not defined.
    #[error(
        "{rule}: `group = \"{group}\"` is not defined under [groups]; define it or fix the name"
    )]
    UnknownGroup {
        /// The rule.
        rule: RuleRef,
        /// The group as written.
        group: String,
    },

    /// A `require_approvals` rule asks for zero approvals or more than the group has members.
    #[error(
        "{rule}: `approvals = {approvals}` but group '{group}' has {members} member(s); \
         choose a number from 1 to {members}"
    )]
    ApprovalsOutOfRange {
        /// The rule.
        rule: RuleRef,
        /// The number asked for.
        approvals: u32,
        /// The group.
        group: String,
        /// How many members the group has.
        members: usize,
    },

    /// A condition is present but constrains nothing (bounds without `min` and `max`, an
    /// initiator without names or roles, a time window without days or hours).
    #[error(
        "{rule}: `when.{field}` sets none of {needs}; set at least one or remove the condition"
    )]
    EmptyCondition {
        /// The rule.
        rule: RuleRef,
        /// The condition, e.g. `amount_sat`.
        field: &'static str,
        /// What it may set.
        needs: &'static str,
    },

    /// Bounds with `min` greater than `max` can never hold.
    #[error("{rule}: `when.{field}` has min {min} above max {max}; swap or correct them")]
    InvertedBounds {
        /// The rule.
        rule: RuleRef,
        /// The condition.
        field: &'static str,
        /// The lower bound.
        min: u64,
        /// The upper bound.
        max: u64,
    },

    /// A rolling window of zero seconds.
    #[error(
        "{rule}: `when.rolling_amount_sat.seconds` is 0; use a window length in seconds, e.g. 86400 for a day"
    )]
    ZeroWindow {
        /// The rule.
        rule: RuleRef,
    },

    /// A list condition is empty.
    #[error(
        "{rule}: `when.{field}` is an empty list; list at least one entry or remove the condition"
    )]
    EmptyList {
        /// The rule.
        rule: RuleRef,
        /// The condition.
        field: &'static str,
    },

    /// A list condition has an empty entry.
    #[error("{rule}: `when.{field}` has an empty entry; remove it")]
    EmptyEntry {
        /// The rule.
        rule: RuleRef,
        /// The condition.
        field: &'static str,
    },

    /// A list condition repeats an entry (often a sign of a copy-and-paste mistake).
    #[error("{rule}: `when.{field}` lists {entry:?} twice; remove one")]
    DuplicateEntry {
        /// The rule.
        rule: RuleRef,
        /// The condition.
        field: &'static str,
        /// The repeated entry.
        entry: String,
    },

    /// An address in a destination list is malformed.
    #[error(
        "{rule}: `when.{field}` entry {address:?} {problem}; write the address as the wallet shows it"
    )]
    InvalidAddress {
        /// The rule.
        rule: RuleRef,
        /// The condition.
        field: &'static str,
        /// The address as written.
        address: String,
        /// What is wrong with it.
        problem: &'static str,
    },

    /// `own_outputs_only = false`, which would constrain nothing.
    #[error(
        "{rule}: `when.own_outputs_only = false` is not a condition; remove the line (only `true` restricts)"
    )]
    OwnOutputsOnlyFalse {
        /// The rule.
        rule: RuleRef,
    },

    /// A time of day is not `HH:MM`.
    #[error(
        "{rule}: `when.utc_time.{field} = {value:?}` is not a time of day; \
         write \"HH:MM\" from 00:00 to 23:59 (`until` may also be \"24:00\")"
    )]
    InvalidTimeOfDay {
        /// The rule.
        rule: RuleRef,
        /// `from` or `until`.
        field: &'static str,
        /// The value as written.
        value: String,
    },

    /// Only one of `from` and `until` is set.
    #[error(
        "{rule}: `when.utc_time` sets only one of `from` and `until`; set both, or neither for the whole day"
    )]
    HalfOpenHours {
        /// The rule.
        rule: RuleRef,
    },

    /// `from` equals `until`, which is ambiguous (empty or the whole day).
    #[error("{rule}: `when.utc_time` has `from` equal to `until`; remove both for the whole day")]
    AmbiguousHours {
        /// The rule.
        rule: RuleRef,
    },
}

/// Why an approval was refused. The caller logs it; a refused approval never counts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// The policy has no approver with that name.
    #[error(
        "policy '{policy}' has no approver named '{approver}'; check the name against the policy's [[approvers]]"
    )]
    UnknownApprover {
        /// The policy's id.
        policy: String,
        /// The name the approval claimed.
        approver: String,
    },

    /// The signature is not 64 bytes long.
    #[error(
        "approval by '{approver}': the signature is {len} bytes, an Ed25519 signature is 64 (128 hex characters)"
    )]
    MalformedSignature {
        /// The claimed approver.
        approver: String,
        /// The length received.
        len: usize,
    },

    /// The signature does not verify over the request digest with the approver's key.
    #[error(
        "approval by '{approver}': the signature does not verify over this request's digest with the key \
         policy '{policy}' lists for '{approver}'; sign this request's digest with that approver's key"
    )]
    BadSignature {
        /// The claimed approver.
        approver: String,
        /// The policy's id.
        policy: String,
    },
}

/// Why a transaction summary is inconsistent. [`crate::evaluate`] denies such a summary; the
/// bitcoin layer that builds summaries can call [`crate::TxSummary::check`] itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    /// The transaction has no outputs.
    #[error("the transaction has no outputs")]
    NoOutputs,
    /// The transaction has no inputs.
    #[error("the transaction has no inputs")]
    NoInputs,
    /// The virtual size is zero, so there is no fee rate.
    #[error("the virtual size is 0 vB")]
    ZeroVsize,
    /// An amount exceeds the 21 million bitcoin that can exist.
    #[error("{field} is {amount} sat, more than the 2,100,000,000,000,000 sat that can exist")]
    AmountOutOfRange {
        /// Which amount, e.g. `outputs[1].amount_sat`.
        field: String,
        /// The amount.
        amount: u128,
    },
    /// Inputs do not equal outputs plus fee.
    #[error("inputs ({inputs} sat) do not equal outputs ({outputs} sat) plus fee ({fee} sat)")]
    DoesNotAddUp {
        /// Total of the inputs.
        inputs: u64,
        /// Total of the outputs.
        outputs: u128,
        /// The fee.
        fee: u64,
    },
}
