//! Every example policy in `policies/examples/`, loaded from disk, allows what its comments say
//! it allows and denies what they say it denies, with the summaries a node would build (key
//! ids and names as the node records them, mainnet addresses for the mainnet policies).
#![cfg(test)]

mod common;

use std::path::Path;

use common::{DIGEST, at, rule};
use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use strongroom_policies::{
    Context, DEFAULT_DENY_REASON, Decision, Initiator, Policy, TxSummary, VerifiedApproval,
    WindowEntry, evaluate, verify_approval,
};

// ---------------------------------------------------------------------------------------------
// fixtures

fn example_text(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

fn load(file: &str) -> Policy {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(file);
    match Policy::load(&path) {
        Ok(policy) => policy,
        Err(error) => panic!("{}: {error}", path.display()),
    }
}

/// A test key standing in for an example approver's.
fn test_approver(name: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("examples-test-approver-{name}")).into())
}

/// The example with its approver keys replaced by test keys, as its comments tell operators to
/// do with theirs. Only the keys change: the rules are the file's.
fn with_test_approvers(file: &str) -> Policy {
    let original = load(file);
    let mut text = example_text(file);
    for approver in original.approvers() {
        let listed = hex::encode(approver.public_key().as_bytes());
        let replacement = hex::encode(test_approver(approver.name()).verifying_key().as_bytes());
        assert!(text.contains(&listed), "{file}: {}", approver.name());
        text = text.replace(&listed, &replacement);
    }
    let policy = match Policy::from_toml_str(&text) {
        Ok(policy) => policy,
        Err(error) => panic!("{file} with test keys: {error}"),
    };
    assert_eq!(policy.rules(), original.rules(), "{file}");
    policy
}

fn approval(policy: &Policy, name: &str) -> VerifiedApproval {
    let signature = test_approver(name).sign(&DIGEST).to_bytes();
    match verify_approval(policy, name, &DIGEST, &signature) {
        Ok(approval) => approval,
        Err(error) => panic!("approval by {name}: {error}"),
    }
}

/// A summary for key `(id, name)` paying `outputs` `(address, amount, is_change)`; the inputs
/// add up to the outputs plus the fee.
fn summary(
    key: (&str, &str),
    outputs: &[(&str, u64, bool)],
    fee_sat: u64,
    vsize: u64,
) -> TxSummary {
    TxSummary {
        key_id: key.0.to_owned(),
        key_name: key.1.to_owned(),
        input_count: 2,
        ..common::tx(outputs, fee_sat, vsize)
    }
}

fn context(client: &str, roles: &[&str], now: u64, history: &[(u64, u64)]) -> Context {
    Context {
        initiator: Initiator {
            name: client.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        },
        now,
        request_digest: DIGEST,
        window_history: history
            .iter()
            .map(|&(time, amount_sat)| WindowEntry { time, amount_sat })
            .collect(),
        approvals: Vec::new(),
    }
}

fn with_approvals(mut ctx: Context, approvals: Vec<VerifiedApproval>) -> Context {
    ctx.approvals = approvals;
    ctx
}

/// The name of the rule that decided, or `"default deny"`.
fn decided_by(decision: &Decision) -> String {
    decision
        .rule()
        .map_or_else(|| "default deny".to_owned(), |r| r.name.clone())
}

fn default_deny() -> Decision {
    Decision::Deny {
        rule: None,
        reason: DEFAULT_DENY_REASON.to_owned(),
    }
}

const BTC: u64 = 100_000_000;

// Mainnet addresses (valid bech32 / bech32m).
const CUSTOMER: &str = "bc1q5afvq9ajwvzdssxk94aqpmd9lu8n00u5m0uglf";
const CUSTOMER_TAPROOT: &str = "bc1phy96sp3c7rvyd8gx2tgsykdpsc4kj2kfdhh8z6n4e7c7962gp0fsj7u4e6";
const SUPPLIER: &str = "bc1qxjjluhyr3q75nvh2a3ren3akg452lux8ej9pxa";

// ---------------------------------------------------------------------------------------------
// dev.toml (regtest): small spends free, large spends one treasurer, denylist, fee-rate cap

