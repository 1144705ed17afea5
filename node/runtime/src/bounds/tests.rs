use super::*;
use crate::votes::VoteDecision;

const REQUEST: &str = "0123456789abcdef0123456789abcdef";
const ID: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const SIG: &str = "42dc670d7b52799427ca858e1536bc0133806f4a50016df97523a653583412fca792fdec907745b779ad0f69dadb264c5c92a973f7c31b535cd6c33f10d7bbc7";

fn limits() -> PeerLimits {
    PeerLimits::new(3)
}

fn vote(reasons: Vec<String>) -> SignedVote {
    SignedVote::from_parts(
        Vote {
            cluster_id: "prod-eu".into(),
            request_id: REQUEST.into(),
            request_digest: [1; 32],
            policy_hash: [2; 32],
            decision: VoteDecision::Deny,
            reasons,
            entropy: [3; 32],
            node_id: "node-2".into(),
            time_unix_ms: 1_704_283_200_000,
        },
        vec![9; SIGNATURE_LEN],
    )
}

fn propose(psbt: String, memo: Option<String>, submitter: &str) -> Request {
    Request::Propose {
        request_id: REQUEST.into(),
        key_id: ID.into(),
        psbt,
        memo,
        submitter: submitter.into(),
    }
}

/// One message of every kind, as an honest node sends it, several at their limits.
fn honest() -> Vec<Request> {
    vec![
        Request::Status,
        Request::Attestation,
        Request::AuxInfo {
            session_id: ID.into(),
        },
        Request::Keygen {
            session_id: ID.into(),
            key_id: ID.into(),
            name: "Treasury (cold) — 2024 ✓".into(),
            threshold: 2,
            aux_id: ID.into(),
        },
        Request::Keygen {
            session_id: ID.into(),
            key_id: ID.to_uppercase(),
            name: "k".repeat(MAX_KEY_NAME_BYTES),
            threshold: 3,
            aux_id: ID.into(),
        },
        Request::Presign {
            session_id: ID.into(),
            key_id: ID.into(),
            signers: vec![0, 2],
        },
        Request::Reserve {
            request_id: REQUEST.into(),
            key_id: ID.into(),
            signers: vec![1, 2],
            presig_id: None,
            target: SignTarget::Input { input_index: 7 },
        },
        Request::Reserve {
            request_id: REQUEST.into(),
            key_id: ID.into(),
            signers: vec![0, 1, 2],
            presig_id: Some(ID.into()),
            target: SignTarget::Digest {
                path: "m/0/17".into(),
                digest: ID.into(),
            },
        },
        Request::Partial {
            request_id: REQUEST.into(),
            key_id: ID.into(),
            presig_id: ID.into(),
            target: SignTarget::Digest {
                path: format!("m{}", "/4294967295".repeat(255)),
                digest: ID.into(),
            },
            entropy: vec![(0, ID.into()), (2, ID.into())],
        },
        Request::Discard {
            request_id: REQUEST.into(),
            presig_id: ID.into(),
        },
        Request::Discard {
            request_id: format!("{REQUEST}/4294967295"),
            presig_id: ID.into(),
        },
        // The leader discarding what a failed presign session left.
        Request::Discard {
            request_id: PRESIGN_FAILED.into(),
            presig_id: ID.into(),
        },
        Request::InteractiveSign {
            session_id: ID.into(),
            request_id: REQUEST.into(),
            key_id: ID.into(),
            signers: vec![0, 1],
            target: SignTarget::Input { input_index: 0 },
        },
        propose("cHNidP8BAH0CAAAAAf".into(), None, "withdrawal-service"),
        propose(
            "A".repeat(limits().max_psbt_chars),
            Some("é".repeat(MAX_MEMO_CHARS)),
            "w",
        ),
        Request::Sequence {
            request_id: REQUEST.into(),
            key_id: ID.into(),
            psbt: "cHNidP8BAH0CAAAAAf".into(),
            memo: Some("payroll 2024-01".into()),
            submitter: "payments-app".into(),
        },
        Request::Votes {
            request_id: REQUEST.into(),
            votes: vec![],
        },
        Request::Votes {
            request_id: REQUEST.into(),
            votes: vec![
                vote(vec!["denied by rules[3] 'daily-cap': over 25 BTC".into()]),
                vote(vec!["x\ny\tz".into(); MAX_REASONS]),
                vote(vec!["ü".repeat(MAX_TEXT_CHARS)]),
            ],
        },
        Request::Approve {
            request_id: REQUEST.into(),
            approver: "alice".into(),
            signature: SIG.into(),
        },
        Request::Approve {
            request_id: REQUEST.into(),
            approver: "on-call primary".into(),
            signature: format!(" {}\n", SIG.to_uppercase()),
        },
        Request::SignApproved {
            request_id: REQUEST.into(),
        },
        Request::Finished {
            request_id: REQUEST.into(),
            signatures: vec![(0, SIG.into()), (4, SIG.into())],
        },
        Request::Cancel {
            request_id: REQUEST.into(),
            by: "ops-admin".into(),
        },
        Request::Failed {
            request_id: REQUEST.into(),
            error: String::new(),
        },
        Request::Failed {
            request_id: REQUEST.into(),
            error: "database: db error: ERROR: deadlock detected\nDETAIL: Process 1 waits".into(),
        },
    ]
}

