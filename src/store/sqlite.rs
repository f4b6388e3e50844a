//! The embedded default: one SQLite file in WAL mode with synchronous=FULL,
//! so a filing that got a receipt survives power loss. One writer task
//! group-commits; readers use the pool concurrently. One gateway process per
//! file.

use std::{str::FromStr, sync::Arc, time::Duration};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::mpsc;

use super::{
    Clock, DocumentRecord, Job, NewDocument, RegisterQuery, RegisterRow, Store, StoreError,
    StoredFiling, Submission, SubmitOutcome, ledger::LedgerEntry, next_batch, send_job,
};
use crate::domain::Sha256Hex;

mod ops {
    super::super::ops::store_ops!(sqlx::Sqlite, sqlx::SqliteConnection);
}

pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<Job>,
}

impl SqliteStore {
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        if let Some(folder) = options.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
                path: options.get_filename().display().to_string(),
                source,
            })?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;

        let (writer, mut jobs) = mpsc::channel(1024);
        let writer_pool = pool.clone();
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut jobs).await {
                ops::apply_batch(&writer_pool, &*clock, None, batch).await;
            }
        });
        Ok(SqliteStore { pool, writer })
    }

    /// The pool, for tests and tools that look underneath.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
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
