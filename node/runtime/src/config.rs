//! The node configuration: one TOML file per node, every field documented in
//! `node/runtime/examples/node.toml`, any field overridable from the environment as
//! `STRONGROOM__<SECTION>__<FIELD>`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Prefix of environment overrides: `STRONGROOM__DATABASE__URL` sets `database.url`.
pub const ENV_PREFIX: &str = "STRONGROOM__";

/// A configuration that cannot be used; the message names the file and the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or a field has the wrong type or name.
    #[error("configuration file {path}: {detail}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Which field and why (from the TOML parser).
        detail: String,
    },
    /// An environment override names no field or cannot be applied.
    #[error("environment variable {var}: {detail}")]
    Env {
        /// The variable.
        var: String,
        /// Why.
        detail: String,
    },
    /// A field has a value the node cannot run with.
    #[error("configuration file {path}: field `{field}`: {detail}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field, `section.name`.
        field: String,
        /// What is wrong and how to fix it.
        detail: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[node]`.
    pub node: NodeSection,
    /// `[token]`.
    pub token: TokenSection,
    /// `[transport]`.
    pub transport: TransportSection,
    /// `[peers]`: node id → transport address.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    /// `[api]`.
    pub api: ApiSection,
    /// `[database]`.
    pub database: DatabaseSection,
    /// `[etcd]`.
    pub etcd: EtcdSection,
    /// `[primes]`.
    #[serde(default)]
    pub primes: PrimesSection,
    /// `[pool]`.
    #[serde(default)]
    pub pool: PoolSection,
    /// `[signing]`.
    #[serde(default)]
    pub signing: SigningSection,
    /// `[policy]`.
    #[serde(default)]
    pub policy: PolicySection,
    /// `[audit]`.
    #[serde(default)]
    pub audit: AuditSection,
    /// `[attestation]`.
    #[serde(default)]
    pub attestation: AttestationSection,
    /// `[dev]`.
    #[serde(default)]
    pub dev: DevSection,
    /// The file this was read from (set by [`Config::load`]).
    #[serde(skip)]
    pub source: PathBuf,
}

/// `[node]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's id.
    pub id: String,
    /// The cluster id.
    pub cluster_id: String,
    /// Bitcoin network: mainnet, testnet, signet or regtest.
    #[serde(default = "default_network")]
    pub network: String,
    /// Allows the dangerous dev features.
    #[serde(default)]
    pub dev_mode: bool,
}

/// `[token]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSection {
    /// PKCS#11 module.
    #[serde(default = "default_module")]
    pub module: PathBuf,
    /// Token label.
    pub label: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
}

/// `[transport]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportSection {
    /// UDP listen address.
    pub listen: SocketAddr,
    /// Cluster CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// This node's certificate (PEM).
    pub certificate: PathBuf,
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// Client name → roles.
    #[serde(default)]
    pub clients: BTreeMap<String, Vec<String>>,
    /// Sustained requests per second per client (0 = no rate limit).
    #[serde(default = "default_rate")]
    pub rate_limit_per_second: f64,
    /// Requests a client may send in a burst.
    #[serde(default = "default_burst")]
    pub rate_limit_burst: u32,
}

/// `[database]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSection {
    /// PostgreSQL URL.
    pub url: String,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// `[etcd]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// Endpoints.
    pub endpoints: Vec<String>,
    /// Membership lease TTL, seconds.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl_secs: u64,
}

/// Where aux-info primes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PrimesSource {
    /// Generated on this node.
    #[default]
    Generate,
    /// The project's published test primes (dev mode only).
    DangerousDevFixture,
}

/// `[primes]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PrimesSection {
    /// Source.
    #[serde(default)]
    pub source: PrimesSource,
}

/// `[pool]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Refill up to this many per (key, signer set).
    #[serde(default = "default_target")]
    pub target: u32,
    /// Refill when below this.
    #[serde(default = "default_low_water")]
    pub low_water: u32,
    /// Never more than this.
    #[serde(default = "default_max")]
    pub max: u32,
    /// Presign sessions at once (0 = CPU cores).
    #[serde(default)]
    pub concurrency: u32,
}

