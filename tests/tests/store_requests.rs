//! Policy-gated signing requests in the node's PostgreSQL store against a real server:
//! resubmission, the request state machine (compare-and-set), votes that cannot change,
//! idempotent approvals and the spending window.

// Helpers outside #[test] functions unwrap too: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use std::ops::Not as _;

use strongroom_store::{
    NewSignRequest, NewVote, ReleaseGate, SIGN_REQUEST_STATES, SignRequestRecord, Store,
    StoreError, WindowSpend, sign_request_transition_allowed,
};
use strongroom_tests::postgres::Postgres;

async fn store(pg: &Postgres) -> Store {
    Store::connect(&pg.url(), 10).await.expect("connect")
}

async fn key(store: &Store, key_id: &str) {
    let participants = vec![
        "node-1".to_owned(),
        "node-2".to_owned(),
        "node-3".to_owned(),
    ];
    assert!(
        store
            .insert_key(key_id, "treasury", 2, &participants)
            .await
            .unwrap()
    );
}

/// Submits a request whose digest is `[n; 32]`, spending `spend_sat`.
async fn submit(
    store: &Store,
    request_id: &str,
    key_id: &str,
    n: u8,
    spend_sat: i64,
) -> SignRequestRecord {
    let summary = json!({ "spend_sat": spend_sat, "outputs": [] });
    let (rec, created) = store
        .insert_sign_request(&NewSignRequest {
            request_id,
            key_id,
            digest: &[n; 32],
            psbt: "cHNidP8B",
            memo: Some("payroll"),
            submitter: "ops",
            summary: &summary,
            expires_at: SystemTime::now() + Duration::from_secs(3_600),
        })
        .await
        .unwrap();
    assert!(created, "{request_id} is new");
    rec
}

async fn state(store: &Store, request_id: &str) -> String {
    store.sign_request(request_id).await.unwrap().unwrap().state
}

