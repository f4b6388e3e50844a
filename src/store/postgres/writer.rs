//! The writer task: it takes whatever jobs are waiting (up to
//! [`MAX_BATCH`]) as one transaction, takes the write lock that orders all
//! replicas' writers once for it, groups consecutive submissions and
//! consecutive acknowledgements into runs ([`super::runs`]), gives each run
//! (and each other job) one savepoint, and answers every caller only after
//! the commit. A run whose writes the database refuses is undone and each
//! of its jobs taken again alone, so one bad job fails alone.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::{Acquire, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot, watch};

use super::{
    reads::{OBLIGATION_COLUMNS, obligation},
    runs::{self, AckJob, Independent},
    uploads,
};
use crate::{
    domain::{
        decisions::{
            self, FormAckDecision, FormAckFacts, FormDecision, LatestRevision, OpenObligation,
        },
        ledger::LedgerEvent,
        obligation::{Obligation, ObligationKind, ObligationStatus},
        quantities::Quarter,
    },
    signing::Signer,
    store::{
        Change, Clock, Finisher, FormAck, FormAckOutcome, FormPublication, Incoming, Job,
        PendingExtract, Recorded, StoreError, SubmitOutcome, finisher, micros, parse_date,
        refuse_the_rest, take_batch,
    },
};

/// Taken first by every writing transaction of every replica; the notice
/// to the other replicas (its payload: this replica's instance, so its own
/// listener passes it by) goes out when the transaction commits, and not at
/// all if it does not.
const LOCK_AND_NOTIFY: &str =
    "SELECT pg_advisory_xact_lock(71462022), pg_notify('minegate_changes', $1)";

pub struct Writer {
    pub pool: PgPool,
    /// This replica's instance: see [`super::listen`].
    pub instance: String,
    pub clock: Arc<dyn Clock>,
    pub changes: watch::Sender<Change>,
    pub taken_apart: Arc<AtomicU64>,
    /// Signs the checkpoint each transaction ends with (replaced after a
    /// rotation); `None` when the store was opened only to read.
    pub signer: Option<Arc<Signer>>,
}

