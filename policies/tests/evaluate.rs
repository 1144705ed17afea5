//! `evaluate`: every condition at its boundaries, first-match order, default deny, approvals.
#![cfg(test)]

mod common;

use common::*;
use strongroom_policies::{
    ApprovalError, DEFAULT_DENY_REASON, Decision, TxSummary, evaluate, verify_approval,
};

// ---------------------------------------------------------------------------------------------
// amount per transaction (sum of non-change outputs), inclusive bounds

#[test]
fn amount_max_is_inclusive() {
    let when = "amount_sat = { max = 1_000_000 }";
    assert!(holds(when, &pay(999_999), &ctx()));
    assert!(holds(when, &pay(1_000_000), &ctx()));
    assert!(!holds(when, &pay(1_000_001), &ctx()));
}

#[test]
fn amount_min_is_inclusive() {
    let when = "amount_sat = { min = 1_000_000 }";
    assert!(!holds(when, &pay(999_999), &ctx()));
    assert!(holds(when, &pay(1_000_000), &ctx()));
    assert!(holds(when, &pay(1_000_001), &ctx()));
}

#[test]
fn amount_min_equal_max_matches_one_value() {
    let when = "amount_sat = { min = 500, max = 500 }";
    assert!(!holds(when, &pay(499), &ctx()));
    assert!(holds(when, &pay(500), &ctx()));
    assert!(!holds(when, &pay(501), &ctx()));
}

#[test]
fn amount_sums_non_change_outputs_only() {
    let when = "amount_sat = { max = 1_000 }";
    // 600 + 400 to outside addresses = 1,000; a large change output does not count.
    let tx = tx(
        &[
            (PAYEE, 600, false),
            (PAYEE_2, 400, false),
            (CHANGE, 9_000_000, true),
        ],
        500,
        200,
    );
    assert!(holds(when, &tx, &ctx()));
    let tx = common::tx(
        &[
            (PAYEE, 601, false),
            (PAYEE_2, 400, false),
            (CHANGE, 1, true),
        ],
        500,
        200,
    );
    assert!(!holds(when, &tx, &ctx()));
}

#[test]
fn consolidation_has_spend_amount_zero() {
    let tx = tx(&[(CHANGE, 5_000_000, true)], 500, 200);
    assert!(holds("amount_sat = { max = 0 }", &tx, &ctx()));
    assert!(!holds("amount_sat = { min = 1 }", &tx, &ctx()));
}

// ---------------------------------------------------------------------------------------------
// rolling window per key

const DAY: &str = "rolling_amount_sat = { seconds = 86_400, max = 1_000_000 }";

#[test]
fn window_empty_history_counts_this_transaction_only() {
    let now = at(2, 12, 0, 0);
    assert!(holds(DAY, &pay(1_000_000), &ctx_with_history(now, &[])));
    assert!(!holds(DAY, &pay(1_000_001), &ctx_with_history(now, &[])));
}

#[test]
fn window_history_plus_this_transaction_against_cap() {
    let now = at(2, 12, 0, 0);
    let history = [(now - 10, 300_000), (now - 20_000, 200_000)];
    assert!(holds(DAY, &pay(500_000), &ctx_with_history(now, &history)));
    assert!(!holds(DAY, &pay(500_001), &ctx_with_history(now, &history)));
}

#[test]
fn window_entry_exactly_window_old_is_outside() {
    let now = at(2, 12, 0, 0);
    let history = [(now - 86_400, 900_000)];
    assert!(holds(
        DAY,
        &pay(1_000_000),
        &ctx_with_history(now, &history)
    ));
}

#[test]
fn window_entry_one_second_inside_counts() {
    let now = at(2, 12, 0, 0);
    let history = [(now - 86_399, 1)];
    assert!(holds(DAY, &pay(999_999), &ctx_with_history(now, &history)));
    assert!(!holds(
        DAY,
        &pay(1_000_000),
        &ctx_with_history(now, &history)
    ));
}

#[test]
fn window_entry_one_second_outside_is_ignored() {
    let now = at(2, 12, 0, 0);
    let history = [(now - 86_401, 1_000_000)];
    assert!(holds(
        DAY,
        &pay(1_000_000),
        &ctx_with_history(now, &history)
    ));
}

#[test]
fn window_entry_at_now_and_in_the_future_count() {
    let now = at(2, 12, 0, 0);
    assert!(!holds(
        DAY,
        &pay(1),
        &ctx_with_history(now, &[(now, 1_000_000)])
    ));
    assert!(!holds(
        DAY,
        &pay(1),
        &ctx_with_history(now, &[(now + 30, 1_000_000)])
    ));
}

