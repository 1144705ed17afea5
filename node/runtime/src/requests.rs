//! Policy-gated signing requests: from a client's PSBT to a signed PSBT.
//!
//! 1. **Intake.** The node that receives `POST /v1/sign-requests` checks the PSBT
//!    ([`strongroom_bitcoin::intake_base64`]); bad input is refused there with a problem naming
//!    the input or field, before anything is stored or reserved. The request id is derived
//!    from the request digest, so every node names the same request the same way and a
//!    resubmission finds the existing request.
//! 2. **Votes.** That node (the coordinator) sends the PSBT to every member
//!    ([`Request::Propose`]). Each checks the PSBT itself, stores the request, evaluates it
//!    against its own policy and answers with a vote signed by its token identity key. The
//!    coordinator relays every vote to every member ([`Request::Votes`]); each verifies each
//!    vote against the voter's certificate (as its own transport handshake accepted it), stores
//!    it, and settles its own view of the request: `approved` with `t` allowing votes,
//!    `awaiting_approvals` while enough nodes wait for approvals, `rejected` when too few can
//!    still allow.
//! 3. **Approvals.** An approval is verified by the node that receives it and by every member
//!    against its own policy ([`Request::Approve`]); each member then casts a new vote if its
//!    `needs_approvals` vote changed.
//! 4. **Signing.** A node that voted to allow coordinates (a node that did not hands the
//!    request to one that did, [`Request::SignApproved`]). Signers are chosen among the nodes
//!    that voted to allow and share a presignature pool. Every signer computes each sighash
//!    from its own stored copy of the PSBT and checks its own vote before it reserves a
//!    presignature or releases a partial signature ([`Engine::message_for`]). The coordinator
//!    inserts the signatures, finalizes, stores the result and sends the signatures to every
//!    member ([`Request::Finished`]), which verify them against their own sighashes.
//! 5. **Resumption.** The leader resumes requests that stalled (a coordinator died): voting
//!    again where votes are missing and signing approved requests.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use serde_json::{Value, json};
use strongroom_bitcoin::bitcoin::secp256k1::ecdsa::Signature as EcdsaSig;
use strongroom_bitcoin::{ClusterKey, IntakeOptions, SignRequest, intake_base64};
use strongroom_mpc::hd::DerivationPath;
use strongroom_policies::{Context, Decision, Initiator, Policy, TxOutput, TxSummary, WindowEntry};
use strongroom_store::{NewSignRequest, NewVote, OPEN_STATES, SignRequestRecord};
use strongroom_transport::NodeId;
use tokio::sync::Mutex as AsyncMutex;
use tokio::sync::{Semaphore, broadcast};

use crate::control::{Reply, Request, SignTarget};
use crate::engine::{Engine, EngineError, hex32, lock, random_id};
use crate::lifecycle::{
    self, CountedVote, Ending, OwnView, PeerFailed, ReleaseVerdict, RequestState, Tally,
};
use crate::votes::{Expected, SignedVote, Vote, VoteDecision};

/// States after which nothing changes (a `failed` or `expired` request still completes when
/// signatures that verify arrive).
pub const FINAL_STATES: [&str; 5] = ["signed", "rejected", "failed", "expired", "cancelled"];

/// States from which a request can be cancelled (not yet being signed).
const CANCELLABLE: &[&str] = &["voting", "awaiting_approvals", "approved"];

/// How long a request may sit in `voting` or `approved` before the leader resumes it.
const RESUME_AFTER: Duration = Duration::from_secs(15);

/// Parsed requests kept in memory (they are re-parsed from the database when evicted).
const PARSED_CACHE: usize = 2048;

/// The request id for a request digest: its first 16 bytes, hex.
pub fn request_id_of(digest: &[u8; 32]) -> String {
    hex::encode(&digest[..16])
}

/// What a node keeps for the request flow.
pub(crate) struct RequestsState {
    /// This node's policy (`None`: deny everything).
    pub(crate) policy: Option<Arc<Policy>>,
    /// This node's certificate (its own votes verify against it).
    own_cert: CertificateDer<'static>,
    /// The certificate each peer's latest connection presented (its transport handshake
    /// accepted it): used for its votes only while it is not connected.
    peer_certs: std::sync::Mutex<HashMap<String, CertificateDer<'static>>>,
    /// Parsed PSBTs by request id.
    parsed: std::sync::Mutex<HashMap<String, Arc<SignRequest>>>,
    /// Per key: held while this node evaluates a request of the key and records its vote, so
    /// concurrent requests are counted against each other.
    key_locks: KeyLocks,
    /// Per key: held while this node (as the cluster's sequencer, normally the leader) collects
    /// the votes on one request of the key, so every node evaluates the key's requests in the
    /// same order.
    sequencer: KeyLocks,
    /// Request ids whose state changed (for long polls).
    pub(crate) changed: broadcast::Sender<String>,
    /// Requests this node coordinates at once.
    pub(crate) in_flight: Arc<Semaphore>,
}

