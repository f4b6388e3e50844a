//! The scale-out path: several gateway replicas share one PostgreSQL
//! database, through sqlx. Each replica commits through its own writer task
//! (`writer`), a run of jobs at a time; the writers of all replicas take
//! one advisory lock per transaction, so register numbers and the ledger
//! chain stay sequential across replicas. A commit notifies the other
//! replicas (LISTEN/NOTIFY), whose subscribers then read what is pending.

mod ledger;
pub mod migrations;
mod reads;
mod runs;
mod tree;
mod uploads;
mod writer;

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;

use super::{
    AckBuilder, Change, Clock, DeliveryRecord, DocumentRecord, FetchedDocument, FindingQuery,
    FindingRow, FormAck, FormAckOutcome, FormPublication, Gauges, JobQueue, NewDocument,
    ObligationQuery, PendingExtract, QueuedAttempts, RegisterQuery, RegisterRow, ReportForForm,
    Signing, Store, StoreError, StoredCheckpoint, StoredFiling, Submission, SubmitOutcome,
};
use crate::domain::{Sha256Hex, ledger::LedgerEntry, obligation::Obligation, quantities::Quarter};
use crate::{
    evidence::{merkle::Hash, tree::NodeId},
    signing::{self as keys, Admission, KeyRecord},
};

/// The channel replicas tell each other about commits on.
const CHANNEL: &str = "minegate_changes";

/// How long PostgreSQL lets a gateway session sit idle inside a
/// transaction (`idle_in_transaction_session_timeout`): the longest a paused
/// replica can hold the writers' lock. The gateway's own transactions never
/// wait on anything but the database between statements.
pub const IDLE_IN_TRANSACTION: &str = "5s";

/// How long an acknowledgement of an extract that exists but whose sending
/// to this subscriber is not recorded (or a fetch of a document such an
/// extract names) waits for the record: another
/// replica may have handed it to the transport and not committed the
/// record yet. Longer than [`IDLE_IN_TRANSACTION`], the longest that
/// replica's writer can wait for the lock.
const SENDING_WAIT: Duration = Duration::from_secs(10);

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        if unavailable(&error) {
            StoreError::Unavailable(error.to_string())
        } else {
            StoreError::Database(error.to_string())
        }
    }
}

/// The key history of the database at `url`, oldest first; empty before
/// the database has one. Only read.
pub(crate) async fn key_history(url: &str) -> Result<Vec<KeyRecord>, StoreError> {
    let options: PgConnectOptions = url.parse()?;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&options).await?;
    let history: Option<String> = sqlx::query_scalar("SELECT to_regclass('signing_keys')::text")
        .fetch_one(&mut conn)
        .await?;
    let keys = match history {
        None => Vec::new(),
        Some(_) => tree::signing_keys(&mut conn).await?,
    };
    sqlx::Connection::close(conn).await?;
    Ok(keys)
}

/// The pools a store uses: the readers' and chunk writers' (16), and the
/// writer's own (2), each session set as the gateway needs.
async fn connect_pools(url: &str) -> Result<(PgPool, PgPool), StoreError> {
    // A run's statements take arrays whose length changes run to run. A
    // generic plan, made once a statement has run a few times, is kept
    // for the connection's life: made while a table was small, it scans
    // the whole table ever after (seen: a run's DELETE of replaced IP
    // ranges). Planning each statement for its values costs far less.
    //
    // A replica paused (SIGSTOP, a frozen VM) inside a transaction holds
    // the writers' lock: PostgreSQL ends such a session after
    // IDLE_IN_TRANSACTION, so the others wait at most that long, and the
    // paused replica finds its transaction gone and answers nobody for it.
    let options = PgConnectOptions::from_str(url)?.options([
        ("plan_cache_mode", "force_custom_plan"),
        ("idle_in_transaction_session_timeout", IDLE_IN_TRANSACTION),
    ]);
    reach(&options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone())
        .await?;
    // The writer's own connections: a burst of chunk writes and reads on
    // the pool never makes a batch wait for one. Two, so that a batch
    // does not wait for the last one's connection to be handed back to
    // the pool (measured: with one, a lone caller's filing took ~1 ms
    // longer).
    //
    // sqlx pings a connection before handing it out and again when it
    // comes back: round trips on every batch's path that the writer's own
    // connection before the replica fixes did not make (suspected of a lone
    // caller's filing taking ~0.2 ms longer; not shown either way, see
    // BENCHMARKS.md). The writer's are pinged before use only after a
    // second idle; one that died sooner fails its BEGIN, is dropped, and the
    // writer takes another (`Writer::begin_locked`).
    let writer_pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < WRITER_PING_AFTER {
                    return Ok(true);
                }
                sqlx::Connection::ping(conn).await.map(|()| true)
            })
        })
        .connect_with(options)
        .await?;
    Ok((pool, writer_pool))
}

