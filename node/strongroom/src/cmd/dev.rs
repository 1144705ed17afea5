//! `strongroom dev`: a local cluster under `.dev/` in the current directory that stays up
//! between commands.
//!
//! `dev up` provisions it the first time (a SoftHSM token per node, the cluster PKI, one
//! PostgreSQL with a database per node, etcd, a configuration per node, all on 127.0.0.1) and
//! starts every process in the background; later it starts the same cluster again (same
//! tokens, data, certificates and ports). `dev down` stops the processes and keeps the data;
//! `dev status` says what runs; `dev demo` signs a PSBT on it ([`crate::cmd::demo`]). The
//! processes are known by their pid files in `.dev/pids/`.
//!
//! Layout of `.dev/` (git-ignored): `cluster.env` (source it for `strongroom keys ...`),
//! `cluster.json` (nodes, threshold, URLs), `approvers/` (dev approver keys), and what the
//! devenv harness provisions: `state.toml`, `hsm/`, `pins/`, `pki/`, `config/` (each node's
//! configuration and policy, `policies/examples/dev.toml`), `run/`, `logs/`, `postgres/`,
//! `etcd/`, `pids/`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use strongroom_client::{ApiClient, ClientConfig};
use strongroom_devenv::cluster::{ClusterOptions, DEV_POLICY, TestCluster};
use strongroom_devenv::detached::{self, StopOutcome};

use crate::api_args::ApiArgs;
use crate::cmd::demo;
use crate::output::Output;

/// The dev cluster's directory, in the current directory.
const DEV_DIR: &str = ".dev";
/// Written by `dev up`: nodes, threshold, URLs.
const INFO_FILE: &str = "cluster.json";
/// Written by `dev up`: the environment `strongroom keys ...` reads.
const ENV_FILE: &str = "cluster.env";
/// The dev approver keys, `dev-approver-<i>.key`, named as `policies/examples/dev.toml` names
/// the approvers (`strongroom approve` takes the approver name from the file name).
const APPROVERS_DIR: &str = "approvers";
/// How many dev approver keys `dev up` writes.
const APPROVERS: u32 = 3;
/// Cluster id, and the client in `cluster.env` with its roles on every node.
const CLUSTER_ID: &str = "dev";
const CLIENT_NAME: &str = "dev";
const CLIENT_ROLES: [&str; 4] = ["submitter", "admin", "auditor", "approver"];
const DEFAULT_NODES: usize = 3;
const DEFAULT_THRESHOLD: u16 = 2;
/// How long every node has to answer `GET /v1/health` after its port opened.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `dev down` waits for a process after the polite signal before it kills it.
const STOP_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, Subcommand)]
pub(crate) enum DevCommand {
    /// Start the local dev cluster under .dev/ in the background: provisioned the first time
    /// (SoftHSM tokens, certificates, PostgreSQL, etcd, node configs, all on 127.0.0.1), the
    /// same cluster again later. Writes .dev/cluster.env: `source .dev/cluster.env`, then
    /// `strongroom keys ...`.
    Up {
        /// Nodes of a new cluster [default: 3]. An existing cluster keeps its own.
        #[arg(long)]
        nodes: Option<usize>,
        /// Signers needed, for `strongroom dev demo` [default: 2].
        #[arg(long)]
        threshold: Option<u16>,
    },
    /// Stop every process of the dev cluster (nodes, then etcd and PostgreSQL); the data stays
    /// for the next `dev up`.
    Down,
    /// Which processes of the dev cluster run.
    Status,
    /// Sign a PSBT on the running dev cluster: generates a key named 'demo' if the cluster has
    /// no ready key, builds a regtest PSBT spending a made-up output of the key, submits it,
    /// waits until it is signed and prints the signed transaction.
    Demo {
        /// Satoshis to send (to the key's own receive address m/0/1, which counts as leaving
        /// the key); the made-up input holds 200,000 sat and the fee is 1,000 sat.
        #[arg(long, default_value_t = demo::DEFAULT_AMOUNT_SAT, value_name = "SAT")]
        amount: u64,
    },
}

