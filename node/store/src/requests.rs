//! Policy-gated signing requests: the request and its state machine, each node's signed policy
//! vote and the human approvals.
//!
//! A request moves `voting` → `awaiting_approvals` | `approved` | `rejected` | `failed`,
//! `awaiting_approvals` → `approved` | `rejected` | `failed`, `approved` → `signing` | `failed`
//! and `signing` → `signed` | `failed` | `approved` (back to `approved` so a new leader can retry
//! after a failed signing attempt). Any open state (`voting`, `awaiting_approvals`, `approved`,
//! `signing`) may end `expired` at the node's deadline; one that is not `signing` may end
//! `cancelled`. A `failed` or `expired` request still becomes `signed` when signatures that
//! verify arrive (they prove the signing completed). Every change is an atomic compare-and-set
//! on the state.
//!
//! Each request also carries this node's spend accounting: when its own vote allowed it
//! (`allowed_at`), when it first released a partial signature for it (`released_at`), whether
//! the node itself ended it before releasing anything (`spend_void`) and its deadline
//! (`expires_at`). [`Store::window_spends`] returns what the node's rolling window must count.

use std::time::SystemTime;

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use strongroom_audit::EventKind;
use tokio_postgres::error::SqlState;

use crate::audit::{hex, integers_only};
use crate::{Store, StoreError};

/// Every state a signing request can be in.
pub const SIGN_REQUEST_STATES: &[&str] = &[
    "voting",
    "awaiting_approvals",
    "approved",
    "signing",
    "signed",
    "rejected",
    "failed",
    "expired",
    "cancelled",
];

/// States in which a request may still be signed.
pub const OPEN_STATES: &[&str] = &["voting", "awaiting_approvals", "approved", "signing"];

/// Every decision a policy vote can carry.
pub const VOTE_DECISIONS: &[&str] = &["allow", "deny", "needs_approvals"];

/// Whether a signing request may move from state `from` to state `to`.
pub fn sign_request_transition_allowed(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        (
            "voting",
            "awaiting_approvals" | "approved" | "rejected" | "failed"
        ) | ("awaiting_approvals", "approved" | "rejected" | "failed")
            | ("approved", "signing" | "failed")
            | ("signing", "signed" | "failed" | "approved")
            | (
                "voting" | "awaiting_approvals" | "approved" | "signing",
                "expired"
            )
            | ("voting" | "awaiting_approvals" | "approved", "cancelled")
    )
}

/// A signing request to store.
#[derive(Debug, Clone, Copy)]
pub struct NewSignRequest<'a> {
    /// Request id.
    pub request_id: &'a str,
    /// Key id (must exist).
    pub key_id: &'a str,
    /// The 32-byte request digest binding the PSBT, the key id and every derivation path.
    pub digest: &'a [u8],
    /// The PSBT as submitted (base64).
    pub psbt: &'a str,
    /// Free-text memo of the submitter.
    pub memo: Option<&'a str>,
    /// Name of the client that submitted it.
    pub submitter: &'a str,
    /// The transaction summary (its `spend_sat` counts against the spending window).
    pub summary: &'a Value,
    /// This node's deadline for the request.
    pub expires_at: SystemTime,
}

/// A signing request as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SignRequestRecord {
    /// Request id.
    pub request_id: String,
    /// Key id.
    pub key_id: String,
    /// The 32-byte request digest.
    pub digest: Vec<u8>,
    /// The PSBT as submitted (base64).
    pub psbt: String,
    /// The signed PSBT (base64), once signed.
    pub signed_psbt: Option<String>,
    /// The finalized transaction (hex), once signed, when it could be finalized.
    pub tx_hex: Option<String>,
    /// Free-text memo of the submitter.
    pub memo: Option<String>,
    /// Name of the client that submitted it.
    pub submitter: String,
    /// One of [`SIGN_REQUEST_STATES`].
    pub state: String,
    /// The transaction summary.
    pub summary: Value,
    /// The reason given with the last state change, if any (why it failed or was rejected).
    pub error: Option<String>,
    /// When it was first submitted.
    pub created_at: SystemTime,
    /// When it last changed.
    pub updated_at: SystemTime,
    /// When this node's own vote allowed it (renewed when the node evaluated again).
    pub allowed_at: Option<SystemTime>,
    /// When this node first released a partial signature for it.
    pub released_at: Option<SystemTime>,
    /// Whether this node itself ended it before releasing anything (its spend no longer counts).
    pub spend_void: bool,
    /// This node's deadline for it.
    pub expires_at: SystemTime,
}

