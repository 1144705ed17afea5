//! The node's API endpoints: keys, presignature pools, cluster state and (dev mode only) the
//! raw-digest signing endpoint.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_api::{Access, ApiError, Caller, Json, Operation, Problem, Role, Routes};
use strongroom_bitcoin::ClusterKey;
use strongroom_store::{KeyRecord, NewSignRequest, SignRequestRecord};

use crate::control::Request;
use crate::engine::{Engine, EngineError, random_id};
use crate::leader::{agreed_aux, signer_sets};
use crate::requests::{FINAL_STATES, IntakeFailure, request_id_of, summary_json};

/// How long key generation may wait for the cluster's aux info.
const AUX_WAIT: Duration = Duration::from_secs(1800);
/// How long key generation may take once started.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(600);

/// Maps an engine error to a problem document with a stable type.
pub fn problem(e: &EngineError) -> ApiError {
    let (kind, status, title): (String, StatusCode, &str) = match e {
        EngineError::Refused { kind, .. } => {
            let (status, title) = match *kind {
                "unknown-key" => (StatusCode::NOT_FOUND, "Unknown key"),
                "key-not-ready" => (StatusCode::CONFLICT, "Key not ready"),
                "invalid-path" => (StatusCode::BAD_REQUEST, "Invalid derivation path"),
                "invalid-threshold" => (StatusCode::BAD_REQUEST, "Invalid threshold"),
                "bad-request" => (StatusCode::BAD_REQUEST, "Invalid request"),
                "no-presignature" => (StatusCode::SERVICE_UNAVAILABLE, "No presignature available"),
                "signers-unavailable" => {
                    (StatusCode::SERVICE_UNAVAILABLE, "Too few signers reachable")
                }
                "not-ready" => (StatusCode::SERVICE_UNAVAILABLE, "Cluster not ready"),
                "refused" => (StatusCode::FORBIDDEN, "Refused by policy"),
                "approval-refused" => (StatusCode::FORBIDDEN, "Approval refused"),
                "unknown-request" => (StatusCode::NOT_FOUND, "Unknown signing request"),
                "invalid-psbt" => (StatusCode::BAD_REQUEST, "Invalid PSBT"),
                "request-closed" => (StatusCode::CONFLICT, "Request closed"),
                "peer-not-admitted" => (StatusCode::SERVICE_UNAVAILABLE, "A peer is not admitted"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "Signing failed"),
            };
            ((*kind).to_owned(), status, title)
        }
        EngineError::Protocol { .. } => (
            "signer-misbehaved".into(),
            StatusCode::BAD_GATEWAY,
            "A signer misbehaved",
        ),
        EngineError::Remote { error, .. } if error.kind == "unreachable" => (
            "peer-unavailable".into(),
            StatusCode::SERVICE_UNAVAILABLE,
            "A peer is unavailable",
        ),
        EngineError::Remote { error, .. } if error.kind == "peer-not-admitted" => (
            "peer-not-admitted".into(),
            StatusCode::SERVICE_UNAVAILABLE,
            "A peer is not admitted",
        ),
        EngineError::Remote { .. } => (
            "peer-refused".into(),
            StatusCode::BAD_GATEWAY,
            "A peer refused",
        ),
        EngineError::Store(_) => (
            "database-unavailable".into(),
            StatusCode::SERVICE_UNAVAILABLE,
            "Database unavailable",
        ),
        EngineError::Token(_) | EngineError::Transport(_) => (
            "internal".into(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
        ),
    };
    let mut p = Problem::new(kind, status, title).with_detail(e.to_string());
    let culprits = e.culprits();
    if !culprits.is_empty() {
        p = p.with_extension("culprits", json!(culprits));
    }
    p.into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    name: String,
    threshold: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignDigest {
    key_id: String,
    path: String,
    digest: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Submit {
    key_id: String,
    psbt: String,
    #[serde(default)]
    memo: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Approval {
    approver: String,
    signature: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowQuery {
    #[serde(default)]
    wait_secs: Option<u64>,
    /// With `wait_secs`: answer only once the state is one of these (comma-separated), final,
    /// or the wait is over.
    #[serde(default)]
    until: Option<String>,
}

/// Longest long poll.
const MAX_WAIT_SECS: u64 = 30;
/// Longest memo (peers' proposals are held to the same).
const MAX_MEMO_CHARS: usize = crate::bounds::MAX_MEMO_CHARS;

/// Every route of the engine.
pub fn routes(engine: Arc<Engine>) -> Routes {
    let readers = Access::AnyOf(vec![Role::Admin, Role::Auditor, Role::Submitter]);
    let request_readers = Access::AnyOf(vec![
        Role::Admin,
        Role::Auditor,
        Role::Submitter,
        Role::Approver,
    ]);
    let request_schema = json!({"type": "object", "required": ["request_id", "key_id", "state", "digest", "summary", "decisions", "approvals"],
        "properties": {
            "request_id": {"type": "string"}, "key_id": {"type": "string"},
            "state": {"type": "string", "enum": ["voting", "awaiting_approvals", "approved", "signing", "signed", "rejected", "failed", "expired", "cancelled"]},
            "digest": {"type": "string", "description": "hex; approvers sign these 32 bytes"},
            "summary": {"type": "object"},
            "decisions": {"type": "array", "items": {"type": "object"}},
            "approvals": {"type": "array", "items": {"type": "object"}},
            "needs": {"type": ["object", "null"]},
            "psbt": {"type": "string", "description": "base64; the signed PSBT once signed"},
            "tx_hex": {"type": ["string", "null"]}}});
    let mut r = Routes::<Arc<Engine>>::new()
        .post(
            "/v1/sign-requests",
            submit,
            Operation::new("submit_sign_request", "Submit a PSBT for signing", Access::role(Role::Submitter))
                .tag("signing")
                .description("Every node checks the PSBT, evaluates it against its own policy and votes; the request is signed once t nodes allow it. Submitting the same PSBT for the same key again returns the existing request.")
                .request_json(json!({"type": "object", "required": ["key_id", "psbt"],
                    "properties": {"key_id": {"type": "string"}, "psbt": {"type": "string", "description": "base64 (BIP-174)"}, "memo": {"type": "string"}}}))
                .response_json(202, "Accepted", json!({"type": "object", "required": ["request_id", "state"]}))
                .problem(400, "The PSBT is malformed or not signable; the detail names the input, output or field")
                .problem(404, "Unknown key")
                .problem(429, "Too many requests in flight on this node"),
        )
        .get(
            "/v1/sign-requests",
            list_requests,
            Operation::new("list_sign_requests", "List signing requests (a submitter sees its own)", request_readers.clone())
                .tag("signing")
                .query("state", "Only requests in this state", false, json!({"type": "string"}))
                .query("limit", "At most this many (default 100, at most 1000)", false, json!({"type": "integer"}))
                .response_json(200, "The requests, newest first", json!({"type": "object"})),
        )
        .get(
            "/v1/sign-requests/{request_id}",
            show_request,
            Operation::new("show_sign_request", "Show one signing request", request_readers)
                .tag("signing")
                .path_param("request_id", "Request id", json!({"type": "string"}))
                .query("wait_secs", "Long poll: answer once the state changes or after this many seconds (at most 30)", false, json!({"type": "integer"}))
                .query("until", "With wait_secs: answer only once the state is one of these (comma-separated) or final", false, json!({"type": "string"}))
                .response_json(200, "The request", request_schema)
                .problem(404, "Unknown request"),
        )
        .post(
            "/v1/sign-requests/{request_id}/approvals",
            approve_request,
            Operation::new("approve_sign_request", "Approve a signing request", Access::role(Role::Approver))
                .tag("signing")
                .path_param("request_id", "Request id", json!({"type": "string"}))
                .request_json(json!({"type": "object", "required": ["approver", "signature"],
                    "properties": {"approver": {"type": "string"}, "signature": {"type": "string", "description": "hex Ed25519 signature over the 32 digest bytes"}}}))
                .response_json(200, "Approval accepted", json!({"type": "object"}))
                .problem(403, "Unknown approver or bad signature")
                .problem(404, "Unknown request")
                .problem(409, "The request is no longer open for approvals"),
        )
        .post(
            "/v1/sign-requests/{request_id}/cancel",
            cancel_request,
            Operation::new("cancel_sign_request", "Cancel a signing request that is not yet being signed", Access::AnyOf(vec![Role::Submitter, Role::Admin]))
                .tag("signing")
                .description("The request's submitter or an admin cancels it: it ends `cancelled` on every node, which never signs it afterwards. A request already being signed (or ended) cannot be cancelled.")
                .path_param("request_id", "Request id", json!({"type": "string"}))
                .response_json(200, "Cancelled", json!({"type": "object", "required": ["request_id", "state"]}))
                .problem(404, "Unknown request (or not this submitter's)")
                .problem(409, "The request is being signed or has ended"),
        )
        .get(
            "/v1/policy",
            show_policy,
            Operation::new("show_policy", "This node's policy: id, hash, rules", Access::AnyOf(vec![Role::Admin, Role::Auditor, Role::Submitter, Role::Approver]))
                .tag("signing")
                .response_json(200, "The policy", json!({"type": "object"})),
        )
        .post(
            "/v1/keys",
            create_key,
            Operation::new("create_key", "Generate a threshold key", Access::role(Role::Admin))
                .tag("keys")
                .request_json(json!({"type": "object", "required": ["name", "threshold"],
                    "properties": {"name": {"type": "string"}, "threshold": {"type": "integer", "minimum": 2}}}))
                .response_json(202, "Key generation started", json!({"type": "object"}))
                .problem(400, "Invalid name or threshold"),
        )
        .get(
            "/v1/keys",
            list_keys,
            Operation::new("list_keys", "List keys", readers.clone())
                .tag("keys")
                .response_json(200, "The keys", json!({"type": "object"})),
        )
        .get(
            "/v1/keys/{key_id}",
            show_key,
            Operation::new("show_key", "Show one key", readers.clone())
                .tag("keys")
                .path_param("key_id", "Key id", json!({"type": "string"}))
                .response_json(200, "The key", json!({"type": "object"}))
                .problem(404, "Unknown key"),
        )
        .get(
            "/v1/presignatures",
            presignatures,
            Operation::new(
                "presignatures",
                "Presignature pools this node holds",
                Access::AnyOf(vec![Role::Admin, Role::Auditor]),
            )
            .tag("engine")
            .response_json(200, "Pools", json!({"type": "object"})),
        )
        .get(
            "/v1/cluster",
            cluster,
            Operation::new(
                "cluster",
                "Members, leader and peer connections",
                Access::AnyOf(vec![Role::Admin, Role::Auditor]),
            )
            .tag("engine")
            .response_json(200, "Cluster state", json!({"type": "object"})),
        );
    if engine.cfg.node.dev_mode && engine.cfg.dev.dangerous_sign_digest_endpoint {
        r = r.post(
            "/v1/dangerous-dev/sign-digest",
            sign_digest,
            Operation::new(
                "dangerous_dev_sign_digest",
                "DEV MODE ONLY: sign a 32-byte digest handed in by the client",
                Access::role(Role::Submitter),
            )
            .tag("dev")
            .description("Served only by nodes in dev mode with [dev] dangerous_sign_digest_endpoint; an appliance never signs a client's hash.")
            .request_json(json!({"type": "object", "required": ["key_id", "path", "digest"]}))
            .response_json(200, "The signature", json!({"type": "object"}))
            .problem(502, "A signer misbehaved (named in `culprits`)")
            .problem(503, "No presignature and no fallback"),
        );
    }
    if engine.cfg.node.dev_mode && engine.cfg.dev.dangerous_peer_request_endpoint {
        r = r.post(
            "/v1/dangerous-dev/peer-request",
            peer_request,
            Operation::new(
                "dangerous_dev_peer_request",
                "DEV MODE ONLY: send a control message to a peer as this node",
                Access::role(Role::Admin),
            )
            .tag("dev")
            .description("Served only by nodes in dev mode with [dev] dangerous_peer_request_endpoint: tests play a compromised member with it.")
            .request_json(json!({"type": "object", "required": ["to", "request"]}))
            .response_json(200, "The peer's reply (or its error)", json!({"type": "object"})),
        );
    }
    r = crate::audit::routes(r);
    r.with_state(engine)
}

fn key_json(engine: &Engine, k: &KeyRecord) -> Value {
    let mut v = json!({
        "key_id": k.key_id,
        "name": k.name,
        "state": k.state.as_str(),
        "threshold": k.threshold,
        "participants": k.participants,
        "network": engine.cfg.node.network,
        "xpub": null,
        "fingerprint": null,
        "descriptors": null,
    });
    if let (Some(pk), Some(cc)) = (&k.public_key, &k.chain_code) {
        let parsed = <[u8; 33]>::try_from(pk.as_slice())
            .ok()
            .zip(<[u8; 32]>::try_from(cc.as_slice()).ok())
            .and_then(|(pk, cc)| ClusterKey::new(engine.network, &pk, cc).ok());
        if let Some(ck) = parsed {
            v["xpub"] = json!(ck.xpub_string());
            v["fingerprint"] = json!(ck.fingerprint().to_string());
            v["descriptors"] = json!({
                "receive": ck.receive_descriptor(),
                "change": ck.change_descriptor(),
            });
        }
    }
    if let Some(err) = &k.error {
        v["error"] = json!(err);
    }
    v
}

async fn create_key(
    State(engine): State<Arc<Engine>>,
    Json(body): Json<CreateKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "give the key a name of 1 to 64 printable characters",
        ));
    }
    let n = engine.members().len();
    if body.threshold < 2 || usize::from(body.threshold) > n {
        return Err(ApiError::invalid_field(
            "threshold",
            format!("threshold must be between 2 and the number of members ({n})"),
        ));
    }
    let key_id = hex::encode(random_id::<32>());
    engine
        .store
        .insert_key(&key_id, &name, body.threshold, engine.members())
        .await
        .map_err(|e| problem(&EngineError::Store(e)))?;
    tokio::spawn(generate_key(
        engine.clone(),
        key_id.clone(),
        name,
        body.threshold,
    ));
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"key_id": key_id, "state": "generating"})),
    ))
}

