//! What the gateway reads outside the writer: each function runs on a read
//! connection ([`super::Readers`]) and turns rows into the store's types.

use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{
    domain::{
        Sha256Hex,
        filing::{ActivityKind, DocumentKind, FilingKind},
        ledger::LedgerEntry,
        obligation::{Obligation, ObligationKind, ObligationStatus},
        quantities::Quarter,
        register::{FindingKind, RegisterStatus},
    },
    store::{
        DeliveryRecord, DocumentRecord, FetchedDocument, FindingQuery, FindingRow,
        FormRevisionIncluding, Gauges, ObligationQuery, PendingExtract, RegisterQuery, RegisterRow,
        ReportForForm, StoreError, StoredFiling, from_micros, obligation_from_row, parse_date,
        parse_name,
    },
};

pub const OBLIGATION_COLUMNS: &str = "SELECT seq, obligation_id, kind, due_date, status, \
    filing_id, extract_id, year, quarter, fulfilled_at, created_at FROM obligations";

/// An obligation from a row of [`OBLIGATION_COLUMNS`].
pub fn obligation(row: &Row<'_>) -> rusqlite::Result<Result<Obligation, StoreError>> {
    Ok(obligation_from_row(
        row.get(0)?,
        row.get(1)?,
        &row.get::<_, String>(2)?,
        &row.get::<_, String>(3)?,
        &row.get::<_, String>(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
    ))
}

pub fn gauges(conn: &Connection, subscribers: &[String]) -> Result<Gauges, StoreError> {
    let obligations = conn
        .prepare_cached("SELECT status, COUNT(*) FROM obligations GROUP BY status ORDER BY status")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let oldest_pending = conn
        .prepare_cached(
            "SELECT kind, MIN(created_at) FROM obligations WHERE status = 'PENDING' \
             GROUP BY kind ORDER BY kind",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let count = |sql: &str| -> Result<i64, StoreError> {
        Ok(conn.prepare_cached(sql)?.query_row([], |row| row.get(0))?)
    };
    let ledger_entries = count("SELECT COUNT(*) FROM ledger")?;
    let extracts = count("SELECT COUNT(*) FROM extracts")?;
    let mut acknowledged =
        conn.prepare_cached("SELECT COUNT(*) FROM extract_acks WHERE subscriber = ?1")?;
    let pending_extracts = subscribers
        .iter()
        .map(|subscriber| {
            let done: i64 = acknowledged.query_row([subscriber], |row| row.get(0))?;
            Ok((subscriber.clone(), extracts - done))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Gauges {
        obligations,
        oldest_pending,
        ledger_entries,
        pending_extracts,
        runs_taken_apart: 0,
        listener_losses: 0,
    })
}

pub fn documents(
    conn: &Connection,
    digests: &[Sha256Hex],
) -> Result<Vec<DocumentRecord>, StoreError> {
    let mut select = conn.prepare_cached(
        "SELECT media_type, size_bytes, stored_at FROM documents WHERE sha256 = ?1",
    )?;
    let mut found: Vec<DocumentRecord> = Vec::new();
    for digest in digests {
        if found.iter().any(|d| d.sha256 == *digest) {
            continue;
        }
        let row: Option<(String, i64, i64)> = select
            .query_row([digest.as_str()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })
            .optional()?;
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

pub fn filing(conn: &Connection, filing_id: &str) -> Result<Option<StoredFiling>, StoreError> {
    type Row = (String, Vec<u8>, Vec<u8>, Option<String>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT kind, body, receipt, superseded_by FROM filings WHERE filing_id = ?1",
        )?
        .query_row([filing_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .optional()?;
    row.map(|(kind, body, receipt, superseded_by)| {
        Ok(StoredFiling {
            filing_id: filing_id.to_owned(),
            kind: parse_name("filing kind", &kind, FilingKind::parse)?,
            body,
            receipt,
            superseded_by,
        })
    })
    .transpose()
}

pub fn register(conn: &Connection, query: &RegisterQuery) -> Result<Vec<RegisterRow>, StoreError> {
    conn.prepare_cached(
        "SELECT seq, register_number, bin_or_iin, name, legal_address, activity_kind, status, \
         registered_at, start_filing_id, planned_start_date, required_power_kw, last_year, \
         last_quarter, activity_end_date FROM register \
         WHERE seq > ?1 AND (?2 = '' OR status = ?2) AND (?3 = '' OR activity_kind = ?3) \
         AND (?5 = '' OR bin_or_iin = ?5) ORDER BY seq LIMIT ?4",
    )?
    .query_map(
        params![
            query.after_seq,
            query.status.map_or("", RegisterStatus::as_str),
            query.activity.map_or("", ActivityKind::as_str),
            query.limit,
            query.bin_or_iin.as_deref().unwrap_or("")
        ],
        |row| Ok(register_row(row)),
    )?
    .map(|row| row?)
    .collect()
}

fn register_row(row: &Row<'_>) -> Result<RegisterRow, StoreError> {
    let (last_year, last_quarter): (Option<i64>, Option<i64>) = (row.get(11)?, row.get(12)?);
    let end: Option<String> = row.get(13)?;
    Ok(RegisterRow {
        seq: row.get(0)?,
        register_number: row.get(1)?,
        bin_or_iin: row.get(2)?,
        name: row.get(3)?,
        legal_address: row.get(4)?,
        activity: parse_name(
            "activity kind",
            &row.get::<_, String>(5)?,
            ActivityKind::parse,
        )?,
        status: parse_name(
            "register status",
            &row.get::<_, String>(6)?,
            RegisterStatus::parse,
        )?,
        registered_at: from_micros(row.get(7)?)?,
        start_filing_id: row.get(8)?,
        planned_start_date: parse_date(&row.get::<_, String>(9)?)?,
        required_power_kw: row.get::<_, i64>(10)? as u64,
        last_quarter: last_year
            .zip(last_quarter)
            .map(|(y, q)| (y as i32, q as u32)),
        activity_end_date: end.as_deref().map(parse_date).transpose()?,
    })
}

pub fn ledger_page(
    conn: &Connection,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerEntry>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT seq, kind, subject, recorded_at, payload, prev_hash, hash FROM ledger \
             WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?
        .query_map(params![after_seq, limit], ledger_row)?
        .collect::<Result<_, _>>()?)
}

/// A ledger row, its columns selected in table order (seq … hash).
pub fn ledger_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LedgerEntry> {
    Ok(LedgerEntry {
        seq: row.get(0)?,
        kind: row.get(1)?,
        subject: row.get(2)?,
        recorded_at: row.get(3)?,
        payload: row.get(4)?,
        prev_hash: row.get(5)?,
        hash: row.get(6)?,
    })
}

pub fn pending_extracts(
    conn: &Connection,
    subscriber: &str,
    from_seq: i64,
    limit: u32,
    skip: &std::collections::HashSet<i64>,
) -> Result<Vec<PendingExtract>, StoreError> {
    let mut select = conn.prepare_cached(
        "SELECT e.seq, e.extract_id, e.body, \
         (SELECT COUNT(*) FROM extract_attempts t WHERE t.extract_id = e.extract_id \
          AND t.subscriber = ?2) \
         FROM extracts e WHERE e.seq >= ?1 AND NOT EXISTS \
         (SELECT 1 FROM extract_acks a WHERE a.extract_id = e.extract_id AND a.subscriber = ?2) \
         ORDER BY e.seq",
    )?;
    let mut rows = select.query(params![from_seq, subscriber])?;
    let mut pending = Vec::new();
    // Stepped one row at a time: a skipped row's body is never read.
    while pending.len() < limit as usize
        && let Some(row) = rows.next()?
    {
        let seq: i64 = row.get(0)?;
        if skip.contains(&seq) {
            continue;
        }
        pending.push(PendingExtract {
            seq,
            extract_id: row.get(1)?,
            body: row.get(2)?,
            attempts: row.get(3)?,
            entry: None,
            evidence: None,
        });
    }
    Ok(pending)
}

pub fn acknowledged(
    conn: &Connection,
    subscriber: &str,
    extract_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    let mut select = conn
        .prepare_cached("SELECT 1 FROM extract_acks WHERE extract_id = ?1 AND subscriber = ?2")?;
    let mut acknowledged = Vec::new();
    for id in extract_ids {
        if select.exists([id.as_str(), subscriber])? {
            acknowledged.push(id.clone());
        }
    }
    Ok(acknowledged)
}

pub fn extract_sent_to(
    conn: &Connection,
    extract_id: &str,
    subscriber: &str,
) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM extract_attempts WHERE extract_id = ?1 AND subscriber = ?2)",
        )?
        .query_row([extract_id, subscriber], |row| row.get(0))?)
}

pub fn document_for(
    conn: &Connection,
    sha256: &str,
    subscriber: &str,
) -> Result<Option<FetchedDocument>, StoreError> {
    conn.prepare_cached(
        "SELECT d.kind, doc.media_type, doc.size_bytes, doc.upload_id FROM extract_documents d \
             JOIN documents doc ON doc.sha256 = d.sha256 \
             WHERE d.sha256 = ?1 AND EXISTS (SELECT 1 FROM extract_attempts a \
             WHERE a.extract_id = d.extract_id AND a.subscriber = ?2) LIMIT 1",
    )?
    .query_row([sha256, subscriber], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get(1)?,
            row.get::<_, i64>(2)?,
            row.get(3)?,
        ))
    })
    .optional()?
    .map(|(kind, media_type, size, upload_id)| {
        Ok(FetchedDocument {
            kind: parse_name("document kind", &kind, DocumentKind::parse)?,
            media_type,
            size_bytes: size as u64,
            upload_id,
        })
    })
    .transpose()
}

