//! The policy file: versions, unknown fields, validation errors, the hash, and the examples.
#![cfg(test)]

mod common;

use std::path::Path;

use common::*;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use strongroom_policies::{Action, Bounds, FORMAT_VERSION, Policy, PolicyError, PolicyHash};

fn refused(text: &str) -> PolicyError {
    match Policy::from_toml_str(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(error) => error,
    }
}

fn refused_rules(rules: &str) -> PolicyError {
    refused(&format!("{}{rules}", header()))
}

// ---------------------------------------------------------------------------------------------
// version and shape

#[test]
fn missing_version_is_refused() {
    let error = refused("id = \"x\"\n");
    assert!(matches!(
        error,
        PolicyError::MissingVersion { supported: 1 }
    ));
    assert!(error.to_string().contains("add `version = 1`"), "{error}");
}

#[test]
fn unknown_versions_are_refused_before_their_fields() {
    for version in ["0", "2", "-1", "\"1\"", "1.0"] {
        // A version-2 file may have fields this build does not know; the version is the error.
        let text = format!("version = {version}\nid = \"x\"\nfuture_field = true\n");
        match refused(&text) {
            PolicyError::UnsupportedVersion {
                found,
                supported: 1,
            } => {
                assert_eq!(found, version)
            }
            other => panic!("{version}: {other:?}"),
        }
    }
    assert_eq!(FORMAT_VERSION, 1);
}

#[test]
fn unknown_fields_are_refused_everywhere() {
    let cases = [
        "[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.amount_sats = { max = 1 }\n".to_owned(),
        "[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.amount_sat = { max = 1, maximum = 2 }\n"
            .to_owned(),
        "[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.initiator = { names = [\"x\"], role = [\"y\"] }\n"
            .to_owned(),
        "[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.utc_time = { days = [\"mon\"], to = \"10:00\" }\n"
            .to_owned(),
        "[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.rolling_amount_sat = { seconds = 1, max = 1, window = 3 }\n"
            .to_owned(),
        // A condition written outside `when` must not be ignored.
        "[[rules]]\nname = \"r\"\naction = \"allow\"\namount_sat = { max = 1 }\n".to_owned(),
        "[[rule]]\nname = \"r\"\naction = \"allow\"\n".to_owned(),
    ];
    for case in cases {
        let error = refused_rules(&case);
        assert!(matches!(error, PolicyError::Syntax(_)), "{case}: {error:?}");
        assert!(
            error.to_string().contains("unknown field"),
            "{case}: {error}"
        );
    }
    let top_level = "version = 1\nid = \"x\"\ncolour = \"blue\"\n";
    assert!(
        refused(top_level)
            .to_string()
            .contains("unknown field `colour`")
    );
    let approver = format!(
        "version = 1\nid = \"x\"\n[[approvers]]\nname = \"a\"\npublic_key = \"{}\"\nemail = \"a@example.com\"\n",
        hex::encode(signing_key("a1").verifying_key().to_bytes())
    );
    assert!(matches!(refused(&approver), PolicyError::Syntax(_)));
}

#[test]
fn syntax_errors_name_the_line() {
    let text = "version = 1\nid = \"x\"\n[[rules]]\nname = \"r\"\naction = \"permit\"\n";
    let error = refused(text);
    let message = error.to_string();
    assert!(message.contains("line 5"), "{message}");
    assert!(message.contains("permit"), "{message}");
    let text = "version = 1\nid = \"x\"\n[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.utc_time = { days = [\"monday\"] }\n";
    assert!(refused(text).to_string().contains("line 6"));
    let text = "version = 1\nid = \"x\"\n[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen.amount_sat = { max = -1 }\n";
    assert!(matches!(refused(text), PolicyError::Syntax(_)));
}

#[test]
fn minimal_policy_loads() {
    let policy = Policy::from_toml_str("version = 1\nid = \"deny-all\"\n").unwrap();
    assert_eq!(policy.id(), "deny-all");
    assert_eq!(policy.version(), 1);
    assert!(policy.rules().is_empty());
    assert_eq!(policy.longest_window(), None);
}

// ---------------------------------------------------------------------------------------------
// validation