pub(crate) fn run(cmd: DevCommand, out: &Output) -> anyhow::Result<()> {
    let dir = dev_dir()?;
    match cmd {
        DevCommand::Up { nodes, threshold } => up(&dir, nodes, threshold, out),
        DevCommand::Down => down(&dir, out),
        DevCommand::Status => status(&dir, out),
        DevCommand::Demo { amount } => run_demo(&dir, amount, out),
    }
}

fn dev_dir() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    Ok(cwd.join(DEV_DIR))
}

/// What `dev up` records about the cluster in `.dev/cluster.json`.
#[derive(Debug, Clone)]
struct DevInfo {
    nodes: usize,
    threshold: u16,
    node_ids: Vec<String>,
    api_urls: Vec<String>,
}

impl DevInfo {
    fn read(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join(INFO_FILE);
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Self {
            nodes: v["nodes"]
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .with_context(|| format!("{}: no \"nodes\"", path.display()))?,
            threshold: v["threshold"]
                .as_u64()
                .and_then(|t| u16::try_from(t).ok())
                .with_context(|| format!("{}: no \"threshold\"", path.display()))?,
            node_ids: strings("node_ids"),
            api_urls: strings("api_urls"),
        })
    }

    fn write(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(INFO_FILE);
        let v = json!({
            "cluster_id": CLUSTER_ID, "network": "regtest",
            "nodes": self.nodes, "threshold": self.threshold,
            "node_ids": self.node_ids, "api_urls": self.api_urls,
        });
        fs::write(&path, format!("{v:#}\n"))
            .with_context(|| format!("cannot write {}", path.display()))
    }

    /// Every process of the cluster: the nodes, etcd, PostgreSQL.
    fn process_names(&self) -> Vec<String> {
        let mut names = self.node_ids.clone();
        names.push(detached::ETCD.to_owned());
        names.push(detached::POSTGRES.to_owned());
        names
    }
}

fn dev_options(nodes: usize, exe: PathBuf) -> ClusterOptions {
    ClusterOptions {
        nodes,
        pool_target: 20,
        pool_low_water: 10,
        pool_max: 30,
        // 0: as many presign sessions at once as the machine has cores.
        pool_concurrency: 0,
        interactive_fallback: true,
        sign_digest_endpoint: true,
        corrupt_partials: Vec::new(),
        peer_request_endpoint: Vec::new(),
        lease_ttl_secs: 3,
        extra_env: Vec::new(),
        cluster_id: CLUSTER_ID.to_owned(),
        client_name: CLIENT_NAME.to_owned(),
        client_roles: CLIENT_ROLES.iter().map(|&r| r.to_owned()).collect(),
        extra_clients: Vec::new(),
        policy: DEV_POLICY.to_owned(),
        node_policies: Vec::new(),
        node_binary: Some(exe),
    }
}