/// The dev cluster's key, as `POST /v1/keys` would record it.
const DEV_KEY: (&str, &str) = (
    "3f6d2a1b9c8e7f60a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2",
    "dev-key",
);
const DEV_PAYEE: &str = "bcrt1qjuygc2kwgh2qhgte5cw05eah4hddxst8h0lqs3";
const DEV_PAYEE_2: &str = "bcrt1qmtfq7653q58yfxfk4wsfgjunadk0haw8y9r0qm";
const DEV_CHANGE: &str = "bcrt1qj6906xev7j3xnckv3xsnlzeemyaqqcggqvvyw5";
const DEV_DENIED: &str = "bcrt1qsfyza8dnx9dhudwpg5pxq5q4k9e7kug3ys8qcf";

/// The documented dev-only approver secret: SHA-256 of "strongroom-dev-approver-N".
fn dev_approver(n: u32) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("strongroom-dev-approver-{n}")).into())
}

fn dev_approval(policy: &Policy, n: u32) -> VerifiedApproval {
    let signature = dev_approver(n).sign(&DIGEST).to_bytes();
    match verify_approval(policy, &format!("dev-approver-{n}"), &DIGEST, &signature) {
        Ok(approval) => approval,
        Err(error) => panic!("dev approval {n}: {error}"),
    }
}

fn dev_pay(amount: u64) -> TxSummary {
    summary(
        DEV_KEY,
        &[(DEV_PAYEE, amount, false), (DEV_CHANGE, 50_000, true)],
        1_410,
        141,
    )
}

fn dev_ctx() -> Context {
    context("wallet", &["submitter"], at(2, 12, 0, 0), &[])
}

#[test]
fn dev_small_spends_are_allowed_without_approvals() {
    let policy = load("dev.toml");
    for amount in [1, 546, 999_999, 1_000_000] {
        assert_eq!(
            evaluate(&policy, &dev_pay(amount), &dev_ctx()),
            Decision::Allow {
                rule: rule(2, "small-spend"),
                approved_by: vec![]
            },
            "{amount}"
        );
    }
    // Change does not count toward the amount.
    let with_big_change = summary(
        DEV_KEY,
        &[
            (DEV_PAYEE, 1_000_000, false),
            (DEV_CHANGE, 50_000_000, true),
        ],
        500,
        141,
    );
    assert!(evaluate(&policy, &with_big_change, &dev_ctx()).is_allow());
}

#[test]
fn dev_large_spends_need_one_treasurer() {
    let policy = load("dev.toml");
    let large = dev_pay(1_000_001);
    assert_eq!(
        evaluate(&policy, &large, &dev_ctx()),
        Decision::NeedsApprovals {
            rule: rule(3, "large-spend"),
            group: "treasurers".to_owned(),
            required: 1,
            have: 0,
            approved_by: vec![],
        }
    );
    // The amount sums every non-change output.
    let split = summary(
        DEV_KEY,
        &[(DEV_PAYEE, 500_001, false), (DEV_PAYEE_2, 500_000, false)],
        500,
        141,
    );
    assert!(matches!(
        evaluate(&policy, &split, &dev_ctx()),
        Decision::NeedsApprovals { .. }
    ));
    let approved = with_approvals(dev_ctx(), vec![dev_approval(&policy, 2)]);
    assert_eq!(
        evaluate(&policy, &large, &approved),
        Decision::Allow {
            rule: rule(3, "large-spend"),
            approved_by: vec!["dev-approver-2".to_owned()]
        }
    );
}

#[test]
fn dev_denylist_wins_over_everything() {
    let policy = load("dev.toml");
    let expected = Decision::Deny {
        rule: Some(rule(0, "denylisted-destination")),
        reason: "an output pays an address on the denylist".to_owned(),
    };
    let small = summary(
        DEV_KEY,
        &[(DEV_DENIED, 1_000, false), (DEV_CHANGE, 1_000, true)],
        500,
        141,
    );
    assert_eq!(evaluate(&policy, &small, &dev_ctx()), expected);
    let mixed = summary(
        DEV_KEY,
        &[(DEV_PAYEE, 1_000, false), (DEV_DENIED, 1, false)],
        500,
        141,
    );
    assert_eq!(evaluate(&policy, &mixed, &dev_ctx()), expected);
    // Approvals do not help.
    let large = summary(DEV_KEY, &[(DEV_DENIED, 5_000_000, false)], 500, 141);
    let approved = with_approvals(dev_ctx(), vec![dev_approval(&policy, 1)]);
    assert_eq!(evaluate(&policy, &large, &approved), expected);
    // Written in upper case by the renderer: still denied.
    let upper = summary(
        DEV_KEY,
        &[(&DEV_DENIED.to_ascii_uppercase(), 1_000, false)],
        500,
        141,
    );
    assert_eq!(evaluate(&policy, &upper, &approved), expected);
}

