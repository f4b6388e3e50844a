//! What the gateway reads outside the writer, on the pool: each function is
//! one query (or a few) and turns rows into the store's types.

use sqlx::{PgPool, Row, postgres::PgRow};

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
pub fn obligation(row: &PgRow) -> Result<Obligation, StoreError> {
    obligation_from_row(
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
        row.try_get(8)?,
        row.try_get(9)?,
        row.try_get(10)?,
    )
}

/// A stored count or number that fits in 32 bits.
fn small(value: i64) -> Result<u32, StoreError> {
    u32::try_from(value).map_err(|_| StoreError::Corrupt(format!("{value} out of range")))
}

pub async fn gauges(pool: &PgPool, subscribers: &[String]) -> Result<Gauges, StoreError> {
    let obligations: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, COUNT(*) FROM obligations GROUP BY status ORDER BY status")
            .fetch_all(pool)
            .await?;
    let oldest_pending: Vec<(String, i64)> = sqlx::query_as(
        "SELECT kind, MIN(created_at) FROM obligations WHERE status = 'PENDING' \
         GROUP BY kind ORDER BY kind",
    )
    .fetch_all(pool)
    .await?;
    let ledger_entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger")
        .fetch_one(pool)
        .await?;
    let extracts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM extracts")
        .fetch_one(pool)
        .await?;
    let acknowledged: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.subscriber, (SELECT COUNT(*) FROM extract_acks a \
         WHERE a.subscriber = s.subscriber) FROM UNNEST($1::text[]) AS s(subscriber)",
    )
    .bind(subscribers)
    .fetch_all(pool)
    .await?;
    Ok(Gauges {
        obligations,
        oldest_pending,
        ledger_entries,
        pending_extracts: acknowledged
            .into_iter()
            .map(|(subscriber, done)| (subscriber, extracts - done))
            .collect(),
        runs_taken_apart: 0,
        listener_losses: 0,
    })
}

pub async fn documents(
    pool: &PgPool,
    digests: &[Sha256Hex],
) -> Result<Vec<DocumentRecord>, StoreError> {
    let wanted: Vec<&str> = digests.iter().map(Sha256Hex::as_str).collect();
    let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
        "SELECT sha256, media_type, size_bytes, stored_at FROM documents \
         WHERE sha256 = ANY($1::text[])",
    )
    .bind(&wanted)
    .fetch_all(pool)
    .await?;
    // In the order asked, each once.
    let mut found: Vec<DocumentRecord> = Vec::new();
    for digest in digests {
        if found.iter().any(|d| d.sha256 == *digest) {
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
    Ok(found)
}

pub async fn filing(pool: &PgPool, filing_id: &str) -> Result<Option<StoredFiling>, StoreError> {
    type Row = (String, Vec<u8>, Vec<u8>, Option<String>);
    let row: Option<Row> = sqlx::query_as(
        "SELECT kind, body, receipt, superseded_by FROM filings WHERE filing_id = $1",
    )
    .bind(filing_id)
    .fetch_optional(pool)
    .await?;
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

pub async fn register(
    pool: &PgPool,
    query: &RegisterQuery,
) -> Result<Vec<RegisterRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, register_number, bin_or_iin, name, legal_address, activity_kind, status, \
         registered_at, start_filing_id, planned_start_date, required_power_kw, last_year, \
         last_quarter, activity_end_date FROM register \
         WHERE seq > $1 AND ($2 = '' OR status = $2) AND ($3 = '' OR activity_kind = $3) \
         AND ($5 = '' OR bin_or_iin = $5) ORDER BY seq LIMIT $4",
    )
    .bind(query.after_seq)
    .bind(query.status.map_or("", RegisterStatus::as_str))
    .bind(query.activity.map_or("", ActivityKind::as_str))
    .bind(i64::from(query.limit))
    .bind(query.bin_or_iin.as_deref().unwrap_or(""))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let last_year: Option<i64> = row.try_get(11)?;
            let last_quarter: Option<i64> = row.try_get(12)?;
            let end: Option<String> = row.try_get(13)?;
            Ok(RegisterRow {
                seq: row.try_get(0)?,
                register_number: row.try_get(1)?,
                bin_or_iin: row.try_get(2)?,
                name: row.try_get(3)?,
                legal_address: row.try_get(4)?,
                activity: parse_name("activity kind", row.try_get(5)?, ActivityKind::parse)?,
                status: parse_name("register status", row.try_get(6)?, RegisterStatus::parse)?,
                registered_at: from_micros(row.try_get(7)?)?,
                start_filing_id: row.try_get(8)?,
                planned_start_date: parse_date(row.try_get(9)?)?,
                required_power_kw: row.try_get::<i64, _>(10)? as u64,
                last_quarter: last_year
                    .zip(last_quarter)
                    .map(|(y, q)| (y as i32, q as u32)),
                activity_end_date: end.as_deref().map(parse_date).transpose()?,
            })
        })
        .collect()
}