impl Writer {
    /// Takes jobs until the store is closed ([`Job::Stop`]) or every sender
    /// is gone.
    pub async fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        while let Some(first) = jobs.recv().await {
            let (batch, stop) = take_batch(first, &mut jobs);
            if !batch.is_empty() {
                self.commit_batch(batch).await;
            }
            if stop {
                return refuse_the_rest(&mut jobs);
            }
        }
    }

    /// One transaction for `jobs`, under the write lock: every sending
    /// first, then the other jobs in order (runs of submissions and of
    /// acknowledgements together), then the checkpoint that covers them,
    /// the commit, and each caller's answer.
    async fn commit_batch(&mut self, jobs: Vec<Job>) {
        let mut tx = match self.begin_locked().await {
            Ok(tx) => tx,
            Err(error) => return fail_all(jobs, &error.to_string()),
        };
        let mut finishers: Vec<Finisher> = Vec::with_capacity(jobs.len());
        // The extracts the batch made, with their sequence numbers: taken
        // under the write lock, they follow the order of commits across
        // replicas, so a stream here may send them without reading.
        let mut fresh = Vec::new();
        // Every sending of the batch first, in one run: each is of an
        // extract an earlier commit made, and a later job of the batch (an
        // acknowledgement of it) may need its record.
        let (sendings, jobs): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| matches!(job, Job::Attempts { .. }));
        self.sendings(&mut tx, sendings, &mut finishers).await;
        let mut jobs = jobs.into_iter().peekable();
        while let Some(job) = jobs.next() {
            let now = self.clock.now();
            match job {
                Job::Filing(incoming, reply) => {
                    let (run, replies) = filing_run(*incoming, reply, &mut jobs);
                    let (results, made) = self.submissions(&mut tx, &run).await;
                    fresh.extend(made);
                    for (reply, result) in replies.into_iter().zip(results) {
                        finishers.push(finisher(reply, result));
                    }
                }
                Job::AckExtract {
                    extract_id,
                    subscriber,
                    build,
                    reply,
                } => {
                    let first = AckJob {
                        extract_id,
                        subscriber,
                        build,
                    };
                    let (run, replies) = ack_run(first, reply, &mut jobs);
                    let results = self.acknowledgements(&mut tx, now, &run).await;
                    for (reply, result) in replies.into_iter().zip(results) {
                        finishers.push(finisher(reply, result));
                    }
                }
                // Taken out of the batch above.
                Job::Attempts { reply, .. } => drop(reply.send(Err(StoreError::Corrupt(
                    "a sending left in its batch".into(),
                )))),
                Job::Stop => {}
                job => finishers.extend(one_job(&mut tx, now, job).await),
            }
        }
        self.seal_and_commit(tx, fresh, finishers).await;
    }

    /// Seals the checkpoint that covers the batch (signed once, with the key
    /// the history has valid now: a rotation may have replaced it), commits,
    /// hands the fresh extracts on, and answers each caller.
    async fn seal_and_commit(
        &mut self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        mut fresh: Vec<PendingExtract>,
        finishers: Vec<Finisher>,
    ) {
        let sealed = match &mut self.signer {
            Some(signer) => super::tree::seal(&mut tx, signer, self.clock.now()).await,
            None => Ok(None),
        };
        let (committed, sealed) = match sealed {
            Ok(sealed) => (tx.commit().await.map_err(|error| error.to_string()), sealed),
            Err(error) => (Err(format!("sealing the ledger: {error}")), None),
        };
        if let Some(sealed) = &sealed {
            sealed.prove_extracts(&mut fresh);
        }
        if committed.is_ok() {
            self.changes.send_modify(|change| change.committed(fresh));
        }
        for finish in finishers {
            finish(&committed, sealed.as_ref());
        }
    }

    /// A run of submissions in one savepoint; if it fails, each alone.
    /// The outcomes, and the extracts made.
    async fn submissions(
        &self,
        conn: &mut PgConnection,
        run: &[Incoming],
    ) -> (Vec<Result<SubmitOutcome, StoreError>>, Vec<PendingExtract>) {
        match in_savepoint(conn, async |c| runs::submissions(c, run).await).await {
            Ok((outcomes, made)) => (outcomes.into_iter().map(Ok).collect(), made),
            Err(error) if run.len() == 1 => (vec![Err(error)], Vec::new()),
            Err(error) => {
                self.taken_apart(&error, run.len(), "submissions");
                let (mut results, mut made) = (Vec::with_capacity(run.len()), Vec::new());
                for one in run {
                    let alone = std::slice::from_ref(one);
                    let result =
                        in_savepoint(conn, async |c| runs::submissions(c, alone).await).await;
                    results.push(result.and_then(|(outcomes, extracts)| {
                        made.extend(extracts);
                        only(outcomes)
                    }));
                }
                (results, made)
            }
        }
    }

    /// A run of acknowledgements in one savepoint; if it fails, each alone.
    async fn acknowledgements(
        &self,
        conn: &mut PgConnection,
        now: DateTime<Utc>,
        run: &[AckJob],
    ) -> Vec<Result<Option<Recorded>, StoreError>> {
        match in_savepoint(conn, async |c| runs::acknowledgements(c, now, run).await).await {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(error) if run.len() == 1 => vec![Err(error)],
            Err(error) => {
                self.taken_apart(&error, run.len(), "acknowledgements");
                let mut results = Vec::with_capacity(run.len());
                for one in run {
                    let alone = std::slice::from_ref(one);
                    results.push(
                        in_savepoint(conn, async |c| runs::acknowledgements(c, now, alone).await)
                            .await
                            .and_then(only),
                    );
                }
                results
            }
        }
    }

    /// The batch's sendings ([`Job::Attempts`]) as one run in one
    /// savepoint; if it fails, each alone.
    async fn sendings(
        &self,
        conn: &mut PgConnection,
        jobs: Vec<Job>,
        finishers: &mut Vec<Finisher>,
    ) {
        let (mut run, mut replies) = (Vec::new(), Vec::new());
        for job in jobs {
            if let Job::Attempts {
                extract_ids,
                failed,
                subscriber,
                sent_at,
                reply,
            } = job
            {
                run.push(runs::SendingJob {
                    extract_ids,
                    failed,
                    subscriber,
                    sent_at,
                });
                replies.push(reply);
            }
        }
        if run.is_empty() {
            return;
        }
        let results = match in_savepoint(conn, async |c| runs::sendings(c, &run).await).await {
            Ok(answers) => answers.into_iter().map(Ok).collect(),
            Err(error) if run.len() == 1 => vec![Err(error)],
            Err(error) => {
                self.taken_apart(&error, run.len(), "sendings");
                let mut results = Vec::with_capacity(run.len());
                for one in &run {
                    let alone = std::slice::from_ref(one);
                    let result = in_savepoint(conn, async |c| runs::sendings(c, alone).await).await;
                    results.push(result.and_then(only));
                }
                results
            }
        };
        for (reply, result) in replies.into_iter().zip(results) {
            finishers.push(finisher(reply, result));
        }
    }

    fn taken_apart(&self, error: &StoreError, jobs: usize, what: &str) {
        tracing::warn!(%error, jobs, "a run of {what} was not written; taking each alone");
        self.taken_apart.fetch_add(1, Ordering::Relaxed);
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;
/// An acknowledgement's answer: its receipt, `None` if never sent.
type AckReply = Reply<Option<Recorded>>;
type Queue = std::iter::Peekable<std::vec::IntoIter<Job>>;

/// `first` and the submissions queued right after it that may share its
/// run ([`Independent`]), with their replies.
fn filing_run(
    first: Incoming,
    reply: Reply<SubmitOutcome>,
    jobs: &mut Queue,
) -> (Vec<Incoming>, Vec<Reply<SubmitOutcome>>) {
    let mut independent = Independent::default();
    independent.add(&first);
    let (mut run, mut replies) = (vec![first], vec![reply]);
    while let Some(Job::Filing(next, reply)) =
        jobs.next_if(|next| matches!(next, Job::Filing(next, _) if independent.admits(next)))
    {
        independent.add(&next);
        run.push(*next);
        replies.push(reply);
    }
    (run, replies)
}

/// `first` and the acknowledgements queued right after it, each of a
/// different (extract, subscriber), with their replies.
fn ack_run(first: AckJob, reply: AckReply, jobs: &mut Queue) -> (Vec<AckJob>, Vec<AckReply>) {
    let (mut run, mut replies) = (vec![first], vec![reply]);
    while let Some(Job::AckExtract {
        extract_id,
        subscriber,
        build,
        reply,
    }) = jobs.next_if(|next| {
        matches!(next, Job::AckExtract { extract_id, subscriber, .. }
            if !run.iter().any(|a| a.extract_id == *extract_id && a.subscriber == *subscriber))
    }) {
        run.push(AckJob {
            extract_id,
            subscriber,
            build,
        });
        replies.push(reply);
    }
    (run, replies)
}

/// The one answer of a run of one.
fn only<T>(mut answers: Vec<T>) -> Result<T, StoreError> {
    answers
        .pop()
        .ok_or_else(|| StoreError::Corrupt("a run of one gave no answer".into()))
}

impl Writer {
    /// A transaction holding the writers' lock. A connection found dead
    /// there (the server restarted, or ended the session, while it sat in
    /// the pool, which does not ping a connection used within the last
    /// second) is given up and one other tried, once: nothing was done on
    /// it.
    async fn begin_locked(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            let begun = async {
                let mut tx = self.pool.begin().await?;
                sqlx::query(LOCK_AND_NOTIFY)
                    .bind(&self.instance)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            };
            match begun.await {
                // Once, and not when no connection could be had at all
                // (the server is down: another try only doubles the wait
                // past the callers' deadlines; CI's outage test saw it).
                Err(error)
                    if tries < 2
                        && super::unavailable(&error)
                        && !matches!(error, sqlx::Error::PoolTimedOut) =>
                {
                    tracing::info!(%error, "the writer's connection was gone; trying another");
                }
                result => return result,
            }
        }
    }
}

