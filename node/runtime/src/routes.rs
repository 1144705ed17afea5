//! The node's API endpoints: keys, presignature pools, cluster state and (dev mode only) the
//! raw-digest signing endpoint.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use strongroom_api::{Access, ApiError, Json, Operation, Problem, Role, Routes};
use strongroom_bitcoin::ClusterKey;
use strongroom_store::KeyRecord;

use crate::control::Request;
use crate::engine::{Engine, EngineError, random_id};
use crate::leader::{agreed_aux, signer_sets};

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

/// Every route of the engine.
pub fn routes(engine: Arc<Engine>) -> Routes {
    let readers = Access::AnyOf(vec![Role::Admin, Role::Auditor, Role::Submitter]);
    let mut r = Routes::<Arc<Engine>>::new()
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
