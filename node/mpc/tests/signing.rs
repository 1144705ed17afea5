//! Presigning, re-randomized online signing with sign-time HD derivation, partial checks, sealing
//! round trips, and the interactive fallback, on a cached 2-of-3 cluster key.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use strongroom_mpc::hd::DerivationPath;
use strongroom_mpc::interactive::run_interactive_sign;
use strongroom_mpc::online::{
    CombineError, NodeComputedSighash, OnlineSignError, OnlineSigning, PartialCheckError,
    PartialSignature, SignerEntropy,
};
use strongroom_mpc::presign::{PresignError, PresignaturePublic, SecretPresignature};
use strongroom_mpc::session::{ProtocolKind, SessionDescriptor, SessionId, SignerSet};

fn entropy(signers: &[u16], salt: u8) -> BTreeMap<u16, SignerEntropy> {
    signers
        .iter()
        .map(|p| (*p, SignerEntropy::from_bytes([salt ^ (*p as u8 + 1); 32])))
        .collect()
}

fn sighash(i: u32) -> NodeComputedSighash {
    let mut bytes = [0x5a; 32];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    NodeComputedSighash::from_node_computed(bytes)
}

fn tampered(partial: &PartialSignature) -> PartialSignature {
    let mut bytes = partial.to_bytes();
    bytes[31] ^= 1;
    PartialSignature::from_bytes(&bytes).unwrap()
}

#[test]
fn rerandomized_signing_over_many_paths() {
    let cluster = common::cluster();
    let signer_sets: [&[u16]; 3] = [&[0, 1], &[1, 2], &[2, 0]];
    let paths: Vec<DerivationPath> = (0u32..9)
        .map(|i| match i % 3 {
            0 => DerivationPath::new(vec![0, i]).unwrap(),
            1 => DerivationPath::new(vec![1, i * 7919]).unwrap(),
            _ => DerivationPath::new(vec![(1 << 31) - 1 - i, 5, i]).unwrap(),
        })
        .collect();
    let mut nonce_points = BTreeSet::new();
    for (n, path) in paths.iter().enumerate() {
        let signers = signer_sets[n % 3];
        let started = Instant::now();
        let generated = common::presign(&cluster, signers, [n as u8; 32], 100 + n as u64);
        let presign_time = started.elapsed();
        let public = generated[0].public.clone();
        for g in &generated {
            assert_eq!(g.public, public, "every signer sees the same public data");
        }
        let message = sighash(n as u32);
        let started = Instant::now();
        let signing = OnlineSigning::new(
            &cluster.public,
            &public,
            path,
            &message,
            &entropy(signers, n as u8),
        )
        .unwrap();
        let mut partials = BTreeMap::new();
        for g in generated {
            let holder = g.secret.holder();
            let partial = signing.issue_partial(g.secret).unwrap();
            signing.verify_partial(holder, &partial).unwrap();
            partials.insert(holder, partial);
        }
        let signature = signing.combine(&partials).unwrap();
        let online_time = started.elapsed();
        eprintln!(
            "signers {signers:?} path {path}: presign {presign_time:?}, online step {online_time:?}"
        );
        assert_eq!(
            signing.child_public_key(),
            cluster.public.child_public_key(path).unwrap()
        );
        common::verify_with_bitcoin(&cluster.public, path, &message, &signature);
        assert!(
            nonce_points.insert(signing.nonce_point()),
            "nonce points never repeat"
        );
        assert!(
            !nonce_points.contains(&public.gamma()),
            "Γ itself is never the nonce"
        );
    }
}