#[test]
fn dev_fee_rate_cap() {
    let policy = load("dev.toml");
    let at_fee = |fee| summary(DEV_KEY, &[(DEV_PAYEE, 1_000, false)], fee, 141);
    assert!(evaluate(&policy, &at_fee(141_000), &dev_ctx()).is_allow()); // exactly 1,000 sat/vB
    let expected = Decision::Deny {
        rule: Some(rule(1, "fee-rate-above-1000")),
        reason: "the fee rate is above 1,000 sat/vB".to_owned(),
    };
    assert_eq!(evaluate(&policy, &at_fee(141_001), &dev_ctx()), expected);
    // Large and high-fee: the fee-rate deny comes before the approval rule.
    let large = summary(DEV_KEY, &[(DEV_PAYEE, 5_000_000, false)], 200_000, 141);
    assert_eq!(evaluate(&policy, &large, &dev_ctx()), expected);
    // Denylisted and high-fee: the denylist is rule 0.
    let both = summary(DEV_KEY, &[(DEV_DENIED, 1_000, false)], 200_000, 141);
    assert!(matches!(evaluate(&policy, &both, &dev_ctx()).rule(), Some(r) if r.index == 0));
}

// ---------------------------------------------------------------------------------------------
// hot-wallet.toml (mainnet): key `hot-1`, withdrawals by `withdrawal-service`

const HOT: (&str, &str) = (
    "8c1f4e2d7a9b3c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6",
    "hot-1",
);
const HOT_CHANGE: &str = "bc1q8fhw6yzx2uwgkcjtz20qdyr2pm5jux9k6z9rm6";
const HOT_DENIED: &str = "bc1pnv3qxuqxax0ltjdu0eu9tmzwp43h8vs662ee4cq9ac3kt03lu7uqn75g8x";

/// A withdrawal of `amount` to a customer with change, at 12 sat/vB (141 vB, P2WPKH 1-in 2-out).
fn withdrawal(amount: u64) -> TxSummary {
    summary(
        HOT,
        &[(CUSTOMER, amount, false), (HOT_CHANGE, 3 * BTC, true)],
        1_692,
        141,
    )
}

/// The withdrawal service on a Wednesday at noon, with `history` spent by `hot-1`.
fn service_at(now: u64, history: &[(u64, u64)]) -> Context {
    context("withdrawal-service", &["submitter"], now, history)
}

const WEDNESDAY_NOON: u64 = 1_704_283_200; // 2024-01-03 12:00 UTC

#[test]
fn hot_wallet_signs_small_withdrawals_automatically() {
    let policy = load("hot-wallet.toml");
    assert_eq!(WEDNESDAY_NOON, at(2, 12, 0, 0));
    let ctx = service_at(WEDNESDAY_NOON, &[]);
    for amount in [546, 10_000_000, 50_000_000] {
        assert_eq!(
            evaluate(&policy, &withdrawal(amount), &ctx),
            Decision::Allow {
                rule: rule(4, "automatic-withdrawal"),
                approved_by: vec![]
            },
            "{amount}"
        );
    }
    // A batch to several customers, taproot included.
    let batch = summary(
        HOT,
        &[
            (CUSTOMER, 20_000_000, false),
            (CUSTOMER_TAPROOT, 25_000_000, false),
            (HOT_CHANGE, BTC, true),
        ],
        3_000,
        200,
    );
    assert!(evaluate(&policy, &batch, &ctx).is_allow());
}

