//! The scale-out path: several gateway replicas share one PostgreSQL
//! database. Each replica group-commits through its own writer task, and the
//! writers of all replicas take one advisory lock per transaction, so register
//! numbers and the ledger chain stay sequential across replicas.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::{Clock, Job, StoreError, next_batch};

mod ops {
    super::super::ops::store_ops!(
        sqlx::Postgres,
        sqlx::PgConnection,
        super::PgStore,
        "postgres"
    );
}

/// Every writing transaction takes this lock first (any replica).
const WRITE_LOCK: &str = "SELECT pg_advisory_xact_lock(71462022)";

pub struct PgStore {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
}

impl PgStore {
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<PgStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("migrations/postgres").run(&pool).await?;

        let (writer, mut jobs) = mpsc::channel(1024);
        let writer_pool = pool.clone();
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut jobs).await {
                ops::apply_batch(&writer_pool, &*clock, Some(WRITE_LOCK), batch).await;
            }
        });
        Ok(PgStore { pool, writer })
    }

    /// The pool, for tests and tools that look underneath.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}
