//! Attestation and admission with real node processes: a node whose token is outside its
//! firmware profile refuses to start naming the field; a node whose binary digest its peers'
//! profile does not list is refused by them, takes part in no signing, and is admitted once
//! the digest is added to their profile; nodes quoting with their own TPMs (swtpm) are
//! admitted under a profile requiring quotes, and a node whose boot measurements change is
//! refused, naming the PCR.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strongroom_attest::{Sha256Digest, file_sha256};
use strongroom_client::ApiClient;
use strongroom_devenv::swtpm::{self, Swtpm};
use strongroom_tests::cluster::{ClusterOptions, DEV_FIRMWARE_PROFILE, TestCluster};
use strongroom_tests::process::strongroom_binary;
use strongroom_tests::support::{api_client, db_rows, eventually, key_ready, run_node};

/// `firmware-profile/dev.toml` with `old` replaced by `new` (which must occur).
fn dev_profile_with(old: &str, new: &str) -> String {
    assert!(
        DEV_FIRMWARE_PROFILE.contains(old),
        "dev.toml has no '{old}'"
    );
    DEV_FIRMWARE_PROFILE.replace(old, new)
}

/// The dev profile allowing exactly `digests` (no "accept any digest").
fn profile_allowing(digests: &[Sha256Digest]) -> String {
    let list = digests
        .iter()
        .map(|d| format!("\"{d}\""))
        .collect::<Vec<_>>()
        .join(", ");
    dev_profile_with(
        "sha256 = []\ndangerous_accept_any_digest = true",
        &format!("sha256 = [{list}]\ndangerous_accept_any_digest = false"),
    )
}

#[test]
fn a_node_whose_token_is_outside_its_profile_refuses_to_start_naming_the_field() {
    let cluster = TestCluster::provision(ClusterOptions {
        nodes: 1,
        ..ClusterOptions::default()
    })
    .unwrap();

    // The manufacturer differs: the error names the profile, the field and both values.
    let profile = cluster.dir().join("other-hsm-profile.toml");
    fs::write(
        &profile,
        dev_profile_with(
            "manufacturer = \"SoftHSM project\"",
            "manufacturer = \"Acme HSM Corp\"",
        ),
    )
    .unwrap();
    let (ok, err) = run_node(
        &cluster,
        &[(
            "STRONGROOM__ATTESTATION__PROFILE",
            profile.display().to_string(),
        )],
    );
    assert!(!ok, "the node started with a token outside its profile");
    assert!(err.contains("token.manufacturer"), "{err}");
    assert!(err.contains("SoftHSM project"), "{err}");
    assert!(err.contains("Acme HSM Corp"), "{err}");
    assert!(err.contains(&profile.display().to_string()), "{err}");
    assert!(err.contains("strongroom-dev"), "{err}");

    // The firmware version differs.
    fs::write(
        &profile,
        dev_profile_with("firmware_version = \"2.6\"", "firmware_version = \"9.*\""),
    )
    .unwrap();
    let env = [(
        "STRONGROOM__ATTESTATION__PROFILE",
        profile.display().to_string(),
    )];
    let (ok, err) = run_node(&cluster, &env);
    assert!(!ok);
    assert!(err.contains("token.firmware_version"), "{err}");
    assert!(err.contains("9.*"), "{err}");

    // A mechanism the token does not offer: named, as the missing one.
    fs::write(
        &profile,
        dev_profile_with(
            "required = [\"CKM_AES_GCM\",",
            "required = [\"CKM_STRONGROOM_TEST_ONLY\", \"CKM_AES_GCM\",",
        ),
    )
    .unwrap();
    let (ok, err) = run_node(&cluster, &env);
    assert!(!ok);
    assert!(err.contains("mechanisms.required"), "{err}");
    assert!(err.contains("CKM_STRONGROOM_TEST_ONLY"), "{err}");

    // A profile that does not load: the file is named.
    fs::write(&profile, "version = 1\nid = \"x\"\n").unwrap();
    let (ok, err) = run_node(&cluster, &env);
    assert!(!ok);
    assert!(err.contains(&profile.display().to_string()), "{err}");
}