#[test]
fn window_longer_than_time_since_epoch_counts_everything() {
    let when = "rolling_amount_sat = { seconds = 9_000_000_000_000_000_000, max = 10 }";
    let now = 100;
    assert!(!holds(when, &pay(1), &ctx_with_history(now, &[(0, 10)])));
    assert!(holds(when, &pay(1), &ctx_with_history(now, &[(0, 9)])));
}

#[test]
fn window_min_bound_matches_totals_above_a_cap() {
    // The "deny above the cap" form: min = cap + 1.
    let when = "rolling_amount_sat = { seconds = 60, min = 1_001 }";
    let now = at(2, 12, 0, 0);
    assert!(!holds(
        when,
        &pay(500),
        &ctx_with_history(now, &[(now - 59, 500)])
    ));
    assert!(holds(
        when,
        &pay(501),
        &ctx_with_history(now, &[(now - 59, 500)])
    ));
    assert!(!holds(
        when,
        &pay(501),
        &ctx_with_history(now, &[(now - 60, 500)])
    ));
}

// ---------------------------------------------------------------------------------------------
// fees

#[test]
fn fee_bounds_are_inclusive() {
    let tx = |fee| tx(&[(PAYEE, 1_000, false)], fee, 100);
    let when = "fee_sat = { max = 10_000 }";
    assert!(holds(when, &tx(9_999), &ctx()));
    assert!(holds(when, &tx(10_000), &ctx()));
    assert!(!holds(when, &tx(10_001), &ctx()));
    let when = "fee_sat = { min = 10_000 }";
    assert!(!holds(when, &tx(9_999), &ctx()));
    assert!(holds(when, &tx(10_000), &ctx()));
}

#[test]
fn fee_rate_is_rounded_up() {
    // vsize 141: 141,000 sat is exactly 1,000 sat/vB; one more satoshi is 1,000.007 sat/vB.
    let tx = |fee| tx(&[(PAYEE, 1_000, false)], fee, 141);
    assert_eq!(tx(140_999).fee_rate_sat_per_vb_ceil(), Some(1_000));
    assert_eq!(tx(141_000).fee_rate_sat_per_vb_ceil(), Some(1_000));
    assert_eq!(tx(141_001).fee_rate_sat_per_vb_ceil(), Some(1_001));
    assert_eq!(tx(0).fee_rate_sat_per_vb_ceil(), Some(0));
    assert_eq!(tx(1).fee_rate_sat_per_vb_ceil(), Some(1));
}

#[test]
fn fee_rate_max_holds_exactly_up_to_the_cap() {
    let tx = |fee| tx(&[(PAYEE, 1_000, false)], fee, 141);
    let when = "fee_rate_sat_per_vb = { max = 1_000 }";
    assert!(holds(when, &tx(140_999), &ctx()));
    assert!(holds(when, &tx(141_000), &ctx()));
    assert!(!holds(when, &tx(141_001), &ctx()));
}

#[test]
fn fee_rate_min_cap_plus_one_holds_exactly_above_the_cap() {
    let tx = |fee| tx(&[(PAYEE, 1_000, false)], fee, 141);
    let when = "fee_rate_sat_per_vb = { min = 1_001 }";
    assert!(!holds(when, &tx(141_000), &ctx()));
    assert!(holds(when, &tx(141_001), &ctx()));
}

// ---------------------------------------------------------------------------------------------
// output count

#[test]
fn output_count_counts_change_and_is_inclusive() {
    let one = tx(&[(PAYEE, 1_000, false)], 100, 100);
    let two = tx(&[(PAYEE, 1_000, false), (CHANGE, 1_000, true)], 100, 100);
    let three = tx(
        &[(PAYEE, 1, false), (PAYEE_2, 1, false), (CHANGE, 1, true)],
        100,
        100,
    );
    let when = "output_count = { min = 2, max = 2 }";
    assert!(!holds(when, &one, &ctx()));
    assert!(holds(when, &two, &ctx()));
    assert!(!holds(when, &three, &ctx()));
}

// ---------------------------------------------------------------------------------------------
// key and initiator

#[test]
fn key_condition() {
    let other = with_other_key(pay(10));
    assert!(holds("keys = [\"key-1\"]", &pay(10), &ctx()));
    assert!(!holds("keys = [\"key-1\"]", &other, &ctx()));
    assert!(holds("keys = [\"key-0\", \"key-2\"]", &other, &ctx()));
}

