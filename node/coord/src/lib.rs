//! Coordination through etcd: membership leases and leader election.
//!
//! etcd is trusted for **liveness only**. What this crate reports (who is a member, who leads)
//! decides who does work, never whether work is safe: every node still checks policy, vote
//! validity, session-id uniqueness and presignature single use on its own. Two nodes may both
//! believe they lead for a moment (a partition, a lease that has not expired yet); nothing that
//! is safety-relevant may depend on that belief. etcd never holds a secret: the keys below hold
//! node ids only.
//!
//! **Eligibility.** A node campaigns for leadership only while it is *eligible to lead*
//! ([`Coordinator::set_eligible`]; a node starts eligible). The runtime makes a node that most
//! of its peers refuse ineligible, since every session it would drive would be refused. While
//! not eligible the task does not campaign and resigns the election (etcd's `Resign`) if it
//! holds it or is queued in it, so another member is elected at once rather than when a lease
//! expires; the membership lease is kept alive all the same, so the node stays listed as a
//! member. Once eligible again it campaigns again on the same lease, behind the members
//! already campaigning.
//!
//! Keys used, all under `/strongroom/<cluster-id>/`:
//! - `members/<node-id>`: value = node id, attached to the node's lease;
//! - `leader`: the election prefix (etcd v3 election API); the campaign value is the node id.

use std::collections::BTreeSet;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions, LeaderKey, PutOptions, ResignOptions};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Errors of the coordination layer.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// No etcd endpoint answered at start-up.
    #[error(
        "cannot reach etcd at {endpoints}: {source} (check `etcd.endpoints` in the node \
         configuration and that etcd is running)"
    )]
    Unreachable {
        /// The endpoints that were tried, comma separated.
        endpoints: String,
        /// What the client reported.
        #[source]
        source: etcd_client::Error,
    },
    /// The configuration is unusable.
    #[error("invalid coordination configuration: {0}")]
    Config(String),
}

/// Coordination settings of one node.
#[derive(Clone, Debug)]
pub struct CoordConfig {
    /// etcd client endpoints, e.g. `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Cluster id (namespaces every key).
    pub cluster_id: String,
    /// This node's id.
    pub node_id: String,
    /// Lease time to live in seconds: how long a dead node stays listed (and leads).
    pub lease_ttl_secs: i64,
    /// How often membership and leadership are re-read.
    pub poll_interval: Duration,
}

impl CoordConfig {
    /// Settings with the defaults: 3 s lease, 500 ms poll.
    pub fn new(endpoints: Vec<String>, cluster_id: &str, node_id: &str) -> Self {
        Self {
            endpoints,
            cluster_id: cluster_id.to_owned(),
            node_id: node_id.to_owned(),
            lease_ttl_secs: 3,
            poll_interval: Duration::from_millis(500),
        }
    }

    fn prefix(&self) -> String {
        format!("/strongroom/{}/", self.cluster_id)
    }
    fn members_prefix(&self) -> String {
        format!("{}members/", self.prefix())
    }
    fn election_name(&self) -> String {
        format!("{}leader", self.prefix())
    }
}

/// What this node currently believes about the cluster (liveness information only).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoordState {
    /// Whether the last round trip to etcd succeeded.
    pub etcd_reachable: bool,
    /// Node ids holding a live membership lease.
    pub members: BTreeSet<String>,
    /// The node id that holds the election, if any.
    pub leader: Option<String>,
    /// Whether this node holds the election.
    pub is_leader: bool,
    /// The last error talking to etcd, if the last round trip failed.
    pub last_error: Option<String>,
}

/// A running coordination task. Dropping it stops the task; the lease then expires within its
/// time to live (call [`Coordinator::shutdown`] to revoke it at once).
pub struct Coordinator {
    state: watch::Receiver<CoordState>,
    eligible: Eligibility,
    task: JoinHandle<()>,
    stop: watch::Sender<bool>,
}

/// Sets whether a [`Coordinator`]'s node is eligible to lead, from wherever the decision is
/// taken ([`Coordinator::eligibility`]); clones set the same flag.
#[derive(Clone, Debug)]
pub struct Eligibility(watch::Sender<bool>);

impl Eligibility {
    /// Makes the node eligible to lead (it campaigns) or not (it resigns the election if it
    /// holds it, and does not campaign). Setting the current value again does nothing.
    pub fn set(&self, eligible: bool) {
        self.0.send_if_modified(|cur| {
            let changed = *cur != eligible;
            *cur = eligible;
            changed
        });
    }

    /// Whether the node is currently eligible to lead.
    pub fn get(&self) -> bool {
        *self.0.borrow()
    }
}

