//! The scale-out path: several gateway replicas share one PostgreSQL
//! database. Each replica group-commits through its own writer task, and the
//! writers of all replicas take one advisory lock per transaction, so register
//! numbers and the ledger chain stay sequential across replicas.

use std::{sync::Arc, time::Duration};

use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::{
    Clock, DocumentRecord, Job, NewDocument, RegisterQuery, RegisterRow, Store, StoreError,
    StoredFiling, Submission, SubmitOutcome, ledger::LedgerEntry, next_batch, send_job,
};
use crate::domain::Sha256Hex;

mod ops {
    super::super::ops::store_ops!(sqlx::Postgres, sqlx::PgConnection);
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

#[async_trait::async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn put_document(&self, document: NewDocument) -> Result<DocumentRecord, StoreError> {
        send_job(&self.writer, |reply| Job::Document(document, reply)).await
    }

    async fn documents(&self, digests: &[Sha256Hex]) -> Result<Vec<DocumentRecord>, StoreError> {
        ops::documents_in(&self.pool, digests).await
    }

    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, StoreError> {
        send_job(&self.writer, |reply| {
            Job::Filing(Box::new(submission), reply)
        })
        .await
    }

    async fn filing(&self, filing_id: &str) -> Result<Option<StoredFiling>, StoreError> {
        ops::filing_in(&self.pool, filing_id).await
    }

    async fn register(&self, query: &RegisterQuery) -> Result<Vec<RegisterRow>, StoreError> {
        ops::register_in(&self.pool, query).await
    }

    async fn ledger_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        ops::ledger_page_in(&self.pool, after_seq, limit).await
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}
