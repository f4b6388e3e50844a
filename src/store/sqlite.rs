//! The embedded default: one SQLite file in WAL mode with synchronous=FULL,
//! so a filing that got a receipt survives power loss. One writer task
//! group-commits; readers use the pool concurrently. One gateway process per
//! file.

use std::{
    str::FromStr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use tokio::sync::{mpsc, watch};

use super::{Change, Clock, Job, StoreError, next_batch};

mod ops {
    super::super::ops::store_ops!(
        sqlx::Sqlite,
        sqlx::SqliteConnection,
        super::SqliteStore,
        "sqlite"
    );
}

pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<Job>,
    changes: watch::Sender<Change>,
    /// See [`super::Gauges::runs_taken_apart`].
    taken_apart: Arc<AtomicU64>,
}

impl SqliteStore {
    pub async fn open(url: &str, clock: Arc<dyn Clock>) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5))
            // A run's reads and writes keep a prepared text for each kind and
            // size (a power of two): more than the default 100 in all.
            .statement_cache_capacity(256);
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
        let (changes, _) = watch::channel(Change::default());
        let (writer_pool, writer_changes) = (pool.clone(), changes.clone());
        let taken_apart = Arc::new(AtomicU64::new(0));
        let writer_taken_apart = taken_apart.clone();
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut jobs).await {
                ops::apply_batch(
                    &writer_pool,
                    &*clock,
                    None,
                    None,
                    &writer_changes,
                    &writer_taken_apart,
                    batch,
                )
                .await;
            }
        });
        Ok(SqliteStore {
            pool,
            writer,
            changes,
            taken_apart,
        })
    }
}
