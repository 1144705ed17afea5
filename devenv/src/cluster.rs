//! A cluster of real `strongroom` node processes on loopback, provisioned from scratch per test.
//!
//! [`TestCluster::start`] provisions everything a cluster needs and starts every node:
//!
//! - one [`SoftHsm`] with a token per node (`strongroom-node-<i>`), its PIN in
//!   `<dir>/pins/node-<i>.pin` (mode 0600);
//! - the cluster PKI from `strongroom cluster init` in `<dir>/pki`: the CA, each node's identity
//!   key inside its token with its certificate (`pki/nodes/node-<i>.pem`), and the client `ops`
//!   as files (`pki/clients/ops.pem`, `ops-key.pem`);
//! - one PostgreSQL server with a database per node (`node_1`, `node_2`, ...) and one etcd;
//! - a configuration file per node (`<dir>/config/node-<i>.toml`, the format of
//!   `node/runtime/examples/node.toml`) with free loopback ports: UDP for the transport, TCP for
//!   the API;
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

use crate::etcd::Etcd;
use crate::ports::{free_tcp_ports, free_udp_ports};
use crate::postgres::Postgres;
use crate::process::{ChildProcess, HarnessError, run, strongroom_binary};
use crate::softhsm::{self, SoftHsm};

/// The cluster id every test cluster uses.
pub const CLUSTER_ID: &str = "test";
/// The client whose certificate and key [`TestCluster::client_cert`] and
/// [`TestCluster::client_key`] name.
pub const CLIENT_NAME: &str = "ops";
/// The roles [`CLIENT_NAME`] has on every node.
pub const CLIENT_ROLES: [&str; 3] = ["admin", "submitter", "auditor"];
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
    /// `[etcd] lease_ttl_secs`.
    pub lease_ttl_secs: u64,
    /// Extra environment for every node process (set last, so it overrides the harness's).
    pub extra_env: Vec<(String, String)>,
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
            lease_ttl_secs: 2,
            extra_env: Vec::new(),
            node_binary: None,
        }
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
    pin_file: PathBuf,
    database_url: String,
    /// Working directory of the process.
    work_dir: PathBuf,
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
    /// `None` once kept (STRONGROOM_KEEP_TEST_DIRS).
    dir: Option<TempDir>,
}