fn up(
    dir: &Path,
    nodes: Option<usize>,
    threshold: Option<u16>,
    out: &Output,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let (mut cluster, info, how) = if TestCluster::is_provisioned(dir) {
        let info = DevInfo::read(dir)?;
        for (given, has, what) in [
            (
                nodes.map(|n| n.to_string()),
                info.nodes.to_string(),
                "--nodes",
            ),
            (
                threshold.map(|t| t.to_string()),
                info.threshold.to_string(),
                "--threshold",
            ),
        ] {
            if let Some(given) = given.filter(|g| *g != has) {
                bail!(
                    "the dev cluster in {} has {what} {has}, not {given}: leave {what} out to use \
                     it, or make a new one (`strongroom dev down`, then remove {})",
                    dir.display(),
                    dir.display()
                );
            }
        }
        let recorded = detached::recorded(dir)?;
        let running = |name: &str| recorded.iter().any(|p| p.name == name && p.running);
        let names = info.process_names();
        let down: Vec<&String> = names.iter().filter(|n| !running(n)).collect();
        if down.is_empty() {
            report_up(dir, &info, &recorded_pids(dir)?, "running", out);
            return Ok(());
        }
        if down.len() < names.len() {
            out.progress(&format!(
                "the dev cluster runs only in part ({} not running): stopping the rest to start it as a whole",
                join(&down)
            ));
        }
        // Also clears pid files that outlived their processes.
        detached::stop_all(dir, STOP_GRACE)?;
        out.progress(&format!(
            "starting the dev cluster in {} again (same tokens, data, certificates and ports): PostgreSQL and etcd",
            dir.display()
        ));
        let mut cluster = TestCluster::open_in(dir, Some(exe))
            .with_context(|| format!("cannot start the dev cluster in {} again", dir.display()))?;
        out.progress(&format!("starting {} nodes", info.nodes));
        cluster.start_nodes().with_context(|| {
            format!(
                "cannot start the nodes (is a port of the dev cluster taken by another program? \
                 logs in {})",
                dir.join("logs").display()
            )
        })?;
        (cluster, info, "restarted")
    } else {
        let nodes = nodes.unwrap_or(DEFAULT_NODES);
        let threshold = threshold.unwrap_or(DEFAULT_THRESHOLD);
        if nodes < 2 {
            bail!("a threshold cluster needs --nodes 2 or more");
        }
        if threshold < 2 || usize::from(threshold) > nodes {
            bail!("--threshold must be between 2 and the number of nodes ({nodes})");
        }
        prepare_dir(dir, out)?;
        out.progress(&format!(
            "provisioning a {nodes}-node dev cluster in {}: SoftHSM tokens, certificates, PostgreSQL, etcd",
            dir.display()
        ));
        let mut cluster = TestCluster::provision_in(dir, dev_options(nodes, exe))
            .with_context(|| format!("cannot provision the dev cluster in {}", dir.display()))?;
        let mut info = DevInfo {
            nodes,
            threshold,
            node_ids: cluster.node_ids(),
            api_urls: cluster.api_urls(),
        };
        info.write(dir)?;
        out.progress(&format!("starting {nodes} nodes"));
        cluster.start_new_nodes().with_context(|| {
            format!(
                "cannot start the nodes (logs in {})",
                dir.join("logs").display()
            )
        })?;
        // The ports may have moved if one was taken meanwhile.
        info.api_urls = cluster.api_urls();
        (cluster, info, "started")
    };

    info.write(dir)?;
    let approvers = write_approver_keys(dir)?;
    write_env_file(dir, &cluster, &approvers)?;
    out.progress("waiting for every node's API to answer GET /v1/health");
    wait_for_health(&mut cluster)?;
    let pids = cluster
        .detach()
        .context("cannot leave the dev cluster running")?;
    report_up(dir, &info, &pids, how, out);
    Ok(())
}

/// Creates `.dev` (this user's only; as root the harness lets PostgreSQL's user search it)
/// and clears what an unfinished `dev up` left behind.
fn prepare_dir(dir: &Path, out: &Output) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict {}", dir.display()))?;
    }
    let leftovers = TestCluster::unfinished_entries(dir);
    if !leftovers.is_empty() {
        out.progress(&format!(
            "removing what an unfinished `dev up` left in {}",
            dir.display()
        ));
        detached::stop_all(dir, STOP_GRACE)?;
        TestCluster::remove_unfinished(dir)?;
    }
    Ok(())
}