#[test]
fn hot_wallet_needs_one_on_call_approval_above_half_a_bitcoin() {
    let policy = with_test_approvers("hot-wallet.toml");
    let ctx = service_at(WEDNESDAY_NOON, &[]);
    for amount in [50_000_001, 5 * BTC] {
        assert_eq!(
            evaluate(&policy, &withdrawal(amount), &ctx),
            Decision::NeedsApprovals {
                rule: rule(5, "large-withdrawal"),
                group: "oncall".to_owned(),
                required: 1,
                have: 0,
                approved_by: vec![],
            },
            "{amount}"
        );
    }
    let approved = with_approvals(ctx, vec![approval(&policy, "oncall-secondary")]);
    assert_eq!(
        evaluate(&policy, &withdrawal(2 * BTC), &approved),
        Decision::Allow {
            rule: rule(5, "large-withdrawal"),
            approved_by: vec!["oncall-secondary".to_owned()]
        }
    );
}

#[test]
fn hot_wallet_refuses_more_than_five_bitcoin_even_approved() {
    let policy = with_test_approvers("hot-wallet.toml");
    let ctx = with_approvals(
        service_at(WEDNESDAY_NOON, &[]),
        vec![
            approval(&policy, "oncall-primary"),
            approval(&policy, "oncall-secondary"),
        ],
    );
    let decision = evaluate(&policy, &withdrawal(5 * BTC + 1), &ctx);
    assert_eq!(
        decision,
        Decision::Deny {
            rule: Some(rule(6, "above-hot-wallet-limits")),
            reason:
                "above the hot wallet's limits; move larger amounts through the treasury policy"
                    .to_owned(),
        }
    );
}

#[test]
fn hot_wallet_hourly_cap_sends_further_withdrawals_to_on_call() {
    let policy = load("hot-wallet.toml");
    let now = WEDNESDAY_NOON;
    // 4.5 BTC in the last hour: 0.5 BTC more reaches 5 BTC exactly and is still automatic.
    let spent = [(now - 3_000, 250_000_000), (now - 60, 200_000_000)];
    assert_eq!(
        decided_by(&evaluate(
            &policy,
            &withdrawal(50_000_000),
            &service_at(now, &spent)
        )),
        "automatic-withdrawal"
    );
    // One satoshi more in the hour: an on-call operator must approve.
    let one_more = [(now - 3_000, 250_000_001), (now - 60, 200_000_000)];
    assert!(matches!(
        evaluate(&policy, &withdrawal(50_000_000), &service_at(now, &one_more)),
        Decision::NeedsApprovals { ref rule, .. } if rule.name == "large-withdrawal"
    ));
    // Spends an hour old or older no longer count toward the hour.
    let an_hour_ago = [(now - 3_600, 500_000_000)];
    assert_eq!(
        decided_by(&evaluate(
            &policy,
            &withdrawal(50_000_000),
            &service_at(now, &an_hour_ago)
        )),
        "automatic-withdrawal"
    );
}

#[test]
fn hot_wallet_daily_cap_on_approved_withdrawals() {
    let policy = with_test_approvers("hot-wallet.toml");
    let now = WEDNESDAY_NOON;
    let oncall = |history: &[(u64, u64)]| {
        with_approvals(
            service_at(now, history),
            vec![approval(&policy, "oncall-primary")],
        )
    };
    // 45 BTC earlier today (more than an hour ago) and 5 BTC now: 50 BTC, allowed with approval.
    let earlier = [(now - 20 * 3_600, 40 * BTC), (now - 2 * 3_600, 5 * BTC)];
    assert!(evaluate(&policy, &withdrawal(5 * BTC), &oncall(&earlier)).is_allow());
    // One satoshi over 50 BTC in the rolling day: refused, approval or not.
    let more = [(now - 20 * 3_600, 40 * BTC + 1), (now - 2 * 3_600, 5 * BTC)];
    assert_eq!(
        decided_by(&evaluate(&policy, &withdrawal(5 * BTC), &oncall(&more))),
        "above-hot-wallet-limits"
    );
    // A day later the old spends have left the window.
    let yesterday = [(now - 86_400, 50 * BTC)];
    assert!(evaluate(&policy, &withdrawal(5 * BTC), &oncall(&yesterday)).is_allow());
}

