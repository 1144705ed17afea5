//! The start-up check of a node's own token and mechanisms against its own profile.
#![cfg(test)]

mod common;

use strongroom_attest::{
    SelfCheckError, TokenIdentity, TokenMismatch, check_mechanisms, check_own_token, self_check,
};

const SOFTHSM_MECHANISMS: [&str; 6] = [
    "CKM_AES_KEY_GEN",
    "CKM_AES_GCM",
    "CKM_AES_KEY_WRAP",
    "CKM_EC_KEY_PAIR_GEN",
    "CKM_ECDSA",
    "CKM_SHA256",
];

#[test]
fn softhsm_passes_the_dev_profile() {
    self_check(
        &common::dev_profile(),
        &common::softhsm(),
        &SOFTHSM_MECHANISMS,
    )
    .unwrap();
}

#[test]
fn blank_padded_fields_as_pkcs11_reports_them_match() {
    let token = TokenIdentity {
        manufacturer: format!("{:<32}", "SoftHSM project"),
        model: format!("{:<16}", "SoftHSM v2"),
        firmware_version: "2.6".into(),
    };
    check_own_token(&common::dev_profile(), &token).unwrap();
}

#[test]
fn a_token_outside_the_profile_is_refused_naming_the_field() {
    let profile = common::dev_profile();
    let cases = [
        (
            ("Acme", "SoftHSM v2", "2.6"),
            "token.manufacturer",
            "'Acme'",
            "'SoftHSM project'",
        ),
        (
            ("SoftHSM project", "SoftHSM v3", "2.6"),
            "token.model",
            "'SoftHSM v3'",
            "'SoftHSM v2'",
        ),
        (
            ("SoftHSM project", "SoftHSM v2", "2.5"),
            "token.firmware_version",
            "'2.5'",
            "'2.6'",
        ),
    ];
    for ((manufacturer, model, firmware), field, found, accepted) in cases {
        let token = TokenIdentity {
            manufacturer: manufacturer.into(),
            model: model.into(),
            firmware_version: firmware.into(),
        };
        let err = self_check(&profile, &token, &SOFTHSM_MECHANISMS).unwrap_err();
        assert_eq!(err.field(), field);
        let text = err.to_string();
        assert!(text.contains("strongroom-dev"), "{text}");
        assert!(text.contains(found) && text.contains(accepted), "{text}");
        assert!(matches!(err, SelfCheckError::Token { .. }));
    }
    let err = check_own_token(
        &profile,
        &TokenIdentity {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            firmware_version: "2.60".into(),
        },
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SelfCheckError::Token {
            mismatch: TokenMismatch::FirmwareVersion { .. },
            ..
        }
    ));
}

#[test]
fn missing_mechanisms_are_listed() {
    let profile = common::dev_profile();
    let without_gcm: Vec<String> = SOFTHSM_MECHANISMS
        .iter()
        .filter(|m| **m != "CKM_AES_GCM" && **m != "CKM_EC_KEY_PAIR_GEN")
        .map(|m| m.to_string())
        .collect();
    let err = check_mechanisms(&profile, &without_gcm).unwrap_err();
    assert_eq!(
        err,
        SelfCheckError::MissingMechanisms {
            profile: "strongroom-dev".into(),
            missing: vec!["CKM_AES_GCM".into(), "CKM_EC_KEY_PAIR_GEN".into()],
        }
    );
    assert_eq!(err.field(), "mechanisms.required");
    assert!(
        err.to_string().contains("CKM_AES_GCM, CKM_EC_KEY_PAIR_GEN"),
        "{err}"
    );
    // The token check comes first.
    let acme = TokenIdentity {
        manufacturer: "Acme".into(),
        model: "x".into(),
        firmware_version: "1.0".into(),
    };
    assert_eq!(
        self_check(&profile, &acme, &without_gcm)
            .unwrap_err()
            .field(),
        "token.manufacturer"
    );
}