/// Waits until every node's API answers `GET /v1/health` (any status), failing at once with
/// its log if a node exits.
fn wait_for_health(cluster: &mut TestCluster) -> anyhow::Result<()> {
    let api = ApiClient::new(ClientConfig {
        urls: cluster.api_urls(),
        ca_cert: cluster.ca_cert(),
        client_cert: cluster.client_cert(),
        client_key: cluster.client_key(),
        cluster_id: None,
        timeout: Duration::from_secs(5),
    })
    .context("cannot set up the API client with the dev cluster's certificates")?;
    let runtime = super::runtime()?;
    let ids = cluster.node_ids();
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    for (index, id) in ids.iter().enumerate() {
        loop {
            if !cluster.is_running(index) {
                bail!(
                    "{id} exited while starting; its log:\n{}",
                    cluster.log_tail(index)
                );
            }
            match runtime.block_on(api.get_at(index, "/v1/health")) {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    bail!(
                        "{id} did not answer GET /v1/health within {} s: {e}\n{}",
                        HEALTH_TIMEOUT.as_secs(),
                        cluster.log_tail(index)
                    );
                }
                Err(_) => thread::sleep(Duration::from_millis(250)),
            }
        }
    }
    Ok(())
}

/// The dev approver keys: `dev-approver-<i>.key` holds the hex Ed25519 secret
/// SHA-256("strongroom-dev-approver-<i>"); `policies/examples/dev.toml` lists the keys of
/// `dev-approver-1` and `dev-approver-2` (the third is in no policy, to try a refused
/// approval). Anyone can compute them: they protect nothing.
fn write_approver_keys(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let approvers = dir.join(APPROVERS_DIR);
    fs::create_dir_all(&approvers)
        .with_context(|| format!("cannot create {}", approvers.display()))?;
    (1..=APPROVERS)
        .map(|i| {
            let path = approvers.join(format!("dev-approver-{i}.key"));
            let secret = Sha256::digest(format!("strongroom-dev-approver-{i}"));
            write_private(&path, format!("{}\n", hex::encode(secret)).as_bytes())?;
            Ok(path)
        })
        .collect()
}