impl Coordinator {
    /// Connects to etcd (failing with an error that names the endpoints when none answers),
    /// then keeps this node's membership lease alive and campaigns for leadership in the
    /// background (while it is eligible to lead: [`Coordinator::set_eligible`]), reconnecting
    /// with capped exponential backoff when etcd goes away.
    pub async fn start(config: CoordConfig) -> Result<Self, CoordError> {
        if config.endpoints.is_empty() {
            return Err(CoordError::Config("`etcd.endpoints` is empty".into()));
        }
        if config.lease_ttl_secs < 1 {
            return Err(CoordError::Config(
                "`etcd.lease_ttl_secs` must be at least 1".into(),
            ));
        }
        let client = connect(&config)
            .await
            .map_err(|source| CoordError::Unreachable {
                endpoints: config.endpoints.join(","),
                source,
            })?;
        let (tx, rx) = watch::channel(CoordState::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        let (eligible_tx, eligible_rx) = watch::channel(true);
        let task = tokio::spawn(run(config, Some(client), tx, stop_rx, eligible_rx));
        Ok(Self {
            state: rx,
            eligible: Eligibility(eligible_tx),
            task,
            stop: stop_tx,
        })
    }

    /// Sets whether this node is eligible to lead (it starts eligible). While it is not, the
    /// background task resigns the election if this node holds it (another member is elected
    /// at once) and does not campaign; the membership lease stays alive. When it is eligible
    /// again, it campaigns again. Takes effect at once, or at the next round trip while etcd is
    /// unreachable.
    pub fn set_eligible(&self, eligible: bool) {
        self.eligible.set(eligible);
    }

    /// A handle that sets this node's eligibility to lead (see [`Coordinator::set_eligible`]).
    pub fn eligibility(&self) -> Eligibility {
        self.eligible.clone()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<CoordState> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> CoordState {
        self.state.borrow().clone()
    }

    /// Stops campaigning and revokes the lease so peers see this node leave at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(3), &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connect(config: &CoordConfig) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    let mut client = Client::connect(&config.endpoints, Some(options)).await?;
    // The client connects lazily: one round trip proves the server answers.
    client.status().await?;
    Ok(client)
}

/// One lease "epoch": a lease, the membership key on it and, while the node is eligible to
/// lead, a campaign for leadership.
struct Epoch {
    lease_id: i64,
    keeper: etcd_client::LeaseKeeper,
    keepalive_stream: etcd_client::LeaseKeepAliveStream,
    /// The client campaigns use (without a per-request timeout).
    campaign_client: Client,
    /// The campaign, while this node is eligible to lead.
    campaign: Option<Campaign>,
}

/// A campaign on the epoch's lease: it ends when this node wins (or fails).
struct Campaign {
    task: JoinHandle<Result<(), etcd_client::Error>>,
    won: watch::Receiver<bool>,
}

impl Drop for Campaign {
    fn drop(&mut self) {
        // Cancelling the call makes etcd withdraw a campaign that has not won yet; `withdraw`
        // makes sure of it.
        self.task.abort();
    }
}

/// Starts a campaign for leadership on the epoch's lease.
fn campaign(config: &CoordConfig, epoch: &Epoch) -> Campaign {
    let (won_tx, won_rx) = watch::channel(false);
    let mut campaign_client = epoch.campaign_client.clone();
    let name = config.election_name();
    let value = config.node_id.clone();
    let lease_id = epoch.lease_id;
    // Campaign blocks until this lease holds the election; leadership ends with the lease.
    let task = tokio::spawn(async move {
        campaign_client.campaign(name, value, lease_id).await?;
        let _ = won_tx.send(true);
        Ok(())
    });
    debug!(lease_id, "campaigning for leadership");
    Campaign { task, won: won_rx }
}

/// Resigns every election key on the epoch's lease (the one holding the election, or one still
/// queued behind it); returns whether there was one.
async fn withdraw(
    config: &CoordConfig,
    client: &mut Client,
    epoch: &Epoch,
) -> Result<bool, etcd_client::Error> {
    let name = config.election_name();
    let prefix = format!("{name}/");
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await?;
    let mut resigned = false;
    for kv in resp.kvs().iter().filter(|kv| kv.lease() == epoch.lease_id) {
        let key = LeaderKey::new()
            .with_name(name.clone())
            .with_key(kv.key())
            .with_rev(kv.create_revision())
            .with_lease(epoch.lease_id);
        client
            .resign(Some(ResignOptions::new().with_leader(key)))
            .await?;
        resigned = true;
    }
    Ok(resigned)
}

async fn start_epoch(
    config: &CoordConfig,
    client: &mut Client,
) -> Result<Epoch, etcd_client::Error> {
    let lease = client.lease_grant(config.lease_ttl_secs, None).await?;
    let lease_id = lease.id();
    let (keeper, keepalive_stream) = client.lease_keep_alive(lease_id).await?;
    let key = format!("{}{}", config.members_prefix(), config.node_id);
    client
        .put(
            key,
            config.node_id.clone(),
            Some(PutOptions::new().with_lease(lease_id)),
        )
        .await?;
    // The campaign call blocks until this node wins, which may be never: it gets a client of
    // its own without the per-request timeout (which would end every follower's campaign).
    let campaign_client = Client::connect(
        &config.endpoints,
        Some(ConnectOptions::new().with_connect_timeout(Duration::from_secs(2))),
    )
    .await?;
    info!(lease_id, "joined cluster membership");
    Ok(Epoch {
        lease_id,
        keeper,
        keepalive_stream,
        campaign_client,
        campaign: None,
    })
}

async fn refresh(
    config: &CoordConfig,
    client: &mut Client,
    epoch: &mut Epoch,
) -> Result<CoordState, etcd_client::Error> {
    epoch.keeper.keep_alive().await?;
    match epoch.keepalive_stream.message().await? {
        Some(resp) if resp.ttl() > 0 => {}
        _ => {
            return Err(etcd_client::Error::LeaseKeepAliveError(format!(
                "lease {:x} expired",
                epoch.lease_id
            )));
        }
    }
    let members = client
        .get(
            config.members_prefix(),
            Some(GetOptions::new().with_prefix()),
        )
        .await?
        .kvs()
        .iter()
        .filter_map(|kv| std::str::from_utf8(kv.value()).ok().map(str::to_owned))
        .collect::<BTreeSet<_>>();
    let leader = match client.leader(config.election_name()).await {
        Ok(resp) => resp
            .kv()
            .and_then(|kv| std::str::from_utf8(kv.value()).ok().map(str::to_owned)),
        // etcd answers "election: no leader" as an error status.
        Err(etcd_client::Error::GRpcStatus(status)) if status.message().contains("no leader") => {
            None
        }
        Err(e) => return Err(e),
    };
    let won = match &epoch.campaign {
        Some(c) if c.task.is_finished() && !*c.won.borrow() => {
            return Err(etcd_client::Error::ElectError(
                "campaign ended without winning".into(),
            ));
        }
        Some(c) => *c.won.borrow(),
        None => false,
    };
    let is_leader = won && leader.as_deref() == Some(config.node_id.as_str());
    Ok(CoordState {
        etcd_reachable: true,
        members,
        leader,
        is_leader,
        last_error: None,
    })
}

async fn run(
    config: CoordConfig,
    mut client: Option<Client>,
    state: watch::Sender<CoordState>,
    mut stop: watch::Receiver<bool>,
    mut eligible: watch::Receiver<bool>,
) {
    let mut epoch: Option<Epoch> = None;
    let mut backoff = Duration::from_millis(100);
    let max_backoff = Duration::from_secs(2);
    let mut eligibility_open = true;
    // Whether this node stopped campaigning because it was not eligible to lead.
    let mut withdrawn = false;
    loop {
        if *stop.borrow() {
            break;
        }
        let may_lead = *eligible.borrow_and_update();
        let was_leader = state.borrow().is_leader;
        let round = async {
            let c = match client.as_mut() {
                Some(c) => c,
                None => client.insert(connect(&config).await?),
            };
            if epoch.is_none() {
                epoch = Some(start_epoch(&config, c).await?);
            }
            let Some(e) = epoch.as_mut() else {
                return Err(etcd_client::Error::ElectError("no lease".into()));
            };
            if may_lead {
                if e.campaign.is_none() {
                    if withdrawn {
                        info!(node = %config.node_id, "eligible to lead again: campaigning");
                        withdrawn = false;
                    }
                    e.campaign = Some(campaign(&config, e));
                }
            } else {
                withdrawn = true;
                let stopped = e.campaign.take().is_some();
                // Every round while not eligible: a campaign cancelled just as it reached etcd
                // may still have put its key.
                if withdraw(&config, c, e).await? && was_leader {
                    warn!(node = %config.node_id, "not eligible to lead: resigned leadership");
                } else if stopped {
                    info!(node = %config.node_id, "not eligible to lead: not campaigning");
                }
            }
            refresh(&config, c, e).await
        };
        let wait = match round.await {
            Ok(s) => {
                backoff = Duration::from_millis(100);
                if s.is_leader && !state.borrow().is_leader {
                    info!(node = %config.node_id, "this node now leads the cluster");
                }
                state.send_if_modified(|cur| {
                    let changed = *cur != s;
                    *cur = s;
                    changed
                });
                config.poll_interval
            }
            Err(e) => {
                warn!(error = %e, "etcd round trip failed; retrying");
                // A new lease (and, while eligible, a new campaign) after any failure: the old
                // one may have expired, and with it membership and leadership.
                epoch = None;
                client = None;
                state.send_modify(|cur| {
                    cur.etcd_reachable = false;
                    cur.is_leader = false;
                    cur.last_error = Some(e.to_string());
                });
                let jitter = rand::thread_rng().gen_range(0..=backoff.as_millis() as u64 / 2);
                let wait = backoff + Duration::from_millis(jitter);
                backoff = (backoff * 2).min(max_backoff);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
            changed = eligible.changed(), if eligibility_open => {
                eligibility_open = changed.is_ok();
            }
        }
    }
    if let (Some(c), Some(e)) = (client.as_mut(), epoch.take()) {
        debug!(lease_id = e.lease_id, "revoking membership lease");
        let _ = c.lease_revoke(e.lease_id).await;
    }
    state.send_modify(|cur| {
        cur.is_leader = false;
    });
}
