//! The request decisions with a controlled clock: votes that expire, time rules at signing
//! time, deadlines, cancellations, a peer's `failed`, and what the window counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use strongroom_policies::{Context, Initiator, Policy, TxOutput, TxSummary};
use strongroom_store::WindowSpend;

use super::*;

const VALID: Duration = Duration::from_secs(60);

/// Sunday 2026-12-06 22:59:00 UTC.
fn sunday_2259() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_597_940)
}

fn view(state: RequestState, allowed_at: Option<SystemTime>, now: SystemTime) -> OwnView {
    OwnView {
        state,
        allowed_at,
        released: false,
        expires_at: now + Duration::from_secs(3_600),
    }
}

fn vote(node: &'static str, decision: VoteDecision) -> CountedVote<'static> {
    const REASONS: &[String] = &[];
    CountedVote {
        node,
        decision,
        reasons: REASONS,
    }
}

#[test]
fn sunday_is_a_sunday() {
    // 1970-01-01 was a Thursday; days since then modulo 7 = 3 is a Sunday.
    let secs = sunday_2259().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert_eq!((secs / 86_400) % 7, 3);
    assert_eq!(secs % 86_400, 22 * 3_600 + 59 * 60);
}

#[test]
fn a_vote_within_its_validity_releases() {
    let now = sunday_2259();
    let v = view(
        RequestState::Approved,
        Some(now - Duration::from_secs(59)),
        now,
    );
    assert!(matches!(
        release_verdict(&v, now, VALID),
        ReleaseVerdict::Release { allowed_since } if allowed_since == now - VALID
    ));
}

#[test]
fn a_vote_older_than_its_validity_is_not_used() {
    let now = sunday_2259();
    let v = view(
        RequestState::Approved,
        Some(now - Duration::from_secs(61)),
        now,
    );
    assert_eq!(
        release_verdict(&v, now, VALID),
        ReleaseVerdict::EvaluateAgain
    );
}

#[test]
fn a_maintenance_window_that_starts_between_vote_and_signing_stops_the_signing() {
    let policy = Policy::from_toml_str(
        r#"
version = 1
id = "maintenance"

[[rules]]
name = "maintenance-window"
action = "deny"
reason = "weekly maintenance window"
when.utc_time = { days = ["sun"], from = "23:00", until = "01:00" }

[[rules]]
name = "small"
action = "allow"
when.amount_sat = { max = 1_000_000 }
"#,
    )
    .unwrap();
    let tx = TxSummary {
        key_id: "k".into(),
        key_name: "hot-1".into(),
        input_count: 1,
        total_input_sat: 600_000,
        outputs: vec![TxOutput {
            address: "bcrt1qsfyza8dnx9dhudwpg5pxq5q4k9e7kug3ys8qcf".into(),
            amount_sat: 500_000,
            is_change: false,
        }],
        fee_sat: 100_000,
        vsize: 110,
    };
    let ctx = |at: SystemTime| Context {
        initiator: Initiator {
            name: "wallet".into(),
            roles: vec!["submitter".into()],
        },
        now: at.duration_since(UNIX_EPOCH).unwrap().as_secs(),
        request_digest: [7; 32],
        window_history: Vec::new(),
        approvals: Vec::new(),
    };
    // The vote: 22:59, before the window.
    let voted = sunday_2259();
    assert!(strongroom_policies::evaluate(&policy, &tx, &ctx(voted)).is_allow());
    // The signing: 23:01, the vote two minutes old.
    let signing = voted + Duration::from_secs(120);
    let v = view(RequestState::Approved, Some(voted), signing);
    assert_eq!(
        release_verdict(&v, signing, VALID),
        ReleaseVerdict::EvaluateAgain
    );
    let again = strongroom_policies::evaluate(&policy, &tx, &ctx(signing));
    match after_evaluating_again(&again, signing, VALID) {
        ReleaseVerdict::Refuse(reason) => {
            assert!(reason.contains("maintenance-window"), "{reason}")
        }
        other => panic!("signing went ahead in the maintenance window: {other:?}"),
    }
    // After the window the same request is allowed again on a fresh vote.
    let later = voted + Duration::from_secs(2 * 3_600 + 120);
    let again = strongroom_policies::evaluate(&policy, &tx, &ctx(later));
    assert_eq!(
        after_evaluating_again(&again, later, VALID),
        ReleaseVerdict::Release {
            allowed_since: later - VALID
        }
    );
}

#[test]
fn a_request_past_its_time_ends_expired() {
    let now = sunday_2259();
    for state in RequestState::ALL {
        let mut v = view(state, Some(now), now);
        v.expires_at = now;
        let ending = on_tick(&v, now);
        if state.is_open() {
            assert_eq!(
                ending,
                Some(Ending {
                    to: RequestState::Expired,
                    void_unreleased: true
                })
            );
            assert!(matches!(
                release_verdict(&v, now, VALID),
                ReleaseVerdict::Refuse(_)
            ));
        } else {
            assert_eq!(ending, None, "{state} is final");
        }
        // Before the deadline nothing happens.
        v.expires_at = now + Duration::from_secs(1);
        assert_eq!(on_tick(&v, now), None);
    }
}

#[test]
fn a_cancelled_request_is_never_signed() {
    let now = sunday_2259();
    for state in [
        RequestState::Voting,
        RequestState::AwaitingApprovals,
        RequestState::Approved,
    ] {
        let ending = on_cancel(&view(state, Some(now), now)).unwrap();
        assert_eq!(ending.to, RequestState::Cancelled);
        let cancelled = view(ending.to, Some(now), now);
        assert!(matches!(
            release_verdict(&cancelled, now, VALID),
            ReleaseVerdict::Refuse(_)
        ));
        assert!(!accepts_signatures(ending.to));
    }
    assert!(on_cancel(&view(RequestState::Signing, Some(now), now)).is_err());
    assert!(on_cancel(&view(RequestState::Signed, Some(now), now)).is_err());
    assert!(on_cancel(&view(RequestState::Cancelled, Some(now), now)).is_err());
}

#[test]
fn a_peers_failed_never_changes_a_signed_request_nor_voids_a_spend() {
    let now = sunday_2259();
    assert!(matches!(
        on_peer_failed(&view(RequestState::Signed, Some(now), now)),
        PeerFailed::Refuse(_)
    ));
    for state in [
        RequestState::Voting,
        RequestState::AwaitingApprovals,
        RequestState::Approved,
        RequestState::Signing,
    ] {
        assert_eq!(
            on_peer_failed(&view(state, Some(now), now)),
            PeerFailed::Fail(Ending {
                to: RequestState::Failed,
                void_unreleased: false
            })
        );
    }
    for state in [
        RequestState::Rejected,
        RequestState::Failed,
        RequestState::Expired,
        RequestState::Cancelled,
    ] {
        assert_eq!(
            on_peer_failed(&view(state, Some(now), now)),
            PeerFailed::AlreadyEnded
        );
    }
}

fn spend(state: &str, released: bool, void: bool, expires_at: SystemTime) -> WindowSpend {
    WindowSpend {
        request_id: "r".into(),
        allowed_at: sunday_2259(),
        amount_sat: 600_000,
        state: state.into(),
        released,
        spend_void: void,
        expires_at,
    }
}

#[test]
fn the_window_counts_what_this_node_allowed_until_it_knows_nothing_can_be_released() {
    let now = sunday_2259() + Duration::from_secs(10);
    let later = now + Duration::from_secs(60);
    let earlier = now - Duration::from_secs(1);
    // Open or signed: counts.
    for state in [
        "voting",
        "awaiting_approvals",
        "approved",
        "signing",
        "signed",
    ] {
        assert!(spend(state, false, false, later).counts(now), "{state}");
        assert!(spend(state, false, false, earlier).counts(now), "{state}");
    }
    // A partial released: counts whatever the state and whoever ended it.
    for state in ["failed", "expired", "cancelled", "rejected"] {
        assert!(spend(state, true, false, earlier).counts(now), "{state}");
        assert!(spend(state, true, true, earlier).counts(now), "{state}");
    }
    // Failed on a peer's word (not void): counts until this node's own deadline.
    assert!(spend("failed", false, false, later).counts(now));
    assert!(!spend("failed", false, false, earlier).counts(now));
    // Ended by this node before it released anything: no longer counts.
    for state in ["failed", "expired", "cancelled", "rejected"] {
        assert!(!spend(state, false, true, later).counts(now), "{state}");
    }
}

#[test]
fn the_tally_settles_on_the_threshold() {
    use VoteDecision::{Allow, Deny, NeedsApprovals};
    assert_eq!(
        tally(3, 2, &[vote("a", Allow), vote("b", Allow)]),
        Tally::Approved
    );
    assert_eq!(tally(3, 2, &[vote("a", Allow)]), Tally::Pending);
    assert_eq!(
        tally(3, 2, &[vote("a", Allow), vote("b", Deny)]),
        Tally::Pending
    );
    assert_eq!(
        tally(3, 2, &[vote("a", Allow), vote("b", Deny), vote("c", Allow)]),
        Tally::Approved
    );
    assert!(matches!(
        tally(3, 2, &[vote("a", Deny), vote("b", Deny)]),
        Tally::Rejected(_)
    ));
    assert_eq!(
        tally(
            3,
            2,
            &[vote("a", NeedsApprovals), vote("b", NeedsApprovals)]
        ),
        Tally::AwaitingApprovals
    );
    assert_eq!(
        tally(
            3,
            2,
            &[vote("a", NeedsApprovals), vote("b", Deny), vote("c", Allow)]
        ),
        Tally::AwaitingApprovals
    );
    assert!(matches!(
        tally(
            3,
            2,
            &[vote("a", NeedsApprovals), vote("b", Deny), vote("c", Deny)]
        ),
        Tally::Rejected(_)
    ));
    // 3 of 3: one deny rejects.
    assert!(matches!(
        tally(3, 3, &[vote("a", Allow), vote("b", Deny)]),
        Tally::Rejected(_)
    ));
}

#[test]
fn states_round_trip_through_their_names() {
    for s in RequestState::ALL {
        assert_eq!(RequestState::parse(s.as_str()), Some(s));
        assert_eq!(
            s.is_open(),
            strongroom_store::OPEN_STATES.contains(&s.as_str())
        );
    }
    assert_eq!(
        RequestState::ALL.map(RequestState::as_str).to_vec(),
        strongroom_store::SIGN_REQUEST_STATES.to_vec()
    );
}
