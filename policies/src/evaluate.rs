//! The decision: a pure function of the policy, the transaction summary and the context.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::file::canonical_address;
use crate::model::{
    Action, Conditions, InitiatorMatch, Policy, RollingWindow, RuleRef, TimeWindow, Weekday,
    is_key_id,
};
use crate::summary::{Context, TxSummary};

/// The reason given when no rule matches.
pub const DEFAULT_DENY_REASON: &str = "no rule matched; the policy denies by default";

/// What a node votes for a request, and which rule decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Sign. With a `require_approvals` rule, `approved_by` lists the distinct group members
    /// whose approvals satisfied it; with an `allow` rule it is empty.
    Allow {
        /// The rule that decided.
        rule: RuleRef,
        /// Approvers whose approvals counted, ordered by name.
        approved_by: Vec<String>,
    },
    /// Do not sign.
    Deny {
        /// The rule that decided; `None` when no rule matched (default deny) or the summary
        /// was inconsistent.
        rule: Option<RuleRef>,
        /// Why.
        reason: String,
    },
    /// Sign once more members of `group` approve; evaluate again when approvals arrive.
    NeedsApprovals {
        /// The rule that decided.
        rule: RuleRef,
        /// The approver group whose members may approve.
        group: String,
        /// How many distinct members must approve.
        required: u32,
        /// How many distinct members have approved so far (fewer than `required`).
        have: u32,
        /// Those members, ordered by name.
        approved_by: Vec<String>,
    },
}

impl Decision {
    /// Whether the decision is to sign now.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Self::Allow { rule, .. } | Self::NeedsApprovals { rule, .. } => Some(rule),
            Self::Deny { rule, .. } => rule.as_ref(),
        }
    }
}

/// One line for votes, logs and the API, naming the deciding rule.
impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow { rule, approved_by } if approved_by.is_empty() => {
                write!(f, "allowed by {rule}")
            }
            Self::Allow { rule, approved_by } => {
                write!(
                    f,
                    "allowed by {rule} with approvals from {}",
                    approved_by.join(", ")
                )
            }
            Self::Deny {
                rule: Some(rule),
                reason,
            } => write!(f, "denied by {rule}: {reason}"),
            Self::Deny { rule: None, reason } => write!(f, "denied: {reason}"),
            Self::NeedsApprovals {
                rule,
                group,
                required,
                have,
                approved_by,
            } => {
                write!(
                    f,
                    "{rule} requires {required} approval(s) from group '{group}'; {have} so far"
                )?;
                if !approved_by.is_empty() {
                    write!(f, " ({})", approved_by.join(", "))?;
                }
                Ok(())
            }
        }
    }
}

/// Decides a request: the first rule whose conditions all hold decides, and when none does
/// the request is denied.
///
/// Pure: the result depends only on the arguments (no clock, no I/O, no randomness), so every
/// node given the same inputs decides the same. An inconsistent summary (see
/// [`TxSummary::check`]) is denied before any rule is tried.
pub fn evaluate(policy: &Policy, tx: &TxSummary, ctx: &Context) -> Decision {
    if let Err(problem) = tx.check() {
        return Decision::Deny {
            rule: None,
            reason: format!("the transaction summary is inconsistent: {problem}"),
        };
    }
    for (index, rule) in policy.rules.iter().enumerate() {
        if !matches(&rule.conditions, tx, ctx) {
            continue;
        }
        let rule_ref = RuleRef {
            index,
            name: rule.name.clone(),
        };
        return match &rule.action {
            Action::Allow => Decision::Allow {
                rule: rule_ref,
                approved_by: Vec::new(),
            },
            Action::Deny { reason } => Decision::Deny {
                rule: Some(rule_ref),
                reason: reason.clone(),
            },
            Action::RequireApprovals { group, approvals } => {
                let approved_by = counted_approvers(policy, group, ctx);
                let have = u32::try_from(approved_by.len()).unwrap_or(u32::MAX);
                if have >= *approvals {
                    Decision::Allow {
                        rule: rule_ref,
                        approved_by,
                    }
                } else {
                    Decision::NeedsApprovals {
                        rule: rule_ref,
                        group: group.clone(),
                        required: *approvals,
                        have,
                        approved_by,
                    }
                }
            }
        };
    }
    Decision::Deny {
        rule: None,
        reason: DEFAULT_DENY_REASON.to_owned(),
    }
}

