//! The engine: one node's part in aux info, key generation, presigning and signing.
//!
//! Everything secret is sealed by the node's token before it reaches the database, and every
//! state change is one database transaction. This module holds the participant side (what a
//! node does when a peer invites it); [`crate::leader`] drives aux info and the pools, and
//! [`crate::signing`] coordinates signings.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use strongroom_keystore::{ObjectKind, ObjectRef, Token};
use strongroom_mpc::hd::DerivationPath;
use strongroom_mpc::keys::{
    PublicKeyInfo, SecretAuxInfo, SecretKeyShare, run_aux_info, run_keygen,
};
use strongroom_mpc::msg::{AuxInfoMsg, KeygenMsg, SigningMsg};
use strongroom_mpc::online::{NodeComputedSighash, OnlineSigning, PartialSignature, SignerEntropy};
use strongroom_mpc::presign::{PresignaturePublic, SecretPresignature, run_presign};
use strongroom_mpc::primes::{Primes, PrimesPolicy};
use strongroom_mpc::session::{
    KeyId, ProtocolKind as MpcKind, SessionDescriptor, SessionId as MpcSessionId, SignerSet,
};
use strongroom_mpc::{MpcParty, interactive::run_interactive_sign};
use strongroom_store::{Consumption, NewPresignature, PrimesOrigin, ReleaseGate, Store};
use strongroom_transport::{
    Node as Transport, NodeId, ProtocolKind, SessionId, SessionSpec, delivery,
};
use tokio::sync::watch;

use crate::config::{Config, PrimesSource};
use crate::control::{KeyStatus, NodeStatus, PoolStatus, RemoteError, Reply, Request, SignTarget};
use crate::metrics::{EngineMetrics, PoolLabels};

/// Token counter advanced by every presignature consumption (the rollback check compares it
/// with the database).
pub const CONSUMPTION_COUNTER: &str = "presignature-consumption";

/// Database meta entry holding the highest consumption counter the database has recorded.
pub const CONSUMPTION_META: &str = "consumption_counter";

/// Longest a node takes part in aux info generation.
const AUX_LIMIT: Duration = Duration::from_secs(900);
/// Longest a node takes part in key generation.
const KEYGEN_LIMIT: Duration = Duration::from_secs(600);
/// Longest a node takes part in one presign session (a peer that died mid-session costs this).
const PRESIGN_LIMIT: Duration = Duration::from_secs(60);

/// An engine operation failed; the text says which step and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The database failed.
    #[error("database: {0}")]
    Store(#[from] strongroom_store::StoreError),
    /// The token failed.
    #[error("token: {0}")]
    Token(String),
    /// A protocol session failed; `culprits` names blamed nodes.
    #[error("{protocol} failed: {detail}")]
    Protocol {
        /// Protocol.
        protocol: &'static str,
        /// What happened.
        detail: String,
        /// Blamed node ids.
        culprits: Vec<String>,
    },
    /// A request cannot be served (with a stable kind for the API and peers).
    #[error("{kind}: {detail}")]
    Refused {
        /// Stable kind.
        kind: &'static str,
        /// What and why.
        detail: String,
    },
    /// A peer failed or refused.
    #[error("node {node}: {error}")]
    Remote {
        /// The peer.
        node: String,
        /// Its error.
        error: RemoteError,
    },
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(String),
}

impl EngineError {
    pub(crate) fn refused(kind: &'static str, detail: impl Into<String>) -> Self {
        EngineError::Refused {
            kind,
            detail: detail.into(),
        }
    }

    /// The error as a reply to a peer.
    pub fn to_remote(&self) -> RemoteError {
        match self {
            EngineError::Refused { kind, detail } => RemoteError::new(kind, detail.clone()),
            EngineError::Protocol {
                detail, culprits, ..
            } => RemoteError {
                kind: "protocol-failed".into(),
                detail: detail.clone(),
                culprits: culprits.clone(),
            },
            EngineError::Remote { node, error } => RemoteError {
                kind: error.kind.clone(),
                detail: format!("node {node}: {}", error.detail),
                culprits: error.culprits.clone(),
            },
            other => RemoteError::new("internal", other.to_string()),
        }
    }

    /// Nodes blamed by this error.
    pub fn culprits(&self) -> Vec<String> {
        match self {
            EngineError::Protocol { culprits, .. } => culprits.clone(),
            EngineError::Remote { error, .. } => error.culprits.clone(),
            _ => Vec::new(),
        }
    }
}

/// A reservation this node made: the entropy it contributed, kept in memory only.
struct Reservation {
    entropy: SignerEntropy,
    at: Instant,
}

/// Progress of this node's prime supply.
#[derive(Debug, Clone, Default)]
pub struct PrimesStatus {
    /// Primes (or aux info) are ready.
    pub ready: bool,
    /// Human-readable progress.
    pub detail: String,
}

/// One node's engine.
pub struct Engine {
    pub(crate) cfg: Config,
    pub(crate) me: String,
    pub(crate) members: Vec<String>,
    pub(crate) my_index: u16,
    pub(crate) token: Token,
    pub(crate) store: Store,
    pub(crate) transport: Arc<Transport>,
    pub(crate) coord: watch::Receiver<strongroom_coord::CoordState>,
    /// Whether this node campaigns for leadership: not while most peers refuse it
    /// ([`crate::admission`]).
    pub(crate) eligibility: strongroom_coord::Eligibility,
    pub(crate) metrics: EngineMetrics,
    pub(crate) network: strongroom_bitcoin::bitcoin::Network,
    pub(crate) requests: crate::requests::RequestsState,
    /// This node's firmware profile and its peers' admission ([`crate::admission`]).
    pub(crate) attestation: crate::admission::Attestation,
    primes: Mutex<PrimesStatus>,
    reservations: Mutex<HashMap<(String, Vec<u8>), Reservation>>,
    shares: Mutex<HashMap<String, Arc<SecretKeyShare>>>,
    public_keys: Mutex<HashMap<String, PublicKeyInfo>>,
    aux_running: AtomicBool,
    /// When each client's audit export was last recorded.
    pub(crate) audit_exports: Mutex<HashMap<String, Instant>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("node", &self.me).finish()
    }
}