/// `node`'s view of member `peer`'s admission (`GET /v1/cluster`).
async fn admission(api: &ApiClient, node: usize, peer: &str) -> Option<Value> {
    let r = api.get_at(node, "/v1/cluster").await.ok()?;
    r.body["members"]
        .as_array()?
        .iter()
        .find(|m| m["node_id"] == peer)
        .map(|m| m["admission"].clone())
}

/// Waits until `node` shows `peer` in admission state `state`.
async fn wait_admission(api: &ApiClient, node: usize, peer: &str, state: &str) -> Value {
    eventually(
        &format!("node {node} to show {peer} as {state}"),
        Duration::from_secs(60),
        || async move {
            let a = admission(api, node, peer).await?;
            (a["state"] == state).then_some(a)
        },
    )
    .await
}

/// The audit entries of `kind` about `peer` in the database at `url`, as their fields.
async fn audit_entries(url: &str, kind: &str, peer: &str) -> Vec<Value> {
    db_rows(
        url,
        &format!("SELECT fields FROM audit_entries WHERE kind = '{kind}' ORDER BY seq"),
    )
    .await
    .iter()
    .map(|row| serde_json::from_str::<Value>(row.get::<_, &str>(0)).unwrap())
    .filter(|fields| fields["peer"] == peer)
    .collect()
}

/// Waits until the database at `url` holds an audit entry of `kind` about `peer` for which
/// `pick` holds, and returns the last such entry's fields.
async fn wait_audit_entry(
    url: &str,
    kind: &str,
    peer: &str,
    pick: impl Fn(&Value) -> bool,
) -> Value {
    let pick = &pick;
    eventually(
        &format!("a {kind} audit entry for {peer}"),
        Duration::from_secs(10),
        || async move {
            audit_entries(url, kind, peer)
                .await
                .into_iter()
                .filter(|f| pick(f))
                .last()
        },
    )
    .await
}

/// Waits until the key `key_id` is ready on every node of `nodes`.
async fn wait_key_ready(api: &ApiClient, nodes: &[usize], key_id: &str) {
    for &node in nodes {
        key_ready(api, node, key_id, Duration::from_secs(300)).await;
    }
}