#[test]
fn key_condition_by_name_or_id() {
    let other = with_other_key(pay(10));
    // By id, in either case.
    let by_id = format!("keys = [\"{KEY_ID}\"]");
    assert!(holds(&by_id, &pay(10), &ctx()));
    assert!(!holds(&by_id, &other, &ctx()));
    let upper = format!("keys = [\"{}\"]", KEY_ID.to_ascii_uppercase());
    assert!(holds(&upper, &pay(10), &ctx()));
    // A name is compared exactly: no case folding, no prefix.
    assert!(!holds("keys = [\"KEY-1\"]", &pay(10), &ctx()));
    assert!(!holds("keys = [\"key\"]", &pay(10), &ctx()));
    // Names and ids mix.
    let mixed = format!("keys = [\"{OTHER_KEY_ID}\", \"key-1\"]");
    assert!(holds(&mixed, &pay(10), &ctx()));
    assert!(holds(&mixed, &other, &ctx()));
}

#[test]
fn a_key_named_like_another_keys_id_does_not_match_that_keys_rules() {
    // An admin names a key after another key's id: rules written for that id must not cover it.
    let mut impostor = with_other_key(pay(10));
    impostor.key_name = KEY_ID.to_owned();
    let by_id = format!("keys = [\"{KEY_ID}\"]");
    assert!(holds(&by_id, &pay(10), &ctx()));
    assert!(!holds(&by_id, &impostor, &ctx()));
    // Nor is a key whose id equals an entry meant as a name matched by name alone.
    let mut named = pay(10);
    named.key_name = "hot-1".to_owned();
    assert!(!holds(
        &format!("keys = [\"{OTHER_KEY_ID}\"]"),
        &named,
        &ctx()
    ));
}

#[test]
fn a_deny_rule_scoped_to_a_key_by_name_denies_that_key_only() {
    let policy = policy(
        r#"
[[rules]]
name = "freeze-key-1"
action = "deny"
reason = "key-1 is frozen"
when.keys = ["key-1"]

[[rules]]
name = "everything-else"
action = "allow"
"#,
    );
    assert_eq!(
        evaluate(&policy, &pay(10), &ctx()),
        Decision::Deny {
            rule: Some(rule(0, "freeze-key-1")),
            reason: "key-1 is frozen".to_owned(),
        }
    );
    assert_eq!(
        evaluate(&policy, &with_other_key(pay(10)), &ctx()),
        Decision::Allow {
            rule: rule(1, "everything-else"),
            approved_by: vec![],
        }
    );
}

#[test]
fn an_allow_rule_scoped_to_a_key_by_name_does_not_allow_another_key() {
    let policy = policy(
        r#"
[[rules]]
name = "hot-1-small"
action = "allow"
[rules.when]
keys = ["hot-1"]
amount_sat = { max = 1_000_000 }
"#,
    );
    let mut hot = pay(10);
    hot.key_name = "hot-1".to_owned();
    assert!(evaluate(&policy, &hot, &ctx()).is_allow());
    // Another key: by a different name, by a name differing only in case or spacing, or with
    // the id of the first key but another name (which cannot happen on an honest node).
    for name in ["hot-2", "HOT-1", "hot-1 ", "treasury"] {
        let mut other = hot.clone();
        other.key_id = OTHER_KEY_ID.to_owned();
        other.key_name = name.to_owned();
        assert_eq!(
            evaluate(&policy, &other, &ctx()),
            Decision::Deny {
                rule: None,
                reason: DEFAULT_DENY_REASON.to_owned(),
            },
            "{name}"
        );
    }
}

#[test]
fn initiator_by_name_or_role() {
    let mut bob = ctx();
    bob.initiator.name = "bob".to_owned();
    bob.initiator.roles = vec!["auditor".to_owned(), "approver".to_owned()];
    assert!(holds(
        "initiator = { names = [\"alice\"] }",
        &pay(1),
        &ctx()
    ));
    assert!(!holds("initiator = { names = [\"alice\"] }", &pay(1), &bob));
    assert!(holds(
        "initiator = { roles = [\"approver\"] }",
        &pay(1),
        &bob
    ));
    assert!(!holds(
        "initiator = { roles = [\"approver\"] }",
        &pay(1),
        &ctx()
    ));
    // Either a listed name or a listed role suffices.
    let when = "initiator = { names = [\"alice\"], roles = [\"approver\"] }";
    assert!(holds(when, &pay(1), &ctx()));
    assert!(holds(when, &pay(1), &bob));
    let mut carol = ctx();
    carol.initiator.name = "carol".to_owned();
    carol.initiator.roles.clear();
    assert!(!holds(when, &pay(1), &carol));
}

