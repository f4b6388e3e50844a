//! The writer thread: it owns the one writing connection, takes whatever
//! jobs are waiting (up to [`MAX_BATCH`]) as one transaction, gives each job
//! its own savepoint (a job that fails is undone alone and the rest of the
//! batch commits), and answers every caller only after the commit. Each job
//! reads its facts, calls its decision in [`crate::domain::decisions`] and
//! writes what that returns, with cached prepared statements: a statement
//! here is a call into SQLite on this thread, no hand-off, so one statement
//! per row is cheap.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, watch};

use super::{facts, tree};
use crate::{
    domain::{
        decisions::{
            self, Acceptance, ExtractAckDecision, FormAckDecision, FormDecision, NewExtract,
            RegisterUpdate, Sending, SubmissionDecision,
        },
        ip::IpBlock,
        ledger::{LedgerEntry, LedgerEvent},
        obligation::{Obligation, ObligationStatus},
        register::RegisterStatus,
    },
    evidence::merkle::leaf_hash,
    signing::Signer,
    store::{
        AckBuilder, Change, Clock, DocumentRecord, Finisher, FormAck, FormAckOutcome,
        FormPublication, Incoming, Job, NewDocument, PendingExtract, Recorded, StoreError,
        SubmitOutcome, UploadsToDrop, finisher, from_micros, micros, new_id, refuse_the_rest,
        take_batch,
    },
};

/// Takes jobs until the store is closed ([`Job::Stop`]) or every sender is
/// gone.
pub fn run(
    mut conn: Connection,
    clock: Arc<dyn Clock>,
    mut signer: Option<Arc<Signer>>,
    mut jobs: mpsc::Receiver<Job>,
    changes: watch::Sender<Change>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let (batch, stop) = take_batch(first, &mut jobs);
        if !batch.is_empty() {
            commit_batch(&mut conn, &*clock, signer.as_mut(), &changes, batch);
        }
        if stop {
            return refuse_the_rest(&mut jobs);
        }
    }
}

/// One transaction for `jobs`, each in its own savepoint, ending with the
/// signed checkpoint of the ledger's tree that covers them
/// ([`tree::seal`]); then `changes` moves, carrying every extract the batch
/// made, and each caller hears.
fn commit_batch(
    conn: &mut Connection,
    clock: &dyn Clock,
    signer: Option<&mut Arc<Signer>>,
    changes: &watch::Sender<Change>,
    jobs: Vec<Job>,
) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(error) => {
            let reason = error.to_string();
            jobs.into_iter().for_each(|job| job.fail(&reason));
            return;
        }
    };
    let mut finishers = Vec::with_capacity(jobs.len());
    let mut fresh = Vec::new();
    for job in jobs {
        let now = clock.now();
        match job {
            Job::Filing(incoming, reply) => {
                let result = in_savepoint(&mut tx, |conn| submit(conn, *incoming));
                finishers.push(finisher(
                    reply,
                    result.map(|(outcome, extract)| {
                        fresh.extend(extract);
                        outcome
                    }),
                ));
            }
            Job::Stop => {}
            job => finishers.extend(one_job(&mut tx, now, job)),
        }
    }
    seal_and_commit(tx, clock, signer, changes, fresh, finishers);
}

/// A job but a submission (which may make an extract) in a savepoint of
/// its own, at `now`; its answer waits for the commit.
fn one_job(tx: &mut Transaction<'_>, now: DateTime<Utc>, job: Job) -> Option<Finisher> {
    Some(match job {
        Job::Chunk {
            upload_id,
            index,
            data,
            reply,
        } => finisher(
            reply,
            in_savepoint(tx, |conn| write_chunk(conn, now, &upload_id, index, &data)),
        ),
        Job::Document(document, reply) => finisher(
            reply,
            in_savepoint(tx, |conn| complete_upload(conn, now, document)),
        ),
        Job::DropUploads(which, reply) => {
            finisher(reply, in_savepoint(tx, |conn| drop_uploads(conn, &which)))
        }
        Job::Attempts {
            extract_ids,
            failed,
            subscriber,
            sent_at,
            reply,
        } => finisher(
            reply,
            in_savepoint(tx, |conn| {
                record_sendings(conn, sent_at, &extract_ids, &failed, &subscriber)
            }),
        ),
        Job::AckExtract {
            extract_id,
            subscriber,
            build,
            reply,
        } => finisher(
            reply,
            in_savepoint(tx, |conn| {
                acknowledge_extract(conn, now, &extract_id, &subscriber, &build)
            }),
        ),
        Job::PublishForm(publication, reply) => finisher(
            reply,
            in_savepoint(tx, |conn| publish_form(conn, now, *publication)),
        ),
        Job::AckForm(ack, reply) => finisher(
            reply,
            in_savepoint(tx, |conn| acknowledge_form(conn, now, *ack)),
        ),
        Job::MarkOverdue(today, reply) => finisher(
            reply,
            in_savepoint(tx, |conn| mark_overdue(conn, now, today)),
        ),
        Job::AddKey { key, retire, reply } => finisher(
            reply,
            in_savepoint(tx, |conn| {
                tree::add_signing_key(conn, &key, retire.then_some(now))
            }),
        ),
        // Done in the caller (a submission may make an extract; Stop is no
        // job): never here.
        job @ (Job::Filing(..) | Job::Stop) => {
            job.fail("not a job done alone");
            return None;
        }
    })
}

