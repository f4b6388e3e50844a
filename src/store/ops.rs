//! The store's operations, written once in portable SQL (`$N` parameters,
//! the same tables in both migrations folders) and expanded for each
//! backend's own driver types by `store_ops!`, which also implements
//! [`Store`](super::Store) for the backend's type (a struct with `pool` and
//! `writer` fields). `sqlite.rs` and `postgres.rs` each own their connection
//! setup, migrations and write locking.

/// Appends `statement` to `sql` with each parameter `$N` raised by `offset`,
/// so statements written from `$1` can share one query's parameter list.
pub(crate) fn renumber(statement: &str, offset: usize, sql: &mut String) {
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        sql.push(c);
        if c != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
            continue;
        }
        let mut n = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            n = n * 10 + d as usize;
            chars.next();
        }
        sql.push_str(&(n + offset).to_string());
    }
}

/// Appends `statement` to `sql` with each parameter `$N` written as an
/// anonymous `?`, and returns each one's N in order of appearance (a value
/// used twice is bound twice). SQLite's driver binds the anonymous
/// parameters of a multi-statement query in one pass, statement after
/// statement; numbered ones make it walk every number up to each
/// statement's highest, which grows with the query.
pub(crate) fn anonymize(statement: &str, sql: &mut String) -> Vec<usize> {
    let mut order = Vec::new();
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
            sql.push(c);
            continue;
        }
        let mut n = 0usize;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            n = n * 10 + d as usize;
            chars.next();
        }
        sql.push('?');
        order.push(n);
    }
    order
}

/// The start addresses of every CIDR block with one of `prefixes` (lengths)
/// that holds `first` and starts before it: `first` masked to each, once
/// each. A stored range overlapping a block either starts inside the block
/// or is one of these for its own prefix length.
pub(crate) fn covering_starts(first: u128, prefixes: impl IntoIterator<Item = u32>) -> Vec<u128> {
    let mut starts: Vec<u128> = prefixes
        .into_iter()
        .filter(|prefix| *prefix < 128)
        .map(|prefix| match prefix {
            0 => 0,
            _ => first & (u128::MAX << (128 - prefix)),
        })
        .filter(|start| *start != first)
        .collect();
    starts.sort_unstable();
    starts.dedup();
    starts
}

/// `rows` rows of `width` anonymous parameters each, for a `VALUES` list:
/// `(?, ?), (?, ?)`.
pub(crate) fn anonymous_rows(rows: usize, width: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; rows].join(", ")
}

/// Whether `statement` is an UPDATE or DELETE whose WHERE clause is only
/// `column = $n` terms joined by AND: given NULL for every parameter it
/// matches no row, so repeats of it so bound can pad a query to a size
/// whose text is kept prepared.
pub(crate) fn matches_nothing_on_nulls(statement: &str) -> bool {
    if !(statement.starts_with("UPDATE ") || statement.starts_with("DELETE FROM ")) {
        return false;
    }
    let Some((_, condition)) = statement.rsplit_once(" WHERE ") else {
        return false;
    };
    condition.split(" AND ").all(|term| {
        let mut sides = term.split(" = ");
        match (sides.next(), sides.next(), sides.next()) {
            (Some(column), Some(parameter), None) => {
                !column.is_empty()
                    && column
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && parameter
                        .strip_prefix('$')
                        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            }
            _ => false,
        }
    })
}

/// Most parameters SQLite takes in one statement (its default
/// `SQLITE_MAX_VARIABLE_NUMBER`).
pub(crate) const SQLITE_MAX_PARAMETERS: usize = 32_766;

/// The ledger's head (seq, hash) as two scalar subqueries: NULL, NULL while
/// it is empty. One text for every query that needs the head.
macro_rules! ledger_head_sql {
    () => {
        "(SELECT seq FROM ledger ORDER BY seq DESC LIMIT 1), \
         (SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1)"
    };
}

pub(crate) use ledger_head_sql;

/// Runs `$try` (a run's reads, decisions and writes, `Err` if the run as a
/// whole failed) on all of `$jobs`; if that fails, on each job alone, so one
/// job that cannot be written fails alone.
macro_rules! run_or_each {
    ($try:ident, $conn:expr, $now:expr, $jobs:expr, $taken_apart:expr, $what:literal) => {{
        let jobs = $jobs;
        match $try($conn, $now, &jobs).await {
            Ok(results) => results,
            Err(error) if jobs.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(%error, jobs = jobs.len(), concat!("a run of ", $what, " was not written; taking each alone"));
                $taken_apart.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut results = Vec::with_capacity(jobs.len());
                for job in &jobs {
                    results.push(match $try($conn, $now, std::slice::from_ref(job)).await {
                        Ok(mut one) => one
                            .pop()
                            .unwrap_or_else(|| Err(StoreError::Corrupt("a run of one gave no outcome".into()))),
                        Err(error) => Err(error),
                    });
                }
                results
            }
        }
    }};
}

pub(crate) use run_or_each;

/// Binds a job's deferred `Value`s to a query, in order.
macro_rules! bind_values {
    ($query:expr, $values:expr) => {{
        let mut query = $query;
        for value in $values {
            query = match value {
                Value::Text(v) => query.bind(v),
                Value::OptText(v) => query.bind(v),
                Value::Int(v) => query.bind(v),
                Value::OptInt(v) => query.bind(v),
                Value::Blob(v) => query.bind(v),
            };
        }
        query
    }};
}

pub(crate) use bind_values;