#[test]
fn invalid_ids_are_refused() {
    for id in ["", "has space", "ü", &"x".repeat(65)] {
        let error = refused(&format!("version = 1\nid = \"{id}\"\n"));
        assert!(
            matches!(error, PolicyError::InvalidId { .. }),
            "{id}: {error:?}"
        );
    }
}

#[test]
fn approver_errors() {
    let key = |name: &str| hex::encode(signing_key(name).verifying_key().to_bytes());
    let approvers = |list: &[(&str, String)]| {
        let mut text = String::from("version = 1\nid = \"x\"\n");
        for (name, key) in list {
            text.push_str(&format!(
                "[[approvers]]\nname = \"{name}\"\npublic_key = \"{key}\"\n"
            ));
        }
        text
    };
    assert!(matches!(
        refused(&approvers(&[("a", key("1")), ("a", key("2"))])),
        PolicyError::DuplicateApprover { name } if name == "a"
    ));
    assert!(matches!(
        refused(&approvers(&[("a", key("1")), ("b", key("1"))])),
        PolicyError::DuplicatePublicKey { first, second } if first == "a" && second == "b"
    ));
    assert!(matches!(
        refused(&approvers(&[("", key("1"))])),
        PolicyError::InvalidName { what, .. } if what == "approvers[0]"
    ));
    assert!(matches!(
        refused(&approvers(&[(" a", key("1"))])),
        PolicyError::InvalidName { .. }
    ));
    for bad in [
        "00".to_owned(),
        "zz".repeat(32),
        key("1")[..62].to_owned(),
        format!("{}00", key("1")),
    ] {
        let error = refused(&approvers(&[("a", bad.clone())]));
        assert!(
            matches!(error, PolicyError::InvalidPublicKey { .. }),
            "{bad}: {error:?}"
        );
        assert!(error.to_string().contains("approver 'a'"), "{error}");
    }
    // The identity point has small order: any signature "verifies" with a weak key in lax
    // implementations, so it is refused outright.
    let identity = format!("01{}", "00".repeat(31));
    assert!(matches!(
        refused(&approvers(&[("a", identity)])),
        PolicyError::InvalidPublicKey { problem, .. } if problem.contains("small-order")
    ));
    // Upper-case hex is fine and hashes like lower case.
    let lower = Policy::from_toml_str(&approvers(&[("a", key("1"))])).unwrap();
    let upper = Policy::from_toml_str(&approvers(&[("a", key("1").to_uppercase())])).unwrap();
    assert_eq!(lower.hash(), upper.hash());
}

#[test]
fn group_errors() {
    let base = header().replace("[groups]\n", "[groups]\nextra = GROUP\n");
    let with = |members: &str| base.replace("GROUP", members);
    assert!(matches!(refused(&with("[]")), PolicyError::EmptyGroup { group } if group == "extra"));
    assert!(matches!(
        refused(&with("[\"a1\", \"zed\"]")),
        PolicyError::UnknownGroupMember { group, member } if group == "extra" && member == "zed"
    ));
    assert!(matches!(
        refused(&with("[\"a1\", \"a1\"]")),
        PolicyError::DuplicateGroupMember { member, .. } if member == "a1"
    ));
}

#[test]
fn rule_name_errors() {
    let error = refused_rules(
        "[[rules]]\nname = \"r\"\naction = \"allow\"\n[[rules]]\nname = \"q\"\naction = \"allow\"\n[[rules]]\nname = \"r\"\naction = \"allow\"\n",
    );
    assert!(
        matches!(error, PolicyError::DuplicateRuleName { ref rule, first_index: 0 } if rule.index == 2)
    );
    assert!(error.to_string().starts_with("rules[2] 'r':"), "{error}");
    let error = refused_rules("[[rules]]\nname = \"\"\naction = \"allow\"\n");
    assert!(matches!(error, PolicyError::InvalidName { ref what, .. } if what == "rules[0]"));
}

fn one_rule(body: &str) -> PolicyError {
    refused_rules(&format!(
        "[[rules]]\nname = \"ok\"\naction = \"allow\"\n[[rules]]\nname = \"bad\"\n{body}\n"
    ))
}

