//! Attestation and admission: a peer takes part in nothing until its evidence passes this
//! node's firmware profile.
//!
//! - **Start-up** ([`Attestation::start`]): the node loads its firmware profile
//!   (`[attestation] profile`), checks its own token against it (accepted `[[token]]`
//!   entries, required mechanisms) and refuses to start naming the field that did not match,
//!   and computes the SHA-256 of its own binary once. With `[attestation.tpm]` it reads its
//!   TPM attestation key and quotes once to check that its TPM answers (a profile with
//!   `tpm.required = true` refuses to start a node without `[attestation.tpm]`), and reports
//!   whether its own quote passes its own profile.
//! - **Evidence** ([`Engine::evidence_reply`]): asked with [`Request::Attestation`], a node
//!   answers with [`strongroom_attest::Evidence`] over its binary digest, profile id, token
//!   identity, node and cluster id, the time, and the TLS exporter value
//!   ([`strongroom_attest::EXPORTER_LABEL`]) of the connection the request arrived on, signed
//!   by its token identity key, with a TPM quote over the boot PCRs whose qualifying data
//!   binds those claims when `[attestation.tpm]` is configured ([`crate::tpm`]). Attestation
//!   requests are answered before the asking peer is admitted: that is how admission starts.
//!   One evidence is produced at a time, and the evidence for a connection is reused for
//!   [`EVIDENCE_REUSE`], so a peer asking again and again costs no more token signatures or
//!   TPM quotes.
//! - **Verification** ([`Engine::attest_peer`]): the asking node derives the exporter value of
//!   the connection it sent on and checks the evidence with [`strongroom_attest::verify`]
//!   against its own profile, the key and node id of the certificate the peer presented on
//!   that connection, and its own clock.
//! - **State** per peer ([`AdmissionState`]): unknown, admitted or refused, always for one
//!   connection (identified by its exporter value): when the connection changes, the peer is
//!   unknown again until its evidence on the new connection passes.
//! - **When**: a background task ([`admission_loop`]) attests every peer soon after it
//!   connects and re-checks every connected peer every `[attestation] recheck_secs`, re-reading
//!   the profile file at each re-check (an edited profile applies without a restart; a profile
//!   that does not load, or that this node's own token does not pass, is refused and the
//!   previous one kept). A request from, or to, a peer that is still unknown runs the exchange
//!   inline first ([`Engine::ensure_admitted`]), so start-up order does not matter.
//! - **Gating**: a peer that is not admitted gets every request but [`Request::Attestation`]
//!   refused (`peer-not-admitted`, naming the field that failed), is not reachable for signer
//!   sets and sessions, and is never sent a request.
//! - **Records**: a change of outcome is logged and appended to the audit log:
//!   `peer_admitted` (peer, profile, binary digest, token) and `peer_refused` (peer, field,
//!   reason). Successful periodic re-checks record nothing.
//! - **Refused by peers** ([`Engine::note_answer`]): a peer answering a request of this node with
//!   `peer-not-admitted` about this node refuses it; any later answer of the peer that is not that
//!   refusal clears it. Every call to a peer ([`Engine::call`]) notes its answer, and a background
//!   task ([`standing_loop`]) asks each connected peer it admits for its status on every new
//!   connection and every `recheck_secs` (every 5 s while the peer refuses it), so a node that
//!   sends its peers nothing else learns it too. A change is logged (error when refused, info when
//!   answered again), not audited, and `GET /v1/cluster` lists the refusals under the node's own
//!   `attestation.refused_by`. A node refused by more than half of its peers is not eligible to
//!   lead ([`eligible_to_lead`]): it resigns the etcd election and does not campaign
//!   ([`strongroom_coord::Coordinator::set_eligible`]) until enough peers answer it again.
//!
//! In dev mode without a profile the node warns at start-up, admits every peer on its
//! certificate alone, and answers attestation requests with an error (so peers that do
//! check refuse it).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use strongroom_attest::{
    CHANNEL_BINDING_LEN, Claims, EXPORTER_LABEL, Evidence, FirmwareProfile, ProfileError,
    SelfCheckError, Sha256Digest, SignError, TokenIdentity, VerifyContext, verify_quote,
};
use strongroom_audit::EventKind;
use strongroom_keystore::Token;
use strongroom_transport::{IncomingRequest, NodeId, Subject};

use crate::config::TpmSection;
use crate::control::{RemoteError, Reply, Request};
use crate::engine::{Engine, lock};
use crate::tpm::{Tpm2Tools, TpmToolsError, hex_handle, quoted_pcrs};

/// Longest an attestation exchange may take (inline, before a request, or in the background).
pub(crate) const ATTEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the background task looks for new connections.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Least time between two attempts at a peer whose exchange failed (not refused).
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long the evidence sent on one connection is sent again to the same question, instead
/// of a new token signature and TPM quote. Well below any profile's `max_age_secs`.
pub const EVIDENCE_REUSE: Duration = Duration::from_secs(5);

/// The node cannot start: its firmware profile or its own token does not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestationStartError {
    /// The profile file cannot be read or is not a valid profile.
    #[error(
        "[attestation] profile {path}: {source}; fix the file (format: firmware-profile/README.md) or point `attestation.profile` at another"
    )]
    Profile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: Box<ProfileError>,
    },
    /// A `dev` profile on a node outside dev mode.
    #[error(
        "[attestation] profile {path}: profile '{id}' has mode \"dev\" but node.dev_mode is false; a production node must run a production profile (e.g. firmware-profile/appliance.toml)"
    )]
    DevProfile {
        /// The file.
        path: PathBuf,
        /// The profile id.
        id: String,
    },
    /// The token's mechanism list cannot be read.
    #[error("cannot list the mechanisms of the token to check them against {path}: {detail}")]
    Mechanisms {
        /// The profile file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The node's own token is outside the profile.
    #[error("[attestation] profile {path}: field `{field}` does not match: {source}")]
    SelfCheck {
        /// The profile file.
        path: PathBuf,
        /// The profile field that did not match, e.g. `token.manufacturer`.
        field: &'static str,
        /// What the token reports and what the profile accepts.
        source: Box<SelfCheckError>,
    },
    /// The node's own binary cannot be read.
    #[error(
        "cannot compute the SHA-256 of this node's own binary for its attestation evidence: {0}"
    )]
    Digest(#[from] strongroom_attest::DigestError),
    /// The profile requires TPM quotes and the node has no `[attestation.tpm]`.
    #[error(
        "[attestation] profile {path}: profile '{id}' requires a TPM quote in every evidence (tpm.required = true) but this node has no [attestation.tpm]: enroll the attestation key (`strongroom tpm enroll`, docs/appliance-install.md step 6) and add [attestation.tpm] with tcti and ak_handle to node.toml"
    )]
    TpmNotConfigured {
        /// The profile file.
        path: PathBuf,
        /// The profile id.
        id: String,
    },
    /// The configured TPM cannot be used.
    #[error("[attestation.tpm]: {0}")]
    Tpm(#[from] TpmToolsError),
}