#[test]
fn cheating_partial_is_detected_and_named() {
    let cluster = common::cluster();
    let signers = [2u16, 0];
    let generated = common::presign(&cluster, &signers, [0xc1; 32], 301);
    let path = DerivationPath::new(vec![0, 42]).unwrap();
    let message = sighash(42);
    let signing = OnlineSigning::new(
        &cluster.public,
        &generated[0].public,
        &path,
        &message,
        &entropy(&signers, 9),
    )
    .unwrap();
    let mut partials = BTreeMap::new();
    for g in generated {
        let holder = g.secret.holder();
        partials.insert(holder, signing.issue_partial(g.secret).unwrap());
    }
    let honest = partials[&0];
    partials.insert(0, tampered(&honest));
    assert_eq!(
        signing.verify_partial(0, &partials[&0]),
        Err(PartialCheckError::Invalid { signer: 0 })
    );
    assert_eq!(
        signing.combine(&partials),
        Err(CombineError::CheatingSigners { culprits: vec![0] })
    );
    // A partial from outside the set, or a missing one, is refused as such.
    assert_eq!(
        signing.verify_partial(1, &honest),
        Err(PartialCheckError::NotASigner(1))
    );
    partials.remove(&0);
    assert_eq!(signing.combine(&partials), Err(CombineError::Missing(0)));
    partials.insert(0, honest);
    let signature = signing.combine(&partials).unwrap();
    common::verify_with_bitcoin(&cluster.public, &path, &message, &signature);
}

#[test]
fn partials_over_other_inputs_fail_the_check() {
    let cluster = common::cluster();
    let signers = [0u16, 1];
    let generated = common::presign(&cluster, &signers, [0xd1; 32], 401);
    let public = generated[0].public.clone();
    let path = DerivationPath::new(vec![1, 3]).unwrap();
    let message = sighash(3);
    let good_entropy = entropy(&signers, 1);

    // Signer 1 signs with different inputs than the combiner expects; each variant must be caught.
    let mut bad_entropy = good_entropy.clone();
    bad_entropy.insert(0, SignerEntropy::from_bytes([0xee; 32]));
    let variants = [
        ("entropy", path.clone(), message, bad_entropy),
        (
            "path",
            DerivationPath::new(vec![1, 4]).unwrap(),
            message,
            good_entropy.clone(),
        ),
        (
            "root path",
            DerivationPath::root(),
            message,
            good_entropy.clone(),
        ),
        ("sighash", path.clone(), sighash(4), good_entropy.clone()),
    ];
    // Each variant needs a fresh presignature piece: regenerate for each (same set, new session).
    for (k, (what, v_path, v_message, v_entropy)) in variants.into_iter().enumerate() {
        let generated = common::presign(&cluster, &signers, [0xd2 + k as u8; 32], 410 + k as u64);
        let public = generated[0].public.clone();
        let reference =
            OnlineSigning::new(&cluster.public, &public, &path, &message, &good_entropy).unwrap();
        let deviating =
            OnlineSigning::new(&cluster.public, &public, &v_path, &v_message, &v_entropy).unwrap();
        let mut pieces = generated.into_iter().map(|g| g.secret);
        let first = pieces.next().unwrap();
        let second = pieces.next().unwrap();
        let honest = reference.issue_partial(first).unwrap();
        let odd = deviating.issue_partial(second).unwrap();
        assert_eq!(
            reference.verify_partial(1, &odd),
            Err(PartialCheckError::Invalid { signer: 1 }),
            "a partial over another {what} is caught"
        );
        let partials = BTreeMap::from([(0, honest), (1, odd)]);
        assert_eq!(
            reference.combine(&partials),
            Err(CombineError::CheatingSigners { culprits: vec![1] })
        );
    }

    // Misuse: a piece of another presignature, or entropy from the wrong signers.
    let other = common::presign(&cluster, &signers, [0xdf; 32], 499);
    let signing =
        OnlineSigning::new(&cluster.public, &public, &path, &message, &good_entropy).unwrap();
    let foreign = other.into_iter().next().unwrap().secret;
    assert!(matches!(
        signing.issue_partial(foreign),
        Err(OnlineSignError::PieceMismatch { .. })
    ));
    assert!(matches!(
        OnlineSigning::new(
            &cluster.public,
            &public,
            &path,
            &message,
            &entropy(&[0, 2], 1)
        ),
        Err(OnlineSignError::EntropyMismatch { .. })
    ));
}

