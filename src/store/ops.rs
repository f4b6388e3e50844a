//! The store's operations, written once in portable SQL (`$N` parameters,
//! the same tables in both migrations folders) and expanded for each
//! backend's own driver types by `store_ops!`, which also implements
//! [`Store`](super::Store) for the backend's type (a struct with `pool` and
//! `writer` fields). `sqlite.rs` and `postgres.rs` each own their connection
//! setup, migrations and write locking.

macro_rules! store_ops {
    ($db:ty, $conn:ty, $store:ty, $backend:literal) => {
        use chrono::{DateTime, Utc};
        use sqlx::Connection as _;

        use $crate::{
            domain::{
                Sha256Hex, deadlines,
                filing::{ActivityKind, Filing, FilingKind},
                register::{self, FindingDraft, IpConflict, RegisterChange, RegisterState, RegisterStatus},
            },
            store::{
                Accepted, Clock, DocumentRecord, Job, NewDocument, RegisterQuery, RegisterRow,
                Store, StoreError, StoredFiling, SubmitOutcome, Submission, from_micros,
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
        }

        enum Reply {
            Filing(
                tokio::sync::oneshot::Sender<Result<SubmitOutcome, StoreError>>,
                Result<SubmitOutcome, StoreError>,
            ),
            Document(
                tokio::sync::oneshot::Sender<Result<DocumentRecord, StoreError>>,
                Result<DocumentRecord, StoreError>,
            ),
        }

        /// One transaction for the whole batch, one savepoint per job, and
        /// answers only after the commit.
        pub(crate) async fn apply_batch(
            pool: &sqlx::Pool<$db>,
            clock: &dyn Clock,
            lock_sql: Option<&'static str>,
            jobs: Vec<Job>,
        ) {
            let mut tx = match pool.begin().await {
                Ok(tx) => tx,
                Err(error) => {
                    let reason = error.to_string();
                    for job in jobs {
                        fail(job, &reason);
                    }
                    return;
                }
            };
            if let Some(sql) = lock_sql {
                if let Err(error) = sqlx::query(sql).execute(&mut *tx).await {
                    let reason = error.to_string();
                    for job in jobs {
                        fail(job, &reason);
                    }
                    return;
                }
            }
            let mut replies = Vec::with_capacity(jobs.len());
            for job in jobs {
                let now = clock.now();
                match job {
                    Job::Filing(submission, reply) => {
                        let result = in_savepoint(&mut tx, |conn| {
                            Box::pin(submit_in(conn, now, *submission))
                        })
                        .await;
                        replies.push(Reply::Filing(reply, result));
                    }
                    Job::Document(document, reply) => {
                        let result = in_savepoint(&mut tx, |conn| {
                            Box::pin(put_document_in(conn, now, document))
                        })
                        .await;
                        replies.push(Reply::Document(reply, result));
                    }
                }
            }
            let committed = tx.commit().await.map_err(|e| e.to_string());
            for reply in replies {
                match (reply, &committed) {
                    (Reply::Filing(to, result), Ok(())) => {
                        let _ = to.send(result);
                    }
                    (Reply::Document(to, result), Ok(())) => {
                        let _ = to.send(result);
                    }
                    (Reply::Filing(to, _), Err(reason)) => {
                        let _ = to.send(Err(StoreError::NotCommitted(reason.clone())));
                    }
                    (Reply::Document(to, _), Err(reason)) => {
                        let _ = to.send(Err(StoreError::NotCommitted(reason.clone())));
                    }
                }
            }
        }

        fn fail(job: Job, reason: &str) {
            match job {
                Job::Filing(_, to) => {
                    let _ = to.send(Err(StoreError::NotCommitted(reason.to_owned())));
                }
                Job::Document(_, to) => {
                    let _ = to.send(Err(StoreError::NotCommitted(reason.to_owned())));
                }
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

        fn new_id(prefix: &str) -> String {
            format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
        }

        async fn append_ledger(
            conn: &mut $conn,
            kind: &str,
            subject: &str,
            at: DateTime<Utc>,
            payload: &serde_json::Value,
        ) -> Result<(), StoreError> {
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *conn)
                    .await?;
            let (seq, prev_hash) = match head {
                Some((seq, hash)) => (seq + 1, hash),
                None => (1, ledger::GENESIS.to_owned()),
            };
            let payload = payload.to_string();
            let recorded_at = micros(at);
            let hash = ledger::compute_hash(seq, kind, subject, recorded_at, &payload, &prev_hash);
            sqlx::query(
                "INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(seq)
            .bind(kind)
            .bind(subject)
            .bind(recorded_at)
            .bind(payload)
            .bind(prev_hash)
            .bind(hash)
            .execute(&mut *conn)
            .await?;
            Ok(())
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

        async fn submit_in(
            conn: &mut $conn,
            now: DateTime<Utc>,
            submission: Submission,
        ) -> Result<SubmitOutcome, StoreError> {
            let Submission {
                caller,
                filing,
                body,
                request_sha256,
                receipt,
            } = submission;
            let key = filing.idempotency_key().as_str().to_owned();
            let earlier: Option<(String, String, Vec<u8>)> = sqlx::query_as(
                "SELECT filing_id, request_sha256, receipt FROM filings \
                 WHERE caller = $1 AND idempotency_key = $2",
            )
            .bind(&caller)
            .bind(&key)
            .fetch_optional(&mut *conn)
            .await?;
            if let Some((filing_id, digest, receipt)) = earlier {
                return Ok(if digest == request_sha256.as_str() {
                    SubmitOutcome::Replayed(receipt)
                } else {
                    SubmitOutcome::KeyReused { filing_id }
                });
            }

            let bin = filing.id().as_str().to_owned();
            let entry: Option<(String, String, Option<String>, Option<i64>, Option<i64>)> =
                sqlx::query_as(
                    "SELECT register_number, status, activity_end_date, last_year, last_quarter \
                     FROM register WHERE bin_or_iin = $1",
                )
                .bind(&bin)
                .fetch_optional(&mut *conn)
                .await?;
            let state = match &entry {
                None => None,
                Some((_, status, end, _, _)) => Some(RegisterState {
                    status: RegisterStatus::parse(status)
                        .ok_or_else(|| StoreError::Corrupt(format!("register status {status:?}")))?,
                    activity_end: end.as_deref().map(parse_date).transpose()?,
                }),
            };

            let mut conflicts = Vec::new();
            if let Some(pool) = filing.ip_pool() {
                for block in pool.blocks() {
                    let rows: Vec<(String, String)> = sqlx::query_as(
                        "SELECT bin_or_iin, cidr FROM ip_ranges \
                         WHERE bin_or_iin <> $1 AND range_start <= $2 AND range_end >= $3 \
                         ORDER BY bin_or_iin, cidr",
                    )
                    .bind(&bin)
                    .bind(block.range.end_bytes().to_vec())
                    .bind(block.range.start_bytes().to_vec())
                    .fetch_all(&mut *conn)
                    .await?;
                    conflicts.extend(rows.into_iter().map(|(other_bin, other_cidr)| IpConflict {
                        cidr: block.cidr.clone(),
                        other_cidr,
                        other_bin_or_iin: other_bin,
                    }));
                }
            }

            let received = deadlines::local_date(now);
            let assessment = register::assess(&filing, received, state.as_ref(), &conflicts);
            let filing_id = new_id("fil");
            let at = micros(now);

            let mut revision = 0u32;
            if let Filing::Quarterly(report) = &filing {
                let previous: Option<(String, i64)> = sqlx::query_as(
                    "SELECT filing_id, revision FROM filings \
                     WHERE bin_or_iin = $1 AND kind = $2 AND year = $3 AND quarter = $4 \
                     AND superseded_by IS NULL",
                )
                .bind(&bin)
                .bind(FilingKind::QuarterlyReport.as_str())
                .bind(i64::from(report.quarter.year()))
                .bind(i64::from(report.quarter.quarter()))
                .fetch_optional(&mut *conn)
                .await?;
                revision = previous.as_ref().map_or(1, |(_, r)| *r as u32 + 1);
                if let Some((previous_id, _)) = previous {
                    sqlx::query("UPDATE filings SET superseded_by = $1 WHERE filing_id = $2")
                        .bind(&filing_id)
                        .bind(previous_id)
                        .execute(&mut *conn)
                        .await?;
                }
            }

            let mut register_number = entry.as_ref().map(|(number, ..)| number.clone());
            match (&filing, assessment.register) {
                (Filing::Start(start), RegisterChange::Create) => {
                    let seq: i64 =
                        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM register")
                            .fetch_one(&mut *conn)
                            .await?;
                    let number = format!("KZ-DM-{seq:06}");
                    sqlx::query(
                        "INSERT INTO register (seq, register_number, bin_or_iin, name, legal_address, \
                         activity_kind, status, registered_at, start_filing_id, planned_start_date, \
                         required_power_kw, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                    )
                    .bind(seq)
                    .bind(&number)
                    .bind(&bin)
                    .bind(&start.person.name)
                    .bind(&start.person.legal_address)
                    .bind(start.person.activity.as_str())
                    .bind(RegisterStatus::Planned.as_str())
                    .bind(at)
                    .bind(&filing_id)
                    .bind(start.planned_start.to_string())
                    .bind(start.required_power.value() as i64)
                    .bind(at)
                    .execute(&mut *conn)
                    .await?;
                    register_number = Some(number);
                }
                (Filing::Start(start), RegisterChange::SetStatus(status)) => {
                    // A terminated person notifies a new start.
                    sqlx::query(
                        "UPDATE register SET status = $1, activity_end_date = NULL, start_filing_id = $2, \
                         planned_start_date = $3, required_power_kw = $4, name = $5, legal_address = $6, \
                         activity_kind = $7, updated_at = $8 WHERE bin_or_iin = $9",
                    )
                    .bind(status.as_str())
                    .bind(&filing_id)
                    .bind(start.planned_start.to_string())
                    .bind(start.required_power.value() as i64)
                    .bind(&start.person.name)
                    .bind(&start.person.legal_address)
                    .bind(start.person.activity.as_str())
                    .bind(at)
                    .bind(&bin)
                    .execute(&mut *conn)
                    .await?;
                }
                (Filing::Quarterly(report), change) => {
                    if let (Some((_, _, _, last_year, last_quarter)), Some(state)) = (&entry, &state) {
                        let status = match change {
                            RegisterChange::SetStatus(status) => status,
                            _ => state.status,
                        };
                        let this = (i64::from(report.quarter.year()), i64::from(report.quarter.quarter()));
                        let last = match (last_year, last_quarter) {
                            (Some(y), Some(q)) if (*y, *q) > this => (*y, *q),
                            _ => this,
                        };
                        sqlx::query(
                            "UPDATE register SET status = $1, name = $2, legal_address = $3, \
                             last_year = $4, last_quarter = $5, updated_at = $6 WHERE bin_or_iin = $7",
                        )
                        .bind(status.as_str())
                        .bind(&report.person.name)
                        .bind(&report.person.legal_address)
                        .bind(last.0)
                        .bind(last.1)
                        .bind(at)
                        .bind(&bin)
                        .execute(&mut *conn)
                        .await?;
                    }
                }
                (Filing::Termination(notice), RegisterChange::SetStatus(status)) => {
                    sqlx::query(
                        "UPDATE register SET status = $1, activity_end_date = $2, updated_at = $3 \
                         WHERE bin_or_iin = $4",
                    )
                    .bind(status.as_str())
                    .bind(notice.activity_end.to_string())
                    .bind(at)
                    .bind(&bin)
                    .execute(&mut *conn)
                    .await?;
                }
                _ => {}
            }

            if let Some(pool) = filing.ip_pool() {
                sqlx::query("DELETE FROM ip_ranges WHERE bin_or_iin = $1")
                    .bind(&bin)
                    .execute(&mut *conn)
                    .await?;
                for block in pool.blocks() {
                    sqlx::query(
                        "INSERT INTO ip_ranges (bin_or_iin, cidr, range_start, range_end, filing_id) \
                         VALUES ($1, $2, $3, $4, $5)",
                    )
                    .bind(&bin)
                    .bind(&block.cidr)
                    .bind(block.range.start_bytes().to_vec())
                    .bind(block.range.end_bytes().to_vec())
                    .bind(&filing_id)
                    .execute(&mut *conn)
                    .await?;
                }
            }

            let findings: Vec<(String, FindingDraft)> = assessment
                .findings
                .iter()
                .map(|finding| (new_id("fnd"), finding.clone()))
                .collect();
            for (finding_id, finding) in &findings {
                sqlx::query(
                    "INSERT INTO findings (finding_id, kind, bin_or_iin, filing_id, days, year, quarter, \
                     detail, detected_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(finding_id)
                .bind(finding.kind.as_str())
                .bind(&bin)
                .bind(&filing_id)
                .bind(i64::from(finding.days))
                .bind(finding.quarter.map(|q| i64::from(q.year())))
                .bind(finding.quarter.map(|q| i64::from(q.quarter())))
                .bind(&finding.detail)
                .bind(at)
                .execute(&mut *conn)
                .await?;
            }

            let accepted = Accepted {
                filing_id: filing_id.clone(),
                received_at: now,
                register_number: register_number.clone(),
                assessment,
                findings,
                revision,
            };
            let receipt_bytes = receipt(&accepted);
            let quarter = filing.quarter();
            sqlx::query(
                "INSERT INTO filings (filing_id, kind, bin_or_iin, caller, idempotency_key, request_sha256, \
                 year, quarter, revision, received_at, body, receipt) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(&filing_id)
            .bind(filing.kind().as_str())
            .bind(&bin)
            .bind(&caller)
            .bind(&key)
            .bind(request_sha256.as_str())
            .bind(quarter.map(|q| i64::from(q.year())))
            .bind(quarter.map(|q| i64::from(q.quarter())))
            .bind(i64::from(revision))
            .bind(at)
            .bind(&body)
            .bind(&receipt_bytes)
            .execute(&mut *conn)
            .await?;

            append_ledger(
                conn,
                "FILING_ACCEPTED",
                &filing_id,
                now,
                &serde_json::json!({
                    "filing_id": filing_id,
                    "kind": filing.kind().as_str(),
                    "bin_or_iin": bin,
                    "caller": caller,
                    "request_sha256": request_sha256.as_str(),
                    "receipt_sha256": Sha256Hex::of(&receipt_bytes).as_str(),
                    "register_number": register_number,
                    "revision": revision,
                    "findings": accepted.findings.iter().map(|(_, f)| f.kind.as_str()).collect::<Vec<_>>(),
                }),
            )
            .await?;
            Ok(SubmitOutcome::Accepted(receipt_bytes))
        }

        pub(crate) async fn documents_in(
            pool: &sqlx::Pool<$db>,
            digests: &[Sha256Hex],
        ) -> Result<Vec<DocumentRecord>, StoreError> {
            let mut found = Vec::new();
            for digest in digests {
                let row: Option<(String, i64, i64)> = sqlx::query_as(
                    "SELECT media_type, size_bytes, stored_at FROM documents WHERE sha256 = $1",
                )
                .bind(digest.as_str())
                .fetch_optional(pool)
                .await?;
                if let Some((media_type, size, stored_at)) = row {
                    found.push(DocumentRecord {
                        sha256: digest.clone(),
                        media_type,
                        size_bytes: size as u64,
                        stored_at: from_micros(stored_at)?,
                        newly_stored: false,
                    });
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