#[test]
fn initiator_names_are_case_sensitive() {
    let mut upper = ctx();
    upper.initiator.name = "Alice".to_owned();
    assert!(!holds(
        "initiator = { names = [\"alice\"] }",
        &pay(1),
        &upper
    ));
}

// ---------------------------------------------------------------------------------------------
// destinations

#[test]
fn any_output_to_matches_any_output_including_change() {
    let when = format!("any_output_to = [\"{PAYEE_2}\"]");
    assert!(!holds(&when, &pay(10), &ctx()));
    let hit = tx(&[(PAYEE, 10, false), (PAYEE_2, 10, false)], 100, 100);
    assert!(holds(&when, &hit, &ctx()));
    let change_hit = tx(&[(PAYEE, 10, false), (PAYEE_2, 10, true)], 100, 100);
    assert!(holds(&when, &change_hit, &ctx()));
}

#[test]
fn bech32_addresses_compare_case_insensitively() {
    let upper = PAYEE.to_ascii_uppercase();
    // Listed in upper case, paid in lower case.
    assert!(holds(
        &format!("any_output_to = [\"{upper}\"]"),
        &pay(10),
        &ctx()
    ));
    // Listed in lower case, rendered in upper case.
    let tx = tx(&[(&upper, 10, false)], 100, 100);
    assert!(holds(
        &format!("any_output_to = [\"{PAYEE}\"]"),
        &tx,
        &ctx()
    ));
}

#[test]
fn base58_addresses_compare_exactly() {
    let base58 = "mipcBbFg9gMiCh81Kj8tqqdgoZub1ZJRfn";
    let when = format!("any_output_to = [\"{base58}\"]");
    assert!(holds(&when, &tx(&[(base58, 10, false)], 100, 100), &ctx()));
    let other_case = base58.to_ascii_lowercase();
    assert!(!holds(
        &when,
        &tx(&[(&other_case, 10, false)], 100, 100),
        &ctx()
    ));
}

#[test]
fn external_outputs_only_to_requires_every_non_change_output_listed() {
    let when = format!("external_outputs_only_to = [\"{PAYEE}\", \"{PAYEE_2}\"]");
    assert!(holds(&when, &pay(10), &ctx())); // change is not checked
    let both = tx(&[(PAYEE, 10, false), (PAYEE_2, 10, false)], 100, 100);
    assert!(holds(&when, &both, &ctx()));
    let one_outside = tx(
        &[(PAYEE, 10, false), ("bcrt1qelsewhere", 10, false)],
        100,
        100,
    );
    assert!(!holds(&when, &one_outside, &ctx()));
    // Holds vacuously when every output is change.
    let consolidation = tx(&[(CHANGE, 10, true)], 100, 100);
    assert!(holds(&when, &consolidation, &ctx()));
}

#[test]
fn own_outputs_only() {
    let when = "own_outputs_only = true";
    assert!(holds(
        when,
        &tx(&[(CHANGE, 10, true), (CHANGE, 20, true)], 100, 100),
        &ctx()
    ));
    assert!(!holds(when, &pay(10), &ctx()));
    // An output to an outside address that happens to be listed nowhere still breaks it.
    assert!(!holds(
        when,
        &tx(&[(CHANGE, 10, true), (PAYEE, 1, false)], 100, 100),
        &ctx()
    ));
}

// ---------------------------------------------------------------------------------------------
// UTC time window

fn at_time(now: u64) -> strongroom_policies::Context {
    ctx_with_history(now, &[])
}

#[test]
fn weekday_of_known_dates() {
    use strongroom_policies::Weekday;
    assert_eq!(Weekday::of_unix_time(0), Weekday::Thu); // 1970-01-01
    assert_eq!(Weekday::of_unix_time(MONDAY), Weekday::Mon);
    assert_eq!(Weekday::of_unix_time(MONDAY - 1), Weekday::Sun);
    assert_eq!(Weekday::of_unix_time(at(6, 23, 59, 59)), Weekday::Sun);
    assert_eq!(Weekday::of_unix_time(at(7, 0, 0, 0)), Weekday::Mon);
    assert_eq!(Weekday::Mon.previous(), Weekday::Sun);
}

#[test]
fn hours_from_inclusive_until_exclusive() {
    let when = "utc_time = { from = \"09:00\", until = \"17:00\" }";
    assert!(!holds(when, &pay(1), &at_time(at(2, 8, 59, 59))));
    assert!(holds(when, &pay(1), &at_time(at(2, 9, 0, 0))));
    assert!(holds(when, &pay(1), &at_time(at(2, 16, 59, 59))));
    assert!(!holds(when, &pay(1), &at_time(at(2, 17, 0, 0))));
}