/// Every validation error about a rule names it as `rules[1] 'bad'` and mentions `needle`.
fn assert_rule_error(body: &str, needle: &str) -> PolicyError {
    let error = one_rule(body);
    let message = error.to_string();
    assert!(message.starts_with("rules[1] 'bad': "), "{body}: {message}");
    assert!(message.contains(needle), "{body}: {message} lacks {needle}");
    error
}

#[test]
fn action_field_errors() {
    assert!(matches!(
        assert_rule_error("action = \"deny\"", "needs `reason`"),
        PolicyError::MissingActionField {
            field: "reason",
            ..
        }
    ));
    assert!(matches!(
        assert_rule_error("action = \"deny\"\nreason = \"  \"", "`reason` is empty"),
        PolicyError::EmptyReason { .. }
    ));
    assert!(matches!(
        assert_rule_error(
            "action = \"allow\"\nreason = \"x\"",
            "`reason` has no meaning"
        ),
        PolicyError::UnexpectedActionField {
            field: "reason",
            ..
        }
    ));
    assert!(matches!(
        assert_rule_error("action = \"allow\"\ngroup = \"g\"", "`group`"),
        PolicyError::UnexpectedActionField { field: "group", .. }
    ));
    assert!(matches!(
        assert_rule_error(
            "action = \"deny\"\nreason = \"x\"\napprovals = 1",
            "`approvals`"
        ),
        PolicyError::UnexpectedActionField {
            field: "approvals",
            ..
        }
    ));
    assert!(matches!(
        assert_rule_error(
            "action = \"require_approvals\"\napprovals = 1",
            "needs `group`"
        ),
        PolicyError::MissingActionField { field: "group", .. }
    ));
    assert!(matches!(
        assert_rule_error(
            "action = \"require_approvals\"\ngroup = \"g\"",
            "needs `approvals`"
        ),
        PolicyError::MissingActionField {
            field: "approvals",
            ..
        }
    ));
    assert!(matches!(
        assert_rule_error(
            "action = \"require_approvals\"\ngroup = \"g\"\napprovals = 1\nreason = \"x\"",
            "`reason`"
        ),
        PolicyError::UnexpectedActionField {
            field: "reason",
            ..
        }
    ));
    assert!(matches!(
        assert_rule_error(
            "action = \"require_approvals\"\ngroup = \"nobody\"\napprovals = 1",
            "not defined"
        ),
        PolicyError::UnknownGroup { .. }
    ));
}

#[test]
fn approvals_must_fit_the_group() {
    let rule = |k: u32| format!("action = \"require_approvals\"\ngroup = \"g\"\napprovals = {k}");
    assert!(matches!(
        assert_rule_error(&rule(0), "from 1 to 3"),
        PolicyError::ApprovalsOutOfRange {
            approvals: 0,
            members: 3,
            ..
        }
    ));
    assert!(matches!(
        assert_rule_error(&rule(4), "has 3 member(s)"),
        PolicyError::ApprovalsOutOfRange {
            approvals: 4,
            members: 3,
            ..
        }
    ));
    for k in 1..=3 {
        let text = format!("{}[[rules]]\nname = \"r\"\n{}\n", header(), rule(k));
        assert!(Policy::from_toml_str(&text).is_ok(), "k = {k}");
    }
}