pub async fn ledger_page(
    pool: &PgPool,
    after_seq: i64,
    limit: u32,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let rows: Vec<super::tree::EntryRow> = sqlx::query_as(
        "SELECT seq, kind, subject, recorded_at, payload, prev_hash, hash FROM ledger \
         WHERE seq > $1 ORDER BY seq LIMIT $2",
    )
    .bind(after_seq)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(super::tree::entry).collect())
}

pub async fn pending_extracts(
    pool: &PgPool,
    subscriber: &str,
    from_seq: i64,
    limit: u32,
    skip: &[i64],
) -> Result<Vec<PendingExtract>, StoreError> {
    let rows: Vec<(i64, String, Vec<u8>, i64)> = sqlx::query_as(
        "SELECT e.seq, e.extract_id, e.body, \
         (SELECT COUNT(*) FROM extract_attempts t WHERE t.extract_id = e.extract_id \
          AND t.subscriber = $2) \
         FROM extracts e WHERE e.seq >= $1 AND NOT (e.seq = ANY($4::bigint[])) AND NOT EXISTS \
         (SELECT 1 FROM extract_acks a WHERE a.extract_id = e.extract_id AND a.subscriber = $2) \
         ORDER BY e.seq LIMIT $3",
    )
    .bind(from_seq)
    .bind(subscriber)
    .bind(i64::from(limit))
    .bind(skip)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(seq, extract_id, body, attempts)| {
            Ok(PendingExtract {
                seq,
                extract_id,
                body,
                attempts: small(attempts)?,
                entry: None,
                evidence: None,
            })
        })
        .collect()
}

pub async fn acknowledged(
    pool: &PgPool,
    subscriber: &str,
    extract_ids: &[String],
) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT extract_id FROM extract_acks WHERE subscriber = $1 \
         AND extract_id = ANY($2::text[])",
    )
    .bind(subscriber)
    .bind(extract_ids)
    .fetch_all(pool)
    .await?)
}

pub async fn extract_exists(pool: &PgPool, extract_id: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM extracts WHERE extract_id = $1)")
            .bind(extract_id)
            .fetch_one(pool)
            .await?,
    )
}

pub async fn document_in_an_extract(pool: &PgPool, sha256: &str) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM extract_documents WHERE sha256 = $1)")
            .bind(sha256)
            .fetch_one(pool)
            .await?,
    )
}

pub async fn extract_sent_to(
    pool: &PgPool,
    extract_id: &str,
    subscriber: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM extract_attempts WHERE extract_id = $1 AND subscriber = $2)",
    )
    .bind(extract_id)
    .bind(subscriber)
    .fetch_one(pool)
    .await?)
}