macro_rules! store_ops {
    ($db:ty, $conn:ty, $store:ty, $backend:literal) => {
        use chrono::{DateTime, Utc};
        use sqlx::Connection as _;

        use $crate::{
            domain::{
                Sha256Hex, deadlines,
                filing::{ActivityKind, Filing, FilingKind},
                obligation::{ObligationKind, ObligationStatus},
                quantities::Quarter,
                register::{
                    self, FindingDraft, FindingKind, IpConflict, RegisterChange, RegisterState,
                    RegisterStatus,
                },
            },
            store::{
                AckBuilder, AckFacts, Accepted, Change, Clock, DeliveryRecord, DocumentRecord, ExtractBuilder, ExtractFacts,
                FetchedDocument, FindingQuery, Gauges, FindingRow, FormAck, FormAckOutcome, FormFacts,
                FormPublication, FormRevisionIncluding, Finisher, Job, NewDocument, ObligationQuery, ObligationRow,
                PendingExtract, QueuedAttempts, RegisterQuery, RegisterRow, ReportForForm, Store, StoreError,
                StoredFiling, SubmitOutcome, Submission, finisher, from_micros,
                ledger::{self, LedgerEntry},
                micros, parse_date, send_job,
            },
        };

        #[async_trait::async_trait]
        impl Store for $store {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn gauges(&self, subscribers: &[String]) -> Result<Gauges, StoreError> {
                let obligations: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT status, COUNT(*) FROM obligations GROUP BY status ORDER BY status",
                )
                .fetch_all(&self.pool)
                .await?;
                let ledger_entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
                    .fetch_one(&self.pool)
                    .await?;
                let extracts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM extracts")
                    .fetch_one(&self.pool)
                    .await?;
                let mut pending_extracts = Vec::with_capacity(subscribers.len());
                for subscriber in subscribers {
                    let acknowledged: i64 =
                        sqlx::query_scalar("SELECT COUNT(*) FROM extract_acks WHERE subscriber = $1")
                            .bind(subscriber)
                            .fetch_one(&self.pool)
                            .await?;
                    pending_extracts.push((subscriber.clone(), extracts - acknowledged));
                }
                let runs_taken_apart = self.taken_apart.load(std::sync::atomic::Ordering::Relaxed);
                Ok(Gauges { obligations, ledger_entries, pending_extracts, runs_taken_apart })
            }

            async fn put_document(&self, document: NewDocument) -> Result<DocumentRecord, StoreError> {
                send_job(&self.writer, |reply| Job::Document(document, reply)).await
            }

            async fn documents(&self, digests: &[Sha256Hex]) -> Result<Vec<DocumentRecord>, StoreError> {
                documents_in(&self.pool, digests).await
            }

            async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, StoreError> {
                send_job(&self.writer, |reply| Job::Filing(Box::new(submission), reply)).await
            }

            async fn filing(&self, filing_id: &str) -> Result<Option<StoredFiling>, StoreError> {
                filing_in(&self.pool, filing_id).await
            }

            async fn register(&self, query: &RegisterQuery) -> Result<Vec<RegisterRow>, StoreError> {
                register_in(&self.pool, query).await
            }

            async fn ledger_page(&self, after_seq: i64, limit: u32) -> Result<Vec<LedgerEntry>, StoreError> {
                ledger_page_in(&self.pool, after_seq, limit).await
            }

            async fn close(&self) {
                self.pool.close().await;
            }

            fn changes(&self) -> tokio::sync::watch::Receiver<Change> {
                self.changes.subscribe()
            }

            async fn pending_extracts(&self, subscriber: &str, from_seq: i64, limit: u32) -> Result<Vec<PendingExtract>, StoreError> {
                let rows: Vec<(i64, String, Vec<u8>, i64)> = sqlx::query_as(
                    "SELECT e.seq, e.extract_id, e.body, \
                     (SELECT COUNT(*) FROM extract_attempts t WHERE t.extract_id = e.extract_id AND t.subscriber = $2) \
                     FROM extracts e WHERE e.seq >= $1 AND NOT EXISTS \
                     (SELECT 1 FROM extract_acks a WHERE a.extract_id = e.extract_id AND a.subscriber = $2) \
                     ORDER BY e.seq LIMIT $3",
                )
                .bind(from_seq)
                .bind(subscriber)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(seq, extract_id, body, attempts)| PendingExtract {
                        seq,
                        extract_id,
                        body,
                        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                    })
                    .collect())
            }

            async fn acknowledged(&self, subscriber: &str, extract_ids: &[String]) -> Result<Vec<String>, StoreError> {
                // One query per few hundred ids: a stream asks this at every wake-up.
                let mut acknowledged = Vec::new();
                for chunk in extract_ids.chunks(500) {
                    let placeholders: Vec<String> = (2..chunk.len() + 2).map(|n| format!("${n}")).collect();
                    let sql = format!(
                        "SELECT extract_id FROM extract_acks WHERE subscriber = $1 AND extract_id IN ({})",
                        placeholders.join(", ")
                    );
                    let mut query = sqlx::query_scalar(&sql).bind(subscriber);
                    for id in chunk {
                        query = query.bind(id);
                    }
                    let found: Vec<String> = query.fetch_all(&self.pool).await?;
                    acknowledged.extend(found);
                }
                Ok(acknowledged)
            }

            async fn queue_attempts(
                &self,
                extract_ids: Vec<String>,
                subscriber: &str,
                sent_at: DateTime<Utc>,
            ) -> Result<QueuedAttempts, StoreError> {
                let (reply, answer) = tokio::sync::oneshot::channel();
                let subscriber = subscriber.to_owned();
                self.writer
                    .send(Job::Attempts { extract_ids, subscriber, sent_at, reply })
                    .await
                    .map_err(|_| StoreError::WriterStopped)?;
                Ok(answer)
            }

            async fn acknowledge_extract(&self, extract_id: &str, subscriber: &str, build: AckBuilder) -> Result<Option<Vec<u8>>, StoreError> {
                let (extract_id, subscriber) = (extract_id.to_owned(), subscriber.to_owned());
                send_job(&self.writer, |reply| Job::AckExtract { extract_id, subscriber, build, reply }).await
            }

            async fn document_for(&self, sha256: &str, subscriber: &str) -> Result<Option<FetchedDocument>, StoreError> {
                let row: Option<(String, String, Vec<u8>)> = sqlx::query_as(
                    "SELECT d.kind, doc.media_type, doc.content FROM extract_documents d \
                     JOIN documents doc ON doc.sha256 = d.sha256 \
                     WHERE d.sha256 = $1 AND EXISTS (SELECT 1 FROM extract_attempts a \
                     WHERE a.extract_id = d.extract_id AND a.subscriber = $2) LIMIT 1",
                )
                .bind(sha256)
                .bind(subscriber)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(kind, media_type, content)| FetchedDocument { kind, media_type, content }))
            }

            async fn reports_for_form(&self, quarter: Quarter) -> Result<Vec<ReportForForm>, StoreError> {
                let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
                    "SELECT filing_id, revision, body FROM filings WHERE kind = $1 AND year = $2 \
                     AND quarter = $3 AND superseded_by IS NULL ORDER BY bin_or_iin",
                )
                .bind(FilingKind::QuarterlyReport.as_str())
                .bind(i64::from(quarter.year()))
                .bind(i64::from(quarter.quarter()))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(filing_id, revision, body)| ReportForForm { filing_id, revision: revision as u32, body })
                    .collect())
            }

            async fn publish_form(&self, publication: FormPublication) -> Result<Vec<u8>, StoreError> {
                send_job(&self.writer, |reply| Job::PublishForm(Box::new(publication), reply)).await
            }

            async fn acknowledge_form(&self, ack: FormAck) -> Result<FormAckOutcome, StoreError> {
                send_job(&self.writer, |reply| Job::AckForm(Box::new(ack), reply)).await
            }

            async fn obligations(&self, query: &ObligationQuery) -> Result<Vec<ObligationRow>, StoreError> {
                let rows: Vec<ObligationTuple> = sqlx::query_as(&format!(
                    "{OBLIGATION_COLUMNS} WHERE seq > $1 AND ($2 = '' OR kind = $2) AND ($3 = '' OR status = $3) \
                     AND ($4 = '' OR due_date < $4) ORDER BY seq LIMIT $5"
                ))
                .bind(query.after_seq)
                .bind(query.kind.map_or("", ObligationKind::as_str))
                .bind(query.status.map_or("", ObligationStatus::as_str))
                .bind(query.due_before.map(|d| d.to_string()).unwrap_or_default())
                .bind(i64::from(query.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(obligation_row).collect()
            }

            async fn mark_overdue(&self, today: chrono::NaiveDate) -> Result<Vec<ObligationRow>, StoreError> {
                send_job(&self.writer, |reply| Job::MarkOverdue(today, reply)).await
            }

            async fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRow>, StoreError> {
                type Row = (i64, String, String, String, String, i64, Option<i64>, Option<i64>, String, i64);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT seq, finding_id, kind, bin_or_iin, filing_id, days, year, quarter, detail, detected_at \
                     FROM findings WHERE seq > $1 AND ($2 = '' OR kind = $2) AND ($3 = '' OR bin_or_iin = $3) \
                     ORDER BY seq LIMIT $4",
                )
                .bind(query.after_seq)
                .bind(query.kind.map_or("", FindingKind::as_str))
                .bind(query.bin_or_iin.clone().unwrap_or_default())
                .bind(i64::from(query.limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|r| {
                        Ok(FindingRow {
                            seq: r.0,
                            finding_id: r.1,
                            kind: FindingKind::parse(&r.2)
                                .ok_or_else(|| StoreError::Corrupt(format!("finding kind {:?}", r.2)))?,
                            bin_or_iin: r.3,
                            filing_id: r.4,
                            days: r.5 as i32,
                            quarter: r.6.zip(r.7).map(|(y, q)| (y as i32, q as u32)),
                            detail: r.8,
                            detected_at: from_micros(r.9)?,
                        })
                    })
                    .collect()
            }

            async fn reported_quarters(&self) -> Result<Vec<(String, i32, u32)>, StoreError> {
                let rows: Vec<(String, i64, i64)> = sqlx::query_as(
                    "SELECT DISTINCT bin_or_iin, year, quarter FROM filings WHERE kind = $1",
                )
                .bind(FilingKind::QuarterlyReport.as_str())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(|(b, y, q)| (b, y as i32, q as u32)).collect())
            }

            async fn delivery(&self, filing_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
                let exists: Option<String> = sqlx::query_scalar("SELECT kind FROM filings WHERE filing_id = $1")
                    .bind(filing_id)
                    .fetch_optional(&self.pool)
                    .await?;
                if exists.is_none() {
                    return Ok(None);
                }
                let mut record = DeliveryRecord::default();
                record.extract_id = sqlx::query_scalar("SELECT extract_id FROM extracts WHERE filing_id = $1")
                    .bind(filing_id)
                    .fetch_optional(&self.pool)
                    .await?;
                if let Some(extract_id) = &record.extract_id {
                    let attempts: Vec<(String, i64, i64)> = sqlx::query_as(
                        "SELECT subscriber, attempt, sent_at FROM extract_attempts WHERE extract_id = $1 \
                         ORDER BY sent_at, subscriber, attempt",
                    )
                    .bind(extract_id)
                    .fetch_all(&self.pool)
                    .await?;
                    for (subscriber, attempt, sent_at) in attempts {
                        record.attempts.push((subscriber, attempt as u32, from_micros(sent_at)?));
                    }
                    let acks: Vec<(String, i64)> = sqlx::query_as(
                        "SELECT subscriber, acknowledged_at FROM extract_acks WHERE extract_id = $1 \
                         ORDER BY acknowledged_at, subscriber",
                    )
                    .bind(extract_id)
                    .fetch_all(&self.pool)
                    .await?;
                    for (subscriber, at) in acks {
                        record.acknowledgements.push((subscriber, from_micros(at)?));
                    }
                }
                let forms: Vec<(i64, i64, i64, String, Option<i64>)> = sqlx::query_as(
                    "SELECT r.year, r.quarter, r.revision, f.body_sha256, a.acknowledged_at \
                     FROM form_revision_reports r \
                     JOIN form_revisions f ON f.year = r.year AND f.quarter = r.quarter AND f.revision = r.revision \
                     LEFT JOIN form_acks a ON a.year = r.year AND a.quarter = r.quarter AND a.revision = r.revision \
                     WHERE r.filing_id = $1 ORDER BY r.year, r.quarter, r.revision",
                )
                .bind(filing_id)
                .fetch_all(&self.pool)
                .await?;
                for (y, q, rev, sha, acked) in forms {
                    record.form_revisions.push(FormRevisionIncluding {
                        year: y as i32,
                        quarter: q as u32,
                        revision: rev as u32,
                        body_sha256: sha,
                        acknowledged_at: acked.map(from_micros).transpose()?,
                    });
                }
                let obligations: Vec<ObligationTuple> = sqlx::query_as(&format!(
                    "{OBLIGATION_COLUMNS} WHERE filing_id = $1 ORDER BY seq"
                ))
                .bind(filing_id)
                .fetch_all(&self.pool)
                .await?;
                record.obligations = obligations.into_iter().map(obligation_row).collect::<Result<_, _>>()?;
                Ok(Some(record))
            }
        }

        const OBLIGATION_COLUMNS: &str = "SELECT seq, obligation_id, kind, due_date, status, filing_id, \
            extract_id, year, quarter, fulfilled_at, created_at FROM obligations";

        type ObligationTuple = (
            i64, String, String, String, String, Option<String>, Option<String>, Option<i64>,
            Option<i64>, Option<i64>, i64,
        );

        fn obligation_row(r: ObligationTuple) -> Result<ObligationRow, StoreError> {
            Ok(ObligationRow {
                seq: r.0,
                obligation_id: r.1,
                kind: ObligationKind::parse(&r.2)
                    .ok_or_else(|| StoreError::Corrupt(format!("obligation kind {:?}", r.2)))?,
                due_date: parse_date(&r.3)?,
                status: ObligationStatus::parse(&r.4)
                    .ok_or_else(|| StoreError::Corrupt(format!("obligation status {:?}", r.4)))?,
                filing_id: r.5,
                extract_id: r.6,
                quarter: r.7.zip(r.8).map(|(y, q)| (y as i32, q as u32)),
                fulfilled_at: r.9.map(from_micros).transpose()?,
                created_at: from_micros(r.10)?,
            })
        }

        /// An obligation written with its job's other writes. Its `seq` is not
        /// known until then and is left 0: receipts do not carry it.
        fn new_obligation(
            writes: &mut Writes,
            now: DateTime<Utc>,
            kind: ObligationKind,
            due_date: chrono::NaiveDate,
            filing_id: Option<&str>,
            extract_id: Option<&str>,
            quarter: Option<Quarter>,
        ) -> ObligationRow {
            let obligation_id = new_id("obl");
            writes.push_row(
                "INSERT INTO obligations (obligation_id, kind, due_date, status, filing_id, extract_id, \
                 year, quarter, created_at)",
                vec![
                    Value::Text(obligation_id.clone()),
                    Value::Text(kind.as_str().to_owned()),
                    Value::Text(due_date.to_string()),
                    Value::Text(ObligationStatus::Pending.as_str().to_owned()),
                    Value::OptText(filing_id.map(str::to_owned)),
                    Value::OptText(extract_id.map(str::to_owned)),
                    Value::OptInt(quarter.map(|q| i64::from(q.year()))),
                    Value::OptInt(quarter.map(|q| i64::from(q.quarter()))),
                    Value::Int(micros(now)),
                ],
            );
            ObligationRow {
                seq: 0,
                obligation_id,
                kind,
                due_date,
                status: ObligationStatus::Pending,
                filing_id: filing_id.map(str::to_owned),
                extract_id: extract_id.map(str::to_owned),
                quarter: quarter.map(|q| (q.year(), q.quarter())),
                fulfilled_at: None,
                created_at: now,
            }
        }

        /// §6-1: a form revision of the quarter (year, quarter) was
        /// acknowledged: its FINANCE_FORM obligation is fulfilled, if still open.
        async fn fulfil_form(conn: &mut $conn, now: DateTime<Utc>, year: i64, quarter: i64) -> Result<(), StoreError> {
            let kind = ObligationKind::FinanceForm;
            let open: Vec<ObligationTuple> = sqlx::query_as(&format!(
                "{OBLIGATION_COLUMNS} WHERE kind = $1 AND fulfilled_at IS NULL AND year = $2 AND quarter = $3"
            ))
            .bind(kind.as_str())
            .bind(year)
            .bind(quarter)
            .fetch_all(&mut *conn)
            .await?;
            for row in open {
                let row = obligation_row(row)?;
                let status = ObligationStatus::fulfilled_on(deadlines::local_date(now), row.due_date);
                sqlx::query("UPDATE obligations SET status = $1, fulfilled_at = $2 WHERE obligation_id = $3")
                    .bind(status.as_str())
                    .bind(micros(now))
                    .bind(&row.obligation_id)
                    .execute(&mut *conn)
                    .await?;
                append_ledger(
                    conn,
                    "OBLIGATION_FULFILLED",
                    &row.obligation_id,
                    now,
                    &serde_json::json!({
                        "obligation_id": row.obligation_id,
                        "kind": kind.as_str(),
                        "due_date": row.due_date.to_string(),
                        "status": status.as_str(),
                    }),
                )
                .await?;
            }
            Ok(())
        }

        fn ledger_head(seq: Option<i64>, hash: Option<String>) -> (i64, String) {
            match (seq, hash) {
                (Some(seq), Some(hash)) => (seq, hash),
                _ => (0, ledger::GENESIS.to_owned()),
            }
        }

        async fn record_attempts_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            extract_ids: Vec<String>,
            subscriber: String,
        ) -> Result<Vec<u32>, StoreError> {
            // Each extract's next attempt number and the ledger's head, in one query.
            let placeholders: Vec<String> = (0..extract_ids.len()).map(|i| format!("${}", i + 2)).collect();
            let counts = extract_ids
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    format!(
                        "(SELECT COALESCE(MAX(attempt), 0) FROM extract_attempts \
                         WHERE subscriber = $1 AND extract_id = {})",
                        placeholders[i]
                    )
                })
                .collect::<Vec<_>>();
            let sql = format!(
                "SELECT {}{}{}",
                $crate::store::ops::ledger_head_sql!(),
                if counts.is_empty() { "" } else { ", " },
                counts.join(", ")
            );
            let mut query = sqlx::query(&sql).bind(&subscriber);
            for id in &extract_ids {
                query = query.bind(id);
            }
            let row = query.fetch_one(&mut *conn).await?;
            use sqlx::Row as _;
            let mut head = ledger_head(row.try_get(0)?, row.try_get(1)?);
            let mut writes = Writes::default();
            let mut attempts = Vec::with_capacity(extract_ids.len());
            for (i, extract_id) in extract_ids.iter().enumerate() {
                let attempt: i64 = row.try_get::<i64, _>(i + 2)? + 1;
                writes.push_row(
                    "INSERT INTO extract_attempts (extract_id, subscriber, attempt, sent_at)",
                    vec![
                        Value::Text(extract_id.clone()),
                        Value::Text(subscriber.clone()),
                        Value::Int(attempt),
                        Value::Int(micros(now)),
                    ],
                );
                ledger_entry(
                    &mut writes,
                    &mut head,
                    "EXTRACT_SENT",
                    extract_id,
                    now,
                    &serde_json::json!({ "extract_id": extract_id, "subscriber": subscriber, "attempt": attempt }),
                );
                attempts.push(attempt as u32);
            }
            writes.run(conn).await?;
            Ok(attempts)
        }

        /// What an acknowledgement needs to know, one row: the subscriber's
        /// earlier receipt; the extract's due date, if it was sent to them;
        /// the extract's unfulfilled ENERGY_EXTRACT obligation (id, due date).
        const ACK_FACTS: &str =
            "SELECT \
             (SELECT receipt FROM extract_acks WHERE extract_id = $1 AND subscriber = $2), \
             (SELECT e.due_date FROM extracts e WHERE e.extract_id = $1 AND EXISTS \
              (SELECT 1 FROM extract_attempts a WHERE a.extract_id = e.extract_id AND a.subscriber = $2)), \
             (SELECT obligation_id FROM obligations WHERE kind = $3 AND fulfilled_at IS NULL \
              AND extract_id = $1 ORDER BY seq LIMIT 1), \
             (SELECT due_date FROM obligations WHERE kind = $3 AND fulfilled_at IS NULL \
              AND extract_id = $1 ORDER BY seq LIMIT 1)";

        type AckRead = (Option<Vec<u8>>, Option<String>, Option<String>, Option<String>);

        /// An acknowledgement to store.
        struct AckJob {
            extract_id: String,
            subscriber: String,
            build: AckBuilder,
        }

        fn ack_values(job: &AckJob) -> Vec<Value> {
            vec![
                Value::Text(job.extract_id.clone()),
                Value::Text(job.subscriber.clone()),
                Value::Text(ObligationKind::EnergyExtract.as_str().to_owned()),
            ]
        }

        async fn ack_extract_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            job: AckJob,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            let mut sql = String::from("SELECT ");
            sql.push_str($crate::store::ops::ledger_head_sql!());
            sql.push_str(", ");
            sql.push_str(ACK_FACTS.trim_start_matches("SELECT "));
            let row = $crate::store::ops::bind_values!(sqlx::query(&sql), ack_values(&job))
                .fetch_one(&mut *conn)
                .await?;
            use sqlx::Row as _;
            let mut head = ledger_head(row.try_get(0)?, row.try_get(1)?);
            let facts: AckRead = (row.try_get(2)?, row.try_get(3)?, row.try_get(4)?, row.try_get(5)?);
            let mut writes = Writes::default();
            let receipt = decide_ack(&mut writes, &mut head, &mut Default::default(), now, &job, facts)?;
            writes.run(conn).await?;
            Ok(receipt)
        }

        /// Decides an acknowledgement from its facts: its writes and ledger
        /// entries after `head`. `fulfilled`: obligations fulfilled earlier
        /// in the same run (the first acknowledgement from any energy
        /// identity fulfils the extract's obligation). Like
        /// [`decide_submission`], it fails only before it changes anything.
        fn decide_ack(
            writes: &mut Writes,
            head: &mut (i64, String),
            fulfilled: &mut std::collections::HashSet<String>,
            now: DateTime<Utc>,
            job: &AckJob,
            (earlier, due, obligation_id, obligation_due): AckRead,
        ) -> Result<Option<Vec<u8>>, StoreError> {
            let AckJob { extract_id, subscriber, build } = job;
            if earlier.is_some() {
                return Ok(earlier);
            }
            let Some(due) = due else { return Ok(None) };
            let due = parse_date(&due)?;
            let obligation = match (obligation_id, obligation_due) {
                (Some(id), Some(due)) if !fulfilled.contains(&id) => Some((id, parse_date(&due)?)),
                _ => None,
            };
            let receipt = build(&AckFacts { acknowledged_at: now, due_date: due });
            writes.push_row(
                "INSERT INTO extract_acks (extract_id, subscriber, acknowledged_at, receipt)",
                vec![
                    Value::Text(extract_id.clone()),
                    Value::Text(subscriber.clone()),
                    Value::Int(micros(now)),
                    Value::Blob(receipt.clone()),
                ],
            );
            ledger_entry(
                writes,
                head,
                "EXTRACT_ACKNOWLEDGED",
                &extract_id,
                now,
                &serde_json::json!({
                    "extract_id": extract_id,
                    "subscriber": subscriber,
                    "receipt_sha256": Sha256Hex::of(&receipt).as_str(),
                }),
            );
            if let Some((obligation_id, due_date)) = obligation {
                let status = ObligationStatus::fulfilled_on(deadlines::local_date(now), due_date);
                writes.push(
                    "UPDATE obligations SET status = $1, fulfilled_at = $2 WHERE obligation_id = $3",
                    vec![
                        Value::Text(status.as_str().to_owned()),
                        Value::Int(micros(now)),
                        Value::Text(obligation_id.clone()),
                    ],
                );
                ledger_entry(
                    writes,
                    head,
                    "OBLIGATION_FULFILLED",
                    &obligation_id,
                    now,
                    &serde_json::json!({
                        "obligation_id": obligation_id,
                        "kind": ObligationKind::EnergyExtract.as_str(),
                        "due_date": due_date.to_string(),
                        "status": status.as_str(),
                    }),
                );
                fulfilled.insert(obligation_id);
            }
            Ok(Some(receipt))
        }

        /// SQLite: a run of acknowledgements, each of a different (extract,
        /// subscriber), read in one query and written in one. Each is decided
        /// as if alone, after the ones before it. If the run's reads or
        /// writes fail, each is taken again alone.
        async fn ack_run_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            jobs: Vec<AckJob>,
            taken_apart: &std::sync::atomic::AtomicU64,
        ) -> Vec<Result<Option<Vec<u8>>, StoreError>> {
            $crate::store::ops::run_or_each!(try_ack_run, conn, now, jobs, taken_apart, "acknowledgements")
        }

        /// [`ack_run_in`] once: `Err` when the run's reads or writes failed.
        async fn try_ack_run(
            conn: &mut $conn,
            now: DateTime<Utc>,
            jobs: &[AckJob],
        ) -> Result<Vec<Result<Option<Vec<u8>>, StoreError>>, StoreError> {
            let mut reads = vec![(concat!("SELECT ", $crate::store::ops::ledger_head_sql!()).to_owned(), Vec::new())];
            reads.extend(jobs.iter().map(|job| (ACK_FACTS.to_owned(), ack_values(job))));
            let rows = fetch_statements(conn, reads, jobs.len() == 1).await?;
            if rows.len() != jobs.len() + 1 {
                return Err(StoreError::Corrupt(format!(
                    "{} rows for a run of {} acknowledgements",
                    rows.len(),
                    jobs.len()
                )));
            }
            use sqlx::Row as _;
            let mut head = ledger_head(rows[0].try_get(0)?, rows[0].try_get(1)?);
            let mut fulfilled = std::collections::HashSet::new();
            let mut writes = Writes::for_jobs(jobs.len());
            let mut results = Vec::with_capacity(jobs.len());
            for (job, row) in jobs.iter().zip(&rows[1..]) {
                let facts = <AckRead as sqlx::FromRow<'_, <$db as sqlx::Database>::Row>>::from_row(row)?;
                results.push(decide_ack(&mut writes, &mut head, &mut fulfilled, now, job, facts));
            }
            writes.run(conn).await?;
            Ok(results)
        }

        async fn publish_form_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            publication: FormPublication,
        ) -> Result<Vec<u8>, StoreError> {
            let FormPublication { quarter, content_sha256, filing_ids, build } = publication;
            let (year, q) = (i64::from(quarter.year()), i64::from(quarter.quarter()));
            let latest: Option<(i64, String, Vec<u8>)> = sqlx::query_as(
                "SELECT revision, content_sha256, form FROM form_revisions WHERE year = $1 AND quarter = $2 \
                 ORDER BY revision DESC LIMIT 1",
            )
            .bind(year)
            .bind(q)
            .fetch_optional(&mut *conn)
            .await?;
            let (revision, form) = match latest {
                Some((revision, content, form)) if content == content_sha256 => (revision, form),
                latest => {
                    let revision = latest.map_or(1, |(r, ..)| r + 1);
                    let (body_sha256, form) = build(&FormFacts {
                        revision: revision as u32,
                        compiled_at: now,
                        due_date: deadlines::finance_form_due(quarter),
                    });
                    sqlx::query(
                        "INSERT INTO form_revisions (year, quarter, revision, content_sha256, body_sha256, \
                         compiled_at, form) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(year)
                    .bind(q)
                    .bind(revision)
                    .bind(&content_sha256)
                    .bind(&body_sha256)
                    .bind(micros(now))
                    .bind(&form)
                    .execute(&mut *conn)
                    .await?;
                    // A thousand rows per statement: 50,000 payers are 50 statements.
                    for chunk in filing_ids.chunks(1000) {
                        let rows: Vec<String> =
                            (0..chunk.len()).map(|i| format!("($1, $2, $3, ${})", i + 4)).collect();
                        let sql = format!(
                            "INSERT INTO form_revision_reports (year, quarter, revision, filing_id) VALUES {}",
                            rows.join(", ")
                        );
                        let mut query = sqlx::query(&sql).bind(year).bind(q).bind(revision);
                        for filing_id in chunk {
                            query = query.bind(filing_id);
                        }
                        query.execute(&mut *conn).await?;
                    }
                    append_ledger(
                        conn,
                        "FORM_REVISION_PUBLISHED",
                        &format!("{year}-Q{q}-r{revision}"),
                        now,
                        &serde_json::json!({
                            "year": year, "quarter": q, "revision": revision,
                            "body_sha256": body_sha256, "reports": filing_ids.len(),
                        }),
                    )
                    .await?;
                    (revision, form)
                }
            };
            append_ledger(
                conn,
                "FORM_PULLED",
                &format!("{year}-Q{q}-r{revision}"),
                now,
                &serde_json::json!({ "year": year, "quarter": q, "revision": revision }),
            )
            .await?;
            Ok(form)
        }

        async fn ack_form_in(conn: &mut $conn, now: DateTime<Utc>, ack: FormAck) -> Result<FormAckOutcome, StoreError> {
            let FormAck { quarter, revision, body_sha256, build } = ack;
            let (year, q, rev) = (i64::from(quarter.year()), i64::from(quarter.quarter()), i64::from(revision));
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT body_sha256 FROM form_revisions WHERE year = $1 AND quarter = $2 AND revision = $3",
            )
            .bind(year)
            .bind(q)
            .bind(rev)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(expected) = stored else { return Ok(FormAckOutcome::UnknownRevision) };
            if expected != body_sha256.to_ascii_lowercase() {
                return Ok(FormAckOutcome::DigestMismatch { expected });
            }
            let earlier: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT receipt FROM form_acks WHERE year = $1 AND quarter = $2 AND revision = $3",
            )
            .bind(year)
            .bind(q)
            .bind(rev)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some(receipt) = earlier {
                return Ok(FormAckOutcome::Acknowledged(receipt));
            }
            let receipt = build(&AckFacts { acknowledged_at: now, due_date: deadlines::finance_form_due(quarter) });
            sqlx::query(
                "INSERT INTO form_acks (year, quarter, revision, acknowledged_at, receipt) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(year)
            .bind(q)
            .bind(rev)
            .bind(micros(now))
            .bind(&receipt)
            .execute(&mut *conn)
            .await?;
            append_ledger(
                conn,
                "FORM_ACKNOWLEDGED",
                &format!("{year}-Q{q}-r{rev}"),
                now,
                &serde_json::json!({ "year": year, "quarter": q, "revision": rev, "body_sha256": expected }),
            )
            .await?;
            fulfil_form(conn, now, year, q).await?;
            Ok(FormAckOutcome::Acknowledged(receipt))
        }

        async fn mark_overdue_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            today: chrono::NaiveDate,
        ) -> Result<Vec<ObligationRow>, StoreError> {
            let due: Vec<ObligationTuple> = sqlx::query_as(&format!(
                "{OBLIGATION_COLUMNS} WHERE status = $1 AND due_date < $2 ORDER BY seq"
            ))
            .bind(ObligationStatus::Pending.as_str())
            .bind(today.to_string())
            .fetch_all(&mut *conn)
            .await?;
            let mut marked = Vec::new();
            for row in due {
                let mut row = obligation_row(row)?;
                sqlx::query("UPDATE obligations SET status = $1 WHERE obligation_id = $2")
                    .bind(ObligationStatus::Overdue.as_str())
                    .bind(&row.obligation_id)
                    .execute(&mut *conn)
                    .await?;
                append_ledger(
                    conn,
                    "OBLIGATION_OVERDUE",
                    &row.obligation_id,
                    now,
                    &serde_json::json!({
                        "obligation_id": row.obligation_id,
                        "kind": row.kind.as_str(),
                        "due_date": row.due_date.to_string(),
                        "filing_id": row.filing_id,
                        "quarter": row.quarter.map(|(y, q)| format!("{y}-Q{q}")),
                    }),
                )
                .await?;
                row.status = ObligationStatus::Overdue;
                marked.push(row);
            }
            Ok(marked)
        }

        /// One transaction for the whole batch, one savepoint per job, and
        /// answers only after the commit. Then `changes` moves, carrying the
        /// extracts the batch made when they are all known (SQLite's runs),
        /// and `after_commit` (PostgreSQL: NOTIFY) tells the other replicas.
        pub(crate) async fn apply_batch(
            pool: &sqlx::Pool<$db>,
            clock: &dyn Clock,
            lock_sql: Option<&'static str>,
            after_commit: Option<&'static str>,
            changes: &tokio::sync::watch::Sender<Change>,
            taken_apart: &std::sync::atomic::AtomicU64,
            jobs: Vec<Job>,
        ) {
            let mut tx = match pool.begin().await {
                Ok(tx) => tx,
                Err(error) => {
                    let reason = error.to_string();
                    jobs.into_iter().for_each(|job| job.fail(&reason));
                    return;
                }
            };
            if let Some(sql) = lock_sql {
                if let Err(error) = sqlx::query(sql).execute(&mut *tx).await {
                    let reason = error.to_string();
                    jobs.into_iter().for_each(|job| job.fail(&reason));
                    return;
                }
            }
            let mut finishers: Vec<Finisher> = Vec::with_capacity(jobs.len());
            // The extracts the batch makes, if all are known here.
            let mut fresh = Vec::new();
            let mut complete = true;
            let mut jobs = jobs.into_iter().peekable();
            while let Some(job) = jobs.next() {
                let now = clock.now();
                // SQLite: consecutive acknowledgements of different (extract,
                // subscriber) go as one run: one read, one write.
                let job = match job {
                    Job::AckExtract { extract_id, subscriber, build, reply } if $backend == "sqlite" => {
                        let mut seen = std::collections::HashSet::new();
                        seen.insert((extract_id.clone(), subscriber.clone()));
                        let mut run = vec![AckJob { extract_id, subscriber, build }];
                        let mut replies = vec![reply];
                        while run.len() < MAX_RUN {
                            let Some(Job::AckExtract { extract_id, subscriber, build, reply }) = jobs.next_if(|next| {
                                matches!(next, Job::AckExtract { extract_id, subscriber, .. }
                                    if !seen.contains(&(extract_id.clone(), subscriber.clone())))
                            }) else {
                                break;
                            };
                            seen.insert((extract_id.clone(), subscriber.clone()));
                            run.push(AckJob { extract_id, subscriber, build });
                            replies.push(reply);
                        }
                        let results = ack_run_in(&mut tx, now, run, taken_apart).await;
                        for (reply, result) in replies.into_iter().zip(results) {
                            finishers.push(finisher(reply, result));
                        }
                        continue;
                    }
                    // SQLite: consecutive submissions that do not touch what
                    // another of them reads go as one run.
                    Job::Filing(submission, reply) if $backend == "sqlite" => {
                        let mut keys = RunKeys::default();
                        keys.add(&submission);
                        let mut run = vec![*submission];
                        let mut replies = vec![reply];
                        while run.len() < MAX_RUN {
                            let Some(Job::Filing(next, reply)) = jobs.next_if(|next| {
                                matches!(next, Job::Filing(next, _) if keys.admits(next))
                            }) else {
                                break;
                            };
                            keys.add(&next);
                            run.push(*next);
                            replies.push(reply);
                        }
                        let results = submit_run_in(&mut tx, now, run, taken_apart).await;
                        for (reply, result) in replies.into_iter().zip(results) {
                            let result = result.map(|(outcome, extract)| {
                                fresh.extend(extract);
                                outcome
                            });
                            finishers.push(finisher(reply, result));
                        }
                        continue;
                    }
                    job => job,
                };
                let finish = match job {
                    // On SQLite the reads need no savepoint and the writes
                    // hold their own; PostgreSQL needs one around the reads
                    // too (a failed statement there aborts the transaction).
                    Job::Filing(submission, reply) => {
                        // It may make an extract the streams must read.
                        complete = false;
                        finisher(
                            reply,
                            in_savepoint(&mut tx, |c| Box::pin(submit_in(c, now, *submission))).await,
                        )
                    }
                    Job::Document(document, reply) => finisher(
                        reply,
                        in_savepoint(&mut tx, |c| Box::pin(put_document_in(c, now, document))).await,
                    ),
                    Job::Attempts { extract_ids, subscriber, sent_at, reply } => finisher(
                        reply,
                        if $backend == "sqlite" {
                            record_attempts_in(&mut tx, sent_at, extract_ids, subscriber).await
                        } else {
                            in_savepoint(&mut tx, |c| {
                                Box::pin(record_attempts_in(c, sent_at, extract_ids, subscriber))
                            })
                            .await
                        },
                    ),
                    Job::AckExtract { extract_id, subscriber, build, reply } => finisher(
                        reply,
                        in_savepoint(&mut tx, |c| {
                            Box::pin(ack_extract_in(c, now, AckJob { extract_id, subscriber, build }))
                        })
                        .await,
                    ),
                    Job::PublishForm(publication, reply) => finisher(
                        reply,
                        in_savepoint(&mut tx, |c| Box::pin(publish_form_in(c, now, *publication))).await,
                    ),
                    Job::AckForm(ack, reply) => finisher(
                        reply,
                        in_savepoint(&mut tx, |c| Box::pin(ack_form_in(c, now, *ack))).await,
                    ),
                    Job::MarkOverdue(today, reply) => finisher(
                        reply,
                        in_savepoint(&mut tx, |c| Box::pin(mark_overdue_in(c, now, today))).await,
                    ),
                };
                finishers.push(finish);
            }
            let committed = tx.commit().await.map_err(|e| e.to_string());
            if committed.is_ok() {
                if let Some(sql) = after_commit {
                    if let Err(error) = sqlx::query(sql).execute(pool).await {
                        tracing::warn!(%error, "could not notify the other replicas");
                    }
                }
                changes.send_modify(|change| {
                    *change = Change {
                        count: change.count + 1,
                        extracts: fresh.into(),
                        complete,
                    }
                });
            }
            for finish in finishers {
                finish(&committed);
            }
        }

        /// Runs `work` in a savepoint: kept if it succeeds, undone if it fails,
        /// so one bad job never takes the rest of its batch down.
        async fn in_savepoint<T>(
            tx: &mut sqlx::Transaction<'_, $db>,
            work: impl for<'c> FnOnce(
                &'c mut $conn,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'c>,
            >,
        ) -> Result<T, StoreError> {
            let mut savepoint = (&mut **tx).begin().await?;
            match work(&mut *savepoint).await {
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

        /// Most jobs in one run (SQLite): their reads in one query, their
        /// writes in one.
        const MAX_RUN: usize = 64;

        /// A new identifier. UUIDv7 (time first, then random bits) keeps
        /// ids unique across replicas and makes each index take new ids at
        /// its end, so a batch dirties a few pages instead of one per row.
        fn new_id(prefix: &str) -> String {
            format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
        }

        /// Appends one entry after the ledger's current head, at once.
        async fn append_ledger(
            conn: &mut $conn,
            kind: &str,
            subject: &str,
            at: DateTime<Utc>,
            payload: &serde_json::Value,
        ) -> Result<(), StoreError> {
            let (seq, hash): (Option<i64>, Option<String>) =
                sqlx::query_as(concat!("SELECT ", $crate::store::ops::ledger_head_sql!()))
                    .fetch_one(&mut *conn)
                    .await?;
            let mut head = ledger_head(seq, hash);
            let mut writes = Writes::default();
            ledger_entry(&mut writes, &mut head, kind, subject, at, payload);
            writes.run(conn).await
        }
        async fn put_document_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            document: NewDocument,
        ) -> Result<DocumentRecord, StoreError> {
            let existing: Option<(String, i64, i64)> = sqlx::query_as(
                "SELECT media_type, size_bytes, stored_at FROM documents WHERE sha256 = $1",
            )
            .bind(document.sha256.as_str())
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((media_type, size, stored_at)) = existing {
                return Ok(DocumentRecord {
                    sha256: document.sha256,
                    media_type,
                    size_bytes: size as u64,
                    stored_at: from_micros(stored_at)?,
                    newly_stored: false,
                });
            }
            let size = document.content.len() as i64;
            sqlx::query(
                "INSERT INTO documents (sha256, media_type, size_bytes, content, stored_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(document.sha256.as_str())
            .bind(&document.media_type)
            .bind(size)
            .bind(&document.content)
            .bind(micros(now))
            .execute(&mut *conn)
            .await?;
            append_ledger(
                conn,
                "DOCUMENT_STORED",
                document.sha256.as_str(),
                now,
                &serde_json::json!({
                    "sha256": document.sha256.as_str(),
                    "media_type": document.media_type,
                    "size_bytes": size,
                }),
            )
            .await?;
            Ok(DocumentRecord {
                sha256: document.sha256,
                media_type: document.media_type,
                size_bytes: size as u64,
                stored_at: now,
                newly_stored: true,
            })
        }

        /// A value bound to a deferred statement.
        #[derive(Clone)]
        enum Value {
            Text(String),
            OptText(Option<String>),
            Int(i64),
            OptInt(Option<i64>),
            Blob(Vec<u8>),
        }

        /// A job's writes (or a run of jobs'), decided after the reads: on
        /// SQLite inside a savepoint, as one multi-statement query for one
        /// job and as kept queries for a run ([`Writes::into_kept`]); on
        /// PostgreSQL as one statement of data-modifying WITH clauses (the
        /// caller holds the savepoint there).
        #[derive(Default)]
        struct Writes {
            statements: Vec<(String, Vec<Value>)>,
            /// Rows for `INSERT INTO table (columns)` prefixes, sent as one
            /// multi-row INSERT each, after `statements`: no statement here
            /// reads a row inserted beside it, and a person's old IP ranges
            /// are deleted before the new ones go in.
            rows: Vec<(&'static str, Vec<Vec<Value>>)>,
            /// Several jobs' writes: a query text not seen before, not worth
            /// keeping prepared.
            shared: bool,
        }

        impl Writes {
            /// `sql` numbers its parameters from `$1`, as a query of its own would.
            fn push(&mut self, sql: impl Into<String>, values: Vec<Value>) {
                self.statements.push((sql.into(), values));
            }

            /// One row for `insert` (`INSERT INTO table (columns)`); the rows of
            /// one `insert` become one statement.
            fn push_row(&mut self, insert: &'static str, values: Vec<Value>) {
                match self.rows.iter_mut().find(|(prefix, _)| *prefix == insert) {
                    Some((_, rows)) => rows.push(values),
                    None => self.rows.push((insert, vec![values])),
                }
            }

            /// Writes for a run of `jobs`: a query text new each time when
            /// there are several, not worth keeping prepared.
            fn for_jobs(jobs: usize) -> Writes {
                Writes { shared: jobs > 1, ..Writes::default() }
            }

            /// The statements in order, then the multi-row INSERTs.
            fn into_statements(mut self) -> Vec<(String, Vec<Value>)> {
                for (insert, rows) in self.rows {
                    let mut sql = format!("{insert} VALUES ");
                    let mut values = Vec::new();
                    for (i, row) in rows.into_iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        let numbers: Vec<String> =
                            (0..row.len()).map(|c| format!("${}", values.len() + c + 1)).collect();
                        sql.push_str(&format!("({})", numbers.join(", ")));
                        values.extend(row);
                    }
                    self.statements.push((sql, values));
                }
                self.statements
            }

            /// SQLite: whether [`Writes::into_kept`] can take these writes.
            fn keepable(&self) -> bool {
                self.statements
                    .iter()
                    .all(|(sql, _)| $crate::store::ops::matches_nothing_on_nulls(sql))
                    && self.rows.iter().all(|(_, rows)| {
                        let width = rows.first().map_or(0, Vec::len);
                        width > 0
                            && rows.len().next_power_of_two() * width <= $crate::store::ops::SQLITE_MAX_PARAMETERS
                            && rows.iter().all(|row| {
                                row.len() == width && !matches!(row[0], Value::OptText(None) | Value::OptInt(None))
                            })
                    })
            }

            /// SQLite, several jobs' writes ([`Writes::keepable`]) as queries
            /// whose texts depend only on what they write and how many, rounded
            /// up to a power of two, so each is prepared once and kept: one
            /// per statement text, repeated, the repeats beyond the real ones
            /// given NULLs (which match no row); one per table, `INSERT …
            /// SELECT * FROM (VALUES …) WHERE column1 IS NOT NULL`, padded with
            /// rows of NULLs (no real row starts with one). Each statement
            /// text's repeats run in the jobs' order, one text after another:
            /// a run's jobs touch different persons, keys and filings, so no
            /// two texts write the same row.
            fn into_kept(self) -> Vec<(String, Vec<Value>)> {
                let mut groups: Vec<(String, Vec<Vec<Value>>)> = Vec::new();
                for (sql, values) in self.statements {
                    match groups.iter_mut().find(|(text, _)| *text == sql) {
                        Some((_, sets)) => sets.push(values),
                        None => groups.push((sql, vec![values])),
                    }
                }
                let mut queries = Vec::with_capacity(groups.len() + self.rows.len());
                for (statement, sets) in groups {
                    let size = sets.len().next_power_of_two();
                    let mut one = String::new();
                    let order = $crate::store::ops::anonymize(&statement, &mut one);
                    let mut all = Vec::with_capacity(size * order.len());
                    for set in &sets {
                        all.extend(order.iter().map(|n| set.get(n.wrapping_sub(1)).cloned().unwrap_or(Value::OptInt(None))));
                    }
                    all.resize(size * order.len(), Value::OptInt(None));
                    queries.push((vec![one; size].join(";\n"), all));
                }
                for (insert, rows) in self.rows {
                    let width = rows[0].len();
                    let size = rows.len().next_power_of_two();
                    let mut all: Vec<Value> = rows.into_iter().flatten().collect();
                    all.resize(size * width, Value::OptInt(None));
                    let values = $crate::store::ops::anonymous_rows(size, width);
                    queries.push((format!("{insert} SELECT * FROM (VALUES {values}) WHERE column1 IS NOT NULL"), all));
                }
                queries
            }

            /// SQLite: the statements as one text of anonymous parameters,
            /// each followed by `;\n`; their values; whether to keep the text
            /// prepared (one job's, or a run's kept ones: [`Writes::into_kept`]).
            fn into_sqlite(self) -> (String, Vec<Value>, bool) {
                let (statements, cache) = if self.shared && self.keepable() {
                    (self.into_kept(), true)
                } else {
                    let cache = !self.shared;
                    let mut anonymous = Vec::new();
                    for (statement, values) in self.into_statements() {
                        let (mut sql, mut all) = (String::new(), Vec::new());
                        push_anonymous(&statement, &values, &mut sql, &mut all);
                        anonymous.push((sql, all));
                    }
                    (anonymous, cache)
                };
                let mut sql = String::new();
                let mut all = Vec::new();
                for (statement, values) in statements {
                    sql.push_str(&statement);
                    sql.push_str(";\n");
                    all.extend(values);
                }
                (sql, all, cache)
            }

            async fn run(self, conn: &mut $conn) -> Result<(), StoreError> {
                if self.statements.is_empty() && self.rows.is_empty() {
                    return Ok(());
                }
                if $backend != "sqlite" {
                    // PostgreSQL takes one statement per query, but data-modifying
                    // WITH clauses make one statement of them all: one round trip.
                    // They share one snapshot, which these writes allow: none of
                    // them reads what another writes (the DELETE of a person's
                    // old ranges does not see the ones inserted beside it).
                    let mut sql = String::from("WITH ");
                    let mut all = Vec::new();
                    for (i, (statement, values)) in self.into_statements().into_iter().enumerate() {
                        if i > 0 {
                            sql.push_str(", ");
                        }
                        sql.push_str(&format!("w{i} AS ("));
                        $crate::store::ops::renumber(&statement, all.len(), &mut sql);
                        sql.push(')');
                        all.extend(values);
                    }
                    sql.push_str(" SELECT 1");
                    $crate::store::ops::bind_values!(sqlx::query(&sql), all)
                        .execute(&mut *conn)
                        .await?;
                    return Ok(());
                }
                let (body, values, cache) = self.into_sqlite();
                write_in_savepoint(conn, &format!("SAVEPOINT job_writes;\n{body}RELEASE job_writes"), values, cache)
                    .await
            }

            /// SQLite, a run's writes in two parts: these open the savepoint
            /// that [`Writes::run_closing`]'s close. If either part fails,
            /// both are undone.
            async fn run_opening(self, conn: &mut $conn) -> Result<(), StoreError> {
                let (body, values, cache) = self.into_sqlite();
                write_in_savepoint(conn, &format!("SAVEPOINT job_writes;\n{body}"), values, cache).await
            }

            /// See [`Writes::run_opening`].
            async fn run_closing(self, conn: &mut $conn) -> Result<(), StoreError> {
                let (body, values, cache) = self.into_sqlite();
                write_in_savepoint(conn, &format!("{body}RELEASE job_writes"), values, cache).await
            }
        }

        /// SQLite: runs `sql` (`SAVEPOINT job_writes; …; RELEASE job_writes`,
        /// anonymous parameters) with `values`, kept prepared if `cache`; if
        /// a statement fails, the ones before it are undone.
        async fn write_in_savepoint(
            conn: &mut $conn,
            sql: &str,
            values: Vec<Value>,
            cache: bool,
        ) -> Result<(), StoreError> {
            let written = $crate::store::ops::bind_values!(sqlx::query(sql).persistent(cache), values)
                .execute(&mut *conn)
                .await;
            if let Err(error) = written {
                undo_writes(conn).await;
                return Err(error.into());
            }
            Ok(())
        }

        /// SQLite: undoes the writes made since `SAVEPOINT job_writes` and
        /// ends the savepoint.
        async fn undo_writes(conn: &mut $conn) {
            let _ = sqlx::query("ROLLBACK TO job_writes").execute(&mut *conn).await;
            let _ = sqlx::query("RELEASE job_writes").execute(&mut *conn).await;
        }

        /// The ledger entry that follows `head` (seq, hash), to be written with the job.
        fn ledger_entry(
            writes: &mut Writes,
            head: &mut (i64, String),
            kind: &str,
            subject: &str,
            at: DateTime<Utc>,
            payload: &serde_json::Value,
        ) {
            let seq = head.0 + 1;
            let payload = payload.to_string();
            let recorded_at = micros(at);
            let hash = ledger::compute_hash(seq, kind, subject, recorded_at, &payload, &head.1);
            writes.push_row(
                "INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash)",
                vec![
                    Value::Int(seq),
                    Value::Text(kind.to_owned()),
                    Value::Text(subject.to_owned()),
                    Value::Int(recorded_at),
                    Value::Text(payload),
                    Value::Text(head.1.clone()),
                    Value::Text(hash.clone()),
                ],
            );
            *head = (seq, hash);
        }

        /// What a submission needs to know, read in one query.
        type SubmitFacts = (
            // the caller's earlier filing with this key: id, request digest, receipt
            Option<String>,
            Option<String>,
            Option<Vec<u8>>,
            // the register entry: number, status, end date, last reported year and quarter
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<i64>,
            // the next register sequence number
            i64,
            // the current revision of this quarter's report: id, revision
            Option<String>,
            Option<i64>,
            // the quarter's FINANCE_FORM obligation, if made already
            Option<String>,
            // the ledger's head: seq, hash
            Option<i64>,
            Option<String>,
            // the next extract sequence number
            i64,
        );

        const SUBMIT_FACTS: &str = concat!(
            "SELECT \
             (SELECT filing_id FROM filings WHERE caller = $1 AND idempotency_key = $2), \
             (SELECT request_sha256 FROM filings WHERE caller = $1 AND idempotency_key = $2), \
             (SELECT receipt FROM filings WHERE caller = $1 AND idempotency_key = $2), \
             (SELECT register_number FROM register WHERE bin_or_iin = $3), \
             (SELECT status FROM register WHERE bin_or_iin = $3), \
             (SELECT activity_end_date FROM register WHERE bin_or_iin = $3), \
             (SELECT last_year FROM register WHERE bin_or_iin = $3), \
             (SELECT last_quarter FROM register WHERE bin_or_iin = $3), \
             (SELECT COALESCE(MAX(seq), 0) + 1 FROM register), \
             (SELECT filing_id FROM filings WHERE bin_or_iin = $3 AND kind = $4 AND year = $5 \
              AND quarter = $6 AND superseded_by IS NULL), \
             (SELECT revision FROM filings WHERE bin_or_iin = $3 AND kind = $4 AND year = $5 \
              AND quarter = $6 AND superseded_by IS NULL), \
             (SELECT obligation_id FROM obligations WHERE kind = $7 AND year = $5 AND quarter = $6), ",
            $crate::store::ops::ledger_head_sql!(),
            ", (SELECT COALESCE(MAX(seq), 0) + 1 FROM extracts)"
        );

        /// The parameters of [`SUBMIT_FACTS`] for `submission`.
        fn facts_values(submission: &Submission) -> Vec<Value> {
            let filing = &submission.filing;
            let quarter_of_report = match filing {
                Filing::Quarterly(report) => Some(report.quarter),
                _ => None,
            };
            vec![
                Value::Text(submission.caller.clone()),
                Value::Text(filing.idempotency_key().as_str().to_owned()),
                Value::Text(filing.id().as_str().to_owned()),
                Value::Text(FilingKind::QuarterlyReport.as_str().to_owned()),
                Value::OptInt(quarter_of_report.map(|q| i64::from(q.year()))),
                Value::OptInt(quarter_of_report.map(|q| i64::from(q.quarter()))),
                Value::Text(ObligationKind::FinanceForm.as_str().to_owned()),
            ]
        }

        /// What earlier submissions of the same run decided that a later one
        /// must see (it cannot read them: the run's writes come after).
        #[derive(Default)]
        struct RunState {
            /// The next register sequence number, if a submission of the run took one.
            next_register_seq: Option<i64>,
            /// The next extract sequence number, likewise.
            next_extract_seq: Option<i64>,
            /// Quarters whose FINANCE_FORM obligation a submission of the run made.
            finance_quarters: std::collections::HashSet<(i64, i64)>,
        }

        /// PostgreSQL: one submission, its reads one statement each (SQLite
        /// takes submissions a run at a time: [`submit_run_in`]).
        async fn submit_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            submission: Submission,
        ) -> Result<SubmitOutcome, StoreError> {
            let facts: SubmitFacts =
                $crate::store::ops::bind_values!(sqlx::query_as(SUBMIT_FACTS), facts_values(&submission))
                    .fetch_one(&mut *conn)
                    .await?;
            let mut conflict_rows = Vec::new();
            if let Some(pool) = submission.filing.ip_pool() {
                let bin = submission.filing.id().as_str();
                for (i, block) in pool.blocks().iter().enumerate() {
                    let (query, values) = ip_conflict_query(bin, block, i);
                    let rows: Vec<(i64, String, String)> =
                        $crate::store::ops::bind_values!(sqlx::query_as(&query), values)
                            .fetch_all(&mut *conn)
                            .await?;
                    conflict_rows.extend(rows);
                }
            }
            let mut head = ledger_head(facts.12, facts.13.clone());
            let mut writes = Writes::default();
            let made = Made::sign(&submission, now);
            // (PostgreSQL numbers extracts itself: none comes back to hand on.)
            let decided = decide_submission(&mut writes, &mut RunState::default(), &submission, facts, conflict_rows, made)?;
            let (outcome, _) = decided.receipted(&mut writes, &mut head, &submission);
            writes.run(conn).await?;
            Ok(outcome)
        }

        /// Column of [`run_facts_query`]'s rows holding the submission's
        /// place in the run (after the [`SubmitFacts`]).
        const RUN_FACTS_TAG: usize = 15;

        /// Column of [`run_facts_query`]'s rows holding the prefix lengths of
        /// the stored IP ranges (`ip_prefix_lengths`), comma-separated, NULL
        /// when none is stored.
        const RUN_FACTS_PREFIXES: usize = 16;

        /// SQLite: the facts of a run's submissions in one statement, one row
        /// each in run order (then padding rows tagged -1). Its text depends
        /// only on the run's length rounded up to a power of two, so it is
        /// prepared once and kept, not compiled again for every run.
        fn run_facts_query(run: &[Submission]) -> (String, Vec<Value>) {
            let size = run.len().next_power_of_two();
            // [`SUBMIT_FACTS`]'s columns over the `input` rows, the rows of
            // one filing or register entry found once (one look-up, not one
            // per column).
            let sql = format!(
                "WITH input(tag, caller, ikey, bin, kind, year, quarter, okind) AS (VALUES {}) \
                 SELECT f.filing_id, f.request_sha256, f.receipt, \
                 r.register_number, r.status, r.activity_end_date, r.last_year, r.last_quarter, \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM register), \
                 p.filing_id, p.revision, \
                 (SELECT obligation_id FROM obligations WHERE kind = i.okind AND year = i.year \
                  AND quarter = i.quarter), {}, \
                 (SELECT COALESCE(MAX(seq), 0) + 1 FROM extracts), \
                 i.tag, (SELECT group_concat(prefix) FROM ip_prefix_lengths) \
                 FROM input i \
                 LEFT JOIN filings f ON f.caller = i.caller AND f.idempotency_key = i.ikey \
                 LEFT JOIN register r ON r.bin_or_iin = i.bin \
                 LEFT JOIN filings p ON p.seq = (SELECT seq FROM filings WHERE bin_or_iin = i.bin \
                  AND kind = i.kind AND year = i.year AND quarter = i.quarter AND superseded_by IS NULL \
                  LIMIT 1) \
                 WHERE i.tag >= 0 ORDER BY i.tag",
                $crate::store::ops::anonymous_rows(size, 8),
                $crate::store::ops::ledger_head_sql!(),
            );
            let mut values = Vec::with_capacity(size * 8);
            for (tag, submission) in run.iter().enumerate() {
                values.push(Value::Int(tag as i64));
                values.extend(facts_values(submission));
            }
            for _ in run.len()..size {
                values.push(Value::Int(-1));
                values.extend(std::iter::repeat_n(Value::OptText(None), 7));
            }
            (sql, values)
        }

        /// Most IP blocks looked up by one statement of [`run_ip_queries`].
        const MAX_RUN_BLOCKS: usize = 1024;

        /// SQLite: the stored ranges of other persons that overlap each block
        /// of the run's pools (rows tagged as [`ip_conflict_query`] tags
        /// them), as few statements as [`MAX_RUN_BLOCKS`] allows. A block's
        /// covering starts go as one JSON array of hex strings, so the text
        /// depends only on the number of blocks rounded up to a power of two
        /// and is prepared once. Only the covering starts of `prefixes`, the
        /// lengths stored ranges have, are looked up: a handful, not one
        /// for every shorter prefix.
        fn run_ip_queries(run: &[Submission], prefixes: &[u32]) -> Vec<(String, Vec<Value>)> {
            let mut blocks = Vec::new();
            for (tag, submission) in run.iter().enumerate() {
                let bin = submission.filing.id().as_str();
                if let Some(pool) = submission.filing.ip_pool() {
                    for (i, block) in pool.blocks().iter().enumerate() {
                        let start = block.range.start_bytes();
                        let covering: Vec<String> = $crate::store::ops::covering_starts(
                            u128::from_be_bytes(start),
                            prefixes.iter().copied(),
                        )
                            .iter()
                            .map(|c| format!("\"{c:032x}\""))
                            .collect();
                        blocks.push([
                            Value::Int((tag * 65_536 + i) as i64),
                            Value::Text(bin.to_owned()),
                            Value::Blob(start.to_vec()),
                            Value::Blob(block.range.end_bytes().to_vec()),
                            Value::Text(format!("[{}]", covering.join(","))),
                        ]);
                    }
                }
            }
            blocks
                .chunks(MAX_RUN_BLOCKS)
                .map(|chunk| {
                    let size = chunk.len().next_power_of_two();
                    let sql = format!(
                        "WITH block(tag, bin, lo, hi, covers) AS (VALUES {}) \
                         SELECT b.tag, r.bin_or_iin, r.cidr FROM block b JOIN ip_ranges r \
                         ON r.range_start >= b.lo AND r.range_start <= b.hi AND r.bin_or_iin <> b.bin \
                         UNION ALL \
                         SELECT b.tag, r.bin_or_iin, r.cidr FROM block b JOIN json_each(b.covers) c \
                         JOIN ip_ranges r ON r.range_start = unhex(c.value) \
                         AND r.range_end >= b.lo AND r.bin_or_iin <> b.bin",
                        $crate::store::ops::anonymous_rows(size, 5)
                    );
                    let mut values: Vec<Value> = chunk.iter().flatten().cloned().collect();
                    // Padding: an empty range and no covering starts match nothing.
                    for _ in chunk.len()..size {
                        values.extend([
                            Value::Int(-1),
                            Value::Text(String::new()),
                            Value::Blob(vec![0xFF]),
                            Value::Blob(vec![0x00]),
                            Value::Text("[]".to_owned()),
                        ]);
                    }
                    (sql, values)
                })
                .collect()
        }

        /// Appends `statement` (parameters `$1`…) to a SQLite query as
        /// anonymous parameters, its values to `all` in their order.
        fn push_anonymous(statement: &str, values: &[Value], sql: &mut String, all: &mut Vec<Value>) {
            for n in $crate::store::ops::anonymize(statement, sql) {
                all.push(values.get(n.wrapping_sub(1)).cloned().unwrap_or(Value::OptInt(None)));
            }
        }

        /// Most parameters in one multi-statement query of a run, to bound
        /// its size.
        const MAX_QUERY_VALUES: usize = 30_000;

        /// Runs `statements` as few multi-statement queries as
        /// [`MAX_QUERY_VALUES`] allows; returns all their rows in order. A
        /// run's query text is new each time: `cache` only for one job's.
        async fn fetch_statements(
            conn: &mut $conn,
            statements: Vec<(String, Vec<Value>)>,
            cache: bool,
        ) -> Result<Vec<<$db as sqlx::Database>::Row>, StoreError> {
            let mut rows = Vec::new();
            let mut statements = statements.into_iter().peekable();
            while statements.peek().is_some() {
                let mut sql = String::new();
                let mut all = Vec::new();
                while let Some((query, values)) =
                    statements.next_if(|(_, v)| all.is_empty() || all.len() + v.len() <= MAX_QUERY_VALUES)
                {
                    if !sql.is_empty() {
                        sql.push_str(";\n");
                    }
                    push_anonymous(&query, &values, &mut sql, &mut all);
                }
                rows.extend(
                    $crate::store::ops::bind_values!(sqlx::query(&sql).persistent(cache), all)
                        .fetch_all(&mut *conn)
                        .await?,
                );
            }
            Ok(rows)
        }

        /// Which submissions can share a run: each reads nothing another of
        /// the run writes (different callers' keys, persons, and IP ranges).
        #[derive(Default)]
        struct RunKeys {
            keys: std::collections::HashSet<(String, String)>,
            persons: std::collections::HashSet<String>,
            ranges: Vec<$crate::domain::ip::IpRange>,
            /// Parameters the run's queries will take, roughly, from above.
            values: usize,
        }

        impl RunKeys {
            fn cost(submission: &Submission) -> usize {
                let blocks = submission.filing.ip_pool().map_or(0, |p| p.blocks().len());
                // Facts and writes ~250; per block its look-up (≤ 132) and row (5).
                250 + blocks * 137
            }

            fn admits(&self, submission: &Submission) -> bool {
                let filing = &submission.filing;
                !self.keys.contains(&(submission.caller.clone(), filing.idempotency_key().as_str().to_owned()))
                    && !self.persons.contains(filing.id().as_str())
                    && self.values + Self::cost(submission) <= MAX_QUERY_VALUES
                    && filing.ip_pool().is_none_or(|pool| {
                        pool.blocks()
                            .iter()
                            .all(|b| self.ranges.iter().all(|r| !r.overlaps(&b.range)))
                    })
            }

            fn add(&mut self, submission: &Submission) {
                let filing = &submission.filing;
                self.keys.insert((submission.caller.clone(), filing.idempotency_key().as_str().to_owned()));
                self.persons.insert(filing.id().as_str().to_owned());
                self.values += Self::cost(submission);
                if let Some(pool) = filing.ip_pool() {
                    self.ranges.extend(pool.blocks().iter().map(|b| b.range.clone()));
                }
            }
        }

        /// SQLite: a run of submissions admitted by [`RunKeys`], all their
        /// reads in one query and all their writes in one. Each is decided
        /// as if alone, after the ones before it (the ledger chain, register
        /// numbers and the quarter's form obligation carry over). If the
        /// run's reads or writes fail, nothing of it is kept and each
        /// submission is read, decided and written again alone, so one that
        /// cannot be written does not take the others down.
        async fn submit_run_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            run: Vec<Submission>,
            taken_apart: &std::sync::atomic::AtomicU64,
        ) -> Vec<Result<(SubmitOutcome, Option<PendingExtract>), StoreError>> {
            $crate::store::ops::run_or_each!(try_submit_run, conn, now, run, taken_apart, "submissions")
        }

        /// [`submit_run_in`] once: `Err` when the run's reads or writes failed.
        async fn try_submit_run(
            conn: &mut $conn,
            now: DateTime<Utc>,
            run: &[Submission],
        ) -> Result<Vec<Result<(SubmitOutcome, Option<PendingExtract>), StoreError>>, StoreError> {
            use sqlx::Row as _;
            // The extracts are signed on another thread while the reads run.
            let unsigned: Vec<_> = run.iter().map(|submission| Made::unsigned(submission, now)).collect();
            let signing = tokio::task::spawn_blocking(move || {
                unsigned.into_iter().map(Made::signed).collect::<Vec<Made>>()
            });
            let (sql, values) = run_facts_query(run);
            let rows = $crate::store::ops::bind_values!(sqlx::query(&sql), values)
                .fetch_all(&mut *conn)
                .await?;
            let prefixes: Vec<u32> = match rows.first() {
                Some(row) => row
                    .try_get::<Option<String>, _>(RUN_FACTS_PREFIXES)?
                    .unwrap_or_default()
                    .split(',')
                    .filter(|prefix| !prefix.is_empty())
                    .map(|prefix| {
                        prefix
                            .parse()
                            .map_err(|_| StoreError::Corrupt(format!("an IP prefix length {prefix:?}")))
                    })
                    .collect::<Result<_, _>>()?,
                None => Vec::new(),
            };
            let mut facts = Vec::with_capacity(run.len());
            for row in &rows {
                // Rows that only fill the query up to its size have no tag.
                if row.try_get::<i64, _>(RUN_FACTS_TAG)? >= 0 {
                    facts.push(<SubmitFacts as sqlx::FromRow<'_, <$db as sqlx::Database>::Row>>::from_row(row)?);
                }
            }
            let mut conflicts: Vec<Vec<(i64, String, String)>> = vec![Vec::new(); run.len()];
            for (sql, values) in run_ip_queries(run, &prefixes) {
                let rows: Vec<(i64, String, String)> =
                    $crate::store::ops::bind_values!(sqlx::query_as(&sql), values)
                        .fetch_all(&mut *conn)
                        .await?;
                for conflict in rows {
                    conflicts
                        .get_mut((conflict.0 / 65_536) as usize)
                        .ok_or_else(|| StoreError::Corrupt("an IP look-up's tag".into()))?
                        .push(conflict);
                }
            }
            if facts.len() != run.len() {
                return Err(StoreError::Corrupt(format!(
                    "{} facts rows for a run of {} submissions",
                    facts.len(),
                    run.len()
                )));
            }
            let mut head = match facts.first() {
                Some(first) => ledger_head(first.12, first.13.clone()),
                None => return Ok(Vec::new()),
            };
            let made = signing
                .await
                .map_err(|error| StoreError::Corrupt(format!("signing a run's extracts: {error}")))?;
            let mut state = RunState::default();
            let mut early = Writes::for_jobs(run.len());
            let mut decided = Vec::with_capacity(run.len());
            for (((submission, facts), conflict_rows), made) in run.iter().zip(facts).zip(conflicts).zip(made) {
                decided.push((
                    decide_submission(&mut early, &mut state, submission, facts, conflict_rows, made),
                    submission.receipt.clone(),
                ));
            }
            // The receipts are signed on another thread while the writes
            // decided so far run; their rows and the ledger's follow.
            let signing = tokio::task::spawn_blocking(move || {
                decided
                    .into_iter()
                    .map(|(decided, build)| {
                        let receipt = match &decided {
                            Ok(Decided::Unreceipted(unreceipted)) => Some(build(&unreceipted.accepted)),
                            _ => None,
                        };
                        (decided, receipt)
                    })
                    .collect::<Vec<_>>()
            });
            let (written, signed) = tokio::join!(early.run_opening(conn), signing);
            written?;
            let signed = match signed {
                Ok(signed) => signed,
                Err(error) => {
                    undo_writes(conn).await;
                    return Err(StoreError::Corrupt(format!("signing a run's receipts: {error}")));
                }
            };
            let mut late = Writes::for_jobs(run.len());
            let mut results = Vec::with_capacity(run.len());
            for (decided, receipt) in signed {
                results.push(match (decided, receipt) {
                    (Err(error), _) => Err(error),
                    (Ok(Decided::Answered(outcome)), _) => Ok((outcome, None)),
                    (Ok(Decided::Unreceipted(unreceipted)), Some(receipt)) => {
                        Ok(unreceipted.finish(&mut late, &mut head, receipt))
                    }
                    (Ok(Decided::Unreceipted(_)), None) => Err(StoreError::Corrupt("a receipt not signed".into())),
                });
            }
            late.run_closing(conn).await?;
            Ok(results)
        }

        /// What a submission's decision needs made before it: its filing's
        /// id and, if it makes an extract, the extract's id, due date and
        /// signed body. Signing is the costliest part of a decision; a run's
        /// extracts are signed on another thread while its reads run. Made
        /// for every submission of a run; a replay's is thrown away.
        struct Made {
            /// The instant of the decision (the extract's creation).
            now: DateTime<Utc>,
            filing_id: String,
            extract: Option<MadeExtract>,
        }

        struct MadeExtract {
            extract_id: String,
            due_date: chrono::NaiveDate,
            body: Vec<u8>,
        }

        /// A [`Made`] before its extract is signed.
        struct Unsigned {
            now: DateTime<Utc>,
            filing_id: String,
            extract: Option<(ExtractBuilder, ExtractFacts)>,
        }

        impl Made {
            fn unsigned(submission: &Submission, now: DateTime<Utc>) -> Unsigned {
                let filing_id = new_id("fil");
                Unsigned {
                    extract: submission.extract.as_ref().map(|build| {
                        let facts = ExtractFacts {
                            extract_id: new_id("ext"),
                            filing_id: filing_id.clone(),
                            created_at: now,
                            due_date: deadlines::energy_extract_due(deadlines::local_date(now)),
                        };
                        (build.clone(), facts)
                    }),
                    filing_id,
                    now,
                }
            }

            fn signed(unsigned: Unsigned) -> Made {
                Made {
                    now: unsigned.now,
                    extract: unsigned.extract.map(|(build, facts)| MadeExtract {
                        body: build(&facts),
                        extract_id: facts.extract_id,
                        due_date: facts.due_date,
                    }),
                    filing_id: unsigned.filing_id,
                }
            }

            /// Made here and now (one submission alone).
            fn sign(submission: &Submission, now: DateTime<Utc>) -> Made {
                Made::signed(Made::unsigned(submission, now))
            }
        }

        /// Decides a submission, at the instant its ids and extract were
        /// [`Made`], from what was read for it (and what the run before it
        /// decided): its outcome, writes and ledger entries.
        /// It fails only before it writes or changes anything, so the rest
        /// of a run goes on after a submission that failed.
        fn decide_submission(
            writes: &mut Writes,
            run: &mut RunState,
            submission: &Submission,
            facts: SubmitFacts,
            conflict_rows: Vec<(i64, String, String)>,
            made: Made,
        ) -> Result<Decided, StoreError> {
            let Made { now, filing_id, extract } = made;
            let Submission {
                caller,
                filing,
                body,
                request_sha256,
                receipt: _,
                extract: _,
            } = submission;
            let key = filing.idempotency_key().as_str().to_owned();
            let bin = filing.id().as_str().to_owned();
            let quarter_of_report = match &filing {
                Filing::Quarterly(report) => Some(report.quarter),
                _ => None,
            };
            let blocks: Vec<&$crate::domain::ip::IpBlock> =
                filing.ip_pool().map(|pool| pool.blocks().iter().collect()).unwrap_or_default();
            let (
                earlier_id,
                earlier_digest,
                earlier_receipt,
                register_entry_number,
                register_status,
                register_end,
                last_year,
                last_quarter,
                next_register_seq,
                previous_id,
                previous_revision,
                finance_obligation,
                _,
                _,
                next_extract_seq,
            ) = facts;
            let next_register_seq = run.next_register_seq.map_or(next_register_seq, |n| n.max(next_register_seq));
            if let (Some(filing_id), Some(digest), Some(receipt)) =
                (earlier_id, earlier_digest, earlier_receipt)
            {
                return Ok(Decided::Answered(if digest == request_sha256.as_str() {
                    SubmitOutcome::Replayed(receipt)
                } else {
                    SubmitOutcome::KeyReused { filing_id }
                }));
            }

            let state = match &register_status {
                None => None,
                Some(status) => Some(RegisterState {
                    status: RegisterStatus::parse(status)
                        .ok_or_else(|| StoreError::Corrupt(format!("register status {status:?}")))?,
                    activity_end: register_end.as_deref().map(parse_date).transpose()?,
                }),
            };

            let conflicts = ip_conflicts(&blocks, conflict_rows);

            let received = deadlines::local_date(now);
            let assessment = register::assess(&filing, received, state.as_ref(), &conflicts);
            let at = micros(now);

            let mut revision = 0u32;
            if quarter_of_report.is_some() {
                revision = previous_revision.map_or(1, |r| r as u32 + 1);
                if let Some(previous_id) = previous_id {
                    writes.push(
                        "UPDATE filings SET superseded_by = $1 WHERE filing_id = $2",
                        vec![Value::Text(filing_id.clone()), Value::Text(previous_id)],
                    );
                }
            }

            let mut register_number = register_entry_number;
            match (&filing, assessment.register) {
                (Filing::Start(start), RegisterChange::Create) => {
                    let number = format!("KZ-DM-{next_register_seq:06}");
                    run.next_register_seq = Some(next_register_seq + 1);
                    writes.push_row(
                        "INSERT INTO register (seq, register_number, bin_or_iin, name, legal_address, \
                         activity_kind, status, registered_at, start_filing_id, planned_start_date, \
                         required_power_kw, updated_at)",
                        vec![
                            Value::Int(next_register_seq),
                            Value::Text(number.clone()),
                            Value::Text(bin.clone()),
                            Value::Text(start.person.name.clone()),
                            Value::Text(start.person.legal_address.clone()),
                            Value::Text(start.person.activity.as_str().to_owned()),
                            Value::Text(RegisterStatus::Planned.as_str().to_owned()),
                            Value::Int(at),
                            Value::Text(filing_id.clone()),
                            Value::Text(start.planned_start.to_string()),
                            Value::Int(start.required_power.value() as i64),
                            Value::Int(at),
                        ],
                    );
                    register_number = Some(number);
                }
                (Filing::Start(start), RegisterChange::SetStatus(status)) => {
                    // A terminated person notifies a new start.
                    writes.push(
                        "UPDATE register SET status = $1, activity_end_date = NULL, start_filing_id = $2, \
                         planned_start_date = $3, required_power_kw = $4, name = $5, legal_address = $6, \
                         activity_kind = $7, updated_at = $8 WHERE bin_or_iin = $9",
                        vec![
                            Value::Text(status.as_str().to_owned()),
                            Value::Text(filing_id.clone()),
                            Value::Text(start.planned_start.to_string()),
                            Value::Int(start.required_power.value() as i64),
                            Value::Text(start.person.name.clone()),
                            Value::Text(start.person.legal_address.clone()),
                            Value::Text(start.person.activity.as_str().to_owned()),
                            Value::Int(at),
                            Value::Text(bin.clone()),
                        ],
                    );
                }
                (Filing::Quarterly(report), change) => {
                    if let Some(state) = &state {
                        let status = match change {
                            RegisterChange::SetStatus(status) => status,
                            _ => state.status,
                        };
                        let this = (i64::from(report.quarter.year()), i64::from(report.quarter.quarter()));
                        let last = match (last_year, last_quarter) {
                            (Some(y), Some(q)) if (y, q) > this => (y, q),
                            _ => this,
                        };
                        writes.push(
                            "UPDATE register SET status = $1, name = $2, legal_address = $3, \
                             last_year = $4, last_quarter = $5, updated_at = $6 WHERE bin_or_iin = $7",
                            vec![
                                Value::Text(status.as_str().to_owned()),
                                Value::Text(report.person.name.clone()),
                                Value::Text(report.person.legal_address.clone()),
                                Value::Int(last.0),
                                Value::Int(last.1),
                                Value::Int(at),
                                Value::Text(bin.clone()),
                            ],
                        );
                    }
                }
                (Filing::Termination(notice), RegisterChange::SetStatus(status)) => {
                    writes.push(
                        "UPDATE register SET status = $1, activity_end_date = $2, updated_at = $3 \
                         WHERE bin_or_iin = $4",
                        vec![
                            Value::Text(status.as_str().to_owned()),
                            Value::Text(notice.activity_end.to_string()),
                            Value::Int(at),
                            Value::Text(bin.clone()),
                        ],
                    );
                }
                _ => {}
            }

            if let Some(pool) = filing.ip_pool() {
                writes.push(
                    "DELETE FROM ip_ranges WHERE bin_or_iin = $1",
                    vec![Value::Text(bin.clone())],
                );
                for block in pool.blocks() {
                    if $backend == "sqlite" {
                        writes.push_row(
                            "INSERT OR IGNORE INTO ip_prefix_lengths (prefix)",
                            vec![Value::Int(i64::from(block.range.prefix()))],
                        );
                    }
                    writes.push_row(
                        "INSERT INTO ip_ranges (bin_or_iin, cidr, range_start, range_end, filing_id)",
                        vec![
                            Value::Text(bin.clone()),
                            Value::Text(block.cidr.clone()),
                            Value::Blob(block.range.start_bytes().to_vec()),
                            Value::Blob(block.range.end_bytes().to_vec()),
                            Value::Text(filing_id.clone()),
                        ],
                    );
                }
            }

            let findings: Vec<(String, FindingDraft)> = assessment
                .findings
                .iter()
                .map(|finding| (new_id("fnd"), finding.clone()))
                .collect();
            for (finding_id, finding) in &findings {
                writes.push_row(
                    "INSERT INTO findings (finding_id, kind, bin_or_iin, filing_id, days, year, quarter, \
                     detail, detected_at)",
                    vec![
                        Value::Text(finding_id.clone()),
                        Value::Text(finding.kind.as_str().to_owned()),
                        Value::Text(bin.clone()),
                        Value::Text(filing_id.clone()),
                        Value::Int(i64::from(finding.days)),
                        Value::OptInt(finding.quarter.map(|q| i64::from(q.year()))),
                        Value::OptInt(finding.quarter.map(|q| i64::from(q.quarter()))),
                        Value::Text(finding.detail.clone()),
                        Value::Int(at),
                    ],
                );
            }

            // §6 the four-item extract, and its 10-day obligation; §6-1 the
            // quarter's form obligation, once per quarter.
            let mut obligations = Vec::new();
            let mut ledger_entries = Vec::new();
            let mut fresh = None;
            if let Some(MadeExtract { extract_id, due_date, body: extract_body }) = extract {
                ledger_entries.push((
                    "EXTRACT_CREATED",
                    extract_id.clone(),
                    serde_json::json!({
                        "extract_id": extract_id,
                        "filing_id": filing_id,
                        "due_date": due_date.to_string(),
                        "extract_sha256": Sha256Hex::of(&extract_body).as_str(),
                    }),
                ));
                let mut values = vec![
                    Value::Text(extract_id.clone()),
                    Value::Text(filing_id.clone()),
                    Value::Text(bin.clone()),
                    Value::Int(at),
                    Value::Text(due_date.to_string()),
                    Value::Blob(extract_body.clone()),
                ];
                if $backend == "sqlite" {
                    // One writer: the sequence number is known before the
                    // insert, so the extract can go to the streams from
                    // memory once it commits.
                    let seq = run.next_extract_seq.map_or(next_extract_seq, |n| n.max(next_extract_seq));
                    run.next_extract_seq = Some(seq + 1);
                    values.push(Value::Int(seq));
                    writes.push_row(
                        "INSERT INTO extracts (extract_id, filing_id, bin_or_iin, created_at, due_date, body, seq)",
                        values,
                    );
                    fresh = Some(PendingExtract {
                        seq,
                        extract_id: extract_id.clone(),
                        body: extract_body,
                        attempts: 0,
                    });
                } else {
                    writes.push(
                        "INSERT INTO extracts (extract_id, filing_id, bin_or_iin, created_at, due_date, body) \
                         VALUES ($1, $2, $3, $4, $5, $6)",
                        values,
                    );
                }
                for document in filing.documents() {
                    writes.push_row(
                        "INSERT INTO extract_documents (extract_id, sha256, kind)",
                        vec![
                            Value::Text(extract_id.clone()),
                            Value::Text(document.sha256.as_str().to_owned()),
                            Value::Text(document.kind.as_str().to_owned()),
                        ],
                    );
                }
                obligations.push(new_obligation(
                    writes,
                    now,
                    ObligationKind::EnergyExtract,
                    due_date,
                    Some(&filing_id),
                    Some(&extract_id),
                    None,
                ));
            }
            if let Some(quarter) = quarter_of_report
                && finance_obligation.is_none()
                && !run.finance_quarters.contains(&(i64::from(quarter.year()), i64::from(quarter.quarter())))
            {
                obligations.push(new_obligation(
                    writes,
                    now,
                    ObligationKind::FinanceForm,
                    deadlines::finance_form_due(quarter),
                    None,
                    None,
                    Some(quarter),
                ));
                run.finance_quarters.insert((i64::from(quarter.year()), i64::from(quarter.quarter())));
            }

            let accepted = Accepted {
                filing_id: filing_id.clone(),
                received_at: now,
                register_number: register_number.clone(),
                assessment,
                findings,
                revision,
                obligations,
            };
            let quarter = filing.quarter();
            let filing_row = vec![
                Value::Text(filing_id.clone()),
                Value::Text(filing.kind().as_str().to_owned()),
                Value::Text(bin.clone()),
                Value::Text(caller.clone()),
                Value::Text(key),
                Value::Text(request_sha256.as_str().to_owned()),
                Value::OptInt(quarter.map(|q| i64::from(q.year()))),
                Value::OptInt(quarter.map(|q| i64::from(q.quarter()))),
                Value::Int(i64::from(revision)),
                Value::Int(at),
                Value::Blob(body.clone()),
            ];
            let mut filing_accepted = serde_json::Map::new();
            for (name, value) in [
                ("filing_id", serde_json::Value::from(filing_id)),
                ("kind", filing.kind().as_str().into()),
                ("bin_or_iin", bin.into()),
                ("caller", caller.as_str().into()),
                ("request_sha256", request_sha256.as_str().into()),
                ("register_number", register_number.into()),
                ("revision", revision.into()),
                (
                    "findings",
                    accepted.findings.iter().map(|(_, f)| f.kind.as_str()).collect::<Vec<_>>().into(),
                ),
            ] {
                filing_accepted.insert(name.to_owned(), value);
            }
            Ok(Decided::Unreceipted(Box::new(Unreceipted {
                now,
                accepted,
                filing_row,
                ledger_entries,
                filing_accepted,
                fresh,
            })))
        }

        /// A submission decided: answered from what was stored, or accepted
        /// but for its receipt, whose signature the accepted filing's row
        /// and ledger entry need.
        enum Decided {
            Answered(SubmitOutcome),
            Unreceipted(Box<Unreceipted>),
        }

        impl Decided {
            /// The outcome, its receipt signed here (one submission alone).
            fn receipted(
                self,
                writes: &mut Writes,
                head: &mut (i64, String),
                submission: &Submission,
            ) -> (SubmitOutcome, Option<PendingExtract>) {
                match self {
                    Decided::Answered(outcome) => (outcome, None),
                    Decided::Unreceipted(unreceipted) => {
                        let receipt = (submission.receipt)(&unreceipted.accepted);
                        unreceipted.finish(writes, head, receipt)
                    }
                }
            }
        }

        /// An accepted submission waiting for its receipt's bytes.
        struct Unreceipted {
            now: DateTime<Utc>,
            /// What the receipt is built from.
            accepted: Accepted,
            /// The filing's row but its last value, the receipt.
            filing_row: Vec<Value>,
            /// Ledger entries before FILING_ACCEPTED.
            ledger_entries: Vec<(&'static str, String, serde_json::Value)>,
            /// FILING_ACCEPTED's payload but `receipt_sha256`.
            filing_accepted: serde_json::Map<String, serde_json::Value>,
            fresh: Option<PendingExtract>,
        }

        impl Unreceipted {
            /// Writes the filing's row and its ledger entries (after `head`)
            /// with `receipt`; the outcome.
            fn finish(
                self,
                writes: &mut Writes,
                head: &mut (i64, String),
                receipt: Vec<u8>,
            ) -> (SubmitOutcome, Option<PendingExtract>) {
                let Unreceipted { now, accepted, mut filing_row, ledger_entries, mut filing_accepted, fresh } = self;
                filing_row.push(Value::Blob(receipt.clone()));
                writes.push_row(
                    "INSERT INTO filings (filing_id, kind, bin_or_iin, caller, idempotency_key, request_sha256, \
                     year, quarter, revision, received_at, body, receipt)",
                    filing_row,
                );
                for (kind, subject, payload) in &ledger_entries {
                    ledger_entry(writes, head, kind, subject, now, payload);
                }
                filing_accepted.insert(
                    "receipt_sha256".to_owned(),
                    Sha256Hex::of(&receipt).as_str().into(),
                );
                ledger_entry(
                    writes,
                    head,
                    "FILING_ACCEPTED",
                    &accepted.filing_id,
                    now,
                    &serde_json::Value::Object(filing_accepted),
                );
                (SubmitOutcome::Accepted(receipt), fresh)
            }
        }

        /// The query for the ranges of other persons that overlap `block`
        /// (the `index`-th of the pool; each row starts with it). Every
        /// stored range is a CIDR block, so one that overlaps `block` either
        /// starts inside it or is a shorter prefix holding its first address:
        /// the second kind starts at that address masked to its own prefix,
        /// one index look-up per prefix length. No scan of the table.
        fn ip_conflict_query(
            bin: &str,
            block: &$crate::domain::ip::IpBlock,
            index: usize,
        ) -> (String, Vec<Value>) {
            let start = block.range.start_bytes();
            let covering = $crate::store::ops::covering_starts(u128::from_be_bytes(start), 0..128);
            let placeholders: Vec<String> =
                (0..covering.len()).map(|i| format!("${}", i + 4)).collect();
            let sql = format!(
                "SELECT CAST({index} AS BIGINT), bin_or_iin, cidr FROM ip_ranges WHERE bin_or_iin <> $1 AND \
                 ((range_start >= $2 AND range_start <= $3) OR \
                  (range_end >= $2 AND range_start IN ({})))",
                placeholders.join(", ")
            );
            let mut values = vec![
                Value::Text(bin.to_owned()),
                Value::Blob(start.to_vec()),
                Value::Blob(block.range.end_bytes().to_vec()),
            ];
            values.extend(covering.iter().map(|c| Value::Blob(c.to_be_bytes().to_vec())));
            (sql, values)
        }

        /// The conflicts found by [`ip_conflict_query`] rows, block by block.
        fn ip_conflicts(
            blocks: &[&$crate::domain::ip::IpBlock],
            mut rows: Vec<(i64, String, String)>,
        ) -> Vec<IpConflict> {
            rows.sort();
            rows.dedup();
            rows.into_iter()
                .filter_map(|(index, other_bin, other_cidr)| {
                    let block = blocks.get(usize::try_from(index).ok()? % 65_536)?;
                    Some(IpConflict {
                        cidr: block.cidr.clone(),
                        other_cidr,
                        other_bin_or_iin: other_bin,
                    })
                })
                .collect()
        }

        pub(crate) async fn documents_in(
            pool: &sqlx::Pool<$db>,
            digests: &[Sha256Hex],
        ) -> Result<Vec<DocumentRecord>, StoreError> {
            // One query for all of them (a filing refers to a few documents).
            let mut found = Vec::new();
            for chunk in digests.chunks(100) {
                let placeholders: Vec<String> = (1..=chunk.len()).map(|n| format!("${n}")).collect();
                let sql = format!(
                    "SELECT sha256, media_type, size_bytes, stored_at FROM documents WHERE sha256 IN ({})",
                    placeholders.join(", ")
                );
                let mut query = sqlx::query_as(&sql);
                for digest in chunk {
                    query = query.bind(digest.as_str());
                }
                let rows: Vec<(String, String, i64, i64)> = query.fetch_all(pool).await?;
                for digest in chunk {
                    if found.iter().any(|d: &DocumentRecord| d.sha256 == *digest) {
                        continue;
                    }
                    if let Some((_, media_type, size, stored_at)) =
                        rows.iter().find(|row| row.0 == digest.as_str())
                    {
                        found.push(DocumentRecord {
                            sha256: digest.clone(),
                            media_type: media_type.clone(),
                            size_bytes: *size as u64,
                            stored_at: from_micros(*stored_at)?,
                            newly_stored: false,
                        });
                    }
                }
            }
            Ok(found)
        }

        pub(crate) async fn filing_in(
            pool: &sqlx::Pool<$db>,
            filing_id: &str,
        ) -> Result<Option<StoredFiling>, StoreError> {
            let row: Option<(String, String, Vec<u8>, Vec<u8>, Option<String>)> = sqlx::query_as(
                "SELECT filing_id, kind, body, receipt, superseded_by FROM filings WHERE filing_id = $1",
            )
            .bind(filing_id)
            .fetch_optional(pool)
            .await?;
            row.map(|(filing_id, kind, body, receipt, superseded_by)| {
                Ok(StoredFiling {
                    filing_id,
                    kind: FilingKind::parse(&kind)
                        .ok_or_else(|| StoreError::Corrupt(format!("filing kind {kind:?}")))?,
                    body,
                    receipt,
                    superseded_by,
                })
            })
            .transpose()
        }

        pub(crate) async fn register_in(
            pool: &sqlx::Pool<$db>,
            query: &RegisterQuery,
        ) -> Result<Vec<RegisterRow>, StoreError> {
            type Row = (
                i64, String, String, String, String, String, String, i64, String, String, i64,
                Option<i64>, Option<i64>, Option<String>,
            );
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT seq, register_number, bin_or_iin, name, legal_address, activity_kind, status, \
                 registered_at, start_filing_id, planned_start_date, required_power_kw, last_year, \
                 last_quarter, activity_end_date FROM register \
                 WHERE seq > $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR activity_kind = $3) \
                 ORDER BY seq LIMIT $4",
            )
            .bind(query.after_seq)
            .bind(query.status.map_or("", RegisterStatus::as_str))
            .bind(query.activity.map_or("", ActivityKind::as_str))
            .bind(i64::from(query.limit))
            .fetch_all(pool)
            .await?;
            rows.into_iter()
                .map(|row| {
                    Ok(RegisterRow {
                        seq: row.0,
                        register_number: row.1,
                        bin_or_iin: row.2,
                        name: row.3,
                        legal_address: row.4,
                        activity: ActivityKind::parse(&row.5)
                            .ok_or_else(|| StoreError::Corrupt(format!("activity kind {:?}", row.5)))?,
                        status: RegisterStatus::parse(&row.6)
                            .ok_or_else(|| StoreError::Corrupt(format!("register status {:?}", row.6)))?,
                        registered_at: from_micros(row.7)?,
                        start_filing_id: row.8,
                        planned_start_date: parse_date(&row.9)?,
                        required_power_kw: row.10 as u64,
                        last_quarter: row.11.zip(row.12).map(|(y, q)| (y as i32, q as u32)),
                        activity_end_date: row.13.as_deref().map(parse_date).transpose()?,
                    })
                })
                .collect()
        }

        pub(crate) async fn ledger_page_in(
            pool: &sqlx::Pool<$db>,
            after_seq: i64,
            limit: u32,
        ) -> Result<Vec<LedgerEntry>, StoreError> {
            let rows: Vec<(i64, String, String, i64, String, String, String)> = sqlx::query_as(
                "SELECT seq, kind, subject, recorded_at, payload, prev_hash, hash FROM ledger \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            Ok(rows
                .into_iter()
                .map(|(seq, kind, subject, recorded_at, payload, prev_hash, hash)| LedgerEntry {
                    seq,
                    kind,
                    subject,
                    recorded_at,
                    payload,
                    prev_hash,
                    hash,
                })
                .collect())
        }
    };
}