#[test]
fn every_honest_message_is_accepted() {
    for request in honest() {
        assert_eq!(request.check(&limits()), Ok(()), "{}", request.kind());
    }
}

#[test]
fn the_psbt_bound_is_the_api_body_limit() {
    assert_eq!(
        limits().max_psbt_chars,
        strongroom_api::Limits::default().max_body_bytes
    );
    // A 1 MiB PSBT holds at most some 19,000 inputs.
    assert_eq!(limits().max_inputs(), 1024 * 1024 / 4 * 3 / 41);
}

/// Checks `request`, expects a refusal naming `field`, returns the message.
fn refused(request: &Request, field: &str) -> String {
    match request.check(&limits()) {
        Ok(()) => panic!("{} with a bad `{field}` was accepted", request.kind()),
        Err(e) => {
            assert_eq!(e.field(), field, "{e}");
            let message = e.to_string();
            assert!(message.contains(&format!("`{field}`")), "{message}");
            message
        }
    }
}

#[test]
fn ids_must_be_hex_of_their_length() {
    let bad_ids = [
        String::new(),
        "00".into(),
        format!("{ID}00"),
        ID.replace('a', "g"),
        ID.replace("00", "é"),
        " ".repeat(64),
    ];
    for bad in &bad_ids {
        refused(
            &Request::AuxInfo {
                session_id: bad.clone(),
            },
            "session_id",
        );
        refused(
            &Request::Presign {
                session_id: ID.into(),
                key_id: bad.clone(),
                signers: vec![0, 1],
            },
            "key_id",
        );
        refused(
            &Request::Discard {
                request_id: REQUEST.into(),
                presig_id: bad.clone(),
            },
            "presig_id",
        );
        refused(
            &Request::SignApproved {
                request_id: bad.clone(),
            },
            "request_id",
        );
    }
    // A request id is 32 hex digits, not a key id's 64.
    refused(
        &Request::SignApproved {
            request_id: ID.into(),
        },
        "request_id",
    );
    let message = refused(
        &Request::Failed {
            request_id: "../../etc".into(),
            error: String::new(),
        },
        "request_id",
    );
    assert!(message.contains("32 hex digits"), "{message}");
}

#[test]
fn keygen_bounds() {
    let keygen = |name: &str, threshold: u16, aux_id: &str| Request::Keygen {
        session_id: ID.into(),
        key_id: ID.into(),
        name: name.into(),
        threshold,
        aux_id: aux_id.into(),
    };
    for bad in [
        String::new(),
        "k".repeat(MAX_KEY_NAME_BYTES + 1),
        "é".repeat(MAX_KEY_NAME_BYTES / 2 + 1), // 33 characters, 66 bytes
        " hot-1".into(),
        "hot-1 ".into(),
        "hot\n1".into(),
        "hot\u{1b}[31m".into(),
    ] {
        refused(&keygen(&bad, 2, ID), "name");
    }
    for threshold in [0, 4, u16::MAX] {
        let message = refused(&keygen("hot-1", threshold, ID), "threshold");
        assert!(message.contains("3 members"), "{message}");
    }
    refused(&keygen("hot-1", 2, "aux"), "aux_id");
}