impl Default for PoolSection {
    fn default() -> Self {
        Self {
            target: default_target(),
            low_water: default_low_water(),
            max: default_max(),
            concurrency: 0,
        }
    }
}

impl PoolSection {
    /// Presign sessions at once, with 0 resolved to the number of CPU cores.
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        } else {
            self.concurrency as usize
        }
    }
}

/// `[signing]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningSection {
    /// Interactive signing when no pool can serve.
    #[serde(default = "default_true")]
    pub interactive_fallback: bool,
    /// Per-signing timeout, seconds.
    #[serde(default = "default_sign_timeout")]
    pub timeout_secs: u64,
    /// Signing requests this node coordinates at once; more submissions get 429.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long this node's vote to allow a request stays valid, seconds: past it, the node
    /// evaluates its policy again before it reserves a presignature or releases a partial
    /// signature, so time rules hold at signing time to within this.
    #[serde(default = "default_vote_valid")]
    pub vote_valid_secs: u64,
    /// How long a request may take to be signed, seconds, from when this node stored it: past
    /// it the request ends `expired` here and this node releases nothing more for it.
    #[serde(default = "default_request_ttl")]
    pub request_ttl_secs: u64,
}

impl Default for SigningSection {
    fn default() -> Self {
        Self {
            interactive_fallback: true,
            timeout_secs: default_sign_timeout(),
            max_in_flight: default_max_in_flight(),
            vote_valid_secs: default_vote_valid(),
            request_ttl_secs: default_request_ttl(),
        }
    }
}

/// `[audit]`: when the node signs a checkpoint of its audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Sign a checkpoint after this many new entries (at least 1).
    #[serde(default = "default_checkpoint_entries")]
    pub checkpoint_every_entries: u64,
    /// Sign a checkpoint of any new entries after this many seconds (at least 1).
    #[serde(default = "default_checkpoint_secs")]
    pub checkpoint_every_secs: u64,
}

impl AuditSection {
    /// The checkpoint schedule these settings describe.
    pub fn schedule(&self) -> strongroom_audit::CheckpointSchedule {
        strongroom_audit::CheckpointSchedule {
            every_entries: self.checkpoint_every_entries,
            every: std::time::Duration::from_secs(self.checkpoint_every_secs),
        }
    }
}

impl Default for AuditSection {
    fn default() -> Self {
        Self {
            checkpoint_every_entries: default_checkpoint_entries(),
            checkpoint_every_secs: default_checkpoint_secs(),
        }
    }
}

fn default_checkpoint_entries() -> u64 {
    1000
}

fn default_checkpoint_secs() -> u64 {
    60
}

/// `[policy]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// The policy file (TOML, `strongroom-policies` format). Without one the node votes to
    /// deny every signing request.
    #[serde(default)]
    pub file: Option<PathBuf>,
}

/// `[attestation]`: the firmware profile this node checks its own token and its peers'
/// evidence against.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSection {
    /// The firmware profile (TOML, `firmware-profile/README.md`). Required outside dev mode;
    /// in dev mode without one, peers are admitted on their certificate alone.
    #[serde(default)]
    pub profile: Option<PathBuf>,
    /// Seconds between re-checks of every peer's evidence.
    #[serde(default = "default_recheck")]
    pub recheck_secs: u64,
    /// `[attestation.tpm]`: the TPM whose quotes go into this node's evidence. Required when
    /// the firmware profile has `tpm.required = true`.
    #[serde(default)]
    pub tpm: Option<TpmSection>,
}

impl Default for AttestationSection {
    fn default() -> Self {
        Self {
            profile: None,
            recheck_secs: default_recheck(),
            tpm: None,
        }
    }
}