/// Signs a digest through `node`, retrying while no pool can serve yet.
async fn sign_through(api: &ApiClient, node: usize, key_id: &str, limit: Duration) -> Value {
    let body = json!({"key_id": key_id, "path": "0/7", "digest": hex::encode([7u8; 32])});
    let start = Instant::now();
    loop {
        let r = api
            .post_at(node, "/v1/dangerous-dev/sign-digest", &body)
            .await
            .unwrap();
        if r.status == 200 {
            return r.body;
        }
        let (kind, detail) = r.problem().unwrap_or_default();
        assert!(
            start.elapsed() < limit,
            "no signature within {limit:?}: {} {kind}: {detail}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A copy of `binary` at `to` with bytes appended: it runs the same, with another digest.
fn altered_copy(binary: &Path, to: &Path) {
    fs::copy(binary, to).unwrap();
    let mut f = fs::OpenOptions::new().append(true).open(to).unwrap();
    f.write_all(b"\nstrongroom attestation test: not a released build\n")
        .unwrap();
    drop(f);
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Three nodes provisioned, not started, with small pools, re-checking their peers (and
/// re-reading their profile file) every 2 s.
fn three_nodes() -> TestCluster {
    tokio::task::block_in_place(|| {
        TestCluster::provision(ClusterOptions {
            nodes: 3,
            pool_target: 2,
            pool_low_water: 1,
            pool_max: 4,
            pool_concurrency: 2,
            interactive_fallback: false,
            extra_env: vec![("STRONGROOM__ATTESTATION__RECHECK_SECS".into(), "2".into())],
            ..ClusterOptions::default()
        })
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_whose_binary_is_not_in_the_profile_is_refused_until_its_digest_is_added() {
    let started = Instant::now();
    let mut cluster = three_nodes();
    let binary = strongroom_binary().unwrap();
    let digest = file_sha256(&binary).unwrap();
    let other = cluster.dir().join("strongroom-altered");
    altered_copy(&binary, &other);
    let other_digest = file_sha256(&other).unwrap();
    assert_ne!(digest, other_digest);
    for node in 0..3 {
        cluster
            .set_node_firmware_profile(node, &profile_allowing(&[digest]))
            .unwrap();
    }
    tokio::task::block_in_place(|| cluster.start_new_nodes()).unwrap();
    let api = api_client(&cluster, None);
    let ids = cluster.node_ids();

    // ---- every node runs the listed binary: all admitted, a key is generated ---------------
    for node in 0..3 {
        for peer in ids.iter().filter(|p| **p != ids[node]) {
            let a = wait_admission(&api, node, peer, "admitted").await;
            assert_eq!(a["binary_sha256"], digest.to_hex(), "{a}");
            assert_eq!(a["profile_id"], "strongroom-dev", "{a}");
        }
    }
    let own = api.get_at(0, "/v1/cluster").await.unwrap().body["attestation"].clone();
    assert_eq!(own["binary_sha256"], digest.to_hex(), "{own}");
    let created = api
        .post_at(0, "/v1/keys", &json!({"name": "k1", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    let key_1 = created.body["key_id"].as_str().unwrap().to_owned();
    wait_key_ready(&api, &[0, 1, 2], &key_1).await;
    eprintln!(
        "[{:?}] key generated with all three admitted",
        started.elapsed()
    );

    // ---- node-3 restarts with a binary its peers' profile does not list ----------------------
    tokio::task::block_in_place(|| -> Result<(), _> {
        cluster.stop_node(2)?;
        cluster.set_node_binary(2, Some(other.clone()))?;
        cluster.start_node(2)
    })
    .unwrap();
    for node in [0, 1] {
        let a = wait_admission(&api, node, "node-3", "refused").await;
        assert_eq!(a["field"], "binary_sha256", "{a}");
        let reason = a["reason"].as_str().unwrap();
        assert!(reason.contains(&other_digest.to_hex()), "{reason}");
        // Logged at warn, with the field, and audited.
        let logs = cluster.logs(node);
        assert!(
            logs.lines()
                .any(|l| l.contains("peer refused") && l.contains("binary_sha256")),
            "node {node} did not log the refusal"
        );
        // The entry is appended right after the state changes.
        let url = cluster.database_url(node);
        let last = wait_audit_entry(&url, "peer_refused", "node-3", |_| true).await;
        assert_eq!(last["field"], "binary_sha256", "{last}");
        assert!(
            last["reason"]
                .as_str()
                .unwrap()
                .contains(&other_digest.to_hex()),
            "{last}"
        );
    }
    // node-3 itself still runs, with the binary it claims.
    assert_eq!(
        api.get_at(2, "/v1/cluster").await.unwrap().body["attestation"]["binary_sha256"],
        other_digest.to_hex()
    );
    // node-3 learns from its peers' answers that both refuse it, so it does not lead.
    let peers = &api;
    let refused_by = eventually(
        "node-3 to show that node-1 and node-2 refuse it",
        Duration::from_secs(60),
        || async move {
            let r = peers.get_at(2, "/v1/cluster").await.ok()?;
            let list = r.body["attestation"]["refused_by"].as_array()?.clone();
            let names: Vec<&str> = list.iter().filter_map(|e| e["peer"].as_str()).collect();
            (names == ["node-1", "node-2"]).then_some(Value::Array(list))
        },
    )
    .await;
    for entry in refused_by.as_array().unwrap() {
        let detail = entry["detail"].as_str().unwrap();
        assert!(
            detail.contains("node-3 is not admitted") && detail.contains("binary_sha256"),
            "{entry}"
        );
        assert!(entry["since_unix"].as_u64().unwrap() > 0, "{entry}");
    }
    eventually(
        "node-1 to report a leader other than node-3",
        Duration::from_secs(30),
        || async move {
            let r = peers.get_at(0, "/v1/cluster").await.ok()?;
            let leader = r.body["leader"].as_str()?;
            (leader != "node-3").then(|| r.body["leader"].clone())
        },
    )
    .await;

    // Signing goes on without node-3: the signers are node-1 and node-2.
    let out = sign_through(&api, 0, &key_1, Duration::from_secs(180)).await;
    assert_eq!(out["mode"], "pool", "{out}");
    assert_eq!(out["signers"], json!(["node-1", "node-2"]), "{out}");
    let presig = hex::decode(out["presignature_id"].as_str().unwrap()).unwrap();
    for node in [0, 1] {
        let rows = db_rows(
            &cluster.database_url(node),
            "SELECT presig_id FROM presignatures WHERE state = 'consumed'",
        )
        .await;
        assert!(
            rows.iter().any(|r| r.get::<_, Vec<u8>>(0) == presig),
            "node {node} did not consume the presignature"
        );
    }
    // node-3 cannot coordinate a signing either: its peers refuse its requests.
    let body = json!({"key_id": key_1, "path": "0/8", "digest": hex::encode([8u8; 32])});
    let r = api
        .post_at(2, "/v1/dangerous-dev/sign-digest", &body)
        .await
        .unwrap();
    assert_ne!(r.status, 200, "node-3 signed while refused: {}", r.body);
    // node-3 took part in nothing: no presignature reserved or consumed, no signature.
    let used = db_rows(
        &cluster.database_url(2),
        "SELECT count(*) FROM presignatures WHERE state IN ('reserved', 'consumed')",
    )
    .await;
    assert_eq!(used[0].get::<_, i64>(0), 0, "node-3 used a presignature");
    let signed = db_rows(&cluster.database_url(2), "SELECT count(*) FROM signatures").await;
    assert_eq!(signed[0].get::<_, i64>(0), 0, "node-3 holds a signature");
    eprintln!(
        "[{:?}] node-3 refused and left out of signing",
        started.elapsed()
    );

    // ---- the digest is added to the peers' profile: node-3 is admitted -----------------------
    // Running nodes re-read the profile file at their next re-check: no restart.
    for node in 0..3 {
        cluster
            .set_node_firmware_profile(node, &profile_allowing(&[digest, other_digest]))
            .unwrap();
    }
    for node in [0, 1] {
        let a = wait_admission(&api, node, "node-3", "admitted").await;
        assert_eq!(a["binary_sha256"], other_digest.to_hex(), "{a}");
        let url = cluster.database_url(node);
        let want = other_digest.to_hex();
        wait_audit_entry(&url, "peer_admitted", "node-3", |f| {
            f["binary_sha256"] == want.as_str()
        })
        .await;
    }
    // node-3 learns that its peers answer it again.
    eventually(
        "node-3 to show that no peer refuses it",
        Duration::from_secs(30),
        || async move {
            let r = peers.get_at(2, "/v1/cluster").await.ok()?;
            let list = r.body["attestation"]["refused_by"].as_array()?;
            list.is_empty().then(|| r.body["attestation"].clone())
        },
    )
    .await;
    // node-3 takes part again: key generation needs all three.
    let created = api
        .post_at(0, "/v1/keys", &json!({"name": "k2", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    let key_2 = created.body["key_id"].as_str().unwrap().to_owned();
    wait_key_ready(&api, &[0, 1, 2], &key_2).await;
    eprintln!(
        "[{:?}] node-3 admitted and generated a key",
        started.elapsed()
    );
}

// ---- TPM quotes ---------------------------------------------------------------------------------

/// The boot PCRs the profile names.
const PCRS: [u8; 4] = [0, 2, 4, 7];

/// What the simulated measured boot extends into PCR `index`.
fn measurement(index: u8) -> [u8; 32] {
    *Sha256Digest::of(format!("strongroom cluster test boot stage {index}").as_bytes()).as_bytes()
}

/// The PCR value after one extend from reset (all zero): SHA-256(zeros ‖ measurement).
fn expected_pcr(index: u8) -> Sha256Digest {
    let mut data = [0u8; 64];
    data[32..].copy_from_slice(&measurement(index));
    Sha256Digest::of(&data)
}

/// The dev profile requiring a TPM quote over [`PCRS`] by one of `aks`.
fn tpm_profile(aks: &[String]) -> String {
    let aks = aks
        .iter()
        .map(|a| format!("\"{a}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let pcrs = PCRS
        .iter()
        .map(|i| format!("{i} = \"{}\"", expected_pcr(*i)))
        .collect::<Vec<_>>()
        .join("\n");
    dev_profile_with(
        "[tpm]\nrequired = false",
        &format!("[tpm]\nrequired = true\nenrolled_aks = [{aks}]\n\n[tpm.pcrs]\n{pcrs}"),
    )
}

/// Runs `strongroom tpm <args> --json` against `tcti`: exit status and the JSON document.
fn tpm_cli(tcti: &str, args: &[&str]) -> (bool, Value) {
    let out = std::process::Command::new(strongroom_binary().unwrap())
        .arg("tpm")
        .args(args)
        .args(["--json", "--tcti", tcti])
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "strongroom tpm {args:?}: no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_quoting_with_their_tpms_are_admitted_and_a_changed_boot_is_refused() {
    let missing = swtpm::missing_tools();
    assert!(
        missing.is_empty(),
        "{} not installed: the Debian packages swtpm and tpm2-tools (deploy/dev/setup.sh installs them)",
        missing.join(", ")
    );
    let started = Instant::now();
    let mut cluster = three_nodes();
    let ids = cluster.node_ids();
    let logs = cluster.dir().join("logs");

    // ---- one TPM per node: measured boot, attestation key enrolled with the CLI ------------
    let mut tpms = Vec::new();
    let mut aks = Vec::new();
    for id in &ids {
        let tpm = Swtpm::start(&format!("swtpm-{id}"), &logs).unwrap();
        for i in PCRS {
            tpm.extend(i, &measurement(i)).unwrap();
        }
        let (ok, enrolled) = tpm_cli(&tpm.tcti(), &["enroll"]);
        assert!(ok, "{enrolled}");
        assert_eq!(enrolled["created"], true, "{enrolled}");
        assert_eq!(enrolled["ak_handle"], "0x81010002", "{enrolled}");
        // Enrolling again keeps the key.
        let (ok, again) = tpm_cli(&tpm.tcti(), &["enroll"]);
        assert!(ok, "{again}");
        assert_eq!(again["created"], false, "{again}");
        assert_eq!(again["ak_sha256"], enrolled["ak_sha256"]);
        aks.push(enrolled["ak_sha256"].as_str().unwrap().to_owned());
        tpms.push(tpm);
    }
    assert_ne!(aks[0], aks[1]);
    let profile = tpm_profile(&aks);
    for (node, tpm) in tpms.iter().enumerate() {
        cluster.set_node_firmware_profile(node, &profile).unwrap();
        cluster
            .set_node_env(
                node,
                vec![("STRONGROOM__ATTESTATION__TPM__TCTI".into(), tpm.tcti())],
            )
            .unwrap();
    }
    // The operator's check before starting: this TPM passes the profile.
    let profile_file = cluster.firmware_profile_path(0);
    let profile_arg = profile_file.to_str().unwrap();
    let (ok, status) = tpm_cli(&tpms[0].tcti(), &["status", "--profile", profile_arg]);
    assert!(ok, "{status}");
    assert_eq!(status["profile"]["passes"], true, "{status}");
    assert_eq!(status["ak_enrolled"], true, "{status}");

    tokio::task::block_in_place(|| cluster.start_new_nodes()).unwrap();
    let api = api_client(&cluster, None);

    // ---- every quote passes: all admitted on their TPM's key, a key is generated ------------
    for node in 0..3 {
        let own = api.get_at(node, "/v1/cluster").await.unwrap().body["attestation"].clone();
        assert_eq!(own["tpm"]["ak_sha256"], aks[node].as_str(), "{own}");
        assert_eq!(own["tpm"]["pcrs"], json!(PCRS), "{own}");
        assert!(
            cluster
                .logs(node)
                .contains("this node's TPM quote passes its own firmware profile"),
            "node {node} did not check its own quote at start-up"
        );
        for (peer_index, peer) in ids.iter().enumerate().filter(|(i, _)| *i != node) {
            let a = wait_admission(&api, node, peer, "admitted").await;
            assert_eq!(a["tpm_ak_sha256"], aks[peer_index].as_str(), "{a}");
            let url = cluster.database_url(node);
            wait_audit_entry(&url, "peer_admitted", peer, |f| {
                f["tpm_ak_sha256"] == aks[peer_index].as_str()
            })
            .await;
        }
    }
    let created = api
        .post_at(0, "/v1/keys", &json!({"name": "tpm-k1", "threshold": 2}))
        .await
        .unwrap();
    assert_eq!(created.status, 202, "{}", created.body);
    let key = created.body["key_id"].as_str().unwrap().to_owned();
    wait_key_ready(&api, &[0, 1, 2], &key).await;
    eprintln!(
        "[{:?}] key generated with all three admitted on TPM quotes",
        started.elapsed()
    );

    // ---- node-3's boot changes (another Secure Boot policy in PCR 7): refused ---------------
    let changed = *Sha256Digest::of(b"an unexpected boot policy").as_bytes();
    tokio::task::block_in_place(|| tpms[2].extend(7, &changed)).unwrap();
    for node in [0, 1] {
        let a = wait_admission(&api, node, "node-3", "refused").await;
        assert_eq!(a["field"], "tpm.pcrs", "{a}");
        let reason = a["reason"].as_str().unwrap();
        assert!(
            reason.contains("PCR 7") && reason.contains(&expected_pcr(7).to_hex()),
            "{reason}"
        );
        let url = cluster.database_url(node);
        let last = wait_audit_entry(&url, "peer_refused", "node-3", |_| true).await;
        assert_eq!(last["field"], "tpm.pcrs", "{last}");
    }
    // `strongroom cluster status` shows node-1's view: node-3 refused, naming the PCR.
    let urls = cluster.api_urls();
    let status_cli = |json: bool| {
        let mut cmd = std::process::Command::new(strongroom_binary().unwrap());
        cmd.args(["cluster", "status", "--api-urls", &urls[0]])
            .arg("--ca-cert")
            .arg(cluster.ca_cert())
            .arg("--client-cert")
            .arg(cluster.client_cert())
            .arg("--client-key")
            .arg(cluster.client_key());
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "cluster status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let view: Value = serde_json::from_str(&status_cli(true)).unwrap();
    let third = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["node_id"] == "node-3")
        .unwrap();
    assert_eq!(third["admission"]["state"], "refused", "{view}");
    let text = status_cli(false);
    eprintln!("{text}");
    assert!(
        text.contains("REFUSED on tpm.pcrs") && text.contains("PCR 7"),
        "{text}"
    );
    assert!(
        text.contains(&format!("TPM key {}", &aks[1][..16])),
        "{text}"
    );

    // The operator sees the same on node-3's TPM.
    let (ok, status) = tpm_cli(&tpms[2].tcti(), &["status", "--profile", profile_arg]);
    assert!(!ok, "{status}");
    let problems = status["profile"]["problems"].to_string();
    assert!(problems.contains("PCR 7: differs"), "{status}");
    eprintln!("[{:?}] node-3 refused on PCR 7", started.elapsed());
}
