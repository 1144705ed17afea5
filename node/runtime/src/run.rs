//! Start-up, the node's background tasks and shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use strongroom_api::{
    ApiConfig, ApiServer, ClientRoles, ComponentHealth, Health, Limits, Metrics, RateLimit, Role,
    TlsMaterial,
};
use strongroom_audit::{AuditEvent, EventKind};
use strongroom_coord::{CoordConfig, Coordinator};
use strongroom_keystore::{PinSource, Token, TokenConfig};
use strongroom_store::{AuditIdentity, Store};
use strongroom_transport::pki::certs_from_pem;
use strongroom_transport::{ClusterId, Node as Transport, NodeConfig, NodeId, NodeIdentity};

use crate::config::Config;
use crate::control::Request;
use crate::engine::{CONSUMPTION_COUNTER, CONSUMPTION_META, Engine};
use crate::metrics::EngineMetrics;
use crate::session_ids::PgSessionIds;

/// The node cannot start or stopped with an error; every message names what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The token cannot be opened.
    #[error("token '{label}' (module {module}): {detail}")]
    Token {
        /// Label.
        label: String,
        /// Module.
        module: String,
        /// Why.
        detail: String,
    },
    /// The database cannot be used.
    #[error("database: {0}")]
    Store(#[from] strongroom_store::StoreError),
    /// etcd cannot be reached.
    #[error("etcd: {0}")]
    Coord(String),
    /// A certificate file cannot be used.
    #[error("{path}: {detail}")]
    Certificate {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The transport cannot start.
    #[error("transport: {0}")]
    Transport(String),
    /// The API cannot start.
    #[error("api: {0}")]
    Api(String),
    /// The database and the token disagree in a way that is not safe to repair automatically.
    #[error("rollback check: {0}")]
    Rollback(String),
    /// The policy file cannot be used.
    #[error("policy file {path}: {detail}")]
    Policy {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The engine cannot start.
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// The firmware profile cannot be used, or this node's own token is outside it.
    #[error("attestation: {0}")]
    Attestation(#[from] crate::admission::AttestationStartError),
}

fn read_certs(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, NodeError> {
    let cert_err = |detail: String| NodeError::Certificate {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| cert_err(format!("cannot read: {e}")))?;
    let certs = certs_from_pem(&text).map_err(cert_err)?;
    if certs.is_empty() {
        return Err(cert_err("holds no certificate".into()));
    }
    Ok(certs)
}

/// Compares the token's consumption counter with the database. A database behind the token was
/// restored from a backup or lost its last transaction: a presignature it shows as unused may
/// have been used, so every unconsumed presignature is discarded. A database ahead of the token
/// belongs to another token: refuse to start.
pub async fn rollback_check(token: &Token, store: &Store) -> Result<u64, NodeError> {
    let in_token = token
        .counter_read(CONSUMPTION_COUNTER)
        .map_err(|e| NodeError::Rollback(format!("cannot read the token counter: {e}")))?;
    let in_db = u64::try_from(store.meta(CONSUMPTION_META).await?).unwrap_or(0);
    if in_db > in_token {
        return Err(NodeError::Rollback(format!(
            "the database recorded {in_db} presignature consumptions but the token only {in_token}: \
             this database belongs to another token; configure the node's own token or database"
        )));
    }
    if in_db < in_token {
        let discarded = store.discard_unconsumed_presignatures().await?;
        store
            .set_meta(
                CONSUMPTION_META,
                i64::try_from(in_token).unwrap_or(i64::MAX),
            )
            .await?;
        tracing::warn!(
            token = in_token,
            database = in_db,
            discarded,
            "the database is behind the token's consumption counter (restored backup or a crash \
             mid-consumption): discarded every unconsumed presignature; the leader refills the pools"
        );
        return Ok(discarded);
    }
    Ok(0)
}

/// Attempts to open the token at start-up before giving up.
const TOKEN_OPEN_ATTEMPTS: u32 = 5;

/// Shared view for the health probe, refreshed in the background (health answers without I/O).
#[derive(Default)]
struct HealthView {
    database: Option<String>,
    etcd: Option<String>,
    primes: Option<String>,
}

/// Runs a node until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), NodeError> {
    let network = config.network()?;
    tracing::info!(node = %config.node.id, cluster = %config.node.cluster_id, dev_mode = config.node.dev_mode, config = %config.source.display(), "starting node");
    if config.node.dev_mode {
        tracing::warn!("DEV MODE: dev-only features may be on; never run an appliance like this");
    }

    // Token first: nothing can be unsealed or signed without it.
    let token_cfg = TokenConfig {
        module: config.token.module.clone(),
        label: config.token.label.clone(),
        pin: PinSource::File(config.token.pin_file.clone()),
    };
    let token_err = |detail: String| NodeError::Token {
        label: config.token.label.clone(),
        module: config.token.module.display().to_string(),
        detail,
    };
    // A token may answer a general error while another process changes its object store
    // (SoftHSM when several tokens share a directory); a few spaced attempts ride that out.
    let mut attempt = 0;
    let token = loop {
        attempt += 1;
        match Token::open(&token_cfg) {
            Ok(t) => break t,
            Err(e) if attempt < TOKEN_OPEN_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "cannot open the token; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => return Err(token_err(e.to_string())),
        }
    };

    // The token must be one the firmware profile accepts, with the mechanisms it requires.
    let attestation = crate::admission::Attestation::start(
        config.attestation.profile.as_deref(),
        config.node.dev_mode,
        &token,
        config.attestation.tpm.as_ref(),
        Duration::from_secs(config.attestation.recheck_secs),
        &config.members(),
        &config.node.id,
    )?;

    let policy = load_policy(&config)?;
    let store = Store::connect(&config.database.url, config.database.max_connections).await?;
    // Every state change from here on is recorded in the audit log, in its own transaction.
    // Provisioning creates the audit key; a token provisioned before it existed gets it here
    // (retried like the opening: SoftHSM may answer a general error while another process
    // changes the shared object store).
    let mut attempt = 0;
    loop {
        attempt += 1;
        match token.ensure_audit_key() {
            Ok(()) => break,
            Err(e) if attempt < TOKEN_OPEN_ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "cannot find or create the audit key; retrying");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                return Err(token_err(format!(
                    "cannot find or create the audit key: {e}"
                )));
            }
        }
    }
    let store = store.with_audit_identity(AuditIdentity {
        node_id: config.node.id.clone(),
        key: Arc::new(crate::audit::TokenAuditKey(token.clone())),
    });
    record_start(&store, &config, policy.as_ref()).await?;
    rollback_check(&token, &store).await?;
    let lost = store.discard_stale_reservations(Duration::ZERO).await?;
    if lost > 0 {
        tracing::info!(
            count = lost,
            "discarded presignatures reserved before the restart"
        );
    }
    for key in store.keys().await? {
        if key.state.as_str() == "generating" {
            store
                .mark_key_failed(
                    &key.key_id,
                    "key generation was interrupted by a node restart; create the key again",
                )
                .await?;
        }
    }

    // Transport with the token-held identity key.
    let ca = read_certs(&config.transport.ca_cert)?;
    let chain = read_certs(&config.transport.certificate)?;
    let identity_key: Arc<dyn rustls::sign::SigningKey> = Arc::new(token.identity());
    let mut peers = BTreeMap::new();
    for (id, addr) in &config.peers {
        let node = NodeId::new(id.as_str()).map_err(|e| NodeError::Transport(e.to_string()))?;
        let addr: SocketAddr = addr
            .parse()
            .map_err(|e| NodeError::Transport(format!("peer {id}: {e}")))?;
        peers.insert(node, addr);
    }
    let transport_cfg = NodeConfig {
        cluster: ClusterId::new(config.node.cluster_id.as_str())
            .map_err(|e| NodeError::Transport(e.to_string()))?,
        node: NodeId::new(config.node.id.as_str())
            .map_err(|e| NodeError::Transport(e.to_string()))?,
        listen: config.transport.listen,
        peers,
        timing: Default::default(),
        limits: Default::default(),
    };
    let transport = Transport::start(
        transport_cfg,
        NodeIdentity {
            ca: ca[0].clone(),
            chain: chain.clone(),
            key: identity_key.clone(),
        },
        Arc::new(PgSessionIds::new(store.clone())),
    )
    .await
    .map_err(|e| NodeError::Transport(e.to_string()))?;
    let transport = Arc::new(transport);
    let mut requests = transport
        .take_requests()
        .ok_or_else(|| NodeError::Transport("request inbox already taken".into()))?;

    let mut coord_cfg = CoordConfig::new(
        config.etcd.endpoints.clone(),
        &config.node.cluster_id,
        &config.node.id,
    );
    coord_cfg.lease_ttl_secs = i64::try_from(config.etcd.lease_ttl_secs).unwrap_or(3);
    let coordinator = Coordinator::start(coord_cfg)
        .await
        .map_err(|e| NodeError::Coord(e.to_string()))?;

    let metrics = Metrics::new();
    let engine_metrics = EngineMetrics::register(&metrics);
    let own_cert = chain
        .first()
        .cloned()
        .ok_or_else(|| NodeError::Certificate {
            path: config.transport.certificate.display().to_string(),
            detail: "holds no certificate".into(),
        })?;
    let engine = Arc::new(Engine::new(
        config.clone(),
        token.clone(),
        store.clone(),
        transport.clone(),
        coordinator.subscribe(),
        coordinator.eligibility(),
        engine_metrics,
        network,
        crate::requests::RequestsState::new(policy, own_cert, config.signing.max_in_flight),
        attestation,
    )?);

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(engine.clone().supply_primes()));
    tasks.push(tokio::spawn(crate::leader::leader_loop(engine.clone())));
    let admission = crate::admission::admission_loop(engine.clone());
    tasks.push(tokio::spawn(admission));
    tasks.push(tokio::spawn(crate::admission::standing_loop(
        engine.clone(),
    )));
    tasks.push(tokio::spawn(engine.clone().checkpoint_loop()));
    {
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(incoming) = requests.recv().await {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let from = incoming.peer.as_str().to_owned();
                    let reply = match serde_json::from_slice::<Request>(&incoming.body) {
                        // Evidence is bound to the connection the request arrived on.
                        Ok(Request::Attestation) => engine.evidence_reply(&incoming).await,
                        Ok(request) => engine.handle(&from, request).await,
                        Err(e) => crate::control::Reply::Error(crate::control::RemoteError::new(
                            "bad-request",
                            format!("cannot parse the request: {e}"),
                        )),
                    };
                    match serde_json::to_vec(&reply) {
                        Ok(body) => incoming.respond(body),
                        Err(e) => tracing::error!(error = %e, "cannot encode a reply"),
                    }
                });
            }
        }));
    }
    {
        let engine = engine.clone();
        let age = Duration::from_secs(config.signing.timeout_secs * 2 + 10);
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                if let Err(e) = engine.sweep_reservations(age).await {
                    tracing::warn!(error = %e, "reservation sweep failed");
                }
            }
        }));
    }
    {
        // Every node ends the requests past its own deadline.
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                if let Err(e) = engine.expire_due().await {
                    tracing::warn!(error = %e, "expiring overdue signing requests failed");
                }
            }
        }));
    }
    {
        // The leader resumes signing requests whose coordinator stopped.
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                if !engine.coord.borrow().is_leader {
                    continue;
                }
                if let Err(e) = crate::requests::resume_stalled(&engine).await {
                    tracing::warn!(error = %e, "resuming stalled signing requests failed");
                }
            }
        }));
    }
    let health = Arc::new(Mutex::new(HealthView::default()));
    {
        let engine = engine.clone();
        let health = health.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let db = match engine.status().await {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                let coord = engine.coord.borrow().clone();
                let etcd = (!coord.etcd_reachable)
                    .then(|| coord.last_error.unwrap_or_else(|| "not reached yet".into()));
                let p = engine.primes_status();
                let primes = (!p.ready).then_some(p.detail);
                *health.lock().unwrap_or_else(PoisonError::into_inner) = HealthView {
                    database: db,
                    etcd,
                    primes,
                };
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }));
    }

    // The API.
    let mut roles = ClientRoles::new();
    for (client, names) in &config.api.clients {
        let parsed: Vec<Role> = names.iter().filter_map(|r| r.parse().ok()).collect();
        roles = roles.grant(client.clone(), parsed);
    }
    let limits = Limits {
        rate_limit: (config.api.rate_limit_per_second > 0.0).then_some(RateLimit {
            per_second: config.api.rate_limit_per_second,
            burst: config.api.rate_limit_burst,
        }),
        request_timeout: Duration::from_secs(config.signing.timeout_secs.max(30) + 5),
        ..Limits::default()
    };
    let health_view = health.clone();
    let server = ApiServer::builder(
        ApiConfig {
            listen: config.api.listen,
            cluster_id: config.node.cluster_id.clone(),
            client_roles: roles,
            limits,
        },
        TlsMaterial {
            cert_chain: chain,
            key: identity_key,
            cluster_ca: ca,
        },
    )
    .routes(crate::routes::routes(engine.clone()))
    .health(move || {
        let v = health_view.lock().unwrap_or_else(PoisonError::into_inner);
        let comp = |name: &str, problem: &Option<String>| match problem {
            None => ComponentHealth::ready(name),
            Some(p) => ComponentHealth::not_ready(name, p.clone()),
        };
        Health::from_components(vec![
            comp("database", &v.database),
            comp("etcd", &v.etcd),
            comp("primes", &v.primes),
        ])
    })
    .metrics(metrics)
    .on_auth_failure({
        let store = store.clone();
        let node = config.node.id.clone();
        move |failure| {
            tracing::warn!(%failure, "client authentication failed");
            let event = AuditEvent::new(node.clone(), EventKind::ClientAuthFailed)
                .field("reason", failure.reason.to_string())
                .field("path", failure.path.clone().unwrap_or_default());
            let address = failure.peer.ip().to_string();
            let store = store.clone();
            tokio::spawn(async move {
                let recorded = match store.audit_identity() {
                    Some(id) => match event.sensitive(id.key.as_ref(), "address", address.as_bytes()) {
                        Ok(event) => store.append_audit(event).await.map(|_| ()),
                        Err(e) => Err(e.into()),
                    },
                    None => Ok(()),
                };
                if let Err(e) = recorded {
                    tracing::error!(error = %e, "cannot record a client authentication failure in the audit log");
                }
            });
        }
    })
    .bind()
    .await
    .map_err(|e| NodeError::Api(e.to_string()))?;
    tracing::info!(api = %server.local_addr(), transport = %config.transport.listen, "node running");
    server.serve(shutdown).await;

    tracing::info!("shutting down");
    if let Err(e) = store
        .append_audit(AuditEvent::new(
            config.node.id.clone(),
            EventKind::NodeStopping,
        ))
        .await
    {
        tracing::error!(error = %e, "cannot record the shutdown in the audit log");
    }
    // The log ends on a signed checkpoint.
    if let Err(e) = engine
        .checkpoint_if_due(&config.audit.schedule(), true)
        .await
    {
        tracing::warn!(error = %e, "cannot sign the final audit checkpoint");
    }
    for t in &tasks {
        t.abort();
    }
    coordinator.shutdown().await;
    if let Ok(t) = Arc::try_unwrap(transport) {
        t.shutdown().await;
    }
    tracing::info!("node stopped");
    Ok(())
}