pub fn document_chunk(
    conn: &Connection,
    upload_id: &str,
    index: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT data FROM document_chunks WHERE upload_id = ?1 AND idx = ?2")?
        .query_row(params![upload_id, index], |row| row.get(0))
        .optional()?)
}

pub fn reports_for_form(
    conn: &Connection,
    quarter: Quarter,
) -> Result<Vec<ReportForForm>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT filing_id, revision, body FROM filings WHERE kind = ?1 AND year = ?2 \
             AND quarter = ?3 AND superseded_by IS NULL ORDER BY bin_or_iin",
        )?
        .query_map(
            params![
                FilingKind::QuarterlyReport.as_str(),
                quarter.year(),
                quarter.quarter()
            ],
            |row| {
                Ok(ReportForForm {
                    filing_id: row.get(0)?,
                    revision: row.get(1)?,
                    body: row.get(2)?,
                })
            },
        )?
        .collect::<Result<_, _>>()?)
}

/// The stored form of revision `revision` of `quarter`'s form 402.
pub fn form_revision(
    conn: &Connection,
    quarter: Quarter,
    revision: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT form FROM form_revisions WHERE year = ?1 AND quarter = ?2 AND revision = ?3",
        )?
        .query_row(
            params![quarter.year(), quarter.quarter(), revision],
            |row| row.get(0),
        )
        .optional()?)
}