/// Longest a status request of [`standing_loop`] may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often [`standing_loop`] asks a peer that refuses this node again (at most), so a
/// refusal that ends (a peer that could not check this node's evidence in time, an edited
/// profile) stops counting soon.
const REFUSED_PROBE: Duration = Duration::from_secs(5);

/// A peer is not admitted (yet, or at all).
#[derive(Debug, Clone, thiserror::Error)]
pub enum NotAdmitted {
    /// Its evidence did not pass this node's profile (or it sent none).
    #[error("node {peer} is not admitted: attestation refused, field `{field}`: {reason}")]
    Refused {
        /// The peer.
        peer: String,
        /// The evidence or profile field that failed.
        field: String,
        /// Why.
        reason: String,
    },
    /// No evidence could be obtained (no connection, no answer in time).
    #[error("node {peer} is not admitted: its attestation could not be checked: {detail}")]
    Unverified {
        /// The peer.
        peer: String,
        /// Why.
        detail: String,
    },
}

impl NotAdmitted {
    /// As a reply to a peer or a remote error of a call: a refusal is `peer-not-admitted`, an
    /// exchange that could not complete is `unreachable` (as if the peer were down).
    pub fn to_remote(&self) -> RemoteError {
        match self {
            NotAdmitted::Refused { .. } => RemoteError::new("peer-not-admitted", self.to_string()),
            NotAdmitted::Unverified { .. } => RemoteError::new("unreachable", self.to_string()),
        }
    }

    /// Whether `error`, a peer's answer to a request of node `node`, says that the peer does
    /// not admit `node`: `peer-not-admitted` with the text of a [`NotAdmitted`] about `node`
    /// (a peer passing on a refusal of another node names that node, or itself).
    pub fn is_refusal_of(error: &RemoteError, node: &str) -> bool {
        error.kind == "peer-not-admitted"
            && error
                .detail
                .starts_with(&format!("node {node} is not admitted:"))
    }
}

/// Whether a node refused by `refused` of its peers, in a cluster of `members` nodes, is
/// eligible to lead: unless strictly more than half of the other members refuse it (with
/// three nodes, unless both peers do).
pub fn eligible_to_lead(refused: usize, members: usize) -> bool {
    refused * 2 <= members.saturating_sub(1)
}

/// A peer that refuses this node: it answered a request with `peer-not-admitted`.
#[derive(Debug, Clone)]
struct RefusedBy {
    /// The peer's answer.
    detail: String,
    /// Since when (the first refusing answer).
    since: SystemTime,
}

/// What a verified peer runs, as its evidence said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmittedAs {
    /// Profile id.
    pub profile_id: String,
    /// Binary digest, hex.
    pub binary_sha256: String,
    /// Token manufacturer, model and firmware version.
    pub token: TokenIdentity,
    /// SHA-256 of the TPM attestation key whose quote passed, when the profile requires one.
    pub tpm_ak_sha256: Option<String>,
}

/// Where a peer stands, always for one connection.
#[derive(Debug, Clone)]
pub enum AdmissionState {
    /// Not checked on its current connection (not connected, just connected, or the exchange
    /// failed).
    Unknown {
        /// Why the last attempt failed, if one did.
        last_error: Option<String>,
        /// When it was tried last.
        attempted: Option<Instant>,
    },
    /// Its evidence passed on the connection with this exporter value.
    Admitted {
        /// The connection's exporter value.
        binding: Vec<u8>,
        /// What it runs.
        claims: AdmittedAs,
        /// Admitted on this connection since.
        since: SystemTime,
        /// Last successful check.
        checked_at: SystemTime,
        /// Last successful check (monotonic).
        checked: Instant,
    },
    /// Its evidence failed on the connection with this exporter value.
    Refused {
        /// The connection's exporter value.
        binding: Vec<u8>,
        /// The field that failed.
        field: String,
        /// Why.
        reason: String,
        /// Since.
        since: SystemTime,
        /// When it was checked last.
        checked: Instant,
    },
}

/// What was last appended to the audit log about a peer: a new entry only when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Recorded {
    Admitted {
        profile_id: String,
        binary_sha256: String,
        tpm_ak_sha256: Option<String>,
    },
    Refused {
        field: String,
    },
}

#[derive(Debug)]
struct Peer {
    state: AdmissionState,
    recorded: Option<Recorded>,
    /// One exchange with this peer at a time.
    exchange: Arc<tokio::sync::Mutex<()>>,
}

/// The profile in force.
#[derive(Debug)]
struct LoadedProfile {
    profile: FirmwareProfile,
    /// SHA-256 of the file's bytes, to notice edits.
    file_digest: Sha256Digest,
}

/// Evidence sent on a connection, and when it was produced.
type SentEvidence = (Instant, Arc<Vec<u8>>);

/// This node's TPM (`[attestation.tpm]`): where its attestation key is, and the key.
#[derive(Debug)]
struct NodeTpm {
    tools: Tpm2Tools,
    handle: u32,
    ak_spki_der: Vec<u8>,
    ak_sha256: Sha256Digest,
}

impl NodeTpm {
    /// Reads the attestation key at the configured handle.
    fn open(section: &TpmSection) -> Result<Self, TpmToolsError> {
        let tools = Tpm2Tools::new(section.tcti.clone());
        let ak_spki_der = tools.read_ak(section.ak_handle)?;
        Ok(Self {
            tools,
            handle: section.ak_handle,
            ak_sha256: Sha256Digest::of(&ak_spki_der),
            ak_spki_der,
        })
    }

    /// A quote over `pcrs` with `qualifying` as its qualifying data.
    fn quote(
        &self,
        pcrs: &[u8],
        qualifying: &[u8; 32],
    ) -> Result<strongroom_attest::TpmQuote, TpmToolsError> {
        self.tools
            .quote(self.handle, &self.ak_spki_der, pcrs, qualifying)
    }
}