/// Waits for the cluster's aux info, then runs key generation with every member.
async fn generate_key(engine: Arc<Engine>, key_id: String, name: String, threshold: u16) {
    let started = std::time::Instant::now();
    let aux_id = loop {
        let statuses = engine.all_statuses(Duration::from_secs(3)).await;
        if let Some(aux) = agreed_aux(&statuses) {
            break aux;
        }
        if started.elapsed() > AUX_WAIT {
            let _ = engine
                .store
                .mark_key_failed(&key_id, "the cluster's aux info was not ready within 30 minutes: check that every node runs and has its primes")
                .await;
            return;
        }
        tracing::info!(key_id = %key_id, "key generation waits for the cluster's aux info");
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let session_hex = hex::encode(random_id::<32>());
    tracing::info!(key_id = %key_id, name = %name, threshold, "key generation started");
    let results = engine
        .call_all(&engine.parties(), KEYGEN_TIMEOUT, |_| Request::Keygen {
            session_id: session_hex.clone(),
            key_id: key_id.clone(),
            name: name.clone(),
            threshold,
            aux_id: aux_id.clone(),
        })
        .await;
    if let Some(err) = results.iter().find_map(|(_, r)| r.as_ref().err()) {
        tracing::warn!(key_id = %key_id, error = %err, "key generation failed");
        let _ = engine
            .store
            .mark_key_failed(&key_id, &err.to_string())
            .await;
    }
}

async fn list_keys(State(engine): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let keys = engine
        .store
        .keys()
        .await
        .map_err(|e| problem(&EngineError::Store(e)))?;
    let list: Vec<Value> = keys.iter().map(|k| key_json(&engine, k)).collect();
    Ok(Json(json!({"keys": list})))
}

async fn show_key(
    State(engine): State<Arc<Engine>>,
    Path(key_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let key = engine
        .store
        .key(&key_id)
        .await
        .map_err(|e| problem(&EngineError::Store(e)))?
        .ok_or_else(|| {
            problem(&EngineError::Refused {
                kind: "unknown-key",
                detail: format!("no key {key_id}; list keys with GET /v1/keys"),
            })
        })?;
    Ok(Json(key_json(&engine, &key)))
}

async fn presignatures(State(engine): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let counts = engine
        .store
        .pool_counts()
        .await
        .map_err(|e| problem(&EngineError::Store(e)))?;
    let keys = engine
        .store
        .keys()
        .await
        .map_err(|e| problem(&EngineError::Store(e)))?;
    let pool = &engine.cfg.pool;
    let mut pools = Vec::new();
    for k in keys.iter().filter(|k| k.state.as_str() == "ready") {
        let n = u16::try_from(k.participants.len()).unwrap_or(u16::MAX);
        for set in signer_sets(n, k.threshold) {
            let Ok(name) = engine.signer_set_name(&set) else {
                continue;
            };
            let holder = set.contains(&engine.my_index);
            let c = counts
                .iter()
                .find(|c| c.key_id == k.key_id && c.signer_set == name);
            pools.push(json!({
                "key_id": k.key_id,
                "signer_set": name.split(',').collect::<Vec<_>>(),
                "held_by_this_node": holder,
                "available": c.map_or(0, |c| c.available),
                "reserved": c.map_or(0, |c| c.reserved),
                "consumed": c.map_or(0, |c| c.consumed),
                "target": pool.target,
                "low_water": pool.low_water,
                "max": pool.max,
            }));
        }
    }
    Ok(Json(json!({"node_id": engine.node_id(), "pools": pools})))
}

async fn cluster(State(engine): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let coord = engine.coord.borrow().clone();
    let peers = engine.transport.peer_status();
    let aux = engine
        .store
        .aux_info()
        .await
        .map_err(|e| problem(&EngineError::Store(e)))?;
    let members: Vec<Value> = engine
        .members()
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let p = peers.iter().find(|p| p.node.as_str() == m);
            json!({
                "node_id": m,
                "party_index": i,
                "this_node": *m == engine.node_id(),
                "lease": coord.members.contains(m),
                "connected": p.map(|p| p.connected),
                "connection_id": p.and_then(|p| p.connection_id.clone()),
                "rtt_ms": p.and_then(|p| p.rtt).map(|d| d.as_secs_f64() * 1000.0),
                "last_error": p.and_then(|p| p.last_error.clone()),
                "reconnect_attempts": p.map(|p| p.reconnect_attempts),
                "admission": engine.admission_json(m),
            })
        })
        .collect();
    let primes = engine.primes_status();
    Ok(Json(json!({
        "cluster_id": engine.cfg.node.cluster_id,
        "node_id": engine.node_id(),
        "leader": coord.leader,
        "is_leader": coord.is_leader,
        "members": members,
        "etcd": {"reachable": coord.etcd_reachable, "last_error": coord.last_error},
        "aux_info": {"ready": aux.is_some(), "aux_id": aux.map(|a| a.aux_id)},
        "primes": {"ready": primes.ready, "detail": primes.detail},
        "dev_mode": engine.cfg.node.dev_mode,
        "attestation": engine.attestation_json(),
    })))
}