/// Forces a request into `state` (bypassing the state machine) to set up a test.
async fn force_state(store: &Store, request_id: &str, state: &str) {
    let c = store.client().await.unwrap();
    let signed: Option<&str> = (state == "signed").then_some("cHNidP8Bsigned");
    c.execute(
        "UPDATE sign_requests SET state = $2, signed_psbt = $3 WHERE request_id = $1",
        &[&request_id, &state, &signed],
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn resubmission_returns_the_existing_request() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    key(&s, "k1").await;
    key(&s, "k2").await;
    let first = submit(&s, "req-1", "k1", 1, 5_000).await;
    assert_eq!(first.state, "voting");
    assert_eq!(first.digest, vec![1u8; 32]);
    assert_eq!(first.memo.as_deref(), Some("payroll"));
    assert_eq!(first.summary["spend_sat"], json!(5_000));
    assert!(first.signed_psbt.is_none() && first.tx_hex.is_none() && first.error.is_none());

    // The same PSBT for the same key, under a new request id: the existing request.
    let summary = json!({ "spend_sat": 5_000 });
    let again = NewSignRequest {
        request_id: "req-1-again",
        key_id: "k1",
        digest: &[1; 32],
        psbt: "cHNidP8B",
        memo: None,
        submitter: "other-client",
        summary: &summary,
        expires_at: SystemTime::now() + Duration::from_secs(3_600),
    };
    let (rec, created) = s.insert_sign_request(&again).await.unwrap();
    assert!(!created);
    assert_eq!(rec, first);
    assert!(s.sign_request("req-1-again").await.unwrap().is_none());

    // The same digest for another key is another request.
    let (rec, created) = s
        .insert_sign_request(&NewSignRequest {
            request_id: "req-2",
            key_id: "k2",
            ..again
        })
        .await
        .unwrap();
    assert!(created);
    assert_eq!(rec.key_id, "k2");

    // A taken request id with another digest, a bad digest, an unknown key: refused.
    let err = s
        .insert_sign_request(&NewSignRequest {
            request_id: "req-1",
            digest: &[9; 32],
            ..again
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let err = s
        .insert_sign_request(&NewSignRequest {
            request_id: "req-short",
            digest: &[9; 31],
            ..again
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let err = s
        .insert_sign_request(&NewSignRequest {
            request_id: "req-nokey",
            key_id: "nope",
            digest: &[9; 32],
            ..again
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    // Concurrent resubmissions of one PSBT create exactly one request.
    let s = Arc::new(s);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let summary = json!({ "spend_sat": 1 });
            let (rec, created) = s
                .insert_sign_request(&NewSignRequest {
                    request_id: &format!("race-{i}"),
                    key_id: "k1",
                    digest: &[7; 32],
                    psbt: "cHNidP8B",
                    memo: None,
                    submitter: "ops",
                    summary: &summary,
                    expires_at: SystemTime::now() + Duration::from_secs(3_600),
                })
                .await
                .unwrap();
            (rec.request_id, created)
        }));
    }
    let mut ids = Vec::new();
    let mut created = 0;
    for t in tasks {
        let (id, c) = t.await.unwrap();
        ids.push(id);
        created += usize::from(c);
    }
    assert_eq!(created, 1);
    ids.dedup();
    assert_eq!(ids.len(), 1, "every submitter gets the same request");

    // Listing: newest first, filtered by state and submitter, limited.
    let all = s.sign_requests(None, None, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    assert_eq!(all[2].request_id, "req-1");
    assert_eq!(s.sign_requests(None, None, 1).await.unwrap().len(), 1);
    let by_other = s
        .sign_requests(None, Some("other-client"), 100)
        .await
        .unwrap();
    assert_eq!(by_other.len(), 1);
    assert_eq!(by_other[0].request_id, "req-2");
    s.transition_sign_request("req-1", &["voting"], "rejected", Some("policy: deny"))
        .await
        .unwrap();
    let rejected = s
        .sign_requests(Some("rejected"), Some("ops"), 100)
        .await
        .unwrap();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].error.as_deref(), Some("policy: deny"));
    assert!(
        s.sign_requests(Some("rejected"), Some("other-client"), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn every_allowed_transition_and_refused_ones() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    key(&s, "k1").await;
    let allowed: &[(&str, &str)] = &[
        ("voting", "awaiting_approvals"),
        ("voting", "approved"),
        ("voting", "rejected"),
        ("voting", "failed"),
        ("awaiting_approvals", "approved"),
        ("awaiting_approvals", "rejected"),
        ("awaiting_approvals", "failed"),
        ("approved", "signing"),
        ("approved", "failed"),
        ("signing", "signed"),
        ("signing", "failed"),
        ("signing", "approved"),
        ("voting", "expired"),
        ("awaiting_approvals", "expired"),
        ("approved", "expired"),
        ("signing", "expired"),
        ("voting", "cancelled"),
        ("awaiting_approvals", "cancelled"),
        ("approved", "cancelled"),
    ];
    // The table above is the whole state machine.
    for from in SIGN_REQUEST_STATES {
        for to in SIGN_REQUEST_STATES {
            assert_eq!(
                sign_request_transition_allowed(from, to),
                allowed.contains(&(from, to)),
                "{from} -> {to}"
            );
        }
    }

    for (i, (from, to)) in allowed.iter().enumerate() {
        let id = format!("req-{i}");
        submit(&s, &id, "k1", u8::try_from(i).unwrap(), 0).await;
        force_state(&s, &id, from).await;
        let error = (*to == "failed").then_some("boom");
        if *to == "signed" {
            // Signed only with the outputs.
            let err = s
                .transition_sign_request(&id, &[from], to, None)
                .await
                .unwrap_err();
            assert!(
                matches!(err, StoreError::Refused(ref m) if m.contains("finish_sign_request")),
                "{err}"
            );
            s.finish_sign_request(&id, "cHNidP8Bsigned", None)
                .await
                .unwrap();
        } else {
            assert!(
                s.transition_sign_request(&id, &[from], to, error)
                    .await
                    .unwrap(),
                "{from} -> {to}"
            );
        }
        let rec = s.sign_request(&id).await.unwrap().unwrap();
        assert_eq!(rec.state, *to);
        assert_eq!(rec.error.as_deref(), error);
        assert!(rec.updated_at >= rec.created_at);
        // Compare-and-set: the old state no longer matches.
        if *to != "signed" {
            assert!(
                !s.transition_sign_request(&id, &[from], to, None)
                    .await
                    .unwrap()
            );
        }
    }

    // A happy path end to end, with a retry by a new leader and several source states.
    let id = "req-path";
    submit(&s, id, "k1", 100, 0).await;
    for (from, to) in [
        (&["voting"][..], "awaiting_approvals"),
        (&["voting", "awaiting_approvals"][..], "approved"),
        (&["approved"][..], "signing"),
    ] {
        assert!(s.transition_sign_request(id, from, to, None).await.unwrap());
    }
    assert!(
        s.transition_sign_request(id, &["signing"], "approved", Some("leader lost"))
            .await
            .unwrap()
    );
    assert_eq!(
        s.sign_request(id).await.unwrap().unwrap().error.as_deref(),
        Some("leader lost")
    );
    assert!(
        s.transition_sign_request(id, &["approved"], "signing", None)
            .await
            .unwrap()
    );

    // Finishing: only from signing, with the outputs, idempotent with the same outputs.
    s.finish_sign_request(id, "cHNidP8Bsigned", Some("0200"))
        .await
        .unwrap();
    let rec = s.sign_request(id).await.unwrap().unwrap();
    assert_eq!(rec.state, "signed");
    assert_eq!(rec.signed_psbt.as_deref(), Some("cHNidP8Bsigned"));
    assert_eq!(rec.tx_hex.as_deref(), Some("0200"));
    assert!(rec.error.is_none());
    s.finish_sign_request(id, "cHNidP8Bsigned", Some("0200"))
        .await
        .unwrap();
    let err = s
        .finish_sign_request(id, "cHNidP8Bother", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let err = s
        .finish_sign_request("req-0", "cHNidP8Bsigned", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Refused(ref m) if m.contains("awaiting_approvals") && m.contains("signed")),
        "{err}"
    );
    let err = s
        .finish_sign_request("missing", "x", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");

    // Refused transitions name both states and change nothing.
    let id = "req-refused";
    submit(&s, id, "k1", 101, 0).await;
    for (from, to) in [
        ("voting", "signing"),
        ("voting", "signed"),
        ("awaiting_approvals", "voting"),
        ("approved", "signed"),
        ("signed", "failed"),
        ("rejected", "approved"),
        ("failed", "approved"),
        ("voting", "voting"),
    ] {
        let err = s
            .transition_sign_request(id, &[from], to, None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Refused(ref m) if m.contains(from) && m.contains(to)),
            "{from} -> {to}: {err}"
        );
    }
    // One bad source among good ones is refused too; so are unknown states.
    let err = s
        .transition_sign_request(id, &["voting", "signed"], "failed", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    let err = s
        .transition_sign_request(id, &["voting"], "done", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Refused(_)), "{err}");
    assert_eq!(state(&s, id).await, "voting");
    let err = s
        .transition_sign_request("missing", &["voting"], "failed", None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

#[tokio::test]
async fn concurrent_compare_and_set_has_one_winner() {
    let pg = Postgres::start().unwrap();
    let s = Arc::new(store(&pg).await);
    key(&s, "k1").await;
    submit(&s, "req-race", "k1", 1, 0).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.transition_sign_request("req-race", &["voting"], "approved", None)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one task moves the request");
    assert_eq!(state(&s, "req-race").await, "approved");
}

fn vote<'a>(
    request_id: &'a str,
    node_id: &'a str,
    decision: &'a str,
    reasons: &'a Value,
    signed_vote: &'a [u8],
) -> NewVote<'a> {
    NewVote {
        request_id,
        node_id,
        decision,
        reasons,
        policy_hash: &[3; 32],
        entropy: &[4; 32],
        signed_vote,
        signature: b"sig-1",
        allowed_at: None,
    }
}

#[tokio::test]
async fn a_node_cannot_change_its_vote_and_approvals_are_idempotent() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    key(&s, "k1").await;
    submit(&s, "req-1", "k1", 1, 0).await;
    let none = json!([]);
    let why = json!(["amount above 1 BTC needs 2 approvals"]);

    assert!(
        s.record_vote(&vote("req-1", "node-2", "allow", &none, b"vote-allow"))
            .await
            .unwrap()
    );
    assert!(
        s.record_vote(&vote(
            "req-1",
            "node-1",
            "needs_approvals",
            &why,
            b"vote-na"
        ))
        .await
        .unwrap()
    );
    // The same vote again (even with another valid signature): idempotent.
    assert!(
        !s.record_vote(&vote("req-1", "node-2", "allow", &none, b"vote-allow"))
            .await
            .unwrap()
    );
    let resigned = NewVote {
        signature: b"sig-2",
        ..vote("req-1", "node-2", "allow", &none, b"vote-allow")
    };
    assert!(!s.record_vote(&resigned).await.unwrap());
    // A different vote from the same node: refused, the first one stays.
    let err = s
        .record_vote(&vote("req-1", "node-2", "deny", &why, b"vote-deny"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Refused(ref m) if m.contains("node-2") && m.contains("cannot change")),
        "{err}"
    );
    let other_entropy = NewVote {
        entropy: &[5; 32],
        ..vote("req-1", "node-2", "allow", &none, b"vote-allow")
    };
    assert!(matches!(
        s.record_vote(&other_entropy).await,
        Err(StoreError::Refused(_))
    ));
    // A needs_approvals vote is superseded by the node's next vote (approvals arrived); the
    // new one then stands like any other.
    let upgraded = json!(["allowed once dev-approver-1 approved"]);
    assert!(
        s.record_vote(&vote(
            "req-1",
            "node-3",
            "needs_approvals",
            &why,
            b"vote3-na"
        ))
        .await
        .unwrap()
    );
    assert!(
        s.record_vote(&vote("req-1", "node-3", "allow", &upgraded, b"vote3-allow"))
            .await
            .unwrap()
    );
    assert!(matches!(
        s.record_vote(&vote(
            "req-1",
            "node-3",
            "needs_approvals",
            &why,
            b"vote3-na"
        ))
        .await,
        Err(StoreError::Refused(_))
    ));
    let votes = s.votes("req-1").await.unwrap();
    assert_eq!(votes.len(), 3);
    assert_eq!(votes[2].decision, "allow");
    assert_eq!(votes[2].reasons, upgraded);
    assert_eq!(
        (votes[0].node_id.as_str(), votes[0].decision.as_str()),
        ("node-1", "needs_approvals")
    );
    assert_eq!(votes[0].reasons, why);
    assert_eq!(
        (votes[1].node_id.as_str(), votes[1].decision.as_str()),
        ("node-2", "allow")
    );
    assert_eq!(votes[1].signed_vote, b"vote-allow");
    assert_eq!(votes[1].signature, b"sig-1");
    assert_eq!(votes[1].entropy, vec![4u8; 32]);
    assert_eq!(votes[1].policy_hash, vec![3u8; 32]);

    // Malformed votes and votes for unknown requests.
    for bad in [
        vote("req-1", "node-3", "maybe", &none, b"v"),
        vote("req-1", "node-3", "allow", &json!("not an array"), b"v"),
        vote("req-1", "node-3", "allow", &json!([1, 2]), b"v"),
        NewVote {
            entropy: &[1; 16],
            ..vote("req-1", "node-3", "allow", &none, b"v")
        },
    ] {
        let err = s.record_vote(&bad).await.unwrap_err();
        assert!(matches!(err, StoreError::Refused(_)), "{err}");
    }
    let err = s
        .record_vote(&vote("missing", "node-3", "allow", &none, b"v"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
    assert!(s.votes("missing").await.unwrap().is_empty());

    // Approvals: one per approver, idempotent, the first signature kept.
    assert!(s.record_approval("req-1", "bob", b"bob-sig").await.unwrap());
    assert!(
        s.record_approval("req-1", "alice", b"alice-sig")
            .await
            .unwrap()
    );
    assert!(!s.record_approval("req-1", "bob", b"bob-sig").await.unwrap());
    assert!(
        !s.record_approval("req-1", "bob", b"bob-sig2")
            .await
            .unwrap()
    );
    let approvals = s.approvals("req-1").await.unwrap();
    assert_eq!(approvals.len(), 2);
    assert_eq!(approvals[0].approver, "alice");
    assert_eq!(approvals[1].approver, "bob");
    assert_eq!(approvals[1].signature, b"bob-sig");
    let err = s
        .record_approval("missing", "bob", b"bob-sig")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

/// Records node-1's own vote to allow `request_id`, dated `at`.
async fn allow(s: &Store, request_id: &str, at: SystemTime) {
    let none = json!([]);
    assert!(
        s.record_vote(&NewVote {
            allowed_at: Some(at),
            ..vote(request_id, "node-1", "allow", &none, b"allow")
        })
        .await
        .unwrap()
    );
}

fn gate(request_id: &str, allowed_since: SystemTime) -> ReleaseGate<'_> {
    ReleaseGate {
        request_id,
        allowed_since,
        now: SystemTime::now(),
    }
}

#[tokio::test]
async fn the_window_counts_what_this_node_allowed_until_it_knows_nothing_can_be_released() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    key(&s, "k1").await;
    key(&s, "k2").await;
    let now = SystemTime::now();
    let hour_ago = now - Duration::from_secs(3_600);
    let counted = |spends: Vec<WindowSpend>| -> Vec<(String, u64)> {
        spends
            .into_iter()
            .filter(|w| w.counts(SystemTime::now()))
            .map(|w| (w.request_id, w.amount_sat))
            .collect()
    };
    for (i, id) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        submit(&s, id, "k1", u8::try_from(i).unwrap(), 1 << i).await;
    }
    submit(&s, "other-key", "k2", 9, 1_000_000).await;
    allow(&s, "other-key", now).await;
    // a: allowed, open. b: never allowed. c: allowed, then failed on a peer's word. d: allowed,
    // then expired here before anything was released. e: allowed, a partial released, then
    // failed by this node's own coordination.
    for id in ["a", "c", "d", "e"] {
        allow(&s, id, now).await;
    }
    assert!(
        s.end_sign_request("c", &["voting"], "failed", Some("peer says"), false)
            .await
            .unwrap()
    );
    assert!(
        s.end_sign_request("d", &["voting"], "expired", Some("deadline"), true)
            .await
            .unwrap()
    );
    s.check_release(&gate("e", hour_ago)).await.unwrap();
    assert!(
        s.end_sign_request("e", &["voting"], "failed", Some("own"), true)
            .await
            .unwrap()
    );
    let e = s.sign_request("e").await.unwrap().unwrap();
    assert!(e.released_at.is_some() && !e.spend_void, "{e:?}");
    assert_eq!(
        counted(s.window_spends("k1", hour_ago, None).await.unwrap()),
        vec![("a".into(), 1), ("c".into(), 4), ("e".into(), 16)]
    );
    // The request being evaluated again is left out; another key's spends never count.
    assert_eq!(
        counted(s.window_spends("k1", hour_ago, Some("a")).await.unwrap()),
        vec![("c".into(), 4), ("e".into(), 16)]
    );
    assert_eq!(
        counted(s.window_spends("k2", hour_ago, None).await.unwrap()),
        vec![("other-key".into(), 1_000_000)]
    );
    // A spend allowed before the window does not count.
    let later = now + Duration::from_secs(1);
    assert!(counted(s.window_spends("k1", later, None).await.unwrap()).is_empty());
}

#[tokio::test]
async fn a_partial_is_released_only_for_an_open_request_on_a_valid_vote_before_the_deadline() {
    let pg = Postgres::start().unwrap();
    let s = store(&pg).await;
    key(&s, "k1").await;
    let now = SystemTime::now();
    for (i, id) in ["ok", "stale", "never", "cancelled", "late"]
        .iter()
        .enumerate()
    {
        submit(&s, id, "k1", u8::try_from(i).unwrap(), 1).await;
    }
    allow(&s, "ok", now).await;
    allow(&s, "stale", now - Duration::from_secs(600)).await;
    allow(&s, "cancelled", now).await;
    allow(&s, "late", now).await;
    assert!(
        s.end_sign_request("cancelled", &["voting"], "cancelled", Some("by ops"), true)
            .await
            .unwrap()
    );
    let c = s.client().await.unwrap();
    c.execute(
        "UPDATE sign_requests SET expires_at = now() - interval '1 second' WHERE request_id = 'late'",
        &[],
    )
    .await
    .unwrap();
    let valid_since = now - Duration::from_secs(120);
    s.check_release(&gate("ok", valid_since)).await.unwrap();
    for (id, why) in [
        ("stale", "expired"),
        ("never", "not allowed"),
        ("cancelled", "cancelled"),
        ("late", "deadline"),
        ("missing", "unknown"),
    ] {
        let err = s.check_release(&gate(id, valid_since)).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Refused(_) | StoreError::NotFound(_)),
            "{id} ({why}): {err}"
        );
        if let Some(r) = s.sign_request(id).await.unwrap() {
            assert!(r.released_at.is_none(), "{id} ({why}) recorded a release");
        }
    }
    // A renewed vote releases again; a cancelled request cannot be renewed.
    assert!(s.renew_allowed("stale", SystemTime::now()).await.unwrap());
    s.check_release(&gate("stale", valid_since)).await.unwrap();
    assert!(
        !s.renew_allowed("cancelled", SystemTime::now())
            .await
            .unwrap()
    );
    // Once released, a request cannot be cancelled (it is signing) and its spend counts
    // whatever ends it.
    assert!(
        s.transition_sign_request("ok", &["voting"], "approved", None)
            .await
            .unwrap()
    );
    assert!(
        s.transition_sign_request("ok", &["approved"], "signing", None)
            .await
            .unwrap()
    );
    assert!(
        s.end_sign_request(
            "ok",
            &["voting", "awaiting_approvals", "approved"],
            "cancelled",
            None,
            true
        )
        .await
        .unwrap()
        .not()
    );
    assert!(
        s.end_sign_request("ok", &["signing"], "expired", None, true)
            .await
            .unwrap()
    );
    let ok = s.sign_request("ok").await.unwrap().unwrap();
    assert!(!ok.spend_void && ok.released_at.is_some(), "{ok:?}");
}