/// This node's attestation: its profile, what it claims about itself, and its peers' state.
#[derive(Debug)]
pub struct Attestation {
    profile_path: Option<PathBuf>,
    dev_mode: bool,
    profile: Mutex<Option<Arc<LoadedProfile>>>,
    /// A profile file that failed to load at a re-check (its digest), so it is reported once.
    rejected_file: Mutex<Option<Sha256Digest>>,
    binary: Sha256Digest,
    token: TokenIdentity,
    mechanisms: Vec<String>,
    recheck: Duration,
    peers: Mutex<BTreeMap<String, Peer>>,
    tpm: Option<Arc<NodeTpm>>,
    /// Evidence produced per connection (exporter value), reused for [`EVIDENCE_REUSE`].
    sent: Mutex<HashMap<Vec<u8>, SentEvidence>>,
    /// One evidence (token signature, TPM quote) produced at a time.
    producing: tokio::sync::Mutex<()>,
    /// The peers that refuse this node, by node id ([`Engine::note_answer`]).
    refused_by: Mutex<BTreeMap<String, RefusedBy>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads `path` and checks it against this node's token and mode.
fn load_checked(
    path: &Path,
    dev_mode: bool,
    token: &TokenIdentity,
    mechanisms: &[String],
    has_tpm: bool,
) -> Result<LoadedProfile, AttestationStartError> {
    let bytes = std::fs::read(path).map_err(|source| AttestationStartError::Profile {
        path: path.to_owned(),
        source: Box::new(ProfileError::Io {
            path: path.to_owned(),
            source,
        }),
    })?;
    let file_digest = Sha256Digest::of(&bytes);
    let profile =
        FirmwareProfile::from_toml_str(&String::from_utf8_lossy(&bytes)).map_err(|source| {
            AttestationStartError::Profile {
                path: path.to_owned(),
                source: Box::new(source),
            }
        })?;
    if profile.is_dev() && !dev_mode {
        return Err(AttestationStartError::DevProfile {
            path: path.to_owned(),
            id: profile.id.clone(),
        });
    }
    strongroom_attest::self_check(&profile, token, mechanisms).map_err(|source| {
        AttestationStartError::SelfCheck {
            path: path.to_owned(),
            field: source.field(),
            source: Box::new(source),
        }
    })?;
    if profile.tpm.required && !has_tpm {
        return Err(AttestationStartError::TpmNotConfigured {
            path: path.to_owned(),
            id: profile.id.clone(),
        });
    }
    Ok(LoadedProfile {
        profile,
        file_digest,
    })
}

/// Quotes once at start-up: a TPM that cannot quote stops the start (the configuration or the
/// TPM needs fixing); a quote that this node's own profile would refuse is reported, naming
/// what its peers will refuse, and the node starts (an edited profile applies at the next
/// re-check).
fn self_quote(tpm: &NodeTpm, profile: &FirmwareProfile) -> Result<(), AttestationStartError> {
    let pcrs = quoted_pcrs(profile);
    let qualifying: [u8; 32] = rand::random();
    let quote = tpm.quote(&pcrs, &qualifying)?;
    if !profile.tpm.required {
        tracing::info!(
            profile = %profile.id,
            pcrs = ?pcrs,
            "TPM quote works; the profile does not require quotes, so peers do not examine it"
        );
        return Ok(());
    }
    match verify_quote(&quote, &qualifying, &profile.tpm) {
        Ok(()) => tracing::info!(
            profile = %profile.id,
            pcrs = ?pcrs,
            ak_sha256 = %tpm.ak_sha256,
            "this node's TPM quote passes its own firmware profile"
        ),
        Err(e) => tracing::error!(
            profile = %profile.id,
            field = e.field(),
            error = %e,
            ak_sha256 = %tpm.ak_sha256,
            "this node's own TPM quote does not pass its firmware profile: peers running the same profile will refuse it; enroll the attestation key (tpm.enrolled_aks) or check the boot measurements (tpm.pcrs, `strongroom tpm status`)"
        ),
    }
    Ok(())
}

/// Loads the configured firmware profile and checks it fits the node's mode, without the
/// token (`strongroom node check-config`); `None` when none is configured (dev mode).
pub fn check_profile(
    config: &crate::config::Config,
) -> Result<Option<FirmwareProfile>, AttestationStartError> {
    let Some(path) = &config.attestation.profile else {
        return Ok(None);
    };
    let profile = FirmwareProfile::load(path).map_err(|source| AttestationStartError::Profile {
        path: path.clone(),
        source: Box::new(source),
    })?;
    if profile.is_dev() && !config.node.dev_mode {
        return Err(AttestationStartError::DevProfile {
            path: path.clone(),
            id: profile.id,
        });
    }
    if profile.tpm.required && config.attestation.tpm.is_none() {
        return Err(AttestationStartError::TpmNotConfigured {
            path: path.clone(),
            id: profile.id,
        });
    }
    Ok(Some(profile))
}

impl Attestation {
    /// Loads the profile, checks this node's own token against it and computes the digest of
    /// this node's binary. Without a profile (dev mode only; the configuration refuses it
    /// otherwise) peers are admitted on their certificate alone.
    pub fn start(
        profile_path: Option<&Path>,
        dev_mode: bool,
        token: &Token,
        tpm: Option<&TpmSection>,
        recheck: Duration,
        members: &[String],
        me: &str,
    ) -> Result<Self, AttestationStartError> {
        let tpm = match tpm {
            Some(section) => {
                let opened = NodeTpm::open(section)?;
                tracing::info!(
                    tcti = %section.tcti,
                    ak_handle = %hex_handle(section.ak_handle),
                    ak_sha256 = %opened.ak_sha256,
                    "TPM attestation key read; evidence carries a quote over the boot PCRs"
                );
                Some(Arc::new(opened))
            }
            None => None,
        };
        let info = token.info();
        let identity = TokenIdentity {
            manufacturer: info.manufacturer.trim().to_owned(),
            model: info.model.trim().to_owned(),
            firmware_version: info.firmware_version.trim().to_owned(),
        };
        let binary = strongroom_attest::own_binary_sha256()?;
        let (profile, mechanisms) = match profile_path {
            Some(path) => {
                let mechanisms =
                    token
                        .mechanisms()
                        .map_err(|e| AttestationStartError::Mechanisms {
                            path: path.to_owned(),
                            detail: e.to_string(),
                        })?;
                let loaded = load_checked(path, dev_mode, &identity, &mechanisms, tpm.is_some())?;
                if let Some(tpm) = &tpm {
                    self_quote(tpm, &loaded.profile)?;
                }
                tracing::info!(
                    profile = %loaded.profile.id,
                    mode = loaded.profile.mode.as_str(),
                    file = %path.display(),
                    binary_sha256 = %binary,
                    token = %format!("{} {} {}", identity.manufacturer, identity.model, identity.firmware_version),
                    "firmware profile loaded; this node's token passes it"
                );
                if recheck.as_secs() >= loaded.profile.freshness.max_age_secs {
                    tracing::warn!(
                        recheck_secs = recheck.as_secs(),
                        max_age_secs = loaded.profile.freshness.max_age_secs,
                        "[attestation] recheck_secs is not below the profile's freshness.max_age_secs: admissions expire between re-checks; lower recheck_secs"
                    );
                }
                let unfilled = loaded.profile.unfilled_fields();
                if !unfilled.is_empty() {
                    tracing::error!(
                        profile = %loaded.profile.id,
                        fields = %unfilled.join(", "),
                        "the firmware profile is not filled in: no peer will be admitted until these fields are"
                    );
                }
                (Some(Arc::new(loaded)), mechanisms)
            }
            None => {
                tracing::warn!(
                    "DEV MODE WITHOUT A FIRMWARE PROFILE ([attestation] profile unset): peers are \
                     admitted on their certificate alone and this node sends no attestation \
                     evidence; set [attestation] profile (firmware-profile/dev.toml) to check peers"
                );
                (None, Vec::new())
            }
        };
        let peers = members
            .iter()
            .filter(|m| *m != me)
            .map(|m| {
                (
                    m.clone(),
                    Peer {
                        state: AdmissionState::Unknown {
                            last_error: None,
                            attempted: None,
                        },
                        recorded: None,
                        exchange: Arc::new(tokio::sync::Mutex::new(())),
                    },
                )
            })
            .collect();
        Ok(Self {
            profile_path: profile_path.map(Path::to_owned),
            dev_mode,
            profile: Mutex::new(profile),
            rejected_file: Mutex::new(None),
            binary,
            token: identity,
            mechanisms,
            recheck,
            peers: Mutex::new(peers),
            tpm,
            sent: Mutex::new(HashMap::new()),
            producing: tokio::sync::Mutex::new(()),
            refused_by: Mutex::new(BTreeMap::new()),
        })
    }