#[test]
fn presignatures_round_trip_and_still_sign() {
    let cluster = common::cluster();
    let signers = [1u16, 2];
    let generated = common::presign(&cluster, &signers, [0xe1; 32], 501);
    let public = generated[0].public.clone();

    let json = serde_json::to_string(&public).unwrap();
    let public_back: PresignaturePublic = serde_json::from_str(&json).unwrap();
    assert_eq!(public_back, public);
    let cbor = {
        let mut out = Vec::new();
        ciborium::into_writer(&public, &mut out).unwrap();
        out
    };
    let public_cbor: PresignaturePublic = ciborium::from_reader(&cbor[..]).unwrap();
    assert_eq!(public_cbor, public);

    let pieces: Vec<SecretPresignature> = generated
        .into_iter()
        .map(|g| {
            let bytes = g.secret.to_sealable_bytes().unwrap();
            assert!(!format!("{:?}", g.secret).contains("tilde_k"));
            let back = SecretPresignature::from_sealed_bytes(&bytes).unwrap();
            assert_eq!(back.id(), g.secret.id());
            assert_eq!(back.to_sealable_bytes().unwrap(), bytes);
            back
        })
        .collect();

    let path = DerivationPath::new(vec![0, 7]).unwrap();
    let message = sighash(7);
    let signing = OnlineSigning::new(
        &cluster.public,
        &public_back,
        &path,
        &message,
        &entropy(&signers, 2),
    )
    .unwrap();
    let partials: BTreeMap<u16, PartialSignature> = pieces
        .into_iter()
        .map(|piece| {
            let holder = piece.holder();
            let partial = signing.issue_partial(piece).unwrap();
            // Partials travel as JSON too.
            let wire = serde_json::to_string(&partial).unwrap();
            (holder, serde_json::from_str(&wire).unwrap())
        })
        .collect();
    let signature = signing.combine(&partials).unwrap();
    common::verify_with_bitcoin(&cluster.public, &path, &message, &signature);
}

#[test]
fn interactive_signing_fallback() {
    let cluster = common::cluster();
    let signers = SignerSet::new(vec![2, 1]).unwrap();
    let session = SessionDescriptor::signing(
        ProtocolKind::InteractiveSign,
        SessionId::from_bytes([0xf1; 32]),
        cluster.public.key_id,
        signers.clone(),
    )
    .unwrap();
    let path = DerivationPath::new(vec![1, 99]).unwrap();
    let message = sighash(99);
    let shares = signers
        .parties()
        .iter()
        .map(|i| &cluster.shares[usize::from(*i)]);
    let started = Instant::now();
    let signatures = round_based::sim::run_with_setup(shares, |i, party, share| {
        let (session, path) = (&session, &path);
        async move {
            let mut rng = common::rng(601, i);
            run_interactive_sign(session, share, path, &message, &mut rng, party, None).await
        }
    })
    .unwrap()
    .expect_ok()
    .expect_eq();
    eprintln!("interactive signing 2-of-3: {:?}", started.elapsed());
    common::verify_with_bitcoin(&cluster.public, &path, &message, &signatures);
}

#[test]
fn presign_refuses_misuse() {
    let cluster = common::cluster();
    let descriptor = |signers: Vec<u16>| {
        SessionDescriptor::signing(
            ProtocolKind::Presign,
            SessionId::from_bytes([0x99; 32]),
            cluster.public.key_id,
            SignerSet::new(signers).unwrap(),
        )
        .unwrap()
    };
    let run = |d: SessionDescriptor, share: usize| {
        let share = &cluster.shares[share];
        round_based::sim::run(1, |_, party| {
            let d = &d;
            async move {
                let mut rng = common::rng(0, 0);
                strongroom_mpc::presign::run_presign(d, share, &mut rng, party, None).await
            }
        })
        .unwrap()
        .into_vec()
        .pop()
        .unwrap()
    };
    assert!(matches!(
        run(descriptor(vec![0, 1, 2]), 0),
        Err(PresignError::WrongSignerCount {
            threshold: 2,
            signers: 3
        })
    ));
    assert!(matches!(
        run(descriptor(vec![0, 1]), 2),
        Err(PresignError::NotASigner(2))
    ));
    assert!(matches!(
        run(descriptor(vec![0, 5]), 0),
        Err(PresignError::UnknownSigner { signer: 5, n: 3 })
    ));
}

