//! The keystore against real SoftHSM tokens: sealing, tampering, rotation, counters, the
//! token-held identity key in a real TLS handshake, and concurrent use.

// The helpers below are part of the tests: like the tests, they fail by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use strongroom_keystore::{
    BlobError, Error, MAGIC, ObjectKind, ObjectRef, PinSource, SealedBlob, Token, TokenConfig,
    UnsealError,
};
use strongroom_tests::process::strongroom_binary;
use strongroom_tests::softhsm::{SoftHsm, TestToken};

const CLUSTER: &str = "cluster-a";
const NODE: &str = "node-1";

fn object(id: &[u8]) -> ObjectRef<'_> {
    ObjectRef {
        cluster_id: CLUSTER,
        node_id: NODE,
        kind: ObjectKind::KeyShare,
        object_id: id,
    }
}

/// A fresh SoftHSM with one provisioned token.
fn provisioned(label: &str) -> (SoftHsm, TestToken, Token) {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token(label).unwrap();
    let (token, report) = Token::provision(&t.config()).unwrap();
    assert!(report.kek_created && report.identity_created);
    (hsm, t, token)
}

#[test]
fn audit_hmac_key_lives_in_the_token_and_is_stable() {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token("node-1").unwrap();
    let t2 = hsm.init_token("node-2").unwrap();
    let (token, _) = Token::provision(&t.config()).unwrap();
    let a = token.audit_hmac(b"message").unwrap();
    assert_eq!(a, token.audit_hmac(b"message").unwrap());
    assert_ne!(a, token.audit_hmac(b"messagf").unwrap());
    // Another handle (another process would be the same) finds the same key, not a new one.
    let again = Token::open(&t.config()).unwrap();
    again.ensure_audit_key().unwrap();
    assert_eq!(again.audit_hmac(b"message").unwrap(), a);
    // Another token's key differs.
    let (other, _) = Token::provision(&t2.config()).unwrap();
    assert_ne!(other.audit_hmac(b"message").unwrap(), a);
    // The token lists the mechanisms the firmware profile checks.
    let mechanisms = token.mechanisms().unwrap();
    for m in ["CKM_SHA256_HMAC", "CKM_AES_GCM", "CKM_ECDSA"] {
        assert!(
            mechanisms.iter().any(|x| x == m),
            "{m} not in {mechanisms:?}"
        );
    }
}

#[test]
fn round_trip_0_400_and_1mib() {
    let (_hsm, _t, token) = provisioned("node-1");
    for (i, len) in [0usize, 400, 1024 * 1024].into_iter().enumerate() {
        let plaintext: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        let id = format!("obj-{len}");
        let blob = token.seal(&object(id.as_bytes()), 7, &plaintext).unwrap();
        let opened = token.unseal(&object(id.as_bytes()), &blob).unwrap();
        assert_eq!(opened.plaintext.expose_secret(), plaintext.as_slice());
        assert_eq!(opened.generation(), 7);
        assert_eq!(opened.header.kek_version, 1);
        assert_eq!(format!("{:?}", opened.plaintext), "<redacted>");
    }
}

#[test]
fn provisioning_is_idempotent_and_open_finds_keys() {
    let (_hsm, t, token) = provisioned("node-1");
    let fingerprint = token.identity().public_key().fingerprint();
    let (again, report) = Token::provision(&t.config()).unwrap();
    assert!(!report.kek_created && !report.identity_created);
    assert_eq!(report.kek_versions, vec![1]);
    assert_eq!(again.identity().public_key().fingerprint(), fingerprint);
    let opened = Token::open(&t.config()).unwrap();
    assert_eq!(opened.kek_versions(), vec![1]);
    assert_eq!(opened.info().label, "node-1");
    assert_eq!(opened.info().manufacturer, "SoftHSM project");
}

#[test]
fn open_without_provisioning_says_run_init() {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token("blank").unwrap();
    let err = Token::open(&t.config()).unwrap_err();
    assert!(matches!(err, Error::NotProvisioned { .. }), "{err:?}");
    assert!(
        err.to_string().contains("strongroom keystore init"),
        "{err}"
    );
    let status = Token::inspect(&t.config()).unwrap();
    assert!(status.keks.is_empty() && status.identity.is_none());
}