    /// SHA-256 of this node's own binary (what its evidence claims).
    pub fn binary_sha256(&self) -> Sha256Digest {
        self.binary
    }

    fn current_profile(&self) -> Option<Arc<LoadedProfile>> {
        lock(&self.profile).clone()
    }

    /// Whether peers are checked at all (a profile is configured).
    pub fn checks_peers(&self) -> bool {
        self.profile_path.is_some()
    }

    /// Re-reads the profile file; returns whether a new profile is now in force. A file that
    /// does not load or that this node's token does not pass is reported (once) and ignored.
    fn reload(&self) -> bool {
        let Some(path) = &self.profile_path else {
            return false;
        };
        let Ok(bytes) = std::fs::read(path) else {
            tracing::error!(file = %path.display(), "cannot read the firmware profile; keeping the one loaded");
            return false;
        };
        let digest = Sha256Digest::of(&bytes);
        if self
            .current_profile()
            .is_some_and(|p| p.file_digest == digest)
            || *lock(&self.rejected_file) == Some(digest)
        {
            return false;
        }
        match load_checked(
            path,
            self.dev_mode,
            &self.token,
            &self.mechanisms,
            self.tpm.is_some(),
        ) {
            Ok(loaded) => {
                tracing::info!(profile = %loaded.profile.id, file = %path.display(), "firmware profile changed on disk: reloaded; re-checking every peer");
                *lock(&self.profile) = Some(Arc::new(loaded));
                *lock(&self.rejected_file) = None;
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the edited firmware profile is refused; keeping the one loaded");
                *lock(&self.rejected_file) = Some(digest);
                false
            }
        }
    }

    /// The evidence sent on the connection with exporter value `binding` within
    /// [`EVIDENCE_REUSE`].
    fn recently_sent(&self, binding: &[u8]) -> Option<Arc<Vec<u8>>> {
        lock(&self.sent)
            .get(binding)
            .filter(|(at, _)| at.elapsed() < EVIDENCE_REUSE)
            .map(|(_, evidence)| evidence.clone())
    }

    fn remember_sent(&self, binding: Vec<u8>, evidence: Arc<Vec<u8>>) {
        let mut sent = lock(&self.sent);
        sent.retain(|_, (at, _)| at.elapsed() < EVIDENCE_REUSE);
        sent.insert(binding, (Instant::now(), evidence));
    }

    fn exchange_lock(&self, peer: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        lock(&self.peers).get(peer).map(|p| p.exchange.clone())
    }

    fn state(&self, peer: &str) -> Option<AdmissionState> {
        lock(&self.peers).get(peer).map(|p| p.state.clone())
    }
}

impl Engine {
    /// Whether `peer` may take part: this node itself; any peer when no profile is configured
    /// (dev mode); otherwise a peer admitted on its current connection.
    pub(crate) fn is_admitted(&self, peer: &str) -> bool {
        if peer == self.me || !self.attestation.checks_peers() {
            return true;
        }
        let Some(AdmissionState::Admitted { binding, .. }) = self.attestation.state(peer) else {
            return false;
        };
        self.peer_channel_binding(peer)
            .is_some_and(|b| b == binding)
    }

    /// Notes `peer`'s answer to a request of this node (`error` when it answered with one):
    /// a refusal of this node ([`NotAdmitted::is_refusal_of`]) records that the peer refuses
    /// it, any other answer clears that. A change is logged and updates whether this node is
    /// eligible to lead ([`eligible_to_lead`]).
    pub(crate) fn note_answer(&self, peer: &str, error: Option<&RemoteError>) {
        let refusal = error.filter(|e| NotAdmitted::is_refusal_of(e, &self.me));
        let mut refused_by = lock(&self.attestation.refused_by);
        match (refusal, refused_by.get_mut(peer)) {
            (Some(e), Some(known)) => {
                known.detail.clone_from(&e.detail);
                return;
            }
            (Some(e), None) => {
                tracing::error!(
                    peer,
                    detail = %e.detail,
                    "this peer does not admit this node and refuses its requests (the detail says why): it takes part in nothing the peer runs"
                );
                refused_by.insert(
                    peer.to_owned(),
                    RefusedBy {
                        detail: e.detail.clone(),
                        since: SystemTime::now(),
                    },
                );
            }
            (None, Some(_)) => {
                tracing::info!(
                    peer,
                    "this peer no longer refuses this node: it answers its requests again"
                );
                refused_by.remove(peer);
            }
            (None, None) => return,
        }
        let eligible = eligible_to_lead(refused_by.len(), self.members.len());
        if eligible != self.eligibility.get() {
            if eligible {
                tracing::info!(
                    refused_by = refused_by.len(),
                    "no longer refused by more than half of the peers: eligible to lead again"
                );
            } else {
                tracing::error!(
                    refused_by = ?refused_by.keys().collect::<Vec<_>>(),
                    "refused by more than half of the peers: not eligible to lead (resigning leadership, not campaigning)"
                );
            }
        }
        // Under the lock, so concurrent answers cannot set an outdated value.
        self.eligibility.set(eligible);
    }