pub async fn document_for(
    pool: &PgPool,
    sha256: &str,
    subscriber: &str,
) -> Result<Option<FetchedDocument>, StoreError> {
    let row: Option<(String, String, i64, String)> = sqlx::query_as(
        "SELECT d.kind, doc.media_type, doc.size_bytes, doc.upload_id FROM extract_documents d \
         JOIN documents doc ON doc.sha256 = d.sha256 \
         WHERE d.sha256 = $1 AND EXISTS (SELECT 1 FROM extract_attempts a \
         WHERE a.extract_id = d.extract_id AND a.subscriber = $2) LIMIT 1",
    )
    .bind(sha256)
    .bind(subscriber)
    .fetch_optional(pool)
    .await?;
    row.map(|(kind, media_type, size, upload_id)| {
        Ok(FetchedDocument {
            kind: parse_name("document kind", &kind, DocumentKind::parse)?,
            media_type,
            size_bytes: size as u64,
            upload_id,
        })
    })
    .transpose()
}

pub async fn document_chunk(
    pool: &PgPool,
    upload_id: &str,
    index: u64,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT data FROM document_chunks WHERE upload_id = $1 AND idx = $2")
            .bind(upload_id)
            .bind(index as i64)
            .fetch_optional(pool)
            .await?,
    )
}

pub async fn reports_for_form(
    pool: &PgPool,
    quarter: Quarter,
) -> Result<Vec<ReportForForm>, StoreError> {
    let rows: Vec<(String, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT filing_id, revision, body FROM filings WHERE kind = $1 AND year = $2 \
         AND quarter = $3 AND superseded_by IS NULL ORDER BY bin_or_iin",
    )
    .bind(FilingKind::QuarterlyReport.as_str())
    .bind(i64::from(quarter.year()))
    .bind(i64::from(quarter.quarter()))
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(filing_id, revision, body)| {
            Ok(ReportForForm {
                filing_id,
                revision: small(revision)?,
                body,
            })
        })
        .collect()
}

/// The stored form of revision `revision` of `quarter`'s form 402.
pub async fn form_revision(
    pool: &PgPool,
    quarter: Quarter,
    revision: u32,
) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT form FROM form_revisions WHERE year = $1 AND quarter = $2 AND revision = $3",
    )
    .bind(i64::from(quarter.year()))
    .bind(i64::from(quarter.quarter()))
    .bind(i64::from(revision))
    .fetch_optional(pool)
    .await?)
}

pub async fn obligations(
    pool: &PgPool,
    query: &ObligationQuery,
) -> Result<Vec<Obligation>, StoreError> {
    let rows = sqlx::query(&format!(
        "{OBLIGATION_COLUMNS} WHERE seq > $1 AND ($2 = '' OR kind = $2) \
         AND ($3 = '' OR status = $3) AND ($4 = '' OR due_date < $4) ORDER BY seq LIMIT $5"
    ))
    .bind(query.after_seq)
    .bind(query.kind.map_or("", ObligationKind::as_str))
    .bind(query.status.map_or("", ObligationStatus::as_str))
    .bind(query.due_before.map(|d| d.to_string()).unwrap_or_default())
    .bind(i64::from(query.limit))
    .fetch_all(pool)
    .await?;
    rows.iter().map(obligation).collect()
}

pub async fn findings(pool: &PgPool, query: &FindingQuery) -> Result<Vec<FindingRow>, StoreError> {
    let rows = sqlx::query(
        "SELECT seq, finding_id, kind, bin_or_iin, filing_id, days, year, quarter, detail, \
         detected_at FROM findings WHERE seq > $1 AND ($2 = '' OR kind = $2) \
         AND ($3 = '' OR bin_or_iin = $3) ORDER BY seq LIMIT $4",
    )
    .bind(query.after_seq)
    .bind(query.kind.map_or("", FindingKind::as_str))
    .bind(query.bin_or_iin.clone().unwrap_or_default())
    .bind(i64::from(query.limit))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let year: Option<i64> = row.try_get(6)?;
            let quarter: Option<i64> = row.try_get(7)?;
            Ok(FindingRow {
                seq: row.try_get(0)?,
                finding_id: row.try_get(1)?,
                kind: parse_name("finding kind", row.try_get(2)?, FindingKind::parse)?,
                bin_or_iin: row.try_get(3)?,
                filing_id: row.try_get(4)?,
                days: row.try_get::<i64, _>(5)? as i32,
                quarter: year.zip(quarter).map(|(y, q)| (y as i32, q as u32)),
                detail: row.try_get(8)?,
                detected_at: from_micros(row.try_get(9)?)?,
            })
        })
        .collect()
}

