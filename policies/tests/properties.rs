//! Properties of `evaluate` over generated policies, transactions and contexts.
#![cfg(test)]

mod common;

use common::*;
use proptest::prelude::*;
use strongroom_policies::{Context, Decision, Initiator, Policy, TxSummary, WindowEntry, evaluate};

const ADDRESSES: [&str; 4] = [
    PAYEE,
    PAYEE_2,
    CHANGE,
    "BCRT1QMTFQ7653Q58YFXFK4WSFGJUNADK0HAW8Y9R0QM",
];

#[derive(Debug, Clone)]
enum ActionSpec {
    Allow,
    Deny,
    Approvals(u32),
}

#[derive(Debug, Clone)]
struct RuleSpec {
    action: ActionSpec,
    conditions: Vec<String>,
}

fn bounds() -> impl Strategy<Value = String> {
    (
        proptest::option::of(0u64..3_000),
        proptest::option::of(0u64..3_000),
    )
        .prop_filter("at least one bound", |(min, max)| {
            min.is_some() || max.is_some()
        })
        .prop_map(|(min, max)| {
            let (min, max) = match (min, max) {
                (Some(a), Some(b)) if a > b => (Some(b), Some(a)),
                other => other,
            };
            let mut parts = Vec::new();
            if let Some(min) = min {
                parts.push(format!("min = {min}"));
            }
            if let Some(max) = max {
                parts.push(format!("max = {max}"));
            }
            format!("{{ {} }}", parts.join(", "))
        })
}

fn address_list() -> impl Strategy<Value = String> {
    proptest::sample::subsequence(&ADDRESSES[..3], 1..=3).prop_map(|list| {
        let quoted: Vec<String> = list.iter().map(|a| format!("\"{a}\"")).collect();
        format!("[{}]", quoted.join(", "))
    })
}

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        bounds().prop_map(|b| format!("amount_sat = {b}")),
        bounds().prop_map(|b| format!("fee_sat = {b}")),
        bounds().prop_map(|b| format!("fee_rate_sat_per_vb = {b}")),
        (0u64..4, 0u64..4).prop_map(|(a, b)| format!(
            "output_count = {{ min = {}, max = {} }}",
            a.min(b),
            a.max(b)
        )),
        (1u64..10_000, bounds()).prop_map(|(seconds, b)| {
            let inner = b.trim_start_matches("{ ").trim_end_matches(" }").to_owned();
            format!("rolling_amount_sat = {{ seconds = {seconds}, {inner} }}")
        }),
        address_list().prop_map(|l| format!("any_output_to = {l}")),
        address_list().prop_map(|l| format!("external_outputs_only_to = {l}")),
        Just("own_outputs_only = true".to_owned()),
        prop_oneof![
            Just(KEY_NAME),
            Just(OTHER_KEY_NAME),
            Just(KEY_ID),
            Just(OTHER_KEY_ID)
        ]
        .prop_map(|k| format!("keys = [\"{k}\"]")),
        prop_oneof![Just("submitter"), Just("approver")]
            .prop_map(|r| format!("initiator = {{ roles = [\"{r}\"] }}")),
        (0u16..24, 0u16..24, proptest::sample::subsequence(
            vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            1..=7
        ))
            .prop_filter("from != until", |(from, until, _)| from != until)
            .prop_map(|(from, until, days)| {
                let days: Vec<String> = days.iter().map(|d| format!("\"{d}\"")).collect();
                format!(
                    "utc_time = {{ days = [{}], from = \"{from:02}:00\", until = \"{until:02}:00\" }}",
                    days.join(", ")
                )
            }),
    ]
}

fn rule_spec() -> impl Strategy<Value = RuleSpec> {
    let action = prop_oneof![
        Just(ActionSpec::Allow),
        Just(ActionSpec::Deny),
        (1u32..=3).prop_map(ActionSpec::Approvals),
    ];
    (action, proptest::collection::vec(condition(), 0..4)).prop_map(|(action, conditions)| {
        // At most one condition of each kind.
        let mut seen = std::collections::BTreeSet::new();
        let conditions = conditions
            .into_iter()
            .filter(|c| seen.insert(c.split(' ').next().unwrap_or_default().to_owned()))
            .collect();
        RuleSpec { action, conditions }
    })
}

fn render(rules: &[(usize, RuleSpec)]) -> String {
    let mut text = header();
    for (id, rule) in rules {
        text.push_str(&format!("[[rules]]\nname = \"rule-{id}\"\n"));
        match rule.action {
            ActionSpec::Allow => text.push_str("action = \"allow\"\n"),
            ActionSpec::Deny => {
                text.push_str(&format!("action = \"deny\"\nreason = \"no {id}\"\n"))
            }
            ActionSpec::Approvals(k) => text.push_str(&format!(
                "action = \"require_approvals\"\ngroup = \"g\"\napprovals = {k}\n"
            )),
        }
        if !rule.conditions.is_empty() {
            text.push_str(&format!("when = {{ {} }}\n", rule.conditions.join(", ")));
        }
    }
    text
}

fn parse(text: &str) -> Policy {
    match Policy::from_toml_str(text) {
        Ok(policy) => policy,
        Err(error) => panic!("{error}\n{text}"),
    }
}

fn tx_strategy() -> impl Strategy<Value = TxSummary> {
    (
        proptest::collection::vec((0usize..4, 0u64..2_000, any::<bool>()), 1..4),
        0u64..3_000,
        1u64..300,
        any::<bool>(),
    )
        .prop_map(|(outputs, fee, vsize, other_key)| {
            let outputs: Vec<(&str, u64, bool)> = outputs
                .into_iter()
                .map(|(a, amount, change)| (ADDRESSES[a], amount, change))
                .collect();
            let summary = tx(&outputs, fee, vsize);
            if other_key {
                with_other_key(summary)
            } else {
                summary
            }
        })
}

