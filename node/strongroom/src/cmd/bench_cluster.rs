//! `strongroom bench presign`, `bench sign` and `bench e2e`: a three-node cluster on loopback
//! (real node processes of this binary, SoftHSM tokens, PostgreSQL, etcd), measured end to end.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use strongroom_client::{ApiClient, ClientConfig};
use strongroom_devenv::cluster::{ClusterOptions, TestCluster};

use crate::output::Output;

/// A local cluster for a benchmark, with its API client.
struct BenchCluster {
    cluster: TestCluster,
    api: ApiClient,
}

/// `low_water`: the pool size below which the leader refills. The signing benchmarks set it to
/// 1 so that refilling (presigning: big-integer work that, on one machine running all three
/// nodes, takes the same cores as signing) waits until a pool is nearly empty and the
/// measurement sees signing from the warm pool alone; `bench presign` measures the refill.
fn start_cluster(
    out: &Output,
    target: u32,
    low_water: u32,
    concurrency: u32,
    interactive_fallback: bool,
) -> anyhow::Result<BenchCluster> {
    out.progress(
        "starting a 3-node cluster on loopback (SoftHSM, PostgreSQL, etcd, node processes)",
    );
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let cluster = TestCluster::start(ClusterOptions {
        nodes: 3,
        pool_target: target,
        pool_low_water: low_water.min(target),
        pool_max: target,
        pool_concurrency: concurrency,
        interactive_fallback,
        node_binary: Some(exe),
        // A benchmark client sends as fast as the cluster answers.
        extra_env: vec![(
            "STRONGROOM__API__RATE_LIMIT_PER_SECOND".to_owned(),
            "0".to_owned(),
        )],
        ..ClusterOptions::default()
    })
    .context("cannot start the local cluster")?;
    let api = ApiClient::new(ClientConfig {
        urls: cluster.api_urls(),
        ca_cert: cluster.ca_cert(),
        client_cert: cluster.client_cert(),
        client_key: cluster.client_key(),
        cluster_id: None,
        timeout: Duration::from_secs(120),
    })?;
    Ok(BenchCluster { cluster, api })
}

async fn wait_for<F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<Value>>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Creates a 2-of-3 key and waits until every node has it ready.
async fn create_key(b: &BenchCluster, out: &Output) -> anyhow::Result<String> {
    wait_for(
        "the cluster to elect a leader",
        Duration::from_secs(60),
        || async {
            Ok(b.api
                .get_at(0, "/v1/cluster")
                .await
                .ok()
                .and_then(|r| r.body["leader"].is_string().then_some(r.body)))
        },
    )
    .await?;
    out.progress("generating a 2-of-3 key (aux info first: about a minute on two cores)");
    let created = b
        .api
        .post_at(0, "/v1/keys", &json!({"name": "bench", "threshold": 2}))
        .await?
        .into_result()?;
    let key_id = created["key_id"].as_str().context("no key id")?.to_owned();
    for node in 0..3 {
        let path = format!("/v1/keys/{key_id}");
        wait_for("the key to be ready", Duration::from_secs(900), || {
            let path = path.clone();
            async move {
                let r = b.api.get_at(node, &path).await?;
                if r.body["state"] == "failed" {
                    bail!("key generation failed: {}", r.body["error"]);
                }
                Ok((r.body["state"] == "ready").then_some(r.body))
            }
        })
        .await?;
    }
    Ok(key_id)
}

/// Sum of `available` over the pools node `node` holds.
async fn held_available(api: &ApiClient, node: usize) -> anyhow::Result<(i64, usize)> {
    let r = api.get_at(node, "/v1/presignatures").await?.into_result()?;
    let pools = r["pools"].as_array().cloned().unwrap_or_default();
    let held: Vec<&Value> = pools
        .iter()
        .filter(|p| p["held_by_this_node"] == true)
        .collect();
    Ok((
        held.iter().filter_map(|p| p["available"].as_i64()).sum(),
        held.len(),
    ))
}

async fn wait_pools_full(b: &BenchCluster, target: u32, limit: Duration) -> anyhow::Result<()> {
    for node in 0..3 {
        wait_for("the pools to fill", limit, || async move {
            let (available, pools) = held_available(&b.api, node).await?;
            Ok((pools == 2 && available >= 2 * i64::from(target)).then_some(Value::Null))
        })
        .await?;
    }
    Ok(())
}

