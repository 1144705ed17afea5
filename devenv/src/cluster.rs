//! A cluster of real `strongroom` node processes on loopback, provisioned from scratch per test.
//!
//! [`TestCluster::start`] provisions everything a cluster needs and starts every node:
//!
//! - one [`SoftHsm`] with a token per node (`strongroom-node-<i>`), its PIN in
//!   `<dir>/pins/node-<i>.pin` (mode 0600);
//! - the cluster PKI from `strongroom cluster init` in `<dir>/pki`: the CA, each node's identity
//!   key inside its token with its certificate (`pki/nodes/node-<i>.pem`), and the client `ops`
//!   as files (`pki/clients/ops.pem`, `ops-key.pem`), with every client of
//!   [`ClusterOptions::extra_clients`] beside it ([`TestCluster::client_cert_of`]);
//! - one PostgreSQL server with a database per node (`node_1`, `node_2`, ...) and one etcd;
//! - a configuration file per node (`<dir>/config/node-<i>.toml`, the format of
//!   `node/runtime/examples/node.toml`) with free loopback ports: UDP for the transport, TCP for
//!   the API;
//! - a policy file per node (`<dir>/config/node-<i>-policy.toml`, named by the node's
//!   `[policy] file`): [`ClusterOptions::policy`], the dev policy by default, or the node's own
//!   from [`ClusterOptions::node_policies`]; [`TestCluster::set_node_policy`] rewrites it for
//!   the node's next start;
//! - a firmware profile per node (`<dir>/config/node-<i>-firmware-profile.toml`, named by the
//!   node's `[attestation] profile`): `firmware-profile/dev.toml` ([`DEV_FIRMWARE_PROFILE`]),
//!   so every node checks its peers' attestation evidence;
//!   [`TestCluster::set_node_firmware_profile`] rewrites it (a running node re-reads it at its
//!   next re-check);
//! - the processes, `strongroom node run --config <file>`, with stdout and stderr in
//!   `<dir>/logs/node-<i>.stderr.log`; a restarted node writes `node-<i>.2.stderr.log`, then
//!   `.3.` and so on, so no earlier output is lost.
//!
//! A node counts as started once its API port accepts TCP connections. Dropping the cluster
//! kills every node, then etcd and PostgreSQL, and removes the directories, unless
//! `STRONGROOM_KEEP_TEST_DIRS` is set: then the cluster directory (configs, PKI, PINs, node
//! logs, and copies of the PostgreSQL and etcd logs) is kept and its path logged (tracing, at
//! warn level).
//!
//! The cluster owns the process's [`SoftHsm`], so a test process holds at most one cluster
//! (and no other `SoftHsm`).
//!
//! **Persistent clusters** (the dev cluster of `strongroom dev up`). [`TestCluster::provision_in`]
//! provisions the same cluster in a directory of the caller's, which is never removed: the
//! tokens in `<dir>/hsm/<node-id>` (a SoftHSM installation per node, so that no node reads a
//! token file another node is writing; `cluster init` sees them all in `<dir>/hsm` for the
//! moment it runs), PostgreSQL in `<dir>/postgres` (full durability), etcd in
//! `<dir>/etcd`, every log in `<dir>/logs`, and a state file `<dir>/state.toml` (ports, node
//! ids, database URLs, options) from which [`TestCluster::open_in`] starts the same cluster
//! again, with the same tokens, data, certificates and ports. Each process it starts is
//! recorded in `<dir>/pids/<name>.pid` ([`crate::detached`]); [`TestCluster::detach`] leaves
//! them all running when the value goes, and [`crate::detached::stop_all`] stops them later.
//! Without `detach`, dropping a persistent cluster stops its processes as for a test, but
//! keeps the directory.

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use strongroom_keystore::{PinSource, TokenConfig};
use tempfile::TempDir;
use toml::{Table, Value};

use crate::detached;
use crate::etcd::Etcd;
use crate::ports::{free_tcp_ports, free_udp_ports};
use crate::postgres::{Durability, Postgres};
use crate::process::{ChildProcess, HarnessError, effective_uid, run, strongroom_binary};
use crate::softhsm::{self, SoftHsm};

/// The cluster id of a test cluster ([`ClusterOptions::cluster_id`] by default).
pub const CLUSTER_ID: &str = "test";
/// The client whose certificate and key [`TestCluster::client_cert`] and
/// [`TestCluster::client_key`] name ([`ClusterOptions::client_name`] by default).
pub const CLIENT_NAME: &str = "ops";
/// The roles [`CLIENT_NAME`] has on every node ([`ClusterOptions::client_roles`] by default).
pub const CLIENT_ROLES: [&str; 4] = ["admin", "submitter", "auditor", "approver"];
/// The policy every node runs by default ([`ClusterOptions::policy`]):
/// `policies/examples/dev.toml`, whose approvers are the well-known dev approver keys.
pub const DEV_POLICY: &str = include_str!("../../policies/examples/dev.toml");
/// The firmware profile every node runs: `firmware-profile/dev.toml` (SoftHSM 2.6, any
/// binary, no TPM).
pub const DEV_FIRMWARE_PROFILE: &str = include_str!("../../firmware-profile/dev.toml");
/// The state file of a persistent cluster, in its directory: what [`TestCluster::open_in`]
/// needs to start it again.
pub const STATE_FILE: &str = "state.toml";
/// Log filter of the node processes (`RUST_LOG` and `STRONGROOM_LOG`; `extra_env` may
/// override either).
pub const NODE_LOG_FILTER: &str = "info,strongroom=debug,cryptoki::mechanism=off";
/// Environment variable that keeps the cluster directory after the test.
pub const KEEP_DIRS_ENV: &str = "STRONGROOM_KEEP_TEST_DIRS";
/// How long a node may take from spawn until its API port accepts connections.
pub const NODE_START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long [`TestCluster::stop_node`] waits after SIGTERM before it kills the node.
pub const NODE_STOP_GRACE: Duration = Duration::from_secs(20);

/// Lines of a node's stderr that [`TestCluster::log_tail`] (and errors) show.
const LOG_TAIL_LINES: usize = 80;
/// Bytes read from the end of each log file to find those lines.
const LOG_TAIL_BYTES: u64 = 64 * 1024;
const POLL_INTERVAL: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Attempts of [`TestCluster::start`] when a port chosen for a node was taken meanwhile.
const START_ATTEMPTS: usize = 3;
/// Everything provisioning creates in a persistent cluster's directory.
const PERSISTENT_ENTRIES: [&str; 10] = [
    STATE_FILE,
    "hsm",
    "pins",
    "pki",
    "config",
    "run",
    "logs",
    "postgres",
    "etcd",
    detached::PIDS_DIR,
];
/// Version of the state file's format.
const STATE_VERSION: i64 = 1;

/// What kind of cluster [`TestCluster::start`] provisions.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Number of nodes, with ids `node-1` ..= `node-<n>`.
    pub nodes: usize,
    /// `[pool] target`: presignatures kept per (key, signer set).
    pub pool_target: u32,
    /// `[pool] low_water`: the leader refills a pool below this.
    pub pool_low_water: u32,
    /// `[pool] max`.
    pub pool_max: u32,
    /// `[pool] concurrency`: presign sessions the leader runs at once.
    pub pool_concurrency: u32,
    /// `[signing] interactive_fallback`.
    pub interactive_fallback: bool,
    /// `[dev] dangerous_sign_digest_endpoint` on every node.
    pub sign_digest_endpoint: bool,
    /// Nodes (0-based indices) started with `[dev] dangerous_corrupt_partials = true`.
    pub corrupt_partials: Vec<usize>,
    /// Nodes (0-based indices) started with `[dev] dangerous_peer_request_endpoint = true`:
    /// tests send hand-made control messages from them, playing a compromised member.
    pub peer_request_endpoint: Vec<usize>,
    /// `[etcd] lease_ttl_secs`.
    pub lease_ttl_secs: u64,
    /// Extra environment for every node process (set last, so it overrides the harness's).
    pub extra_env: Vec<(String, String)>,
    /// `[node] cluster_id`, and the cluster of every certificate.
    pub cluster_id: String,
    /// The client whose certificate and key `cluster init` writes (`pki/clients/<name>.pem`).
    pub client_name: String,
    /// The roles of that client in every node's `[api.clients]`.
    pub client_roles: Vec<String>,
    /// More clients (name, roles): each gets a certificate and key from `cluster init`
    /// ([`TestCluster::client_cert_of`], [`TestCluster::client_key_of`]) and its roles in every
    /// node's `[api.clients]`.
    pub extra_clients: Vec<(String, Vec<String>)>,
    /// The policy (TOML, `strongroom-policies` format) every node runs unless
    /// [`ClusterOptions::node_policies`] gives it its own; [`DEV_POLICY`] by default.
    pub policy: String,
    /// Nodes (0-based indices) with a policy of their own (TOML); a later entry for the same
    /// node wins.
    pub node_policies: Vec<(usize, String)>,
    /// The `strongroom` binary that provisions the cluster and runs the nodes; `None` builds the
    /// workspace's (tests). A command of the binary itself passes its own path.
    pub node_binary: Option<PathBuf>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            nodes: 3,
            pool_target: 6,
            pool_low_water: 3,
            pool_max: 10,
            pool_concurrency: 2,
            interactive_fallback: true,
            sign_digest_endpoint: true,
            corrupt_partials: Vec::new(),
            peer_request_endpoint: Vec::new(),
            lease_ttl_secs: 2,
            extra_env: Vec::new(),
            cluster_id: CLUSTER_ID.to_owned(),
            client_name: CLIENT_NAME.to_owned(),
            client_roles: CLIENT_ROLES.iter().map(|&r| r.to_owned()).collect(),
            extra_clients: Vec::new(),
            policy: DEV_POLICY.to_owned(),
            node_policies: Vec::new(),
            node_binary: None,
        }
    }
}