#[test]
fn kek_is_non_extractable_and_sensitive() {
    let (_hsm, _t, token) = provisioned("node-1");
    let a = token.kek_attributes(1).unwrap();
    assert!(a.sensitive, "{a:?}");
    assert!(!a.extractable, "{a:?}");
    assert!(a.never_extractable, "{a:?}");
    assert!(a.always_sensitive, "{a:?}");
    assert!(!a.modifiable, "{a:?}");
    assert!(a.persistent, "{a:?}");
}

/// Byte offsets of the header fields of a blob sealed with `object(b"obj")`.
struct Layout {
    magic: std::ops::Range<usize>,
    version: std::ops::Range<usize>,
    suite: usize,
    kek_label: std::ops::Range<usize>,
    kek_version: std::ops::Range<usize>,
    protected_key: std::ops::Range<usize>,
    payload_nonce: std::ops::Range<usize>,
    cluster: std::ops::Range<usize>,
    node: std::ops::Range<usize>,
    kind: std::ops::Range<usize>,
    object_id: std::ops::Range<usize>,
    generation: std::ops::Range<usize>,
    header_len: usize,
}

fn layout(kek_label_len: usize) -> Layout {
    let mut at = 0;
    let mut next = |n: usize| {
        let r = at..at + n;
        at += n;
        r
    };
    let magic = next(4);
    let version = next(2);
    let suite = next(1).start;
    let kek_label = next(1 + kek_label_len);
    let kek_version = next(4);
    let protected_key = next(1 + 12 + 1 + 48);
    let payload_nonce = next(12);
    let cluster = next(1 + CLUSTER.len());
    let node = next(1 + NODE.len());
    let kind = next(2);
    let object_id = next(1 + 3);
    let generation = next(8);
    Layout {
        magic,
        version,
        suite,
        kek_label,
        kek_version,
        protected_key,
        payload_nonce,
        cluster,
        node,
        kind,
        object_id,
        generation,
        header_len: at,
    }
}

#[test]
fn every_flipped_byte_and_every_truncation_fails() {
    let (_hsm, _t, token) = provisioned("node-1");
    let blob = token.seal(&object(b"obj"), 3, &[0x42; 100]).unwrap();
    let l = layout("strongroom-kek-v1".len());
    assert_eq!(
        SealedBlob::parse(&blob).unwrap().header_bytes.len(),
        l.header_len
    );
    assert_eq!(blob.len(), l.header_len + 100 + 16);

    for i in 0..blob.len() {
        let mut bad = blob.clone();
        bad[i] ^= 0x01;
        let err = token
            .unseal(&object(b"obj"), &bad)
            .expect_err(&format!("flipped byte {i} unsealed"));
        let region_ok = if l.magic.contains(&i) {
            matches!(err, UnsealError::Malformed(BlobError::BadMagic))
        } else if l.version.contains(&i) {
            matches!(
                err,
                UnsealError::Malformed(BlobError::UnsupportedVersion(_))
            )
        } else if i == l.suite {
            matches!(err, UnsealError::Malformed(BlobError::UnsupportedSuite(_)))
        } else if l.kek_label.contains(&i) || l.kek_version.contains(&i) {
            matches!(
                err,
                UnsealError::UnknownKek { .. } | UnsealError::Malformed(_)
            )
        } else if l.protected_key.contains(&i) || l.payload_nonce.contains(&i) {
            matches!(
                err,
                UnsealError::DataKeyRejected
                    | UnsealError::PayloadRejected
                    | UnsealError::Malformed(_)
            )
        } else if l.cluster.contains(&i) {
            matches!(
                err,
                UnsealError::WrongCluster { .. } | UnsealError::Malformed(_)
            )
        } else if l.node.contains(&i) {
            matches!(
                err,
                UnsealError::WrongNode { .. } | UnsealError::Malformed(_)
            )
        } else if l.kind.contains(&i) {
            matches!(
                err,
                UnsealError::WrongKind { .. } | UnsealError::Malformed(BlobError::UnknownKind(_))
            )
        } else if l.object_id.contains(&i) {
            matches!(
                err,
                UnsealError::WrongObject { .. } | UnsealError::Malformed(_)
            )
        } else if l.generation.contains(&i) {
            // Nothing names the generation in advance: only the cryptography catches it.
            matches!(err, UnsealError::DataKeyRejected)
        } else {
            matches!(err, UnsealError::PayloadRejected)
        };
        assert!(region_ok, "flipped byte {i}: unexpected error {err:?}");
    }

    for len in 0..blob.len() {
        let err = token.unseal(&object(b"obj"), &blob[..len]).unwrap_err();
        assert!(
            matches!(
                err,
                UnsealError::Malformed(_) | UnsealError::PayloadRejected
            ),
            "truncated to {len}: {err:?}"
        );
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(
        token.unseal(&object(b"obj"), &longer),
        Err(UnsealError::PayloadRejected)
    ));
}