#[test]
fn until_24_00_runs_to_midnight() {
    let when = "utc_time = { from = \"22:00\", until = \"24:00\" }";
    assert!(holds(when, &pay(1), &at_time(at(2, 23, 59, 59))));
    assert!(!holds(when, &pay(1), &at_time(at(3, 0, 0, 0))));
    assert!(!holds(when, &pay(1), &at_time(at(2, 21, 59, 59))));
}

#[test]
fn days_only_covers_the_whole_day() {
    let when = "utc_time = { days = [\"mon\", \"fri\"] }";
    assert!(holds(when, &pay(1), &at_time(at(0, 0, 0, 0))));
    assert!(holds(when, &pay(1), &at_time(at(0, 23, 59, 59))));
    assert!(!holds(when, &pay(1), &at_time(at(1, 0, 0, 0))));
    assert!(!holds(when, &pay(1), &at_time(at(0, 0, 0, 0) - 1))); // Sunday 23:59:59
    assert!(holds(when, &pay(1), &at_time(at(4, 12, 0, 0))));
}

#[test]
fn days_and_hours() {
    let when = "utc_time = { days = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\"], from = \"08:00\", until = \"18:00\" }";
    assert!(holds(when, &pay(1), &at_time(at(4, 17, 59, 59)))); // Friday
    assert!(!holds(when, &pay(1), &at_time(at(5, 12, 0, 0)))); // Saturday
    assert!(!holds(when, &pay(1), &at_time(at(6, 12, 0, 0)))); // Sunday
    assert!(holds(when, &pay(1), &at_time(at(7, 8, 0, 0)))); // next Monday
}

#[test]
fn wrap_around_midnight_every_day() {
    let when = "utc_time = { from = \"22:00\", until = \"06:00\" }";
    assert!(!holds(when, &pay(1), &at_time(at(2, 21, 59, 59))));
    assert!(holds(when, &pay(1), &at_time(at(2, 22, 0, 0))));
    assert!(holds(when, &pay(1), &at_time(at(2, 23, 59, 59))));
    assert!(holds(when, &pay(1), &at_time(at(3, 0, 0, 0))));
    assert!(holds(when, &pay(1), &at_time(at(3, 5, 59, 59))));
    assert!(!holds(when, &pay(1), &at_time(at(3, 6, 0, 0))));
    assert!(!holds(when, &pay(1), &at_time(at(3, 12, 0, 0))));
}

#[test]
fn wrap_around_midnight_belongs_to_the_starting_day() {
    // Friday night only: Friday 22:00 to Saturday 06:00.
    let when = "utc_time = { days = [\"fri\"], from = \"22:00\", until = \"06:00\" }";
    assert!(holds(when, &pay(1), &at_time(at(4, 22, 0, 0)))); // Friday 22:00
    assert!(holds(when, &pay(1), &at_time(at(5, 0, 0, 0)))); // Saturday 00:00
    assert!(holds(when, &pay(1), &at_time(at(5, 5, 59, 59)))); // Saturday 05:59:59
    assert!(!holds(when, &pay(1), &at_time(at(5, 6, 0, 0)))); // Saturday 06:00
    assert!(!holds(when, &pay(1), &at_time(at(5, 22, 0, 0)))); // Saturday 22:00
    assert!(!holds(when, &pay(1), &at_time(at(4, 2, 0, 0)))); // Friday 02:00 (Thursday's span)
    assert!(!holds(when, &pay(1), &at_time(at(3, 22, 0, 0)))); // Thursday 22:00
}

#[test]
fn wrap_around_the_week_boundary() {
    // Sunday 23:00 to Monday 01:00.
    let when = "utc_time = { days = [\"sun\"], from = \"23:00\", until = \"01:00\" }";
    assert!(holds(when, &pay(1), &at_time(at(6, 23, 0, 0))));
    assert!(holds(when, &pay(1), &at_time(at(7, 0, 59, 59))));
    assert!(!holds(when, &pay(1), &at_time(at(7, 1, 0, 0))));
    assert!(!holds(when, &pay(1), &at_time(at(6, 0, 30, 0)))); // Sunday 00:30 is Saturday's span
    assert!(!holds(when, &pay(1), &at_time(at(7, 23, 0, 0)))); // Monday 23:00
}

// ---------------------------------------------------------------------------------------------
// several conditions, first match, default deny

#[test]
fn all_present_conditions_must_hold() {
    let when = "amount_sat = { max = 1_000 }, keys = [\"key-1\"], fee_sat = { max = 1_000 }";
    assert!(holds(when, &pay(1_000), &ctx()));
    assert!(!holds(when, &pay(1_001), &ctx()));
    assert!(!holds(when, &with_other_key(pay(10)), &ctx()));
    let high_fee = tx(&[(PAYEE, 10, false)], 1_001, 100);
    assert!(!holds(when, &high_fee, &ctx()));
}

