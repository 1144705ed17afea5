//! The policy file (TOML) and its validation into a [`Policy`].
//!
//! The file structures mirror the TOML one to one and reject unknown fields, so a misspelt
//! condition is an error instead of a rule that silently matches more than intended. They are
//! then checked and turned into the model; a file is accepted whole or not at all.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::error::PolicyError;
use crate::hash::{self, PolicyHash};
use crate::model::{
    Action, Approver, Bounds, Conditions, DailyHours, FORMAT_VERSION, InitiatorMatch, Policy,
    RollingWindow, Rule, RuleRef, TimeWindow, Weekday, is_key_id,
};

/// Reads only `version`, ignoring everything else, so that a file of another version is
/// refused for its version rather than for fields this build does not know.
#[derive(Deserialize)]
struct VersionProbe {
    version: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[allow(dead_code, reason = "checked by VersionProbe before the full parse")]
    version: u32,
    id: String,
    description: Option<String>,
    #[serde(default)]
    approvers: Vec<RawApprover>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApprover {
    name: String,
    public_key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    action: RawAction,
    reason: Option<String>,
    group: Option<String>,
    approvals: Option<u32>,
    #[serde(default)]
    when: RawConditions,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawAction {
    Allow,
    Deny,
    RequireApprovals,
}

impl RawAction {
    fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::RequireApprovals => "require_approvals",
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConditions {
    keys: Option<Vec<String>>,
    initiator: Option<RawInitiator>,
    any_output_to: Option<Vec<String>>,
    external_outputs_only_to: Option<Vec<String>>,
    own_outputs_only: Option<bool>,
    amount_sat: Option<RawBounds>,
    rolling_amount_sat: Option<RawWindow>,
    fee_sat: Option<RawBounds>,
    fee_rate_sat_per_vb: Option<RawBounds>,
    output_count: Option<RawBounds>,
    utc_time: Option<RawTime>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitiator {
    names: Option<Vec<String>>,
    roles: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBounds {
    min: Option<u64>,
    max: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    seconds: u64,
    min: Option<u64>,
    max: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    days: Option<Vec<Weekday>>,
    from: Option<String>,
    until: Option<String>,
}

pub(crate) fn parse(text: &str) -> Result<Policy, PolicyError> {
    let probe: VersionProbe = toml::from_str(text).map_err(PolicyError::Syntax)?;
    match probe.version {
        None => {
            return Err(PolicyError::MissingVersion {
                supported: FORMAT_VERSION,
            });
        }
        Some(toml::Value::Integer(found)) if found == i64::from(FORMAT_VERSION) => {}
        Some(other) => {
            return Err(PolicyError::UnsupportedVersion {
                found: other.to_string(),
                supported: FORMAT_VERSION,
            });
        }
    }
    let raw: RawPolicy = toml::from_str(text).map_err(PolicyError::Syntax)?;
    validate(raw)
}

fn validate(raw: RawPolicy) -> Result<Policy, PolicyError> {
    if !valid_id(&raw.id) {
        return Err(PolicyError::InvalidId { id: raw.id });
    }

    let mut approvers = BTreeMap::new();
    let mut key_owner: BTreeMap<[u8; 32], String> = BTreeMap::new();
    for (index, entry) in raw.approvers.into_iter().enumerate() {
        check_name(&entry.name, || format!("approvers[{index}]"))?;
        if approvers.contains_key(&entry.name) {
            return Err(PolicyError::DuplicateApprover { name: entry.name });
        }
        let public_key = parse_public_key(&entry.name, &entry.public_key)?;
        if let Some(first) = key_owner.insert(public_key.to_bytes(), entry.name.clone()) {
            return Err(PolicyError::DuplicatePublicKey {
                first,
                second: entry.name,
            });
        }
        approvers.insert(
            entry.name.clone(),
            Approver {
                name: entry.name,
                public_key,
            },
        );
    }

    let mut groups = BTreeMap::new();
    for (group, members) in raw.groups {
        check_name(&group, || format!("groups.{group:?}"))?;
        if members.is_empty() {
            return Err(PolicyError::EmptyGroup { group });
        }
        let mut set = BTreeSet::new();
        for member in members {
            if !approvers.contains_key(&member) {
                return Err(PolicyError::UnknownGroupMember { group, member });
            }
            if !set.insert(member.clone()) {
                return Err(PolicyError::DuplicateGroupMember { group, member });
            }
        }
        groups.insert(group, set);
    }

    let mut rules = Vec::with_capacity(raw.rules.len());
    let mut rule_names: BTreeMap<String, usize> = BTreeMap::new();
    for (index, rule) in raw.rules.into_iter().enumerate() {
        let at = RuleRef {
            index,
            name: rule.name.clone(),
        };
        check_name(&rule.name, || format!("rules[{index}]"))?;
        if let Some(&first_index) = rule_names.get(&rule.name) {
            return Err(PolicyError::DuplicateRuleName {
                rule: at,
                first_index,
            });
        }
        rule_names.insert(rule.name.clone(), index);
        let action = action(&at, &rule, &groups)?;
        let conditions = conditions(&at, rule.when)?;
        rules.push(Rule {
            name: rule.name,
            conditions,
            action,
        });
    }

    let mut policy = Policy {
        id: raw.id,
        description: raw.description,
        approvers,
        groups,
        rules,
        hash: PolicyHash::from_bytes([0; 32]),
    };
    policy.hash = hash::compute(&policy);
    Ok(policy)
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_name(name: &str, what: impl FnOnce() -> String) -> Result<(), PolicyError> {
    if name.is_empty() || name.trim() != name {
        return Err(PolicyError::InvalidName {
            what: what(),
            name: name.to_owned(),
        });
    }
    Ok(())
}

fn parse_public_key(approver: &str, text: &str) -> Result<VerifyingKey, PolicyError> {
    let problem = |problem: &str| PolicyError::InvalidPublicKey {
        approver: approver.to_owned(),
        problem: problem.to_owned(),
    };
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).map_err(|_| {
        problem(&format!(
            "is {} characters of which not all are hex",
            text.len()
        ))
    })?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|_| problem("is not a point on Ed25519"))?;
    if key.is_weak() {
        return Err(problem(
            "is a small-order point, for which signatures prove nothing",
        ));
    }
    Ok(key)
}

fn action(
    at: &RuleRef,
    rule: &RawRule,
    groups: &BTreeMap<String, BTreeSet<String>>,
) -> Result<Action, PolicyError> {
    let kind = rule.action.as_str();
    let missing = |field| PolicyError::MissingActionField {
        rule: at.clone(),
        action: kind,
        field,
    };
    let unexpected = |field| PolicyError::UnexpectedActionField {
        rule: at.clone(),
        action: kind,
        field,
    };
    let forbid = |present: bool, field| {
        if present {
            Err(unexpected(field))
        } else {
            Ok(())
        }
    };
    match rule.action {
        RawAction::Allow => {
            forbid(rule.reason.is_some(), "reason")?;
            forbid(rule.group.is_some(), "group")?;
            forbid(rule.approvals.is_some(), "approvals")?;
            Ok(Action::Allow)
        }
        RawAction::Deny => {
            forbid(rule.group.is_some(), "group")?;
            forbid(rule.approvals.is_some(), "approvals")?;
            let reason = rule.reason.clone().ok_or_else(|| missing("reason"))?;
            if reason.trim().is_empty() {
                return Err(PolicyError::EmptyReason { rule: at.clone() });
            }
            Ok(Action::Deny { reason })
        }
        RawAction::RequireApprovals => {
            forbid(rule.reason.is_some(), "reason")?;
            let group = rule.group.clone().ok_or_else(|| missing("group"))?;
            let approvals = rule.approvals.ok_or_else(|| missing("approvals"))?;
            let Some(members) = groups.get(&group) else {
                return Err(PolicyError::UnknownGroup {
                    rule: at.clone(),
                    group,
                });
            };
            let fits = usize::try_from(approvals).is_ok_and(|k| (1..=members.len()).contains(&k));
            if !fits {
                return Err(PolicyError::ApprovalsOutOfRange {
                    rule: at.clone(),
                    approvals,
                    group,
                    members: members.len(),
                });
            }
            Ok(Action::RequireApprovals { group, approvals })
        }
    }
}

fn conditions(at: &RuleRef, raw: RawConditions) -> Result<Conditions, PolicyError> {
    let initiator = match raw.initiator {
        None => None,
        Some(initiator) => {
            if initiator.names.is_none() && initiator.roles.is_none() {
                return Err(PolicyError::EmptyCondition {
                    rule: at.clone(),
                    field: "initiator",
                    needs: "`names`, `roles`",
                });
            }
            let names = initiator
                .names
                .map(|names| set(at, "initiator.names", names));
            let roles = initiator
                .roles
                .map(|roles| set(at, "initiator.roles", roles));
            Some(InitiatorMatch {
                names: names.transpose()?.unwrap_or_default(),
                roles: roles.transpose()?.unwrap_or_default(),
            })
        }
    };
    let own_outputs_only = match raw.own_outputs_only {
        None | Some(true) => raw.own_outputs_only.is_some(),
        Some(false) => return Err(PolicyError::OwnOutputsOnlyFalse { rule: at.clone() }),
    };
    let rolling_amount_sat = match raw.rolling_amount_sat {
        None => None,
        Some(window) => {
            if window.seconds == 0 {
                return Err(PolicyError::ZeroWindow { rule: at.clone() });
            }
            let raw_bounds = RawBounds {
                min: window.min,
                max: window.max,
            };
            let bounds = bounds(at, "rolling_amount_sat", raw_bounds)?;
            Some(RollingWindow {
                seconds: window.seconds,
                bounds,
            })
        }
    };
    Ok(Conditions {
        keys: raw.keys.map(|keys| key_entries(at, keys)).transpose()?,
        initiator,
        any_output_to: raw
            .any_output_to
            .map(|list| addresses(at, "any_output_to", list))
            .transpose()?,
        external_outputs_only_to: raw
            .external_outputs_only_to
            .map(|list| addresses(at, "external_outputs_only_to", list))
            .transpose()?,
        own_outputs_only,
        amount_sat: raw
            .amount_sat
            .map(|b| bounds(at, "amount_sat", b))
            .transpose()?,
        rolling_amount_sat,
        fee_sat: raw.fee_sat.map(|b| bounds(at, "fee_sat", b)).transpose()?,
        fee_rate_sat_per_vb: raw
            .fee_rate_sat_per_vb
            .map(|b| bounds(at, "fee_rate_sat_per_vb", b))
            .transpose()?,
        output_count: raw
            .output_count
            .map(|b| bounds(at, "output_count", b))
            .transpose()?,
        utc_time: raw.utc_time.map(|time| time_window(at, time)).transpose()?,
    })
}

fn set(
    at: &RuleRef,
    field: &'static str,
    list: Vec<String>,
) -> Result<BTreeSet<String>, PolicyError> {
    if list.is_empty() {
        return Err(PolicyError::EmptyList {
            rule: at.clone(),
            field,
        });
    }
    let mut set = BTreeSet::new();
    for entry in list {
        if entry.trim().is_empty() {
            return Err(PolicyError::EmptyEntry {
                rule: at.clone(),
                field,
            });
        }
        if set.contains(&entry) {
            return Err(PolicyError::DuplicateEntry {
                rule: at.clone(),
                field,
                entry,
            });
        }
        set.insert(entry);
    }
    Ok(set)
}

/// Key names as the API stores them (trimmed), key ids in lowercase.
fn key_entries(at: &RuleRef, list: Vec<String>) -> Result<BTreeSet<String>, PolicyError> {
    let mut entries = Vec::with_capacity(list.len());
    for entry in list {
        // A name with stray spaces would never match: for a deny rule, that fails open.
        if entry.trim() != entry {
            return Err(PolicyError::InvalidName {
                what: format!("{at}: `when.keys`"),
                name: entry,
            });
        }
        entries.push(if is_key_id(&entry) {
            entry.to_ascii_lowercase()
        } else {
            entry
        });
    }
    set(at, "keys", entries)
}

fn addresses(
    at: &RuleRef,
    field: &'static str,
    list: Vec<String>,
) -> Result<BTreeSet<String>, PolicyError> {
    let mut normalized = Vec::with_capacity(list.len());
    for address in list {
        match normalize_address(&address) {
            Ok(canonical) => normalized.push(canonical),
            Err(problem) => {
                return Err(PolicyError::InvalidAddress {
                    rule: at.clone(),
                    field,
                    address,
                    problem,
                });
            }
        }
    }
    set(at, field, normalized)
}

/// Bech32 and bech32m (segwit) addresses are case-insensitive and are compared in lowercase;
/// base58 addresses are case-sensitive and compared as written.
pub(crate) fn canonical_address(address: &str) -> std::borrow::Cow<'_, str> {
    if is_segwit(address) && address.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(address.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(address)
    }
}

fn is_segwit(address: &str) -> bool {
    let lower = address.get(..5).unwrap_or(address).to_ascii_lowercase();
    ["bc1", "tb1", "bcrt1"]
        .iter()
        .any(|hrp| lower.starts_with(hrp))
}

fn normalize_address(address: &str) -> Result<String, &'static str> {
    if address.is_empty() {
        return Err("is empty");
    }
    if !address.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("contains spaces or characters that no address has");
    }
    if is_segwit(address) {
        let upper = address.bytes().any(|b| b.is_ascii_uppercase());
        let lower = address.bytes().any(|b| b.is_ascii_lowercase());
        if upper && lower {
            return Err("mixes upper and lower case, which bech32 addresses may not");
        }
    }
    Ok(canonical_address(address).into_owned())
}

fn bounds(at: &RuleRef, field: &'static str, raw: RawBounds) -> Result<Bounds, PolicyError> {
    match (raw.min, raw.max) {
        (None, None) => Err(PolicyError::EmptyCondition {
            rule: at.clone(),
            field,
            needs: "`min`, `max`",
        }),
        (Some(min), Some(max)) if min > max => Err(PolicyError::InvertedBounds {
            rule: at.clone(),
            field,
            min,
            max,
        }),
        (min, max) => Ok(Bounds { min, max }),
    }
}

fn time_window(at: &RuleRef, raw: RawTime) -> Result<TimeWindow, PolicyError> {
    let days = match raw.days {
        None => None,
        Some(days) => {
            if days.is_empty() {
                return Err(PolicyError::EmptyList {
                    rule: at.clone(),
                    field: "utc_time.days",
                });
            }
            let mut set = BTreeSet::new();
            for day in days {
                if !set.insert(day) {
                    return Err(PolicyError::DuplicateEntry {
                        rule: at.clone(),
                        field: "utc_time.days",
                        entry: format!("{day:?}").to_ascii_lowercase(),
                    });
                }
            }
            Some(set)
        }
    };
    let hours = match (raw.from, raw.until) {
        (None, None) => None,
        (Some(from), Some(until)) => {
            let from_minute =
                time_of_day(&from, false).ok_or_else(|| PolicyError::InvalidTimeOfDay {
                    rule: at.clone(),
                    field: "from",
                    value: from,
                })?;
            let until_minute =
                time_of_day(&until, true).ok_or_else(|| PolicyError::InvalidTimeOfDay {
                    rule: at.clone(),
                    field: "until",
                    value: until,
                })?;
            if from_minute == until_minute {
                return Err(PolicyError::AmbiguousHours { rule: at.clone() });
            }
            Some(DailyHours {
                from_minute,
                until_minute,
            })
        }
        _ => return Err(PolicyError::HalfOpenHours { rule: at.clone() }),
    };
    if days.is_none() && hours.is_none() {
        return Err(PolicyError::EmptyCondition {
            rule: at.clone(),
            field: "utc_time",
            needs: "`days`, `from` and `until`",
        });
    }
    Ok(TimeWindow { days, hours })
}

/// Parses `HH:MM` into minutes after midnight; `24:00` only when `allow_end_of_day`.
fn time_of_day(text: &str, allow_end_of_day: bool) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    if !hours
        .bytes()
        .chain(minutes.bytes())
        .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let hours: u16 = hours.parse().ok()?;
    let minutes: u16 = minutes.parse().ok()?;
    match (hours, minutes) {
        (24, 0) if allow_end_of_day => Some(1440),
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        _ => None,
    }
}