#[test]
fn hot_wallet_signs_nothing_in_the_maintenance_window() {
    let policy = with_test_approvers("hot-wallet.toml");
    let expected = Decision::Deny {
        rule: Some(rule(1, "maintenance-window")),
        reason: "weekly maintenance window (Sunday 23:00 to Monday 01:00 UTC)".to_owned(),
    };
    // Sunday 23:00 (inclusive) to Monday 01:00 (exclusive), small and approved alike.
    for now in [
        at(6, 23, 0, 0),
        at(6, 23, 30, 0),
        at(7, 0, 0, 0),
        at(7, 0, 59, 59),
    ] {
        assert_eq!(
            evaluate(&policy, &withdrawal(1_000_000), &service_at(now, &[])),
            expected,
            "{now}"
        );
        let approved = with_approvals(
            service_at(now, &[]),
            vec![approval(&policy, "oncall-primary")],
        );
        assert_eq!(
            evaluate(&policy, &withdrawal(2 * BTC), &approved),
            expected,
            "{now}"
        );
    }
    // Just outside, and the same hours on other days: signed.
    for now in [
        at(6, 22, 59, 59),
        at(7, 1, 0, 0),
        at(7, 23, 30, 0),
        at(1, 0, 30, 0),
    ] {
        assert!(
            evaluate(&policy, &withdrawal(1_000_000), &service_at(now, &[])).is_allow(),
            "{now}"
        );
    }
}

#[test]
fn hot_wallet_denylist_fee_rate_and_batch_size() {
    let policy = load("hot-wallet.toml");
    let ctx = service_at(WEDNESDAY_NOON, &[]);
    let denylisted = summary(
        HOT,
        &[
            (CUSTOMER, 1_000_000, false),
            (HOT_DENIED, 1_000_000, false),
            (HOT_CHANGE, BTC, true),
        ],
        2_000,
        172,
    );
    assert_eq!(
        decided_by(&evaluate(&policy, &denylisted, &ctx)),
        "denylist"
    );
    let upper = summary(
        HOT,
        &[(&HOT_DENIED.to_ascii_uppercase(), 1_000, false)],
        2_000,
        172,
    );
    assert_eq!(decided_by(&evaluate(&policy, &upper, &ctx)), "denylist");

    // 150 sat/vB is fine, anything above is not.
    let at_fee = |fee| summary(HOT, &[(CUSTOMER, 1_000_000, false)], fee, 141);
    assert!(evaluate(&policy, &at_fee(141 * 150), &ctx).is_allow());
    assert_eq!(
        decided_by(&evaluate(&policy, &at_fee(141 * 150 + 1), &ctx)),
        "fee-rate-above-150"
    );

    // 100 outputs is a batch; 101 is refused.
    let batch = |outputs: usize| {
        let mut list = vec![(CUSTOMER, 100_000, false); outputs - 1];
        list.push((HOT_CHANGE, BTC, true));
        summary(HOT, &list, 31 * outputs as u64 * 20, 31 * outputs as u64)
    };
    assert!(evaluate(&policy, &batch(100), &ctx).is_allow());
    assert_eq!(
        decided_by(&evaluate(&policy, &batch(101), &ctx)),
        "batch-too-large"
    );
}