#[test]
fn rule_without_conditions_matches_everything() {
    let policy = policy("[[rules]]\nname = \"all\"\naction = \"allow\"\n");
    assert!(evaluate(&policy, &pay(21_000_000), &ctx()).is_allow());
}

#[test]
fn default_deny_when_nothing_matches() {
    let policy = allow_when("amount_sat = { max = 10 }");
    let decision = evaluate(&policy, &pay(11), &ctx());
    assert_eq!(
        decision,
        Decision::Deny {
            rule: None,
            reason: DEFAULT_DENY_REASON.to_owned()
        }
    );
    assert!(!decision.is_allow());
    assert_eq!(decision.rule(), None);
}

#[test]
fn empty_rule_list_denies_everything() {
    let policy = policy("");
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx()),
        Decision::Deny {
            rule: None,
            reason: DEFAULT_DENY_REASON.to_owned()
        }
    );
}

const DENY_THEN_ALLOW: &str = r#"
[[rules]]
name = "no-big"
action = "deny"
reason = "too big"
when.amount_sat = { min = 1_000 }

[[rules]]
name = "everything"
action = "allow"
"#;

const ALLOW_THEN_DENY: &str = r#"
[[rules]]
name = "small"
action = "allow"
when.amount_sat = { max = 999 }

[[rules]]
name = "rest"
action = "deny"
reason = "not small"
"#;

#[test]
fn later_allow_never_overrides_earlier_deny() {
    let policy = policy(DENY_THEN_ALLOW);
    assert_eq!(
        evaluate(&policy, &pay(1_000), &ctx()),
        Decision::Deny {
            rule: Some(rule(0, "no-big")),
            reason: "too big".to_owned()
        }
    );
    assert_eq!(
        evaluate(&policy, &pay(999), &ctx()),
        Decision::Allow {
            rule: rule(1, "everything"),
            approved_by: vec![]
        }
    );
}

#[test]
fn later_deny_never_overrides_earlier_allow() {
    let policy = policy(ALLOW_THEN_DENY);
    assert_eq!(
        evaluate(&policy, &pay(999), &ctx()),
        Decision::Allow {
            rule: rule(0, "small"),
            approved_by: vec![]
        }
    );
    assert_eq!(
        evaluate(&policy, &pay(1_000), &ctx()),
        Decision::Deny {
            rule: Some(rule(1, "rest")),
            reason: "not small".to_owned()
        }
    );
}

#[test]
fn earlier_approval_rule_wins_over_later_allow() {
    let policy = policy(
        r#"
[[rules]]
name = "needs"
action = "require_approvals"
group = "g"
approvals = 1

[[rules]]
name = "free"
action = "allow"
"#,
    );
    assert!(matches!(
        evaluate(&policy, &pay(1), &ctx()),
        Decision::NeedsApprovals { ref rule, .. } if rule == &common::rule(0, "needs")
    ));
}

// ---------------------------------------------------------------------------------------------
// inconsistent summaries are denied before any rule

#[test]
fn inconsistent_summary_is_denied_even_by_an_allow_everything_policy() {
    let policy = policy("[[rules]]\nname = \"all\"\naction = \"allow\"\n");
    let mut cases: Vec<TxSummary> = Vec::new();
    let mut t = pay(10);
    t.total_input_sat += 1; // inputs do not add up
    cases.push(t);
    let mut t = pay(10);
    t.outputs.clear();
    t.total_input_sat = t.fee_sat;
    cases.push(t);
    let mut t = pay(10);
    t.vsize = 0;
    cases.push(t);
    let mut t = pay(10);
    t.input_count = 0;
    cases.push(t);
    cases.push(tx(
        &[(PAYEE, u64::MAX / 2, false), (PAYEE_2, u64::MAX / 2, false)],
        0,
        100,
    ));
    cases.push(tx(
        &[(PAYEE, strongroom_policies::MAX_MONEY_SAT + 1, false)],
        0,
        100,
    ));
    for case in cases {
        assert!(case.check().is_err(), "{case:?}");
        match evaluate(&policy, &case, &ctx()) {
            Decision::Deny { rule: None, reason } => {
                assert!(
                    reason.starts_with("the transaction summary is inconsistent"),
                    "{reason}"
                )
            }
            other => panic!("{other:?} for {case:?}"),
        }
    }
    assert_eq!(
        tx(
            &[(PAYEE, strongroom_policies::MAX_MONEY_SAT - 1, false)],
            1,
            100
        )
        .check(),
        Ok(())
    );
}