    fn peer_channel_binding(&self, peer: &str) -> Option<Vec<u8>> {
        let id = NodeId::new(peer).ok()?;
        self.transport
            .channel_binding(&id, EXPORTER_LABEL, CHANNEL_BINDING_LEN)
    }

    /// Makes sure `peer` is admitted on its current connection: at once when it is, refused
    /// at once when its evidence on this connection was refused, and otherwise after running
    /// the exchange now (bounded by `wait`).
    pub(crate) async fn ensure_admitted(
        &self,
        peer: &str,
        wait: Duration,
    ) -> Result<(), NotAdmitted> {
        if self.is_admitted(peer) {
            return Ok(());
        }
        let current = self.peer_channel_binding(peer);
        if let Some(AdmissionState::Refused {
            binding,
            field,
            reason,
            ..
        }) = self.attestation.state(peer)
        {
            if current.as_ref() == Some(&binding) {
                return Err(NotAdmitted::Refused {
                    peer: peer.to_owned(),
                    field,
                    reason,
                });
            }
        }
        self.attest_peer(peer, wait.min(ATTEST_TIMEOUT), false)
            .await;
        if self.is_admitted(peer) {
            return Ok(());
        }
        match self.attestation.state(peer) {
            Some(AdmissionState::Refused { field, reason, .. }) => Err(NotAdmitted::Refused {
                peer: peer.to_owned(),
                field,
                reason,
            }),
            Some(AdmissionState::Unknown {
                last_error: Some(e),
                ..
            }) => Err(NotAdmitted::Unverified {
                peer: peer.to_owned(),
                detail: e,
            }),
            _ => Err(NotAdmitted::Unverified {
                peer: peer.to_owned(),
                detail: "its connection changed while it was checked".into(),
            }),
        }
    }

    /// Answers [`Request::Attestation`]: this node's evidence, bound to the connection the
    /// request arrived on, signed by the token identity key and, with a TPM, carrying a quote.
    pub(crate) async fn evidence_reply(&self, incoming: &IncomingRequest) -> Reply {
        match self.attestation_evidence(incoming).await {
            Ok(evidence) => Reply::Evidence {
                evidence: hex::encode(evidence.as_slice()),
            },
            Err(e) => {
                tracing::warn!(peer = %incoming.peer, error = %e.detail, "cannot send attestation evidence");
                Reply::Error(e)
            }
        }
    }