#[test]
fn condition_errors_name_rule_and_field() {
    let allow = |when: &str| format!("action = \"allow\"\nwhen = {{ {when} }}");
    let cases: &[(&str, &str)] = &[
        (
            "amount_sat = {}",
            "`when.amount_sat` sets none of `min`, `max`",
        ),
        (
            "fee_sat = { min = 2, max = 1 }",
            "`when.fee_sat` has min 2 above max 1",
        ),
        ("fee_rate_sat_per_vb = {}", "`when.fee_rate_sat_per_vb`"),
        ("output_count = { min = 5, max = 4 }", "`when.output_count`"),
        (
            "rolling_amount_sat = { seconds = 0, max = 1 }",
            "seconds` is 0",
        ),
        (
            "rolling_amount_sat = { seconds = 60 }",
            "`when.rolling_amount_sat` sets none",
        ),
        (
            "rolling_amount_sat = { seconds = 60, min = 3, max = 2 }",
            "min 3 above max 2",
        ),
        ("keys = []", "`when.keys` is an empty list"),
        ("keys = [\"k\", \"k\"]", "lists \"k\" twice"),
        ("keys = [\"\"]", "`when.keys` has an empty entry"),
        (
            "keys = [\" hot-1\"]",
            "`when.keys`: name \" hot-1\" is invalid",
        ),
        ("keys = [\"hot-1 \"]", "without leading or trailing spaces"),
        (
            "keys = [\"ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789\", \"abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\"]",
            "lists \"abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789\" twice",
        ),
        ("initiator = {}", "`when.initiator` sets none"),
        (
            "initiator = { roles = [] }",
            "`when.initiator.roles` is an empty list",
        ),
        (
            "initiator = { names = [\"a\", \"a\"] }",
            "`when.initiator.names` lists \"a\" twice",
        ),
        (
            "any_output_to = []",
            "`when.any_output_to` is an empty list",
        ),
        (
            "any_output_to = [\"bcrt1qAbc\"]",
            "mixes upper and lower case",
        ),
        ("any_output_to = [\"bcrt1q abc\"]", "contains spaces"),
        ("any_output_to = [\"\"]", "is empty"),
        (
            "external_outputs_only_to = [\"bcrt1qabc\", \"BCRT1QABC\"]",
            "`when.external_outputs_only_to` lists \"bcrt1qabc\" twice",
        ),
        ("own_outputs_only = false", "own_outputs_only = false"),
        ("utc_time = {}", "`when.utc_time` sets none"),
        (
            "utc_time = { days = [] }",
            "`when.utc_time.days` is an empty list",
        ),
        (
            "utc_time = { days = [\"mon\", \"mon\"] }",
            "lists \"mon\" twice",
        ),
        (
            "utc_time = { from = \"09:00\" }",
            "only one of `from` and `until`",
        ),
        (
            "utc_time = { until = \"09:00\" }",
            "only one of `from` and `until`",
        ),
        (
            "utc_time = { from = \"09:00\", until = \"09:00\" }",
            "`from` equal to `until`",
        ),
        (
            "utc_time = { from = \"9:00\", until = \"10:00\" }",
            "`when.utc_time.from = \"9:00\"`",
        ),
        (
            "utc_time = { from = \"24:00\", until = \"10:00\" }",
            "utc_time.from",
        ),
        (
            "utc_time = { from = \"10:00\", until = \"24:01\" }",
            "utc_time.until",
        ),
        (
            "utc_time = { from = \"10:60\", until = \"11:00\" }",
            "utc_time.from",
        ),
        (
            "utc_time = { from = \"1a:00\", until = \"11:00\" }",
            "utc_time.from",
        ),
        (
            "utc_time = { from = \"+1:00\", until = \"11:00\" }",
            "utc_time.from",
        ),
    ];
    for (when, needle) in cases {
        assert_rule_error(&allow(when), needle);
    }
}

#[test]
fn errors_name_the_fix() {
    let error = assert_rule_error(
        "action = \"require_approvals\"\ngroup = \"g\"\napprovals = 5",
        "choose a number",
    );
    assert_eq!(
        error.to_string(),
        "rules[1] 'bad': `approvals = 5` but group 'g' has 3 member(s); choose a number from 1 to 3"
    );
}