// ---------------------------------------------------------------------------------------------
// approvals

const TWO_OF_G: &str = r#"
[[rules]]
name = "two"
action = "require_approvals"
group = "g"
approvals = 2
"#;

#[test]
fn needs_approvals_then_allow_at_exactly_k() {
    let policy = policy(TWO_OF_G);
    let mut ctx = ctx();
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::NeedsApprovals {
            rule: rule(0, "two"),
            group: "g".to_owned(),
            required: 2,
            have: 0,
            approved_by: vec![],
        }
    );
    ctx.approvals.push(approval(&policy, "a2", &DIGEST));
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::NeedsApprovals {
            rule: rule(0, "two"),
            group: "g".to_owned(),
            required: 2,
            have: 1,
            approved_by: vec!["a2".to_owned()],
        }
    );
    ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::Allow {
            rule: rule(0, "two"),
            approved_by: vec!["a1".to_owned(), "a2".to_owned()]
        }
    );
    ctx.approvals.push(approval(&policy, "a3", &DIGEST));
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::Allow {
            rule: rule(0, "two"),
            approved_by: vec!["a1".to_owned(), "a2".to_owned(), "a3".to_owned()]
        }
    );
}

#[test]
fn duplicate_approvals_count_once() {
    let policy = policy(TWO_OF_G);
    let mut ctx = ctx();
    for _ in 0..3 {
        ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    }
    assert!(matches!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::NeedsApprovals { have: 1, .. }
    ));
}

#[test]
fn approvers_from_another_group_do_not_count() {
    let policy = policy(TWO_OF_G);
    let mut ctx = ctx();
    ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    ctx.approvals.push(approval(&policy, "b1", &DIGEST));
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::NeedsApprovals {
            rule: rule(0, "two"),
            group: "g".to_owned(),
            required: 2,
            have: 1,
            approved_by: vec!["a1".to_owned()],
        }
    );
}

#[test]
fn approvals_over_another_digest_do_not_count() {
    let policy = policy(TWO_OF_G);
    let mut ctx = ctx();
    ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    ctx.approvals.push(approval(&policy, "a2", &[8; 32]));
    assert!(matches!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::NeedsApprovals { have: 1, .. }
    ));
}

#[test]
fn approvals_verified_under_a_key_the_policy_no_longer_lists_do_not_count() {
    let old = policy(TWO_OF_G);
    let mut ctx = ctx();
    ctx.approvals.push(approval(&old, "a1", &DIGEST));
    ctx.approvals.push(approval(&old, "a2", &DIGEST));
    assert!(evaluate(&old, &pay(1), &ctx).is_allow());
    // Same names, a2's key rotated.
    let rotated_key = hex::encode(signing_key("a2-rotated").verifying_key().to_bytes());
    let old_key = hex::encode(signing_key("a2").verifying_key().to_bytes());
    let text = format!("{}{TWO_OF_G}", header()).replace(&old_key, &rotated_key);
    let new = strongroom_policies::Policy::from_toml_str(&text).unwrap();
    assert!(matches!(
        evaluate(&new, &pay(1), &ctx),
        Decision::NeedsApprovals { have: 1, .. }
    ));
}

#[test]
fn verify_approval_accepts_a_valid_signature() {
    let policy = policy(TWO_OF_G);
    let approval = approval(&policy, "a3", &DIGEST);
    assert_eq!(approval.approver(), "a3");
    assert_eq!(approval.digest(), &DIGEST);
    assert_eq!(
        approval.public_key(),
        signing_key("a3").verifying_key().as_bytes()
    );
}

#[test]
fn verify_approval_refuses_a_bad_signature() {
    use ed25519_dalek::Signer;
    let policy = policy(TWO_OF_G);
    let bad = |name: &str, signature: &[u8]| verify_approval(&policy, name, &DIGEST, signature);
    let by_other_key = signing_key("a2").sign(&DIGEST).to_bytes();
    assert_eq!(
        bad("a1", &by_other_key),
        Err(ApprovalError::BadSignature {
            approver: "a1".to_owned(),
            policy: "test".to_owned()
        })
    );
    let over_other_digest = signing_key("a1").sign(&[8; 32]).to_bytes();
    assert!(matches!(
        bad("a1", &over_other_digest),
        Err(ApprovalError::BadSignature { .. })
    ));
    let mut flipped = signing_key("a1").sign(&DIGEST).to_bytes();
    flipped[10] ^= 1;
    assert!(matches!(
        bad("a1", &flipped),
        Err(ApprovalError::BadSignature { .. })
    ));
    assert!(matches!(
        bad("a1", &[0; 64]),
        Err(ApprovalError::BadSignature { .. })
    ));
    let good = signing_key("a1").sign(&DIGEST).to_bytes();
    assert_eq!(
        bad("a1", &good[..63]),
        Err(ApprovalError::MalformedSignature {
            approver: "a1".to_owned(),
            len: 63
        })
    );
    assert!(matches!(
        bad("a1", &[]),
        Err(ApprovalError::MalformedSignature { len: 0, .. })
    ));
}

