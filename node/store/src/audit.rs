//! The node's audit log (format: `strongroom-audit`): appending inside the transaction of the
//! state change an entry records, and reading entries and checkpoints back for export.
//!
//! **Appending.** [`Store::append_audit_in`] locks the one-row `audit_head` table
//! (`SELECT ... FOR UPDATE`), takes the next seq and the previous hash from it, seals the
//! event, inserts the entry and moves the head, all inside the caller's transaction. The lock
//! is held until that transaction ends, so concurrent appenders take turns and the chain never
//! forks; a transaction that rolls back takes its entry with it and leaves no gap.
//!
//! **Lock order.** Because every audited transaction holds the head lock until it ends, append
//! as the last step before commit ([`Store::with_audit`] does): a transaction that takes the
//! head lock early and other row locks after it can deadlock with one that takes them in the
//! opposite order, and it makes every other appender wait longer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use deadpool_postgres::Transaction;
use serde_json::{Map, Value};
use strongroom_audit::encoding::canonical_json;
use strongroom_audit::{AuditEntry, AuditEvent, AuditKey, Checkpoint, EventKind};
use tokio_postgres::Row;

use crate::{Store, StoreError};

/// The future a [`Store::with_audit`] state change returns: it borrows the transaction.
pub type AuditTxFuture<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// The head of the node's audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditHead {
    /// The seq the next entry gets: the number of entries.
    pub next_seq: u64,
    /// The hash of the newest entry (32 zero bytes while the log is empty).
    pub head_hash: [u8; 32],
    /// The newest checkpoint, if any.
    pub last_checkpoint: Option<Checkpoint>,
}

impl AuditHead {
    /// The seq of the newest entry (`None` while the log is empty).
    pub fn head_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }
}

/// Who records the store's state changes: the node id its entries carry and the key that
/// fingerprints sensitive values (the node's token-held audit key).
///
/// A store with an identity ([`Store::with_audit_identity`]) records an entry for every state
/// change it makes, in the same transaction: a sign request received, votes, approvals, request
/// state changes, presignature reservation, consumption and discarding, keys created or failed,
/// signatures completed. The node sets it before it changes anything; a store without one
/// (tools and storage tests) records nothing.
#[derive(Clone)]
pub struct AuditIdentity {
    /// The node id entries carry.
    pub node_id: String,
    /// The HMAC key for sensitive values.
    pub key: Arc<dyn AuditKey + Send + Sync>,
}

impl fmt::Debug for AuditIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditIdentity")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

const ENTRY_COLUMNS: &str =
    "seq, time_unix_ms, node_id, kind, request_id, fields, hmacs, prev_hash, hash";
const CHECKPOINT_COLUMNS: &str = "seq, cluster_id, node_id, head_hash, time_unix_ms, signature";

impl Store {
    /// This store, recording every state change it makes in the audit log as `identity`.
    pub fn with_audit_identity(mut self, identity: AuditIdentity) -> Store {
        self.audit = Some(Arc::new(identity));
        self
    }

    /// Who this store records as, if anyone.
    pub fn audit_identity(&self) -> Option<&AuditIdentity> {
        self.audit.as_deref()
    }

    /// Appends the event `build` makes of a new event of `kind`, inside `tx`, when the store
    /// has an audit identity (see [`AuditIdentity`]). Call it as the last step before commit.
    pub(crate) async fn audit_in(
        &self,
        tx: &Transaction<'_>,
        kind: EventKind,
        build: impl FnOnce(AuditEvent, &dyn AuditKey) -> Result<AuditEvent, StoreError>,
    ) -> Result<(), StoreError> {
        let Some(identity) = &self.audit else {
            return Ok(());
        };
        let event = build(
            AuditEvent::new(identity.node_id.clone(), kind),
            identity.key.as_ref(),
        )?;
        Store::append_audit_in(tx, event).await.map(|_| ())
    }