fn fail_all(jobs: Vec<Job>, reason: &str) {
    jobs.into_iter().for_each(|job| job.fail(reason));
}

/// A job done alone, in a savepoint of its own: an upload's chunk or end,
/// dropping uploads, a form's publication or acknowledgement, marking
/// obligations overdue, a signing key; its answer waits for the commit.
/// (Submissions, sendings and acknowledgements of extracts are done in
/// runs by [`Writer::commit_batch`].)
async fn one_job(conn: &mut PgConnection, now: DateTime<Utc>, job: Job) -> Option<Finisher> {
    Some(match job {
        Job::Chunk {
            upload_id,
            index,
            data,
            reply,
        } => finisher(
            reply,
            in_savepoint(conn, async |conn| {
                uploads::write_chunk(conn, now, &upload_id, index, &data).await
            })
            .await,
        ),
        Job::Document(document, reply) => finisher(
            reply,
            in_savepoint(conn, async |conn| {
                uploads::complete_upload(conn, now, document).await
            })
            .await,
        ),
        Job::DropUploads(which, reply) => finisher(
            reply,
            in_savepoint(conn, async |conn| uploads::drop_uploads(conn, &which).await).await,
        ),
        Job::PublishForm(publication, reply) => finisher(
            reply,
            in_savepoint(conn, async |conn| {
                publish_form(conn, now, *publication).await
            })
            .await,
        ),
        Job::AckForm(ack, reply) => finisher(
            reply,
            in_savepoint(conn, async |conn| acknowledge_form(conn, now, *ack).await).await,
        ),
        Job::MarkOverdue(today, reply) => finisher(
            reply,
            in_savepoint(conn, async |conn| mark_overdue(conn, now, today).await).await,
        ),
        Job::AddKey { key, retire, reply } => finisher(
            reply,
            in_savepoint(conn, async |conn| {
                super::tree::add_signing_key(conn, &key, retire.then_some(now)).await
            })
            .await,
        ),
        // Done in runs, or not a job, in the caller: never here.
        job @ (Job::Filing(..) | Job::AckExtract { .. } | Job::Attempts { .. } | Job::Stop) => {
            job.fail("not a job done alone");
            return None;
        }
    })
}