/// Fresh random bytes (session and request ids).
pub(crate) fn random_id<const N: usize>() -> [u8; N] {
    let mut id = [0u8; N];
    OsRng.fill_bytes(&mut id);
    id
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs a CPU-heavy protocol future on a blocking thread, in the current runtime's context (so
/// the transport's tasks and timers stay on the runtime's workers).
pub(crate) async fn on_blocking_thread<F, T>(fut: F) -> Result<T, EngineError>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(fut))
        .await
        .map_err(|e| EngineError::Transport(format!("protocol task ended abnormally: {e}")))
}

pub(crate) fn hex32(s: &str, what: &str) -> Result<[u8; 32], EngineError> {
    let bytes = hex::decode(s)
        .map_err(|_| EngineError::refused("bad-request", format!("{what} is not hex")))?;
    bytes
        .try_into()
        .map_err(|_| EngineError::refused("bad-request", format!("{what} must be 32 bytes")))
}

fn presig_bytes(hex_id: &str) -> Result<Vec<u8>, EngineError> {
    hex::decode(hex_id)
        .map_err(|_| EngineError::refused("bad-request", "presignature id is not hex"))
}

/// Parses a non-hardened derivation path such as `0/17` (`m/` prefix optional, empty = root).
pub fn parse_path(text: &str) -> Result<DerivationPath, EngineError> {
    let trimmed = text.trim();
    let body = trimmed
        .strip_prefix("m/")
        .or_else(|| (trimmed == "m").then_some(""))
        .unwrap_or(trimmed);
    let mut indices = Vec::new();
    if !body.is_empty() {
        for part in body.split('/') {
            if part.ends_with('\'') || part.ends_with('h') {
                return Err(EngineError::refused(
                    "invalid-path",
                    format!(
                        "path '{text}' has a hardened step '{part}'; only non-hardened paths can be signed for"
                    ),
                ));
            }
            let index: u32 = part.parse().map_err(|_| {
                EngineError::refused(
                    "invalid-path",
                    format!("path '{text}': '{part}' is not a child index"),
                )
            })?;
            indices.push(index);
        }
    }
    DerivationPath::new(indices)
        .map_err(|e| EngineError::refused("invalid-path", format!("path '{text}': {e}")))
}

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        cfg: Config,
        token: Token,
        store: Store,
        transport: Arc<Transport>,
        coord: watch::Receiver<strongroom_coord::CoordState>,
        eligibility: strongroom_coord::Eligibility,
        metrics: EngineMetrics,
        network: strongroom_bitcoin::bitcoin::Network,
        requests: crate::requests::RequestsState,
        attestation: crate::admission::Attestation,
    ) -> Result<Self, EngineError> {
        let members = cfg.members();
        let me = cfg.node.id.clone();
        let my_index = members
            .iter()
            .position(|m| *m == me)
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| EngineError::refused("config", "this node is not a member"))?;
        Ok(Self {
            cfg,
            me,
            members,
            my_index,
            token,
            store,
            transport,
            coord,
            eligibility,
            metrics,
            network,
            requests,
            attestation,
            primes: Mutex::new(PrimesStatus::default()),
            reservations: Mutex::new(HashMap::new()),
            shares: Mutex::new(HashMap::new()),
            public_keys: Mutex::new(HashMap::new()),
            aux_running: AtomicBool::new(false),
            audit_exports: Mutex::new(HashMap::new()),
        })
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.me
    }

    /// Every member, sorted (party index = position).
    pub fn members(&self) -> &[String] {
        &self.members
    }

    /// The node id of party `index`.
    pub(crate) fn member(&self, index: u16) -> Result<&String, EngineError> {
        self.members.get(usize::from(index)).ok_or_else(|| {
            EngineError::refused(
                "bad-request",
                format!("party index {index} is not a member"),
            )
        })
    }

    pub(crate) fn node_ids(&self, indices: &[u16]) -> Result<Vec<NodeId>, EngineError> {
        indices
            .iter()
            .map(|i| {
                NodeId::new(self.member(*i)?.as_str())
                    .map_err(|e| EngineError::Transport(e.to_string()))
            })
            .collect()
    }

    /// Canonical signer-set text (node ids joined by commas).
    pub(crate) fn signer_set_name(&self, signers: &[u16]) -> Result<String, EngineError> {
        Ok(signers
            .iter()
            .map(|i| self.member(*i).cloned())
            .collect::<Result<Vec<_>, _>>()?
            .join(","))
    }

    fn object<'a>(&'a self, kind: ObjectKind, id: &'a [u8]) -> ObjectRef<'a> {
        ObjectRef {
            cluster_id: &self.cfg.node.cluster_id,
            node_id: &self.me,
            kind,
            object_id: id,
        }
    }

    pub(crate) fn seal(
        &self,
        kind: ObjectKind,
        id: &[u8],
        generation: u64,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, EngineError> {
        self.token
            .seal(&self.object(kind, id), generation, plaintext)
            .map_err(|e| EngineError::Token(e.to_string()))
    }

    pub(crate) fn unseal(
        &self,
        kind: ObjectKind,
        id: &[u8],
        blob: &[u8],
    ) -> Result<strongroom_keystore::SecretBytes, EngineError> {
        self.token
            .unseal(&self.object(kind, id), blob)
            .map(|u| u.plaintext)
            .map_err(|e| EngineError::Token(e.to_string()))
    }

    // ---- primes ------------------------------------------------------------------------------

    /// Where this node's primes stand.
    pub fn primes_status(&self) -> PrimesStatus {
        lock(&self.primes).clone()
    }

    fn set_primes(&self, ready: bool, detail: impl Into<String>) {
        *lock(&self.primes) = PrimesStatus {
            ready,
            detail: detail.into(),
        };
    }

    fn primes_policy(&self) -> PrimesPolicy {
        if self.cfg.node.dev_mode {
            PrimesPolicy::DangerousAllowDevFixture
        } else {
            PrimesPolicy::ProductionOnly
        }
    }

    /// Makes sure a set of primes waits for aux info (unless aux info exists): loads the dev
    /// fixture or generates primes in the background with progress in the logs.
    pub(crate) async fn supply_primes(self: Arc<Self>) {
        loop {
            match self.primes_needed().await {
                Ok(false) => {
                    self.set_primes(true, "ready");
                }
                Ok(true) => {
                    if let Err(e) = self.make_primes().await {
                        tracing::error!(error = %e, "cannot prepare primes for aux info; retrying in 10 s");
                        self.set_primes(false, format!("failed: {e}"));
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        continue;
                    }
                    self.set_primes(true, "ready");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read prime supply");
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    async fn primes_needed(&self) -> Result<bool, EngineError> {
        Ok(self.store.unused_primes().await? == 0 && self.store.aux_info().await?.is_none())
    }

    async fn make_primes(&self) -> Result<(), EngineError> {
        let (primes, origin) = match self.cfg.primes.source {
            PrimesSource::DangerousDevFixture => {
                tracing::warn!(
                    index = self.my_index,
                    "DANGEROUS: loading the public dev fixture primes (dev mode)"
                );
                let primes = Primes::dangerous_dev_fixture(self.my_index)
                    .map_err(|e| EngineError::refused("primes", e.to_string()))?;
                (primes, PrimesOrigin::DevFixture)
            }
            PrimesSource::Generate => {
                self.set_primes(false, "generating safe primes: 0 of 4");
                tracing::info!("generating safe primes for aux info (about a minute)");
                let mut generation = strongroom_mpc::primes::spawn_generation()
                    .map_err(|e| EngineError::refused("primes", e.to_string()))?;
                while let Some(p) = futures::StreamExt::next(generation.progress()).await {
                    tracing::info!(
                        found = p.found,
                        total = p.total,
                        elapsed_s = p.elapsed.as_secs(),
                        "safe prime generation: {} of {}",
                        p.found,
                        p.total
                    );
                    self.set_primes(
                        false,
                        format!("generating safe primes: {} of {}", p.found, p.total),
                    );
                }
                let primes = generation
                    .finish()
                    .await
                    .map_err(|e| EngineError::refused("primes", e.to_string()))?;
                (primes, PrimesOrigin::Generated)
            }
        };
        primes
            .check(self.primes_policy())
            .map_err(|e| EngineError::refused("primes", e.to_string()))?;
        let bytes = primes
            .to_sealable_bytes()
            .map_err(|e| EngineError::refused("primes", e.to_string()))?;
        let sealed = self.seal(ObjectKind::Primes, b"primes", 0, &bytes)?;
        self.store.add_primes(origin, &sealed).await?;
        tracing::info!(?origin, "primes sealed and stored");
        Ok(())
    }

    // ---- status ------------------------------------------------------------------------------

    /// What this node has, for the leader and the API.
    pub async fn status(&self) -> Result<NodeStatus, EngineError> {
        let aux = self.store.aux_info().await?;
        let keys = self
            .store
            .keys()
            .await?
            .into_iter()
            .map(|k| KeyStatus {
                key_id: k.key_id,
                state: k.state.as_str().to_owned(),
            })
            .collect();
        let pools = self
            .store
            .pool_counts()
            .await?
            .into_iter()
            .map(|p| PoolStatus {
                key_id: p.key_id,
                signer_set: p.signer_set,
                available: p.available,
                reserved: p.reserved,
                consumed: p.consumed,
            })
            .collect::<Vec<_>>();
        self.update_pool_gauges(&pools);
        Ok(NodeStatus {
            primes_ready: self.primes_status().ready || aux.is_some(),
            aux_id: aux.map(|a| a.aux_id),
            keys,
            pools,
        })
    }

    pub(crate) fn update_pool_gauges(&self, pools: &[PoolStatus]) {
        for p in pools {
            for (state, v) in [
                ("available", p.available),
                ("reserved", p.reserved),
                ("consumed", p.consumed),
            ] {
                self.metrics
                    .pool
                    .get_or_create(&PoolLabels {
                        key_id: p.key_id.clone(),
                        signer_set: p.signer_set.clone(),
                        state: state.to_owned(),
                    })
                    .set(v);
            }
        }
    }

    // ---- control requests (participant side) -------------------------------------------------

    /// Serves one request from a peer (or from this node's own coordinator).
    pub async fn handle(self: &Arc<Self>, from: &str, request: Request) -> Reply {
        let kind = request.kind();
        // A peer that is not admitted takes part in nothing (crate::admission), and what it
        // sends is not audited either.
        if from != self.me && !matches!(request, Request::Attestation) {
            if let Err(e) = self
                .ensure_admitted(from, crate::admission::ATTEST_TIMEOUT)
                .await
            {
                tracing::warn!(from, request = kind, error = %e, "request from a peer that is not admitted refused");
                return Reply::Error(RemoteError::new("peer-not-admitted", e.to_string()));
            }
        }
        // A peer's message is held to the same bounds as API input before anything reads it.
        if from != self.me {
            let limits = crate::bounds::PeerLimits::new(self.members.len());
            if let Err(e) = request.check(&limits) {
                return self.refuse_out_of_bounds(from, kind, &e).await;
            }
        }
        let result = match request {
            Request::Status => self.status().await.map(Reply::Status),
            Request::AuxInfo { session_id } => {
                self.join_aux_info(&session_id).await.map(|()| Reply::Done)
            }
            Request::Keygen {
                session_id,
                key_id,
                name,
                threshold,
                aux_id,
            } => self
                .join_keygen(&session_id, &key_id, &name, threshold, &aux_id)
                .await
                .map(|info| Reply::KeyReady {
                    public_key: hex::encode(info.public_key),
                    chain_code: hex::encode(info.chain_code),
                }),
            Request::Presign {
                session_id,
                key_id,
                signers,
            } => self
                .join_presign(&session_id, &key_id, &signers)
                .await
                .map(|()| Reply::Done),
            Request::Reserve {
                request_id,
                key_id,
                signers,
                presig_id,
                target,
            } => {
                self.reserve(
                    &request_id,
                    &key_id,
                    &signers,
                    presig_id.as_deref(),
                    &target,
                )
                .await
            }
            Request::Partial {
                request_id,
                key_id,
                presig_id,
                target,
                entropy,
            } => self
                .partial(&request_id, &key_id, &presig_id, &target, &entropy)
                .await
                .map(|p| Reply::Partial {
                    partial: hex::encode(p.to_bytes()),
                }),
            Request::Discard {
                request_id,
                presig_id,
            } => self
                .discard(&request_id, &presig_id)
                .await
                .map(|()| Reply::Done),
            Request::InteractiveSign {
                session_id,
                request_id,
                key_id,
                signers,
                target,
            } => self
                .join_interactive(&session_id, &request_id, &key_id, &signers, &target)
                .await
                .map(|sig| Reply::Signature {
                    r: hex::encode(sig.r),
                    s: hex::encode(sig.s),
                }),
            Request::Propose {
                request_id,
                key_id,
                psbt,
                memo,
                submitter,
            } => self
                .propose(&request_id, &key_id, &psbt, memo.as_deref(), &submitter)
                .await
                .map(Reply::Vote),
            Request::Sequence {
                request_id,
                key_id,
                psbt,
                memo,
                submitter,
            } => {
                crate::requests::spawn_sequenced(
                    self.clone(),
                    crate::requests::Proposal {
                        request_id,
                        key_id,
                        psbt,
                        memo,
                        submitter,
                    },
                );
                Ok(Reply::Done)
            }
            Request::Votes { request_id, votes } => self
                .receive_votes(&request_id, &votes)
                .await
                .map(|_| Reply::Done),
            Request::Approve {
                request_id,
                approver,
                signature,
            } => self
                .receive_approval(from, &request_id, &approver, &signature)
                .await
                .map(Reply::Vote),
            Request::SignApproved { request_id } => {
                crate::requests::spawn_signing(self.clone(), request_id);
                Ok(Reply::Done)
            }
            Request::Finished {
                request_id,
                signatures,
            } => self
                .receive_signatures(&request_id, &signatures)
                .await
                .map(|()| Reply::Done),
            Request::Cancel { request_id, by } => self
                .receive_cancel(from, &request_id, &by)
                .await
                .map(|()| Reply::Done),
            Request::Failed { request_id, error } => self
                .receive_failure(from, &request_id, &error)
                .await
                .map(|()| Reply::Done),
            // Answered where the request arrived, with that connection's channel binding.
            Request::Attestation => Err(EngineError::refused(
                "bad-request",
                "attestation is answered by the transport's request loop",
            )),
        };
        match result {
            Ok(reply) => reply,
            Err(e) => {
                if kind != "status" {
                    tracing::warn!(from, request = kind, error = %e, "request failed");
                }
                Reply::Error(e.to_remote())
            }
        }
    }

    /// Logs, audits (`peer_message_refused`, naming the field, never its value) and answers a
    /// peer's message refused by [`Request::check`].
    async fn refuse_out_of_bounds(
        &self,
        from: &str,
        kind: &'static str,
        error: &crate::bounds::BoundsError,
    ) -> Reply {
        let reason = format!("out of bounds: {error}");
        self.refused_peer_message(from, kind, None, &reason).await;
        Reply::Error(RemoteError::new(
            "bad-request",
            format!("node {} refused {kind} from {from}: {error}", self.me),
        ))
    }

    /// Until the PSBT path signs, the only message source is the dev digest endpoint: a node
    /// outside dev mode never signs a digest a peer hands it.
    pub(crate) fn require_raw_digests(&self) -> Result<(), EngineError> {
        if self.cfg.node.dev_mode && self.cfg.dev.dangerous_sign_digest_endpoint {
            Ok(())
        } else {
            Err(EngineError::refused(
                "refused",
                format!(
                    "node {} signs only digests it computed itself; raw digests need dev mode",
                    self.me
                ),
            ))
        }
    }

    /// Joins transport session `session` running `protocol` among `parties`, in order.
    async fn join_session(
        &self,
        session: [u8; 32],
        protocol: ProtocolKind,
        parties: &[u16],
    ) -> Result<strongroom_transport::Session, EngineError> {
        // Never a session with a peer this node has not admitted.
        for &i in parties {
            let peer = self.member(i)?;
            self.ensure_admitted(peer, crate::admission::ATTEST_TIMEOUT)
                .await
                .map_err(|e| EngineError::refused("peer-not-admitted", e.to_string()))?;
        }
        let spec = SessionSpec {
            id: SessionId::from_bytes(session),
            protocol,
            participants: self.node_ids(parties)?,
        };
        self.transport
            .join(spec)
            .await
            .map_err(|e| EngineError::Transport(e.to_string()))
    }

    fn all_parties(&self) -> Vec<u16> {
        (0..self.members.len())
            .filter_map(|i| u16::try_from(i).ok())
            .collect()
    }

    fn n(&self) -> u16 {
        u16::try_from(self.members.len()).unwrap_or(u16::MAX)
    }

    fn timed_out(&self, protocol: &'static str, limit: Duration) -> EngineError {
        self.metrics.failure(protocol, &[]);
        EngineError::Protocol {
            protocol,
            detail: format!(
                "{protocol} did not complete within {limit:?} (a peer stopped answering)"
            ),
            culprits: Vec::new(),
        }
    }

    fn protocol_error(
        &self,
        protocol: &'static str,
        detail: String,
        culprit_parties: &[u16],
    ) -> EngineError {
        let culprits: Vec<String> = culprit_parties
            .iter()
            .filter_map(|i| self.members.get(usize::from(*i)).cloned())
            .collect();
        self.metrics.failure(protocol, &culprits);
        if !culprits.is_empty() {
            tracing::warn!(protocol, culprits = ?culprits, %detail, "protocol session failed; peers blamed");
        }
        EngineError::Protocol {
            protocol,
            detail,
            culprits,
        }
    }

    /// This node's part in aux info generation.
    pub(crate) async fn join_aux_info(
        self: &Arc<Self>,
        session_hex: &str,
    ) -> Result<(), EngineError> {
        let session = hex32(session_hex, "session id")?;
        if self.aux_running.swap(true, Ordering::SeqCst) {
            return Err(EngineError::refused(
                "busy",
                "an aux info session is already running on this node",
            ));
        }
        let result = self.aux_info_inner(session).await;
        self.aux_running.store(false, Ordering::SeqCst);
        result
    }

    async fn aux_info_inner(self: &Arc<Self>, session: [u8; 32]) -> Result<(), EngineError> {
        let stored = self.store.take_primes().await?.ok_or_else(|| {
            EngineError::refused(
                "not-ready",
                format!(
                    "no primes ready on {} ({})",
                    self.me,
                    self.primes_status().detail
                ),
            )
        })?;
        let plain = self.unseal(ObjectKind::Primes, b"primes", &stored.sealed)?;
        let primes = Primes::from_sealed_bytes(plain.expose_secret())
            .map_err(|e| EngineError::refused("primes", e.to_string()))?;
        let desc = SessionDescriptor::aux_info(MpcSessionId::from_bytes(session), self.n())
            .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let transport_session = self
            .join_session(session, ProtocolKind::AuxInfo, &self.all_parties())
            .await?;
        let my_index = self.my_index;
        let policy = self.primes_policy();
        let started = Instant::now();
        tracing::info!(session = %hex::encode(session), "aux info generation started");
        let aux = on_blocking_thread(async move {
            let party = MpcParty::connected(delivery::<AuxInfoMsg>(transport_session));
            tokio::time::timeout(
                AUX_LIMIT,
                run_aux_info(&desc, my_index, primes, policy, &mut OsRng, party, None),
            )
            .await
        })
        .await?
        .map_err(|_| self.timed_out("aux_info", AUX_LIMIT))?
        .map_err(|e| {
            let culprits = aux_culprits(&e);
            self.protocol_error("aux_info", e.to_string(), &culprits)
        })?;
        let bytes = aux
            .to_sealable_bytes()
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let aux_id = hex::encode(session);
        let sealed = self.seal(ObjectKind::AuxInfo, aux_id.as_bytes(), 0, &bytes)?;
        self.store
            .put_aux_info(&aux_id, &self.members, &sealed)
            .await?;
        tracing::info!(aux_id = %aux_id, took_s = started.elapsed().as_secs_f64(), "aux info ready");
        Ok(())
    }

    async fn load_aux(&self, aux_id: &str) -> Result<SecretAuxInfo, EngineError> {
        let stored = self.store.aux_info_by_id(aux_id).await?.ok_or_else(|| {
            EngineError::refused(
                "not-ready",
                format!("node {} has no aux info {aux_id}", self.me),
            )
        })?;
        let plain = self.unseal(ObjectKind::AuxInfo, aux_id.as_bytes(), &stored.sealed)?;
        SecretAuxInfo::from_sealed_bytes(plain.expose_secret())
            .map_err(|e| EngineError::refused("internal", e.to_string()))
    }

    /// This node's part in key generation.
    pub(crate) async fn join_keygen(
        self: &Arc<Self>,
        session_hex: &str,
        key_id_hex: &str,
        name: &str,
        threshold: u16,
        aux_id: &str,
    ) -> Result<PublicKeyInfo, EngineError> {
        let session = hex32(session_hex, "session id")?;
        let key_id = KeyId::from_bytes(hex32(key_id_hex, "key id")?);
        if threshold < 1 || threshold > self.n() {
            return Err(EngineError::refused(
                "invalid-threshold",
                format!("threshold {threshold} must be between 1 and {}", self.n()),
            ));
        }
        // The initiator inserted the record already when it is this node.
        self.store
            .insert_key(key_id_hex, name, threshold, &self.members)
            .await?;
        let result = self
            .keygen_inner(session, key_id, key_id_hex, threshold, aux_id)
            .await;
        if let Err(e) = &result {
            if let Err(db) = self.store.mark_key_failed(key_id_hex, &e.to_string()).await {
                tracing::error!(key_id = key_id_hex, error = %db, "cannot record key failure");
            }
        }
        result
    }

    async fn keygen_inner(
        self: &Arc<Self>,
        session: [u8; 32],
        key_id: KeyId,
        key_id_hex: &str,
        threshold: u16,
        aux_id: &str,
    ) -> Result<PublicKeyInfo, EngineError> {
        let aux = self.load_aux(aux_id).await?;
        let desc = SessionDescriptor::keygen(
            MpcSessionId::from_bytes(session),
            key_id,
            self.n(),
            threshold,
        )
        .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let transport_session = self
            .join_session(session, ProtocolKind::Keygen, &self.all_parties())
            .await?;
        let started = Instant::now();
        let generated = on_blocking_thread(async move {
            let party = MpcParty::connected(delivery::<KeygenMsg>(transport_session));
            tokio::time::timeout(
                KEYGEN_LIMIT,
                run_keygen(&desc, &aux, &mut OsRng, party, None),
            )
            .await
        })
        .await?
        .map_err(|_| self.timed_out("keygen", KEYGEN_LIMIT))?
        .map_err(|e| {
            let culprits = keygen_culprits(&e);
            self.protocol_error("keygen", e.to_string(), &culprits)
        })?;
        let bytes = generated
            .share
            .to_sealable_bytes()
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let sealed = self.seal(ObjectKind::KeyShare, key_id_hex.as_bytes(), 0, &bytes)?;
        self.store
            .mark_key_ready(
                key_id_hex,
                &generated.public.public_key,
                &generated.public.chain_code,
                &sealed,
            )
            .await?;
        lock(&self.shares).insert(key_id_hex.to_owned(), Arc::new(generated.share));
        tracing::info!(
            key_id = key_id_hex,
            took_s = started.elapsed().as_secs_f64(),
            "key generated"
        );
        Ok(generated.public)
    }

    /// The key share of a ready key (cached after the first unseal).
    pub(crate) async fn share(&self, key_id: &str) -> Result<Arc<SecretKeyShare>, EngineError> {
        if let Some(share) = lock(&self.shares).get(key_id) {
            return Ok(share.clone());
        }
        let key = self.store.key(key_id).await?.ok_or_else(|| {
            EngineError::refused(
                "unknown-key",
                format!("no key {key_id} on node {}", self.me),
            )
        })?;
        let sealed = key.sealed_share.ok_or_else(|| {
            EngineError::refused(
                "key-not-ready",
                format!("key {key_id} is {} on node {}", key.state.as_str(), self.me),
            )
        })?;
        let plain = self.unseal(ObjectKind::KeyShare, key_id.as_bytes(), &sealed)?;
        let share = Arc::new(
            SecretKeyShare::from_sealed_bytes(plain.expose_secret())
                .map_err(|e| EngineError::refused("internal", e.to_string()))?,
        );
        lock(&self.shares).insert(key_id.to_owned(), share.clone());
        Ok(share)
    }

    /// The public info of a ready key, from the database (cached: a ready key never changes).
    pub(crate) async fn public_info(&self, key_id: &str) -> Result<PublicKeyInfo, EngineError> {
        if let Some(info) = lock(&self.public_keys).get(key_id) {
            return Ok(info.clone());
        }
        let info = self.public_info_uncached(key_id).await?;
        lock(&self.public_keys).insert(key_id.to_owned(), info.clone());
        Ok(info)
    }

    async fn public_info_uncached(&self, key_id: &str) -> Result<PublicKeyInfo, EngineError> {
        let key = self
            .store
            .key(key_id)
            .await?
            .ok_or_else(|| EngineError::refused("unknown-key", format!("no key {key_id}")))?;
        let (Some(pk), Some(cc)) = (key.public_key, key.chain_code) else {
            return Err(EngineError::refused(
                "key-not-ready",
                format!("key {key_id} is {}", key.state.as_str()),
            ));
        };
        Ok(PublicKeyInfo {
            key_id: KeyId::from_bytes(hex32(key_id, "key id")?),
            threshold: key.threshold,
            n: u16::try_from(key.participants.len()).unwrap_or(u16::MAX),
            public_key: pk.try_into().map_err(|_| {
                EngineError::refused("internal", "stored public key is not 33 bytes")
            })?,
            chain_code: cc.try_into().map_err(|_| {
                EngineError::refused("internal", "stored chain code is not 32 bytes")
            })?,
        })
    }

    /// This node's part in presigning.
    pub(crate) async fn join_presign(
        self: &Arc<Self>,
        session_hex: &str,
        key_id: &str,
        signers: &[u16],
    ) -> Result<(), EngineError> {
        let session = hex32(session_hex, "session id")?;
        let share = self.share(key_id).await?;
        let signer_set = SignerSet::new(signers.to_vec())
            .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let set_name = self.signer_set_name(signers)?;
        let desc = SessionDescriptor::signing(
            MpcKind::Presign,
            MpcSessionId::from_bytes(session),
            share.key_id(),
            signer_set,
        )
        .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let transport_session = self
            .join_session(session, ProtocolKind::Presign, signers)
            .await?;
        let started = Instant::now();
        let share2 = share.clone();
        let generated = on_blocking_thread(async move {
            let party = MpcParty::connected(delivery::<SigningMsg>(transport_session));
            tokio::time::timeout(
                PRESIGN_LIMIT,
                run_presign(&desc, &share2, &mut OsRng, party, None),
            )
            .await
        })
        .await?
        .map_err(|_| self.timed_out("presign", PRESIGN_LIMIT))?
        .map_err(|e| {
            let culprits = presign_culprits(&e, signers);
            self.protocol_error("presign", e.to_string(), &culprits)
        })?;
        self.metrics
            .presign_seconds
            .observe(started.elapsed().as_secs_f64());
        let secret = generated
            .secret
            .to_sealable_bytes()
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let public = serde_json::to_vec(&generated.public)
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let generation = self
            .token
            .counter_read(CONSUMPTION_COUNTER)
            .map_err(|e| EngineError::Token(e.to_string()))?;
        let sealed = self.seal(ObjectKind::Presignature, &session, generation, &secret)?;
        self.store
            .insert_presignature(&NewPresignature {
                presig_id: &session,
                key_id,
                signer_set: &set_name,
                sealed: &sealed,
                public_data: &public,
                generation: i64::try_from(generation).unwrap_or(i64::MAX),
            })
            .await?;
        Ok(())
    }

    // ---- online signing (signer side) -----------------------------------------------------

    async fn reserve(
        &self,
        request_id: &str,
        key_id: &str,
        signers: &[u16],
        presig_id: Option<&str>,
        target: &SignTarget,
    ) -> Result<Reply, EngineError> {
        // Nothing is reserved for what this node would not sign.
        self.message_for(request_id, key_id, target).await?;
        let request_id = &target.reservation_id(request_id);
        if !signers.contains(&self.my_index) {
            return Err(EngineError::refused(
                "bad-request",
                format!("node {} is not in signer set {signers:?}", self.me),
            ));
        }
        let set_name = self.signer_set_name(signers)?;
        let (id, first) = match presig_id {
            None => {
                let id = self
                    .store
                    .reserve_oldest(key_id, &set_name, request_id)
                    .await?
                    .ok_or_else(|| {
                        EngineError::refused(
                            "pool-empty",
                            format!(
                                "no presignature available for key {key_id} and signers {set_name}"
                            ),
                        )
                    })?;
                (id, true)
            }
            Some(hex_id) => {
                let id = presig_bytes(hex_id)?;
                let record = self.store.presignature(&id).await?.ok_or_else(|| {
                    EngineError::refused(
                        "presignature-unavailable",
                        format!("node {} has no presignature {hex_id}", self.me),
                    )
                })?;
                if record.key_id != key_id || record.signer_set != set_name {
                    return Err(EngineError::refused(
                        "presignature-unavailable",
                        format!("presignature {hex_id} belongs to another pool"),
                    ));
                }
                self.store
                    .reserve_presignature(&id, request_id)
                    .await
                    .map_err(|e| EngineError::refused("presignature-unavailable", e.to_string()))?;
                (id, false)
            }
        };
        let public = self.store.presignature_public(&id).await?.ok_or_else(|| {
            EngineError::refused("presignature-unavailable", "presignature vanished")
        })?;
        let entropy = SignerEntropy::random(&mut OsRng);
        lock(&self.reservations).insert(
            (request_id.to_owned(), id.clone()),
            Reservation {
                entropy,
                at: Instant::now(),
            },
        );
        Ok(Reply::Reserved {
            presig_id: hex::encode(&id),
            entropy: hex::encode(entropy.as_bytes()),
            public_digest: hex::encode(Sha256::digest(&public)),
            public_data: first.then(|| hex::encode(&public)),
        })
    }

    async fn partial(
        &self,
        request_id: &str,
        key_id: &str,
        presig_hex: &str,
        target: &SignTarget,
        entropy_hex: &[(u16, String)],
    ) -> Result<PartialSignature, EngineError> {
        // The message: this node's own sighash of its own copy of the request, and only if
        // this node may take part in signing it now (its vote allows it and is still valid).
        let (path, digest, allowed_since) = self.message_for(request_id, key_id, target).await?;
        let sign_request = request_id;
        let request_id = &target.reservation_id(request_id);
        let presig_id = presig_bytes(presig_hex)?;
        let own = lock(&self.reservations)
            .remove(&(request_id.to_owned(), presig_id.clone()))
            .ok_or_else(|| {
                EngineError::refused(
                    "reservation-unknown",
                    format!(
                        "node {} holds no reservation of presignature {presig_hex} for request {request_id}",
                        self.me
                    ),
                )
            })?;
        let mut entropy = BTreeMap::new();
        for (party, e) in entropy_hex {
            if entropy
                .insert(*party, SignerEntropy::from_bytes(hex32(e, "entropy")?))
                .is_some()
            {
                return Err(EngineError::refused(
                    "bad-request",
                    format!("entropy for party {party} given twice"),
                ));
            }
        }
        if entropy.get(&self.my_index) != Some(&own.entropy) {
            return Err(EngineError::refused(
                "entropy-mismatch",
                format!(
                    "the request does not carry the entropy node {} contributed",
                    self.me
                ),
            ));
        }
        let key = self.public_info(key_id).await?;
        let public_bytes = self
            .store
            .presignature_public(&presig_id)
            .await?
            .ok_or_else(|| {
                EngineError::refused("presignature-unavailable", "presignature vanished")
            })?;
        let public: PresignaturePublic = serde_json::from_slice(&public_bytes)
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let sighash = NodeComputedSighash::from_node_computed(digest);
        let signing = OnlineSigning::new(&key, &public, &path, &sighash, &entropy)
            .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let nonce_point = signing.nonce_point();
        let prepared = Instant::now();
        let token = self.token.clone();
        // Consumed durably (token counter first, then the database) before anything is released.
        let sealed = self
            .store
            .consume_presignature(
                &presig_id,
                request_id,
                &Consumption {
                    nonce_point: &nonce_point,
                    message: &digest,
                    gate: allowed_since.map(|allowed_since| ReleaseGate {
                        request_id: sign_request,
                        allowed_since,
                        now: SystemTime::now(),
                    }),
                },
                |_| async move {
                    token
                        .counter_increment(CONSUMPTION_COUNTER)
                        .map(|v| i64::try_from(v).unwrap_or(i64::MAX))
                        .map_err(|e| e.to_string())
                },
            )
            .await
            .map_err(|e| EngineError::refused("presignature-unavailable", e.to_string()))?;
        let consumed = Instant::now();
        tracing::debug!(
            request_id,
            consume_ms = (consumed - prepared).as_secs_f64() * 1000.0,
            "presignature consumed durably"
        );
        let plain = self.unseal(ObjectKind::Presignature, &presig_id, &sealed)?;
        let piece = SecretPresignature::from_sealed_bytes(plain.expose_secret())
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let partial = signing
            .issue_partial(piece)
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        if self.cfg.node.dev_mode && self.cfg.dev.dangerous_corrupt_partials {
            tracing::warn!("DANGEROUS test hook: releasing a corrupted partial signature");
            let mut bytes = partial.to_bytes();
            bytes[31] ^= 1;
            return PartialSignature::from_bytes(&bytes)
                .ok_or_else(|| EngineError::refused("internal", "corrupting the partial failed"));
        }
        let _ = own.at;
        Ok(partial)
    }

    async fn discard(&self, request_id: &str, presig_hex: &str) -> Result<(), EngineError> {
        let presig_id = presig_bytes(presig_hex)?;
        lock(&self.reservations).remove(&(request_id.to_owned(), presig_id.clone()));
        if self
            .store
            .discard_presignature(&presig_id, request_id)
            .await?
        {
            self.metrics.presignatures_discarded.inc();
        }
        Ok(())
    }

    /// Forgets reservations older than `age` and discards them in the database.
    pub(crate) async fn sweep_reservations(&self, age: Duration) -> Result<(), EngineError> {
        lock(&self.reservations).retain(|_, r| r.at.elapsed() < age);
        let n = self.store.discard_stale_reservations(age).await?;
        if n > 0 {
            self.metrics.presignatures_discarded.inc_by(n);
            tracing::warn!(
                count = n,
                "discarded presignatures whose signing never completed"
            );
        }
        Ok(())
    }

    async fn join_interactive(
        self: &Arc<Self>,
        session_hex: &str,
        request_id: &str,
        key_id: &str,
        signers: &[u16],
        target: &SignTarget,
    ) -> Result<strongroom_mpc::online::EcdsaSignature, EngineError> {
        let (path, digest, allowed_since) = self.message_for(request_id, key_id, target).await?;
        if let Some(allowed_since) = allowed_since {
            // Interactive signing releases this node's messages without a presignature: the
            // release is checked and recorded before the session starts.
            self.store
                .check_release(&ReleaseGate {
                    request_id,
                    allowed_since,
                    now: SystemTime::now(),
                })
                .await
                .map_err(|e| EngineError::refused("refused", e.to_string()))?;
        }
        let session = hex32(session_hex, "session id")?;
        let share = self.share(key_id).await?;
        let signer_set = SignerSet::new(signers.to_vec())
            .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let desc = SessionDescriptor::signing(
            MpcKind::InteractiveSign,
            MpcSessionId::from_bytes(session),
            share.key_id(),
            signer_set,
        )
        .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
        let transport_session = self
            .join_session(session, ProtocolKind::Sign, signers)
            .await?;
        tracing::info!(request_id, "interactive signing (no presignature)");
        let limit = Duration::from_secs(self.cfg.signing.timeout_secs);
        let sighash = NodeComputedSighash::from_node_computed(digest);
        on_blocking_thread(async move {
            let party = MpcParty::connected(delivery::<SigningMsg>(transport_session));
            tokio::time::timeout(
                limit,
                run_interactive_sign(&desc, &share, &path, &sighash, &mut OsRng, party, None),
            )
            .await
        })
        .await?
        .map_err(|_| self.timed_out("interactive_sign", limit))?
        .map_err(|e| {
            let culprits = interactive_culprits(&e, signers);
            self.protocol_error("interactive_sign", e.to_string(), &culprits)
        })
    }
}

fn aux_culprits(e: &strongroom_mpc::keys::AuxInfoError) -> Vec<u16> {
    match e {
        strongroom_mpc::keys::AuxInfoError::PeerMisbehaved { culprits, .. } => culprits.clone(),
        _ => Vec::new(),
    }
}

fn keygen_culprits(e: &strongroom_mpc::keys::KeygenError) -> Vec<u16> {
    match e {
        strongroom_mpc::keys::KeygenError::PeerMisbehaved { culprits, .. } => culprits.clone(),
        _ => Vec::new(),
    }
}

fn presign_culprits(e: &strongroom_mpc::presign::PresignError, _signers: &[u16]) -> Vec<u16> {
    match e {
        strongroom_mpc::presign::PresignError::PeerMisbehaved { culprits, .. } => culprits.clone(),
        _ => Vec::new(),
    }
}

fn interactive_culprits(
    e: &strongroom_mpc::interactive::InteractiveSignError,
    _signers: &[u16],
) -> Vec<u16> {
    match e {
        strongroom_mpc::interactive::InteractiveSignError::Protocol(
            strongroom_mpc::presign::PresignError::PeerMisbehaved { culprits, .. },
        ) => culprits.clone(),
        _ => Vec::new(),
    }
}

impl Engine {
    /// Sends `request` to member `index` (served locally when it is this node) and returns its
    /// reply, with a refusal turned into [`EngineError::Remote`].
    pub(crate) async fn call(
        self: &Arc<Self>,
        index: u16,
        request: Request,
        timeout: Duration,
    ) -> Result<Reply, EngineError> {
        let node = self.member(index)?.clone();
        let reply = if index == self.my_index {
            let me = self.me.clone();
            match tokio::time::timeout(timeout, self.handle(&me, request)).await {
                Ok(reply) => reply,
                Err(_) => {
                    return Err(EngineError::Remote {
                        node,
                        error: RemoteError::new("timeout", format!("no answer within {timeout:?}")),
                    });
                }
            }
        } else {
            let body =
                serde_json::to_vec(&request).map_err(|e| EngineError::Transport(e.to_string()))?;
            let peer =
                NodeId::new(node.as_str()).map_err(|e| EngineError::Transport(e.to_string()))?;
            self.ensure_admitted(&node, timeout)
                .await
                .map_err(|e| EngineError::Remote {
                    node: node.clone(),
                    error: e.to_remote(),
                })?;
            let answer = self
                .transport
                .request(&peer, body, timeout)
                .await
                .map_err(|e| EngineError::Remote {
                    node: node.clone(),
                    error: RemoteError::new("unreachable", e.to_string()),
                })?;
            let reply: Reply =
                serde_json::from_slice(&answer).map_err(|e| EngineError::Remote {
                    node: node.clone(),
                    error: RemoteError::new("bad-reply", e.to_string()),
                })?;
            // Whether the peer refuses this node (crate::admission).
            self.note_answer(
                &node,
                match &reply {
                    Reply::Error(e) => Some(e),
                    _ => None,
                },
            );
            reply
        };
        match reply {
            Reply::Error(error) => Err(EngineError::Remote { node, error }),
            other => Ok(other),
        }
    }

    /// Whether member `index` is this node, or connected and admitted.
    pub(crate) fn reachable(&self, index: u16) -> bool {
        if index == self.my_index {
            return true;
        }
        let Some(node) = self.members.get(usize::from(index)) else {
            return false;
        };
        self.transport
            .peer_status()
            .iter()
            .any(|p| p.node.as_str() == node && p.connected)
            && self.is_admitted(node)
    }

    /// Sends the request `make` builds for each of `parties` to all of them at once, and
    /// returns every answer with its party index, in the order given.
    pub(crate) async fn call_all(
        self: &Arc<Self>,
        parties: &[u16],
        timeout: Duration,
        make: impl Fn(u16) -> Request,
    ) -> Vec<(u16, Result<Reply, EngineError>)> {
        let calls = parties.iter().map(|&i| {
            let request = make(i);
            async move { (i, self.call(i, request, timeout).await) }
        });
        futures::future::join_all(calls).await
    }

    /// Every member's status (None where a member did not answer within `timeout`).
    pub(crate) async fn all_statuses(
        self: &Arc<Self>,
        timeout: Duration,
    ) -> Vec<Option<NodeStatus>> {
        self.call_all(&self.all_parties(), timeout, |_| Request::Status)
            .await
            .into_iter()
            .map(|(_, r)| match r {
                Ok(Reply::Status(s)) => Some(s),
                _ => None,
            })
            .collect()
    }

    /// Every party index.
    pub(crate) fn parties(&self) -> Vec<u16> {
        self.all_parties()
    }

    /// Every party index but this node's.
    pub(crate) fn other_parties(&self) -> Vec<u16> {
        self.all_parties()
            .into_iter()
            .filter(|i| *i != self.my_index)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_and_hardened_steps_are_refused() {
        assert_eq!(parse_path("0/17").unwrap().indices(), &[0, 17]);
        assert_eq!(parse_path("m/1/2").unwrap().indices(), &[1, 2]);
        assert!(parse_path("").unwrap().indices().is_empty());
        assert!(parse_path("m").unwrap().indices().is_empty());
        for bad in ["0'/1", "0h", "x/1", "0//1", "2147483648"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }
}