/// Loads the node's policy file, if one is configured.
pub fn load_policy(config: &Config) -> Result<Option<strongroom_policies::Policy>, NodeError> {
    let Some(path) = &config.policy.file else {
        tracing::warn!(
            "no [policy] file configured: this node votes to deny every signing request"
        );
        return Ok(None);
    };
    let policy = strongroom_policies::Policy::load(path).map_err(|e| NodeError::Policy {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    tracing::info!(
        policy = policy.id(),
        hash = %policy.hash().to_hex(),
        rules = policy.rules().len(),
        "policy loaded"
    );
    Ok(Some(policy))
}

/// Records the start: the node's version and binary, its configuration and its policy.
async fn record_start(
    store: &Store,
    config: &Config,
    policy: Option<&strongroom_policies::Policy>,
) -> Result<(), NodeError> {
    let node = config.node.id.clone();
    let binary = strongroom_attest::own_binary_sha256()
        .map(|d| d.to_hex())
        .unwrap_or_else(|e| format!("unknown: {e}"));
    store
        .append_audit(
            AuditEvent::new(node.clone(), EventKind::NodeStarted)
                .field("version", env!("CARGO_PKG_VERSION"))
                .field("binary_sha256", binary)
                .field("cluster_id", config.node.cluster_id.clone())
                .field("dev_mode", config.node.dev_mode),
        )
        .await?;
    store
        .append_audit(
            AuditEvent::new(node.clone(), EventKind::ConfigLoaded)
                .field("file", config.source.display().to_string())
                .field(
                    "sha256",
                    strongroom_attest::file_sha256(&config.source)
                        .map(|d| d.to_hex())
                        .unwrap_or_default(),
                ),
        )
        .await?;
    let event = AuditEvent::new(node, EventKind::PolicyLoaded);
    let event = match (policy, &config.policy.file) {
        (Some(p), Some(file)) => event
            .field("policy_id", p.id())
            .field("policy_hash", p.hash().to_hex())
            .field("rules", p.rules().len())
            .field("file", file.display().to_string()),
        _ => event
            .field("policy_id", "")
            .field("note", "no policy file: every request is denied"),
    };
    store.append_audit(event).await?;
    Ok(())
}