    /// The evidence for the connection of `incoming`: the one sent on it within
    /// [`EVIDENCE_REUSE`], or a new one (one at a time).
    async fn attestation_evidence(
        &self,
        incoming: &IncomingRequest,
    ) -> Result<Arc<Vec<u8>>, RemoteError> {
        let Some(profile) = self.attestation.current_profile() else {
            return Err(RemoteError::new(
                "attestation-unavailable",
                format!(
                    "node {} runs without a firmware profile ([attestation] profile unset, dev mode) and sends no evidence",
                    self.me
                ),
            ));
        };
        let binding = incoming
            .channel_binding(EXPORTER_LABEL, CHANNEL_BINDING_LEN)
            .map_err(|e| RemoteError::new("internal", e.to_string()))?;
        if let Some(sent) = self.attestation.recently_sent(&binding) {
            return Ok(sent);
        }
        let _producing = self.attestation.producing.lock().await;
        if let Some(sent) = self.attestation.recently_sent(&binding) {
            return Ok(sent);
        }
        let mut claims = Claims {
            binary_sha256: self.attestation.binary,
            profile_id: profile.profile.id.clone(),
            token: self.attestation.token.clone(),
            node_id: self.me.clone(),
            cluster_id: self.cfg.node.cluster_id.clone(),
            issued_at: unix_now(),
            channel_binding: binding.clone(),
            tpm_quote: None,
        };
        if let Some(tpm) = self.attestation.tpm.clone() {
            let qualifying = claims.tpm_qualifying_data().map_err(|e| {
                RemoteError::new("internal", format!("cannot encode the claims: {e}"))
            })?;
            let pcrs = quoted_pcrs(&profile.profile);
            let quote = tokio::task::spawn_blocking(move || tpm.quote(&pcrs, &qualifying))
                .await
                .map_err(|e| RemoteError::new("internal", format!("the TPM quote task failed: {e}")))?
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot quote with the TPM: peers requiring a quote refuse this node");
                    RemoteError::new("tpm-unavailable", format!("node {} cannot quote: {e}", self.me))
                })?;
            claims.tpm_quote = Some(quote);
        }
        let identity = self.token.identity();
        let signer = move |message: &[u8]| -> Result<[u8; 64], SignError> {
            identity
                .sign(message)
                .map(|s| s.to_bytes())
                .map_err(SignError::signer)
        };
        let evidence = Evidence::sign(claims, &signer)
            .map_err(|e| RemoteError::new("internal", format!("cannot sign the evidence: {e}")))?;
        let bytes = Arc::new(evidence.to_bytes());
        self.attestation.remember_sent(binding, bytes.clone());
        Ok(bytes)
    }

    /// Runs one exchange with `peer` and records the outcome. With `recheck`, also when the
    /// peer is already admitted or refused on its current connection.
    pub(crate) async fn attest_peer(&self, peer: &str, timeout: Duration, recheck: bool) {
        let Some(exchange) = self.attestation.exchange_lock(peer) else {
            return;
        };
        let Ok(_guard) = tokio::time::timeout(timeout, exchange.lock()).await else {
            return;
        };
        // Another task may have settled it while this one waited.
        if !recheck {
            let current = self.peer_channel_binding(peer);
            match self.attestation.state(peer) {
                Some(AdmissionState::Admitted { binding, .. })
                | Some(AdmissionState::Refused { binding, .. })
                    if current.as_ref() == Some(&binding) =>
                {
                    return;
                }
                _ => {}
            }
        }
        let outcome = self.attestation_exchange(peer, timeout).await;
        self.settle_admission(peer, outcome).await;
    }

    /// Asks `peer` for evidence and checks it.
    async fn attestation_exchange(&self, peer: &str, timeout: Duration) -> Outcome {
        let Some(loaded) = self.attestation.current_profile() else {
            return Outcome::Failed("this node has no firmware profile".into());
        };
        let Ok(id) = NodeId::new(peer) else {
            return Outcome::Failed(format!("'{peer}' is not a node id"));
        };
        let body = match serde_json::to_vec(&Request::Attestation) {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let bound = match self
            .transport
            .request_bound(&id, body, timeout, EXPORTER_LABEL, CHANNEL_BINDING_LEN)
            .await
        {
            Ok(b) => b,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let binding = bound.channel_binding.clone();
        let refused = |field: &str, reason: String| Outcome::Refused {
            binding: binding.clone(),
            field: field.to_owned(),
            reason,
        };
        let evidence = match serde_json::from_slice::<Reply>(&bound.answer) {
            Ok(Reply::Evidence { evidence }) => match hex::decode(&evidence) {
                Ok(bytes) => bytes,
                Err(_) => return refused("encoding", "the evidence is not hex".into()),
            },
            Ok(Reply::Error(e)) => {
                return refused("evidence", format!("the peer sent no evidence: {e}"));
            }
            Ok(_) => return refused("evidence", "the peer answered with something else".into()),
            Err(e) => {
                return refused("evidence", format!("the peer's answer does not parse: {e}"));
            }
        };
        let Some(leaf) = bound.peer_certificates.first() else {
            return Outcome::Failed("the connection has no peer certificate".into());
        };
        let spki = match strongroom_transport::pki::public_key_of(leaf) {
            Ok(k) => k,
            Err(e) => return refused("peer_certificate", e.to_string()),
        };
        let cert_node = match strongroom_transport::pki::identity_of(leaf).map(|s| s.subject) {
            Ok(Subject::Node(n)) => n,
            Ok(other) => {
                return refused(
                    "peer_certificate",
                    format!("the certificate names {other:?}, not a node"),
                );
            }
            Err(e) => return refused("peer_certificate", e.to_string()),
        };
        let ctx = VerifyContext {
            peer_spki_der: &spki,
            peer_node_id: cert_node.as_str(),
            cluster_id: &self.cfg.node.cluster_id,
            channel_binding: &binding,
            now: unix_now(),
        };
        match strongroom_attest::verify(&evidence, &loaded.profile, &ctx) {
            Ok(verified) => {
                let c = verified.claims();
                Outcome::Admitted {
                    binding: binding.clone(),
                    claims: AdmittedAs {
                        profile_id: c.profile_id.clone(),
                        binary_sha256: c.binary_sha256.to_hex(),
                        token: c.token.clone(),
                        // The verifier checked the quote only under a profile requiring one.
                        tpm_ak_sha256: c
                            .tpm_quote
                            .as_ref()
                            .filter(|_| loaded.profile.tpm.required)
                            .map(|q| Sha256Digest::of(&q.ak_spki_der).to_hex()),
                    },
                }
            }
            Err(e) => refused(e.field(), e.to_string()),
        }
    }

    /// Stores an outcome, and logs and audits it when it changes what is known of the peer.
    async fn settle_admission(&self, peer: &str, outcome: Outcome) {
        let now = SystemTime::now();
        let current = self.peer_channel_binding(peer);
        let mut record = None;
        {
            let mut peers = lock(&self.attestation.peers);
            let Some(p) = peers.get_mut(peer) else {
                return;
            };
            match outcome {
                Outcome::Failed(error) => {
                    // A failed re-check does not undo a check made on the same connection:
                    // the loop expires admissions older than the profile's max age.
                    let kept = match &p.state {
                        AdmissionState::Admitted { binding, .. }
                        | AdmissionState::Refused { binding, .. } => {
                            current.as_ref() == Some(binding)
                        }
                        AdmissionState::Unknown { .. } => false,
                    };
                    if kept {
                        tracing::info!(peer, error = %error, "attestation re-check failed; the peer keeps its state on this connection");
                    } else {
                        tracing::debug!(peer, error = %error, "attestation exchange failed");
                        p.state = AdmissionState::Unknown {
                            last_error: Some(error),
                            attempted: Some(Instant::now()),
                        };
                    }
                }
                Outcome::Admitted { binding, claims } => {
                    let since = match &p.state {
                        AdmissionState::Admitted {
                            binding: old,
                            since,
                            ..
                        } if *old == binding => *since,
                        _ => {
                            tracing::info!(
                                peer,
                                profile = %claims.profile_id,
                                binary_sha256 = %claims.binary_sha256,
                                token_model = %claims.token.model,
                                "peer admitted: its attestation evidence passes the firmware profile"
                            );
                            now
                        }
                    };
                    let entry = Recorded::Admitted {
                        profile_id: claims.profile_id.clone(),
                        binary_sha256: claims.binary_sha256.clone(),
                        tpm_ak_sha256: claims.tpm_ak_sha256.clone(),
                    };
                    if p.recorded.as_ref() != Some(&entry) {
                        p.recorded = Some(entry);
                        let mut event = self
                            .event(EventKind::PeerAdmitted)
                            .field("peer", peer)
                            .field("check", "attestation")
                            .field("profile_id", claims.profile_id.as_str())
                            .field("binary_sha256", claims.binary_sha256.as_str())
                            .field("token_manufacturer", claims.token.manufacturer.as_str())
                            .field("token_model", claims.token.model.as_str())
                            .field(
                                "token_firmware_version",
                                claims.token.firmware_version.as_str(),
                            );
                        if let Some(ak) = &claims.tpm_ak_sha256 {
                            event = event.field("tpm_ak_sha256", ak.as_str());
                        }
                        record = Some(event);
                    }
                    p.state = AdmissionState::Admitted {
                        binding,
                        claims,
                        since,
                        checked_at: now,
                        checked: Instant::now(),
                    };
                }
                Outcome::Refused {
                    binding,
                    field,
                    reason,
                } => {
                    let since = match &p.state {
                        AdmissionState::Refused {
                            binding: old,
                            field: old_field,
                            since,
                            ..
                        } if *old == binding && *old_field == field => *since,
                        _ => {
                            tracing::warn!(
                                peer,
                                field = %field,
                                reason = %reason,
                                "peer refused: its attestation evidence does not pass the firmware profile; it takes part in nothing"
                            );
                            now
                        }
                    };
                    let entry = Recorded::Refused {
                        field: field.clone(),
                    };
                    if p.recorded.as_ref() != Some(&entry) {
                        p.recorded = Some(entry);
                        record = Some(
                            self.event(EventKind::PeerRefused)
                                .field("peer", peer)
                                .field("check", "attestation")
                                .field("field", field.as_str())
                                .field("reason", reason.as_str()),
                        );
                    }
                    p.state = AdmissionState::Refused {
                        binding,
                        field,
                        reason,
                        since,
                        checked: Instant::now(),
                    };
                }
            }
        }
        if let Some(event) = record {
            self.record(event).await;
        }
    }

    /// Each peer's admission, for `GET /v1/cluster`.
    pub(crate) fn admission_json(&self, peer: &str) -> Value {
        if peer == self.me {
            return json!({"state": "self"});
        }
        if !self.attestation.checks_peers() {
            return json!({"state": "certificate-only", "detail": "no firmware profile configured (dev mode): admitted on the certificate alone"});
        }
        let connected = self.peer_channel_binding(peer);
        match self.attestation.state(peer) {
            Some(AdmissionState::Admitted {
                binding,
                claims,
                since,
                checked_at,
                ..
            }) if connected.as_ref() == Some(&binding) => json!({
                "state": "admitted",
                "since_unix": unix_secs(since),
                "checked_unix": unix_secs(checked_at),
                "profile_id": claims.profile_id,
                "binary_sha256": claims.binary_sha256,
                "token": {
                    "manufacturer": claims.token.manufacturer,
                    "model": claims.token.model,
                    "firmware_version": claims.token.firmware_version,
                },
                "tpm_ak_sha256": claims.tpm_ak_sha256,
            }),
            Some(AdmissionState::Refused {
                binding,
                field,
                reason,
                since,
                ..
            }) if connected.as_ref() == Some(&binding) => json!({
                "state": "refused",
                "since_unix": unix_secs(since),
                "field": field,
                "reason": reason,
            }),
            Some(AdmissionState::Unknown { last_error, .. }) => {
                json!({"state": "unknown", "last_error": last_error})
            }
            _ => json!({"state": "unknown", "last_error": null}),
        }
    }

    /// This node's own attestation facts, for `GET /v1/cluster`.
    pub(crate) fn attestation_json(&self) -> Value {
        let profile = self.attestation.current_profile();
        json!({
            "profile_file": self.attestation.profile_path,
            "profile_id": profile.as_ref().map(|p| p.profile.id.clone()),
            "profile_mode": profile.as_ref().map(|p| p.profile.mode.as_str()),
            "binary_sha256": self.attestation.binary.to_hex(),
            "token": {
                "manufacturer": self.attestation.token.manufacturer,
                "model": self.attestation.token.model,
                "firmware_version": self.attestation.token.firmware_version,
            },
            "recheck_secs": self.attestation.recheck.as_secs(),
            "refused_by": lock(&self.attestation.refused_by)
                .iter()
                .map(|(peer, r)| json!({
                    "peer": peer,
                    "detail": r.detail,
                    "since_unix": unix_secs(r.since),
                }))
                .collect::<Vec<_>>(),
            "tpm": self.attestation.tpm.as_ref().map(|t| json!({
                "tcti": t.tools.tcti(),
                "ak_handle": hex_handle(t.handle),
                "ak_sha256": t.ak_sha256.to_hex(),
                "pcrs": profile.as_ref().map(|p| quoted_pcrs(&p.profile)),
            })),
        })
    }
}

/// The result of one exchange.
#[derive(Debug)]
enum Outcome {
    /// No evidence could be obtained (transport).
    Failed(String),
    Admitted {
        binding: Vec<u8>,
        claims: AdmittedAs,
    },
    Refused {
        binding: Vec<u8>,
        field: String,
        reason: String,
    },
}

/// Attests every peer soon after it connects (and whenever its connection changes), re-checks
/// every connected peer every `[attestation] recheck_secs` after re-reading the profile file,
/// and expires admissions whose last check is older than the profile's `max_age_secs`.
pub(crate) async fn admission_loop(engine: Arc<Engine>) {
    if !engine.attestation.checks_peers() {
        return;
    }
    let recheck = engine.attestation.recheck;
    let mut last_round = Instant::now();
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let due = last_round.elapsed() >= recheck;
        let changed = due && engine.attestation.reload();
        if due {
            last_round = Instant::now();
        }
        let max_age = engine
            .attestation
            .current_profile()
            .map_or(Duration::from_secs(300), |p| {
                Duration::from_secs(p.profile.freshness.max_age_secs)
            });
        let peers: Vec<String> = lock(&engine.attestation.peers).keys().cloned().collect();
        for peer in peers {
            let current = engine.peer_channel_binding(&peer);
            let Some(state) = engine.attestation.state(&peer) else {
                continue;
            };
            let needed = match (&state, &current) {
                (_, None) => false,
                (AdmissionState::Unknown { attempted, .. }, Some(_)) => {
                    due || attempted.is_none_or(|at| at.elapsed() >= RETRY_AFTER)
                }
                (AdmissionState::Admitted { binding, .. }, Some(c))
                | (AdmissionState::Refused { binding, .. }, Some(c))
                    if binding != c =>
                {
                    true
                }
                _ => due || changed,
            };
            if let AdmissionState::Admitted { checked, .. } = &state {
                // (A disconnected peer is not admitted anyway: its binding is gone.)
                if current.is_some() && checked.elapsed() > max_age {
                    tracing::warn!(
                        peer,
                        "the peer's last passing evidence is older than the profile's max_age_secs: not admitted until it is checked again"
                    );
                    if let Some(p) = lock(&engine.attestation.peers).get_mut(&peer) {
                        p.state = AdmissionState::Unknown {
                            last_error: Some("evidence expired".into()),
                            attempted: None,
                        };
                    }
                }
            }
            if !needed {
                continue;
            }
            // One exchange per peer at a time; a peer being checked is skipped this round.
            let Some(exchange) = engine.attestation.exchange_lock(&peer) else {
                continue;
            };
            if exchange.try_lock().is_err() {
                continue;
            }
            let engine = engine.clone();
            let force = due || changed;
            tokio::spawn(async move {
                engine.attest_peer(&peer, ATTEST_TIMEOUT, force).await;
            });
        }
    }
}