/// A node's signed policy vote to store.
#[derive(Debug, Clone, Copy)]
pub struct NewVote<'a> {
    /// Request id (must exist).
    pub request_id: &'a str,
    /// The voting node.
    pub node_id: &'a str,
    /// One of [`VOTE_DECISIONS`].
    pub decision: &'a str,
    /// Why: a JSON array of strings.
    pub reasons: &'a Value,
    /// Hash of the policy the node evaluated.
    pub policy_hash: &'a [u8],
    /// The 32 bytes of signing entropy the node contributed with its vote.
    pub entropy: &'a [u8],
    /// The exact bytes the node signed.
    pub signed_vote: &'a [u8],
    /// The node's signature over `signed_vote`.
    pub signature: &'a [u8],
    /// For this node's own vote to allow: when it allowed (recorded on the request in the same
    /// transaction, so the spend counts from the moment the vote exists).
    pub allowed_at: Option<SystemTime>,
}

/// A policy vote as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VoteRecord {
    /// Request id.
    pub request_id: String,
    /// The voting node.
    pub node_id: String,
    /// One of [`VOTE_DECISIONS`].
    pub decision: String,
    /// Why: a JSON array of strings.
    pub reasons: Value,
    /// Hash of the policy the node evaluated.
    pub policy_hash: Vec<u8>,
    /// The node's 32 bytes of signing entropy.
    pub entropy: Vec<u8>,
    /// The exact bytes the node signed.
    pub signed_vote: Vec<u8>,
    /// The node's signature over `signed_vote`.
    pub signature: Vec<u8>,
    /// When this node first received it.
    pub received_at: SystemTime,
}

/// One request as this node's rolling window sees it ([`Store::window_spends`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowSpend {
    /// Request id.
    pub request_id: String,
    /// When this node's vote allowed it: the time the spend is dated.
    pub allowed_at: SystemTime,
    /// What it spends (`spend_sat` of its summary).
    pub amount_sat: u64,
    /// Its state on this node.
    pub state: String,
    /// Whether this node released a partial signature for it.
    pub released: bool,
    /// Whether this node itself ended it before releasing anything.
    pub spend_void: bool,
    /// This node's deadline for it.
    pub expires_at: SystemTime,
}

impl WindowSpend {
    /// Whether the spend counts at `now`: it counts while the request may still be signed,
    /// once signed, and whenever this node released a partial for it. It stops counting only
    /// when this node knows none of its partials for it can ever be released: it ended the
    /// request itself before releasing anything (`spend_void`), or the request ended otherwise
    /// (a peer's `failed`) and its deadline, after which this node releases nothing, passed.
    pub fn counts(&self, now: SystemTime) -> bool {
        if self.released || self.state == "signed" || OPEN_STATES.contains(&self.state.as_str()) {
            return true;
        }
        !self.spend_void && now < self.expires_at
    }
}

/// What a signer checks, in the transaction that releases a partial signature, about the
/// request it signs for ([`Store::check_release_in`]).
#[derive(Debug, Clone, Copy)]
pub struct ReleaseGate<'a> {
    /// The signing request.
    pub request_id: &'a str,
    /// The oldest allowing vote still valid: `allowed_at` must be at or after this.
    pub allowed_since: SystemTime,
    /// This node's clock.
    pub now: SystemTime,
}

/// A verified human approval as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRecord {
    /// Request id.
    pub request_id: String,
    /// Name of the approver.
    pub approver: String,
    /// The approver's signature (verified before it was recorded).
    pub signature: Vec<u8>,
    /// When it was verified and recorded.
    pub verified_at: SystemTime,
}

const REQUEST_COLUMNS: &str = "request_id, key_id, digest, psbt, signed_psbt, tx_hex, memo, \
     submitter, state, summary, error, created_at, updated_at, allowed_at, released_at, \
     spend_void, expires_at";

const VOTE_COLUMNS: &str = "request_id, node_id, decision, reasons, policy_hash, entropy, \
     signed_vote, signature, received_at";

