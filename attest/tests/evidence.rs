//! Evidence: encoding, signing, and every way verification refuses it.
#![cfg(test)]

mod common;

use common::{Ctx, claims, production_profile, sign, sign_with};
use strongroom_attest::{
    DecodeError, EVIDENCE_VERSION, Evidence, FirmwareProfile, Sha256Digest, TokenMismatch,
    VerifyError, verify,
};

fn verify_prod(
    evidence: &[u8],
    ctx: &Ctx,
) -> Result<strongroom_attest::VerifiedEvidence, VerifyError> {
    verify(evidence, &production_profile(), &ctx.get())
}

#[test]
fn round_trip_sign_encode_decode_verify() {
    let c = claims("test-production");
    let evidence = sign_with(&common::node_key(), c.clone());
    let bytes = evidence.to_bytes();
    let decoded = Evidence::from_bytes(&bytes).unwrap();
    assert_eq!(decoded, evidence);
    assert_eq!(decoded.claims(), &c);
    let verified = verify_prod(&bytes, &Ctx::new()).unwrap();
    assert_eq!(verified.claims(), &c);
}

#[test]
fn encoding_is_pinned() {
    let bytes = claims("test-production").signed_bytes().unwrap();
    assert_eq!(&bytes[..10], b"SRATTEST\x00\x01");
    assert_eq!(EVIDENCE_VERSION, 1);
    // Any change to the layout changes this digest and must come with a new version. The
    // value was computed independently from the layout documented on `Evidence`.
    assert_eq!(
        Sha256Digest::of(&bytes).to_hex(),
        "91b8ce0571e9a8e9d4d6548b2aceca4d644b67c045453254991ed2d94cef5b07"
    );
}

#[test]
fn unknown_version_is_refused() {
    let mut bytes = sign(claims("test-production"));
    bytes[9] = 2;
    let err = verify_prod(&bytes, &Ctx::new()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Decode(DecodeError::UnknownVersion {
                found: 2,
                supported: 1
            })
        ),
        "{err}"
    );
    assert_eq!(err.field(), "encoding");
}

#[test]
fn malformed_encodings_are_refused() {
    let bytes = sign(claims("test-production"));
    let mut bad_magic = bytes.clone();
    bad_magic[0] = b'X';
    assert_eq!(Evidence::from_bytes(&bad_magic), Err(DecodeError::BadMagic));
    for cut in [0, 5, 9, 20, bytes.len() - 1] {
        assert!(
            matches!(
                Evidence::from_bytes(&bytes[..cut]),
                Err(DecodeError::Truncated { .. })
            ),
            "cut at {cut}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        Evidence::from_bytes(&trailing),
        Err(DecodeError::TrailingBytes { count: 1 })
    );
    // The TPM flag sits right before the 64-byte signature when there is no quote.
    let mut flag = bytes.clone();
    let at = flag.len() - 65;
    flag[at] = 7;
    assert_eq!(
        Evidence::from_bytes(&flag),
        Err(DecodeError::BadFlag {
            field: "tpm_quote",
            value: 7
        })
    );
    // A huge length is refused before anything is allocated.
    let mut long = bytes[..10 + 32].to_vec();
    long.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Evidence::from_bytes(&long),
        Err(DecodeError::FieldTooLong {
            field: "profile_id",
            ..
        })
    ));
    // Over-long claims cannot be signed either.
    let mut c = claims("test-production");
    c.node_id = "n".repeat(300);
    let signer = |_: &[u8]| -> Result<[u8; 64], strongroom_attest::SignError> { Ok([0; 64]) };
    assert!(Evidence::sign(c, &signer).is_err());
}