#[test]
fn generation_change_is_caught_even_with_a_consistent_header() {
    let (_hsm, _t, token) = provisioned("node-1");
    let blob = token.seal(&object(b"obj"), 3, b"share").unwrap();
    let l = layout("strongroom-kek-v1".len());
    let mut rolled = blob.clone();
    rolled[l.generation.end - 1] = 9;
    assert!(matches!(
        token.unseal(&object(b"obj"), &rolled),
        Err(UnsealError::DataKeyRejected)
    ));
}

#[test]
fn unknown_version_suite_and_magic_are_distinct_errors() {
    let (_hsm, _t, token) = provisioned("node-1");
    let blob = token.seal(&object(b"obj"), 0, b"x").unwrap();
    let mut v2 = blob.clone();
    v2[5] = 2;
    assert!(matches!(
        token.unseal(&object(b"obj"), &v2),
        Err(UnsealError::Malformed(BlobError::UnsupportedVersion(2)))
    ));
    let mut suite = blob.clone();
    suite[6] = 77;
    assert!(matches!(
        token.unseal(&object(b"obj"), &suite),
        Err(UnsealError::Malformed(BlobError::UnsupportedSuite(77)))
    ));
    assert_eq!(&blob[..4], &MAGIC);
    assert!(matches!(
        token.unseal(&object(b"obj"), b"not a blob at all"),
        Err(UnsealError::Malformed(BlobError::BadMagic))
    ));
}

#[test]
fn blob_presented_as_another_object_node_cluster_or_kind_is_refused() {
    let (_hsm, _t, token) = provisioned("node-1");
    let blob = token.seal(&object(b"key-1"), 1, b"share").unwrap();
    let expect = |o: ObjectRef<'_>| token.unseal(&o, &blob).unwrap_err();

    let e = expect(object(b"key-2"));
    assert!(matches!(e, UnsealError::WrongObject { .. }), "{e:?}");
    let e = expect(ObjectRef {
        node_id: "node-2",
        ..object(b"key-1")
    });
    assert!(
        matches!(e, UnsealError::WrongNode { ref found, .. } if found == NODE),
        "{e:?}"
    );
    let e = expect(ObjectRef {
        cluster_id: "cluster-b",
        ..object(b"key-1")
    });
    assert!(matches!(e, UnsealError::WrongCluster { .. }), "{e:?}");
    let e = expect(ObjectRef {
        kind: ObjectKind::Presignature,
        ..object(b"key-1")
    });
    assert!(
        matches!(
            e,
            UnsealError::WrongKind {
                expected: ObjectKind::Presignature,
                found: ObjectKind::KeyShare
            }
        ),
        "{e:?}"
    );
    assert!(token.unseal(&object(b"key-1"), &blob).is_ok());
}

#[test]
fn blob_from_another_token_is_refused() {
    let hsm = SoftHsm::new().unwrap();
    let (ta, tb) = (
        hsm.init_token("node-a").unwrap(),
        hsm.init_token("node-b").unwrap(),
    );
    let (a, _) = Token::provision(&ta.config()).unwrap();
    let (b, _) = Token::provision(&tb.config()).unwrap();
    let blob = a.seal(&object(b"obj"), 0, b"secret").unwrap();
    // Same KEK label and version on both tokens, different keys.
    assert!(matches!(
        b.unseal(&object(b"obj"), &blob),
        Err(UnsealError::DataKeyRejected)
    ));
    assert!(a.unseal(&object(b"obj"), &blob).is_ok());
}