pub async fn reported_quarters(
    pool: &PgPool,
    bins: &[String],
) -> Result<Vec<(String, i32, u32)>, StoreError> {
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT DISTINCT bin_or_iin, year, quarter FROM filings \
         WHERE bin_or_iin = ANY($2::text[]) AND kind = $1",
    )
    .bind(FilingKind::QuarterlyReport.as_str())
    .bind(bins)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(b, y, q)| (b, y as i32, q as u32))
        .collect())
}

/// How a filing was delivered: its extract's sendings and acknowledgements,
/// the form revisions that include it, its obligations (a query each).
pub async fn delivery(
    pool: &PgPool,
    filing_id: &str,
) -> Result<Option<DeliveryRecord>, StoreError> {
    let exists: Option<String> =
        sqlx::query_scalar("SELECT kind FROM filings WHERE filing_id = $1")
            .bind(filing_id)
            .fetch_optional(pool)
            .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut record = DeliveryRecord {
        extract_id: sqlx::query_scalar("SELECT extract_id FROM extracts WHERE filing_id = $1")
            .bind(filing_id)
            .fetch_optional(pool)
            .await?,
        ..DeliveryRecord::default()
    };
    if let Some(extract_id) = &record.extract_id {
        let attempts: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT subscriber, attempt, sent_at FROM extract_attempts WHERE extract_id = $1 \
             ORDER BY sent_at, subscriber, attempt",
        )
        .bind(extract_id)
        .fetch_all(pool)
        .await?;
        for (subscriber, attempt, sent_at) in attempts {
            record
                .attempts
                .push((subscriber, small(attempt)?, from_micros(sent_at)?));
        }
        let acks: Vec<(String, i64)> = sqlx::query_as(
            "SELECT subscriber, acknowledged_at FROM extract_acks WHERE extract_id = $1 \
             ORDER BY acknowledged_at, subscriber",
        )
        .bind(extract_id)
        .fetch_all(pool)
        .await?;
        for (subscriber, at) in acks {
            record.acknowledgements.push((subscriber, from_micros(at)?));
        }
    }
    let forms: Vec<(i64, i64, i64, String, Option<i64>)> = sqlx::query_as(
        "SELECT r.year, r.quarter, r.revision, f.body_sha256, a.acknowledged_at \
         FROM form_revision_reports r \
         JOIN form_revisions f ON f.year = r.year AND f.quarter = r.quarter \
          AND f.revision = r.revision \
         LEFT JOIN form_acks a ON a.year = r.year AND a.quarter = r.quarter \
          AND a.revision = r.revision \
         WHERE r.filing_id = $1 ORDER BY r.year, r.quarter, r.revision",
    )
    .bind(filing_id)
    .fetch_all(pool)
    .await?;
    for (year, quarter, revision, body_sha256, acknowledged_at) in forms {
        record.form_revisions.push(FormRevisionIncluding {
            year: year as i32,
            quarter: small(quarter)?,
            revision: small(revision)?,
            body_sha256,
            acknowledged_at: acknowledged_at.map(from_micros).transpose()?,
        });
    }
    let obligations = sqlx::query(&format!(
        "{OBLIGATION_COLUMNS} WHERE filing_id = $1 ORDER BY seq"
    ))
    .bind(filing_id)
    .fetch_all(pool)
    .await?;
    record.obligations = obligations
        .iter()
        .map(obligation)
        .collect::<Result<_, _>>()?;
    Ok(Some(record))
}