/// `[attestation.tpm]`: how the node reaches its TPM and where its attestation key is.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmSection {
    /// The tpm2-tools TCTI: `device:/dev/tpmrm0` (the kernel's resource manager) on an
    /// appliance, `swtpm:host=127.0.0.1,port=2321` for a software TPM.
    #[serde(default = "default_tcti")]
    pub tcti: String,
    /// The persistent handle of the attestation key (`strongroom tpm enroll`).
    #[serde(default = "default_ak_handle")]
    pub ak_handle: u32,
}

fn default_tcti() -> String {
    crate::tpm::DEFAULT_TCTI.to_owned()
}

fn default_ak_handle() -> u32 {
    crate::tpm::DEFAULT_AK_HANDLE
}

/// `[dev]` (honoured only in dev mode).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DevSection {
    /// Serve `POST /v1/dangerous-dev/sign-digest`.
    #[serde(default)]
    pub dangerous_sign_digest_endpoint: bool,
    /// Corrupt every released partial signature (test hook).
    #[serde(default)]
    pub dangerous_corrupt_partials: bool,
    /// Serve `POST /v1/dangerous-dev/peer-request`, which sends any control message to a peer
    /// as this node: tests use it to play a compromised member.
    #[serde(default)]
    pub dangerous_peer_request_endpoint: bool,
}

fn default_max_in_flight() -> usize {
    256
}
fn default_rate() -> f64 {
    20.0
}
fn default_burst() -> u32 {
    40
}
fn default_network() -> String {
    "mainnet".into()
}
fn default_module() -> PathBuf {
    PathBuf::from("/usr/lib/softhsm/libsofthsm2.so")
}
fn default_max_connections() -> usize {
    16
}
fn default_lease_ttl() -> u64 {
    3
}
fn default_target() -> u32 {
    100
}
fn default_low_water() -> u32 {
    50
}
fn default_max() -> u32 {
    150
}
fn default_true() -> bool {
    true
}
fn default_sign_timeout() -> u64 {
    30
}
fn default_vote_valid() -> u64 {
    120
}
fn default_request_ttl() -> u64 {
    86_400
}
fn default_recheck() -> u64 {
    60
}

/// The roles a client may have.
pub const ROLES: [&str; 4] = ["submitter", "approver", "admin", "auditor"];

