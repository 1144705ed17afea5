//! Versioned schema migrations, embedded in the binary and applied at start-up.

use deadpool_postgres::Pool;
use tracing::info;

use crate::StoreError;

/// Every migration in order: (version, name, SQL). Versions only ever grow; a released
/// migration is never edited.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "engine", include_str!("../migrations/0001_engine.sql")),
    (2, "signing", include_str!("../migrations/0002_signing.sql")),
    (
        3,
        "requests",
        include_str!("../migrations/0003_requests.sql"),
    ),
    (4, "audit", include_str!("../migrations/0004_audit.sql")),
    (
        5,
        "request_lifecycle",
        include_str!("../migrations/0005_request_lifecycle.sql"),
    ),
];

/// Arbitrary constant naming the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x5354_524f_4e47;

pub(crate) async fn apply(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
               version INTEGER PRIMARY KEY, name TEXT NOT NULL, \
               applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
        )
        .await?;
    let supported = MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0);
    for &(version, name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await?
            .get(0);
        if current > supported {
            return Err(StoreError::SchemaTooNew {
                found: current,
                supported,
            });
        }
        if current >= version {
            continue;
        }
        tx.batch_execute(sql)
            .await
            .map_err(|source| StoreError::Migration {
                version,
                name,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[&version, &name],
        )
        .await?;
        tx.commit().await?;
        info!(version, name, "applied database migration");
    }
    Ok(())
}