#[test]
fn wrong_pin_names_where_the_pin_came_from() {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token("node-1").unwrap();
    let bad = hsm.dir().join("wrong.pin");
    std::fs::write(&bad, "0000\n").unwrap();
    let config = TokenConfig {
        pin: PinSource::File(bad.clone()),
        ..t.config()
    };
    let err = Token::provision(&config).unwrap_err();
    assert!(matches!(err, Error::PinIncorrect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("PIN incorrect"), "{msg}");
    assert!(msg.contains(&bad.display().to_string()), "{msg}");

    let config = TokenConfig {
        pin: PinSource::Env("STRONGROOM_TEST_PIN_THAT_IS_NOT_SET".to_owned()),
        ..t.config()
    };
    let msg = Token::open(&config).unwrap_err().to_string();
    assert!(
        msg.contains("environment variable STRONGROOM_TEST_PIN_THAT_IS_NOT_SET"),
        "{msg}"
    );
    // The right PIN still works: a wrong attempt did not break the module for the process.
    Token::provision(&t.config()).unwrap();
}

#[test]
fn unknown_label_lists_the_labels_present() {
    let hsm = SoftHsm::new().unwrap();
    let t1 = hsm.init_token("node-1").unwrap();
    hsm.init_token("node-2").unwrap();
    let config = TokenConfig {
        label: "node-9".to_owned(),
        ..t1.config()
    };
    let err = Token::open(&config).unwrap_err();
    match &err {
        Error::TokenNotFound { present, .. } => {
            let mut present = present.clone();
            present.sort();
            assert_eq!(present, vec!["node-1", "node-2"]);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("node-1") && msg.contains("node-2"), "{msg}");
}

#[test]
fn missing_module_names_the_package() {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token("node-1").unwrap();
    let config = TokenConfig {
        module: PathBuf::from("/usr/lib/softhsm/libsofthsm2-missing.so"),
        ..t.config()
    };
    let err = Token::open(&config).unwrap_err();
    assert!(matches!(err, Error::ModuleMissing { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("softhsm2"), "{msg}");
    assert!(msg.contains("--pkcs11-module"), "{msg}");
}

#[test]
fn missing_mechanism_names_mechanism_and_token() {
    // SoftHSM 2.6.1 honours an allow-list here (a "-CKM_..." deny-list has no effect).
    let hsm = SoftHsm::with_options(&[
        "slots.mechanisms = CKM_AES_KEY_GEN,CKM_EC_KEY_PAIR_GEN,CKM_ECDSA",
    ])
    .unwrap();
    let t = hsm.init_token("no-gcm").unwrap();
    let err = Token::provision(&t.config()).unwrap_err();
    match &err {
        Error::MechanismMissing { token, mechanism } => {
            assert_eq!(token, "no-gcm");
            assert_eq!(mechanism, "CKM_AES_GCM");
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[test]
fn rotation_reseal_and_retire() {
    let (_hsm, t, token) = provisioned("node-1");
    let resealed_later = token.seal(&object(b"a"), 5, b"alpha").unwrap();
    let left_behind = token.seal(&object(b"b"), 6, b"beta").unwrap();

    assert_eq!(token.rotate_kek().unwrap(), 2);
    assert_eq!(token.kek_versions(), vec![1, 2]);
    assert_eq!(token.current_kek_version().unwrap(), 2);
    assert!(!token.kek_attributes(2).unwrap().extractable);

    // Old blobs still open; new seals use version 2.
    assert_eq!(
        token
            .unseal(&object(b"a"), &resealed_later)
            .unwrap()
            .header
            .kek_version,
        1
    );
    let fresh = token.seal(&object(b"c"), 1, b"gamma").unwrap();
    assert_eq!(SealedBlob::parse(&fresh).unwrap().header.kek_version, 2);

    let moved = token.reseal(&object(b"a"), &resealed_later).unwrap();
    let opened = token.unseal(&object(b"a"), &moved).unwrap();
    assert_eq!(opened.header.kek_version, 2);
    assert_eq!(opened.header.kek_label, "strongroom-kek-v2");
    assert_eq!(opened.generation(), 5);
    assert_eq!(opened.plaintext.expose_secret(), b"alpha");

    assert!(matches!(
        token.retire_kek(2),
        Err(Error::RetireCurrentKek { version: 2 })
    ));
    token.retire_kek(1).unwrap();
    assert_eq!(token.kek_versions(), vec![2]);

    assert!(token.unseal(&object(b"a"), &moved).is_ok());
    assert!(token.unseal(&object(b"c"), &fresh).is_ok());
    let err = token.unseal(&object(b"b"), &left_behind).unwrap_err();
    assert!(
        matches!(err, UnsealError::UnknownKek { version: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("retired"), "{err}");

    // A restarted process sees the same versions.
    let reopened = Token::open(&t.config()).unwrap();
    assert_eq!(reopened.kek_versions(), vec![2]);
    assert!(reopened.unseal(&object(b"a"), &moved).is_ok());
}

fn run_strongroom(t: &TestToken, args: &[&str]) -> serde_like::Output {
    let out = Command::new(strongroom_binary().unwrap())
        .args(args)
        .arg("--json")
        .envs(t.env())
        .env_remove("STRONGROOM_PIN")
        .output()
        .unwrap();
    serde_like::Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Just enough of the binary's JSON output to check values without a JSON dependency.
mod serde_like {
    pub(crate) struct Output {
        pub(crate) ok: bool,
        pub(crate) stdout: String,
        pub(crate) stderr: String,
    }

    impl Output {
        /// The number after `"key":` in the output.
        pub(crate) fn number(&self, key: &str) -> u64 {
            let needle = format!("\"{key}\":");
            let at = self
                .stdout
                .find(&needle)
                .unwrap_or_else(|| panic!("no {key} in output: {}\n{}", self.stdout, self.stderr));
            self.stdout[at + needle.len()..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap()
        }
    }
}

#[test]
fn counter_survives_process_restart() {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token("node-1").unwrap();
    let init = run_strongroom(&t, &["keystore", "init"]);
    assert!(init.ok, "{}{}", init.stdout, init.stderr);

    let first = run_strongroom(&t, &["keystore", "counter", "presign-gen", "--increment"]);
    assert!(first.ok, "{}{}", first.stdout, first.stderr);
    assert_eq!(first.number("value"), 1);
    let second = run_strongroom(&t, &["keystore", "counter", "presign-gen", "--increment"]);
    assert_eq!(second.number("value"), 2);
    let read = run_strongroom(&t, &["keystore", "counter", "presign-gen"]);
    assert_eq!(read.number("value"), 2);

    // And in this process, after the other processes exited.
    let token = Token::open(&t.config()).unwrap();
    assert_eq!(token.counter_read("presign-gen").unwrap(), 2);
    assert_eq!(token.counter_increment("presign-gen").unwrap(), 3);
    assert_eq!(token.counter_read("never-used").unwrap(), 0);
    assert_eq!(
        token.counters().unwrap(),
        vec![("presign-gen".to_owned(), 3)]
    );
    assert!(matches!(
        token.counter_increment("Bad Name"),
        Err(Error::CounterName { .. })
    ));
}

#[test]
fn binary_reports_errors_with_the_fix() {
    let hsm = SoftHsm::new().unwrap();
    let t = hsm.init_token("node-1").unwrap();
    let status = run_strongroom(&t, &["keystore", "status"]);
    assert!(status.ok, "{}", status.stderr);
    assert!(
        status.stdout.contains("\"provisioned\": false"),
        "{}",
        status.stdout
    );
    let out = run_strongroom(&t, &["keystore", "demo"]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("strongroom keystore init"),
        "{}",
        out.stderr
    );
    let init = run_strongroom(&t, &["keystore", "init"]);
    assert!(init.ok, "{}", init.stderr);
    let demo = run_strongroom(
        &t,
        &["keystore", "demo", "--cluster-id", "c1", "--node-id", "n1"],
    );
    assert!(demo.ok, "{}", demo.stderr);
    assert!(
        demo.stdout.contains("\"unsealed_equal\": true"),
        "{}",
        demo.stdout
    );
    assert_eq!(demo.number("generation"), 1);
}

#[test]
fn token_signature_verifies_with_p256() {
    use p256::ecdsa::signature::Verifier;
    use p256::ecdsa::{Signature, VerifyingKey};

    let (_hsm, _t, token) = provisioned("node-1");
    let identity = token.identity();
    let vk = VerifyingKey::from_sec1_bytes(identity.public_key().sec1()).unwrap();
    let spki_vk = {
        use p256::pkcs8::DecodePublicKey;
        VerifyingKey::from_public_key_der(&identity.public_key().spki_der()).unwrap()
    };
    assert_eq!(vk, spki_vk);
    for message in [&b""[..], b"vote: approve request 42", &[7u8; 5000]] {
        let sig = identity.sign(message).unwrap();
        let raw = Signature::from_slice(&sig.to_bytes()).unwrap();
        vk.verify(message, &raw).unwrap();
        let der = Signature::from_der(&sig.to_der()).unwrap();
        vk.verify(message, &der).unwrap();
        assert!(vk.verify(b"another message", &raw).is_err());
    }
    assert!(!format!("{identity:?}").contains("private"));
}

#[test]
fn tls_handshake_signs_inside_the_token() {
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::sign::{CertifiedKey, SingleCertAndKey};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (_hsm, _t, token) = provisioned("node-1");
    let identity = token.identity();
    let params = rcgen::CertificateParams::new(vec!["node-1.strongroom.test".to_owned()]).unwrap();
    let cert = params.self_signed(&identity).unwrap();
    let cert_der: CertificateDer<'static> = cert.der().clone();

    // A CSR signed by the token parses and carries the token's key.
    let csr = rcgen::CertificateParams::new(vec!["node-1.strongroom.test".to_owned()])
        .unwrap()
        .serialize_request(&identity)
        .unwrap();
    let parsed = rcgen::CertificateSigningRequestParams::from_der(csr.der()).unwrap();
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&parsed.public_key),
        &identity.public_key().sec1()[..]
    );

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = CertifiedKey::new(vec![cert_der.clone()], Arc::new(identity.clone()));
    key.keys_match().unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(key)));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der.clone()).unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        // One connection per protocol version: both sign the handshake inside the token.
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let mut tls = acceptor.accept(tcp).await.unwrap();
                let mut buf = [0u8; 5];
                tls.read_exact(&mut buf).await.unwrap();
                tls.write_all(&buf).await.unwrap();
                tls.shutdown().await.unwrap();
            }
        });

        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let client_config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(&[version])
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("node-1.strongroom.test").unwrap();
            let mut tls = connector.connect(name, tcp).await.unwrap();
            let (_, conn) = tls.get_ref();
            assert_eq!(conn.protocol_version(), Some(version.version));
            assert_eq!(
                conn.peer_certificates().unwrap()[0].as_ref(),
                cert_der.as_ref()
            );
            tls.write_all(b"hello").await.unwrap();
            let mut echoed = [0u8; 5];
            tls.read_exact(&mut echoed).await.unwrap();
            assert_eq!(&echoed, b"hello");
        }
        server.await.unwrap();
    });
}

#[test]
fn eight_concurrent_tasks_seal_and_unseal_1000_blobs_each() {
    let (_hsm, _t, token) = provisioned("node-1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..8u32 {
            let token = token.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let node = format!("node-{task}");
                for i in 0..1000u32 {
                    let id = i.to_be_bytes();
                    let o = ObjectRef {
                        cluster_id: CLUSTER,
                        node_id: &node,
                        kind: ObjectKind::Presignature,
                        object_id: &id,
                    };
                    let payload = [(task as u8) ^ (i as u8); 400];
                    let blob = token.seal(&o, u64::from(i), &payload)?;
                    let opened = token.unseal(&o, &blob).map_err(|e| e.to_string())?;
                    assert_eq!(opened.plaintext.expose_secret(), &payload[..]);
                    assert_eq!(opened.generation(), u64::from(i));
                }
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
    });
}