impl ClusterOptions {
    /// The policy node `index` (0-based) runs: its own from
    /// [`ClusterOptions::node_policies`] (the last entry for it), else [`ClusterOptions::policy`].
    pub fn policy_of(&self, index: usize) -> &str {
        self.node_policies
            .iter()
            .rev()
            .find(|(i, _)| *i == index)
            .map_or(self.policy.as_str(), |(_, text)| text.as_str())
    }

    /// Every client with its roles: [`ClusterOptions::client_name`] first, then
    /// [`ClusterOptions::extra_clients`].
    fn all_clients(&self) -> impl Iterator<Item = (&str, &[String])> {
        std::iter::once((self.client_name.as_str(), self.client_roles.as_slice())).chain(
            self.extra_clients
                .iter()
                .map(|(name, roles)| (name.as_str(), roles.as_slice())),
        )
    }

    /// Refuses options that name a node the cluster does not have, or a client twice.
    fn check(&self) -> Result<(), HarnessError> {
        if self.nodes == 0 {
            return Err(HarnessError::Misuse(
                "a test cluster needs at least one node".to_owned(),
            ));
        }
        for (what, index) in self
            .corrupt_partials
            .iter()
            .map(|&i| ("corrupt_partials", i))
            .chain(
                self.peer_request_endpoint
                    .iter()
                    .map(|&i| ("peer_request_endpoint", i)),
            )
            .chain(
                self.node_policies
                    .iter()
                    .map(|(i, _)| ("node_policies", *i)),
            )
        {
            if index >= self.nodes {
                return Err(HarnessError::Misuse(format!(
                    "{what} names node index {index}, but the cluster has {} nodes (indices are 0-based)",
                    self.nodes
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in self.all_clients() {
            if !seen.insert(name) {
                return Err(HarnessError::Misuse(format!(
                    "client '{name}' is named twice (client_name and extra_clients must all differ)"
                )));
            }
        }
        Ok(())
    }
}

/// One node: its identity, ports, files and (while it runs) its process.
#[derive(Debug)]
struct Node {
    id: String,
    /// 1-based number in the id, also in the database name.
    number: usize,
    transport_port: u16,
    api_port: u16,
    config_path: PathBuf,
    /// The policy file its `[policy] file` names.
    policy_path: PathBuf,
    /// The firmware profile its `[attestation] profile` names.
    profile_path: PathBuf,
    /// The binary it runs, when not the cluster's ([`TestCluster::set_node_binary`]).
    binary: Option<PathBuf>,
    /// Environment of every start ([`TestCluster::set_node_env`]).
    env: Vec<(String, String)>,
    pin_file: PathBuf,
    database_url: String,
    /// Working directory of the process.
    work_dir: PathBuf,
    /// The node's own SoftHSM configuration (persistent clusters); `None`: the cluster's.
    softhsm_conf: Option<PathBuf>,
    process: Option<ChildProcess>,
    /// How many times the node has been spawned; names its log files.
    incarnations: usize,
}

impl Node {
    /// The name the `n`-th spawn (1-based) logs under: `node-1`, then `node-1.2`, ...
    fn log_name(&self, incarnation: usize) -> String {
        if incarnation <= 1 {
            self.id.clone()
        } else {
            format!("{}.{incarnation}", self.id)
        }
    }
}

/// A provisioned cluster of node processes with everything they need; see the module docs.
#[derive(Debug)]
pub struct TestCluster {
    options: ClusterOptions,
    node_binary: PathBuf,
    root: PathBuf,
    nodes: Vec<Node>,
    // Dropped in this order, after `Drop::drop` has killed the nodes.
    etcd: Etcd,
    postgres: Postgres,
    softhsm: SoftHsm,
    /// Lives in a directory of the caller's, with pid files ([`TestCluster::provision_in`]).
    persistent: bool,
    /// Its processes were left running ([`TestCluster::detach`]).
    detached: bool,
    /// `None` once kept (STRONGROOM_KEEP_TEST_DIRS), and for a persistent cluster.
    dir: Option<TempDir>,
}

/// Where [`TestCluster::provision_at`] puts a cluster.
enum Place {
    Temp,
    Persistent(PathBuf),
}

impl TestCluster {
    /// Provisions a cluster and starts every node; returns once every node's API port accepts
    /// TCP connections. Creates the process's [`SoftHsm`]: call it at the start of a test.
    pub fn start(options: ClusterOptions) -> Result<Self, HarnessError> {
        let mut cluster = Self::provision(options)?;
        cluster.start_new_nodes()?;
        Ok(cluster)
    }

    /// Starts every node of a freshly provisioned cluster, like [`TestCluster::start_nodes`];
    /// when a port chosen for a node was taken meanwhile, moves every node to fresh ports
    /// (rewriting the configuration files) and starts again, up to 3 times. Only for nodes
    /// that have never run: their peers and clients know them by their ports.
    pub fn start_new_nodes(&mut self) -> Result<(), HarnessError> {
        for attempt in 1..=START_ATTEMPTS {
            match self.start_nodes() {
                Ok(()) => return Ok(()),
                Err(e) if e.is_address_in_use() && attempt < START_ATTEMPTS => {
                    // Another process took a port between choosing and binding: no node has
                    // served anything yet, so move the whole cluster to fresh ports.
                    tracing::warn!(attempt, "a node port was taken; choosing new ports: {e}");
                    self.kill_all();
                    self.assign_ports()?;
                    self.write_configs()?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(HarnessError::Unexpected(format!(
            "the nodes found no free ports in {START_ATTEMPTS} attempts"
        )))
    }

    /// Provisions everything [`TestCluster::start`] does (tokens, PKI, databases, etcd,
    /// configuration files) without starting any node; [`TestCluster::start_nodes`] starts them.
    pub fn provision(options: ClusterOptions) -> Result<Self, HarnessError> {
        Self::provision_at(options, Place::Temp)
    }

    /// Provisions a persistent cluster in `dir` (created if missing), which is never removed:
    /// everything [`TestCluster::provision`] does, with PostgreSQL at full durability, and the
    /// state file [`TestCluster::open_in`] reads. No node is started. `dir` must not hold a
    /// cluster yet, nor the leftovers of an unfinished provisioning
    /// ([`TestCluster::remove_unfinished`] clears those).
    pub fn provision_in(dir: &Path, options: ClusterOptions) -> Result<Self, HarnessError> {
        create_dir(dir)?;
        let root = fs::canonicalize(dir)
            .map_err(|e| HarnessError::io(format!("cannot resolve {}", dir.display()), e))?;
        if root.join(STATE_FILE).exists() {
            return Err(HarnessError::Misuse(format!(
                "{} already holds a cluster: start it again with TestCluster::open_in",
                root.display()
            )));
        }
        let leftovers = Self::unfinished_entries(&root);
        if !leftovers.is_empty() {
            return Err(HarnessError::Misuse(format!(
                "{} holds {} from an unfinished provisioning: remove it first \
                 (TestCluster::remove_unfinished)",
                root.display(),
                leftovers
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Self::provision_at(options, Place::Persistent(root))
    }

    /// Whether `dir` holds a provisioned persistent cluster (its state file).
    pub fn is_provisioned(dir: &Path) -> bool {
        dir.join(STATE_FILE).is_file()
    }

    /// What an unfinished provisioning left in `dir` (no state file, some of the cluster's
    /// entries): the paths that [`TestCluster::remove_unfinished`] would remove.
    pub fn unfinished_entries(dir: &Path) -> Vec<PathBuf> {
        if Self::is_provisioned(dir) {
            return Vec::new();
        }
        PERSISTENT_ENTRIES
            .iter()
            .map(|e| dir.join(e))
            .filter(|p| p.symlink_metadata().is_ok())
            .collect()
    }

    /// Removes what an unfinished provisioning left in `dir` (see
    /// [`TestCluster::unfinished_entries`]) and returns the removed paths. Refuses while a
    /// process recorded in its pid files still runs.
    pub fn remove_unfinished(dir: &Path) -> Result<Vec<PathBuf>, HarnessError> {
        let running: Vec<String> = detached::recorded(dir)?
            .into_iter()
            .filter(|p| p.running)
            .map(|p| format!("{} (pid {})", p.name, p.pid))
            .collect();
        if !running.is_empty() {
            return Err(HarnessError::Misuse(format!(
                "processes of {} still run: {}; stop them first (detached::stop_all)",
                dir.display(),
                running.join(", ")
            )));
        }
        let entries = Self::unfinished_entries(dir);
        for path in &entries {
            let removed = if path.is_dir() {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            removed
                .map_err(|e| HarnessError::io(format!("cannot remove {}", path.display()), e))?;
        }
        Ok(entries)
    }

    /// Opens the persistent cluster in `dir` ([`TestCluster::provision_in`]) whose processes
    /// do not run: starts its PostgreSQL and etcd again on their data and ports, and returns
    /// the cluster with no node started ([`TestCluster::start_nodes`] starts them, on their
    /// ports from before, with their tokens, configuration and policy files as they are; a
    /// node without a policy file, or whose configuration has no `[policy]` section, gets
    /// them from the recorded options). Stop any process still recorded in its pid files first
    /// ([`crate::detached::stop_all`]). `node_binary` as in [`ClusterOptions::node_binary`].
    pub fn open_in(dir: &Path, node_binary: Option<PathBuf>) -> Result<Self, HarnessError> {
        let root = fs::canonicalize(dir)
            .map_err(|e| HarnessError::io(format!("cannot open {}", dir.display()), e))?;
        let state = State::read(&root)?;
        let softhsm = SoftHsm::in_dir(&root.join("hsm"))?;
        let node_binary = match node_binary {
            Some(b) => b,
            None => strongroom_binary()?,
        };
        let mut options = state.options;
        options.node_binary = Some(node_binary.clone());
        make_traversable(&root)?;
        let logs = root.join("logs");
        let (postgres, etcd) = thread::scope(|scope| {
            let postgres = scope.spawn(|| {
                Postgres::open_in(
                    &root.join("postgres"),
                    &logs,
                    state.postgres_port,
                    state.durability,
                )
            });
            let etcd = scope.spawn(|| {
                Etcd::open_in(
                    &root.join("etcd"),
                    &logs,
                    state.etcd_client_port,
                    state.etcd_peer_port,
                )
            });
            (
                join(postgres, "starting PostgreSQL"),
                join(etcd, "starting etcd"),
            )
        });
        let nodes = state
            .nodes
            .into_iter()
            .enumerate()
            .map(|(i, n)| Node {
                config_path: root.join("config").join(format!("{}.toml", n.id)),
                policy_path: policy_path_in(&root, &n.id),
                profile_path: profile_path_in(&root, &n.id),
                binary: None,
                env: Vec::new(),
                pin_file: root.join("pins").join(format!("{}.pin", n.id)),
                work_dir: root.join("run").join(&n.id),
                softhsm_conf: Some(node_hsm_dir(&root, &n.id).join("softhsm2.conf")),
                id: n.id,
                number: i + 1,
                transport_port: n.transport_port,
                api_port: n.api_port,
                database_url: n.database_url,
                process: None,
                incarnations: 0,
            })
            .collect();
        let cluster = Self {
            options,
            node_binary,
            root,
            nodes,
            etcd: etcd?,
            postgres: postgres?,
            softhsm,
            persistent: true,
            detached: false,
            dir: None,
        };
        cluster.record_servers()?;
        cluster.add_missing_policies()?;
        Ok(cluster)
    }

    /// Leaves every process of a persistent cluster running (nodes, etcd, PostgreSQL) when the
    /// value goes, and returns their names and pids (recorded in `<dir>/pids`). A node that
    /// has exited is left out and its pid file removed.
    pub fn detach(mut self) -> Result<Vec<(String, u32)>, HarnessError> {
        if !self.persistent {
            return Err(HarnessError::Misuse(
                "only a persistent cluster (TestCluster::provision_in or open_in) can be left \
                 running: a test cluster's directory goes with it"
                    .to_owned(),
            ));
        }
        let mut pids = Vec::new();
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                if process.try_status()?.is_none() {
                    pids.push((node.id.clone(), process.detach()));
                } else {
                    detached::forget(&self.root, &node.id);
                }
            }
        }
        match self.etcd.detach()? {
            Some(pid) => pids.push((detached::ETCD.to_owned(), pid)),
            None => detached::forget(&self.root, detached::ETCD),
        }
        match self.postgres.detach()? {
            Some(pid) => pids.push((detached::POSTGRES.to_owned(), pid)),
            None => detached::forget(&self.root, detached::POSTGRES),
        }
        self.detached = true;
        Ok(pids)
    }

    fn provision_at(options: ClusterOptions, place: Place) -> Result<Self, HarnessError> {
        options.check()?;
        // First: SoftHSM must be configured before any thread runs or the module is loaded.
        let softhsm = match &place {
            Place::Temp => SoftHsm::new()?,
            Place::Persistent(root) => SoftHsm::in_dir(&root.join("hsm"))?,
        };
        // A program that is itself the strongroom binary (a benchmark, the dev cluster) names
        // itself; tests build the workspace's binary.
        let binary = match &options.node_binary {
            Some(b) => b.clone(),
            None => strongroom_binary()?,
        };
        let node_binary = binary.clone();

        let (dir, root) = match place {
            Place::Temp => {
                let dir = tempfile::Builder::new()
                    .prefix("strongroom-cluster-")
                    .tempdir()
                    .map_err(|e| HarnessError::io("cannot create the cluster directory", e))?;
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
            Place::Persistent(root) => (None, root),
        };
        let persistent = dir.is_none();
        for sub in ["pins", "config", "logs", "run"] {
            create_dir(&root.join(sub))?;
        }
        if persistent {
            make_traversable(&root)?;
        }

        let mut nodes = Vec::with_capacity(options.nodes);
        let mut tokens = Vec::with_capacity(options.nodes);
        for number in 1..=options.nodes {
            let id = format!("node-{number}");
            let label = format!("strongroom-{id}");
            let token = if persistent {
                // Each node sees only its own token: a node that starts never reads a token
                // file that another, running node is writing.
                softhsm.init_token_alone(&label, &node_hsm_dir(&root, &id))?
            } else {
                softhsm.init_token(&label)?
            };
            let pin = fs::read(&token.pin_file).map_err(|e| {
                HarnessError::io(
                    format!("cannot read the PIN file {}", token.pin_file.display()),
                    e,
                )
            })?;
            let pin_file = root.join("pins").join(format!("{id}.pin"));
            write_private(&pin_file, &pin)?;
            let work_dir = root.join("run").join(&id);
            create_dir(&work_dir)?;
            nodes.push(Node {
                config_path: root.join("config").join(format!("{id}.toml")),
                policy_path: policy_path_in(&root, &id),
                profile_path: profile_path_in(&root, &id),
                binary: None,
                env: Vec::new(),
                id,
                number,
                transport_port: 0,
                api_port: 0,
                pin_file,
                database_url: String::new(),
                work_dir,
                softhsm_conf: persistent.then(|| token.conf().to_path_buf()),
                process: None,
                incarnations: 0,
            });
            tokens.push(token);
        }

        // PostgreSQL and etcd start while `cluster init` provisions the tokens.
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let logs = root.join("logs");
        let (postgres, etcd, init) = thread::scope(|scope| {
            let postgres = scope.spawn(|| {
                if persistent {
                    // A dev cluster's data should survive a power loss too.
                    let durability = Durability::SurvivesPowerLoss;
                    Postgres::start_in(&root.join("postgres"), &logs, durability)
                } else {
                    Postgres::start()
                }
            });
            let etcd = scope.spawn(|| {
                if persistent {
                    Etcd::start_in(&root.join("etcd"), &logs)
                } else {
                    Etcd::start()
                }
            });
            let init = || cluster_init(&binary, &softhsm, &root, &ids, &options);
            let init = if persistent {
                softhsm.with_tokens_gathered(&tokens, init)
            } else {
                init()
            };
            (
                join(postgres, "starting PostgreSQL"),
                join(etcd, "starting etcd"),
                init,
            )
        });
        let (postgres, etcd) = (postgres?, etcd?);
        init?;

        for node in &mut nodes {
            node.database_url = postgres.create_database(&format!("node_{}", node.number))?;
        }

        let mut cluster = Self {
            options,
            node_binary,
            root,
            nodes,
            etcd,
            postgres,
            softhsm,
            persistent,
            detached: false,
            dir,
        };
        cluster.record_servers()?;
        cluster.assign_ports()?;
        // Last, for a persistent cluster: the state file that marks it as provisioned.
        cluster.write_configs()?;
        Ok(cluster)
    }

    /// Starts every node that is not running, then waits until each one's API port accepts TCP
    /// connections (the nodes start in parallel).
    pub fn start_nodes(&mut self) -> Result<(), HarnessError> {
        let deadline = Instant::now() + NODE_START_TIMEOUT;
        let mut spawned = Vec::new();
        for index in 0..self.nodes.len() {
            if !self.is_running(index) {
                self.spawn(index, &[])?;
                spawned.push(index);
            }
        }
        for index in spawned {
            self.wait_for_api(index, deadline)?;
        }
        Ok(())
    }

    /// Node ids, in node order.
    pub fn node_ids(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.id.clone()).collect()
    }

    /// The API URL of each node (`https://127.0.0.1:<port>`), in node order.
    pub fn api_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("https://127.0.0.1:{}", n.api_port))
            .collect()
    }

    /// The transport (QUIC, UDP) address of each node, in node order.
    pub fn transport_addrs(&self) -> Vec<SocketAddr> {
        self.nodes
            .iter()
            .map(|n| SocketAddr::from((Ipv4Addr::LOCALHOST, n.transport_port)))
            .collect()
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("pki").join("ca.pem")
    }

    /// The certificate (PEM) of the client [`ClusterOptions::client_name`] (default
    /// [`CLIENT_NAME`]), which has [`ClusterOptions::client_roles`] on every node.
    pub fn client_cert(&self) -> PathBuf {
        self.client_cert_of(&self.options.client_name)
    }

    /// The private key (PEM) of the client [`ClusterOptions::client_name`].
    pub fn client_key(&self) -> PathBuf {
        self.client_key_of(&self.options.client_name)
    }

    /// The certificate (PEM) of client `name`: [`ClusterOptions::client_name`] or one of
    /// [`ClusterOptions::extra_clients`].
    pub fn client_cert_of(&self, name: &str) -> PathBuf {
        self.root
            .join("pki")
            .join("clients")
            .join(format!("{name}.pem"))
    }

    /// The private key (PEM) of client `name`.
    pub fn client_key_of(&self, name: &str) -> PathBuf {
        self.root
            .join("pki")
            .join("clients")
            .join(format!("{name}-key.pem"))
    }

    /// The certificate (PEM) of node `node` (0-based).
    pub fn node_cert(&self, node: usize) -> PathBuf {
        self.root
            .join("pki")
            .join("nodes")
            .join(format!("{}.pem", self.nodes[node].id))
    }

    /// The configuration file of node `node` (0-based).
    pub fn config_path(&self, node: usize) -> PathBuf {
        self.nodes[node].config_path.clone()
    }

    /// The policy file of node `node` (0-based), `<dir>/config/<node-id>-policy.toml`, which its
    /// `[policy] file` names.
    pub fn policy_path(&self, node: usize) -> PathBuf {
        self.nodes[node].policy_path.clone()
    }

    /// Gives node `node` (0-based) the policy `text` (TOML, not checked here): rewrites its
    /// policy file, which the node reads when it next starts, and records it as the node's own
    /// in [`ClusterOptions::node_policies`] (and in a persistent cluster's state file).
    pub fn set_node_policy(&mut self, node: usize, text: &str) -> Result<(), HarnessError> {
        self.check_index(node)?;
        self.options.node_policies.retain(|(i, _)| *i != node);
        self.options.node_policies.push((node, text.to_owned()));
        write_policy(&self.nodes[node].policy_path, text)?;
        if self.persistent {
            self.write_state()?;
        }
        Ok(())
    }

    /// The firmware profile of node `node` (0-based),
    /// `<dir>/config/<node-id>-firmware-profile.toml`, which its `[attestation] profile` names.
    pub fn firmware_profile_path(&self, node: usize) -> PathBuf {
        self.nodes[node].profile_path.clone()
    }

    /// Gives node `node` (0-based) the firmware profile `text` (TOML, not checked here): a
    /// node reads it when it starts, and a running node at its next attestation re-check
    /// (`[attestation] recheck_secs`).
    pub fn set_node_firmware_profile(
        &mut self,
        node: usize,
        text: &str,
    ) -> Result<(), HarnessError> {
        self.check_index(node)?;
        write_policy(&self.nodes[node].profile_path, text)
    }

    /// Runs node `node` (0-based) with `binary` from its next start on (`None`: the cluster's
    /// binary again), e.g. a copy whose digest a firmware profile does not list.
    pub fn set_node_binary(
        &mut self,
        node: usize,
        binary: Option<PathBuf>,
    ) -> Result<(), HarnessError> {
        self.check_index(node)?;
        self.nodes[node].binary = binary;
        Ok(())
    }

    /// Gives node `node` (0-based) extra environment for every start from now on (after
    /// [`ClusterOptions::extra_env`], before a single start's), e.g. its own
    /// `STRONGROOM__ATTESTATION__TPM__TCTI`.
    pub fn set_node_env(
        &mut self,
        node: usize,
        env: Vec<(String, String)>,
    ) -> Result<(), HarnessError> {
        self.check_index(node)?;
        self.nodes[node].env = env;
        Ok(())
    }

    /// The URL of node `node`'s own database (`node_<node + 1>`).
    pub fn database_url(&self, node: usize) -> String {
        self.nodes[node].database_url.clone()
    }

    /// How the keystore opens node `node`'s token (e.g. to inspect it while the node is
    /// stopped; SoftHSM reads a token's objects when a process opens it). In this process for
    /// a test cluster; a persistent cluster's token shows only under the node's own SoftHSM
    /// configuration, `<dir>/hsm/<node-id>/softhsm2.conf`.
    pub fn token_config(&self, node: usize) -> TokenConfig {
        TokenConfig {
            module: PathBuf::from(softhsm::MODULE),
            label: format!("strongroom-{}", self.nodes[node].id),
            pin: PinSource::File(self.nodes[node].pin_file.clone()),
        }
    }

    /// The options the cluster was provisioned with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The cluster directory (configs, PKI, PINs, logs).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// The etcd server the nodes share.
    pub fn etcd(&mut self) -> &mut Etcd {
        &mut self.etcd
    }

    /// The PostgreSQL server holding every node's database.
    pub fn postgres(&mut self) -> &mut Postgres {
        &mut self.postgres
    }

    /// The SoftHSM installation holding every node's token.
    pub fn softhsm(&self) -> &SoftHsm {
        &self.softhsm
    }

    /// Kills node `node` (SIGKILL, as a crash would) and waits until it has exited.
    pub fn kill_node(&mut self, node: usize) -> Result<(), HarnessError> {
        self.check_index(node)?;
        if let Some(mut process) = self.nodes[node].process.take() {
            process.kill()?;
            self.forget_pid(node);
        }
        Ok(())
    }

    /// Stops node `node` with SIGTERM and waits for it to exit, killing it after
    /// [`NODE_STOP_GRACE`].
    pub fn stop_node(&mut self, node: usize) -> Result<(), HarnessError> {
        self.check_index(node)?;
        if let Some(mut process) = self.nodes[node].process.take() {
            let started = Instant::now();
            let status = process.stop_with(Signal::TERM, NODE_STOP_GRACE)?;
            if started.elapsed() >= NODE_STOP_GRACE {
                tracing::warn!(
                    node = %self.nodes[node].id,
                    "did not exit within {NODE_STOP_GRACE:?} of SIGTERM and was killed ({status})"
                );
            }
            self.forget_pid(node);
        }
        Ok(())
    }

    /// Starts node `node` again with the same configuration (its output goes to a new,
    /// numbered log file) and waits until its API port accepts TCP connections.
    pub fn start_node(&mut self, node: usize) -> Result<(), HarnessError> {
        self.start_node_with_env(node, &[])
    }

    /// Like [`TestCluster::start_node`], with extra environment for this start only (set after
    /// [`ClusterOptions::extra_env`], so it overrides it), e.g. a `STRONGROOM__DEV__...`
    /// config override.
    pub fn start_node_with_env(
        &mut self,
        node: usize,
        env: &[(String, String)],
    ) -> Result<(), HarnessError> {
        self.check_index(node)?;
        if self.is_running(node) {
            return Err(HarnessError::Misuse(format!(
                "{} is already running: stop or kill it first",
                self.nodes[node].id
            )));
        }
        self.spawn(node, env)?;
        self.wait_for_api(node, Instant::now() + NODE_START_TIMEOUT)
    }

    /// Whether node `node`'s process is running.
    pub fn is_running(&mut self, node: usize) -> bool {
        match self.nodes.get_mut(node).and_then(|n| n.process.as_mut()) {
            Some(process) => matches!(process.try_status(), Ok(None)),
            None => false,
        }
    }

    /// The operating-system process id of node `node`, while it has a process.
    pub fn pid(&self, node: usize) -> Option<u32> {
        self.nodes[node].process.as_ref().map(ChildProcess::id)
    }

    /// The stderr log files of node `node`, oldest first (one per start).
    pub fn log_files(&self, node: usize) -> Vec<PathBuf> {
        let n = &self.nodes[node];
        (1..=n.incarnations)
            .map(|i| self.log_path(&n.log_name(i), "stderr"))
            .collect()
    }

    /// The last lines (about 80) of node `node`'s stderr, across restarts.
    pub fn log_tail(&self, node: usize) -> String {
        let mut lines: Vec<String> = Vec::new();
        for path in self.log_files(node).iter().rev() {
            let mut chunk: Vec<String> = read_tail(path).lines().map(str::to_owned).collect();
            chunk.append(&mut lines);
            lines = chunk;
            if lines.len() >= LOG_TAIL_LINES {
                break;
            }
        }
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].iter().fold(String::new(), |mut out, line| {
            out.push_str(line);
            out.push('\n');
            out
        })
    }

    /// Everything node `node` has written to stderr, all starts concatenated in order.
    pub fn logs(&self, node: usize) -> String {
        self.log_files(node)
            .iter()
            .map(|path| {
                fs::read(path)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Records the PostgreSQL and etcd pids of a persistent cluster.
    fn record_servers(&self) -> Result<(), HarnessError> {
        if !self.persistent {
            return Ok(());
        }
        if let Some(pid) = self.postgres.pid() {
            detached::record(&self.root, detached::POSTGRES, pid)?;
        }
        if let Some(pid) = self.etcd.pid() {
            detached::record(&self.root, detached::ETCD, pid)?;
        }
        Ok(())
    }

    /// Removes node `node`'s pid file (persistent clusters).
    fn forget_pid(&self, node: usize) {
        if self.persistent {
            detached::forget(&self.root, &self.nodes[node].id);
        }
    }

    fn check_index(&self, node: usize) -> Result<(), HarnessError> {
        if node < self.nodes.len() {
            Ok(())
        } else {
            Err(HarnessError::Misuse(format!(
                "no node with index {node}: the cluster has {} nodes (indices are 0-based)",
                self.nodes.len()
            )))
        }
    }

    fn log_path(&self, name: &str, stream: &str) -> PathBuf {
        self.root.join("logs").join(format!("{name}.{stream}.log"))
    }

    /// Chooses fresh loopback ports for every node.
    fn assign_ports(&mut self) -> Result<(), HarnessError> {
        let udp = free_udp_ports(self.nodes.len())?;
        let tcp = free_tcp_ports(self.nodes.len())?;
        for ((node, transport), api) in self.nodes.iter_mut().zip(udp).zip(tcp) {
            node.transport_port = transport;
            node.api_port = api;
        }
        Ok(())
    }

    /// Writes every node's configuration and policy files and, for a persistent cluster, the
    /// state file.
    fn write_configs(&self) -> Result<(), HarnessError> {
        for index in 0..self.nodes.len() {
            let node = &self.nodes[index];
            write_policy(&node.policy_path, self.options.policy_of(index))?;
            if !node.profile_path.exists() {
                write_policy(&node.profile_path, DEV_FIRMWARE_PROFILE)?;
            }
            let text = toml::to_string(&self.node_config(index)).map_err(|e| {
                HarnessError::Unexpected(format!("cannot serialize the config of {}: {e}", node.id))
            })?;
            let text = format!(
                "# {} of cluster '{}', written by the strongroom-devenv harness.\n{text}",
                node.id, self.options.cluster_id
            );
            fs::write(&node.config_path, text).map_err(|e| {
                HarnessError::io(format!("cannot write {}", node.config_path.display()), e)
            })?;
        }
        if self.persistent {
            self.write_state()?;
        }
        Ok(())
    }

    /// Gives each node of a cluster provisioned before nodes had policy files its policy: writes
    /// a missing policy file from the options, and adds `[policy] file` to a configuration
    /// without a `[policy]` section. Existing files and sections stay as they are.
    fn add_missing_policies(&self) -> Result<(), HarnessError> {
        for (index, node) in self.nodes.iter().enumerate() {
            if !node.policy_path.exists() {
                write_policy(&node.policy_path, self.options.policy_of(index))?;
            }
            add_policy_section(&node.config_path, &node.policy_path)?;
            if !node.profile_path.exists() {
                write_policy(&node.profile_path, DEV_FIRMWARE_PROFILE)?;
            }
            add_section(
                &node.config_path,
                "attestation",
                attestation_section(&node.profile_path),
            )?;
        }
        Ok(())
    }

    /// A node's `[policy]` section.
    fn policy_section(&self, node: &Node) -> Value {
        policy_section(&node.policy_path)
    }

    /// Writes `<dir>/state.toml` (through a temporary file, so it is whole or absent).
    fn write_state(&self) -> Result<(), HarnessError> {
        let state = State {
            options: self.options.clone(),
            postgres_port: self.postgres.port(),
            durability: self.postgres.durability(),
            etcd_client_port: self.etcd.client_port(),
            etcd_peer_port: self.etcd.peer_port(),
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeState {
                    id: n.id.clone(),
                    transport_port: n.transport_port,
                    api_port: n.api_port,
                    database_url: n.database_url.clone(),
                })
                .collect(),
        };
        let text = state.to_text()?;
        let path = self.root.join(STATE_FILE);
        let partial = self.root.join(format!("{STATE_FILE}.partial"));
        fs::write(&partial, text)
            .and_then(|()| fs::rename(&partial, &path))
            .map_err(|e| HarnessError::io(format!("cannot write {}", path.display()), e))
    }

    /// The configuration of node `index`, in the format of `node/runtime/examples/node.toml`.
    fn node_config(&self, index: usize) -> Table {
        let o = &self.options;
        let node = &self.nodes[index];
        let pki = self.root.join("pki");
        let peers: Table = self
            .nodes
            .iter()
            .filter(|peer| peer.id != node.id)
            .map(|peer| {
                (
                    peer.id.clone(),
                    Value::from(format!("127.0.0.1:{}", peer.transport_port)),
                )
            })
            .collect();
        let clients = section(o.all_clients().map(|(name, roles)| {
            let roles = roles.iter().map(|r| Value::from(r.as_str())).collect();
            (name, Value::Array(roles))
        }));
        table([
            (
                "node",
                section([
                    ("id", Value::from(node.id.as_str())),
                    ("cluster_id", Value::from(o.cluster_id.as_str())),
                    ("network", Value::from("regtest")),
                    ("dev_mode", Value::from(true)),
                ]),
            ),
            (
                "token",
                section([
                    ("module", Value::from(softhsm::MODULE)),
                    ("label", Value::from(format!("strongroom-{}", node.id))),
                    ("pin_file", path_value(&node.pin_file)),
                ]),
            ),
            (
                "transport",
                section([
                    (
                        "listen",
                        Value::from(format!("127.0.0.1:{}", node.transport_port)),
                    ),
                    ("ca_cert", path_value(&pki.join("ca.pem"))),
                    (
                        "certificate",
                        path_value(&pki.join("nodes").join(format!("{}.pem", node.id))),
                    ),
                ]),
            ),
            ("peers", Value::Table(peers)),
            (
                "api",
                section([
                    (
                        "listen",
                        Value::from(format!("127.0.0.1:{}", node.api_port)),
                    ),
                    ("clients", clients),
                ]),
            ),
            (
                "database",
                section([
                    ("url", Value::from(node.database_url.as_str())),
                    ("max_connections", Value::from(8)),
                ]),
            ),
            (
                "etcd",
                section([
                    (
                        "endpoints",
                        Value::Array(vec![Value::from(self.etcd.endpoint())]),
                    ),
                    ("lease_ttl_secs", int(o.lease_ttl_secs)),
                ]),
            ),
            (
                "primes",
                section([("source", Value::from("dangerous-dev-fixture"))]),
            ),
            (
                "pool",
                section([
                    ("target", Value::from(o.pool_target)),
                    ("low_water", Value::from(o.pool_low_water)),
                    ("max", Value::from(o.pool_max)),
                    ("concurrency", Value::from(o.pool_concurrency)),
                ]),
            ),
            (
                "signing",
                section([
                    ("interactive_fallback", Value::from(o.interactive_fallback)),
                    ("timeout_secs", Value::from(60)),
                ]),
            ),
            ("policy", self.policy_section(node)),
            ("attestation", attestation_section(&node.profile_path)),
            (
                "dev",
                section([
                    (
                        "dangerous_sign_digest_endpoint",
                        Value::from(o.sign_digest_endpoint),
                    ),
                    (
                        "dangerous_corrupt_partials",
                        Value::from(o.corrupt_partials.contains(&index)),
                    ),
                    (
                        "dangerous_peer_request_endpoint",
                        Value::from(o.peer_request_endpoint.contains(&index)),
                    ),
                ]),
            ),
        ])
    }

    /// Spawns node `index` (its next incarnation) without waiting for it.
    fn spawn(&mut self, index: usize, env: &[(String, String)]) -> Result<(), HarnessError> {
        let node = &self.nodes[index];
        let mut command = Command::new(node.binary.as_ref().unwrap_or(&self.node_binary));
        command
            .args(["node", "run", "--config"])
            .arg(&node.config_path)
            .current_dir(&node.work_dir);
        clean_env(&mut command);
        match &node.softhsm_conf {
            Some(conf) => command.env("SOFTHSM2_CONF", conf),
            None => command.envs(self.softhsm.env()),
        };
        command
            .env("RUST_LOG", NODE_LOG_FILTER)
            .env("STRONGROOM_LOG", NODE_LOG_FILTER)
            .env("RUST_BACKTRACE", "1")
            .envs(self.options.extra_env.iter().map(|(k, v)| (k, v)))
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)));
        let name = node.log_name(node.incarnations + 1);
        let process = ChildProcess::spawn(&name, command, &self.root.join("logs"))?;
        if self.persistent {
            detached::record(&self.root, &node.id, process.id())?;
        }
        let node = &mut self.nodes[index];
        node.incarnations += 1;
        node.process = Some(process);
        Ok(())
    }

    /// Waits until node `index`'s API port accepts TCP connections; kills the node if it does
    /// not by `deadline`.
    fn wait_for_api(&mut self, index: usize, deadline: Instant) -> Result<(), HarnessError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.nodes[index].api_port));
        let waiting_for = format!("its API port {addr} accepting TCP connections");
        let started = Instant::now();
        loop {
            let status = match self.nodes[index].process.as_mut() {
                Some(process) => process.try_status()?,
                None => {
                    return Err(HarnessError::Misuse(format!(
                        "{} has no process to wait for",
                        self.nodes[index].id
                    )));
                }
            };
            if let Some(status) = status {
                self.nodes[index].process = None;
                self.forget_pid(index);
                return Err(HarnessError::Exited {
                    name: self.nodes[index].id.clone(),
                    status,
                    waiting_for,
                    logs: self.error_logs(index),
                });
            }
            if TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                if let Some(mut process) = self.nodes[index].process.take() {
                    // Nothing more to learn from it; the logs are what the error shows.
                    let _ = process.kill();
                    self.forget_pid(index);
                }
                return Err(HarnessError::Timeout {
                    name: self.nodes[index].id.clone(),
                    waiting_for,
                    waited: started.elapsed(),
                    logs: self.error_logs(index),
                });
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The logs an error about node `index` shows: the tail of its stderr across restarts, and
    /// the tail of the latest stdout if there is any.
    fn error_logs(&self, index: usize) -> String {
        let node = &self.nodes[index];
        let mut out = format!(
            "--- {} stderr, last {LOG_TAIL_LINES} lines (in {}) ---\n{}",
            node.id,
            self.root.join("logs").display(),
            self.log_tail(index)
        );
        if node.incarnations > 0 {
            let stdout = self.log_path(&node.log_name(node.incarnations), "stdout");
            let text = read_tail(&stdout);
            if !text.trim().is_empty() {
                out.push_str(&format!(
                    "--- {} stdout ({}) ---\n{text}",
                    node.id,
                    stdout.display()
                ));
            }
        }
        out
    }

    /// Kills every node: SIGKILL to all first, then reaps each.
    fn kill_all(&mut self) {
        for node in &mut self.nodes {
            if let Some(process) = node.process.as_mut() {
                // Errors mean it has exited already; kill() below reaps it either way.
                let _ = process.signal(Signal::KILL);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill();
                if self.persistent {
                    detached::forget(&self.root, &node.id);
                }
            }
        }
    }

    /// Keeps the cluster directory (with copies of the PostgreSQL and etcd logs) and logs
    /// where it is.
    fn keep_dir(&mut self) {
        let Some(dir) = self.dir.take() else {
            return;
        };
        let logs = self.root.join("logs");
        let servers = [
            (self.postgres.log_dir().to_path_buf(), "postgres"),
            (self.etcd.log_dir().to_path_buf(), "etcd"),
        ];
        for (server_dir, name) in servers {
            for stream in ["stdout", "stderr"] {
                let file = format!("{name}.{stream}.log");
                // Best effort: the copies only help reading a failure afterwards.
                let _ = fs::copy(server_dir.join(&file), logs.join(&file));
            }
        }
        let path = dir.keep();
        tracing::warn!(
            "{KEEP_DIRS_ENV} is set: kept the test cluster directory {}",
            path.display()
        );
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.kill_all();
        if self.persistent && !self.detached {
            // PostgreSQL and etcd stop when their fields drop, right after this.
            detached::forget(&self.root, detached::POSTGRES);
            detached::forget(&self.root, detached::ETCD);
        }
        if std::env::var_os(KEEP_DIRS_ENV).is_some_and(|v| !v.is_empty()) {
            self.keep_dir();
        }
        // The fields then drop in order: etcd, PostgreSQL, SoftHSM, the directory.
    }
}

/// `strongroom cluster init`: the CA, each node's identity key in its token with its
/// certificate, and every client (a certificate and key each), into `<root>/pki`.
fn cluster_init(
    binary: &Path,
    softhsm: &SoftHsm,
    root: &Path,
    ids: &[String],
    options: &ClusterOptions,
) -> Result<(), HarnessError> {
    let mut command = Command::new(binary);
    command
        .arg("--pkcs11-module")
        .arg(softhsm::MODULE)
        .args(["--token-label", "strongroom-{node}"])
        .arg("--pin-file")
        .arg(root.join("pins").join("{node}.pin"))
        .args(["cluster", "init", "--cluster-id", &options.cluster_id])
        .arg("--nodes")
        .arg(ids.join(","))
        .arg("--clients")
        // The certificate names only the client; each node's config assigns its roles.
        .arg(
            options
                .all_clients()
                .map(|(name, _)| format!("{name}:admin"))
                .collect::<Vec<_>>()
                .join(","),
        )
        .arg("--out")
        .arg(root.join("pki"))
        .current_dir(root);
    clean_env(&mut command);
    command.envs(softhsm.env());
    run(command).map(|_| ())
}

/// Removes inherited variables that would change what a `strongroom` process does: its own
/// (`STRONGROOM_*` token settings and `STRONGROOM__*` config overrides) and the log filters.
fn clean_env(command: &mut Command) {
    for (key, _) in std::env::vars_os() {
        let name = key.to_string_lossy();
        if name.starts_with("STRONGROOM") || name == "RUST_LOG" || name == "SOFTHSM2_CONF" {
            command.env_remove(&key);
        }
    }
}

fn join<T>(
    handle: thread::ScopedJoinHandle<'_, Result<T, HarnessError>>,
    what: &str,
) -> Result<T, HarnessError> {
    handle
        .join()
        .unwrap_or_else(|_| Err(HarnessError::Unexpected(format!("{what} panicked"))))
}

/// The SoftHSM installation of node `id` of a persistent cluster.
fn node_hsm_dir(root: &Path, id: &str) -> PathBuf {
    root.join("hsm").join(id)
}

/// As root, lets other users search (not list) a persistent cluster's directory: PostgreSQL
/// runs as the `postgres` user and must reach its directory inside.
fn make_traversable(root: &Path) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt;
    if effective_uid() != 0 {
        return Ok(());
    }
    let meta = fs::metadata(root)
        .map_err(|e| HarnessError::io(format!("cannot read {}", root.display()), e))?;
    let mode = meta.permissions().mode();
    if mode & 0o001 == 0 {
        fs::set_permissions(root, fs::Permissions::from_mode((mode | 0o001) & 0o7777)).map_err(
            |e| HarnessError::io(format!("cannot change the mode of {}", root.display()), e),
        )?;
    }
    Ok(())
}

/// A persistent cluster's state file, read back.
struct State {
    options: ClusterOptions,
    postgres_port: u16,
    durability: Durability,
    etcd_client_port: u16,
    etcd_peer_port: u16,
    nodes: Vec<NodeState>,
}

struct NodeState {
    id: String,
    transport_port: u16,
    api_port: u16,
    database_url: String,
}

impl State {
    /// The state file's text.
    fn to_text(&self) -> Result<String, HarnessError> {
        let o = &self.options;
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                Value::Table(table([
                    ("id", Value::from(n.id.as_str())),
                    ("transport_port", Value::from(i64::from(n.transport_port))),
                    ("api_port", Value::from(i64::from(n.api_port))),
                    ("database_url", Value::from(n.database_url.as_str())),
                ]))
            })
            .collect();
        let strings =
            |v: &[String]| Value::Array(v.iter().map(|s| Value::from(s.as_str())).collect());
        let extra_env: Table = o
            .extra_env
            .iter()
            .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
            .collect();
        let extra_clients: Table = o
            .extra_clients
            .iter()
            .map(|(name, roles)| (name.clone(), strings(roles)))
            .collect();
        let node_policies = o
            .node_policies
            .iter()
            .map(|(index, text)| {
                Value::Table(table([
                    ("node", int(*index as u64)),
                    ("policy", Value::from(text.as_str())),
                ]))
            })
            .collect();
        let state = table([
            ("version", Value::from(STATE_VERSION)),
            (
                "postgres",
                section([
                    ("port", Value::from(i64::from(self.postgres_port))),
                    (
                        "durability",
                        Value::from(match self.durability {
                            Durability::SurvivesPowerLoss => "power-loss",
                            Durability::SurvivesProcessCrash => "process-crash",
                        }),
                    ),
                ]),
            ),
            (
                "etcd",
                section([
                    ("client_port", Value::from(i64::from(self.etcd_client_port))),
                    ("peer_port", Value::from(i64::from(self.etcd_peer_port))),
                ]),
            ),
            (
                "options",
                section([
                    ("cluster_id", Value::from(o.cluster_id.as_str())),
                    ("client_name", Value::from(o.client_name.as_str())),
                    ("client_roles", strings(&o.client_roles)),
                    ("pool_target", Value::from(o.pool_target)),
                    ("pool_low_water", Value::from(o.pool_low_water)),
                    ("pool_max", Value::from(o.pool_max)),
                    ("pool_concurrency", Value::from(o.pool_concurrency)),
                    ("interactive_fallback", Value::from(o.interactive_fallback)),
                    ("sign_digest_endpoint", Value::from(o.sign_digest_endpoint)),
                    (
                        "corrupt_partials",
                        Value::Array(o.corrupt_partials.iter().map(|&i| int(i as u64)).collect()),
                    ),
                    (
                        "peer_request_endpoint",
                        Value::Array(
                            o.peer_request_endpoint
                                .iter()
                                .map(|&i| int(i as u64))
                                .collect(),
                        ),
                    ),
                    ("lease_ttl_secs", int(o.lease_ttl_secs)),
                    ("extra_env", Value::Table(extra_env)),
                    ("extra_clients", Value::Table(extra_clients)),
                    ("policy", Value::from(o.policy.as_str())),
                    ("node_policies", Value::Array(node_policies)),
                ]),
            ),
            ("nodes", Value::Array(nodes)),
        ]);
        let text = toml::to_string(&state).map_err(|e| {
            HarnessError::Unexpected(format!("cannot serialize the cluster state: {e}"))
        })?;
        Ok(format!(
            "# The state of this cluster, written by the strongroom-devenv harness: \
             TestCluster::open_in\n# reads it to start the same cluster again.\n{text}"
        ))
    }

    fn read(root: &Path) -> Result<Self, HarnessError> {
        let path = root.join(STATE_FILE);
        let text = fs::read_to_string(&path).map_err(|e| {
            HarnessError::io(
                format!(
                    "cannot read {} (is {} a cluster that TestCluster::provision_in made?)",
                    path.display(),
                    root.display()
                ),
                e,
            )
        })?;
        let bad = |what: &str| {
            HarnessError::Unexpected(format!("{}: {what} is missing or invalid", path.display()))
        };
        let t: Table = text
            .parse()
            .map_err(|e| HarnessError::Unexpected(format!("{}: {e}", path.display())))?;
        if t.get("version").and_then(Value::as_integer) != Some(STATE_VERSION) {
            return Err(bad("version (this harness reads version 1)"));
        }
        let get = |section: &str, key: &str| t.get(section).and_then(|s| s.get(key)).cloned();
        let port = |section: &str, key: &str| {
            get(section, key)
                .and_then(|v| v.as_integer())
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(|| bad(&format!("[{section}] {key}")))
        };
        let o = t
            .get("options")
            .and_then(Value::as_table)
            .ok_or_else(|| bad("[options]"))?;
        let text_of = |key: &str| {
            o.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("[options] {key}")))
        };
        let u32_of = |key: &str| {
            o.get(key)
                .and_then(Value::as_integer)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| bad(&format!("[options] {key}")))
        };
        let bool_of = |key: &str| {
            o.get(key)
                .and_then(Value::as_bool)
                .ok_or_else(|| bad(&format!("[options] {key}")))
        };
        let client_roles = o
            .get("client_roles")
            .and_then(Value::as_array)
            .and_then(|a| a.iter().map(|v| v.as_str().map(str::to_owned)).collect())
            .ok_or_else(|| bad("[options] client_roles"))?;
        let corrupt_partials = o
            .get("corrupt_partials")
            .and_then(Value::as_array)
            .and_then(|a| {
                a.iter()
                    .map(|v| v.as_integer().and_then(|i| usize::try_from(i).ok()))
                    .collect()
            })
            .ok_or_else(|| bad("[options] corrupt_partials"))?;
        // Absent from clusters provisioned before the option existed.
        let peer_request_endpoint = match o.get("peer_request_endpoint") {
            None => Vec::new(),
            Some(v) => v
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|v| v.as_integer().and_then(|i| usize::try_from(i).ok()))
                        .collect()
                })
                .ok_or_else(|| bad("[options] peer_request_endpoint"))?,
        };
        let extra_env = o
            .get("extra_env")
            .and_then(Value::as_table)
            .and_then(|env| {
                env.iter()
                    .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                    .collect()
            })
            .ok_or_else(|| bad("[options] extra_env"))?;
        // Optional in version 1: a state file without them has the defaults.
        let defaults = ClusterOptions::default();
        let extra_clients = match o.get("extra_clients") {
            None => defaults.extra_clients,
            Some(v) => v
                .as_table()
                .and_then(|clients| {
                    clients
                        .iter()
                        .map(|(name, roles)| {
                            let roles = roles
                                .as_array()?
                                .iter()
                                .map(|r| r.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()?;
                            Some((name.clone(), roles))
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad("[options] extra_clients"))?,
        };
        let policy = match o.get("policy") {
            None => defaults.policy,
            Some(v) => v
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| bad("[options] policy"))?,
        };
        let node_policies = match o.get("node_policies") {
            None => defaults.node_policies,
            Some(v) => v
                .as_array()
                .and_then(|entries| {
                    entries
                        .iter()
                        .map(|e| {
                            let node = e
                                .get("node")?
                                .as_integer()
                                .and_then(|i| usize::try_from(i).ok())?;
                            Some((node, e.get("policy")?.as_str()?.to_owned()))
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad("[options] node_policies"))?,
        };
        let nodes: Vec<NodeState> = t
            .get("nodes")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("[[nodes]]"))?
            .iter()
            .map(|n| {
                let port = |key: &str| {
                    n.get(key)
                        .and_then(Value::as_integer)
                        .and_then(|i| u16::try_from(i).ok())
                        .ok_or_else(|| bad(&format!("[[nodes]] {key}")))
                };
                let text = |key: &str| {
                    n.get(key)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| bad(&format!("[[nodes]] {key}")))
                };
                Ok(NodeState {
                    id: text("id")?,
                    transport_port: port("transport_port")?,
                    api_port: port("api_port")?,
                    database_url: text("database_url")?,
                })
            })
            .collect::<Result<_, HarnessError>>()?;
        if nodes.is_empty() {
            return Err(bad("[[nodes]]"));
        }
        let durability = match get("postgres", "durability")
            .as_ref()
            .and_then(Value::as_str)
        {
            Some("power-loss") => Durability::SurvivesPowerLoss,
            Some("process-crash") => Durability::SurvivesProcessCrash,
            _ => return Err(bad("[postgres] durability")),
        };
        let options = ClusterOptions {
            nodes: nodes.len(),
            pool_target: u32_of("pool_target")?,
            pool_low_water: u32_of("pool_low_water")?,
            pool_max: u32_of("pool_max")?,
            pool_concurrency: u32_of("pool_concurrency")?,
            interactive_fallback: bool_of("interactive_fallback")?,
            sign_digest_endpoint: bool_of("sign_digest_endpoint")?,
            corrupt_partials,
            peer_request_endpoint,
            lease_ttl_secs: o
                .get("lease_ttl_secs")
                .and_then(Value::as_integer)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| bad("[options] lease_ttl_secs"))?,
            extra_env,
            cluster_id: text_of("cluster_id")?,
            client_name: text_of("client_name")?,
            client_roles,
            extra_clients,
            policy,
            node_policies,
            node_binary: None,
        };
        Ok(Self {
            options,
            postgres_port: port("postgres", "port")?,
            durability,
            etcd_client_port: port("etcd", "client_port")?,
            etcd_peer_port: port("etcd", "peer_port")?,
            nodes,
        })
    }
}

/// The `[policy]` section naming `policy`.
fn policy_section(policy: &Path) -> Value {
    section([("file", path_value(policy))])
}

/// The `[attestation]` section naming the firmware profile `profile`.
fn attestation_section(profile: &Path) -> Value {
    section([("profile", path_value(profile))])
}

/// Appends `[policy] file = <policy>` to the configuration file `config` unless it has a
/// `[policy]` section already; returns whether it did.
fn add_policy_section(config: &Path, policy: &Path) -> Result<bool, HarnessError> {
    add_section(config, "policy", policy_section(policy))
}

/// Appends the section `[name]` with `value` to the configuration file `config` unless it has
/// that section already; returns whether it did.
fn add_section(config: &Path, name: &str, value: Value) -> Result<bool, HarnessError> {
    let text = fs::read_to_string(config)
        .map_err(|e| HarnessError::io(format!("cannot read {}", config.display()), e))?;
    let parsed: Table = text
        .parse()
        .map_err(|e| HarnessError::Unexpected(format!("{}: {e}", config.display())))?;
    if parsed.contains_key(name) {
        return Ok(false);
    }
    let section = toml::to_string(&table([(name, value)])).map_err(|e| {
        HarnessError::Unexpected(format!("cannot serialize the [{name}] section: {e}"))
    })?;
    let separator = if text.is_empty() || text.ends_with("\n\n") {
        ""
    } else if text.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    fs::write(config, format!("{text}{separator}{section}"))
        .map_err(|e| HarnessError::io(format!("cannot write {}", config.display()), e))?;
    Ok(true)
}

/// Where node `id`'s policy file lives: `<root>/config/<id>-policy.toml`.
fn policy_path_in(root: &Path, id: &str) -> PathBuf {
    root.join("config").join(format!("{id}-policy.toml"))
}

/// Where node `id`'s firmware profile lives: `<root>/config/<id>-firmware-profile.toml`.
fn profile_path_in(root: &Path, id: &str) -> PathBuf {
    root.join("config")
        .join(format!("{id}-firmware-profile.toml"))
}

/// Writes a policy file (through a temporary file, so a node starting meanwhile reads the old
/// policy or the new one, never a part).
fn write_policy(path: &Path, text: &str) -> Result<(), HarnessError> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    fs::write(&partial, text)
        .and_then(|()| fs::rename(&partial, path))
        .map_err(|e| HarnessError::io(format!("cannot write {}", path.display()), e))
}