/// `.dev/cluster.env`: the client settings of `strongroom keys ...` and the approver keys.
fn write_env_file(dir: &Path, cluster: &TestCluster, approvers: &[PathBuf]) -> anyhow::Result<()> {
    let paths = |p: &[PathBuf]| {
        p.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let vars = [
        (
            strongroom_client::ENV_API_URLS,
            cluster.api_urls().join(","),
        ),
        (
            strongroom_client::ENV_CA_CERT,
            cluster.ca_cert().display().to_string(),
        ),
        (
            strongroom_client::ENV_CLIENT_CERT,
            cluster.client_cert().display().to_string(),
        ),
        (
            strongroom_client::ENV_CLIENT_KEY,
            cluster.client_key().display().to_string(),
        ),
        ("STRONGROOM_APPROVER_KEYS", paths(approvers)),
    ];
    let mut text = String::from(
        "# The local dev cluster (written by `strongroom dev up`): `source .dev/cluster.env`,\n\
         # then `strongroom keys list`. The client 'dev' has the roles submitter, admin, auditor,\n\
         # approver.\n",
    );
    for (name, value) in vars {
        let _ = writeln!(text, "export {name}={}", shell_quote(&value));
    }
    let path = dir.join(ENV_FILE);
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// `value` as one shell word: as it is when it holds only safe characters, else in single
/// quotes.
fn shell_quote(value: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "/.,:_-+=@%".contains(c);
    if !value.is_empty() && value.chars().all(safe) {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// Writes a file readable only by its owner (mode 0600), replacing it if it exists.
fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: restrict it too.
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}

/// `dev demo`: on the running dev cluster, with the client settings of `.dev/cluster.env`.
fn run_demo(dir: &Path, amount: u64, out: &Output) -> anyhow::Result<()> {
    demo::check_amount(amount)?;
    let env_file = dir.join(ENV_FILE);
    if !TestCluster::is_provisioned(dir) || !env_file.is_file() {
        bail!(
            "no dev cluster in {}: run `strongroom dev up` first",
            dir.display()
        );
    }
    let info = DevInfo::read(dir)?;
    let recorded = detached::recorded(dir)?;
    let names = info.process_names();
    let down: Vec<&String> = names
        .iter()
        .filter(|name| !recorded.iter().any(|p| p.name == **name && p.running))
        .collect();
    if !down.is_empty() {
        bail!(
            "the dev cluster in {} is not running ({} not running): run `strongroom dev up` first",
            dir.display(),
            join(&down)
        );
    }
    let vars = read_env_file(&env_file)?;
    let config = ApiArgs::default()
        .config_with(|name| vars.get(name).cloned())
        .with_context(|| format!("{} lacks a client setting", env_file.display()))?;
    let api = ApiClient::new(config).with_context(|| {
        format!(
            "cannot set up the API client from {} (run `strongroom dev up` again to rewrite it)",
            env_file.display()
        )
    })?;
    let runtime = super::runtime()?;
    runtime.block_on(demo::run(&api, out, info.threshold, amount))
}

/// The variables of an environment file as [`write_env_file`] writes it: `export NAME=value`
/// lines, each value one shell word ([`shell_quote`]); comments and blank lines skipped.
fn read_env_file(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut vars = HashMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = line
            .strip_prefix("export ")
            .and_then(|rest| rest.split_once('='))
            .and_then(|(name, value)| Some((name.trim(), shell_unquote(value)?)));
        let Some((name, value)) = parsed else {
            bail!(
                "{} line {}: expected `export NAME=value` (run `strongroom dev up` again to rewrite it)",
                path.display(),
                number + 1
            );
        };
        vars.insert(name.to_owned(), value);
    }
    Ok(vars)
}

/// The value of one shell word as [`shell_quote`] writes it: bare, or in single quotes with
/// `'\''` for a quote inside.
fn shell_unquote(word: &str) -> Option<String> {
    if !word.starts_with('\'') {
        return Some(word.to_owned());
    }
    let mut out = String::new();
    let mut rest = word;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("\\'") {
            out.push('\'');
            rest = after;
        } else if let Some(quoted) = rest.strip_prefix('\'') {
            let end = quoted.find('\'')?;
            out.push_str(&quoted[..end]);
            rest = &quoted[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

fn recorded_pids(dir: &Path) -> anyhow::Result<Vec<(String, u32)>> {
    Ok(detached::recorded(dir)?
        .into_iter()
        .filter(|p| p.running)
        .map(|p| (p.name, p.pid))
        .collect())
}

fn join(names: &[&String]) -> String {
    names
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn report_up(dir: &Path, info: &DevInfo, pids: &[(String, u32)], how: &str, out: &Output) {
    let pid_of = |name: &str| pids.iter().find(|(n, _)| n == name).map(|&(_, p)| p);
    let nodes: Vec<Value> = info
        .node_ids
        .iter()
        .zip(&info.api_urls)
        .map(|(id, url)| json!({"id": id, "url": url, "pid": pid_of(id)}))
        .collect();
    let env_file = dir.join(ENV_FILE);
    out.report(
        json!({
            "state": how, "dir": dir, "cluster_id": CLUSTER_ID, "network": "regtest",
            "nodes": nodes, "threshold": info.threshold, "api_urls": info.api_urls,
            "postgres_pid": pid_of(detached::POSTGRES), "etcd_pid": pid_of(detached::ETCD),
            "env_file": env_file,
        }),
        || {
            let headline = match how {
                "running" => "the dev cluster is already running",
                "restarted" => "the dev cluster is up again",
                _ => "the dev cluster is up",
            };
            let mut s = format!(
                "{headline}: {} nodes (threshold {} for `strongroom dev demo`), cluster '{CLUSTER_ID}', regtest\n",
                info.nodes, info.threshold
            );
            for (id, url) in info.node_ids.iter().zip(&info.api_urls) {
                let pid = pid_of(id).map(|p| format!("pid {p}")).unwrap_or_default();
                let _ = writeln!(s, "  {id:<8} {url}  {pid}");
            }
            for server in [detached::POSTGRES, detached::ETCD] {
                if let Some(pid) = pid_of(server) {
                    let _ = writeln!(s, "  {server:<8} pid {pid}");
                }
            }
            let _ = writeln!(s, "  data and logs in {}", dir.display());
            let _ = writeln!(s, "next:\n  strongroom dev demo              # signs a PSBT on it");
            let _ = writeln!(s, "  source {DEV_DIR}/{ENV_FILE}");
            let _ = writeln!(
                s,
                "  strongroom keys create --name treasury --threshold {} --wait",
                info.threshold
            );
            let _ = writeln!(s, "stop it with `strongroom dev down` (the data stays)");
            s
        },
    );
}

fn down(dir: &Path, out: &Output) -> anyhow::Result<()> {
    let recorded = detached::recorded(dir)?;
    if !recorded.iter().any(|p| p.running) {
        // Stale pid files (a crash, a reboot) go too.
        detached::stop_all(dir, STOP_GRACE)?;
        out.report(json!({"stopped": [], "was_running": false}), || {
            format!(
                "no process of a dev cluster runs in {}: nothing to stop\n",
                dir.display()
            )
        });
        return Ok(());
    }
    out.progress("stopping the dev cluster: the nodes (SIGTERM), then etcd (SIGTERM) and PostgreSQL (SIGINT, fast shutdown)");
    let stopped = detached::stop_all(dir, STOP_GRACE)?;
    let rows: Vec<Value> = stopped
        .iter()
        .map(|p| {
            let outcome = match p.outcome {
                StopOutcome::Exited => "stopped",
                StopOutcome::Killed => "killed",
                StopOutcome::NotRunning => "not-running",
            };
            json!({"name": p.name, "pid": p.pid, "outcome": outcome, "signal": p.signal})
        })
        .collect();
    out.report(json!({"stopped": rows, "was_running": true}), || {
        let mut s = String::new();
        for p in &stopped {
            let _ = match p.outcome {
                StopOutcome::Exited => {
                    writeln!(s, "stopped {} (pid {}, {})", p.name, p.pid, p.signal)
                }
                StopOutcome::Killed => writeln!(
                    s,
                    "killed {} (pid {}): still running {} s after {}",
                    p.name,
                    p.pid,
                    STOP_GRACE.as_secs(),
                    p.signal
                ),
                StopOutcome::NotRunning => writeln!(s, "{} was not running", p.name),
            };
        }
        let _ = writeln!(
            s,
            "the data stays in {}: `strongroom dev up` starts the same cluster again",
            dir.display()
        );
        s
    });
    Ok(())
}

fn status(dir: &Path, out: &Output) -> anyhow::Result<()> {
    let provisioned = TestCluster::is_provisioned(dir);
    let info = if provisioned {
        DevInfo::read(dir).ok()
    } else {
        None
    };
    let recorded = detached::recorded(dir)?;
    let mut names = info
        .as_ref()
        .map(DevInfo::process_names)
        .unwrap_or_default();
    for p in &recorded {
        if !names.contains(&p.name) {
            names.push(p.name.clone());
        }
    }
    let rows: Vec<(String, Option<u32>, bool)> = names
        .iter()
        .map(|name| {
            let p = recorded.iter().find(|p| &p.name == name);
            (name.clone(), p.map(|p| p.pid), p.is_some_and(|p| p.running))
        })
        .collect();
    let running = rows.iter().filter(|r| r.2).count();
    let state = match (provisioned, running) {
        (false, 0) => "absent",
        (_, 0) => "stopped",
        (true, n) if n == rows.len() => "running",
        _ => "partial",
    };
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|(name, pid, running)| json!({"name": name, "pid": pid, "running": running}))
        .collect();
    out.report(
        json!({
            "state": state, "dir": dir, "processes": json_rows,
            "nodes": info.as_ref().map(|i| i.nodes), "threshold": info.as_ref().map(|i| i.threshold),
            "api_urls": info.as_ref().map(|i| i.api_urls.clone()),
        }),
        || {
            let mut s = match state {
                "absent" => {
                    return format!(
                        "no dev cluster in {}: `strongroom dev up` makes one\n",
                        dir.display()
                    );
                }
                "stopped" => format!("the dev cluster in {} is stopped (`strongroom dev up`)\n", dir.display()),
                "running" => format!("the dev cluster in {} is running\n", dir.display()),
                _ => format!(
                    "the dev cluster in {} runs only in part (`strongroom dev up` restarts it as a whole)\n",
                    dir.display()
                ),
            };
            for (name, pid, running) in &rows {
                let what = match (running, pid) {
                    (true, Some(pid)) => format!("running (pid {pid})"),
                    _ => "not running".to_owned(),
                };
                let _ = writeln!(s, "  {name:<8} {what}");
            }
            if let Some(info) = &info {
                let _ = writeln!(
                    s,
                    "  {} nodes, threshold {}; API: {}",
                    info.nodes,
                    info.threshold,
                    info.api_urls.join(", ")
                );
            }
            s
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_quote("/a/b.pem,/c"), "/a/b.pem,/c");
        assert_eq!(
            shell_quote("https://127.0.0.1:1,https://127.0.0.1:2"),
            "https://127.0.0.1:1,https://127.0.0.1:2"
        );
        assert_eq!(shell_quote("/my dir/x"), "'/my dir/x'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn quoted_words_read_back() {
        for value in [
            "/a/b.pem,/c",
            "/my dir/x",
            "it's",
            "",
            "'",
            "a''b",
            "https://127.0.0.1:1",
        ] {
            assert_eq!(
                shell_unquote(&shell_quote(value)).as_deref(),
                Some(value),
                "{value}"
            );
        }
        assert_eq!(shell_unquote("'unterminated"), None);
    }

    #[test]
    fn env_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENV_FILE);
        fs::write(
            &path,
            "# comment\n\nexport STRONGROOM_API_URLS=https://127.0.0.1:1,https://127.0.0.1:2\n\
             export STRONGROOM_CA_CERT='/my dir/ca.pem'\n",
        )
        .unwrap();
        let vars = read_env_file(&path).unwrap();
        assert_eq!(vars["STRONGROOM_CA_CERT"], "/my dir/ca.pem");
        assert_eq!(
            vars["STRONGROOM_API_URLS"],
            "https://127.0.0.1:1,https://127.0.0.1:2"
        );
        fs::write(&path, "STRONGROOM_CA_CERT=x\n").unwrap();
        let err = read_env_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn demo_needs_the_dev_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_demo(&dir.path().join(DEV_DIR), 50_000, &Output::new(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("run `strongroom dev up` first"), "{err}");
        let err = run_demo(&dir.path().join(DEV_DIR), 0, &Output::new(false))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--amount"), "{err}");
    }

    #[test]
    fn approver_keys_are_the_dev_policy_keys() {
        // The public keys of dev-approver-1 and -2 in policies/examples/dev.toml.
        let published = [
            "161574ed5fc206ebf457578e88d9f2411433b9c6b9b515e95b9f80138dbaa0c7",
            "3be12ba41410b3145b925bca2e8ac70f0bc62ae7ac8554fcdf945d1f9bbb0e05",
        ];
        let dir = tempfile::tempdir().unwrap();
        let paths = write_approver_keys(dir.path()).unwrap();
        assert_eq!(paths.len(), 3);
        assert!(paths[0].ends_with("approvers/dev-approver-1.key"));
        assert!(paths[2].ends_with("approvers/dev-approver-3.key"));
        for (path, public) in paths.iter().zip(published) {
            let text = fs::read_to_string(path).unwrap();
            let secret: [u8; 32] = hex::decode(text.trim()).unwrap().try_into().unwrap();
            let key = ed25519_dalek::SigningKey::from_bytes(&secret);
            assert_eq!(hex::encode(key.verifying_key().as_bytes()), public);
            let mode = fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Written again (every `dev up`), the same.
        let again = write_approver_keys(dir.path()).unwrap();
        assert_eq!(fs::read(&again[0]).unwrap(), fs::read(&paths[0]).unwrap());
    }
}