#[test]
fn signer_sets_and_entropy_stay_within_the_cluster() {
    let presign = |signers: Vec<u16>| Request::Presign {
        session_id: ID.into(),
        key_id: ID.into(),
        signers,
    };
    refused(&presign(vec![]), "signers");
    refused(&presign(vec![0, 1, 2, 0]), "signers");
    refused(&presign(vec![0, 3]), "signers[1]");
    refused(&presign(vec![u16::MAX]), "signers[0]");
    let reserve =
        |signers: Vec<u16>, presig_id: Option<String>, target: SignTarget| Request::Reserve {
            request_id: REQUEST.into(),
            key_id: ID.into(),
            signers,
            presig_id,
            target,
        };
    let input = SignTarget::Input { input_index: 0 };
    refused(&reserve(vec![5], None, input.clone()), "signers[0]");
    refused(
        &reserve(vec![0, 1], Some("p".into()), input.clone()),
        "presig_id",
    );
    let interactive = Request::InteractiveSign {
        session_id: ID.into(),
        request_id: REQUEST.into(),
        key_id: ID.into(),
        signers: vec![0; 4],
        target: input,
    };
    refused(&interactive, "signers");

    let partial = |entropy: Vec<(u16, String)>, target: SignTarget| Request::Partial {
        request_id: REQUEST.into(),
        key_id: ID.into(),
        presig_id: ID.into(),
        target,
        entropy,
    };
    let input = SignTarget::Input { input_index: 1 };
    refused(&partial(vec![], input.clone()), "entropy");
    refused(&partial(vec![(0, ID.into()); 4], input.clone()), "entropy");
    refused(
        &partial(vec![(0, ID.into()), (3, ID.into())], input.clone()),
        "entropy[1].party",
    );
    refused(
        &partial(vec![(1, "ab".into())], input),
        "entropy[0].entropy",
    );
}

#[test]
fn digest_targets_are_bounded() {
    let reserve = |target: SignTarget| Request::Reserve {
        request_id: REQUEST.into(),
        key_id: ID.into(),
        signers: vec![0, 1],
        presig_id: None,
        target,
    };
    let digest = |path: String, digest: &str| SignTarget::Digest {
        path,
        digest: digest.into(),
    };
    refused(
        &reserve(digest("0".repeat(MAX_PATH_CHARS + 1), ID)),
        "target.path",
    );
    refused(&reserve(digest("0/1\r\n".into(), ID)), "target.path");
    refused(&reserve(digest("0/1".into(), "00")), "target.digest");
}

#[test]
fn discard_takes_a_reservation_id() {
    let discard = |request_id: &str| Request::Discard {
        request_id: request_id.into(),
        presig_id: ID.into(),
    };
    for bad in [
        format!("{REQUEST}/"),
        format!("{REQUEST}/-1"),
        format!("{REQUEST}/+1"),
        format!("{REQUEST}/4294967296"),
        format!("{REQUEST}/1/2"),
        format!("{REQUEST}/ 1"),
        "x/1".into(),
        "presign-failed/1".into(),
        "Presign-Failed".into(),
    ] {
        refused(&discard(&bad), "request_id");
    }
}

#[test]
fn proposals_are_held_to_the_api_bounds() {
    let max = limits().max_psbt_chars;
    refused(&propose(String::new(), None, "w"), "psbt");
    let message = refused(&propose("A".repeat(max + 1), None, "w"), "psbt");
    assert!(message.contains(&max.to_string()), "{message}");
    // The memo: the API's rule, printable and at most 500 characters.
    let message = refused(
        &propose("cHNidP8=".into(), Some("m".repeat(MAX_MEMO_CHARS + 1)), "w"),
        "memo",
    );
    assert!(message.contains("500 characters"), "{message}");
    refused(
        &propose("cHNidP8=".into(), Some("rent\u{0}".into()), "w"),
        "memo",
    );
    refused(
        &propose("cHNidP8=".into(), Some("line\nbreak".into()), "w"),
        "memo",
    );
    // The submitter is a client name (a DNS label, as in the client's certificate).
    for bad in [
        "",
        "Withdrawal-Service",
        "-w",
        "w_s",
        &"w".repeat(64),
        "a/b",
    ] {
        refused(&propose("cHNidP8=".into(), None, bad), "submitter");
    }
    let wrong_key = Request::Propose {
        request_id: REQUEST.into(),
        key_id: "hot-1".into(),
        psbt: "cHNidP8=".into(),
        memo: None,
        submitter: "w".into(),
    };
    refused(&wrong_key, "key_id");
}

#[test]
fn sequenced_proposals_are_held_to_the_same_bounds() {
    let sequence = |psbt: String, memo: Option<String>, submitter: &str| Request::Sequence {
        request_id: REQUEST.into(),
        key_id: ID.into(),
        psbt,
        memo,
        submitter: submitter.into(),
    };
    refused(&sequence(String::new(), None, "w"), "psbt");
    refused(
        &sequence("A".repeat(limits().max_psbt_chars + 1), None, "w"),
        "psbt",
    );
    refused(
        &sequence("cHNidP8=".into(), Some("m".repeat(MAX_MEMO_CHARS + 1)), "w"),
        "memo",
    );
    refused(&sequence("cHNidP8=".into(), None, "W"), "submitter");
    let bad_request = Request::Sequence {
        request_id: "r".into(),
        key_id: ID.into(),
        psbt: "cHNidP8=".into(),
        memo: None,
        submitter: "w".into(),
    };
    refused(&bad_request, "request_id");
}