/// Seals the checkpoint that covers the batch (signed once, with the key
/// the history has valid now), commits, hands the fresh extracts on, and
/// answers each caller.
fn seal_and_commit(
    tx: Transaction<'_>,
    clock: &dyn Clock,
    signer: Option<&mut Arc<Signer>>,
    changes: &watch::Sender<Change>,
    mut fresh: Vec<PendingExtract>,
    finishers: Vec<Finisher>,
) {
    let sealed = match signer {
        Some(signer) => tree::seal(&tx, signer, clock.now()),
        None => Ok(None),
    };
    let (committed, sealed) = match sealed {
        Ok(sealed) => (tx.commit().map_err(|error| error.to_string()), sealed),
        Err(error) => (Err(format!("sealing the ledger: {error}")), None),
    };
    if let Some(sealed) = &sealed {
        sealed.prove_extracts(&mut fresh);
    }
    if committed.is_ok() {
        changes.send_modify(|change| change.committed(fresh));
    }
    for finish in finishers {
        finish(&committed, sealed.as_ref());
    }
}

/// Runs `work` in a savepoint: kept if it succeeds, undone if it fails, so
/// one job that fails never takes the rest of its batch down.
fn in_savepoint<T>(
    tx: &mut Transaction<'_>,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let savepoint = tx.savepoint()?;
    let result = work(&savepoint)?;
    savepoint.commit()?;
    Ok(result)
}

/// Appends `events`, recorded at `at`, after the ledger's head; the
/// entries.
fn append_ledger(
    conn: &Connection,
    events: &[LedgerEvent],
    at: DateTime<Utc>,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let mut head = facts::ledger_head(conn)?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash, leaf) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut entries = Vec::with_capacity(events.len());
    for event in events {
        let entry = head.append(event, at);
        insert.execute(params![
            entry.seq,
            entry.kind,
            entry.subject,
            entry.recorded_at,
            entry.payload,
            entry.prev_hash,
            entry.hash,
            &leaf_hash(entry.leaf().1.as_bytes())[..]
        ])?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Reads, decides and writes a submission; the extract it made, to hand on
/// to the streams once committed.
fn submit(
    conn: &Connection,
    incoming: Incoming,
) -> Result<(SubmitOutcome, Option<PendingExtract>), StoreError> {
    let Incoming {
        submission,
        received,
    } = incoming;
    let facts = facts::submission(conn, &submission)?;
    match decisions::decide_submission(&submission.filing, &received, facts, &mut new_id) {
        SubmissionDecision::Replay(receipt) => Ok((SubmitOutcome::Replayed(receipt), None)),
        SubmissionDecision::KeyReused { filing_id } => {
            Ok((SubmitOutcome::KeyReused { filing_id }, None))
        }
        SubmissionDecision::Accept(acceptance) => {
            let receipt = (submission.receipt)(&acceptance.accepted);
            let mut extract = write_acceptance(conn, &acceptance, &submission.body, &receipt)?;
            let entries = append_ledger(
                conn,
                &acceptance.ledger_events(&receipt),
                received.received_at,
            )?;
            if let Some(extract) = &mut extract {
                extract.entry = entries
                    .iter()
                    .find(|e| e.kind == LedgerEvent::EXTRACT_CREATED)
                    .cloned()
                    .map(Box::new);
            }
            let outcome = SubmitOutcome::Accepted(Recorded::made(
                receipt,
                &entries,
                LedgerEvent::FILING_ACCEPTED,
            ));
            Ok((outcome, extract))
        }
    }
}

/// Writes everything an accepted filing changes but its ledger entries: its
/// row with the receipt, the revision it supersedes, the register, the IP
/// ranges, findings, extract and obligations.
fn write_acceptance(
    conn: &Connection,
    acceptance: &Acceptance,
    body: &[u8],
    receipt: &[u8],
) -> Result<Option<PendingExtract>, StoreError> {
    let accepted = &acceptance.accepted;
    let (filing_id, bin, at) = (
        &accepted.filing_id,
        &acceptance.bin_or_iin,
        micros(accepted.received_at),
    );
    conn.prepare_cached(
        "INSERT INTO filings (filing_id, kind, bin_or_iin, caller, idempotency_key, \
         request_sha256, year, quarter, revision, received_at, body, receipt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        filing_id,
        acceptance.kind.as_str(),
        bin,
        acceptance.caller,
        acceptance.idempotency_key,
        acceptance.request_sha256.as_str(),
        acceptance.quarter.map(|q| q.year()),
        acceptance.quarter.map(|q| q.quarter()),
        accepted.revision,
        at,
        body,
        receipt
    ])?;
    if let Some(previous) = &acceptance.supersedes {
        conn.prepare_cached("UPDATE filings SET superseded_by = ?1 WHERE filing_id = ?2")?
            .execute([filing_id, previous])?;
    }
    write_register(conn, acceptance)?;
    if let Some(blocks) = &acceptance.ip_ranges {
        replace_ip_ranges(conn, bin, filing_id, blocks)?;
    }
    insert_findings(conn, acceptance)?;
    let extract = match &acceptance.extract {
        Some(extract) => Some(insert_extract(conn, extract, filing_id, bin)?),
        None => None,
    };
    for obligation in &accepted.obligations {
        insert_obligation(conn, obligation)?;
    }
    Ok(extract)
}