pub(crate) use store_ops;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_anonymous_in_order_of_appearance() {
        let mut sql = String::from("X; ");
        let order = anonymize("SELECT $2, $1, '$' || $10, $2", &mut sql);
        assert_eq!(sql, "X; SELECT ?, ?, '$' || ?, ?");
        assert_eq!(order, vec![2, 1, 10, 2]);
    }

    #[test]
    fn parameters_are_renumbered_and_a_bare_dollar_is_kept() {
        let mut sql = String::from("A $1;");
        renumber("UPDATE t SET a = $1, b = '$' WHERE c = $12", 3, &mut sql);
        assert_eq!(sql, "A $1;UPDATE t SET a = $4, b = '$' WHERE c = $15");
    }

    #[test]
    fn anonymous_rows_for_a_values_list() {
        assert_eq!(anonymous_rows(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(anonymous_rows(1, 1), "(?)");
    }

    #[test]
    fn only_keyed_updates_and_deletes_match_nothing_on_nulls() {
        assert!(matches_nothing_on_nulls(
            "DELETE FROM ip_ranges WHERE bin_or_iin = $1"
        ));
        assert!(matches_nothing_on_nulls(
            "UPDATE register SET status = $1, updated_at = $2 WHERE bin_or_iin = $3"
        ));
        assert!(matches_nothing_on_nulls(
            "UPDATE t SET a = $1 WHERE b = $2 AND c = $10"
        ));
        // NULL parameters would still match (or insert) rows here.
        assert!(!matches_nothing_on_nulls("INSERT INTO t (a) VALUES ($1)"));
        assert!(!matches_nothing_on_nulls("UPDATE t SET a = $1"));
        assert!(!matches_nothing_on_nulls(
            "DELETE FROM t WHERE a = $1 OR b = 2"
        ));
        assert!(!matches_nothing_on_nulls(
            "UPDATE t SET a = $1 WHERE b IS $2"
        ));
        assert!(!matches_nothing_on_nulls("UPDATE t SET a = 1 WHERE b = 2"));
        assert!(!matches_nothing_on_nulls(
            "UPDATE t SET a = 1 WHERE b IN (SELECT c FROM d WHERE e = $1)"
        ));
        assert!(!matches_nothing_on_nulls("UPDATE t SET a = 1 WHERE b = $"));
    }

    #[test]
    fn covering_starts_of_an_ipv4_block() {
        // 95.56.128.0 as IPv4-mapped IPv6 (::ffff:95.56.128.0).
        let first = u128::from(std::net::Ipv4Addr::new(95, 56, 128, 0).to_ipv6_mapped());
        let starts = covering_starts(first, 0..128);
        let v4 = |a, b, c, d| u128::from(std::net::Ipv4Addr::new(a, b, c, d).to_ipv6_mapped());
        // 95.56.0.0/16 holds it; 95.56.128.0 itself is not among them.
        assert!(starts.contains(&v4(95, 56, 0, 0)));
        assert!(starts.contains(&v4(95, 0, 0, 0)));
        assert!(starts.contains(&v4(64, 0, 0, 0)));
        assert!(!starts.contains(&first));
        assert!(!starts.contains(&v4(95, 56, 64, 0)));
        // One per distinct masked value: 0 (prefixes 0–80); one for each of
        // the 16 bits of ffff (prefixes 81–96); then, of the 10 bits set in
        // 95.56.128.0, each but the last (which gives the address itself).
        assert_eq!(starts.len(), 1 + 16 + 9);
        // Only the lengths asked for: /16 (112) gives 95.56.0.0, /24 (120)
        // the address itself, which is left out; 128 holds nothing shorter.
        assert_eq!(
            covering_starts(first, [120, 112, 0, 128]),
            [0, v4(95, 56, 0, 0)]
        );
    }
}