impl RequestsState {
    pub(crate) fn new(
        policy: Option<Policy>,
        own_cert: CertificateDer<'static>,
        max_in_flight: usize,
    ) -> Self {
        Self {
            policy: policy.map(Arc::new),
            own_cert,
            peer_certs: std::sync::Mutex::new(HashMap::new()),
            parsed: std::sync::Mutex::new(HashMap::new()),
            key_locks: KeyLocks::default(),
            sequencer: KeyLocks::default(),
            changed: broadcast::channel(1024).0,
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
    }
}

/// One async lock per key id.
#[derive(Default)]
struct KeyLocks(std::sync::Mutex<HashMap<String, Arc<AsyncMutex<()>>>>);

impl KeyLocks {
    async fn acquire(&self, key_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = lock(&self.0).entry(key_id.to_owned()).or_default().clone();
        lock.lock_owned().await
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A stored request as the lifecycle decisions see it.
pub(crate) fn own_view(record: &SignRequestRecord) -> Result<OwnView, EngineError> {
    let state = RequestState::parse(&record.state).ok_or_else(|| {
        EngineError::refused(
            "internal",
            format!("stored request has an unknown state {:?}", record.state),
        )
    })?;
    Ok(OwnView {
        state,
        allowed_at: record.allowed_at,
        released: record.released_at.is_some(),
        expires_at: record.expires_at,
    })
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The summary the API shows and the database keeps (`spend_sat` feeds the rolling window).
pub fn summary_json(req: &SignRequest) -> Value {
    let a = req.analysis();
    json!({
        "txid": a.txid.to_string(),
        "network": a.network.to_string(),
        "inputs": a.inputs.iter().map(|i| json!({
            "index": i.index,
            "previous_output": i.previous_output.to_string(),
            "amount_sat": i.amount_sat,
            "ours": i.is_ours(),
            "path": match &i.owner {
                strongroom_bitcoin::InputOwner::Ours { path, .. } => Some(path.to_string()),
                strongroom_bitcoin::InputOwner::Foreign { .. } => None,
            },
        })).collect::<Vec<_>>(),
        "outputs": a.outputs.iter().map(|o| json!({
            "index": o.index,
            "address": o.address,
            "amount_sat": o.amount_sat,
            "is_change": o.is_change,
        })).collect::<Vec<_>>(),
        "total_in_sat": a.total_in_sat,
        "total_out_sat": a.total_out_sat,
        "spend_sat": a.spend_sat(),
        "fee_sat": a.fee_sat,
        "vsize": a.vsize,
        "weight": a.weight,
        "fee_rate_sat_per_vb": a.fee_rate_sat_per_vb,
        "all_inputs_ours": a.all_inputs_ours(),
    })
}

/// What the policy sees: the transaction, and the key by its id and by the name this node's
/// own record gives it (policies name keys by either).
fn tx_summary(req: &SignRequest, key_name: &str) -> TxSummary {
    let a = req.analysis();
    TxSummary {
        key_id: a.key_id.clone(),
        key_name: key_name.to_owned(),
        input_count: u32::try_from(a.inputs.len()).unwrap_or(u32::MAX),
        total_input_sat: a.total_in_sat,
        outputs: a
            .outputs
            .iter()
            .map(|o| TxOutput {
                address: o.address.clone(),
                amount_sat: o.amount_sat,
                is_change: o.is_change,
            })
            .collect(),
        fee_sat: a.fee_sat,
        vsize: a.vsize,
    }
}

/// Which certificate a peer's votes verify against, given the one its current connection
/// presented (`connected`, accepted by the transport's handshake) and the one remembered from
/// its latest connection.
///
/// A connected peer's certificate wins and replaces the remembered one, so a peer that was
/// issued a new certificate (a new key) is held to it from its first connection on, and its
/// old key stops verifying votes. Without a connection, the remembered certificate is used
/// while `still_valid` says it is (its validity period has not ended); none is used otherwise.
fn vote_certificate<C: Clone + PartialEq>(
    remembered: &mut HashMap<String, C>,
    node: &str,
    connected: Option<C>,
    still_valid: impl Fn(&C) -> bool,
) -> Option<C> {
    match connected {
        Some(cert) => {
            if remembered.get(node) != Some(&cert) {
                remembered.insert(node.to_owned(), cert.clone());
            }
            Some(cert)
        }
        None => remembered.get(node).filter(|c| still_valid(c)).cloned(),
    }
}

fn decision_of(d: &Decision) -> VoteDecision {
    match d {
        Decision::Allow { .. } => VoteDecision::Allow,
        Decision::Deny { .. } => VoteDecision::Deny,
        Decision::NeedsApprovals { .. } => VoteDecision::NeedsApprovals,
    }
}

/// A bitcoin derivation path as the protocol library's.
fn mpc_path(
    path: &strongroom_bitcoin::bitcoin::bip32::DerivationPath,
) -> Result<DerivationPath, EngineError> {
    let indices: Vec<u32> = path.into_iter().map(|c| u32::from(*c)).collect();
    DerivationPath::new(indices).map_err(|e| EngineError::refused("invalid-path", e.to_string()))
}

impl Engine {
    fn policy(&self) -> Option<&Arc<Policy>> {
        self.requests.policy.as_ref()
    }

    /// The cluster key of a ready key.
    pub(crate) async fn cluster_key(&self, key_id: &str) -> Result<ClusterKey, EngineError> {
        let info = self.public_info(key_id).await?;
        ClusterKey::new(self.network, &info.public_key, info.chain_code)
            .map_err(|e| EngineError::refused("internal", e.to_string()))
    }

    /// Checks a PSBT for a key (400-worthy errors as `invalid-psbt`).
    pub(crate) async fn intake(
        &self,
        key_id: &str,
        psbt: &str,
    ) -> Result<SignRequest, IntakeFailure> {
        let key = self
            .cluster_key(key_id)
            .await
            .map_err(IntakeFailure::Engine)?;
        intake_base64(psbt, &key, key_id, &IntakeOptions::default()).map_err(IntakeFailure::Psbt)
    }

    /// The parsed request `request_id` from this node's own database.
    async fn parsed_request(
        &self,
        request_id: &str,
    ) -> Result<(SignRequestRecord, Arc<SignRequest>), EngineError> {
        let record = self.store.sign_request(request_id).await?.ok_or_else(|| {
            EngineError::refused(
                "unknown-request",
                format!("node {} has no signing request {request_id}", self.me),
            )
        })?;
        if let Some(parsed) = lock(&self.requests.parsed).get(request_id) {
            return Ok((record, parsed.clone()));
        }
        let parsed = match self.intake(&record.key_id, &record.psbt).await {
            Ok(p) => Arc::new(p),
            Err(IntakeFailure::Engine(e)) => return Err(e),
            Err(IntakeFailure::Psbt(e)) => {
                return Err(EngineError::refused(
                    "internal",
                    format!("stored request {request_id} no longer passes intake: {e}"),
                ));
            }
        };
        if parsed.digest().to_bytes().as_slice() != record.digest.as_slice() {
            return Err(EngineError::refused(
                "internal",
                format!("stored request {request_id} does not match its digest"),
            ));
        }
        self.cache_parsed(request_id, parsed.clone());
        Ok((record, parsed))
    }

    fn cache_parsed(&self, request_id: &str, parsed: Arc<SignRequest>) {
        let mut cache = lock(&self.requests.parsed);
        if cache.len() >= PARSED_CACHE {
            cache.clear();
        }
        cache.insert(request_id.to_owned(), parsed);
    }

    fn notify(&self, request_id: &str) {
        let _ = self.requests.changed.send(request_id.to_owned());
    }

    /// The message a signer signs for `target`: for a signing request, this node's own
    /// sighash of input `input_index`, and only if this node may take part in signing it now
    /// ([`lifecycle::release_verdict`]: the request is open and before its deadline here, and
    /// this node's vote allowed it within `signing.vote_valid_secs`, or its policy allows it
    /// again now). With the message comes the oldest allowing vote still valid, which the
    /// store checks again in the transaction that releases the partial.
    pub(crate) async fn message_for(
        &self,
        request_id: &str,
        key_id: &str,
        target: &SignTarget,
    ) -> Result<(DerivationPath, [u8; 32], Option<SystemTime>), EngineError> {
        match target {
            SignTarget::Digest { path, digest } => {
                self.require_raw_digests()?;
                Ok((
                    crate::engine::parse_path(path)?,
                    hex32(digest, "digest")?,
                    None,
                ))
            }
            SignTarget::Input { input_index } => {
                let (record, parsed) = self.parsed_request(request_id).await?;
                let allowed_since = self.may_release(&record, &parsed).await?;
                if parsed.analysis().key_id != key_id {
                    return Err(EngineError::refused(
                        "bad-request",
                        format!(
                            "request {request_id} is for key {}, not {key_id}",
                            parsed.analysis().key_id
                        ),
                    ));
                }
                let index = usize::try_from(*input_index).unwrap_or(usize::MAX);
                let input = parsed
                    .inputs_to_sign()
                    .iter()
                    .find(|i| i.input_index == index)
                    .ok_or_else(|| {
                        EngineError::refused(
                            "bad-request",
                            format!(
                                "input {input_index} of request {request_id} is not ours to sign"
                            ),
                        )
                    })?;
                Ok((
                    mpc_path(&input.path)?,
                    *input.message().as_ref(),
                    Some(allowed_since),
                ))
            }
        }
    }

    /// Whether this node may take part in signing `record` now; evaluates its policy again
    /// when its vote to allow has expired (renewing the vote if the policy still allows).
    async fn may_release(
        &self,
        record: &SignRequestRecord,
        parsed: &SignRequest,
    ) -> Result<SystemTime, EngineError> {
        let vote_valid = Duration::from_secs(self.cfg.signing.vote_valid_secs);
        let refuse = |reason: String| {
            EngineError::refused(
                "refused",
                format!(
                    "node {} takes no part in signing request {}: {reason}",
                    self.me, record.request_id
                ),
            )
        };
        match lifecycle::release_verdict(&own_view(record)?, SystemTime::now(), vote_valid) {
            ReleaseVerdict::Release { allowed_since } => Ok(allowed_since),
            ReleaseVerdict::Refuse(reason) => Err(refuse(reason)),
            ReleaseVerdict::EvaluateAgain => {
                let _key = self.requests.key_locks.acquire(&record.key_id).await;
                let now = SystemTime::now();
                let digest = parsed.digest().to_bytes();
                let (decision, _) = self
                    .evaluate(record, parsed, digest, false, Some(&record.request_id), now)
                    .await?;
                match lifecycle::after_evaluating_again(&decision, now, vote_valid) {
                    ReleaseVerdict::Release { allowed_since } => {
                        if !self.store.renew_allowed(&record.request_id, now).await? {
                            return Err(refuse("the request is no longer open here".into()));
                        }
                        tracing::info!(request_id = %record.request_id, %decision, "vote to allow expired; the policy still allows: renewed");
                        Ok(allowed_since)
                    }
                    ReleaseVerdict::Refuse(reason) => {
                        tracing::warn!(request_id = %record.request_id, %decision, "vote to allow expired and the policy no longer allows");
                        Err(refuse(reason))
                    }
                    ReleaseVerdict::EvaluateAgain => {
                        Err(refuse("its policy could not be evaluated again".into()))
                    }
                }
            }
        }
    }

    /// The certificate `node`'s votes verify against (this node's own for itself): the one its
    /// current connection presented, else the one its latest connection did (see
    /// [`vote_certificate`]).
    fn certificate_of(&self, node: &str) -> Option<CertificateDer<'static>> {
        if node == self.me {
            return Some(self.requests.own_cert.clone());
        }
        let connected = NodeId::new(node)
            .ok()
            .and_then(|id| self.transport.connection(&id))
            .and_then(|conn| conn.peer_identity())
            .and_then(|identity| identity.downcast::<Vec<CertificateDer<'static>>>().ok())
            .and_then(|chain| chain.first().cloned());
        let now = SystemTime::now();
        vote_certificate(
            &mut lock(&self.requests.peer_certs),
            node,
            connected,
            |cert| strongroom_transport::pki::not_after_of(cert).is_ok_and(|end| now <= end),
        )
    }

    /// Verifies a vote against its voter's certificate and this node's copy of the request.
    pub(crate) fn check_vote<'v>(
        &self,
        vote: &'v SignedVote,
        request_id: &str,
        digest: [u8; 32],
    ) -> Result<&'v Vote, EngineError> {
        let claimed = &vote.unverified_vote().node_id;
        if !self.members.contains(claimed) {
            return Err(EngineError::refused(
                "bad-vote",
                format!("a vote claims node '{claimed}', which is not a member"),
            ));
        }
        let cert = self.certificate_of(claimed).ok_or_else(|| {
            EngineError::refused(
                "bad-vote",
                format!("no certificate of node {claimed} is known yet (not connected)"),
            )
        })?;
        vote.verify(&Expected {
            cluster_id: &self.cfg.node.cluster_id,
            request_id,
            request_digest: digest,
            certificate: &cert,
        })
        .map_err(|e| EngineError::refused("bad-vote", e.to_string()))
    }

    // ---- participant side --------------------------------------------------------------------

    /// [`Request::Propose`]: check, store, evaluate, vote.
    pub(crate) async fn propose(
        &self,
        request_id: &str,
        key_id: &str,
        psbt: &str,
        memo: Option<&str>,
        submitter: &str,
    ) -> Result<SignedVote, EngineError> {
        let parsed = match self.intake(key_id, psbt).await {
            Ok(p) => Arc::new(p),
            Err(IntakeFailure::Engine(e)) => return Err(e),
            Err(IntakeFailure::Psbt(e)) => {
                return Err(EngineError::refused(
                    "invalid-psbt",
                    format!("node {} refuses the PSBT: {e}", self.me),
                ));
            }
        };
        let digest = parsed.digest().to_bytes();
        if request_id_of(&digest) != request_id {
            return Err(EngineError::refused(
                "bad-request",
                format!(
                    "request id {request_id} does not match the digest node {} computed",
                    self.me
                ),
            ));
        }
        let summary = summary_json(&parsed);
        let (record, created) = self
            .store
            .insert_sign_request(&NewSignRequest {
                request_id,
                key_id,
                digest: &digest,
                psbt,
                memo,
                submitter,
                summary: &summary,
                expires_at: self.request_deadline(),
            })
            .await?;
        if created {
            tracing::info!(request_id, key_id, submitter, "signing request received");
            self.notify(request_id);
        }
        self.cache_parsed(request_id, parsed.clone());
        // A request this node has just stored has no vote and no approvals yet.
        self.cast_vote(&record, &parsed, created).await
    }

    /// Evaluates the request against this node's policy and returns this node's vote: the
    /// stored one unless it waited for approvals and the decision moved on.
    async fn cast_vote(
        &self,
        record: &SignRequestRecord,
        parsed: &SignRequest,
        fresh: bool,
    ) -> Result<SignedVote, EngineError> {
        let request_id = record.request_id.as_str();
        let stored = if fresh {
            None
        } else {
            self.store
                .votes(request_id)
                .await?
                .into_iter()
                .find(|v| v.node_id == self.me)
        };
        let stored_vote = match &stored {
            Some(v) => Some(SignedVote::from_parts(
                serde_json::from_slice::<Vote>(&v.signed_vote)
                    .map_err(|e| EngineError::refused("internal", format!("stored vote: {e}")))?,
                v.signature.clone(),
            )),
            None => None,
        };
        let open = matches!(record.state.as_str(), "voting" | "awaiting_approvals");
        if let Some(v) = &stored_vote {
            if v.unverified_vote().decision != VoteDecision::NeedsApprovals || !open {
                return Ok(v.clone());
            }
        }
        // Evaluation and the vote are one step per key: the next request of the key is
        // evaluated with this one's spend already counted.
        let _key = self.requests.key_locks.acquire(&record.key_id).await;
        let digest = parsed.digest().to_bytes();
        let now = SystemTime::now();
        let (decision, policy_hash) = self
            .evaluate(record, parsed, digest, fresh, None, now)
            .await?;
        let reasons = vec![decision.to_string()];
        if let Some(v) = &stored_vote {
            if v.unverified_vote().reasons == reasons {
                return Ok(v.clone());
            }
        }
        let vote = Vote {
            cluster_id: self.cfg.node.cluster_id.clone(),
            request_id: request_id.to_owned(),
            request_digest: digest,
            policy_hash,
            decision: decision_of(&decision),
            reasons,
            entropy: random_id::<32>(),
            node_id: self.me.clone(),
            time_unix_ms: now_ms(),
        };
        let identity = self.token.identity();
        let signed =
            SignedVote::sign(vote, &identity).map_err(|e| EngineError::Token(e.to_string()))?;
        let allowed_at = (signed.unverified_vote().decision == VoteDecision::Allow).then_some(now);
        self.store_vote(&signed, allowed_at).await?;
        let v = signed.unverified_vote();
        tracing::info!(request_id, decision = %v.decision, reasons = ?v.reasons, "vote cast");
        Ok(signed)
    }

    async fn store_vote(
        &self,
        signed: &SignedVote,
        allowed_at: Option<SystemTime>,
    ) -> Result<bool, EngineError> {
        let v = signed.unverified_vote();
        let body =
            serde_json::to_vec(v).map_err(|e| EngineError::refused("internal", e.to_string()))?;
        let reasons = json!(v.reasons);
        Ok(self
            .store
            .record_vote(&NewVote {
                request_id: &v.request_id,
                node_id: &v.node_id,
                decision: v.decision.as_str(),
                reasons: &reasons,
                policy_hash: &v.policy_hash,
                entropy: &v.entropy,
                signed_vote: &body,
                signature: signed.signature(),
                allowed_at,
            })
            .await?)
    }

    /// This node's policy decision on a stored request at `now`, with the policy hash. The
    /// rolling window holds every spend of the key this node allowed that still counts
    /// ([`strongroom_store::WindowSpend::counts`]), dated when it allowed it, leaving out
    /// `except` (the request itself, when it is evaluated again).
    async fn evaluate(
        &self,
        record: &SignRequestRecord,
        parsed: &SignRequest,
        digest: [u8; 32],
        fresh: bool,
        except: Option<&str>,
        now: SystemTime,
    ) -> Result<(Decision, [u8; 32]), EngineError> {
        let Some(policy) = self.policy() else {
            return Ok((
                Decision::Deny {
                    rule: None,
                    reason: format!(
                        "node {} has no policy file ([policy] file in its configuration)",
                        self.me
                    ),
                },
                [0; 32],
            ));
        };
        let now_s = unix_secs(now);
        let window_history = match policy.longest_window() {
            Some(seconds) => {
                let since = now
                    .checked_sub(Duration::from_secs(seconds))
                    .unwrap_or(UNIX_EPOCH);
                self.store
                    .window_spends(&record.key_id, since, except)
                    .await?
                    .into_iter()
                    .filter(|spend| spend.counts(now))
                    .map(|spend| WindowEntry {
                        time: unix_secs(spend.allowed_at),
                        amount_sat: spend.amount_sat,
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let mut approvals = Vec::new();
        let stored = if fresh {
            Vec::new()
        } else {
            self.store.approvals(&record.request_id).await?
        };
        for a in stored {
            match strongroom_policies::verify_approval(policy, &a.approver, &digest, &a.signature) {
                Ok(v) => approvals.push(v),
                Err(e) => {
                    tracing::warn!(request_id = %record.request_id, error = %e, "stored approval does not verify under this node's policy")
                }
            }
        }
        let roles = self
            .cfg
            .api
            .clients
            .get(&record.submitter)
            .cloned()
            .unwrap_or_default();
        let ctx = Context {
            initiator: Initiator {
                name: record.submitter.clone(),
                roles,
            },
            now: now_s,
            request_digest: digest,
            window_history,
            approvals,
        };
        let key_name = self
            .store
            .key(&record.key_id)
            .await?
            .ok_or_else(|| {
                EngineError::refused(
                    "unknown-key",
                    format!("node {} has no key {}", self.me, record.key_id),
                )
            })?
            .name;
        let decision = strongroom_policies::evaluate(policy, &tx_summary(parsed, &key_name), &ctx);
        Ok((decision, *policy.hash().as_bytes()))
    }

    /// What approvals this node's policy still needs for a request, if it waits for any.
    pub(crate) async fn needs(&self, record: &SignRequestRecord) -> Option<Value> {
        let (_, parsed) = self.parsed_request(&record.request_id).await.ok()?;
        let digest = parsed.digest().to_bytes();
        match self
            .evaluate(record, &parsed, digest, false, None, SystemTime::now())
            .await
            .ok()?
            .0
        {
            Decision::NeedsApprovals {
                group,
                required,
                have,
                approved_by,
                ..
            } => Some(
                json!({"group": group, "required": required, "have": have, "approved_by": approved_by}),
            ),
            _ => None,
        }
    }

    /// [`Request::Votes`]: verify and store each vote, then settle this node's view.
    pub(crate) async fn receive_votes(
        &self,
        request_id: &str,
        votes: &[SignedVote],
    ) -> Result<Tally, EngineError> {
        let record = self.store.sign_request(request_id).await?.ok_or_else(|| {
            EngineError::refused(
                "unknown-request",
                format!("node {} has no signing request {request_id}", self.me),
            )
        })?;
        let digest: [u8; 32] = record
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| EngineError::refused("internal", "stored digest is not 32 bytes"))?;
        // This node's own vote is stored when it is cast; the others are verified here.
        let mut verified = Vec::new();
        for signed in votes {
            if signed.unverified_vote().node_id == self.me {
                continue;
            }
            match self.check_vote(signed, request_id, digest) {
                Ok(_) => verified.push(signed),
                Err(e) => {
                    tracing::warn!(request_id, error = %e, "vote rejected");
                }
            }
        }
        let stored =
            futures::future::join_all(verified.iter().map(|v| self.store_vote(v, None))).await;
        for (signed, result) in verified.iter().zip(stored) {
            if let Err(e) = result {
                tracing::warn!(request_id, voter = %signed.unverified_vote().node_id, error = %e, "vote not stored");
            }
        }
        self.settle(&record).await
    }

    /// Moves this node's copy of a request to the state its stored votes settle.
    async fn settle(&self, record: &SignRequestRecord) -> Result<Tally, EngineError> {
        let request_id = record.request_id.as_str();
        let key = self.public_info(&record.key_id).await?;
        // Only stored votes count, and a vote is stored only once verified against its voter's
        // certificate (or cast by this node).
        let stored: Vec<(String, VoteDecision, Vec<String>)> = self
            .store
            .votes(request_id)
            .await?
            .into_iter()
            .filter(|v| self.members.contains(&v.node_id))
            .filter_map(|v| {
                let reasons = serde_json::from_value(v.reasons).unwrap_or_default();
                Some((v.node_id, VoteDecision::parse(&v.decision)?, reasons))
            })
            .collect();
        let votes: Vec<CountedVote<'_>> = stored
            .iter()
            .map(|(node, decision, reasons)| CountedVote {
                node,
                decision: *decision,
                reasons,
            })
            .collect();
        let result = lifecycle::tally(usize::from(key.n), usize::from(key.threshold), &votes);
        let changed = match &result {
            Tally::Approved => {
                self.store
                    .transition_sign_request(
                        request_id,
                        &["voting", "awaiting_approvals"],
                        "approved",
                        None,
                    )
                    .await?
            }
            Tally::AwaitingApprovals => {
                self.store
                    .transition_sign_request(request_id, &["voting"], "awaiting_approvals", None)
                    .await?
            }
            Tally::Rejected(reasons) => {
                let text = reasons.join("; ");
                // This node's own conclusion from verified votes: too few nodes allow, so it
                // will never release anything for the request.
                self.store
                    .end_sign_request(
                        request_id,
                        &["voting", "awaiting_approvals"],
                        "rejected",
                        Some(&text),
                        true,
                    )
                    .await?
            }
            Tally::Pending => false,
        };
        if changed {
            tracing::info!(request_id, state = ?result, "request settled");
            self.notify(request_id);
        }
        Ok(result)
    }

    /// [`Request::Approve`]: verify under this node's policy, store, vote again.
    pub(crate) async fn receive_approval(
        &self,
        from: &str,
        request_id: &str,
        approver: &str,
        signature_hex: &str,
    ) -> Result<SignedVote, EngineError> {
        let (record, parsed) = self.parsed_request(request_id).await?;
        self.accept_approval(&record, approver, signature_hex)
            .await
            .inspect_err(|e| {
                tracing::warn!(request_id, approver, via = from, error = %e, "approval refused");
            })?;
        self.cast_vote(&record, &parsed, false).await
    }

    /// Verifies an approval against this node's policy and stores it; a refused approval is
    /// recorded in the audit log.
    pub(crate) async fn accept_approval(
        &self,
        record: &SignRequestRecord,
        approver: &str,
        signature_hex: &str,
    ) -> Result<bool, EngineError> {
        let result = self
            .accept_approval_inner(record, approver, signature_hex)
            .await;
        if let Err(EngineError::Refused { kind, detail }) = &result {
            if *kind == "approval-refused" {
                self.record(
                    self.event(strongroom_audit::EventKind::ApprovalRefused)
                        .request(record.request_id.clone())
                        .field("approver", approver)
                        .field("reason", detail.as_str()),
                )
                .await;
            }
        }
        result
    }

    async fn accept_approval_inner(
        &self,
        record: &SignRequestRecord,
        approver: &str,
        signature_hex: &str,
    ) -> Result<bool, EngineError> {
        let policy = self.policy().ok_or_else(|| {
            EngineError::refused(
                "approval-refused",
                format!("node {} has no policy, so no approvers", self.me),
            )
        })?;
        let signature = hex::decode(signature_hex.trim())
            .map_err(|_| EngineError::refused("approval-refused", "the signature is not hex"))?;
        let digest: [u8; 32] = record
            .digest
            .as_slice()
            .try_into()
            .map_err(|_| EngineError::refused("internal", "stored digest is not 32 bytes"))?;
        strongroom_policies::verify_approval(policy, approver, &digest, &signature)
            .map_err(|e| EngineError::refused("approval-refused", e.to_string()))?;
        let new = self
            .store
            .record_approval(&record.request_id, approver, &signature)
            .await?;
        if new {
            tracing::info!(request_id = %record.request_id, approver, "approval accepted");
            self.notify(&record.request_id);
        }
        Ok(new)
    }

    /// [`Request::Finished`]: check the signatures against this node's own sighashes and
    /// store the signed PSBT.
    pub(crate) async fn receive_signatures(
        &self,
        request_id: &str,
        signatures: &[(u32, String)],
    ) -> Result<(), EngineError> {
        let (record, parsed) = self.parsed_request(request_id).await?;
        let state = own_view(&record)?.state;
        if state == RequestState::Signed {
            return Ok(());
        }
        if !lifecycle::accepts_signatures(state) {
            return Err(EngineError::refused(
                "refused",
                format!(
                    "request {request_id} is {state} on node {}; it does not take signatures",
                    self.me
                ),
            ));
        }
        let mut sigs = Vec::with_capacity(signatures.len());
        for (input, hex_sig) in signatures {
            let bytes = hex::decode(hex_sig)
                .map_err(|_| EngineError::refused("bad-request", "signature is not hex"))?;
            let sig = EcdsaSig::from_compact(&bytes)
                .map_err(|e| EngineError::refused("bad-request", e.to_string()))?;
            sigs.push((usize::try_from(*input).unwrap_or(usize::MAX), sig));
        }
        let signed = parsed
            .apply_signatures(&sigs)
            .map_err(|e| EngineError::refused("bad-signature", e.to_string()))?;
        // The signatures prove t nodes allowed the request, whatever this node saw of the vote.
        self.store
            .transition_sign_request(
                request_id,
                &["voting", "awaiting_approvals"],
                "approved",
                None,
            )
            .await?;
        self.store
            .transition_sign_request(request_id, &["approved"], "signing", None)
            .await?;
        self.store
            .finish_sign_request(
                request_id,
                &signed.to_base64(),
                signed.transaction_hex().as_deref(),
            )
            .await?;
        self.notify(request_id);
        Ok(())
    }

    /// [`Request::Failed`] from peer `from`: the request ends `failed` here unless it is
    /// signed ([`lifecycle::on_peer_failed`]); the spend keeps counting in this node's window
    /// whatever the peer says (a peer's word never takes a spend out).
    pub(crate) async fn receive_failure(
        &self,
        from: &str,
        request_id: &str,
        error: &str,
    ) -> Result<(), EngineError> {
        let record = self.store.sign_request(request_id).await?.ok_or_else(|| {
            EngineError::refused(
                "unknown-request",
                format!("node {} has no signing request {request_id}", self.me),
            )
        })?;
        match lifecycle::on_peer_failed(&own_view(&record)?) {
            PeerFailed::Refuse(reason) => {
                let e = EngineError::refused(
                    "refused",
                    format!(
                        "node {} refuses {from}'s failed for request {request_id}: {reason}",
                        self.me
                    ),
                );
                self.refused_peer_message(from, "failed", Some(request_id), &e.to_string())
                    .await;
                Err(e)
            }
            PeerFailed::AlreadyEnded => Ok(()),
            PeerFailed::Fail(ending) => {
                self.end(request_id, OPEN_STATES, ending, &format!("{from}: {error}"))
                    .await?;
                Ok(())
            }
        }
    }

    /// This node's own signing attempt of `request_id` failed: the request ends `failed`, and
    /// its spend stops counting here if this node released nothing for it.
    pub(crate) async fn own_failure(
        &self,
        request_id: &str,
        error: &str,
    ) -> Result<(), EngineError> {
        let Some(record) = self.store.sign_request(request_id).await? else {
            return Ok(());
        };
        if let Some(ending) = lifecycle::on_own_failure(&own_view(&record)?) {
            self.end(request_id, OPEN_STATES, ending, error).await?;
        }
        Ok(())
    }

    /// Ends every open request past this node's deadline (`expired`); the spend of one this
    /// node released nothing for stops counting.
    pub(crate) async fn expire_due(&self) -> Result<usize, EngineError> {
        let now = SystemTime::now();
        let mut ended = 0;
        for request_id in self.store.due_sign_requests(now, 256).await? {
            let Some(record) = self.store.sign_request(&request_id).await? else {
                continue;
            };
            let Some(ending) = lifecycle::on_tick(&own_view(&record)?, now) else {
                continue;
            };
            let reason = "not signed before this node's deadline (signing.request_ttl_secs)";
            if self.end(&request_id, OPEN_STATES, ending, reason).await? {
                tracing::info!(request_id, "request expired");
                ended += 1;
            }
        }
        Ok(ended)
    }

    /// Cancels `record` here for client `by` (its submitter or an admin, as the API checked):
    /// it ends `cancelled` and, this node having decided it, its spend stops counting if
    /// nothing was released.
    pub(crate) async fn cancel(
        &self,
        record: &SignRequestRecord,
        by: &str,
    ) -> Result<(), EngineError> {
        let ending = lifecycle::on_cancel(&own_view(record)?).map_err(|reason| {
            EngineError::refused(
                "request-closed",
                format!("request {}: {reason}", record.request_id),
            )
        })?;
        let reason = format!("cancelled by {by}");
        if !self
            .end(&record.request_id, CANCELLABLE, ending, &reason)
            .await?
        {
            return Err(EngineError::refused(
                "request-closed",
                format!(
                    "request {} changed state meanwhile; it can be cancelled only before signing starts",
                    record.request_id
                ),
            ));
        }
        tracing::info!(request_id = %record.request_id, by, "request cancelled");
        Ok(())
    }

    /// [`Request::Cancel`] from peer `from`: the request ends `cancelled` here if it is not yet
    /// being signed, so this node never signs it. On a peer's word the spend keeps counting
    /// until this node's deadline.
    pub(crate) async fn receive_cancel(
        &self,
        from: &str,
        request_id: &str,
        by: &str,
    ) -> Result<(), EngineError> {
        let Some(record) = self.store.sign_request(request_id).await? else {
            return Ok(());
        };
        match lifecycle::on_cancel(&own_view(&record)?) {
            Ok(ending) => {
                // On a peer's word: the spend keeps counting.
                let ending = Ending {
                    void_unreleased: false,
                    ..ending
                };
                let reason = format!("cancelled by {by} (through {from})");
                self.end(request_id, CANCELLABLE, ending, &reason).await?;
                Ok(())
            }
            Err(reason) => Err(EngineError::refused(
                "request-closed",
                format!("node {}: request {request_id}: {reason}", self.me),
            )),
        }
    }

    /// Ends `request_id` as a lifecycle decision says, if its state is one of `from`
    /// (compare-and-set), and tells long polls; `false` when the state had moved on.
    async fn end(
        &self,
        request_id: &str,
        from: &[&str],
        ending: Ending,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let changed = self
            .store
            .end_sign_request(
                request_id,
                from,
                ending.to.as_str(),
                Some(reason),
                ending.void_unreleased,
            )
            .await?;
        if changed {
            self.notify(request_id);
        }
        Ok(changed)
    }

    /// This node's deadline for a request it stores now.
    pub(crate) fn request_deadline(&self) -> SystemTime {
        SystemTime::now() + Duration::from_secs(self.cfg.signing.request_ttl_secs)
    }

    /// Logs and audits a control message from `from` that this node refused.
    pub(crate) async fn refused_peer_message(
        &self,
        from: &str,
        kind: &str,
        request_id: Option<&str>,
        reason: &str,
    ) {
        tracing::warn!(
            from,
            message = kind,
            request_id,
            reason,
            "peer message refused"
        );
        let mut event = self
            .event(strongroom_audit::EventKind::PeerMessageRefused)
            .field("peer", from)
            .field("message", kind)
            .field("reason", reason);
        if let Some(id) = request_id {
            event = event.request(id.to_owned());
        }
        self.record(event).await;
    }
}

/// Why intake failed: the PSBT (400) or the engine (key unknown, database).
#[derive(Debug)]
pub(crate) enum IntakeFailure {
    /// The PSBT is refused.
    Psbt(strongroom_bitcoin::IntakeError),
    /// Something else failed.
    Engine(EngineError),
}

// ---- coordinator side ------------------------------------------------------------------------

/// A request to put to the vote: what every member checks for itself.
#[derive(Debug, Clone)]
pub(crate) struct Proposal {
    /// The request id (derived from the request digest).
    pub(crate) request_id: String,
    /// Key id.
    pub(crate) key_id: String,
    /// The PSBT, base64, as the client handed it in.
    pub(crate) psbt: String,
    /// The client's memo.
    pub(crate) memo: Option<String>,
    /// The submitting client's name.
    pub(crate) submitter: String,
}

impl From<&SignRequestRecord> for Proposal {
    fn from(r: &SignRequestRecord) -> Self {
        Proposal {
            request_id: r.request_id.clone(),
            key_id: r.key_id.clone(),
            psbt: r.psbt.clone(),
            memo: r.memo.clone(),
            submitter: r.submitter.clone(),
        }
    }
}

/// Puts a request this node received to the vote: through the leader, which proposes each
/// key's requests one after the other so that every node evaluates them in the same order
/// (concurrent requests then settle exactly as the spending caps allow); when no leader is
/// known or it cannot be reached, this node proposes it itself. The order is a matter of
/// liveness only: each node counts what it allowed against its own caps whatever the order.
pub(crate) async fn put_to_vote(engine: Arc<Engine>, record: SignRequestRecord) {
    let proposal = Proposal::from(&record);
    let leader = engine.coord.borrow().leader.clone();
    if let Some(index) = leader
        .and_then(|l| engine.members().iter().position(|m| *m == l))
        .and_then(|i| u16::try_from(i).ok())
        .filter(|&i| i != engine.my_index && engine.reachable(i))
    {
        let sent = engine
            .call(
                index,
                Request::Sequence {
                    request_id: proposal.request_id.clone(),
                    key_id: proposal.key_id.clone(),
                    psbt: proposal.psbt.clone(),
                    memo: proposal.memo.clone(),
                    submitter: proposal.submitter.clone(),
                },
                Duration::from_secs(5),
            )
            .await;
        match sent {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(request_id = %proposal.request_id, error = %e, "the leader did not take the request; proposing it here");
            }
        }
    }
    coordinate(engine, proposal).await;
}

/// [`Request::Sequence`]: proposes a request a peer received, in this node's order.
pub(crate) fn spawn_sequenced(engine: Arc<Engine>, proposal: Proposal) {
    tokio::spawn(coordinate(engine, proposal));
}

/// Collects every member's vote on a request and shares them; signs when approved.
pub(crate) async fn coordinate(engine: Arc<Engine>, proposal: Proposal) {
    let request_id = proposal.request_id.clone();
    if let Err(e) = coordinate_inner(&engine, &proposal).await {
        tracing::warn!(request_id = %request_id, error = %e, "signing request could not proceed");
    }
}

async fn coordinate_inner(engine: &Arc<Engine>, proposal: &Proposal) -> Result<(), EngineError> {
    let timeout = Duration::from_secs(engine.cfg.signing.timeout_secs);
    let started = std::time::Instant::now();
    let votes = {
        // One request of a key at a time: each is proposed once the previous one's votes are
        // in, so every node has counted it when it evaluates the next.
        let _turn = engine.requests.sequencer.acquire(&proposal.key_id).await;
        let answers = engine
            .call_all(&engine.parties(), timeout, |_| Request::Propose {
                request_id: proposal.request_id.clone(),
                key_id: proposal.key_id.clone(),
                psbt: proposal.psbt.clone(),
                memo: proposal.memo.clone(),
                submitter: proposal.submitter.clone(),
            })
            .await;
        let mut votes = Vec::new();
        for (i, answer) in answers {
            match answer {
                Ok(Reply::Vote(v)) => votes.push(v),
                Ok(_) => {
                    tracing::warn!(request_id = %proposal.request_id, node = i, "unexpected reply to a proposal")
                }
                Err(e) => {
                    tracing::warn!(request_id = %proposal.request_id, node = i, error = %e, "no vote")
                }
            }
        }
        votes
    };
    tracing::debug!(request_id = %proposal.request_id, votes = votes.len(), ms = started.elapsed().as_secs_f64() * 1000.0, "votes collected");
    share_votes(engine, &proposal.request_id, votes).await
}

/// Sends `votes` to every member; if this node's view is then `approved`, signs.
async fn share_votes(
    engine: &Arc<Engine>,
    request_id: &str,
    votes: Vec<SignedVote>,
) -> Result<(), EngineError> {
    let timeout = Duration::from_secs(engine.cfg.signing.timeout_secs);
    let others = engine.other_parties();
    let started = std::time::Instant::now();
    let own = engine.receive_votes(request_id, &votes).await?;
    tracing::debug!(
        request_id,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "votes settled"
    );
    let i_allow = votes.iter().any(|v| {
        let v = v.unverified_vote();
        v.node_id == engine.me && v.decision == VoteDecision::Allow
    });
    let deliver = {
        let engine = engine.clone();
        let request_id = request_id.to_owned();
        async move {
            let answers = engine
                .call_all(&others, timeout, |_| Request::Votes {
                    request_id: request_id.clone(),
                    votes: votes.clone(),
                })
                .await;
            for (i, answer) in answers {
                if let Err(e) = answer {
                    tracing::warn!(request_id = %request_id, node = i, error = %e, "votes not delivered");
                }
            }
        }
    };
    if own == Tally::Approved && i_allow {
        // Signers check only their own votes: the others learn the outcome while this node
        // signs.
        tokio::spawn(deliver);
        sign_approved(engine, request_id).await;
    } else {
        deliver.await;
        if own == Tally::Approved {
            sign_approved(engine, request_id).await;
        }
    }
    Ok(())
}

/// Verifies an approval here, has every member verify it and vote again, and shares the votes.
pub(crate) async fn approve(
    engine: &Arc<Engine>,
    request_id: &str,
    approver: &str,
    signature_hex: &str,
) -> Result<(), EngineError> {
    let timeout = Duration::from_secs(engine.cfg.signing.timeout_secs);
    let answers = engine
        .call_all(&engine.parties(), timeout, |_| Request::Approve {
            request_id: request_id.to_owned(),
            approver: approver.to_owned(),
            signature: signature_hex.to_owned(),
        })
        .await;
    let mut votes = Vec::new();
    for (i, answer) in answers {
        match answer {
            Ok(Reply::Vote(v)) => votes.push(v),
            Ok(_) => tracing::warn!(request_id, node = i, "unexpected reply to an approval"),
            Err(e) => tracing::warn!(request_id, node = i, error = %e, "approval not taken"),
        }
    }
    let engine = engine.clone();
    let request_id = request_id.to_owned();
    tokio::spawn(async move {
        if let Err(e) = share_votes(&engine, &request_id, votes).await {
            tracing::warn!(request_id = %request_id, error = %e, "votes after an approval not shared");
        }
    });
    Ok(())
}

/// Tells every other member that a request was cancelled here.
pub(crate) async fn relay_cancel(engine: &Arc<Engine>, request_id: &str, by: &str) {
    let others = engine.other_parties();
    for (i, answer) in engine
        .call_all(&others, Duration::from_secs(5), |_| Request::Cancel {
            request_id: request_id.to_owned(),
            by: by.to_owned(),
        })
        .await
    {
        if let Err(e) = answer {
            tracing::warn!(request_id, node = i, error = %e, "cancellation not taken");
        }
    }
}

/// Signs an approved request in a task of its own.
pub(crate) fn spawn_signing(engine: Arc<Engine>, request_id: String) {
    tokio::spawn(async move { sign_approved(&engine, &request_id).await });
}

/// Signs an approved request: this node coordinates if it voted to allow, else it hands the
/// request to a node that did.
async fn sign_approved(engine: &Arc<Engine>, request_id: &str) {
    match sign_inner(engine, request_id).await {
        Ok(()) => {}
        Err(e) => {
            tracing::warn!(request_id, error = %e, "signing failed");
            let error = e.to_string();
            if let Err(db) = engine.own_failure(request_id, &error).await {
                tracing::error!(request_id, error = %db, "cannot record the failure");
            }
            let others = engine.other_parties();
            let _ = engine
                .call_all(&others, Duration::from_secs(5), |_| Request::Failed {
                    request_id: request_id.to_owned(),
                    error: error.clone(),
                })
                .await;
        }
    }
}

async fn sign_inner(engine: &Arc<Engine>, request_id: &str) -> Result<(), EngineError> {
    let cached = lock(&engine.requests.parsed).get(request_id).cloned();
    let parsed = match cached {
        Some(parsed) => parsed,
        None => engine.parsed_request(request_id).await?.1,
    };
    let votes = engine.store.votes(request_id).await?;
    let allowing: Vec<u16> = engine
        .members()
        .iter()
        .enumerate()
        .filter(|(_, m)| {
            votes
                .iter()
                .any(|v| &v.node_id == *m && v.decision == "allow")
        })
        .filter_map(|(i, _)| u16::try_from(i).ok())
        .collect();
    if !allowing.contains(&engine.my_index) {
        // Hand the request to a node that allowed it.
        for i in allowing.iter().copied().filter(|i| engine.reachable(*i)) {
            let sent = engine
                .call(
                    i,
                    Request::SignApproved {
                        request_id: request_id.to_owned(),
                    },
                    Duration::from_secs(5),
                )
                .await;
            match sent {
                Ok(_) => return Ok(()),
                Err(e) => {
                    tracing::warn!(request_id, node = i, error = %e, "cannot hand over the signing")
                }
            }
        }
        return Err(EngineError::refused(
            "signers-unavailable",
            "no node that allowed the request is reachable",
        ));
    }
    if !engine
        .store
        .transition_sign_request(request_id, &["approved"], "signing", None)
        .await?
    {
        // Someone else is signing it, or it is done.
        return Ok(());
    }
    engine.notify(request_id);
    let started = std::time::Instant::now();
    let key_id = parsed.analysis().key_id.as_str();
    let tasks = parsed.inputs_to_sign().iter().map(|input| {
        let target = SignTarget::Input {
            input_index: u32::try_from(input.input_index).unwrap_or(u32::MAX),
        };
        let path = input.path.to_string();
        let path = path.strip_prefix("m/").unwrap_or(&path).to_owned();
        let digest = *input.message().as_ref();
        let allowing = allowing.clone();
        async move {
            let out = crate::signing::sign_message(
                engine,
                request_id,
                key_id,
                &path,
                digest,
                &target,
                Some(&allowing),
            )
            .await?;
            Ok::<_, EngineError>((input.input_index, out))
        }
    });
    let results = futures::future::join_all(tasks).await;
    let mut sigs = Vec::new();
    let mut wire = Vec::new();
    for r in results {
        let (input, out) = r?;
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(&hex32(&out.r, "r")?);
        compact[32..].copy_from_slice(&hex32(&out.s, "s")?);
        let sig = EcdsaSig::from_compact(&compact)
            .map_err(|e| EngineError::refused("internal", e.to_string()))?;
        sigs.push((input, sig));
        wire.push((
            u32::try_from(input).unwrap_or(u32::MAX),
            hex::encode(compact),
        ));
    }
    let signed = parsed
        .apply_signatures(&sigs)
        .map_err(|e| EngineError::refused("internal", e.to_string()))?;
    engine
        .store
        .finish_sign_request(
            request_id,
            &signed.to_base64(),
            signed.transaction_hex().as_deref(),
        )
        .await?;
    engine.notify(request_id);
    tracing::info!(
        request_id,
        inputs = sigs.len(),
        sign_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request signed"
    );
    let others = engine.other_parties();
    let timeout = Duration::from_secs(engine.cfg.signing.timeout_secs);
    let engine = engine.clone();
    let request_id = request_id.to_owned();
    tokio::spawn(async move {
        for (i, r) in engine
            .call_all(&others, timeout, |_| Request::Finished {
                request_id: request_id.clone(),
                signatures: wire.clone(),
            })
            .await
        {
            if let Err(e) = r {
                tracing::warn!(request_id = %request_id, node = i, error = %e, "signatures not delivered");
            }
        }
    });
    Ok(())
}

/// The leader's sweep: resumes requests that stalled in `voting`, `approved` or `signing`.
pub(crate) async fn resume_stalled(engine: &Arc<Engine>) -> Result<(), EngineError> {
    let now = SystemTime::now();
    let signing_age = Duration::from_secs(engine.cfg.signing.timeout_secs * 2 + 5);
    let before = now.checked_sub(RESUME_AFTER).unwrap_or(UNIX_EPOCH);
    for record in engine
        .store
        .stale_sign_requests(&["voting"], before, 16)
        .await?
    {
        tracing::info!(request_id = %record.request_id, "resuming the vote on a stalled request");
        coordinate(engine.clone(), Proposal::from(&record)).await;
    }
    for record in engine
        .store
        .stale_sign_requests(&["approved"], before, 16)
        .await?
    {
        tracing::info!(request_id = %record.request_id, "resuming the signing of an approved request");
        sign_approved(engine, &record.request_id).await;
    }
    let before = now.checked_sub(signing_age).unwrap_or(UNIX_EPOCH);
    for record in engine
        .store
        .stale_sign_requests(&["signing"], before, 16)
        .await?
    {
        tracing::info!(request_id = %record.request_id, "retrying a signing that never completed");
        if engine
            .store
            .transition_sign_request(&record.request_id, &["signing"], "approved", None)
            .await?
        {
            sign_approved(engine, &record.request_id).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_come_from_the_digest() {
        let d = [0xab; 32];
        assert_eq!(request_id_of(&d), "ab".repeat(16));
    }
}

#[cfg(test)]
mod certificate_tests {
    use super::*;

    fn pick(
        remembered: &mut HashMap<String, &'static str>,
        node: &str,
        connected: Option<&'static str>,
    ) -> Option<&'static str> {
        vote_certificate(remembered, node, connected, |cert| {
            !cert.ends_with("expired")
        })
    }

    #[test]
    fn the_current_connection_wins_and_replaces_the_remembered_certificate() {
        let mut remembered = HashMap::new();
        // First connection: its certificate is used and remembered.
        assert_eq!(pick(&mut remembered, "node-2", Some("old")), Some("old"));
        assert_eq!(remembered.get("node-2"), Some(&"old"));
        // The peer was re-keyed and reconnected: the new certificate is used at once, and the
        // old one is forgotten, so votes signed with the old key stop verifying.
        assert_eq!(pick(&mut remembered, "node-2", Some("new")), Some("new"));
        assert_eq!(remembered.get("node-2"), Some(&"new"));
        // Disconnected: the latest certificate, never the old one.
        assert_eq!(pick(&mut remembered, "node-2", None), Some("new"));
    }

    #[test]
    fn without_a_connection_only_a_remembered_valid_certificate_is_used() {
        let mut remembered = HashMap::new();
        assert_eq!(pick(&mut remembered, "node-3", None), None);
        assert!(remembered.is_empty());
        remembered.insert("node-3".to_owned(), "cert-expired");
        assert_eq!(pick(&mut remembered, "node-3", None), None);
        // A connection that presents a valid certificate replaces the expired one.
        assert_eq!(
            pick(&mut remembered, "node-3", Some("fresh")),
            Some("fresh")
        );
        assert_eq!(pick(&mut remembered, "node-3", None), Some("fresh"));
    }

    #[test]
    fn peers_are_remembered_separately() {
        let mut remembered = HashMap::new();
        assert_eq!(pick(&mut remembered, "node-2", Some("two")), Some("two"));
        assert_eq!(
            pick(&mut remembered, "node-3", Some("three")),
            Some("three")
        );
        assert_eq!(pick(&mut remembered, "node-2", None), Some("two"));
        assert_eq!(pick(&mut remembered, "node-4", None), None);
    }
}
