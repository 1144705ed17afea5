//! The transport's record of used session ids, kept in the node's database so a session id is
//! refused after a restart too.

use std::future::Future;
use std::pin::Pin;

use strongroom_store::Store;
use strongroom_transport::{SessionId, SessionIdStore, SessionIdStoreError};

/// Session ids in PostgreSQL (`used_session_ids`).
#[derive(Debug, Clone)]
pub struct PgSessionIds {
    store: Store,
}

impl PgSessionIds {
    /// Records in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl SessionIdStore for PgSessionIds {
    fn record_new<'a>(
        &'a self,
        id: &'a SessionId,
    ) -> Pin<Box<dyn Future<Output = Result<bool, SessionIdStoreError>> + Send + 'a>> {
        Box::pin(async move {
            self.store
                .claim_session_id(id.as_bytes(), "transport")
                .await
                .map_err(|e| SessionIdStoreError(Box::new(e)))
        })
    }
}