#[test]
fn hot_wallet_allows_only_the_withdrawal_service_on_hot_1() {
    let policy = load("hot-wallet.toml");
    let limits = Decision::Deny {
        rule: Some(rule(6, "above-hot-wallet-limits")),
        reason: "above the hot wallet's limits; move larger amounts through the treasury policy"
            .to_owned(),
    };
    // Another client, even one with the submitter role.
    let other_client = context("ops-desk", &["submitter"], WEDNESDAY_NOON, &[]);
    assert_eq!(
        evaluate(&policy, &withdrawal(1_000_000), &other_client),
        limits
    );
    // Another key: the allow rule names `hot-1`, so it allows no other key.
    for key in [
        (
            "d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3",
            "hot-2",
        ),
        (
            "d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3",
            "treasury",
        ),
        // Names compare exactly.
        (
            "d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3",
            "Hot-1",
        ),
    ] {
        let mut tx = withdrawal(1_000_000);
        tx.key_id = key.0.to_owned();
        tx.key_name = key.1.to_owned();
        assert_eq!(
            evaluate(&policy, &tx, &service_at(WEDNESDAY_NOON, &[])),
            limits,
            "{key:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// treasury.toml (mainnet): key `treasury`

const TREASURY: (&str, &str) = (
    "0b7e5d3c1a2f4e6d8c0b9a7f5e3d1c2b4a6f8e0d9c7b5a3f1e2d4c6b8a0f9e7d",
    "treasury",
);
const TREASURY_CHANGE: &str = "bc1qn6h24lt56scvw2s8c6vmlgdagjkunzxhxfzdnw";
const TREASURY_CHANGE_2: &str = "bc1qww608q7hrfdm46dde0678elx6hnncmlgty0jnt";
const EXCHANGE: &str = "bc1qjuygc2kwgh2qhgte5cw05eah4hddxst8hxkjx0";
const PAYROLL: &str = "bc1qmtfq7653q58yfxfk4wsfgjunadk0haw82vlsc7";
const COLD_STORAGE: &str = "bc1qcdc5lhnfau4fvhx30a68kq3v7cc9vfywpe7vndpwn75uavug8k0se29k5f";
const SANCTIONED: &str = "bc1qvwz8t7z4tgaelpze560czuc34ul9zaazspzy03ecfyzh0rn96cfs0p8q0q";
const SANCTIONED_TAPROOT: &str = "bc1pg73a946vdq5q0llnxehut6v263y5ffnkdh03h3lwwju6hd9htnys7fdac8";

/// A payment of `amount` to `payee` with change, at 20 sat/vB.
fn payment(payee: &str, amount: u64) -> TxSummary {
    summary(
        TREASURY,
        &[(payee, amount, false), (TREASURY_CHANGE, 30 * BTC, true)],
        3_600,
        180,
    )
}

/// Every output back to the treasury's own descriptors.
fn consolidation(fee_sat: u64, vsize: u64) -> TxSummary {
    summary(
        TREASURY,
        &[
            (TREASURY_CHANGE, 12 * BTC, true),
            (TREASURY_CHANGE_2, BTC, true),
        ],
        fee_sat,
        vsize,
    )
}

fn treasury_ctx(now: u64, history: &[(u64, u64)]) -> Context {
    context("payments-app", &["submitter"], now, history)
}

fn treasurers(policy: &Policy, names: &[&str], now: u64, history: &[(u64, u64)]) -> Context {
    with_approvals(
        treasury_ctx(now, history),
        names.iter().map(|name| approval(policy, name)).collect(),
    )
}

#[test]
fn treasury_allowlisted_payees_need_two_of_three_treasurers() {
    let policy = with_test_approvers("treasury.toml");
    let now = WEDNESDAY_NOON;
    for payee in [EXCHANGE, PAYROLL, COLD_STORAGE] {
        assert_eq!(
            evaluate(&policy, &payment(payee, 10 * BTC), &treasury_ctx(now, &[])),
            Decision::NeedsApprovals {
                rule: rule(7, "allowlisted-payee"),
                group: "treasurers".to_owned(),
                required: 2,
                have: 0,
                approved_by: vec![],
            },
            "{payee}"
        );
    }
    let one = treasurers(&policy, &["bob"], now, &[]);
    assert!(matches!(
        evaluate(&policy, &payment(EXCHANGE, 10 * BTC), &one),
        Decision::NeedsApprovals { have: 1, .. }
    ));
    let two = treasurers(&policy, &["carol", "alice"], now, &[]);
    assert_eq!(
        evaluate(&policy, &payment(EXCHANGE, 10 * BTC), &two),
        Decision::Allow {
            rule: rule(7, "allowlisted-payee"),
            approved_by: vec!["alice".to_owned(), "carol".to_owned()]
        }
    );
}

#[test]
fn treasury_other_payees_need_all_three_and_a_lower_cap() {
    let policy = with_test_approvers("treasury.toml");
    let now = WEDNESDAY_NOON;
    let pay_supplier = payment(SUPPLIER, 2 * BTC);
    assert!(matches!(
        evaluate(&policy, &pay_supplier, &treasurers(&policy, &["alice", "bob"], now, &[])),
        Decision::NeedsApprovals { ref rule, required: 3, have: 2, .. } if rule.name == "other-payee"
    ));
    assert_eq!(
        evaluate(
            &policy,
            &pay_supplier,
            &treasurers(&policy, &["alice", "bob", "carol"], now, &[])
        ),
        Decision::Allow {
            rule: rule(8, "other-payee"),
            approved_by: vec!["alice".to_owned(), "bob".to_owned(), "carol".to_owned()]
        }
    );
    // A payment mixing an allowlisted and another payee counts as "anywhere else".
    let mixed = summary(
        TREASURY,
        &[(EXCHANGE, BTC, false), (SUPPLIER, BTC, false)],
        3_600,
        180,
    );
    assert_eq!(
        decided_by(&evaluate(&policy, &mixed, &treasury_ctx(now, &[]))),
        "other-payee"
    );
    // Above 2 BTC elsewhere, or more than 3 outputs: nothing allows it.
    let all_three = treasurers(&policy, &["alice", "bob", "carol"], now, &[]);
    assert_eq!(
        evaluate(&policy, &payment(SUPPLIER, 2 * BTC + 1), &all_three),
        default_deny()
    );
    let four_outputs = summary(
        TREASURY,
        &[
            (SUPPLIER, BTC / 10, false),
            (CUSTOMER, BTC / 10, false),
            (CUSTOMER_TAPROOT, BTC / 10, false),
            (TREASURY_CHANGE, BTC, true),
        ],
        5_000,
        250,
    );
    assert_eq!(evaluate(&policy, &four_outputs, &all_three), default_deny());
    // Allowlisted payments above 10 BTC fall to the other-payee cap and are refused.
    assert_eq!(
        evaluate(&policy, &payment(COLD_STORAGE, 10 * BTC + 1), &all_three),
        default_deny()
    );
}

#[test]
fn treasury_pays_only_in_business_hours_on_weekdays() {
    let policy = with_test_approvers("treasury.toml");
    let tx = payment(EXCHANGE, BTC);
    let at_time = |now| {
        evaluate(
            &policy,
            &tx,
            &treasurers(&policy, &["alice", "bob"], now, &[]),
        )
    };
    // Monday 08:00 to Friday 17:59:59, 08:00 inclusive, 18:00 exclusive.
    for now in [at(0, 8, 0, 0), at(2, 12, 0, 0), at(4, 17, 59, 59)] {
        assert!(at_time(now).is_allow(), "{now}");
    }
    let after_hours = Decision::Deny {
        rule: Some(rule(4, "after-hours")),
        reason: "payments are signed only between 08:00 and 18:00 UTC".to_owned(),
    };
    for now in [
        at(0, 7, 59, 59),
        at(2, 18, 0, 0),
        at(2, 23, 0, 0),
        at(3, 3, 0, 0),
    ] {
        assert_eq!(at_time(now), after_hours, "{now}");
    }
    let weekend = Decision::Deny {
        rule: Some(rule(5, "weekend")),
        reason: "payments are not signed at weekends".to_owned(),
    };
    for now in [at(5, 8, 0, 0), at(5, 12, 0, 0), at(6, 17, 59, 59)] {
        assert_eq!(at_time(now), weekend, "{now}");
    }
}

#[test]
fn treasury_consolidations_need_no_approvals_at_any_hour() {
    let policy = load("treasury.toml");
    for now in [
        at(2, 12, 0, 0),
        at(2, 23, 0, 0),
        at(5, 3, 0, 0),
        at(6, 12, 0, 0),
    ] {
        assert_eq!(
            evaluate(
                &policy,
                &consolidation(10_000, 400),
                &treasury_ctx(now, &[])
            ),
            Decision::Allow {
                rule: rule(3, "consolidation"),
                approved_by: vec![]
            },
            "{now}"
        );
    }
    // Up to 50 sat/vB; a costlier one is handled as a payment (business hours, approvals).
    assert!(
        evaluate(
            &policy,
            &consolidation(20_000, 400),
            &treasury_ctx(at(2, 23, 0, 0), &[])
        )
        .is_allow()
    );
    assert_eq!(
        decided_by(&evaluate(
            &policy,
            &consolidation(20_001, 400),
            &treasury_ctx(at(2, 23, 0, 0), &[])
        )),
        "after-hours"
    );
    assert!(matches!(
        evaluate(
            &policy,
            &consolidation(20_001, 400),
            &treasury_ctx(at(2, 12, 0, 0), &[])
        ),
        Decision::NeedsApprovals { .. }
    ));
    // The rule is the treasury key's: another key's consolidation is not signed by it.
    let mut other = consolidation(10_000, 400);
    other.key_id = HOT.0.to_owned();
    other.key_name = HOT.1.to_owned();
    assert_eq!(
        decided_by(&evaluate(
            &policy,
            &other,
            &treasury_ctx(at(2, 23, 0, 0), &[])
        )),
        "after-hours"
    );
    assert_eq!(
        evaluate(&policy, &other, &treasury_ctx(at(2, 12, 0, 0), &[])),
        default_deny()
    );
}

#[test]
fn treasury_caps_the_rolling_day_at_25_bitcoin() {
    let policy = with_test_approvers("treasury.toml");
    let now = WEDNESDAY_NOON;
    let approved = |history: &[(u64, u64)]| treasurers(&policy, &["alice", "bob"], now, history);
    let tx = payment(EXCHANGE, 5 * BTC);
    // 20 BTC within the last 24 hours and 5 BTC now: exactly 25 BTC.
    let earlier = [(now - 23 * 3_600, 12 * BTC), (now - 3_600, 8 * BTC)];
    assert!(evaluate(&policy, &tx, &approved(&earlier)).is_allow());
    let over = [(now - 23 * 3_600, 12 * BTC + 1), (now - 3_600, 8 * BTC)];
    assert_eq!(
        evaluate(&policy, &tx, &approved(&over)),
        Decision::Deny {
            rule: Some(rule(6, "daily-cap")),
            reason: "the treasury key would send more than 25 BTC within 24 hours".to_owned(),
        }
    );
    // 24 hours later a spend no longer counts.
    let old = [(now - 86_400, 25 * BTC)];
    assert!(evaluate(&policy, &tx, &approved(&old)).is_allow());
}

#[test]
fn treasury_denylist_and_fee_caps_always_win() {
    let policy = with_test_approvers("treasury.toml");
    let everyone = |now| treasurers(&policy, &["alice", "bob", "carol"], now, &[]);
    let now = WEDNESDAY_NOON;
    for sanctioned in [SANCTIONED, SANCTIONED_TAPROOT] {
        let tx = summary(
            TREASURY,
            &[(EXCHANGE, BTC, false), (sanctioned, 1_000, false)],
            3_600,
            180,
        );
        assert_eq!(
            evaluate(&policy, &tx, &everyone(now)),
            Decision::Deny {
                rule: Some(rule(0, "compliance-denylist")),
                reason: "an output pays an address on the compliance denylist".to_owned(),
            }
        );
    }
    // A denylisted address as change is refused too (the denylist checks every output).
    let as_change = summary(TREASURY, &[(SANCTIONED, BTC, true)], 1_000, 180);
    assert_eq!(
        decided_by(&evaluate(&policy, &as_change, &everyone(at(2, 23, 0, 0)))),
        "compliance-denylist"
    );
    // 300 sat/vB is the highest rate signed.
    let at_fee = |fee| summary(TREASURY, &[(EXCHANGE, BTC, false)], fee, 180);
    assert!(evaluate(&policy, &at_fee(180 * 300), &everyone(now)).is_allow());
    assert_eq!(
        decided_by(&evaluate(&policy, &at_fee(180 * 300 + 1), &everyone(now))),
        "fee-rate-above-300"
    );
    // The absolute fee cap holds even for a consolidation at a low rate.
    assert!(evaluate(&policy, &consolidation(500_000, 20_000), &everyone(now)).is_allow());
    assert_eq!(
        decided_by(&evaluate(
            &policy,
            &consolidation(500_001, 20_000),
            &everyone(now)
        )),
        "fee-above-0.005-btc"
    );
}

#[test]
fn treasury_payments_come_from_submitters_with_the_treasury_key() {
    let policy = with_test_approvers("treasury.toml");
    let now = WEDNESDAY_NOON;
    // A client without the submitter role.
    let mut auditor = treasurers(&policy, &["alice", "bob", "carol"], now, &[]);
    auditor.initiator = Initiator {
        name: "audit-desk".to_owned(),
        roles: vec!["auditor".to_owned()],
    };
    assert_eq!(
        evaluate(&policy, &payment(EXCHANGE, BTC), &auditor),
        default_deny()
    );
    // Another key, approvals or not.
    let mut hot = payment(EXCHANGE, BTC);
    hot.key_id = HOT.0.to_owned();
    hot.key_name = HOT.1.to_owned();
    assert_eq!(
        evaluate(
            &policy,
            &hot,
            &treasurers(&policy, &["alice", "bob", "carol"], now, &[])
        ),
        default_deny()
    );
}