pub fn obligations(
    conn: &Connection,
    query: &ObligationQuery,
) -> Result<Vec<Obligation>, StoreError> {
    conn.prepare_cached(&format!(
        "{OBLIGATION_COLUMNS} WHERE seq > ?1 AND (?2 = '' OR kind = ?2) \
         AND (?3 = '' OR status = ?3) AND (?4 = '' OR due_date < ?4) ORDER BY seq LIMIT ?5"
    ))?
    .query_map(
        params![
            query.after_seq,
            query.kind.map_or("", ObligationKind::as_str),
            query.status.map_or("", ObligationStatus::as_str),
            query.due_before.map(|d| d.to_string()).unwrap_or_default(),
            query.limit
        ],
        obligation,
    )?
    .map(|row| row?)
    .collect()
}

pub fn findings(conn: &Connection, query: &FindingQuery) -> Result<Vec<FindingRow>, StoreError> {
    conn.prepare_cached(
        "SELECT seq, finding_id, kind, bin_or_iin, filing_id, days, year, quarter, detail, \
         detected_at FROM findings WHERE seq > ?1 AND (?2 = '' OR kind = ?2) \
         AND (?3 = '' OR bin_or_iin = ?3) ORDER BY seq LIMIT ?4",
    )?
    .query_map(
        params![
            query.after_seq,
            query.kind.map_or("", FindingKind::as_str),
            query.bin_or_iin.as_deref().unwrap_or_default(),
            query.limit
        ],
        |row| Ok(finding_row(row)),
    )?
    .map(|row| row?)
    .collect()
}