/// Asks each connected peer this node admits for its status on every new connection and then
/// every `[attestation] recheck_secs` (every [`REFUSED_PROBE`] at most while the peer refuses
/// this node), so this node learns whether its peers refuse it, and when they admit it again,
/// even while it sends them nothing else ([`Engine::call`] notes every answer). Runs with or
/// without a firmware profile: peers check this node either way.
pub(crate) async fn standing_loop(engine: Arc<Engine>) {
    let recheck = engine.attestation.recheck;
    // Per peer: the connection (exporter value) asked on last, and when.
    let mut asked: HashMap<u16, (Option<Vec<u8>>, Instant)> = HashMap::new();
    loop {
        tokio::time::sleep(WATCH_INTERVAL).await;
        let mut due = Vec::new();
        for index in engine.other_parties() {
            if !engine.reachable(index) {
                continue;
            }
            let Ok(peer) = engine.member(index) else {
                continue;
            };
            let binding = engine.peer_channel_binding(peer);
            let every = if lock(&engine.attestation.refused_by).contains_key(peer) {
                recheck.min(REFUSED_PROBE)
            } else {
                recheck
            };
            let ask = asked
                .get(&index)
                .is_none_or(|(on, at)| *on != binding || at.elapsed() >= every);
            if ask {
                asked.insert(index, (binding, Instant::now()));
                due.push(index);
            }
        }
        let calls = due.into_iter().map(|index| {
            let engine = engine.clone();
            async move {
                if let Err(e) = engine.call(index, Request::Status, PROBE_TIMEOUT).await {
                    tracing::debug!(party = index, error = %e, "status request to a peer failed");
                }
            }
        });
        futures::future::join_all(calls).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = include_str!("../../../firmware-profile/dev.toml");

    fn softhsm() -> TokenIdentity {
        TokenIdentity {
            manufacturer: "SoftHSM project".into(),
            model: "SoftHSM v2".into(),
            firmware_version: "2.6".into(),
        }
    }

    fn mechanisms() -> Vec<String> {
        [
            "CKM_AES_GCM",
            "CKM_AES_KEY_GEN",
            "CKM_ECDSA",
            "CKM_EC_KEY_PAIR_GEN",
        ]
        .map(String::from)
        .to_vec()
    }

    /// A fresh directory for one test (removed when it passes).
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "strongroom-admission-{name}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("profile.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_dev_profile_passes_softhsm_in_dev_mode_only() {
        let dir = Dir::new("dev");
        let path = write(dir.path(), DEV);
        let loaded = load_checked(&path, true, &softhsm(), &mechanisms(), false).unwrap();
        assert_eq!(loaded.profile.id, "strongroom-dev");
        let err = load_checked(&path, false, &softhsm(), &mechanisms(), false).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("node.dev_mode") && text.contains("strongroom-dev"),
            "{text}"
        );
    }

    #[test]
    fn a_profile_requiring_tpm_quotes_needs_attestation_tpm() {
        let dir = Dir::new("tpm");
        let text = DEV.replace(
            "[tpm]\nrequired = false",
            "[tpm]\nrequired = true\nenrolled_aks = []\n[tpm.pcrs]\n7 = \"\"",
        );
        assert_ne!(text, DEV);
        let path = write(dir.path(), &text);
        let err = load_checked(&path, true, &softhsm(), &mechanisms(), false).unwrap_err();
        assert!(
            matches!(err, AttestationStartError::TpmNotConfigured { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("[attestation.tpm]") && text.contains("strongroom tpm enroll"),
            "{text}"
        );
        load_checked(&path, true, &softhsm(), &mechanisms(), true).unwrap();
    }

    #[test]
    fn a_token_or_mechanism_outside_the_profile_names_the_field_and_the_file() {
        let dir = Dir::new("mismatch");
        let path = write(dir.path(), DEV);
        let mut token = softhsm();
        token.model = "SoftHSM v3".into();
        let err = load_checked(&path, true, &token, &mechanisms(), false).unwrap_err();
        let text = err.to_string();
        assert!(matches!(
            err,
            AttestationStartError::SelfCheck {
                field: "token.model",
                ..
            }
        ));
        assert!(
            text.contains("token.model") && text.contains("SoftHSM v3"),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");

        let err = load_checked(&path, true, &softhsm(), &mechanisms()[1..], false).unwrap_err();
        assert!(
            matches!(
                err,
                AttestationStartError::SelfCheck {
                    field: "mechanisms.required",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("CKM_AES_GCM"), "{err}");

        let missing = dir.path().join("missing.toml");
        let err = load_checked(&missing, true, &softhsm(), &mechanisms(), false).unwrap_err();
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn a_refusal_is_peer_not_admitted_and_a_failed_exchange_unreachable() {
        let refused = NotAdmitted::Refused {
            peer: "node-3".into(),
            field: "binary_sha256".into(),
            reason: "not allowed".into(),
        };
        let remote = refused.to_remote();
        assert_eq!(remote.kind, "peer-not-admitted");
        assert!(remote.detail.contains("binary_sha256") && remote.detail.contains("node-3"));
        let failed = NotAdmitted::Unverified {
            peer: "node-3".into(),
            detail: "timeout".into(),
        };
        assert_eq!(failed.to_remote().kind, "unreachable");
    }

    #[test]
    fn a_refusal_of_this_node_is_told_from_other_answers() {
        let refused = NotAdmitted::Refused {
            peer: "node-3".into(),
            field: "binary_sha256".into(),
            reason: "not allowed".into(),
        };
        let unverified = NotAdmitted::Unverified {
            peer: "node-3".into(),
            detail: "timeout".into(),
        };
        // What a peer's request loop answers a node it does not admit.
        for e in [&refused, &unverified] {
            let answer = RemoteError::new("peer-not-admitted", e.to_string());
            assert!(NotAdmitted::is_refusal_of(&answer, "node-3"), "{e}");
            assert!(!NotAdmitted::is_refusal_of(&answer, "node-30"), "{e}");
            assert!(!NotAdmitted::is_refusal_of(&answer, "node-1"), "{e}");
        }
        assert!(NotAdmitted::is_refusal_of(&refused.to_remote(), "node-3"));
        // Another kind, or a refusal of another node passed on, is no refusal of this node.
        let other = RemoteError::new("unreachable", refused.to_string());
        assert!(!NotAdmitted::is_refusal_of(&other, "node-3"));
        let passed_on = RemoteError::new(
            "peer-not-admitted",
            format!(
                "node node-2: {}",
                NotAdmitted::Refused {
                    peer: "node-1".into(),
                    field: "binary_sha256".into(),
                    reason: "not allowed".into(),
                }
            ),
        );
        assert!(!NotAdmitted::is_refusal_of(&passed_on, "node-1"));
        assert!(!NotAdmitted::is_refusal_of(&passed_on, "node-3"));
    }

    #[test]
    fn a_node_refused_by_more_than_half_of_its_peers_may_not_lead() {
        // Three nodes: refused by both peers.
        assert!(eligible_to_lead(0, 3));
        assert!(eligible_to_lead(1, 3));
        assert!(!eligible_to_lead(2, 3));
        // Five nodes: by three of the four peers.
        assert!(eligible_to_lead(2, 5));
        assert!(!eligible_to_lead(3, 5));
        // Two nodes: by its one peer; a single node always may.
        assert!(!eligible_to_lead(1, 2));
        assert!(eligible_to_lead(0, 1));
    }
}