impl Config {
    /// Reads `path`, applies `STRONGROOM__*` overrides from the process environment, resolves
    /// relative paths against the file's directory and validates every field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::load_with_env(path, &env)
    }

    /// [`Config::load`] with explicit overrides (`STRONGROOM__SECTION__FIELD`, value).
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, env)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(text: &str, path: &Path, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut value: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })?;
        for (var, raw) in env {
            apply_override(&mut value, var, raw)?;
        }
        let mut config: Config =
            toml::Value::Table(value)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })?;
        config.source = path.to_owned();
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        for p in [
            &mut config.token.pin_file,
            &mut config.transport.ca_cert,
            &mut config.transport.certificate,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [&mut config.policy.file, &mut config.attestation.profile]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        // A bare module name stays as is: the dynamic loader searches for it.
        if config.token.module.is_relative() && config.token.module.components().count() > 1 {
            config.token.module = base.join(&config.token.module);
        }
        config.validate()?;
        Ok(config)
    }

    fn invalid(&self, field: &str, detail: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            field: field.to_owned(),
            detail: detail.into(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        strongroom_transport::NodeId::new(self.node.id.as_str())
            .map_err(|e| self.invalid("node.id", e.to_string()))?;
        strongroom_transport::ClusterId::new(self.node.cluster_id.as_str())
            .map_err(|e| self.invalid("node.cluster_id", e.to_string()))?;
        self.network()?;
        for (peer, addr) in &self.peers {
            strongroom_transport::NodeId::new(peer.as_str())
                .map_err(|e| self.invalid(&format!("peers.{peer}"), e.to_string()))?;
            if *peer == self.node.id {
                return Err(self.invalid(
                    &format!("peers.{peer}"),
                    "this node is listed as its own peer; list only the other nodes",
                ));
            }
            addr.parse::<SocketAddr>().map_err(|e| {
                self.invalid(
                    &format!("peers.{peer}"),
                    format!("'{addr}' is not host:port ({e}); write e.g. \"10.0.0.2:7400\""),
                )
            })?;
        }
        for (client, roles) in &self.api.clients {
            strongroom_transport::ClientName::new(client.as_str())
                .map_err(|e| self.invalid(&format!("api.clients.{client}"), e.to_string()))?;
            for role in roles {
                if !ROLES.contains(&role.as_str()) {
                    return Err(self.invalid(
                        &format!("api.clients.{client}"),
                        format!("unknown role '{role}'; roles are {}", ROLES.join(", ")),
                    ));
                }
            }
        }
        if self.api.rate_limit_per_second.is_nan()
            || self.api.rate_limit_per_second < 0.0
            || self.api.rate_limit_burst == 0
        {
            return Err(self.invalid(
                "api.rate_limit_per_second",
                "the rate must be 0 (off) or positive, and rate_limit_burst at least 1",
            ));
        }
        if self.etcd.endpoints.is_empty() {
            return Err(self.invalid("etcd.endpoints", "list at least one etcd endpoint"));
        }
        if self.etcd.lease_ttl_secs == 0 || self.etcd.lease_ttl_secs > 60 {
            return Err(self.invalid("etcd.lease_ttl_secs", "must be between 1 and 60 seconds"));
        }
        if self.database.max_connections == 0 {
            return Err(self.invalid("database.max_connections", "must be at least 1"));
        }
        let p = &self.pool;
        if !(p.low_water <= p.target && p.target <= p.max) {
            return Err(self.invalid(
                "pool",
                format!(
                    "need low_water <= target <= max, found {} / {} / {}",
                    p.low_water, p.target, p.max
                ),
            ));
        }
        if self.signing.max_in_flight == 0 {
            return Err(self.invalid("signing.max_in_flight", "must be at least 1"));
        }
        if self.audit.checkpoint_every_entries == 0 {
            return Err(self.invalid("audit.checkpoint_every_entries", "must be at least 1"));
        }
        if self.audit.checkpoint_every_secs == 0 {
            return Err(self.invalid("audit.checkpoint_every_secs", "must be at least 1"));
        }
        if self.signing.vote_valid_secs == 0 {
            return Err(self.invalid("signing.vote_valid_secs", "must be at least 1"));
        }
        if self.signing.request_ttl_secs < self.signing.timeout_secs.saturating_mul(2) {
            return Err(self.invalid(
                "signing.request_ttl_secs",
                format!(
                    "must leave time for a signing and its retry: at least twice signing.timeout_secs ({} s)",
                    self.signing.timeout_secs.saturating_mul(2)
                ),
            ));
        }
        if self.signing.timeout_secs == 0 {
            return Err(self.invalid("signing.timeout_secs", "must be at least 1"));
        }
        if let Some(tpm) = &self.attestation.tpm {
            if tpm.tcti.trim().is_empty() {
                return Err(self.invalid(
                    "attestation.tpm.tcti",
                    "name the TPM, e.g. \"device:/dev/tpmrm0\" (or remove [attestation.tpm])",
                ));
            }
            if let Err(e) = crate::tpm::check_persistent(tpm.ak_handle) {
                return Err(self.invalid("attestation.tpm.ak_handle", e.to_string()));
            }
        }
        if self.attestation.recheck_secs == 0 || self.attestation.recheck_secs > 3600 {
            return Err(self.invalid(
                "attestation.recheck_secs",
                "must be between 1 and 3600 seconds (and well below the profile's freshness.max_age_secs)",
            ));
        }
        if !self.node.dev_mode {
            if self.attestation.profile.is_none() {
                return Err(self.invalid(
                    "attestation.profile",
                    "a node outside dev mode needs a firmware profile: set it to the profile file, \
                     e.g. profile = \"firmware-profile.toml\" (see firmware-profile/README.md)",
                ));
            }
            if self.primes.source == PrimesSource::DangerousDevFixture {
                return Err(self.invalid(
                    "primes.source",
                    "fixture primes are public test data: allowed only with node.dev_mode = true; use \"generate\"",
                ));
            }
            if self.dev.dangerous_sign_digest_endpoint {
                return Err(self.invalid(
                    "dev.dangerous_sign_digest_endpoint",
                    "allowed only with node.dev_mode = true",
                ));
            }
            if self.dev.dangerous_corrupt_partials {
                return Err(self.invalid(
                    "dev.dangerous_corrupt_partials",
                    "allowed only with node.dev_mode = true",
                ));
            }
            if self.dev.dangerous_peer_request_endpoint {
                return Err(self.invalid(
                    "dev.dangerous_peer_request_endpoint",
                    "allowed only with node.dev_mode = true",
                ));
            }
        }
        Ok(())
    }

    /// The Bitcoin network.
    pub fn network(&self) -> Result<strongroom_bitcoin::bitcoin::Network, ConfigError> {
        match self.node.network.as_str() {
            "mainnet" | "bitcoin" => Ok(strongroom_bitcoin::bitcoin::Network::Bitcoin),
            "testnet" => Ok(strongroom_bitcoin::bitcoin::Network::Testnet),
            "signet" => Ok(strongroom_bitcoin::bitcoin::Network::Signet),
            "regtest" => Ok(strongroom_bitcoin::bitcoin::Network::Regtest),
            other => Err(self.invalid(
                "node.network",
                format!("unknown network '{other}'; use mainnet, testnet, signet or regtest"),
            )),
        }
    }

    /// Every member of the cluster (this node and its peers), sorted: a node's MPC party index
    /// is its position here.
    pub fn members(&self) -> Vec<String> {
        let mut all: Vec<String> = self.peers.keys().cloned().collect();
        all.push(self.node.id.clone());
        all.sort();
        all
    }
}