#[test]
fn cancellations_name_a_client() {
    let cancel = |request_id: &str, by: &str| Request::Cancel {
        request_id: request_id.into(),
        by: by.into(),
    };
    refused(&cancel("r", "ops-admin"), "request_id");
    for bad in [
        "",
        "Ops Admin",
        &"a".repeat(64),
        "ops
admin",
    ] {
        refused(&cancel(REQUEST, bad), "by");
    }
}

#[test]
fn votes_are_bounded_field_by_field() {
    let votes = |votes: Vec<SignedVote>| Request::Votes {
        request_id: REQUEST.into(),
        votes,
    };
    refused(&votes(vec![vote(vec![]); 4]), "votes");
    refused(
        &votes(vec![vote(vec![]), vote(vec!["r".into(); MAX_REASONS + 1])]),
        "votes[1].reasons",
    );
    refused(
        &votes(vec![vote(vec![
            "ok".into(),
            "r".repeat(MAX_TEXT_CHARS + 1),
        ])]),
        "votes[0].reasons[1]",
    );
    refused(
        &votes(vec![vote(vec!["\u{1b}[2J".into()])]),
        "votes[0].reasons[0]",
    );
    let tamper = |f: &dyn Fn(&mut Vote), signature: Vec<u8>| {
        let (mut v, _) = vote(vec![]).into_parts();
        f(&mut v);
        votes(vec![SignedVote::from_parts(v, signature)])
    };
    let sig = vec![9; SIGNATURE_LEN];
    refused(
        &tamper(&|v| v.node_id = "Node 2".into(), sig.clone()),
        "votes[0].node_id",
    );
    refused(
        &tamper(&|v| v.node_id = "n".repeat(64), sig.clone()),
        "votes[0].node_id",
    );
    refused(
        &tamper(&|v| v.cluster_id = String::new(), sig.clone()),
        "votes[0].cluster_id",
    );
    refused(
        &tamper(&|v| v.request_id = "r".into(), sig.clone()),
        "votes[0].request_id",
    );
    refused(&tamper(&|_| {}, vec![9; 65]), "votes[0].signature");
    refused(&tamper(&|_| {}, vec![]), "votes[0].signature");
}

#[test]
fn approvals_are_bounded() {
    let approve = |approver: &str, signature: &str| Request::Approve {
        request_id: REQUEST.into(),
        approver: approver.into(),
        signature: signature.into(),
    };
    refused(&approve("", SIG), "approver");
    refused(&approve(" alice", SIG), "approver");
    refused(&approve("al\tice", SIG), "approver");
    refused(
        &approve(&"a".repeat(MAX_APPROVER_CHARS + 1), SIG),
        "approver",
    );
    refused(&approve("alice", &SIG[..126]), "signature");
    refused(&approve("alice", &format!("{SIG}00")), "signature");
    refused(&approve("alice", &SIG.replace('a', "z")), "signature");
    refused(
        &approve(
            "alice",
            &format!("{SIG}{}", " ".repeat(MAX_APPROVAL_SIGNATURE_CHARS)),
        ),
        "signature",
    );
}

#[test]
fn finished_and_failed_are_bounded() {
    let finished = |signatures: Vec<(u32, String)>| Request::Finished {
        request_id: REQUEST.into(),
        signatures,
    };
    refused(&finished(vec![]), "signatures");
    refused(
        &finished(vec![(0, SIG.into()); limits().max_inputs() + 1]),
        "signatures",
    );
    refused(
        &finished(vec![(0, SIG.into()), (1, "00".into())]),
        "signatures[1]",
    );
    refused(&finished(vec![(0, format!("{SIG}01"))]), "signatures[0]");

    let failed = |error: String| Request::Failed {
        request_id: REQUEST.into(),
        error,
    };
    let message = refused(&failed("e".repeat(MAX_TEXT_CHARS + 1)), "error");
    assert!(message.contains("8192 characters"), "{message}");
    refused(&failed("bell\u{7}".into()), "error");
    // Lengths count characters: the limit in multi-byte text is the same.
    assert_eq!(failed("ü".repeat(MAX_TEXT_CHARS)).check(&limits()), Ok(()));
    refused(&failed("ü".repeat(MAX_TEXT_CHARS + 1)), "error");
}

#[test]
fn refusals_never_repeat_the_value() {
    let secretish = "AAAAsecret-looking-value-that-must-not-echo";
    let e = propose(secretish.repeat(100_000), None, "w")
        .check(&limits())
        .unwrap_err();
    assert!(!e.to_string().contains("secret-looking"), "{e}");
    let e = propose("cHNidP8=".into(), None, secretish)
        .check(&limits())
        .unwrap_err();
    assert!(!e.to_string().contains("secret-looking"), "{e}");
}
