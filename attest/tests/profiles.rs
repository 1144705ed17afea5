//! Profile files: the examples load, and malformed or dangerous profiles are refused.
#![cfg(test)]

mod common;

use strongroom_attest::{FirmwareProfile, ProfileError, ProfileMode};

#[test]
fn every_example_profile_loads() {
    let mut loaded = 0;
    for entry in std::fs::read_dir(common::profile_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let profile = FirmwareProfile::load(&path)
                .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
            assert!(!profile.tokens.is_empty(), "{}", path.display());
            loaded += 1;
        }
    }
    assert!(
        loaded >= 2,
        "expected dev.toml and appliance.toml, loaded {loaded}"
    );
}

#[test]
fn dev_profile_accepts_softhsm_without_tpm() {
    let p = common::dev_profile();
    assert_eq!(p.mode, ProfileMode::Dev);
    assert!(p.binary.dangerous_accept_any_digest);
    assert!(!p.tpm.required);
    assert!(p.unfilled_fields().is_empty());
    strongroom_attest::check_own_token(&p, &common::softhsm()).unwrap();
}

#[test]
fn appliance_profile_requires_tpm_and_lists_what_to_fill_in() {
    let p = FirmwareProfile::load(&common::profile_dir().join("appliance.toml")).unwrap();
    assert_eq!(p.mode, ProfileMode::Production);
    assert!(!p.binary.dangerous_accept_any_digest);
    assert!(p.tpm.required);
    assert_eq!(
        p.tpm.pcrs.keys().copied().collect::<Vec<_>>(),
        vec![0, 2, 4, 7]
    );
    assert_eq!(
        p.unfilled_fields(),
        vec![
            "binary.sha256",
            "tpm.pcrs.0",
            "tpm.pcrs.2",
            "tpm.pcrs.4",
            "tpm.pcrs.7",
            "tpm.enrolled_aks"
        ]
    );
}

const BASE: &str = r#"
version = 1
id = "p"
mode = "production"
[binary]
sha256 = []
[freshness]
max_age_secs = 60
max_clock_skew_secs = 5
[[token]]
manufacturer = "SoftHSM project"
model = "SoftHSM v2"
firmware_version = "2.6"
[mechanisms]
required = ["CKM_ECDSA"]
"#;

fn load(text: &str) -> Result<FirmwareProfile, ProfileError> {
    FirmwareProfile::from_toml_str(text)
}

#[test]
fn dangerous_flag_is_refused_outside_dev() {
    let text = BASE.replace(
        "sha256 = []",
        "sha256 = []\ndangerous_accept_any_digest = true",
    );
    let err = load(&text).unwrap_err();
    assert!(
        matches!(err, ProfileError::DangerousOutsideDev { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("dangerous_accept_any_digest"),
        "{err}"
    );
    // The same file in dev mode loads.
    load(&text.replace("\"production\"", "\"dev\"")).unwrap();
}

#[test]
fn unknown_version_is_refused_before_unknown_fields() {
    let text = BASE.replace("version = 1", "version = 2\nnew_field = true");
    let err = load(&text).unwrap_err();
    assert!(
        matches!(&err, ProfileError::UnknownVersion { found, supported: 1 } if found == "2"),
        "{err}"
    );
    let err = load(&BASE.replace("version = 1", "")).unwrap_err();
    assert!(matches!(err, ProfileError::MissingVersion), "{err}");
}

#[test]
fn malformed_profiles_are_refused_with_the_field() {
    let cases: [(&str, &str, &str); 9] = [
        ("id = \"p\"", "id = \"has space\"", "profile id"),
        ("sha256 = []", "sha256 = [\"abc\"]", "binary.sha256[0]"),
        ("max_age_secs = 60", "max_age_secs = 0", "max_age_secs"),
        ("model = \"SoftHSM v2\"", "model = \"\"", "empty model"),
        ("[\"CKM_ECDSA\"]", "[\"ecdsa\"]", "mechanism 'ecdsa'"),
        (
            "required = [\"CKM_ECDSA\"]",
            "required = [\"CKM_ECDSA\"]\n[tpm]\nrequired = true",
            "tpm.pcrs names no PCR",
        ),
        (
            "required = [\"CKM_ECDSA\"]",
            "required = [\"CKM_ECDSA\"]\n[tpm.pcrs]\n24 = \"\"",
            "key '24'",
        ),
        (
            "required = [\"CKM_ECDSA\"]",
            "required = [\"CKM_ECDSA\"]\n[tpm.pcrs]\n7 = \"zz\"",
            "tpm.pcrs.7",
        ),
        (
            "mode = \"production\"",
            "mode = \"production\"\nsurprise = 1",
            "unknown field",
        ),
    ];
    for (from, to, expect) in cases {
        let text = BASE.replace(from, to);
        assert_ne!(text, BASE, "case {to} did not change the profile");
        let err = load(&text).unwrap_err().to_string();
        assert!(
            err.contains(expect),
            "{to}: error '{err}' does not mention '{expect}'"
        );
    }
    let no_tokens = BASE.replace("[[token]]", "").replace(
        "manufacturer = \"SoftHSM project\"\nmodel = \"SoftHSM v2\"\nfirmware_version = \"2.6\"\n",
        "",
    );
    assert!(matches!(
        load(&no_tokens).unwrap_err(),
        ProfileError::NoTokens { .. }
    ));
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    std::fs::write(&path, "version = 1\nid = 3\n").unwrap();
    let err = FirmwareProfile::load(&path).unwrap_err().to_string();
    assert!(err.contains("broken.toml"), "{err}");
    let err = FirmwareProfile::load(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, ProfileError::Io { .. }), "{err}");
}

#[test]
fn file_digest_is_sha256_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strongroom");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();
    let digest = strongroom_attest::file_sha256(&path).unwrap();
    assert_eq!(digest, strongroom_attest::Sha256Digest::of(&content));
    assert_eq!(
        strongroom_attest::profile_line(&path, &digest),
        format!("sha256 = [\"{digest}\"]  # strongroom")
    );
    // The digest parses back, also from upper case as tpm2-tools prints it.
    assert_eq!(
        digest
            .to_hex()
            .to_uppercase()
            .parse::<strongroom_attest::Sha256Digest>()
            .unwrap(),
        digest
    );
    assert!(strongroom_attest::file_sha256(dir.path()).is_err());
    // The running test binary has a digest too.
    strongroom_attest::own_binary_sha256().unwrap();
}