#[test]
fn verify_approval_refuses_a_non_canonical_s() {
    use ed25519_dalek::Signer;
    let policy = policy(TWO_OF_G);
    let mut signature = signing_key("a1").sign(&DIGEST).to_bytes();
    // s + L is the same scalar mod L but a second encoding; strict verification refuses it.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let sum = u16::from(signature[32 + i]) + u16::from(L[i]) + carry;
        signature[32 + i] = sum as u8;
        carry = sum >> 8;
    }
    assert!(verify_approval(&policy, "a1", &DIGEST, &signature).is_err());
}

#[test]
fn verify_approval_refuses_an_unknown_approver() {
    use ed25519_dalek::Signer;
    let policy = policy(TWO_OF_G);
    let signature = signing_key("mallory").sign(&DIGEST).to_bytes();
    assert_eq!(
        verify_approval(&policy, "mallory", &DIGEST, &signature),
        Err(ApprovalError::UnknownApprover {
            policy: "test".to_owned(),
            approver: "mallory".to_owned()
        })
    );
}

#[test]
fn approver_in_two_groups_counts_for_each() {
    let policy = policy(
        "[[rules]]\nname = \"m\"\naction = \"require_approvals\"\ngroup = \"mixed\"\napprovals = 2\n",
    );
    let mut ctx = ctx();
    ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    ctx.approvals.push(approval(&policy, "a2", &DIGEST)); // not in `mixed`
    assert!(matches!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::NeedsApprovals { have: 1, .. }
    ));
    ctx.approvals.push(approval(&policy, "b1", &DIGEST));
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::Allow {
            rule: rule(0, "m"),
            approved_by: vec!["a1".to_owned(), "b1".to_owned()]
        }
    );
}

#[test]
fn approvals_do_not_affect_allow_or_deny_rules() {
    let policy = policy(DENY_THEN_ALLOW);
    let mut ctx = ctx();
    ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    assert!(matches!(
        evaluate(&policy, &pay(1_000), &ctx),
        Decision::Deny { .. }
    ));
    assert_eq!(
        evaluate(&policy, &pay(1), &ctx),
        Decision::Allow {
            rule: rule(1, "everything"),
            approved_by: vec![]
        }
    );
}

// ---------------------------------------------------------------------------------------------
// decisions as data

#[test]
fn decisions_serialize_with_their_rule() {
    let allow = Decision::Allow {
        rule: rule(3, "large"),
        approved_by: vec!["a1".to_owned()],
    };
    let json = serde_json::to_value(&allow).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"decision": "allow", "rule": {"index": 3, "name": "large"}, "approved_by": ["a1"]})
    );
    let deny = Decision::Deny {
        rule: None,
        reason: DEFAULT_DENY_REASON.to_owned(),
    };
    let json = serde_json::to_value(&deny).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"decision": "deny", "rule": null, "reason": DEFAULT_DENY_REASON})
    );
    let needs = Decision::NeedsApprovals {
        rule: rule(1, "r"),
        group: "g".to_owned(),
        required: 2,
        have: 1,
        approved_by: vec!["a2".to_owned()],
    };
    for decision in [allow, deny, needs] {
        let text = serde_json::to_string(&decision).unwrap();
        assert_eq!(serde_json::from_str::<Decision>(&text).unwrap(), decision);
    }
}

#[test]
fn decisions_display_the_deciding_rule() {
    let policy = policy(DENY_THEN_ALLOW);
    assert_eq!(
        evaluate(&policy, &pay(5_000), &ctx()).to_string(),
        "denied by rules[0] 'no-big': too big"
    );
    assert_eq!(
        evaluate(&policy, &pay(5), &ctx()).to_string(),
        "allowed by rules[1] 'everything'"
    );
    let policy = common::policy(TWO_OF_G);
    let mut ctx = ctx();
    ctx.approvals.push(approval(&policy, "a1", &DIGEST));
    assert_eq!(
        evaluate(&policy, &pay(5), &ctx).to_string(),
        "rules[0] 'two' requires 2 approval(s) from group 'g'; 1 so far (a1)"
    );
}