#[test]
fn bad_signature_is_refused() {
    // A claim changed after signing.
    let mut bytes = sign(claims("test-production"));
    let pos = bytes.windows(6).position(|w| w == b"node-1").unwrap();
    bytes[pos + 5] = b'2';
    let err = verify_prod(&bytes, &Ctx::new()).unwrap_err();
    assert!(matches!(err, VerifyError::BadSignature), "{err}");
    assert_eq!(err.field(), "signature");
    // Signed by another key than the certificate's.
    let other = sign_with(&common::other_key(), claims("test-production")).to_bytes();
    assert!(matches!(
        verify_prod(&other, &Ctx::new()),
        Err(VerifyError::BadSignature)
    ));
    // The certificate key is not a P-256 SPKI.
    let mut ctx = Ctx::new();
    ctx.spki = vec![0x30, 0x00];
    assert!(matches!(
        verify_prod(&sign(claims("test-production")), &ctx),
        Err(VerifyError::PeerKey { .. })
    ));
}

fn refused(c: strongroom_attest::Claims, ctx: &Ctx) -> VerifyError {
    verify_prod(&sign(c), ctx).unwrap_err()
}

#[test]
fn wrong_binary_digest_names_both_values() {
    let mut c = claims("test-production");
    c.binary_sha256 = Sha256Digest::of(b"tampered build");
    let err = refused(c, &Ctx::new());
    match &err {
        VerifyError::BinaryDigest { found, allowed, .. } => {
            assert_eq!(found, &Sha256Digest::of(b"tampered build").to_hex());
            assert!(allowed.contains(&common::binary().to_hex()));
        }
        other => panic!("unexpected {other}"),
    }
    assert_eq!(err.field(), "binary_sha256");
    let text = err.to_string();
    assert!(
        text.contains(&Sha256Digest::of(b"tampered build").to_hex())
            && text.contains(&common::binary().to_hex()),
        "{text}"
    );
}

#[test]
fn wrong_profile_id() {
    let err = refused(claims("strongroom-dev"), &Ctx::new());
    assert!(
        matches!(&err, VerifyError::ProfileId { expected, found } if expected == "test-production" && found == "strongroom-dev"),
        "{err}"
    );
    assert_eq!(err.field(), "profile_id");
}

#[test]
fn token_mismatches_name_the_field() {
    let mut c = claims("test-production");
    c.token.manufacturer = "Acme HSM".into();
    let err = refused(c, &Ctx::new());
    assert!(
        matches!(&err, VerifyError::Token(TokenMismatch::Manufacturer { found, accepted })
        if found == "Acme HSM" && accepted.len() == 2),
        "{err}"
    );
    assert_eq!(err.field(), "token.manufacturer");

    let mut c = claims("test-production");
    c.token.model = "SoftHSM v3".into();
    let err = refused(c, &Ctx::new());
    assert!(
        matches!(&err, VerifyError::Token(TokenMismatch::Model { found, accepted, .. })
        if found == "SoftHSM v3" && accepted == &vec!["SoftHSM v2".to_string()]),
        "{err}"
    );
    assert_eq!(err.field(), "token.model");

    let mut c = claims("test-production");
    c.token.firmware_version = "2.5".into();
    let err = refused(c, &Ctx::new());
    assert!(
        matches!(&err, VerifyError::Token(TokenMismatch::FirmwareVersion { found, accepted, .. })
        if found == "2.5" && accepted == &vec!["2.6".to_string()]),
        "{err}"
    );
    assert_eq!(err.field(), "token.firmware_version");
    assert!(
        err.to_string().contains("'2.5'") && err.to_string().contains("'2.6'"),
        "{err}"
    );

    // A pattern: any YubiHSM 2.x firmware.
    let mut c = claims("test-production");
    c.token = strongroom_attest::TokenIdentity {
        manufacturer: "Yubico (www.yubico.com)".into(),
        model: "YubiHSM".into(),
        firmware_version: "2.4".into(),
    };
    verify_prod(&sign(c), &Ctx::new()).unwrap();
}