/// Runs `work` in a savepoint: kept if it succeeds, undone if it fails (a
/// failed statement aborts a PostgreSQL transaction up to its savepoint).
async fn in_savepoint<T>(
    conn: &mut PgConnection,
    work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut savepoint = conn.begin().await?;
    match work(&mut savepoint).await {
        Ok(value) => {
            savepoint.commit().await?;
            Ok(value)
        }
        Err(error) => {
            let _ = savepoint.rollback().await;
            Err(error)
        }
    }
}

async fn publish_form(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    publication: FormPublication,
) -> Result<Vec<u8>, StoreError> {
    let FormPublication {
        quarter,
        content_sha256,
        filing_ids,
        build,
    } = publication;
    let (year, q) = (i64::from(quarter.year()), i64::from(quarter.quarter()));
    let latest: Option<(i64, String, Vec<u8>)> = sqlx::query_as(
        "SELECT revision, content_sha256, form FROM form_revisions \
         WHERE year = $1 AND quarter = $2 ORDER BY revision DESC LIMIT 1",
    )
    .bind(year)
    .bind(q)
    .fetch_optional(&mut *conn)
    .await?;
    let latest = latest.map(|(revision, content_sha256, form)| LatestRevision {
        revision: revision as u32,
        content_sha256,
        form,
    });
    // A pull is a read: only new content writes (the revision and its entry).
    let facts = match decisions::decide_form(quarter, &content_sha256, latest, now) {
        FormDecision::Unchanged { form, .. } => return Ok(form),
        FormDecision::Publish(facts) => facts,
    };
    let revision = facts.revision;
    let (body_sha256, form) = build(&facts);
    sqlx::query(
        "INSERT INTO form_revisions (year, quarter, revision, content_sha256, \
         body_sha256, compiled_at, form) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(year)
    .bind(q)
    .bind(i64::from(revision))
    .bind(&content_sha256)
    .bind(&body_sha256)
    .bind(micros(now))
    .bind(&form)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO form_revision_reports (year, quarter, revision, filing_id) \
         SELECT $1, $2, $3, filing_id FROM UNNEST($4::text[]) AS u(filing_id)",
    )
    .bind(year)
    .bind(q)
    .bind(i64::from(revision))
    .bind(&filing_ids)
    .execute(&mut *conn)
    .await?;
    let published = LedgerEvent::FormRevisionPublished {
        quarter,
        revision,
        body_sha256,
        reports: filing_ids.len(),
    };
    runs::append(conn, &[published], now).await?;
    Ok(form)
}