    /// Appends `event` to the audit log inside the caller's transaction `tx` and returns the
    /// entry as recorded. It commits or rolls back with `tx`. Append as the last step before
    /// commit: the lock on the log's head is held until the transaction ends.
    pub async fn append_audit_in(
        tx: &Transaction<'_>,
        event: AuditEvent,
    ) -> Result<AuditEntry, StoreError> {
        let head = tx
            .query_one(
                &tx.prepare_cached(
                    "SELECT next_seq, head_hash FROM audit_head WHERE id FOR UPDATE",
                )
                .await?,
                &[],
            )
            .await?;
        let next_seq: i64 = head.get(0);
        let seq = u64::try_from(next_seq)
            .map_err(|_| StoreError::Refused(format!("audit head seq {next_seq} is negative")))?;
        let prev_hash = hash32(head.get(1), "audit head hash")?;
        let entry = event.seal(seq, now_unix_ms(), prev_hash)?;

        let fields = canonical_json(&Value::Object(entry.fields.clone()))?;
        let hmacs: Map<String, Value> = entry
            .hmacs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(hex(v))))
            .collect();
        let hmacs = Value::Object(hmacs);
        let time = to_i64(entry.time_unix_ms, "audit entry time")?;
        let next = next_seq
            .checked_add(1)
            .ok_or_else(|| StoreError::Refused("the audit log is full".into()))?;
        // The entry and the new head in one statement (one round trip).
        tx.execute(
            &tx.prepare_cached(&format!(
                "WITH entry AS (INSERT INTO audit_entries ({ENTRY_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)) \
                 UPDATE audit_head SET next_seq = $10, head_hash = $9 WHERE id"
            ))
            .await?,
            &[
                &next_seq,
                &time,
                &entry.node_id,
                &entry.kind,
                &entry.request_id,
                &fields,
                &hmacs,
                &entry.prev_hash.as_slice(),
                &entry.hash.as_slice(),
                &next,
            ],
        )
        .await?;
        Ok(entry)
    }

    /// Appends `event` in a transaction of its own (an event with no state change of this
    /// database, e.g. a refused peer).
    pub async fn append_audit(&self, event: AuditEvent) -> Result<AuditEntry, StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let entry = Store::append_audit_in(&tx, event).await?;
        tx.commit().await?;
        Ok(entry)
    }

    /// Runs the state change `change` and appends `event` in one transaction: both commit, or
    /// neither does. `change` runs first and the entry is appended after it, just before the
    /// commit; if `change` fails, the transaction rolls back and its error is returned.
    ///
    /// ```text
    /// store.with_audit(event, |tx| Box::pin(async move {
    ///     tx.execute(&tx.prepare_cached("UPDATE ...").await?, &[...]).await?;
    ///     Ok::<_, StoreError>(())
    /// })).await?;
    /// ```
    pub async fn with_audit<T, E, F>(
        &self,
        event: AuditEvent,
        change: F,
    ) -> Result<(T, AuditEntry), E>
    where
        E: From<StoreError>,
        F: for<'a> FnOnce(&'a Transaction<'a>) -> AuditTxFuture<'a, T, E>,
    {
        let mut client = self.pool.get().await.map_err(StoreError::from)?;
        let tx = client.transaction().await.map_err(StoreError::from)?;
        let value = change(&tx).await?;
        let entry = Store::append_audit_in(&tx, event).await?;
        tx.commit().await.map_err(StoreError::from)?;
        Ok((value, entry))
    }

    /// Entries with `from_seq <= seq <= to_seq`, in seq order, at most `limit` of them.
    pub async fn audit_entries(
        &self,
        from_seq: u64,
        to_seq: u64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {ENTRY_COLUMNS} FROM audit_entries WHERE seq BETWEEN $1 AND $2 \
                     ORDER BY seq LIMIT $3"
                    ))
                    .await?,
                &[&clamp_i64(from_seq), &clamp_i64(to_seq), &i64::from(limit)],
            )
            .await?;
        rows.iter().map(entry_from_row).collect()
    }

    /// Checkpoints with `from_seq <= seq <= to_seq`, in seq order.
    pub async fn audit_checkpoints(
        &self,
        from_seq: u64,
        to_seq: u64,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &client
                    .prepare_cached(&format!(
                        "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints \
                     WHERE seq BETWEEN $1 AND $2 ORDER BY seq"
                    ))
                    .await?,
                &[&clamp_i64(from_seq), &clamp_i64(to_seq)],
            )
            .await?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    /// Stores a checkpoint the node signed. Refused unless its head hash is the hash of the
    /// entry at its seq (the signature is not checked here: the node made it). Returns `false`
    /// when a checkpoint of that seq is already stored (the first one is kept).
    pub async fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let seq = to_i64(checkpoint.seq, "checkpoint seq")?;
        let row = client
            .query_opt(
                &client
                    .prepare_cached("SELECT hash FROM audit_entries WHERE seq = $1")
                    .await?,
                &[&seq],
            )
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("audit entry seq {seq}")))?;
        let hash = hash32(row.get(0), "audit entry hash")?;
        if hash != checkpoint.head_hash {
            return Err(StoreError::Refused(format!(
                "checkpoint of audit entry seq {seq} names hash {}, the entry's hash is {}",
                hex(&checkpoint.head_hash),
                hex(&hash)
            )));
        }
        let n = client
            .execute(
                &client
                    .prepare_cached(&format!(
                        "INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (seq) DO NOTHING"
                    ))
                    .await?,
                &[
                    &seq,
                    &checkpoint.cluster_id,
                    &checkpoint.node_id,
                    &checkpoint.head_hash.as_slice(),
                    &to_i64(checkpoint.time_unix_ms, "checkpoint time")?,
                    &checkpoint.signature.as_slice(),
                ],
            )
            .await?;
        Ok(n == 1)
    }

    /// The head of the log and its newest checkpoint.
    pub async fn audit_head(&self) -> Result<AuditHead, StoreError> {
        let client = self.pool.get().await?;
        let head = client
            .query_one(
                &client
                    .prepare_cached("SELECT next_seq, head_hash FROM audit_head WHERE id")
                    .await?,
                &[],
            )
            .await?;
        let next_seq: i64 = head.get(0);
        let last = client
            .query_opt(
                &client.prepare_cached(&format!(
                    "SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints ORDER BY seq DESC LIMIT 1"
                )).await?,
                &[],
            )
            .await?;
        Ok(AuditHead {
            next_seq: u64::try_from(next_seq).map_err(|_| {
                StoreError::Refused(format!("audit head seq {next_seq} is negative"))
            })?,
            head_hash: hash32(head.get(1), "audit head hash")?,
            last_checkpoint: last.as_ref().map(checkpoint_from_row).transpose()?,
        })
    }
}