fn ctx_strategy() -> impl Strategy<Value = Context> {
    (
        0u64..(14 * 86_400),
        proptest::collection::vec((0u64..20_000, 0u64..2_000), 0..4),
        proptest::sample::subsequence(vec!["a1", "a2", "a3", "b1"], 0..=4),
        any::<bool>(),
        prop_oneof![Just("submitter"), Just("approver")],
    )
        .prop_map(|(offset, history, approvers, other_digest, role)| {
            let now = MONDAY + offset;
            let policy = parse(&header());
            let approvals = approvers
                .iter()
                .map(|name| {
                    let digest = if other_digest && *name == "a2" {
                        [9; 32]
                    } else {
                        DIGEST
                    };
                    approval(&policy, name, &digest)
                })
                .collect();
            Context {
                initiator: Initiator {
                    name: "alice".to_owned(),
                    roles: vec![role.to_owned()],
                },
                now,
                request_digest: DIGEST,
                window_history: history
                    .into_iter()
                    .map(|(age, amount_sat)| WindowEntry {
                        time: now.saturating_sub(age),
                        amount_sat,
                    })
                    .collect(),
                approvals,
            }
        })
}

/// The decision without the rule's index, which shifts when an earlier rule is removed.
fn without_index(decision: &Decision) -> (String, Option<String>) {
    let kind = match decision {
        Decision::Allow { approved_by, .. } => format!("allow {approved_by:?}"),
        Decision::Deny { reason, .. } => format!("deny {reason}"),
        Decision::NeedsApprovals {
            required,
            have,
            approved_by,
            ..
        } => {
            format!("needs {required} {have} {approved_by:?}")
        }
    };
    (kind, decision.rule().map(|rule| rule.name.clone()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn evaluate_is_deterministic(
        rules in proptest::collection::vec(rule_spec(), 0..6),
        tx in tx_strategy(),
        ctx in ctx_strategy(),
    ) {
        let numbered: Vec<(usize, RuleSpec)> = rules.into_iter().enumerate().collect();
        let text = render(&numbered);
        let first = parse(&text);
        let second = parse(&text);
        prop_assert_eq!(first.hash(), second.hash());
        let decision = evaluate(&first, &tx, &ctx);
        prop_assert_eq!(&decision, &evaluate(&first, &tx, &ctx));
        prop_assert_eq!(&decision, &evaluate(&second, &tx.clone(), &ctx.clone()));
    }

    #[test]
    fn first_matching_rule_decides(
        rules in proptest::collection::vec(rule_spec(), 0..6),
        tx in tx_strategy(),
        ctx in ctx_strategy(),
    ) {
        let numbered: Vec<(usize, RuleSpec)> = rules.into_iter().enumerate().collect();
        let decision = evaluate(&parse(&render(&numbered)), &tx, &ctx);
        // Each rule alone: does it match (anything but the default deny)?
        let first_match = numbered.iter().position(|rule| {
            let alone = parse(&render(std::slice::from_ref(rule)));
            evaluate(&alone, &tx, &ctx).rule().is_some()
        });
        prop_assert_eq!(decision.rule().map(|rule| rule.index), first_match);
        if let Some(index) = first_match {
            let alone = parse(&render(&numbered[index..=index]));
            prop_assert_eq!(without_index(&decision), without_index(&evaluate(&alone, &tx, &ctx)));
        }
    }

    #[test]
    fn removing_a_deny_rule_never_turns_an_allow_into_a_deny(
        rules in proptest::collection::vec(rule_spec(), 1..6),
        pick in any::<proptest::sample::Index>(),
        tx in tx_strategy(),
        ctx in ctx_strategy(),
    ) {
        let numbered: Vec<(usize, RuleSpec)> = rules.into_iter().enumerate().collect();
        let denies: Vec<usize> = numbered
            .iter()
            .filter(|(_, rule)| matches!(rule.action, ActionSpec::Deny))
            .map(|(id, _)| *id)
            .collect();
        prop_assume!(!denies.is_empty());
        let removed = denies[pick.index(denies.len())];
        let before = evaluate(&parse(&render(&numbered)), &tx, &ctx);
        let fewer: Vec<(usize, RuleSpec)> =
            numbered.iter().filter(|(id, _)| *id != removed).cloned().collect();
        let after = evaluate(&parse(&render(&fewer)), &tx, &ctx);
        if before.is_allow() {
            prop_assert!(after.is_allow(), "{before:?} became {after:?}");
        }
        // Unless the removed rule itself decided, nothing changes but the index.
        if before.rule().map(|rule| rule.name.clone()) != Some(format!("rule-{removed}")) {
            prop_assert_eq!(without_index(&before), without_index(&after));
        }
    }

    #[test]
    fn more_approvals_never_turn_an_allow_into_something_else(
        rules in proptest::collection::vec(rule_spec(), 0..6),
        tx in tx_strategy(),
        ctx in ctx_strategy(),
        extra in proptest::sample::select(vec!["a1", "a2", "a3", "b1"]),
    ) {
        let numbered: Vec<(usize, RuleSpec)> = rules.into_iter().enumerate().collect();
        let policy = parse(&render(&numbered));
        let before = evaluate(&policy, &tx, &ctx);
        let mut more = ctx.clone();
        more.approvals.push(approval(&policy, extra, &DIGEST));
        let after = evaluate(&policy, &tx, &more);
        prop_assert_eq!(before.rule().map(|r| r.index), after.rule().map(|r| r.index));
        if before.is_allow() {
            prop_assert!(after.is_allow());
        }
    }
}