fn create_dir(path: &Path) -> Result<(), HarnessError> {
    fs::create_dir_all(path)
        .map_err(|e| HarnessError::io(format!("cannot create {}", path.display()), e))
}

/// Writes a new file readable only by its owner (mode 0600).
fn write_private(path: &Path, contents: &[u8]) -> Result<(), HarnessError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| HarnessError::io(format!("cannot create {}", path.display()), e))?;
    file.write_all(contents)
        .map_err(|e| HarnessError::io(format!("cannot write {}", path.display()), e))
}

/// The end of a log file (at most [`LOG_TAIL_BYTES`]), or a note saying why it cannot be read.
fn read_tail(path: &Path) -> String {
    let read = || -> std::io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        let start = len.saturating_sub(LOG_TAIL_BYTES);
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if start > 0 {
            // Drop the partial first line.
            text = text
                .split_once('\n')
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default();
        }
        Ok(text)
    };
    read().unwrap_or_else(|e| format!("(cannot read {}: {e})\n", path.display()))
}

fn table<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Table {
    entries
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn section<'a>(entries: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
    Value::Table(table(entries))
}

fn path_value(path: &Path) -> Value {
    Value::from(path.to_string_lossy().into_owned())
}

/// A TOML integer; values beyond `i64::MAX` (which no test needs) saturate.
fn int(value: u64) -> Value {
    Value::Integer(i64::try_from(value).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_match_the_documented_defaults() {
        let o = ClusterOptions::default();
        assert_eq!(o.nodes, 3);
        assert_eq!(
            (
                o.pool_target,
                o.pool_low_water,
                o.pool_max,
                o.pool_concurrency
            ),
            (6, 3, 10, 2)
        );
        assert!(o.interactive_fallback && o.sign_digest_endpoint);
        assert!(o.corrupt_partials.is_empty() && o.extra_env.is_empty());
        assert_eq!(o.lease_ttl_secs, 2);
        assert_eq!(
            (o.cluster_id.as_str(), o.client_name.as_str()),
            ("test", "ops")
        );
        assert_eq!(o.client_roles, CLIENT_ROLES);
        assert!(o.client_roles.iter().any(|r| r == "approver"));
        assert!(o.extra_clients.is_empty() && o.node_policies.is_empty());
        assert_eq!(o.policy, DEV_POLICY);
    }

    #[test]
    fn the_dev_policy_is_the_example_with_the_dev_approvers() {
        assert!(DEV_POLICY.contains("id = \"dev\""), "{DEV_POLICY}");
        assert!(DEV_POLICY.contains("dev-approver-1"));
        assert!(DEV_POLICY.contains("dev-approver-2"));
    }

    #[test]
    fn a_node_policy_overrides_the_cluster_policy() {
        let o = ClusterOptions {
            policy: "cluster".to_owned(),
            node_policies: vec![(1, "first".to_owned()), (1, "second".to_owned())],
            ..ClusterOptions::default()
        };
        assert_eq!(o.policy_of(0), "cluster");
        assert_eq!(o.policy_of(1), "second");
        assert_eq!(o.policy_of(2), "cluster");
    }

    #[test]
    fn options_naming_a_missing_node_or_a_client_twice_are_refused() {
        let check = |o: ClusterOptions| o.check().map_err(|e| e.to_string());
        assert!(check(ClusterOptions::default()).is_ok());
        let err = check(ClusterOptions {
            node_policies: vec![(3, String::new())],
            ..ClusterOptions::default()
        })
        .unwrap_err();
        assert!(err.contains("node_policies names node index 3"), "{err}");
        let err = check(ClusterOptions {
            corrupt_partials: vec![5],
            ..ClusterOptions::default()
        })
        .unwrap_err();
        assert!(err.contains("corrupt_partials"), "{err}");
        let err = check(ClusterOptions {
            extra_clients: vec![("ops".to_owned(), vec![])],
            ..ClusterOptions::default()
        })
        .unwrap_err();
        assert!(err.contains("client 'ops' is named twice"), "{err}");
        let options = ClusterOptions {
            extra_clients: vec![("alice".to_owned(), vec!["approver".to_owned()])],
            ..ClusterOptions::default()
        };
        let clients: Vec<&str> = options.all_clients().map(|(name, _)| name).collect();
        assert_eq!(clients, ["ops", "alice"]);
    }

    fn sample_state(options: ClusterOptions) -> State {
        State {
            options,
            postgres_port: 5433,
            durability: Durability::SurvivesPowerLoss,
            etcd_client_port: 2379,
            etcd_peer_port: 2380,
            nodes: (1..=3)
                .map(|i| NodeState {
                    id: format!("node-{i}"),
                    transport_port: 7000 + i,
                    api_port: 8000 + i,
                    database_url: format!("postgres://127.0.0.1:5433/node_{i}"),
                })
                .collect(),
        }
    }

    #[test]
    fn the_state_file_keeps_clients_and_policies() {
        let dir = tempfile::tempdir().unwrap();
        let options = ClusterOptions {
            extra_clients: vec![
                ("alice".to_owned(), vec!["approver".to_owned()]),
                ("bob".to_owned(), vec![]),
            ],
            policy: "version = 1\nid = \"x\"\n".to_owned(),
            node_policies: vec![(2, "id = \"node-3's own\"\n".to_owned())],
            ..ClusterOptions::default()
        };
        let text = sample_state(options.clone()).to_text().unwrap();
        fs::write(dir.path().join(STATE_FILE), text).unwrap();
        let read = State::read(dir.path()).unwrap();
        assert_eq!(read.options.extra_clients, options.extra_clients);
        assert_eq!(read.options.policy, options.policy);
        assert_eq!(read.options.node_policies, options.node_policies);
        assert_eq!(read.options.client_roles, options.client_roles);
        assert_eq!(read.nodes.len(), 3);
        assert_eq!(read.nodes[2].api_port, 8003);
    }

    #[test]
    fn a_state_file_without_clients_and_policies_loads_with_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let text = sample_state(ClusterOptions::default()).to_text().unwrap();
        let mut state: Table = text.parse().unwrap();
        let options = state["options"].as_table_mut().unwrap();
        for key in ["extra_clients", "policy", "node_policies"] {
            assert!(options.remove(key).is_some(), "{key}");
        }
        fs::write(
            dir.path().join(STATE_FILE),
            toml::to_string(&state).unwrap(),
        )
        .unwrap();
        let read = State::read(dir.path()).unwrap();
        assert!(read.options.extra_clients.is_empty());
        assert!(read.options.node_policies.is_empty());
        assert_eq!(read.options.policy, DEV_POLICY);
        assert_eq!(read.options.cluster_id, CLUSTER_ID);
    }

    #[test]
    fn tables_serialize_with_quoted_peer_ids_and_nested_sections() {
        let value = table([
            ("peers", section([("node-2", Value::from("127.0.0.1:1"))])),
            (
                "api",
                section([
                    ("listen", Value::from("127.0.0.1:2")),
                    (
                        "clients",
                        section([("ops", Value::Array(vec![Value::from("admin")]))]),
                    ),
                ]),
            ),
        ]);
        let text = toml::to_string(&value).unwrap();
        let parsed: Table = text.parse().unwrap();
        assert_eq!(parsed["peers"]["node-2"].as_str(), Some("127.0.0.1:1"));
        assert_eq!(parsed["api"]["clients"]["ops"][0].as_str(), Some("admin"));
        assert!(text.contains("[api.clients]"), "{text}");
    }

    #[test]
    fn a_config_without_a_policy_section_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("node-1.toml");
        let policy = dir.path().join("node-1-policy.toml");
        fs::write(&config, "[node]\nid = \"node-1\"\n").unwrap();
        assert!(add_policy_section(&config, &policy).unwrap());
        let parsed: Table = fs::read_to_string(&config).unwrap().parse().unwrap();
        assert_eq!(parsed["node"]["id"].as_str(), Some("node-1"));
        assert_eq!(
            parsed["policy"]["file"].as_str(),
            Some(policy.to_str().unwrap())
        );
        // Once there, it stays as it is.
        let before = fs::read_to_string(&config).unwrap();
        assert!(!add_policy_section(&config, &dir.path().join("other.toml")).unwrap());
        assert_eq!(fs::read_to_string(&config).unwrap(), before);
    }

    #[test]
    fn policy_files_are_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node-1-policy.toml");
        write_policy(&path, "first").unwrap();
        write_policy(&path, "second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn tails_drop_the_partial_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let line = "x".repeat(99);
        let text: String = (0..2000).map(|i| format!("{i} {line}\n")).collect();
        fs::write(&path, &text).unwrap();
        let tail = read_tail(&path);
        assert!(tail.ends_with(&format!("1999 {line}\n")));
        assert!(tail.lines().all(|l| l.ends_with(&line)));
        assert!(read_tail(&dir.path().join("missing")).starts_with("(cannot read"));
    }
}