fn request_from_row(r: &tokio_postgres::Row) -> SignRequestRecord {
    SignRequestRecord {
        request_id: r.get(0),
        key_id: r.get(1),
        digest: r.get(2),
        psbt: r.get(3),
        signed_psbt: r.get(4),
        tx_hex: r.get(5),
        memo: r.get(6),
        submitter: r.get(7),
        state: r.get(8),
        summary: r.get(9),
        error: r.get(10),
        created_at: r.get(11),
        updated_at: r.get(12),
        allowed_at: r.get(13),
        released_at: r.get(14),
        spend_void: r.get(15),
        expires_at: r.get(16),
    }
}

fn vote_from_row(r: &tokio_postgres::Row) -> VoteRecord {
    VoteRecord {
        request_id: r.get(0),
        node_id: r.get(1),
        decision: r.get(2),
        reasons: r.get(3),
        policy_hash: r.get(4),
        entropy: r.get(5),
        signed_vote: r.get(6),
        signature: r.get(7),
        received_at: r.get(8),
    }
}

fn is_foreign_key_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION)
}

fn check_state(state: &str) -> Result<(), StoreError> {
    if SIGN_REQUEST_STATES.contains(&state) {
        Ok(())
    } else {
        Err(StoreError::Refused(format!(
            "unknown signing request state {state:?}"
        )))
    }
}