async fn form_ack_facts(
    conn: &mut PgConnection,
    quarter: Quarter,
    revision: u32,
) -> Result<FormAckFacts, StoreError> {
    let (year, q, rev) = (
        i64::from(quarter.year()),
        i64::from(quarter.quarter()),
        i64::from(revision),
    );
    let body_sha256: Option<String> = sqlx::query_scalar(
        "SELECT body_sha256 FROM form_revisions WHERE year = $1 AND quarter = $2 \
         AND revision = $3",
    )
    .bind(year)
    .bind(q)
    .bind(rev)
    .fetch_optional(&mut *conn)
    .await?;
    let earlier_receipt: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT receipt FROM form_acks WHERE year = $1 AND quarter = $2 AND revision = $3",
    )
    .bind(year)
    .bind(q)
    .bind(rev)
    .fetch_optional(&mut *conn)
    .await?;
    let open: Vec<(String, String)> = sqlx::query_as(
        "SELECT obligation_id, due_date FROM obligations WHERE kind = $1 \
         AND fulfilled_at IS NULL AND year = $2 AND quarter = $3 ORDER BY seq",
    )
    .bind(ObligationKind::FinanceForm.as_str())
    .bind(year)
    .bind(q)
    .fetch_all(&mut *conn)
    .await?;
    Ok(FormAckFacts {
        body_sha256,
        earlier_receipt,
        open_obligations: open
            .into_iter()
            .map(|(obligation_id, due)| {
                Ok(OpenObligation {
                    obligation_id,
                    due_date: parse_date(&due)?,
                })
            })
            .collect::<Result<_, StoreError>>()?,
    })
}

async fn acknowledge_form(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    ack: FormAck,
) -> Result<FormAckOutcome, StoreError> {
    let FormAck {
        quarter,
        revision,
        body_sha256,
        build,
    } = ack;
    let facts = form_ack_facts(conn, quarter, revision).await?;
    match decisions::decide_form_ack(quarter, revision, &body_sha256, facts, now) {
        FormAckDecision::UnknownRevision => Ok(FormAckOutcome::UnknownRevision),
        FormAckDecision::DigestMismatch { expected } => {
            Ok(FormAckOutcome::DigestMismatch { expected })
        }
        FormAckDecision::Repeat(receipt) => Ok(FormAckOutcome::Acknowledged(receipt)),
        FormAckDecision::Acknowledge(ack) => {
            let receipt = build(&ack.facts);
            sqlx::query(
                "INSERT INTO form_acks (year, quarter, revision, acknowledged_at, receipt) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(i64::from(quarter.year()))
            .bind(i64::from(quarter.quarter()))
            .bind(i64::from(revision))
            .bind(micros(now))
            .bind(&receipt)
            .execute(&mut *conn)
            .await?;
            for fulfilment in &ack.fulfils {
                sqlx::query(
                    "UPDATE obligations SET status = $1, fulfilled_at = $2 \
                     WHERE obligation_id = $3",
                )
                .bind(fulfilment.status.as_str())
                .bind(micros(fulfilment.fulfilled_at))
                .bind(&fulfilment.obligation_id)
                .execute(&mut *conn)
                .await?;
            }
            runs::append(conn, &ack.ledger_events(&receipt), now).await?;
            Ok(FormAckOutcome::Acknowledged(receipt))
        }
    }
}

async fn mark_overdue(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    today: NaiveDate,
) -> Result<Vec<Obligation>, StoreError> {
    let rows = sqlx::query(&format!(
        "{OBLIGATION_COLUMNS} WHERE status = $1 AND due_date < $2 ORDER BY seq"
    ))
    .bind(ObligationStatus::Pending.as_str())
    .bind(today.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let pending = rows.iter().map(obligation).collect::<Result<_, _>>()?;
    let overdue = decisions::overdue(today, pending);
    let ids: Vec<&str> = overdue
        .iter()
        .map(|(o, _)| o.obligation_id.as_str())
        .collect();
    sqlx::query("UPDATE obligations SET status = $1 WHERE obligation_id = ANY($2::text[])")
        .bind(ObligationStatus::Overdue.as_str())
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    let events: Vec<LedgerEvent> = overdue.iter().map(|(_, event)| event.clone()).collect();
    runs::append(conn, &events, now).await?;
    Ok(overdue.into_iter().map(|(o, _)| o).collect())
}
