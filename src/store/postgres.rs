//! The scale-out path: several gateway replicas share one PostgreSQL
//! database. Each replica group-commits through its own writer task, and the
//! writers of all replicas take one advisory lock per transaction, so register
//! numbers and the ledger chain stay sequential across replicas.

use std::{
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use sqlx::postgres::{PgListener, PgPool, PgPoolOptions};
use tokio::sync::{mpsc, watch};

use super::{Change, Clock, Job, StoreError, next_batch};

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
/// The channel replicas tell each other about commits on.
const CHANNEL: &str = "minegate_changes";
const NOTIFY: &str = "SELECT pg_notify('minegate_changes', '')";

pub struct PgStore {
    pool: PgPool,
    writer: mpsc::Sender<Job>,
    changes: watch::Sender<Change>,
    /// See [`super::Gauges::runs_taken_apart`].
    taken_apart: Arc<AtomicU64>,
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
        let (changes, _) = watch::channel(Change::default());
        let (writer_pool, writer_changes) = (pool.clone(), changes.clone());
        let taken_apart = Arc::new(AtomicU64::new(0));
        let writer_taken_apart = taken_apart.clone();
        tokio::spawn(async move {
            while let Some(batch) = next_batch(&mut jobs).await {
                ops::apply_batch(
                    &writer_pool,
                    &*clock,
                    Some(WRITE_LOCK),
                    Some(NOTIFY),
                    &writer_changes,
                    &writer_taken_apart,
                    batch,
                )
                .await;
            }
        });
        // Commits on other replicas arrive as notifications.
        let listen_url = url.to_owned();
        let listen_changes = changes.clone();
        tokio::spawn(async move {
            loop {
                match PgListener::connect(&listen_url).await {
                    Ok(mut listener) => {
                        if let Err(error) = listener.listen(CHANNEL).await {
                            tracing::warn!(%error, "LISTEN failed; retrying");
                        } else {
                            // Anything may have been missed while (re)connecting.
                            listen_changes.send_modify(Change::elsewhere);
                            while listener.recv().await.is_ok() {
                                listen_changes.send_modify(Change::elsewhere);
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, "cannot connect to LISTEN; retrying"),
                }
                if listen_changes.is_closed() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Ok(PgStore {
            pool,
            writer,
            changes,
            taken_apart,
        })
    }
}