async fn db_query(url: &str, sql: &str) -> anyhow::Result<Vec<tokio_postgres::Row>> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    let task = tokio::spawn(conn);
    let rows = client.query(sql, &[]).await?;
    drop(client);
    let _ = task.await;
    Ok(rows)
}

/// Bare library: aux info and a 2-of-3 key from the dev prime fixture in one process, then
/// `count` presignatures, `concurrency` at once.
fn bare_library(count: usize, concurrency: usize) -> anyhow::Result<f64> {
    use rand_core::OsRng;
    use strongroom_mpc::keys::{SecretAuxInfo, run_aux_info, run_keygen};
    use strongroom_mpc::primes::{Primes, PrimesPolicy};
    use strongroom_mpc::session::{KeyId, SessionDescriptor, SessionId};
    let primes = (0..3)
        .map(Primes::dangerous_dev_fixture)
        .collect::<Result<Vec<_>, _>>()?;
    let session = SessionDescriptor::aux_info(SessionId::random(&mut OsRng), 3)?;
    let aux: Vec<SecretAuxInfo> = round_based::sim::run_with_setup(primes, |i, party, primes| {
        let session = &session;
        async move {
            let mut rng = OsRng;
            let policy = PrimesPolicy::DangerousAllowDevFixture;
            run_aux_info(session, i, primes, policy, &mut rng, party, None).await
        }
    })?
    .into_vec()
    .into_iter()
    .collect::<Result<_, _>>()?;
    let session = SessionDescriptor::keygen(
        SessionId::random(&mut OsRng),
        KeyId::random(&mut OsRng),
        3,
        2,
    )?;
    let generated = round_based::sim::run_with_setup(aux.iter(), |_, party, aux| {
        let session = &session;
        async move {
            let mut rng = OsRng;
            run_keygen(session, aux, &mut rng, party, None).await
        }
    })?
    .into_vec()
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    let shares: Vec<_> = generated.iter().take(2).map(|g| &g.share).collect();
    let t = strongroom_mpc::bench::presign_throughput(&shares, count, concurrency)?;
    Ok(t.per_second())
}

pub(crate) fn presign(count: usize, concurrency: usize, out: &Output) -> anyhow::Result<()> {
    if count < 6 || concurrency == 0 {
        bail!("use --presignatures 6 or more and --concurrency 1 or more");
    }
    // Three pools (one per signer pair) share the count.
    let per_pool = u32::try_from(count.div_ceil(3))?;
    let total = per_pool as usize * 3;
    // The cluster first: it configures SoftHSM for this process before any other thread runs.
    let b = start_cluster(out, per_pool, per_pool, u32::try_from(concurrency)?, true)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let cluster_rate = runtime.block_on(async {
        let key_id = create_key(&b, out).await?;
        out.progress(&format!(
            "the leader fills three pools of {per_pool} ({total} presignatures, {concurrency} sessions at once)"
        ));
        wait_pools_full(&b, per_pool, Duration::from_secs(3600)).await?;
        // From the moment the last node had the key until the last presignature was stored.
        let mut ready_at: Option<f64> = None;
        let mut created: HashMap<Vec<u8>, f64> = HashMap::new();
        for node in 0..3 {
            let url = b.cluster.database_url(node);
            let rows = db_query(
                &url,
                &format!(
                    "SELECT extract(epoch FROM updated_at)::float8 FROM keys WHERE key_id = '{key_id}'"
                ),
            )
            .await?;
            if let Some(r) = rows.first() {
                let t: f64 = r.get(0);
                ready_at = Some(ready_at.map_or(t, |cur| cur.max(t)));
            }
            for r in db_query(
                &url,
                "SELECT presig_id, extract(epoch FROM created_at)::float8 FROM presignatures",
            )
            .await?
            {
                let id: Vec<u8> = r.get(0);
                let t: f64 = r.get(1);
                let e = created.entry(id).or_insert(t);
                *e = e.max(t);
            }
        }
        let ready_at = ready_at.context("no key timestamps")?;
        let last = created.values().copied().fold(f64::MIN, f64::max);
        let n = created.len();
        anyhow::Ok(n as f64 / (last - ready_at))
    })?;
    drop(b);
    out.progress(&format!(
        "bare cggmp24 in one process: {total} presignatures, 2 signers, {concurrency} at once"
    ));
    let bare_rate = bare_library(total, concurrency)?;
    let ratio = cluster_rate / bare_rate;
    out.report(
        json!({
            "benchmark": "presign", "signers": 2, "concurrency": concurrency,
            "presignatures": total,
            "cluster_per_second": cluster_rate, "bare_library_per_second": bare_rate,
            "ratio": ratio,
        }),
        || {
            let mut s = String::new();
            let _ = writeln!(
                s,
                "presign, 2-of-3, 2 signers per presignature, {concurrency} sessions at once, {total} presignatures"
            );
            let _ = writeln!(s, "  cluster (3 node processes, QUIC, sealed in SoftHSM, PostgreSQL): {cluster_rate:.2} /s");
            let _ = writeln!(s, "  bare cggmp24 in one process:                                   {bare_rate:.2} /s");
            let _ = writeln!(s, "  ratio cluster / bare: {ratio:.2} (goal: at least 0.90)");
            s
        },
    );
    Ok(())
}