fn finding_row(row: &Row<'_>) -> Result<FindingRow, StoreError> {
    let (year, quarter): (Option<i64>, Option<i64>) = (row.get(6)?, row.get(7)?);
    Ok(FindingRow {
        seq: row.get(0)?,
        finding_id: row.get(1)?,
        kind: parse_name(
            "finding kind",
            &row.get::<_, String>(2)?,
            FindingKind::parse,
        )?,
        bin_or_iin: row.get(3)?,
        filing_id: row.get(4)?,
        days: row.get(5)?,
        quarter: year.zip(quarter).map(|(y, q)| (y as i32, q as u32)),
        detail: row.get(8)?,
        detected_at: from_micros(row.get(9)?)?,
    })
}

pub fn reported_quarters(
    conn: &Connection,
    bins: &[String],
) -> Result<Vec<(String, i32, u32)>, StoreError> {
    let mut select = conn.prepare_cached(
        "SELECT DISTINCT bin_or_iin, year, quarter FROM filings \
         WHERE bin_or_iin = ?2 AND kind = ?1",
    )?;
    let mut quarters = Vec::new();
    for bin in bins {
        let rows = select.query_map(params![FilingKind::QuarterlyReport.as_str(), bin], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })?;
        for row in rows {
            quarters.push(row?);
        }
    }
    Ok(quarters)
}

/// How a filing was delivered: its extract's sendings and acknowledgements,
/// the form revisions that include it, its obligations (a query each).
pub fn delivery(conn: &Connection, filing_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
    let exists = conn
        .prepare_cached("SELECT 1 FROM filings WHERE filing_id = ?1")?
        .exists([filing_id])?;
    if !exists {
        return Ok(None);
    }
    let mut record = DeliveryRecord {
        extract_id: conn
            .prepare_cached("SELECT extract_id FROM extracts WHERE filing_id = ?1")?
            .query_row([filing_id], |row| row.get(0))
            .optional()?,
        ..DeliveryRecord::default()
    };
    if let Some(extract_id) = &record.extract_id {
        let attempts: Vec<(String, u32, i64)> = conn
            .prepare_cached(
                "SELECT subscriber, attempt, sent_at FROM extract_attempts WHERE extract_id = ?1 \
                 ORDER BY sent_at, subscriber, attempt",
            )?
            .query_map([extract_id], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect::<Result<_, _>>()?;
        for (subscriber, attempt, sent_at) in attempts {
            record
                .attempts
                .push((subscriber, attempt, from_micros(sent_at)?));
        }
        let acks: Vec<(String, i64)> = conn
            .prepare_cached(
                "SELECT subscriber, acknowledged_at FROM extract_acks WHERE extract_id = ?1 \
                 ORDER BY acknowledged_at, subscriber",
            )?
            .query_map([extract_id], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        for (subscriber, at) in acks {
            record.acknowledgements.push((subscriber, from_micros(at)?));
        }
    }
    let forms: Vec<(i32, u32, u32, String, Option<i64>)> = conn
        .prepare_cached(
            "SELECT r.year, r.quarter, r.revision, f.body_sha256, a.acknowledged_at \
             FROM form_revision_reports r \
             JOIN form_revisions f ON f.year = r.year AND f.quarter = r.quarter \
              AND f.revision = r.revision \
             LEFT JOIN form_acks a ON a.year = r.year AND a.quarter = r.quarter \
              AND a.revision = r.revision \
             WHERE r.filing_id = ?1 ORDER BY r.year, r.quarter, r.revision",
        )?
        .query_map([filing_id], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (year, quarter, revision, body_sha256, acknowledged_at) in forms {
        record.form_revisions.push(FormRevisionIncluding {
            year,
            quarter,
            revision,
            body_sha256,
            acknowledged_at: acknowledged_at.map(from_micros).transpose()?,
        });
    }
    record.obligations = conn
        .prepare_cached(&format!(
            "{OBLIGATION_COLUMNS} WHERE filing_id = ?1 ORDER BY seq"
        ))?
        .query_map([filing_id], obligation)?
        .map(|row| row?)
        .collect::<Result<_, _>>()?;
    Ok(Some(record))
}