/// Drives a 2-party presign by hand so that one party's round-2 message can be tampered with and
/// the run can stop once the honest party has given up (the simulation would wait forever for
/// the party that aborted).
#[test]
fn presign_names_a_peer_that_sends_a_bad_proof() {
    use cggmp24::generic_ec::Point;
    use round_based::state_machine::{ProceedResult, StateMachine};
    use round_based::{Incoming, MessageDestination, MessageType};
    use std::collections::VecDeque;
    use strongroom_mpc::msg::SigningMsg;

    let cluster = common::cluster();
    let signers = SignerSet::new(vec![1, 2]).unwrap();
    let cheater_position = 1usize; // party 2
    let descriptor = SessionDescriptor::signing(
        ProtocolKind::Presign,
        SessionId::from_bytes([0xab; 32]),
        cluster.public.key_id,
        signers.clone(),
    )
    .unwrap();
    let mut rngs = [common::rng(801, 0), common::rng(801, 1)];
    let [rng0, rng1] = &mut rngs;
    let share0 = &cluster.shares[1];
    let share1 = &cluster.shares[2];
    let d = &descriptor;
    let mut machines: Vec<Box<dyn StateMachine<Output = _, Msg = SigningMsg> + '_>> = vec![
        Box::new(round_based::state_machine::wrap_protocol(move |party| {
            strongroom_mpc::presign::run_presign(d, share0, rng0, party, None)
        })),
        Box::new(round_based::state_machine::wrap_protocol(move |party| {
            strongroom_mpc::presign::run_presign(d, share1, rng1, party, None)
        })),
    ];
    let mut queues = [VecDeque::new(), VecDeque::new()];
    let mut wants = [false, false];
    let mut outputs: [Option<Result<_, PresignError>>; 2] = [None, None];
    let mut next_id = 0u64;
    loop {
        let mut progress = false;
        for i in 0..2 {
            if outputs[i].is_some() {
                continue;
            }
            loop {
                if wants[i] {
                    let Some(msg) = queues[i].pop_front() else {
                        break;
                    };
                    machines[i].received_msg(msg).ok().unwrap();
                    wants[i] = false;
                    progress = true;
                }
                match machines[i].proceed() {
                    ProceedResult::SendMsg(mut out) => {
                        if i == cheater_position {
                            if let SigningMsg::Round2(m) = &mut out.msg {
                                m.Gamma += Point::generator().to_point();
                            }
                        }
                        let msg_type = match out.recipient {
                            MessageDestination::AllParties => MessageType::Broadcast,
                            MessageDestination::OneParty(_) => MessageType::P2P,
                        };
                        next_id += 1;
                        queues[1 - i].push_back(Incoming {
                            id: next_id,
                            sender: i as u16,
                            msg_type,
                            msg: out.msg,
                        });
                        progress = true;
                    }
                    ProceedResult::NeedsOneMoreMessage => wants[i] = true,
                    ProceedResult::Output(o) => {
                        outputs[i] = Some(o);
                        progress = true;
                        break;
                    }
                    ProceedResult::Yielded => {}
                    ProceedResult::Error(e) => panic!("state machine error: {e}"),
                }
            }
        }
        if outputs[1 - cheater_position].is_some() || !progress {
            break;
        }
    }
    match outputs[1 - cheater_position].take() {
        Some(Err(PresignError::PeerMisbehaved { culprits, detail })) => {
            eprintln!("honest signer reports: {detail}");
            assert_eq!(culprits, vec![2], "the cheater is named by its party index");
        }
        other => panic!(
            "expected the cheater to be named, got {:?}",
            other.map(|r| r.map(|_| ()))
        ),
    }
}