/// How long a writer's connection may sit idle and still be handed out
/// without a ping.
const WRITER_PING_AFTER: Duration = Duration::from_secs(1);

/// Connects once, alone, and closes. A pool retries a refused connection
/// until its timeout and then says only that it timed out; this says why
/// (refused, no such database, a password or certificate refused).
pub(crate) async fn reach(options: &PgConnectOptions) -> Result<(), StoreError> {
    use sqlx::Connection;
    let connection = sqlx::PgConnection::connect_with(options).await?;
    connection.close().await?;
    Ok(())
}

/// Whether `error` says the database cannot be reached (rather than that a
/// statement was wrong).
fn unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01–57P03 (the server
        // is shutting down, crashed, or not yet accepting connections),
        // 25P03 (the session sat idle in a transaction too long: see
        // IDLE_IN_TRANSACTION).
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "25P03")
        }),
        _ => false,
    }
}

pub struct PgStore {
    pool: PgPool,
    jobs: JobQueue,
    changes: watch::Sender<Change>,
    /// See [`Gauges::runs_taken_apart`].
    taken_apart: Arc<AtomicU64>,
    /// See [`Gauges::listener_losses`].
    listener_losses: Arc<AtomicU64>,
    /// The [`listen`] task, ended with the store.
    listener: tokio::task::AbortHandle,
    /// When uploads start (chunks are written beside the writer).
    clock: Arc<dyn Clock>,
}

impl PgStore {
    pub async fn open(
        url: &str,
        clock: Arc<dyn Clock>,
        signing: Signing,
    ) -> Result<PgStore, StoreError> {
        let (pool, writer_pool) = connect_pools(url).await?;
        migrations::run(&pool)
            .await
            .map_err(|error| StoreError::Migrate(error.to_string()))?;
        if let Signing::With {
            signer,
            add_unknown_key,
        } = &signing
        {
            // Under the writers' lock: replicas starting together add a
            // key, and build the tree over an upgraded ledger, one at a time.
            let mut tx = pool.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(71462022)")
                .execute(&mut *tx)
                .await?;
            let history = tree::signing_keys(&mut *tx).await?;
            if keys::admit(&history, &signer.record(), *add_unknown_key)? == Admission::Add {
                tree::add_signing_key(&mut tx, &signer.record(), None).await?;
            }
            tree::seal(&mut tx, &mut signer.clone(), clock.now()).await?;
            tx.commit().await?;
        }

        let (queue, jobs, done) = JobQueue::new(clock.clone());
        let (changes, _) = watch::channel(Change::default());
        let taken_apart = Arc::new(AtomicU64::new(0));
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let context = writer::Writer {
            pool: writer_pool,
            instance: instance.clone(),
            clock: clock.clone(),
            changes: changes.clone(),
            taken_apart: taken_apart.clone(),
            signer: signing.signer(),
        };
        tokio::spawn(async move {
            context.run(jobs).await;
            let _ = done.send(());
        });
        let listener_losses = Arc::new(AtomicU64::new(0));
        let listener = tokio::spawn(listen(
            url.to_owned(),
            instance,
            changes.clone(),
            listener_losses.clone(),
        ));
        Ok(PgStore {
            pool,
            jobs: queue,
            changes,
            taken_apart,
            listener_losses,
            listener: listener.abort_handle(),
            clock,
        })
    }
}