async fn sign_digest(
    State(engine): State<Arc<Engine>>,
    Json(body): Json<SignDigest>,
) -> Result<Json<Value>, ApiError> {
    // A task of its own: a signing that started finishes even if the client goes away.
    let task = tokio::spawn(async move {
        crate::signing::sign_digest(&engine, &body.key_id, &body.path, &body.digest).await
    });
    match task.await {
        Ok(Ok(out)) => Ok(Json(serde_json::to_value(out).map_err(ApiError::internal)?)),
        Ok(Err(e)) => Err(problem(&e)),
        Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerRequest {
    /// Member id of the peer.
    to: String,
    /// The control message, as the transport carries it.
    request: Request,
}

/// The dev hook behind `POST /v1/dangerous-dev/peer-request`: the peer's reply, or its error
/// as `{"error": {"kind", "detail"}}`.
async fn peer_request(
    State(engine): State<Arc<Engine>>,
    Json(body): Json<PeerRequest>,
) -> Result<Json<Value>, ApiError> {
    tracing::warn!(to = %body.to, request = body.request.kind(), "DANGEROUS test hook: sending a hand-made control message");
    let index = engine
        .members()
        .iter()
        .position(|m| *m == body.to)
        .and_then(|i| u16::try_from(i).ok())
        .ok_or_else(|| ApiError::invalid_field("to", "not a member id"))?;
    match engine
        .call(index, body.request, Duration::from_secs(30))
        .await
    {
        Ok(reply) => Ok(Json(
            serde_json::to_value(reply).map_err(ApiError::internal)?,
        )),
        Err(EngineError::Remote { error, .. }) => Ok(Json(
            json!({"error": {"kind": error.kind, "detail": error.detail}}),
        )),
        Err(e) => Err(problem(&e)),
    }
}

fn store_problem(e: strongroom_store::StoreError) -> ApiError {
    problem(&EngineError::Store(e))
}

async fn submit(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Json(body): Json<Submit>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if let Some(memo) = &body.memo {
        if memo.chars().count() > MAX_MEMO_CHARS || memo.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "memo",
                format!("a memo is at most {MAX_MEMO_CHARS} printable characters"),
            ));
        }
    }
    let parsed = match engine.intake(&body.key_id, &body.psbt).await {
        Ok(p) => p,
        Err(IntakeFailure::Engine(e)) => return Err(problem(&e)),
        Err(IntakeFailure::Psbt(e)) => {
            tracing::info!(client = caller.name(), error = %e, "PSBT refused at intake");
            let mut p = Problem::new("invalid-psbt", StatusCode::BAD_REQUEST, "Invalid PSBT")
                .with_detail(e.to_string())
                .with_extension("field", "psbt");
            if let Some(i) = e.input() {
                p = p.with_extension("input", i);
            }
            if let Some(o) = e.output() {
                p = p.with_extension("output", o);
            }
            return Err(p.into());
        }
    };
    let digest = parsed.digest().to_bytes();
    let request_id = request_id_of(&digest);
    let accepted = |record: &SignRequestRecord, existing: bool| {
        (
            StatusCode::ACCEPTED,
            Json(
                json!({"request_id": record.request_id, "state": record.state, "existing": existing}),
            ),
        )
    };
    if let Some(existing) = engine
        .store
        .sign_request(&request_id)
        .await
        .map_err(store_problem)?
    {
        return Ok(accepted(&existing, true));
    }
    let Ok(permit) = engine.requests.in_flight.clone().try_acquire_owned() else {
        return Err(Problem::new(
            "too-busy",
            StatusCode::TOO_MANY_REQUESTS,
            "Too many signing requests in flight",
        )
        .with_detail(format!(
            "node {} coordinates {} requests already; retry shortly or submit to another node",
            engine.node_id(),
            engine.cfg.signing.max_in_flight
        ))
        .with_retry_after(Duration::from_secs(1))
        .into());
    };
    let summary = summary_json(&parsed);
    let (record, created) = engine
        .store
        .insert_sign_request(&NewSignRequest {
            request_id: &request_id,
            key_id: &body.key_id,
            digest: &digest,
            psbt: body.psbt.trim(),
            memo: body.memo.as_deref(),
            submitter: caller.name(),
            summary: &summary,
            expires_at: engine.request_deadline(),
        })
        .await
        .map_err(store_problem)?;
    if !created {
        return Ok(accepted(&record, true));
    }
    tracing::info!(request_id = %request_id, key_id = %body.key_id, client = caller.name(), "signing request received");
    let response = accepted(&record, false);
    let engine = engine.clone();
    tokio::spawn(async move {
        let _permit = permit;
        crate::requests::put_to_vote(engine, record).await;
    });
    Ok(response)
}