pub(crate) fn sign(signatures: usize, out: &Output) -> anyhow::Result<()> {
    if signatures == 0 {
        bail!("use --signatures 1 or more");
    }
    // Enough presignatures in the pools of node-1 (two pools) that the pool never runs dry.
    let per_pool = u32::try_from(signatures.div_ceil(2) + 2)?;
    let b = start_cluster(out, per_pool, 1, 2, false)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (server, client) = runtime.block_on(async {
        let key_id = create_key(&b, out).await?;
        out.progress(&format!("filling the pools ({per_pool} per signer pair)"));
        wait_pools_full(&b, per_pool, Duration::from_secs(3600)).await?;
        out.progress(&format!(
            "signing {signatures} digests through node-1 from the warm pool"
        ));
        let mut server = Vec::with_capacity(signatures);
        let mut client = Vec::with_capacity(signatures);
        for i in 0..signatures {
            let digest: [u8; 32] = {
                use sha2::Digest;
                sha2::Sha256::digest(format!("bench sign {i}")).into()
            };
            let body =
                json!({"key_id": key_id, "path": format!("0/{i}"), "digest": hex::encode(digest)});
            let started = Instant::now();
            let r = b
                .api
                .post_at(0, "/v1/dangerous-dev/sign-digest", &body)
                .await?
                .into_result()?;
            client.push(started.elapsed().as_secs_f64() * 1000.0);
            if r["mode"] != "pool" {
                bail!("signature {i} did not come from the pool: {r}");
            }
            server.push(r["duration_ms"].as_f64().context("no duration")?);
        }
        anyhow::Ok((server, client))
    })?;
    drop(b);
    let (sp50, sp99) = (percentile(&server, 0.5), percentile(&server, 0.99));
    let (cp50, cp99) = (percentile(&client, 0.5), percentile(&client, 0.99));
    out.report(
        json!({
            "benchmark": "sign", "signatures": signatures,
            "online_step_ms": {"p50": sp50, "p99": sp99},
            "client_round_trip_ms": {"p50": cp50, "p99": cp99},
        }),
        || {
            format!(
                "online signing from a warm pool, 2-of-3, {signatures} signatures through node-1\n  \
                 online step (reserve, partials with durable consumption, checks, combine, verify, record): p50 {sp50:.2} ms, p99 {sp99:.2} ms\n  \
                 client round trip (HTTPS with mTLS, kept connections):                                 p50 {cp50:.2} ms, p99 {cp99:.2} ms\n"
            )
        },
    );
    Ok(())
}

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i.min(s.len() - 1)]
}

/// Submits one demo PSBT through node `node` and waits until it is signed; returns the
/// client's time from submission to signed PSBT and the node's (request created to signed).
async fn submit_and_wait(
    api: &ApiClient,
    node: usize,
    key: &strongroom_bitcoin::ClusterKey,
    key_id: &str,
) -> anyhow::Result<(f64, f64)> {
    use rand_core::RngCore;
    use strongroom_bitcoin::bitcoin::hashes::Hash;
    let mut txid = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut txid);
    let psbt = super::demo::demo_psbt(
        key,
        super::demo::DEFAULT_AMOUNT_SAT,
        strongroom_bitcoin::bitcoin::Txid::from_byte_array(txid),
    )?;
    let started = Instant::now();
    let submitted = api
        .post_at(
            node,
            "/v1/sign-requests",
            &json!({"key_id": key_id, "psbt": psbt.to_string()}),
        )
        .await?
        .into_result()?;
    let id = submitted["request_id"]
        .as_str()
        .context("no request id")?
        .to_owned();
    loop {
        let r = api
            .get_at(
                node,
                &format!("/v1/sign-requests/{id}?wait_secs=30&until=signed"),
            )
            .await?
            .into_result()?;
        match r["state"].as_str() {
            Some("signed") => {
                let client = started.elapsed().as_secs_f64() * 1000.0;
                let server = (r["updated_at"].as_f64().unwrap_or(0.0)
                    - r["created_at"].as_f64().unwrap_or(0.0))
                    * 1000.0;
                return Ok((client, server));
            }
            Some("rejected" | "failed" | "expired" | "cancelled") => {
                bail!("request {id} ended {}: {}", r["state"], r["error"])
            }
            _ => {}
        }
    }
}