impl Store {
    /// Stores a new signing request in state `voting`. When a request for the same key and
    /// digest exists already (the same PSBT submitted again), returns that one instead, with
    /// `false`. Refused when the digest is not 32 bytes or the request id is taken by a
    /// different request; [`StoreError::NotFound`] when the key does not exist.
    pub async fn insert_sign_request(
        &self,
        r: &NewSignRequest<'_>,
    ) -> Result<(SignRequestRecord, bool), StoreError> {
        if r.digest.len() != 32 {
            return Err(StoreError::Refused(format!(
                "request digest must be 32 bytes, got {}",
                r.digest.len()
            )));
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let inserted = tx
            .query_opt(
                &tx.prepare_cached(&format!(
                    "INSERT INTO sign_requests (request_id, key_id, digest, psbt, memo, submitter, \
                     state, summary, expires_at) VALUES ($1, $2, $3, $4, $5, $6, 'voting', $7, $8) \
                     ON CONFLICT DO NOTHING RETURNING {REQUEST_COLUMNS}"
                ))
                .await?,
                &[
                    &r.request_id,
                    &r.key_id,
                    &r.digest,
                    &r.psbt,
                    &r.memo,
                    &r.submitter,
                    r.summary,
                    &r.expires_at,
                ],
            )
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("key {}", r.key_id))
                } else {
                    StoreError::Db(e)
                }
            })?;
        if let Some(row) = inserted {
            self.audit_in(&tx, EventKind::SignRequestReceived, |e, key| {
                let mut e = e
                    .request(r.request_id)
                    .field("key_id", r.key_id)
                    .field("digest", hex(r.digest))
                    .field("submitter", r.submitter)
                    .field("summary", integers_only(r.summary))
                    .sensitive(key, "psbt", r.psbt.as_bytes())?;
                if let Some(memo) = r.memo {
                    e = e.sensitive(key, "memo", memo.as_bytes())?;
                }
                Ok(e)
            })
            .await?;
            tx.commit().await?;
            return Ok((request_from_row(&row), true));
        }
        drop(tx);
        // A conflict: either the same PSBT for the same key (return it), or the request id is
        // taken by something else (refuse). Under READ COMMITTED this statement sees the row a
        // concurrent insert committed.
        let existing = client
            .query_opt(
                &client.prepare_cached(&format!(
                    "SELECT {REQUEST_COLUMNS} FROM sign_requests WHERE key_id = $1 AND digest = $2"
                )).await?,
                &[&r.key_id, &r.digest],
            )
            .await?;
        match existing {
            Some(row) => Ok((request_from_row(&row), false)),
            None => Err(StoreError::Refused(format!(
                "request id {} is already used by a different request",
                r.request_id
            ))),
        }
    }

    /// One signing request by id.
    pub async fn sign_request(
        &self,
        request_id: &str,
    ) -> Result<Option<SignRequestRecord>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT {REQUEST_COLUMNS} FROM sign_requests WHERE request_id = $1"
                    ))
                    .await?,
                &[&request_id],
            )
            .await?;
        Ok(row.as_ref().map(request_from_row))
    }

    /// Signing requests, newest first, optionally only those in `state` and/or from
    /// `submitter`, at most `limit` (a negative limit counts as zero).
    pub async fn sign_requests(
        &self,
        state: Option<&str>,
        submitter: Option<&str>,
        limit: i64,
    ) -> Result<Vec<SignRequestRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client.prepare_cached(&format!(
                    "SELECT {REQUEST_COLUMNS} FROM sign_requests \
                     WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR submitter = $2) \
                     ORDER BY created_at DESC, request_id DESC LIMIT $3"
                )).await?,
                &[&state, &submitter, &limit.max(0)],
            )
            .await?;
        Ok(rows.iter().map(request_from_row).collect())
    }

    /// Moves a signing request to `to` if its current state is one of `from`, atomically
    /// (compare-and-set): returns `false`, changing nothing, when the current state is not in
    /// `from`. `error` replaces the stored reason (`None` clears it). Refused when any
    /// `from` → `to` is not an allowed transition (see
    /// [`sign_request_transition_allowed`]), and for `to` = `signed`, which needs the outputs:
    /// use [`Store::finish_sign_request`]. [`StoreError::NotFound`] when there is no such
    /// request.
    pub async fn transition_sign_request(
        &self,
        request_id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.end_sign_request(request_id, from, to, error, false)
            .await
    }

    /// [`Store::transition_sign_request`], and when `void_unreleased` is set and this node has
    /// released no partial signature for the request, its spend stops counting in the window
    /// (`spend_void`), in the same transaction. Only for a decision this node took itself:
    /// its own deadline, a cancellation the client signed, its own tally or its own failed
    /// coordination; never on a peer's word.
    pub async fn end_sign_request(
        &self,
        request_id: &str,
        from: &[&str],
        to: &str,
        error: Option<&str>,
        void_unreleased: bool,
    ) -> Result<bool, StoreError> {
        check_state(to)?;
        if from.is_empty() {
            return Err(StoreError::Refused(format!(
                "no source state given for the change of request {request_id} to {to}"
            )));
        }
        for f in from {
            check_state(f)?;
            if !sign_request_transition_allowed(f, to) {
                return Err(StoreError::Refused(format!(
                    "signing request {request_id} cannot move from {f} to {to}"
                )));
            }
        }
        if to == "signed" {
            // A signed request always carries its outputs (a table constraint, too).
            return Err(StoreError::Refused(format!(
                "signing request {request_id} moves from signing to signed only with its \
                 outputs (finish_sign_request)"
            )));
        }
        let from: Vec<&str> = from.to_vec();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let changed = tx
            .query_opt(
                &tx.prepare_cached(
                    "UPDATE sign_requests s SET state = $2, error = $3, updated_at = now(), \
                 spend_void = s.spend_void OR ($5 AND s.released_at IS NULL) \
                 FROM (SELECT request_id, state AS old_state FROM sign_requests \
                       WHERE request_id = $1 FOR UPDATE) o \
                 WHERE s.request_id = o.request_id AND o.old_state = ANY($4) \
                 RETURNING o.old_state, s.spend_void",
                )
                .await?,
                &[&request_id, &to, &error, &from, &void_unreleased],
            )
            .await?;
        if let Some(row) = changed {
            let old: String = row.get(0);
            let void: bool = row.get(1);
            self.audit_in(&tx, EventKind::RequestStateChanged, |e, _| {
                let e = e
                    .request(request_id)
                    .field("from", old.as_str())
                    .field("to", to)
                    .field("spend_counts", !void);
                Ok(match error {
                    Some(reason) => e.field("reason", reason),
                    None => e,
                })
            })
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        drop(tx);
        let exists = client
            .query_opt(
                &client
                    .prepare_cached("SELECT 1 FROM sign_requests WHERE request_id = $1")
                    .await?,
                &[&request_id],
            )
            .await?
            .is_some();
        if exists {
            Ok(false)
        } else {
            Err(StoreError::NotFound(format!(
                "signing request {request_id}"
            )))
        }
    }

    /// Moves a signing request from `signing` (or `failed`/`expired`: the signatures prove it
    /// was signed) to `signed` with its outputs, in one transaction. Finishing again with the same outputs succeeds and changes nothing; any
    /// other current state is refused.
    pub async fn finish_sign_request(
        &self,
        request_id: &str,
        signed_psbt: &str,
        tx_hex: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT state, signed_psbt, tx_hex FROM sign_requests WHERE request_id = $1 \
                 FOR UPDATE",
                )
                .await?,
                &[&request_id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("signing request {request_id}")))?;
        let state: String = row.get(0);
        let stored_psbt: Option<String> = row.get(1);
        let stored_tx: Option<String> = row.get(2);
        match state.as_str() {
            // Signatures that verify prove the signing completed, whatever this node had
            // concluded about it meanwhile.
            "signing" | "failed" | "expired" => {}
            "signed"
                if stored_psbt.as_deref() == Some(signed_psbt)
                    && stored_tx.as_deref() == tx_hex =>
            {
                return Ok(());
            }
            _ => {
                return Err(StoreError::Refused(format!(
                    "signing request {request_id} cannot move from {state} to signed"
                )));
            }
        }
        tx.execute(
            &tx.prepare_cached(
                "UPDATE sign_requests SET state = 'signed', signed_psbt = $2, tx_hex = $3, \
             error = NULL, updated_at = now() WHERE request_id = $1",
            )
            .await?,
            &[&request_id, &signed_psbt, &tx_hex],
        )
        .await?;
        self.audit_in(&tx, EventKind::RequestStateChanged, |e, _| {
            let e = e
                .request(request_id)
                .field("from", state.as_str())
                .field("to", "signed");
            Ok(match tx_hex {
                Some(t) => e.field("tx_hex", t),
                None => e,
            })
        })
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a node's policy vote. Returns `true` when it is new and `false` when the same
    /// vote (the same signed bytes and fields) was recorded before. A different vote from the
    /// same node for the same request is refused: a node cannot change its vote, with one
    /// exception: a `needs_approvals` vote is superseded by the node's next signed vote, cast
    /// when approvals arrived (it says which approvals it has seen). Refused too
    /// when the decision is unknown, `reasons` is not an array of strings or the entropy is
    /// not 32 bytes; [`StoreError::NotFound`] when the request does not exist.
    pub async fn record_vote(&self, v: &NewVote<'_>) -> Result<bool, StoreError> {
        if !VOTE_DECISIONS.contains(&v.decision) {
            return Err(StoreError::Refused(format!(
                "unknown vote decision {:?} from node {}",
                v.decision, v.node_id
            )));
        }
        let reasons_ok = v
            .reasons
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string));
        if !reasons_ok {
            return Err(StoreError::Refused(format!(
                "vote reasons from node {} must be an array of strings",
                v.node_id
            )));
        }
        if v.entropy.len() != 32 {
            return Err(StoreError::Refused(format!(
                "vote entropy from node {} must be 32 bytes, got {}",
                v.node_id,
                v.entropy.len()
            )));
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                &tx.prepare_cached("INSERT INTO votes (request_id, node_id, decision, reasons, policy_hash, entropy, \
                 signed_vote, signature) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (request_id, node_id) DO UPDATE SET decision = excluded.decision, \
                 reasons = excluded.reasons, policy_hash = excluded.policy_hash, \
                 entropy = excluded.entropy, signed_vote = excluded.signed_vote, \
                 signature = excluded.signature, received_at = now() \
                 WHERE votes.decision = 'needs_approvals' \
                 AND votes.signed_vote <> excluded.signed_vote").await?,
                &[
                    &v.request_id,
                    &v.node_id,
                    &v.decision,
                    v.reasons,
                    &v.policy_hash,
                    &v.entropy,
                    &v.signed_vote,
                    &v.signature,
                ],
            )
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("signing request {}", v.request_id))
                } else {
                    StoreError::Db(e)
                }
            })?;
        if n == 1 {
            if let Some(at) = v.allowed_at {
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE sign_requests SET allowed_at = $2 WHERE request_id = $1",
                    )
                    .await?,
                    &[&v.request_id, &at],
                )
                .await?;
            }
            let own = self
                .audit_identity()
                .is_some_and(|id| id.node_id == v.node_id);
            let kind = if own {
                EventKind::VoteCast
            } else {
                EventKind::VoteReceived
            };
            self.audit_in(&tx, kind, |e, _| {
                Ok(e.request(v.request_id)
                    .field("voter", v.node_id)
                    .field("decision", v.decision)
                    .field("reasons", v.reasons.clone())
                    .field("policy_hash", hex(v.policy_hash))
                    .field("signed_vote_sha256", hex(&Sha256::digest(v.signed_vote))))
            })
            .await?;
            tx.commit().await?;
            return Ok(true);
        }
        drop(tx);
        let row = client
            .query_opt(
                &client
                    .prepare_cached(&format!(
                        "SELECT {VOTE_COLUMNS} FROM votes WHERE request_id = $1 AND node_id = $2"
                    ))
                    .await?,
                &[&v.request_id, &v.node_id],
            )
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(format!(
                    "vote of node {} for request {}",
                    v.node_id, v.request_id
                ))
            })?;
        let stored = vote_from_row(&row);
        // The signature is not compared: a signer may produce a different valid signature
        // over the same bytes. The first one recorded is kept.
        let same = stored.signed_vote == v.signed_vote
            && stored.decision == v.decision
            && &stored.reasons == v.reasons
            && stored.policy_hash == v.policy_hash
            && stored.entropy == v.entropy;
        if same {
            Ok(false)
        } else {
            Err(StoreError::Refused(format!(
                "node {} already voted {} on request {}; a node cannot change its vote",
                v.node_id, stored.decision, v.request_id
            )))
        }
    }

    /// Every vote recorded for a request, by node id.
    pub async fn votes(&self, request_id: &str) -> Result<Vec<VoteRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {VOTE_COLUMNS} FROM votes WHERE request_id = $1 ORDER BY node_id"
                    ))
                    .await?,
                &[&request_id],
            )
            .await?;
        Ok(rows.iter().map(vote_from_row).collect())
    }

    /// Records a verified approval. Returns `true` when it is new and `false` when this
    /// approver's approval was recorded before (the first signature is kept);
    /// [`StoreError::NotFound`] when the request does not exist.
    pub async fn record_approval(
        &self,
        request_id: &str,
        approver: &str,
        signature: &[u8],
    ) -> Result<bool, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                &tx.prepare_cached(
                    "INSERT INTO approvals (request_id, approver, signature) VALUES ($1, $2, $3) \
                 ON CONFLICT (request_id, approver) DO NOTHING",
                )
                .await?,
                &[&request_id, &approver, &signature],
            )
            .await
            .map_err(|e| {
                if is_foreign_key_violation(&e) {
                    StoreError::NotFound(format!("signing request {request_id}"))
                } else {
                    StoreError::Db(e)
                }
            })?;
        if n == 1 {
            self.audit_in(&tx, EventKind::ApprovalAccepted, |e, _| {
                Ok(e.request(request_id)
                    .field("approver", approver)
                    .field("signature", hex(signature)))
            })
            .await?;
            tx.commit().await?;
        }
        Ok(n == 1)
    }

    /// Every approval recorded for a request, by approver.
    pub async fn approvals(&self, request_id: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT request_id, approver, signature, verified_at FROM approvals \
                 WHERE request_id = $1 ORDER BY approver",
                    )
                    .await?,
                &[&request_id],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ApprovalRecord {
                request_id: r.get(0),
                approver: r.get(1),
                signature: r.get(2),
                verified_at: r.get(3),
            })
            .collect())
    }

    /// The spends this node's rolling window for `key_id` must weigh, allowed at or after
    /// `since`, oldest first, leaving out `except` (the request being evaluated again): every
    /// request this node allowed, with what it knows of its end. [`WindowSpend::counts`]
    /// decides which of them count.
    pub async fn window_spends(
        &self,
        key_id: &str,
        since: SystemTime,
        except: Option<&str>,
    ) -> Result<Vec<WindowSpend>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT request_id, allowed_at, COALESCE((summary->>'spend_sat')::bigint, 0), \
                 state, released_at IS NOT NULL, spend_void, expires_at \
                 FROM sign_requests WHERE key_id = $1 AND allowed_at IS NOT NULL \
                 AND allowed_at >= $2 AND request_id <> COALESCE($3, '') ORDER BY allowed_at",
                    )
                    .await?,
                &[&key_id, &since, &except],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| WindowSpend {
                request_id: r.get(0),
                allowed_at: r.get(1),
                amount_sat: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                state: r.get(3),
                released: r.get(4),
                spend_void: r.get(5),
                expires_at: r.get(6),
            })
            .collect())
    }

    /// Dates this node's allowing vote on `request_id` anew (`allowed_at = at`): the node
    /// evaluated the request again after its vote expired and its policy still allows it.
    /// Returns `false` when the request is not open or this node never allowed it.
    pub async fn renew_allowed(
        &self,
        request_id: &str,
        at: SystemTime,
    ) -> Result<bool, StoreError> {
        let open: Vec<&str> = OPEN_STATES.to_vec();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let n = tx
            .execute(
                &tx.prepare_cached(
                    "UPDATE sign_requests SET allowed_at = $2 WHERE request_id = $1 \
                     AND allowed_at IS NOT NULL AND state = ANY($3)",
                )
                .await?,
                &[&request_id, &at, &open],
            )
            .await?;
        if n == 1 {
            self.audit_in(&tx, EventKind::VoteCast, |e, _| {
                Ok(e.request(request_id)
                    .field("decision", "allow")
                    .field("renewed", true))
            })
            .await?;
            tx.commit().await?;
        }
        Ok(n == 1)
    }

    /// Checks, in the transaction `tx` that is about to release a partial signature, that
    /// this node may still release one for `gate.request_id`, and records the release
    /// (`released_at`). The row is locked, so a concurrent cancellation or expiry either
    /// happens before (and the release is refused) or after (and sees the release).
    pub(crate) async fn check_release_in(
        tx: &deadpool_postgres::Transaction<'_>,
        gate: &ReleaseGate<'_>,
    ) -> Result<(), StoreError> {
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT state, allowed_at, expires_at FROM sign_requests \
                     WHERE request_id = $1 FOR UPDATE",
                )
                .await?,
                &[&gate.request_id],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("signing request {}", gate.request_id)))?;
        let state: String = row.get(0);
        let allowed_at: Option<SystemTime> = row.get(1);
        let expires_at: SystemTime = row.get(2);
        if !OPEN_STATES.contains(&state.as_str()) {
            return Err(StoreError::Refused(format!(
                "signing request {} is {state}: no partial signature is released for it",
                gate.request_id
            )));
        }
        if gate.now >= expires_at {
            return Err(StoreError::Refused(format!(
                "signing request {} is past its deadline: no partial signature is released for it",
                gate.request_id
            )));
        }
        match allowed_at {
            Some(at) if at >= gate.allowed_since => {}
            Some(_) => {
                return Err(StoreError::Refused(format!(
                    "this node's vote to allow signing request {} has expired; it evaluates again",
                    gate.request_id
                )));
            }
            None => {
                return Err(StoreError::Refused(format!(
                    "this node has not allowed signing request {}",
                    gate.request_id
                )));
            }
        }
        tx.execute(
            &tx.prepare_cached(
                "UPDATE sign_requests SET released_at = COALESCE(released_at, $2) \
                 WHERE request_id = $1",
            )
            .await?,
            &[&gate.request_id, &gate.now],
        )
        .await?;
        Ok(())
    }

    /// [`Store::check_release_in`] in a transaction of its own: for interactive signing, which
    /// releases its messages without a presignature.
    pub async fn check_release(&self, gate: &ReleaseGate<'_>) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        Self::check_release_in(&tx, gate).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Open requests whose deadline is at or before `now`, at most `limit`, soonest first.
    pub async fn due_sign_requests(
        &self,
        now: SystemTime,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let open: Vec<&str> = OPEN_STATES.to_vec();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(
                        "SELECT request_id FROM sign_requests WHERE state = ANY($1) \
                         AND expires_at <= $2 ORDER BY expires_at LIMIT $3",
                    )
                    .await?,
                &[&open, &now, &limit.max(0)],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Signing requests in `states` not changed since `before`, oldest first, at most
    /// `limit`: what a new leader resumes.
    pub async fn stale_sign_requests(
        &self,
        states: &[&str],
        before: SystemTime,
        limit: i64,
    ) -> Result<Vec<SignRequestRecord>, StoreError> {
        let states: Vec<&str> = states.to_vec();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {REQUEST_COLUMNS} FROM sign_requests \
                     WHERE state = ANY($1) AND updated_at < $2 ORDER BY updated_at LIMIT $3"
                    ))
                    .await?,
                &[&states, &before, &limit.max(0)],
            )
            .await?;
        Ok(rows.iter().map(request_from_row).collect())
    }
}