/// Whether `caller` may read requests of other submitters.
fn reads_all(caller: &Caller) -> bool {
    caller.has(Role::Auditor) || caller.has(Role::Admin) || caller.has(Role::Approver)
}

async fn request_json(engine: &Engine, r: &SignRequestRecord) -> Result<Value, ApiError> {
    let votes = engine
        .store
        .votes(&r.request_id)
        .await
        .map_err(store_problem)?;
    let approvals = engine
        .store
        .approvals(&r.request_id)
        .await
        .map_err(store_problem)?;
    let needs = if r.state == "awaiting_approvals" {
        engine.needs(r).await
    } else {
        None
    };
    let time = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    Ok(json!({
        "request_id": r.request_id,
        "key_id": r.key_id,
        "state": r.state,
        "digest": hex::encode(&r.digest),
        "summary": r.summary,
        "decisions": votes.iter().map(|v| json!({
            "node_id": v.node_id,
            "decision": v.decision,
            "reasons": v.reasons,
            "policy_hash": hex::encode(&v.policy_hash),
        })).collect::<Vec<_>>(),
        "approvals": approvals.iter().map(|a| json!({
            "approver": a.approver,
            "verified_at": time(a.verified_at),
        })).collect::<Vec<_>>(),
        "needs": needs,
        "psbt": r.signed_psbt.as_ref().unwrap_or(&r.psbt),
        "tx_hex": r.tx_hex,
        "memo": r.memo,
        "submitter": r.submitter,
        "error": r.error,
        "created_at": time(r.created_at),
        "updated_at": time(r.updated_at),
        "node_id": engine.node_id(),
    }))
}