pub(crate) fn e2e(
    requests: usize,
    throughput_requests: usize,
    concurrency: usize,
    out: &Output,
) -> anyhow::Result<()> {
    if requests == 0 || throughput_requests == 0 || concurrency == 0 {
        bail!("use --requests, --throughput-requests and --concurrency of 1 or more");
    }
    // Every node coordinates a third of the requests from its two pools: enough presignatures
    // in the three pools for every request, with room to spare.
    let total = requests + throughput_requests;
    let per_pool = u32::try_from(total.div_ceil(3) + 4)?;
    let b = start_cluster(out, per_pool, 1, 2, false)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let key_id = create_key(&b, out).await?;
        let key_json = b
            .api
            .get_at(0, &format!("/v1/keys/{key_id}"))
            .await?
            .into_result()?;
        let key = super::demo::cluster_key_of(&key_json)?;
        out.progress(&format!(
            "filling the pools ({per_pool} per signer pair, {} in all)",
            per_pool * 3
        ));
        wait_pools_full(&b, per_pool, Duration::from_secs(3600)).await?;
        out.progress(&format!(
            "{requests} PSBTs one at a time, round robin over the nodes (submission to signed PSBT)"
        ));
        let mut client = Vec::with_capacity(requests);
        let mut server = Vec::with_capacity(requests);
        for i in 0..requests {
            let (c, s) = submit_and_wait(&b.api, i % 3, &key, &key_id).await?;
            client.push(c);
            server.push(s);
        }
        out.progress(&format!(
            "{throughput_requests} PSBTs, {concurrency} in flight at once"
        ));
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let api = b.api.clone();
            let key = key.clone();
            let key_id = key_id.clone();
            let next = next.clone();
            workers.spawn(async move {
                let mut latencies = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= throughput_requests {
                        return anyhow::Ok(latencies);
                    }
                    latencies.push(submit_and_wait(&api, i % 3, &key, &key_id).await?.0);
                }
            });
        }
        let mut loaded = Vec::with_capacity(throughput_requests);
        while let Some(r) = workers.join_next().await {
            loaded.extend(r.context("a benchmark worker stopped")??);
        }
        let elapsed = started.elapsed().as_secs_f64();
        anyhow::Ok((client, server, loaded, elapsed))
    })?;
    drop(b);
    let (client, server, loaded, elapsed) = report;
    let rate = throughput_requests as f64 / elapsed;
    let (cp50, cp99) = (percentile(&client, 0.5), percentile(&client, 0.99));
    let (sp50, sp99) = (percentile(&server, 0.5), percentile(&server, 0.99));
    let (lp50, lp99) = (percentile(&loaded, 0.5), percentile(&loaded, 0.99));
    out.report(
        json!({
            "benchmark": "e2e", "requests": requests,
            "submission_to_signed_ms": {"p50": cp50, "p99": cp99},
            "node_created_to_signed_ms": {"p50": sp50, "p99": sp99},
            "throughput": {"requests": throughput_requests, "concurrency": concurrency,
                           "seconds": elapsed, "signed_per_second": rate,
                           "latency_ms": {"p50": lp50, "p99": lp99}},
        }),
        || {
            let mut s = String::new();
            let _ = writeln!(s, "policy-gated PSBT signing, 2-of-3, dev policy, warm pools (refilled only once nearly empty), one input per PSBT");
            let _ = writeln!(s, "  one at a time ({requests} requests, round robin over the nodes):");
            let _ = writeln!(s, "    submission to signed PSBT (client, HTTPS with mTLS, kept connections):     p50 {cp50:.1} ms, p99 {cp99:.1} ms (goal: p50 <= 25, p99 <= 100)");
            let _ = writeln!(s, "    request stored to signed (node):                                         p50 {sp50:.1} ms, p99 {sp99:.1} ms");
            let _ = writeln!(s, "  {concurrency} at once ({throughput_requests} requests): {rate:.1} signed requests/s (goal: >= 50), latency p50 {lp50:.1} ms, p99 {lp99:.1} ms");
            s
        },
    );
    Ok(())
}