/// Sets `section.field` (or `field`) in `table` from `STRONGROOM__SECTION__FIELD`.
fn apply_override(table: &mut toml::Table, var: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if parts.is_empty() || parts.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            detail: "write STRONGROOM__<SECTION>__<FIELD>, e.g. STRONGROOM__DATABASE__URL".into(),
        });
    }
    // Peer and client names keep their case-insensitive spelling with '-' (env names use '_').
    let value = parse_env_value(raw);
    let mut cursor = table;
    for (i, part) in parts.iter().enumerate() {
        let key = if i > 0 && matches!(parts[0].as_str(), "peers") {
            part.replace('_', "-")
        } else {
            part.clone()
        };
        if i + 1 == parts.len() {
            cursor.insert(key, value);
            return Ok(());
        }
        let entry = cursor
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_owned(),
                    detail: format!("`{key}` is not a section"),
                });
            }
        };
    }
    Ok(())
}

fn parse_env_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../examples/node.toml");

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse(text, Path::new("/etc/strongroom/node.toml"), &env)
    }

    #[test]
    fn the_example_parses_with_every_field() {
        let c = parse(EXAMPLE, &[]).unwrap();
        assert_eq!(c.node.id, "node-1");
        assert_eq!(c.members(), vec!["node-1", "node-2", "node-3"]);
        assert_eq!(c.pool.target, 100);
        assert_eq!(c.pool.low_water, 50);
        assert_eq!(c.pool.max, 150);
        assert_eq!(c.api.clients["ops"], vec!["admin", "submitter"]);
        assert!(!c.node.dev_mode);
    }

    #[test]
    fn environment_overrides_any_field() {
        let c = parse(
            EXAMPLE,
            &[
                ("STRONGROOM__DATABASE__URL", "postgresql://x@db/y"),
                ("STRONGROOM__POOL__TARGET", "60"),
                (
                    "STRONGROOM__ETCD__ENDPOINTS",
                    "[\"http://a:1\", \"http://b:2\"]",
                ),
                ("STRONGROOM__PEERS__NODE_4", "10.0.0.4:7400"),
            ],
        )
        .unwrap();
        assert_eq!(c.database.url, "postgresql://x@db/y");
        assert_eq!(c.pool.target, 60);
        assert_eq!(c.etcd.endpoints, vec!["http://a:1", "http://b:2"]);
        assert_eq!(c.peers["node-4"], "10.0.0.4:7400");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let err = parse(&EXAMPLE.replace("target = 100", "target = 10"), &[]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/strongroom/node.toml"), "{text}");
        assert!(text.contains("`pool`"), "{text}");

        let err = parse(&EXAMPLE.replace("[pool]", "[pool]\ntargett = 3"), &[]).unwrap_err();
        assert!(err.to_string().contains("targett"), "{err}");

        let err = parse(
            EXAMPLE,
            &[("STRONGROOM__PRIMES__SOURCE", "dangerous-dev-fixture")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("primes.source"), "{err}");
        assert!(err.to_string().contains("dev_mode"), "{err}");

        let err = parse(EXAMPLE, &[("STRONGROOM__NODE__NETWORK", "litecoin")]).unwrap_err();
        assert!(err.to_string().contains("node.network"), "{err}");

        let err = parse(
            &EXAMPLE.replace("node-2 = \"10.0.0.2:7400\"", "node-2 = \"somewhere\""),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("peers.node-2"), "{err}");

        let err = parse(
            &EXAMPLE.replace("audit = [\"auditor\"]", "audit = [\"root\"]"),
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown role 'root'"), "{err}");
    }

    #[test]
    fn dev_features_need_dev_mode() {
        let err = parse(
            EXAMPLE,
            &[("STRONGROOM__DEV__DANGEROUS_SIGN_DIGEST_ENDPOINT", "true")],
        )
        .unwrap_err();
        assert!(err.to_string().contains("dangerous_sign_digest_endpoint"));
        let ok = parse(
            EXAMPLE,
            &[
                ("STRONGROOM__DEV__DANGEROUS_SIGN_DIGEST_ENDPOINT", "true"),
                ("STRONGROOM__NODE__DEV_MODE", "true"),
                ("STRONGROOM__PRIMES__SOURCE", "dangerous-dev-fixture"),
            ],
        )
        .unwrap();
        assert!(ok.dev.dangerous_sign_digest_endpoint);
        assert_eq!(ok.primes.source, PrimesSource::DangerousDevFixture);
    }

    #[test]
    fn a_profile_is_required_outside_dev_mode() {
        let without = EXAMPLE.replace("profile = \"firmware-profile.toml\"", "");
        let err = parse(&without, &[]).unwrap_err();
        assert!(err.to_string().contains("attestation.profile"), "{err}");
        let dev = parse(&without, &[("STRONGROOM__NODE__DEV_MODE", "true")]).unwrap();
        assert!(dev.attestation.profile.is_none());
        assert_eq!(dev.attestation.recheck_secs, 60);
        let c = parse(EXAMPLE, &[("STRONGROOM__ATTESTATION__RECHECK_SECS", "5")]).unwrap();
        assert_eq!(
            c.attestation.profile.as_deref(),
            Some(Path::new("/etc/strongroom/firmware-profile.toml"))
        );
        assert_eq!(c.attestation.recheck_secs, 5);
        let err = parse(EXAMPLE, &[("STRONGROOM__ATTESTATION__RECHECK_SECS", "0")]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("attestation.recheck_secs"), "{text}");
    }

    #[test]
    fn relative_paths_follow_the_file() {
        let c = parse(
            &EXAMPLE.replace("/etc/strongroom/ca.pem", "pki/ca.pem"),
            &[("STRONGROOM__TOKEN__PIN_FILE", "token.pin")],
        )
        .unwrap();
        assert_eq!(c.transport.ca_cert, Path::new("/etc/strongroom/pki/ca.pem"));
        assert_eq!(c.token.pin_file, Path::new("/etc/strongroom/token.pin"));
        // A bare module name stays as is (the dynamic loader searches for it).
        let c = parse(EXAMPLE, &[("STRONGROOM__TOKEN__MODULE", "libsofthsm2.so")]).unwrap();
        assert_eq!(c.token.module, Path::new("libsofthsm2.so"));
    }
}