/// Distinct members of `group` with an approval over this request's digest, made with the key
/// the policy lists for them now.
fn counted_approvers(policy: &Policy, group: &str, ctx: &Context) -> Vec<String> {
    let Some(members) = policy.group(group) else {
        return Vec::new();
    };
    let counted: BTreeSet<&str> = ctx
        .approvals
        .iter()
        .filter(|approval| approval.digest() == &ctx.request_digest)
        .filter(|approval| members.contains(approval.approver()))
        .filter(|approval| {
            policy
                .approver(approval.approver())
                .is_some_and(|entry| entry.public_key().as_bytes() == approval.public_key())
        })
        .map(|approval| approval.approver())
        .collect();
    counted.into_iter().map(str::to_owned).collect()
}

fn matches(c: &Conditions, tx: &TxSummary, ctx: &Context) -> bool {
    let spend = tx.spend_amount_sat();
    c.keys.as_ref().is_none_or(|keys| key_matches(keys, tx))
        && c.initiator
            .as_ref()
            .is_none_or(|initiator| initiator_matches(initiator, ctx))
        && c.any_output_to.as_ref().is_none_or(|list| {
            tx.outputs
                .iter()
                .any(|output| list.contains(canonical_address(&output.address).as_ref()))
        })
        && c.external_outputs_only_to.as_ref().is_none_or(|list| {
            tx.outputs
                .iter()
                .filter(|output| !output.is_change)
                .all(|output| list.contains(canonical_address(&output.address).as_ref()))
        })
        && (!c.own_outputs_only || tx.outputs.iter().all(|output| output.is_change))
        && c.amount_sat
            .as_ref()
            .is_none_or(|bounds| bounds.contains(spend))
        && c.rolling_amount_sat
            .as_ref()
            .is_none_or(|window| window_matches(window, spend, ctx))
        && c.fee_sat
            .as_ref()
            .is_none_or(|bounds| bounds.contains(u128::from(tx.fee_sat)))
        && c.fee_rate_sat_per_vb.as_ref().is_none_or(|bounds| {
            tx.fee_rate_sat_per_vb_ceil()
                .is_some_and(|rate| bounds.contains(u128::from(rate)))
        })
        && c.output_count.as_ref().is_none_or(|bounds| {
            u64::try_from(tx.outputs.len()).is_ok_and(|count| bounds.contains(u128::from(count)))
        })
        && c.utc_time
            .as_ref()
            .is_none_or(|window| time_matches(window, ctx.now))
}

/// An id-shaped entry matches the key id only, any other entry the key name only.
fn key_matches(keys: &BTreeSet<String>, tx: &TxSummary) -> bool {
    keys.iter().any(|entry| {
        if is_key_id(entry) {
            entry.eq_ignore_ascii_case(&tx.key_id)
        } else {
            *entry == tx.key_name
        }
    })
}

fn initiator_matches(rule: &InitiatorMatch, ctx: &Context) -> bool {
    rule.names.contains(&ctx.initiator.name)
        || ctx
            .initiator
            .roles
            .iter()
            .any(|role| rule.roles.contains(role))
}

/// History entries with `now - time < seconds` are inside; later-dated entries count too.
fn window_matches(window: &RollingWindow, spend: u128, ctx: &Context) -> bool {
    let history: u128 = ctx
        .window_history
        .iter()
        .filter(|entry| entry.time.saturating_add(window.seconds) > ctx.now)
        .map(|entry| u128::from(entry.amount_sat))
        .sum();
    window.bounds.contains(history + spend)
}

fn time_matches(window: &TimeWindow, now: u64) -> bool {
    let day = Weekday::of_unix_time(now);
    let minute = now % 86_400 / 60;
    let day_open = |day: Weekday| window.days.as_ref().is_none_or(|days| days.contains(&day));
    match window.hours {
        None => day_open(day),
        Some(hours) => {
            let from = u64::from(hours.from_minute);
            let until = u64::from(hours.until_minute);
            if from < until {
                from <= minute && minute < until && day_open(day)
            } else {
                // The span wraps midnight: the part after midnight belongs to the day before.
                (minute >= from && day_open(day)) || (minute < until && day_open(day.previous()))
            }
        }
    }
}