/// 3.9 / 4.11 a person's IP ranges are replaced by the pool of their latest
/// filing; the prefix lengths are listed for the look-ups ([`super::facts`]).
fn replace_ip_ranges(
    conn: &Connection,
    bin: &str,
    filing_id: &str,
    blocks: &[IpBlock],
) -> Result<(), StoreError> {
    conn.prepare_cached("DELETE FROM ip_ranges WHERE bin_or_iin = ?1")?
        .execute([bin])?;
    let mut insert = conn.prepare_cached(
        "INSERT INTO ip_ranges (bin_or_iin, cidr, range_start, range_end, filing_id) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut prefix =
        conn.prepare_cached("INSERT OR IGNORE INTO ip_prefix_lengths (prefix) VALUES (?1)")?;
    for block in blocks {
        insert.execute(params![
            bin,
            block.cidr,
            block.range.start_bytes(),
            block.range.end_bytes(),
            filing_id
        ])?;
        prefix.execute([block.range.prefix()])?;
    }
    Ok(())
}

fn insert_findings(conn: &Connection, acceptance: &Acceptance) -> Result<(), StoreError> {
    let accepted = &acceptance.accepted;
    let mut finding = conn.prepare_cached(
        "INSERT INTO findings (finding_id, kind, bin_or_iin, filing_id, days, year, quarter, \
         detail, detected_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for (finding_id, draft) in &accepted.findings {
        finding.execute(params![
            finding_id,
            draft.kind.as_str(),
            acceptance.bin_or_iin,
            accepted.filing_id,
            draft.days,
            draft.quarter.map(|q| q.year()),
            draft.quarter.map(|q| q.quarter()),
            draft.detail,
            micros(accepted.received_at)
        ])?;
    }
    Ok(())
}

/// §6 the extract and the documents it references; as it will be handed on
/// to the streams once committed.
fn insert_extract(
    conn: &Connection,
    extract: &NewExtract,
    filing_id: &str,
    bin: &str,
) -> Result<PendingExtract, StoreError> {
    conn.prepare_cached(
        "INSERT INTO extracts (extract_id, filing_id, bin_or_iin, created_at, due_date, body) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        extract.extract_id,
        filing_id,
        bin,
        micros(extract.created_at),
        extract.due_date.to_string(),
        extract.body
    ])?;
    // The one writer: the row's sequence number is its rowid.
    let seq = conn.last_insert_rowid();
    let mut document = conn.prepare_cached(
        "INSERT INTO extract_documents (extract_id, sha256, kind) VALUES (?1, ?2, ?3)",
    )?;
    for (sha256, kind) in &extract.documents {
        document.execute([&extract.extract_id, sha256.as_str(), kind.as_str()])?;
    }
    Ok(PendingExtract {
        seq,
        extract_id: extract.extract_id.clone(),
        body: extract.body.clone(),
        attempts: 0,
        entry: None,
        evidence: None,
    })
}