impl TestCluster {
    /// Provisions a cluster and starts every node; returns once every node's API port accepts
    /// TCP connections. Creates the process's [`SoftHsm`]: call it at the start of a test.
    pub fn start(options: ClusterOptions) -> Result<Self, HarnessError> {
        let mut cluster = Self::provision(options)?;
        for attempt in 1..=START_ATTEMPTS {
            match cluster.start_nodes() {
                Ok(()) => return Ok(cluster),
                Err(e) if e.is_address_in_use() && attempt < START_ATTEMPTS => {
                    // Another process took a port between choosing and binding: no node has
                    // served anything yet, so move the whole cluster to fresh ports.
                    tracing::warn!(attempt, "a node port was taken; choosing new ports: {e}");
                    cluster.kill_all();
                    cluster.assign_ports()?;
                    cluster.write_configs()?;
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
        if options.nodes == 0 {
            return Err(HarnessError::Misuse(
                "a test cluster needs at least one node".to_owned(),
            ));
        }
        if let Some(bad) = options
            .corrupt_partials
            .iter()
            .find(|&&i| i >= options.nodes)
        {
            return Err(HarnessError::Misuse(format!(
                "corrupt_partials names node index {bad}, but the cluster has {} nodes (indices are 0-based)",
                options.nodes
            )));
        }
        // First: SoftHSM must be configured before any thread runs or the module is loaded.
        let softhsm = SoftHsm::new()?;
        // A program that is itself the strongroom binary (a benchmark, the dev cluster) names
        // itself; tests build the workspace's binary.
        let binary = match &options.node_binary {
            Some(b) => b.clone(),
            None => strongroom_binary()?,
        };
        let node_binary = binary.clone();

        let dir = tempfile::Builder::new()
            .prefix("strongroom-cluster-")
            .tempdir()
            .map_err(|e| HarnessError::io("cannot create the cluster directory", e))?;
        let root = dir.path().to_path_buf();
        for sub in ["pins", "config", "logs", "run"] {
            create_dir(&root.join(sub))?;
        }

        let mut nodes = Vec::with_capacity(options.nodes);
        for number in 1..=options.nodes {
            let id = format!("node-{number}");
            let token = softhsm.init_token(&format!("strongroom-{id}"))?;
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
                id,
                number,
                transport_port: 0,
                api_port: 0,
                pin_file,
                database_url: String::new(),
                work_dir,
                process: None,
                incarnations: 0,
            });
        }

        // PostgreSQL and etcd start while `cluster init` provisions the tokens.
        let ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        let (postgres, etcd, init) = thread::scope(|scope| {
            let postgres = scope.spawn(Postgres::start);
            let etcd = scope.spawn(Etcd::start);
            let init = cluster_init(&binary, &softhsm, &root, &ids);
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
            dir: Some(dir),
        };
        cluster.assign_ports()?;
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

    /// The certificate (PEM) of the client [`CLIENT_NAME`], which has [`CLIENT_ROLES`] on
    /// every node.
    pub fn client_cert(&self) -> PathBuf {
        self.root
            .join("pki")
            .join("clients")
            .join(format!("{CLIENT_NAME}.pem"))
    }

    /// The private key (PEM) of the client [`CLIENT_NAME`].
    pub fn client_key(&self) -> PathBuf {
        self.root
            .join("pki")
            .join("clients")
            .join(format!("{CLIENT_NAME}-key.pem"))
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

    /// The URL of node `node`'s own database (`node_<node + 1>`).
    pub fn database_url(&self, node: usize) -> String {
        self.nodes[node].database_url.clone()
    }

    /// How the keystore opens node `node`'s token (e.g. to inspect it while the node is
    /// stopped; SoftHSM reads a token's objects when a process opens it).
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

    fn write_configs(&self) -> Result<(), HarnessError> {
        for index in 0..self.nodes.len() {
            let node = &self.nodes[index];
            let text = toml::to_string(&self.node_config(index)).map_err(|e| {
                HarnessError::Unexpected(format!("cannot serialize the config of {}: {e}", node.id))
            })?;
            let text = format!(
                "# {} of test cluster '{CLUSTER_ID}', written by the strongroom-tests harness.\n{text}",
                node.id
            );
            fs::write(&node.config_path, text).map_err(|e| {
                HarnessError::io(format!("cannot write {}", node.config_path.display()), e)
            })?;
        }
        Ok(())
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
        let roles = Value::Array(CLIENT_ROLES.iter().map(|&r| Value::from(r)).collect());
        let clients = section([(CLIENT_NAME, roles)]);
        table([
            (
                "node",
                section([
                    ("id", Value::from(node.id.as_str())),
                    ("cluster_id", Value::from(CLUSTER_ID)),
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
                ]),
            ),
        ])
    }

    /// Spawns node `index` (its next incarnation) without waiting for it.
    fn spawn(&mut self, index: usize, env: &[(String, String)]) -> Result<(), HarnessError> {
        let mut command = Command::new(&self.node_binary);
        let node = &self.nodes[index];
        command
            .args(["node", "run", "--config"])
            .arg(&node.config_path)
            .current_dir(&node.work_dir);
        clean_env(&mut command);
        command
            .envs(self.softhsm.env())
            .env("RUST_LOG", NODE_LOG_FILTER)
            .env("STRONGROOM_LOG", NODE_LOG_FILTER)
            .env("RUST_BACKTRACE", "1")
            .envs(self.options.extra_env.iter().map(|(k, v)| (k, v)))
            .envs(env.iter().map(|(k, v)| (k, v)));
        let name = node.log_name(node.incarnations + 1);
        let process = ChildProcess::spawn(&name, command, &self.root.join("logs"))?;
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
            (self.postgres.socket_dir().to_path_buf(), "postgres"),
            (
                self.etcd
                    .data_dir()
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
                "etcd",
            ),
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
        if std::env::var_os(KEEP_DIRS_ENV).is_some_and(|v| !v.is_empty()) {
            self.keep_dir();
        }
        // The fields then drop in order: etcd, PostgreSQL, SoftHSM, the directory.
    }
}

/// `strongroom cluster init`: the CA, each node's identity key in its token with its
/// certificate, and the client [`CLIENT_NAME`], into `<root>/pki`.
fn cluster_init(
    binary: &Path,
    softhsm: &SoftHsm,
    root: &Path,
    ids: &[String],
) -> Result<(), HarnessError> {
    let mut command = Command::new(binary);
    command
        .arg("--pkcs11-module")
        .arg(softhsm::MODULE)
        .args(["--token-label", "strongroom-{node}"])
        .arg("--pin-file")
        .arg(root.join("pins").join("{node}.pin"))
        .args(["cluster", "init", "--cluster-id", CLUSTER_ID])
        .arg("--nodes")
        .arg(ids.join(","))
        .arg("--clients")
        // The certificate names only the client; each node's config assigns its roles.
        .arg(format!("{CLIENT_NAME}:admin"))
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