async fn list_requests(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(state) = &q.state {
        if !strongroom_store::SIGN_REQUEST_STATES.contains(&state.as_str()) {
            return Err(ApiError::invalid_field(
                "state",
                format!(
                    "unknown state '{state}'; states are {}",
                    strongroom_store::SIGN_REQUEST_STATES.join(", ")
                ),
            ));
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let submitter = (!reads_all(&caller)).then(|| caller.name().to_owned());
    let records = engine
        .store
        .sign_requests(q.state.as_deref(), submitter.as_deref(), limit)
        .await
        .map_err(store_problem)?;
    let mut list = Vec::with_capacity(records.len());
    for r in &records {
        list.push(request_json(&engine, r).await?);
    }
    Ok(Json(json!({"sign_requests": list})))
}

async fn load_visible(
    engine: &Engine,
    caller: &Caller,
    request_id: &str,
) -> Result<SignRequestRecord, ApiError> {
    let unknown = || {
        problem(&EngineError::Refused {
            kind: "unknown-request",
            detail: format!(
                "no signing request {request_id} on node {}",
                engine.node_id()
            ),
        })
    };
    let record = engine
        .store
        .sign_request(request_id)
        .await
        .map_err(store_problem)?
        .ok_or_else(unknown)?;
    if !reads_all(caller) && record.submitter != caller.name() {
        return Err(unknown());
    }
    Ok(record)
}

async fn show_request(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Path(request_id): Path<String>,
    Query(q): Query<ShowQuery>,
) -> Result<Json<Value>, ApiError> {
    let wait = Duration::from_secs(q.wait_secs.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before the first read so no change slips between the two.
    let mut changes = engine.requests.changed.subscribe();
    let first = load_visible(&engine, &caller, &request_id).await?;
    let until: Vec<String> = q
        .until
        .as_deref()
        .map(|u| u.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    for state in &until {
        if !strongroom_store::SIGN_REQUEST_STATES.contains(&state.as_str()) {
            return Err(ApiError::invalid_field(
                "until",
                format!(
                    "unknown state '{state}'; states are {}",
                    strongroom_store::SIGN_REQUEST_STATES.join(", ")
                ),
            ));
        }
    }
    let initial = first.state.clone();
    let mut record = first;
    let waiting = |r: &SignRequestRecord| {
        if FINAL_STATES.contains(&r.state.as_str()) {
            return false;
        }
        if until.is_empty() {
            r.state == initial
        } else {
            !until.contains(&r.state)
        }
    };
    while !wait.is_zero() && waiting(&record) {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Err(_) => break,
            Ok(Ok(id)) if id != request_id => continue,
            Ok(Ok(_)) | Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {
                record = load_visible(&engine, &caller, &request_id).await?;
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => break,
        }
    }
    Ok(Json(request_json(&engine, &record).await?))
}

async fn approve_request(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Path(request_id): Path<String>,
    Json(body): Json<Approval>,
) -> Result<Json<Value>, ApiError> {
    let record = load_visible(&engine, &caller, &request_id).await?;
    if !matches!(record.state.as_str(), "voting" | "awaiting_approvals") {
        return Err(problem(&EngineError::Refused {
            kind: "request-closed",
            detail: format!(
                "request {request_id} is {}; approvals no longer change it",
                record.state
            ),
        }));
    }
    if let Err(e) = engine
        .accept_approval(&record, &body.approver, &body.signature)
        .await
    {
        tracing::warn!(request_id = %request_id, client = caller.name(), approver = %body.approver, error = %e, "approval refused");
        return Err(problem(&e));
    }
    crate::requests::approve(&engine, &request_id, &body.approver, &body.signature)
        .await
        .map_err(|e| problem(&e))?;
    let state = engine
        .store
        .sign_request(&request_id)
        .await
        .map_err(store_problem)?
        .map_or(record.state, |r| r.state);
    Ok(Json(
        json!({"request_id": request_id, "state": state, "approver": body.approver}),
    ))
}

async fn cancel_request(
    State(engine): State<Arc<Engine>>,
    caller: Caller,
    Path(request_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // The submitter sees (and cancels) its own requests; an admin any.
    let record = engine
        .store
        .sign_request(&request_id)
        .await
        .map_err(store_problem)?
        .filter(|r| caller.has(Role::Admin) || r.submitter == caller.name())
        .ok_or_else(|| {
            problem(&EngineError::Refused {
                kind: "unknown-request",
                detail: format!(
                    "no signing request {request_id} of yours on node {}",
                    engine.node_id()
                ),
            })
        })?;
    engine
        .cancel(&record, caller.name())
        .await
        .map_err(|e| problem(&e))?;
    crate::requests::relay_cancel(&engine, &request_id, caller.name()).await;
    Ok(Json(
        json!({"request_id": request_id, "state": "cancelled"}),
    ))
}

async fn show_policy(State(engine): State<Arc<Engine>>) -> Result<Json<Value>, ApiError> {
    let Some(policy) = engine.requests.policy.as_ref() else {
        return Ok(Json(json!({"node_id": engine.node_id(), "policy": null})));
    };
    Ok(Json(json!({
        "node_id": engine.node_id(),
        "policy": {
            "id": policy.id(),
            "version": policy.version(),
            "description": policy.description(),
            "hash": policy.hash().to_hex(),
            "rules": policy.rules().iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "approvers": policy.approvers().map(|a| a.name().to_owned()).collect::<Vec<_>>(),
        }
    })))
}