/// The register statement of each kind of change (one arm each, so longer
/// than a screen).
fn write_register(conn: &Connection, acceptance: &Acceptance) -> Result<(), StoreError> {
    let bin = &acceptance.bin_or_iin;
    let at = micros(acceptance.accepted.received_at);
    match &acceptance.register {
        RegisterUpdate::Unchanged => 0,
        RegisterUpdate::Create(entry) => conn
            .prepare_cached(
                "INSERT INTO register (seq, register_number, bin_or_iin, name, legal_address, \
                 activity_kind, status, registered_at, start_filing_id, planned_start_date, \
                 required_power_kw, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?8)",
            )?
            .execute(params![
                entry.seq,
                entry.register_number,
                bin,
                entry.name,
                entry.legal_address,
                entry.activity.as_str(),
                RegisterStatus::Planned.as_str(),
                at,
                acceptance.accepted.filing_id,
                entry.planned_start.to_string(),
                entry.required_power_kw
            ])?,
        RegisterUpdate::Restart {
            start_filing_id,
            name,
            legal_address,
            activity,
            planned_start,
            required_power_kw,
        } => conn
            .prepare_cached(
                "UPDATE register SET status = ?1, activity_end_date = NULL, \
                 start_filing_id = ?2, planned_start_date = ?3, required_power_kw = ?4, \
                 name = ?5, legal_address = ?6, activity_kind = ?7, updated_at = ?8 \
                 WHERE bin_or_iin = ?9",
            )?
            .execute(params![
                RegisterStatus::Planned.as_str(),
                start_filing_id,
                planned_start.to_string(),
                required_power_kw,
                name,
                legal_address,
                activity.as_str(),
                at,
                bin
            ])?,
        RegisterUpdate::Report {
            status,
            name,
            legal_address,
            last_quarter,
        } => conn
            .prepare_cached(
                "UPDATE register SET status = ?1, name = ?2, legal_address = ?3, \
                 last_year = ?4, last_quarter = ?5, updated_at = ?6 WHERE bin_or_iin = ?7",
            )?
            .execute(params![
                status.as_str(),
                name,
                legal_address,
                last_quarter.year(),
                last_quarter.quarter(),
                at,
                bin
            ])?,
        RegisterUpdate::Terminate { activity_end } => conn
            .prepare_cached(
                "UPDATE register SET status = ?1, activity_end_date = ?2, updated_at = ?3 \
                 WHERE bin_or_iin = ?4",
            )?
            .execute(params![
                RegisterStatus::Terminated.as_str(),
                activity_end.to_string(),
                at,
                bin
            ])?,
    };
    Ok(())
}

fn insert_obligation(conn: &Connection, obligation: &Obligation) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO obligations (obligation_id, kind, due_date, status, filing_id, extract_id, \
         year, quarter, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        obligation.obligation_id,
        obligation.kind.as_str(),
        obligation.due_date.to_string(),
        obligation.status.as_str(),
        obligation.filing_id,
        obligation.extract_id,
        obligation.quarter.map(|q| q.year()),
        obligation.quarter.map(|q| q.quarter()),
        micros(obligation.created_at)
    ])?;
    Ok(())
}

fn fulfil(conn: &Connection, fulfilment: &decisions::Fulfilment) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE obligations SET status = ?1, fulfilled_at = ?2 WHERE obligation_id = ?3",
    )?
    .execute(params![
        fulfilment.status.as_str(),
        micros(fulfilment.fulfilled_at),
        fulfilment.obligation_id
    ])?;
    Ok(())
}

fn write_chunk(
    conn: &Connection,
    now: DateTime<Utc>,
    upload_id: &str,
    index: u64,
    data: &[u8],
) -> Result<(), StoreError> {
    if index == 0 {
        conn.prepare_cached("INSERT INTO uploads (upload_id, started_at) VALUES (?1, ?2)")?
            .execute(params![upload_id, micros(now)])?;
    }
    conn.prepare_cached("INSERT INTO document_chunks (upload_id, idx, data) VALUES (?1, ?2, ?3)")?
        .execute(params![upload_id, index, data])?;
    Ok(())
}

