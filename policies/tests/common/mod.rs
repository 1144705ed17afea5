//! Shared fixtures: a policy header with approvers and groups, transaction and context builders.

#![cfg(test)]
#![allow(dead_code, reason = "each test binary uses a different subset")]

use ed25519_dalek::{Signer, SigningKey};
use sha2::{Digest, Sha256};
use strongroom_policies::{
    Context, Decision, Initiator, Policy, RuleRef, TxOutput, TxSummary, VerifiedApproval,
    WindowEntry, verify_approval,
};

/// The name of the key the fixtures sign with.
pub(crate) const KEY_NAME: &str = "key-1";
/// Its id.
pub(crate) const KEY_ID: &str = "1c0ffee1c0ffee1c0ffee1c0ffee1c0ffee1c0ffee1c0ffee1c0ffee1c0ffee1";
/// Another key of the cluster: its name.
pub(crate) const OTHER_KEY_NAME: &str = "key-2";
/// Its id.
pub(crate) const OTHER_KEY_ID: &str =
    "2badc0de2badc0de2badc0de2badc0de2badc0de2badc0de2badc0de2badc0de";

/// `tx` signed by the other key instead.
pub(crate) fn with_other_key(mut tx: TxSummary) -> TxSummary {
    tx.key_id = OTHER_KEY_ID.to_owned();
    tx.key_name = OTHER_KEY_NAME.to_owned();
    tx
}

/// Monday 2024-01-01 00:00:00 UTC.
pub(crate) const MONDAY: u64 = 1_704_067_200;

/// A unix time: `day` days after Monday 2024-01-01 (0 = Monday), at `hh:mm:ss` UTC.
pub(crate) fn at(day: u64, hh: u64, mm: u64, ss: u64) -> u64 {
    MONDAY + day * 86_400 + hh * 3_600 + mm * 60 + ss
}

/// The digest of the request the fixtures decide.
pub(crate) const DIGEST: [u8; 32] = [7; 32];

/// A deterministic test approver key.
pub(crate) fn signing_key(name: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("test-approver-{name}")).into())
}

/// Policy header: approvers `a1`..`a3` in group `g`, `b1` in group `other`, `a1` also in `mixed`.
pub(crate) fn header() -> String {
    let mut text = String::from("version = 1\nid = \"test\"\n");
    for name in ["a1", "a2", "a3", "b1"] {
        let key = hex::encode(signing_key(name).verifying_key().to_bytes());
        text.push_str(&format!(
            "[[approvers]]\nname = \"{name}\"\npublic_key = \"{key}\"\n"
        ));
    }
    text.push_str(
        "[groups]\ng = [\"a1\", \"a2\", \"a3\"]\nother = [\"b1\"]\nmixed = [\"a1\", \"b1\"]\n",
    );
    text
}

/// Parses a policy made of the fixture header and `rules` (TOML `[[rules]]` tables).
pub(crate) fn policy(rules: &str) -> Policy {
    let text = format!("{}{rules}", header());
    match Policy::from_toml_str(&text) {
        Ok(policy) => policy,
        Err(error) => panic!("fixture policy refused: {error}\n{text}"),
    }
}

/// A single rule that allows when `when` (an inline TOML table body) holds.
pub(crate) fn allow_when(when: &str) -> Policy {
    policy(&format!(
        "[[rules]]\nname = \"r\"\naction = \"allow\"\nwhen = {{ {when} }}\n"
    ))
}

/// Whether the single-rule policy `allow_when(when)` allows `tx` in `ctx`.
pub(crate) fn holds(when: &str, tx: &TxSummary, ctx: &Context) -> bool {
    let policy = allow_when(when);
    match strongroom_policies::evaluate(&policy, tx, ctx) {
        Decision::Allow { .. } => true,
        Decision::Deny { rule: None, .. } => false,
        other => panic!("unexpected decision {other:?}"),
    }
}

/// A transaction with the given outputs `(address, amount, is_change)`, fee and vsize; the
/// input total is computed so the summary adds up.
pub(crate) fn tx(outputs: &[(&str, u64, bool)], fee_sat: u64, vsize: u64) -> TxSummary {
    let outputs: Vec<TxOutput> = outputs
        .iter()
        .map(|&(address, amount_sat, is_change)| TxOutput {
            address: address.to_owned(),
            amount_sat,
            is_change,
        })
        .collect();
    let total_input_sat = outputs.iter().map(|o| o.amount_sat).sum::<u64>() + fee_sat;
    TxSummary {
        key_id: KEY_ID.to_owned(),
        key_name: KEY_NAME.to_owned(),
        input_count: 1,
        total_input_sat,
        outputs,
        fee_sat,
        vsize,
    }
}

/// A payment of `amount` to an outside address plus change, fee 1,000 sat at 10 sat/vB.
pub(crate) fn pay(amount: u64) -> TxSummary {
    tx(
        &[(PAYEE, amount, false), (CHANGE, 50_000, true)],
        1_000,
        100,
    )
}

/// An outside address used by the fixtures.
pub(crate) const PAYEE: &str = "bcrt1qjuygc2kwgh2qhgte5cw05eah4hddxst8h0lqs3";
/// Another outside address.
pub(crate) const PAYEE_2: &str = "bcrt1qmtfq7653q58yfxfk4wsfgjunadk0haw8y9r0qm";
/// An address of the key's own change descriptor.
pub(crate) const CHANGE: &str = "bcrt1qj6906xev7j3xnckv3xsnlzeemyaqqcggqvvyw5";

/// A context: client `alice` with role `submitter`, Wednesday 12:00 UTC, no history, no approvals.
pub(crate) fn ctx() -> Context {
    Context {
        initiator: Initiator {
            name: "alice".to_owned(),
            roles: vec!["submitter".to_owned()],
        },
        now: at(2, 12, 0, 0),
        request_digest: DIGEST,
        window_history: Vec::new(),
        approvals: Vec::new(),
    }
}

/// `ctx()` with the given window history `(time, amount)`.
pub(crate) fn ctx_with_history(now: u64, history: &[(u64, u64)]) -> Context {
    Context {
        now,
        window_history: history
            .iter()
            .map(|&(time, amount_sat)| WindowEntry { time, amount_sat })
            .collect(),
        ..ctx()
    }
}

/// A verified approval of `digest` by fixture approver `name`.
pub(crate) fn approval(policy: &Policy, name: &str, digest: &[u8; 32]) -> VerifiedApproval {
    let signature = signing_key(name).sign(digest).to_bytes();
    match verify_approval(policy, name, digest, &signature) {
        Ok(approval) => approval,
        Err(error) => panic!("fixture approval refused: {error}"),
    }
}

/// A `RuleRef`.
pub(crate) fn rule(index: usize, name: &str) -> RuleRef {
    RuleRef {
        index,
        name: name.to_owned(),
    }
}