fn entry_from_row(r: &Row) -> Result<AuditEntry, StoreError> {
    let seq: i64 = r.get(0);
    let bad = |what: String| StoreError::Refused(format!("stored audit entry seq {seq}: {what}"));
    let fields: String = r.get(5);
    let fields: Map<String, Value> =
        serde_json::from_str(&fields).map_err(|e| bad(format!("fields: {e}")))?;
    let hmacs: Value = r.get(6);
    let hmacs = hmacs
        .as_object()
        .ok_or_else(|| bad("hmacs is not an object".into()))?
        .iter()
        .map(|(k, v)| {
            let mut mac = [0u8; 32];
            v.as_str()
                .and_then(|h| hex_decode(h, &mut mac))
                .ok_or_else(|| bad(format!("hmacs.{k} is not 64 hex digits")))?;
            Ok((k.clone(), mac))
        })
        .collect::<Result<_, StoreError>>()?;
    let time: i64 = r.get(1);
    Ok(AuditEntry {
        seq: u64::try_from(seq).map_err(|_| bad("negative seq".into()))?,
        time_unix_ms: u64::try_from(time).map_err(|_| bad("negative time".into()))?,
        node_id: r.get(2),
        kind: r.get(3),
        request_id: r.get(4),
        fields,
        hmacs,
        prev_hash: hash32(r.get(7), "audit entry prev_hash")?,
        hash: hash32(r.get(8), "audit entry hash")?,
    })
}

fn checkpoint_from_row(r: &Row) -> Result<Checkpoint, StoreError> {
    let seq: i64 = r.get(0);
    let time: i64 = r.get(4);
    let signature: Vec<u8> = r.get(5);
    let bad =
        |what: &str| StoreError::Refused(format!("stored audit checkpoint seq {seq}: {what}"));
    Ok(Checkpoint {
        seq: u64::try_from(seq).map_err(|_| bad("negative seq"))?,
        cluster_id: r.get(1),
        node_id: r.get(2),
        head_hash: hash32(r.get(3), "checkpoint head hash")?,
        time_unix_ms: u64::try_from(time).map_err(|_| bad("negative time"))?,
        signature: signature
            .try_into()
            .map_err(|_| bad("signature is not 64 bytes"))?,
    })
}

fn hash32(bytes: Vec<u8>, what: &str) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Refused(format!("stored {what} is not 32 bytes")))
}

fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::Refused(format!("{what} {value} is out of range")))
}

/// Range bounds beyond `i64::MAX` mean "to the end".
fn clamp_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn now_unix_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(text: &str, out: &mut [u8; 32]) -> Option<()> {
    if text.len() != 64
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

/// `value` with every number that is not an integer turned into its decimal text: the audit
/// log records integers only.
pub(crate) fn integers_only(value: &Value) -> Value {
    match value {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.iter().map(integers_only).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), integers_only(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}