/// Removes uploads still in progress, with their chunks. Only the ids the
/// statement itself took out of `uploads` lose their chunks: an upload that
/// completed meanwhile (its call dropped while the writer made it a
/// document) is no longer there, and its chunks are the document's.
fn drop_uploads(conn: &Connection, which: &UploadsToDrop) -> Result<u64, StoreError> {
    let ids: Vec<String> = match which {
        UploadsToDrop::One(id) => conn
            .prepare_cached("DELETE FROM uploads WHERE upload_id = ?1 RETURNING upload_id")?
            .query_map([id], |row| row.get(0))?
            .collect::<Result<_, _>>()?,
        UploadsToDrop::StartedBefore(at) => conn
            .prepare_cached("DELETE FROM uploads WHERE started_at < ?1 RETURNING upload_id")?
            .query_map([micros(*at)], |row| row.get(0))?
            .collect::<Result<_, _>>()?,
    };
    for id in &ids {
        conn.prepare_cached("DELETE FROM document_chunks WHERE upload_id = ?1")?
            .execute([id])?;
    }
    Ok(ids.len() as u64)
}

/// Makes a document of a finished upload, unless the same bytes are stored
/// already: then the upload's chunks go, and the stored document answers.
fn complete_upload(
    conn: &Connection,
    now: DateTime<Utc>,
    document: NewDocument,
) -> Result<DocumentRecord, StoreError> {
    let finished = conn
        .prepare_cached("DELETE FROM uploads WHERE upload_id = ?1")?
        .execute([&document.upload_id])?;
    if finished != 1 {
        return Err(StoreError::Database(format!(
            "upload {} is not in progress (abandoned or swept?)",
            document.upload_id
        )));
    }
    let existing: Option<(String, i64, i64)> = rusqlite::OptionalExtension::optional(
        conn.prepare_cached(
            "SELECT media_type, size_bytes, stored_at FROM documents WHERE sha256 = ?1",
        )?
        .query_row([document.sha256.as_str()], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        }),
    )?;
    if let Some((media_type, size, stored_at)) = existing {
        conn.prepare_cached("DELETE FROM document_chunks WHERE upload_id = ?1")?
            .execute([&document.upload_id])?;
        return Ok(DocumentRecord {
            sha256: document.sha256,
            media_type,
            size_bytes: size as u64,
            stored_at: from_micros(stored_at)?,
            newly_stored: false,
        });
    }
    conn.prepare_cached(
        "INSERT INTO documents (sha256, media_type, size_bytes, content, stored_at, upload_id) \
         VALUES (?1, ?2, ?3, X'', ?4, ?5)",
    )?
    .execute(params![
        document.sha256.as_str(),
        document.media_type,
        document.size_bytes,
        micros(now),
        document.upload_id
    ])?;
    append_ledger(
        conn,
        &[LedgerEvent::DocumentStored {
            sha256: document.sha256.clone(),
            media_type: document.media_type.clone(),
            size_bytes: document.size_bytes,
        }],
        now,
    )?;
    Ok(DocumentRecord {
        sha256: document.sha256,
        media_type: document.media_type,
        size_bytes: document.size_bytes,
        stored_at: now,
        newly_stored: true,
    })
}

fn record_sendings(
    conn: &Connection,
    sent_at: DateTime<Utc>,
    extract_ids: &[String],
    failed: &[(String, String)],
    subscriber: &str,
) -> Result<Vec<u32>, StoreError> {
    let earlier = facts::sendings(conn, extract_ids, subscriber)?;
    let sendings: Vec<Sending> = extract_ids
        .iter()
        .zip(earlier)
        .map(|(id, earlier)| Sending::after(id, subscriber, earlier))
        .collect();
    let mut insert = conn.prepare_cached(
        "INSERT INTO extract_attempts (extract_id, subscriber, attempt, sent_at) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for sending in &sendings {
        insert.execute(params![
            sending.extract_id,
            sending.subscriber,
            sending.attempt,
            micros(sent_at)
        ])?;
    }
    let mut events: Vec<LedgerEvent> = sendings.iter().map(Sending::event).collect();
    events.extend(
        failed
            .iter()
            .map(|(id, reason)| Sending::failure(id, subscriber, reason)),
    );
    append_ledger(conn, &events, sent_at)?;
    Ok(sendings.iter().map(|s| s.attempt).collect())
}

