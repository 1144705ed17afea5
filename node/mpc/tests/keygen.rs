//! Aux info and key generation for 3 parties, threshold 2, from the dev prime fixture.
#![allow(clippy::unwrap_used, reason = "test helpers")]

mod common;

use std::str::FromStr;

use bitcoin::bip32::Xpub;
use strongroom_mpc::keys::{SecretAuxInfo, SecretKeyShare};
use strongroom_mpc::primes::{Primes, PrimesError, PrimesPolicy};
use strongroom_mpc::session::{SessionDescriptor, SessionId};

#[test]
fn aux_info_and_keygen_2_of_3() {
    let (cluster, timings) = common::generate_cluster(7);
    eprintln!(
        "aux info (3 parties, one thread): {:?}; keygen 2-of-3: {:?}",
        timings.aux_info, timings.keygen
    );

    // The deterministic simulation with seeded RNGs reproduces the key.
    let public = &cluster.public;
    assert_eq!(public.threshold, 2);
    assert_eq!(public.n, 3);
    for (i, share) in cluster.shares.iter().enumerate() {
        assert_eq!(usize::from(share.index()), i);
        assert_eq!(share.threshold(), 2);
        assert_eq!(&share.public_info(), public);
        let debug = format!("{share:?}");
        assert!(
            debug.ends_with(", .. }") && !debug.contains("core"),
            "no secret in Debug: {debug}"
        );
    }

    // The bitcoin crate builds the depth-0 xpub from the public key and chain code alone.
    let xpub = common::xpub(public);
    let encoded = xpub.to_string();
    assert!(encoded.starts_with("tpub"));
    assert_eq!(Xpub::from_str(&encoded).unwrap(), xpub);
    assert_eq!(xpub.depth, 0);

    // Sealed forms round-trip (CBOR) and are re-validated on the way in.
    for (aux, share) in cluster.aux.iter().zip(&cluster.shares) {
        let aux_bytes = aux.to_sealable_bytes().unwrap();
        let aux_back = SecretAuxInfo::from_sealed_bytes(&aux_bytes).unwrap();
        assert_eq!(aux_back.index(), aux.index());
        assert_eq!(aux_back.to_sealable_bytes().unwrap(), aux_bytes);
        assert_eq!(aux.n(), 3);

        let share_bytes = share.to_sealable_bytes().unwrap();
        let share_back = SecretKeyShare::from_sealed_bytes(&share_bytes).unwrap();
        assert_eq!(share_back.public_info(), share.public_info());
        assert_eq!(share_back.to_sealable_bytes().unwrap(), share_bytes);

        // One kind of sealed object is not accepted as another.
        assert!(SecretKeyShare::from_sealed_bytes(&aux_bytes).is_err());
    }
    // The public key info round-trips through JSON.
    let json = serde_json::to_string(public).unwrap();
    assert_eq!(
        &serde_json::from_str::<strongroom_mpc::keys::PublicKeyInfo>(&json).unwrap(),
        public
    );

    // Aux info records the fixture origin, so a node outside dev mode refuses it from storage too.
    assert!(matches!(
        cluster.aux[0].check(PrimesPolicy::ProductionOnly),
        Err(PrimesError::DevFixtureRefused { index: 0 })
    ));

    // Later tests in other processes reuse this key.
    common::store_cache(&cluster);
}

#[test]
fn aux_info_refuses_fixture_primes_outside_dev_mode() {
    let session = SessionDescriptor::aux_info(SessionId::from_bytes([1; 32]), 3).unwrap();
    let result = round_based::sim::run(3, |i, party| {
        let session = &session;
        async move {
            let primes = Primes::dangerous_dev_fixture(i).unwrap();
            let mut rng = common::rng(1, i);
            strongroom_mpc::keys::run_aux_info(
                session,
                i,
                primes,
                PrimesPolicy::ProductionOnly,
                &mut rng,
                party,
                None,
            )
            .await
        }
    })
    .unwrap();
    for outcome in result.into_vec() {
        assert!(matches!(
            outcome,
            Err(strongroom_mpc::keys::AuxInfoError::Primes(
                PrimesError::DevFixtureRefused { .. }
            ))
        ));
    }
}