#[test]
fn load_reports_the_path() {
    let error = Policy::load("/nonexistent/policy.toml").unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/policy.toml"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// the policy hash

const BASE: &str = r#"
version = 1
id = "hashing"
description = "hash tests"

[[approvers]]
name = "a"
public_key = "ccc57faf97bebf255015dcea26ce2b6b4d143e6defd1b773e0ad18bbbad2a3ab"

[[approvers]]
name = "b"
public_key = "ecdc65c6e75886ea60cef32db3856a163662ed8fe2827c5037974d57605ad390"

[groups]
g = ["a", "b"]

[[rules]]
name = "deny-list"
action = "deny"
reason = "listed"
when.any_output_to = ["bcrt1qaaa", "bcrt1qbbb"]

[[rules]]
name = "big"
action = "require_approvals"
group = "g"
approvals = 1
[rules.when]
keys = ["k1", "k2", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"]
initiator = { names = ["n"], roles = ["submitter"] }
amount_sat = { min = 1_000 }
rolling_amount_sat = { seconds = 3600, max = 5_000 }
fee_sat = { max = 100 }
fee_rate_sat_per_vb = { max = 10 }
output_count = { max = 3 }
utc_time = { days = ["mon", "tue"], from = "22:00", until = "02:00" }

[[rules]]
name = "small"
action = "allow"
when.external_outputs_only_to = ["bcrt1qccc"]
"#;

fn hash_of(text: &str) -> PolicyHash {
    match Policy::from_toml_str(text) {
        Ok(policy) => policy.hash(),
        Err(error) => panic!("{error}\n{text}"),
    }
}

#[test]
fn hash_ignores_layout_comments_and_order_of_sets() {
    let base = hash_of(BASE);
    let variants = [
        // comments and blank lines
        BASE.replace("[[rules]]\nname = \"big\"", "# the big one\n\n[[rules]]   # rule 2\nname = \"big\""),
        // whitespace around `=` and indentation
        BASE.replace("approvals = 1", "  approvals   =   1"),
        // number formatting
        BASE.replace("max = 5_000", "max = 5000"),
        // string quoting style
        BASE.replace("reason = \"listed\"", "reason = 'listed'"),
        // key order within a table
        BASE.replace("group = \"g\"\napprovals = 1", "approvals = 1\ngroup = \"g\""),
        // order of set-like lists
        BASE.replace("[\"k1\", \"k2\"", "[\"k2\", \"k1\"")
            .replace("[\"bcrt1qaaa\", \"bcrt1qbbb\"]", "[\"bcrt1qbbb\", \"bcrt1qaaa\"]")
            .replace("[\"mon\", \"tue\"]", "[\"tue\", \"mon\"]")
            .replace("g = [\"a\", \"b\"]", "g = [\"b\", \"a\"]"),
        // order of approvers
        BASE.replace(
            "[[approvers]]\nname = \"a\"\npublic_key = \"ccc57faf97bebf255015dcea26ce2b6b4d143e6defd1b773e0ad18bbbad2a3ab\"\n\n[[approvers]]\nname = \"b\"\npublic_key = \"ecdc65c6e75886ea60cef32db3856a163662ed8fe2827c5037974d57605ad390\"",
            "[[approvers]]\nname = \"b\"\npublic_key = \"ecdc65c6e75886ea60cef32db3856a163662ed8fe2827c5037974d57605ad390\"\n\n[[approvers]]\nname = \"a\"\npublic_key = \"ccc57faf97bebf255015dcea26ce2b6b4d143e6defd1b773e0ad18bbbad2a3ab\"",
        ),
        // dotted keys versus a sub-table
        BASE.replace("when.external_outputs_only_to = [\"bcrt1qccc\"]", "[rules.when]\nexternal_outputs_only_to = [\"bcrt1qccc\"]"),
        // bech32 case
        BASE.replace("bcrt1qccc", "BCRT1QCCC"),
        // hex case of a key id in `keys`
        BASE.replace("00112233445566778899aabbccddeeff0011", "00112233445566778899AABBCCDDEEFF0011"),
        // hex case of a key
        BASE.replace("ccc57faf97be", "CCC57FAF97BE"),
        // CRLF line endings
        BASE.replace('\n', "\r\n"),
    ];
    for (index, variant) in variants.iter().enumerate() {
        assert_ne!(
            variant.as_str(),
            BASE,
            "variant {index} did not change the text"
        );
        assert_eq!(hash_of(variant), base, "variant {index}:\n{variant}");
    }
}

#[test]
fn hash_changes_with_every_semantic_change() {
    let changes: &[(&str, &str)] = &[
        ("id = \"hashing\"", "id = \"hashing2\""),
        (
            "description = \"hash tests\"",
            "description = \"hash tests!\"",
        ),
        (
            "ccc57faf97bebf255015dcea26ce2b6b4d143e6defd1b773e0ad18bbbad2a3ab",
            "3138e8fbff61c884e5133bd3a7643acbc75190bad3fa2f36cd695b4c4fad3beb",
        ),
        ("g = [\"a\", \"b\"]", "g = [\"a\", \"b\"]\nh = [\"a\"]"),
        ("name = \"deny-list\"", "name = \"denylist\""),
        ("reason = \"listed\"", "reason = \"listed.\""),
        (
            "action = \"deny\"\nreason = \"listed\"",
            "action = \"allow\"",
        ),
        ("approvals = 1", "approvals = 2"),
        ("\"k1\", \"k2\", ", "\"k1\", "),
        ("\"k2\"", "\"K2\""),
        (
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            "00112233445566778899aabbccddeeff00112233445566778899aabbccddeefe",
        ),
        ("names = [\"n\"], ", ""),
        ("roles = [\"submitter\"]", "roles = [\"approver\"]"),
        ("\"bcrt1qaaa\", ", ""),
        (
            "amount_sat = { min = 1_000 }",
            "amount_sat = { min = 1_001 }",
        ),
        (
            "amount_sat = { min = 1_000 }",
            "amount_sat = { max = 1_000 }",
        ),
        ("seconds = 3600", "seconds = 3601"),
        ("max = 5_000", "max = 5_001"),
        (
            "fee_sat = { max = 100 }",
            "fee_sat = { max = 100, min = 0 }",
        ),
        (
            "fee_rate_sat_per_vb = { max = 10 }",
            "fee_rate_sat_per_vb = { max = 11 }",
        ),
        ("output_count = { max = 3 }", "output_count = { min = 3 }"),
        ("[\"mon\", \"tue\"]", "[\"mon\", \"wed\"]"),
        ("from = \"22:00\"", "from = \"22:01\""),
        ("until = \"02:00\"", "until = \"02:30\""),
        (
            "when.external_outputs_only_to = [\"bcrt1qccc\"]",
            "when.any_output_to = [\"bcrt1qccc\"]",
        ),
        (
            "when.external_outputs_only_to = [\"bcrt1qccc\"]",
            "when.own_outputs_only = true",
        ),
        ("fee_sat = { max = 100 }\n", ""),
    ];
    let base = hash_of(BASE);
    let mut seen = std::collections::BTreeSet::from([base]);
    for (from, to) in changes {
        assert!(BASE.contains(from), "{from}");
        let hash = hash_of(&BASE.replacen(from, to, 1));
        assert!(
            seen.insert(hash),
            "`{from}` -> `{to}` did not give a new hash"
        );
    }
    // Renaming an approver (and the group entry with it).
    let renamed = BASE
        .replacen("name = \"a\"\n", "name = \"a2\"\n", 1)
        .replace("g = [\"a\", ", "g = [\"a2\", ");
    assert!(seen.insert(hash_of(&renamed)));
    // Swapping two rules changes the hash: order decides.
    let small = BASE.find("[[rules]]\nname = \"small\"").unwrap();
    let big = BASE.find("[[rules]]\nname = \"big\"").unwrap();
    let swapped = format!("{}{}\n{}", &BASE[..big], &BASE[small..], &BASE[big..small]);
    assert!(seen.insert(hash_of(&swapped)));
}

#[test]
fn hash_covers_the_documented_canonical_encoding() {
    let policy = Policy::from_toml_str(BASE).unwrap();
    let bytes = policy.canonical_bytes();
    assert!(bytes.starts_with(b"strongroom-policy\0\0\0\0\x01"));
    assert_eq!(
        policy.hash().as_bytes(),
        &<[u8; 32]>::from(Sha256::digest(&bytes))
    );
}

#[test]
fn canonical_encoding_snapshot() {
    let minimal = Policy::from_toml_str("version = 1\nid = \"x\"\n").unwrap();
    let mut expected = b"strongroom-policy\0".to_vec();
    expected.extend_from_slice(&1u32.to_be_bytes()); // format version
    expected.extend_from_slice(&1u64.to_be_bytes()); // id length
    expected.extend_from_slice(b"x");
    expected.push(0); // no description
    expected.extend_from_slice(&0u64.to_be_bytes()); // approvers
    expected.extend_from_slice(&0u64.to_be_bytes()); // groups
    expected.extend_from_slice(&0u64.to_be_bytes()); // rules
    assert_eq!(minimal.canonical_bytes(), expected);

    let one_rule = Policy::from_toml_str(concat!(
        "version = 1\nid = \"x\"\n[[rules]]\nname = \"r\"\naction = \"deny\"\nreason = \"no\"\n",
        "when.fee_sat = { max = 5 }\n",
        "when.utc_time = { days = [\"sun\", \"mon\"], from = \"22:00\", until = \"02:00\" }\n",
    ))
    .unwrap();
    let bytes = one_rule.canonical_bytes();
    let rules_start = expected.len() - 8;
    let mut rule = Vec::new();
    rule.extend_from_slice(&1u64.to_be_bytes()); // one rule
    rule.extend_from_slice(&1u64.to_be_bytes());
    rule.extend_from_slice(b"r");
    rule.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // keys .. amount_sat absent, own_outputs_only 0
    rule.push(0); // rolling_amount_sat
    rule.extend_from_slice(&[1, 0, 1]); // fee_sat: present, no min, a max
    rule.extend_from_slice(&5u64.to_be_bytes());
    rule.extend_from_slice(&[0, 0]); // fee rate, output count
    rule.extend_from_slice(&[1, 1, 0b0100_0001, 1]); // utc_time: days Mon + Sun, hours
    rule.extend_from_slice(&(22u16 * 60).to_be_bytes());
    rule.extend_from_slice(&(2u16 * 60).to_be_bytes());
    rule.push(1); // deny
    rule.extend_from_slice(&2u64.to_be_bytes());
    rule.extend_from_slice(b"no");
    assert_eq!(&bytes[..rules_start], &expected[..rules_start]);
    assert_eq!(&bytes[rules_start..], &rule[..]);
}

#[test]
fn hash_text_round_trip() {
    let hash = hash_of(BASE);
    let text = hash.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<PolicyHash>().unwrap(), hash);
    assert_eq!(serde_json::to_string(&hash).unwrap(), format!("\"{text}\""));
    assert_eq!(
        serde_json::from_str::<PolicyHash>(&format!("\"{text}\"")).unwrap(),
        hash
    );
    assert!("abc".parse::<PolicyHash>().is_err());
}

// ---------------------------------------------------------------------------------------------
// the examples

fn examples() -> Vec<(String, Policy)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut loaded = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            match Policy::load(&path) {
                Ok(policy) => loaded.push((path.display().to_string(), policy)),
                Err(error) => panic!("{}: {error}", path.display()),
            }
        }
    }
    loaded
}