fn acknowledge_extract(
    conn: &Connection,
    now: DateTime<Utc>,
    extract_id: &str,
    subscriber: &str,
    build: &AckBuilder,
) -> Result<Option<Recorded>, StoreError> {
    let facts = facts::extract_ack(conn, extract_id, subscriber)?;
    match decisions::decide_extract_ack(extract_id, subscriber, facts, now) {
        ExtractAckDecision::Repeat(receipt) => Ok(Some(Recorded::found(receipt))),
        ExtractAckDecision::NotSent => Ok(None),
        ExtractAckDecision::Acknowledge(ack) => {
            let receipt = build(&ack.facts);
            conn.prepare_cached(
                "INSERT INTO extract_acks (extract_id, subscriber, acknowledged_at, receipt) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![extract_id, subscriber, micros(now), receipt])?;
            if let Some(fulfilment) = &ack.fulfils {
                fulfil(conn, fulfilment)?;
            }
            let entries = append_ledger(conn, &ack.ledger_events(&receipt), now)?;
            Ok(Some(Recorded::made(
                receipt,
                &entries,
                LedgerEvent::EXTRACT_ACKNOWLEDGED,
            )))
        }
    }
}

fn publish_form(
    conn: &Connection,
    now: DateTime<Utc>,
    publication: FormPublication,
) -> Result<Vec<u8>, StoreError> {
    let FormPublication {
        quarter,
        content_sha256,
        filing_ids,
        build,
    } = publication;
    let latest = facts::latest_revision(conn, quarter)?;
    // A pull is a read: only new content writes (the revision and its entry).
    let facts = match decisions::decide_form(quarter, &content_sha256, latest, now) {
        FormDecision::Unchanged { form, .. } => return Ok(form),
        FormDecision::Publish(facts) => facts,
    };
    let revision = facts.revision;
    let (body_sha256, form) = build(&facts);
    conn.prepare_cached(
        "INSERT INTO form_revisions (year, quarter, revision, content_sha256, \
         body_sha256, compiled_at, form) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        quarter.year(),
        quarter.quarter(),
        revision,
        content_sha256,
        body_sha256,
        micros(now),
        form
    ])?;
    let mut report = conn.prepare_cached(
        "INSERT INTO form_revision_reports (year, quarter, revision, filing_id) \
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for filing_id in &filing_ids {
        report.execute(params![
            quarter.year(),
            quarter.quarter(),
            revision,
            filing_id
        ])?;
    }
    let published = LedgerEvent::FormRevisionPublished {
        quarter,
        revision,
        body_sha256,
        reports: filing_ids.len(),
    };
    append_ledger(conn, &[published], now)?;
    Ok(form)
}

fn acknowledge_form(
    conn: &Connection,
    now: DateTime<Utc>,
    ack: FormAck,
) -> Result<FormAckOutcome, StoreError> {
    let FormAck {
        quarter,
        revision,
        body_sha256,
        build,
    } = ack;
    let facts = facts::form_ack(conn, quarter, revision)?;
    match decisions::decide_form_ack(quarter, revision, &body_sha256, facts, now) {
        FormAckDecision::UnknownRevision => Ok(FormAckOutcome::UnknownRevision),
        FormAckDecision::DigestMismatch { expected } => {
            Ok(FormAckOutcome::DigestMismatch { expected })
        }
        FormAckDecision::Repeat(receipt) => Ok(FormAckOutcome::Acknowledged(receipt)),
        FormAckDecision::Acknowledge(ack) => {
            let receipt = build(&ack.facts);
            conn.prepare_cached(
                "INSERT INTO form_acks (year, quarter, revision, acknowledged_at, receipt) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                quarter.year(),
                quarter.quarter(),
                revision,
                micros(now),
                receipt
            ])?;
            for fulfilment in &ack.fulfils {
                fulfil(conn, fulfilment)?;
            }
            append_ledger(conn, &ack.ledger_events(&receipt), now)?;
            Ok(FormAckOutcome::Acknowledged(receipt))
        }
    }
}

fn mark_overdue(
    conn: &Connection,
    now: DateTime<Utc>,
    today: chrono::NaiveDate,
) -> Result<Vec<Obligation>, StoreError> {
    let pending = facts::pending_due_before(conn, today)?;
    let overdue = decisions::overdue(today, pending);
    let mut update =
        conn.prepare_cached("UPDATE obligations SET status = ?1 WHERE obligation_id = ?2")?;
    for (obligation, _) in &overdue {
        update.execute([
            ObligationStatus::Overdue.as_str(),
            &obligation.obligation_id,
        ])?;
    }
    let events: Vec<LedgerEvent> = overdue.iter().map(|(_, event)| event.clone()).collect();
    append_ledger(conn, &events, now)?;
    Ok(overdue
        .into_iter()
        .map(|(obligation, _)| obligation)
        .collect())
}