/// Commits on other replicas arrive as notifications: each moves `changes`
/// with what it made unknown, so subscribers read what is pending. This
/// replica's own commits (the payload is its `instance`) moved `changes`
/// already, with the extracts they made.
///
/// Notifications sent while the connection is down are lost: each loss is
/// counted in `losses`, logged, and followed, once listening again, by a
/// move of `changes` that makes every subscriber read what is pending (the
/// catch-up). The task runs until the store ends ([`PgStore::close`], or
/// drop), whether or not any subscriber is listening now.
async fn listen(
    url: String,
    instance: String,
    changes: watch::Sender<Change>,
    losses: Arc<AtomicU64>,
) {
    loop {
        match PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => {
                    // Anything may have been missed while (re)connecting.
                    changes.send_modify(Change::elsewhere);
                    let error = relay(&mut listener, &instance, &changes).await;
                    losses.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        %error,
                        "lost the LISTEN connection: other replicas' changes made meanwhile \
                         are read once it is back"
                    );
                }
                Err(error) => tracing::warn!(%error, "LISTEN failed; retrying"),
            },
            Err(error) => tracing::warn!(%error, "cannot connect to LISTEN; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Passes other replicas' notifications on until the connection is lost;
/// the error that lost it.
async fn relay(
    listener: &mut PgListener,
    instance: &str,
    changes: &watch::Sender<Change>,
) -> String {
    loop {
        // `try_recv` (not `recv`, which reconnects by itself and hides the
        // loss) answers `None` when the connection is lost.
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                if notification.payload() != instance {
                    changes.send_modify(Change::elsewhere);
                }
            }
            Ok(None) => return "the connection was closed".into(),
            Err(error) => return error.to_string(),
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Waits (up to [`SENDING_WAIT`]) for the record of a sending of
    /// `extract_id` to `subscriber`, made on this replica or another: true
    /// once it is committed; false at once when there is no such extract.
    async fn sending_recorded_later(
        &self,
        extract_id: &str,
        subscriber: &str,
    ) -> Result<bool, StoreError> {
        if !reads::extract_exists(&self.pool, extract_id).await? {
            return Ok(false);
        }
        let mut wait = self.wait_for_records();
        loop {
            if reads::extract_sent_to(&self.pool, extract_id, subscriber).await? {
                return Ok(true);
            }
            if !wait.next().await {
                return Ok(false);
            }
        }
    }

    fn wait_for_records(&self) -> RecordWait {
        RecordWait {
            changes: self.changes.subscribe(),
            deadline: tokio::time::Instant::now() + SENDING_WAIT,
        }
    }
}

/// A wait of up to [`SENDING_WAIT`] for records other replicas commit.
struct RecordWait {
    changes: watch::Receiver<Change>,
    deadline: tokio::time::Instant,
}

impl RecordWait {
    /// Until the next commit here or notice from elsewhere, or 250 ms (a
    /// notice can be lost); false once the wait is over.
    async fn next(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        if now >= self.deadline {
            return false;
        }
        let step = (self.deadline - now).min(Duration::from_millis(250));
        if let Ok(Err(_)) = tokio::time::timeout(step, self.changes.changed()).await {
            // The store is closing: no more changes to wait for.
            tokio::time::sleep(step).await;
        }
        true
    }
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        tree::latest(&self.pool).await
    }

    async fn checkpoints(
        &self,
        after_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        tree::checkpoints(&self.pool, after_size, limit).await
    }

    async fn tree_nodes(&self, ids: Vec<NodeId>) -> Result<Vec<Option<Hash>>, StoreError> {
        tree::nodes(&self.pool, &ids).await
    }

    async fn evidence(
        &self,
        kind: &'static str,
        subject: &str,
        digest: &Sha256Hex,
    ) -> Result<Option<super::LeafEvidence>, StoreError> {
        tree::evidence(&self.pool, kind, subject, digest).await
    }

    async fn signing_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        tree::signing_keys(&self.pool).await
    }

    async fn add_signing_key(&self, key: KeyRecord, retire: bool) -> Result<(), StoreError> {
        self.jobs.add_signing_key(key, retire).await
    }

    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn gauges(&self, subscribers: &[String]) -> Result<Gauges, StoreError> {
        let mut gauges = reads::gauges(&self.pool, subscribers).await?;
        gauges.runs_taken_apart = self.taken_apart.load(Ordering::Relaxed);
        gauges.listener_losses = self.listener_losses.load(Ordering::Relaxed);
        Ok(gauges)
    }

    async fn write_chunk(
        &self,
        upload_id: &str,
        index: u64,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        uploads::write_chunk(&mut tx, now, upload_id, index, &data).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn complete_upload(&self, document: NewDocument) -> Result<DocumentRecord, StoreError> {
        self.jobs.complete_upload(document).await
    }

    async fn abandon_upload(&self, upload_id: &str) -> Result<(), StoreError> {
        self.jobs.abandon_upload(upload_id).await
    }

    async fn sweep_uploads(&self, started_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.jobs.sweep_uploads(started_before).await
    }

    async fn document_chunk(
        &self,
        upload_id: &str,
        index: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        reads::document_chunk(&self.pool, upload_id, index).await
    }

    async fn documents(&self, digests: &[Sha256Hex]) -> Result<Vec<DocumentRecord>, StoreError> {
        reads::documents(&self.pool, digests).await
    }

    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, StoreError> {
        self.jobs.submit(submission).await
    }

    async fn filing(&self, filing_id: &str) -> Result<Option<StoredFiling>, StoreError> {
        reads::filing(&self.pool, filing_id).await
    }

    async fn register(&self, query: &RegisterQuery) -> Result<Vec<RegisterRow>, StoreError> {
        reads::register(&self.pool, query).await
    }

    async fn ledger_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        reads::ledger_page(&self.pool, after_seq, limit).await
    }

    async fn close(&self) {
        self.jobs.stop().await;
        self.listener.abort();
        self.pool.close().await;
    }

    fn changes(&self) -> watch::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn pending_extracts(
        &self,
        subscriber: &str,
        from_seq: i64,
        limit: u32,
        skip: &[i64],
    ) -> Result<Vec<PendingExtract>, StoreError> {
        reads::pending_extracts(&self.pool, subscriber, from_seq, limit, skip).await
    }

    async fn acknowledged(
        &self,
        subscriber: &str,
        extract_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        reads::acknowledged(&self.pool, subscriber, extract_ids).await
    }

    async fn queue_attempts(
        &self,
        extract_ids: Vec<String>,
        failed: Vec<(String, String)>,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<QueuedAttempts, StoreError> {
        self.jobs
            .queue_attempts(extract_ids, failed, subscriber, sent_at)
            .await
    }

    fn try_queue_sending(
        &self,
        extract_id: &str,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<Option<QueuedAttempts>, StoreError> {
        self.jobs.try_queue_sending(extract_id, subscriber, sent_at)
    }

    async fn acknowledge_extract(
        &self,
        extract_id: &str,
        subscriber: &str,
        build: AckBuilder,
    ) -> Result<Option<super::Recorded>, StoreError> {
        // The builder is called by each attempt's decision.
        let build: Arc<AckBuilder> = Arc::new(build);
        let again = || -> AckBuilder {
            let build = build.clone();
            Box::new(move |facts| build(facts))
        };
        let first = self
            .jobs
            .acknowledge_extract(extract_id, subscriber, again())
            .await?;
        if first.is_some() || !self.sending_recorded_later(extract_id, subscriber).await? {
            return Ok(first);
        }
        self.jobs
            .acknowledge_extract(extract_id, subscriber, again())
            .await
    }

    async fn extract_sent_to(
        &self,
        extract_id: &str,
        subscriber: &str,
    ) -> Result<bool, StoreError> {
        reads::extract_sent_to(&self.pool, extract_id, subscriber).await
    }

    async fn document_for(
        &self,
        sha256: &str,
        subscriber: &str,
    ) -> Result<Option<FetchedDocument>, StoreError> {
        // As for an acknowledgement: the extract that names it may have
        // been sent by another replica, its record still committing. Every
        // energy identity gets every extract, so waiting tells it nothing
        // it will not be sent.
        let found = reads::document_for(&self.pool, sha256, subscriber).await?;
        if found.is_some() || !reads::document_in_an_extract(&self.pool, sha256).await? {
            return Ok(found);
        }
        let mut wait = self.wait_for_records();
        while wait.next().await {
            let found = reads::document_for(&self.pool, sha256, subscriber).await?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    async fn reports_for_form(&self, quarter: Quarter) -> Result<Vec<ReportForForm>, StoreError> {
        reads::reports_for_form(&self.pool, quarter).await
    }

    async fn form_revision(
        &self,
        quarter: Quarter,
        revision: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        reads::form_revision(&self.pool, quarter, revision).await
    }

    async fn publish_form(&self, publication: FormPublication) -> Result<Vec<u8>, StoreError> {
        self.jobs.publish_form(publication).await
    }

    async fn acknowledge_form(&self, ack: FormAck) -> Result<FormAckOutcome, StoreError> {
        self.jobs.acknowledge_form(ack).await
    }

    async fn obligations(&self, query: &ObligationQuery) -> Result<Vec<Obligation>, StoreError> {
        reads::obligations(&self.pool, query).await
    }

    async fn mark_overdue(&self, today: NaiveDate) -> Result<Vec<Obligation>, StoreError> {
        self.jobs.mark_overdue(today).await
    }

    async fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRow>, StoreError> {
        reads::findings(&self.pool, query).await
    }

    async fn reported_quarters(
        &self,
        bins: &[String],
    ) -> Result<Vec<(String, i32, u32)>, StoreError> {
        reads::reported_quarters(&self.pool, bins).await
    }

    async fn delivery(&self, filing_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        reads::delivery(&self.pool, filing_id).await
    }
}
