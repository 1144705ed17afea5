//! Recording the node's security-relevant events in its audit log (`strongroom-audit`).
//!
//! An event that records a state change of this node's database is appended in the same
//! transaction as the change (the store's `append_audit_in`); an event with no state change
//! (a refused peer, a failed client authentication, start and stop) is appended on its own
//! with [`Engine::record`].

use strongroom_audit::{AuditEvent, EventKind};

use crate::engine::Engine;

impl Engine {
    /// A new event of this node.
    pub(crate) fn event(&self, kind: EventKind) -> AuditEvent {
        AuditEvent::new(self.me.clone(), kind)
    }

    /// Appends an event that records no state change of the database, in a transaction of
    /// its own. A failure is logged: the event itself has already happened.
    pub(crate) async fn record(&self, event: AuditEvent) {
        let kind = event.kind().to_owned();
        if let Err(e) = self.store.append_audit(event).await {
            tracing::error!(kind, error = %e, "cannot append to the audit log");
        }
    }
}

/// The node's audit key: HMAC-SHA256 computed by its token, under a key that never leaves it.
pub struct TokenAuditKey(pub strongroom_keystore::Token);

impl std::fmt::Debug for TokenAuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TokenAuditKey")
            .field(&self.0.label())
            .finish()
    }
}

impl strongroom_audit::AuditKey for TokenAuditKey {
    fn mac(&self, message: &[u8]) -> Result<[u8; 32], strongroom_audit::AuditKeyError> {
        self.0
            .audit_hmac(message)
            .map_err(|e| strongroom_audit::AuditKeyError(e.to_string()))
    }
}

/// Most entries one export answer holds (the CLI asks page by page).
const EXPORT_LIMIT: u32 = 10_000;

/// How long one client's exports are recorded as one event.
const EXPORT_RECORD_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// Signs a checkpoint of the log's newest entry with the token identity key when one is
    /// due under `schedule` (or always, with `force`, when the newest entry is not covered
    /// yet). Returns the seq it signed.
    pub(crate) async fn checkpoint_if_due(
        &self,
        schedule: &strongroom_audit::CheckpointSchedule,
        force: bool,
    ) -> Result<Option<u64>, crate::engine::EngineError> {
        let head = self.store.audit_head().await?;
        let last = head
            .last_checkpoint
            .as_ref()
            .map(|c| (c.seq, c.time_unix_ms));
        let now = crate::requests::now_ms();
        let due = schedule.due(head.head_seq(), last, now).or_else(|| {
            let head_seq = head.head_seq()?;
            (force && last.is_none_or(|(seq, _)| seq < head_seq)).then_some(head_seq)
        });
        let Some(seq) = due else {
            return Ok(None);
        };
        // The head may have moved since it was read: sign the hash of entry `seq` as stored.
        let entry = self
            .store
            .audit_entries(seq, seq, 1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                crate::engine::EngineError::refused(
                    "internal",
                    format!("audit entry {seq} vanished"),
                )
            })?;
        let identity = self.token.identity();
        let signer = |message: &[u8]| -> Result<[u8; 64], String> {
            identity
                .sign(message)
                .map(|s| s.to_bytes())
                .map_err(|e| e.to_string())
        };
        let checkpoint = strongroom_audit::Checkpoint::sign(
            &self.cfg.node.cluster_id,
            &self.me,
            seq,
            entry.hash,
            now,
            &signer,
        )
        .map_err(|e| crate::engine::EngineError::Token(e.to_string()))?;
        self.store.insert_checkpoint(&checkpoint).await?;
        tracing::debug!(seq, "signed an audit checkpoint");
        Ok(Some(seq))
    }

    /// Signs checkpoints on the configured schedule, for the life of the node.
    pub(crate) async fn checkpoint_loop(self: std::sync::Arc<Self>) {
        let schedule = self.cfg.audit.schedule();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Err(e) = self.checkpoint_if_due(&schedule, false).await {
                tracing::warn!(error = %e, "cannot sign an audit checkpoint; retrying");
            }
        }
    }

    /// Records an export by `client` at most once per [`EXPORT_RECORD_INTERVAL`] (an export
    /// reads page by page; recording every page would add entries as fast as they are read).
    async fn record_export(&self, client: &str, from_seq: u64, to_seq: Option<u64>) {
        let due = {
            let mut last = crate::engine::lock(&self.audit_exports);
            let now = std::time::Instant::now();
            match last.get(client) {
                Some(at) if now.duration_since(*at) < EXPORT_RECORD_INTERVAL => false,
                _ => {
                    last.insert(client.to_owned(), now);
                    true
                }
            }
        };
        if due {
            let event = self
                .event(EventKind::AuditExported)
                .field("client", client)
                .field("from_seq", from_seq);
            let event = match to_seq {
                Some(to) => event.field("to_seq", to),
                None => event,
            };
            self.record(event).await;
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    #[serde(default)]
    from_seq: Option<u64>,
    #[serde(default)]
    to_seq: Option<u64>,
}

/// `GET /v1/audit/export`: JSON Lines of the entries in the range (at most
/// [`EXPORT_LIMIT`]) and the checkpoints among them. The node first signs a checkpoint of its
/// newest entry if none covers it, so a complete export ends on a signed checkpoint.
async fn export(
    axum::extract::State(engine): axum::extract::State<std::sync::Arc<Engine>>,
    caller: strongroom_api::Caller,
    axum::extract::Query(q): axum::extract::Query<ExportQuery>,
) -> Result<axum::response::Response, strongroom_api::ApiError> {
    use axum::response::IntoResponse as _;
    let from = q.from_seq.unwrap_or(0);
    let to = q.to_seq.unwrap_or(u64::MAX);
    if from > to {
        return Err(strongroom_api::Problem::new(
            "bad-request",
            axum::http::StatusCode::BAD_REQUEST,
            "Invalid range",
        )
        .with_detail(format!("from_seq {from} is after to_seq {to}"))
        .into());
    }
    engine.record_export(caller.name(), from, q.to_seq).await;
    engine
        .checkpoint_if_due(&engine.cfg.audit.schedule(), true)
        .await
        .map_err(|e| crate::routes::problem(&e))?;
    let store_err = |e| crate::routes::problem(&crate::engine::EngineError::Store(e));
    let entries = engine
        .store
        .audit_entries(from, to, EXPORT_LIMIT)
        .await
        .map_err(store_err)?;
    let last = entries.last().map_or(from, |e| e.seq);
    let checkpoints = if entries.is_empty() {
        Vec::new()
    } else {
        engine
            .store
            .audit_checkpoints(from, last)
            .await
            .map_err(store_err)?
    };
    let body = strongroom_audit::export::export_lines(&entries, &checkpoints).map_err(|e| {
        crate::routes::problem(&crate::engine::EngineError::refused(
            "internal",
            e.to_string(),
        ))
    })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/jsonl")],
        body,
    )
        .into_response())
}