#[test]
fn every_example_loads_and_validates() {
    let examples = examples();
    assert!(examples.len() >= 3, "{examples:?}");
    for (path, policy) in &examples {
        assert!(!policy.rules().is_empty(), "{path}");
    }
}

fn dev() -> Policy {
    Policy::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dev.toml")).unwrap()
}

/// The documented dev-only approver secret: SHA-256 of "strongroom-dev-approver-N".
fn dev_key(n: u32) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("strongroom-dev-approver-{n}")).into())
}

#[test]
fn dev_example_is_pinned() {
    // A snapshot: changing the dev policy or the canonical encoding must be deliberate.
    assert_eq!(
        dev().hash().to_hex(),
        "6265db03b42bf1eb9bfae233d0c3731f35ae28f85b2e341c08e047a6790ed281"
    );
}

#[test]
fn dev_example_approver_keys_are_the_documented_dev_keys() {
    let policy = dev();
    for n in [1, 2] {
        let name = format!("dev-approver-{n}");
        let listed = policy.approver(&name).unwrap().public_key();
        assert_eq!(listed, &dev_key(n).verifying_key(), "{name}");
        assert!(policy.group("treasurers").unwrap().contains(&name));
    }
}

#[test]
fn dev_example_structure() {
    let policy = dev();
    let rules = policy.rules();
    assert_eq!(rules.len(), 4);
    assert!(matches!(rules[0].action, Action::Deny { .. }));
    assert!(matches!(rules[1].action, Action::Deny { .. }));
    assert_eq!(rules[2].action, Action::Allow);
    assert_eq!(
        rules[2].conditions.amount_sat,
        Some(Bounds {
            min: None,
            max: Some(1_000_000)
        })
    );
    assert_eq!(
        rules[3].action,
        Action::RequireApprovals {
            group: "treasurers".to_owned(),
            approvals: 1
        }
    );
}