#[test]
fn stale_and_future_evidence() {
    let mut ctx = Ctx::new();
    ctx.now = common::NOW + 301;
    let err = refused(claims("test-production"), &ctx);
    assert!(
        matches!(
            err,
            VerifyError::Stale {
                issued_at: common::NOW,
                max_age_secs: 300,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(err.field(), "issued_at");
    ctx.now = common::NOW + 300;
    verify_prod(&sign(claims("test-production")), &ctx).unwrap();

    ctx.now = common::NOW - 31;
    let err = refused(claims("test-production"), &ctx);
    assert!(
        matches!(
            err,
            VerifyError::FromFuture {
                max_clock_skew_secs: 30,
                ..
            }
        ),
        "{err}"
    );
    ctx.now = common::NOW - 30;
    verify_prod(&sign(claims("test-production")), &ctx).unwrap();
}

#[test]
fn evidence_from_another_connection_is_refused() {
    let mut ctx = Ctx::new();
    ctx.binding = vec![0xa5; 32];
    let err = refused(claims("test-production"), &ctx);
    assert!(
        matches!(&err, VerifyError::ChannelBinding { expected, found }
            if expected == &hex::encode([0xa5; 32]) && found == &hex::encode(common::BINDING)),
        "{err}"
    );
    assert_eq!(err.field(), "channel_binding");
    // An empty exporter value never matches, not even empty evidence.
    let mut c = claims("test-production");
    c.channel_binding = Vec::new();
    ctx.binding = Vec::new();
    assert!(matches!(
        refused(c, &ctx),
        VerifyError::ChannelBinding { .. }
    ));
}

#[test]
fn node_id_must_be_the_certificates() {
    let mut ctx = Ctx::new();
    ctx.node_id = "node-2".into();
    let err = refused(claims("test-production"), &ctx);
    assert!(
        matches!(&err, VerifyError::NodeId { expected, found } if expected == "node-2" && found == "node-1"),
        "{err}"
    );
    assert_eq!(err.field(), "node_id");
}

#[test]
fn cluster_id_must_be_ours() {
    let mut ctx = Ctx::new();
    ctx.cluster_id = "cluster-b".into();
    let err = refused(claims("test-production"), &ctx);
    assert!(
        matches!(&err, VerifyError::ClusterId { expected, found } if expected == "cluster-b" && found == "cluster-a"),
        "{err}"
    );
}

#[test]
fn dev_profile_accepts_any_digest_and_refuses_its_flag_elsewhere() {
    let dev = common::dev_profile();
    let mut c = claims("strongroom-dev");
    c.binary_sha256 = Sha256Digest::of(b"a local debug build");
    let bytes = sign(c);
    verify(&bytes, &dev, &Ctx::new().get()).unwrap();

    // The same flag in a profile assembled by hand outside dev: the verifier refuses the profile.
    let mut not_dev: FirmwareProfile = dev.clone();
    not_dev.mode = strongroom_attest::ProfileMode::Production;
    let err = verify(&bytes, &not_dev, &Ctx::new().get()).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::Profile(strongroom_attest::ProfileError::DangerousOutsideDev { .. })
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("dangerous_accept_any_digest"),
        "{err}"
    );
}

#[test]
fn unfilled_profile_accepts_nothing() {
    let appliance = FirmwareProfile::load(&common::profile_dir().join("appliance.toml")).unwrap();
    let err = verify(
        &sign(claims("strongroom-appliance")),
        &appliance,
        &Ctx::new().get(),
    )
    .unwrap_err();
    match err {
        VerifyError::ProfileIncomplete { fields, .. } => {
            assert!(fields.contains(&"binary.sha256".to_string()));
            assert!(fields.contains(&"tpm.pcrs.7".to_string()));
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn missing_tpm_quote_is_refused_when_required() {
    let mut p = production_profile();
    p.tpm.required = true;
    p.tpm.pcrs.insert(7, Some(Sha256Digest::of(b"pcr7")));
    p.tpm.enrolled_aks.push(Sha256Digest::of(b"ak"));
    let err = verify(&sign(claims("test-production")), &p, &Ctx::new().get()).unwrap_err();
    assert!(matches!(err, VerifyError::TpmQuoteMissing { .. }), "{err}");
    assert_eq!(err.field(), "tpm_quote");
}