/// `GET /v1/audit/chain`: the node's certificate chain and the cluster CA, as PEM.
async fn chain(
    axum::extract::State(engine): axum::extract::State<std::sync::Arc<Engine>>,
) -> Result<strongroom_api::Json<strongroom_audit::AuditChain>, strongroom_api::ApiError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| {
            crate::routes::problem(&crate::engine::EngineError::refused(
                "internal",
                format!("cannot read {}: {e}", path.display()),
            ))
        })
    };
    Ok(strongroom_api::Json(strongroom_audit::AuditChain {
        chain_pem: read(&engine.cfg.transport.certificate)?,
        ca_pem: read(&engine.cfg.transport.ca_cert)?,
    }))
}

/// The audit endpoints (role `auditor` or `admin`).
pub(crate) fn routes(
    r: strongroom_api::Routes<std::sync::Arc<Engine>>,
) -> strongroom_api::Routes<std::sync::Arc<Engine>> {
    use serde_json::json;
    use strongroom_api::{Access, Operation, Role};
    let auditors = Access::AnyOf(vec![Role::Auditor, Role::Admin]);
    r.get(
        strongroom_audit::export::EXPORT_PATH,
        export,
        Operation::new("audit_export", "Export this node's audit log as JSON Lines", auditors.clone())
            .tag("audit")
            .description("One JSON object per line: the entries with from_seq <= seq <= to_seq in seq order (at most 10000 per answer; ask again from the last seq + 1), then the signed checkpoints among them. The node signs a checkpoint of its newest entry first if none covers it. `strongroom audit export` writes a bundle from it; `strongroom audit verify` checks the bundle offline.")
            .query("from_seq", "First seq (default 0)", false, json!({"type": "integer", "minimum": 0}))
            .query("to_seq", "Last seq (default: the newest entry)", false, json!({"type": "integer", "minimum": 0}))
            .response_json(200, "JSON Lines (application/jsonl)", json!({"type": "string"}))
            .problem(400, "from_seq is after to_seq"),
    )
    .get(
        strongroom_audit::export::CHAIN_PATH,
        chain,
        Operation::new("audit_chain", "This node's certificate chain and the cluster CA (PEM)", auditors)
            .tag("audit")
            .response_json(200, "The chain", json!({"type": "object", "required": ["chain_pem", "ca_pem"]})),
    )
}
