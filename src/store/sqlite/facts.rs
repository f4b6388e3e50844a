//! The facts each decision needs, read by the writer inside its
//! transaction, so each job sees what the jobs before it wrote.

use rusqlite::{Connection, OptionalExtension, params};

use crate::{
    domain::{
        decisions::{
            CurrentRevision, EarlierFiling, ExtractAckFacts, FormAckFacts, LatestRevision,
            OpenObligation, RegisterEntry, SubmissionFacts,
        },
        filing::{Filing, FilingKind},
        ip::{IpBlock, covering_starts},
        ledger::Head,
        obligation::{Obligation, ObligationKind, ObligationStatus},
        quantities::Quarter,
        register::{IpConflict, IpConflicts, RegisterState, RegisterStatus},
    },
    store::{StoreError, Submission, parse_date, parse_name, quarter_of},
};

use super::reads::{OBLIGATION_COLUMNS, obligation};

/// The ledger's last entry (the empty ledger's head if none).
pub fn ledger_head(conn: &Connection) -> Result<Head, StoreError> {
    let head = conn
        .prepare_cached("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| {
            Ok(Head {
                seq: row.get(0)?,
                hash: row.get(1)?,
            })
        })
        .optional()?;
    Ok(head.unwrap_or_default())
}

pub fn submission(
    conn: &Connection,
    submission: &Submission,
) -> Result<SubmissionFacts, StoreError> {
    let filing = &submission.filing;
    let bin = filing.id().as_str();
    let earlier = conn
        .prepare_cached(
            "SELECT filing_id, request_sha256, receipt FROM filings \
             WHERE caller = ?1 AND idempotency_key = ?2",
        )?
        .query_row(
            params![submission.caller, filing.idempotency_key().as_str()],
            |row| {
                Ok(EarlierFiling {
                    filing_id: row.get(0)?,
                    request_sha256: row.get(1)?,
                    receipt: row.get(2)?,
                })
            },
        )
        .optional()?;
    if earlier.is_some() {
        // A replay or a reused key: nothing else is looked at.
        return Ok(SubmissionFacts {
            earlier,
            ..SubmissionFacts::default()
        });
    }
    let entry = register_entry(conn, bin)?;
    let next_register_seq = conn
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) + 1 FROM register")?
        .query_row([], |row| row.get(0))?;
    let (current_revision, finance_obligation_exists) = match filing.quarter() {
        Some(quarter) => (
            current_revision(conn, bin, quarter)?,
            finance_obligation_exists(conn, quarter)?,
        ),
        None => (None, false),
    };
    Ok(SubmissionFacts {
        earlier,
        entry,
        next_register_seq,
        current_revision,
        finance_obligation_exists,
        ip_conflicts: ip_conflicts(conn, filing)?,
    })
}

fn register_entry(conn: &Connection, bin: &str) -> Result<Option<RegisterEntry>, StoreError> {
    type Row = (String, String, Option<String>, Option<i64>, Option<i64>);
    let row: Option<Row> = conn
        .prepare_cached(
            "SELECT register_number, status, activity_end_date, last_year, last_quarter \
             FROM register WHERE bin_or_iin = ?1",
        )?
        .query_row([bin], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()?;
    let Some((register_number, status, end, last_year, last_quarter)) = row else {
        return Ok(None);
    };
    Ok(Some(RegisterEntry {
        register_number,
        state: RegisterState {
            status: parse_name("register status", &status, RegisterStatus::parse)?,
            activity_end: end.as_deref().map(parse_date).transpose()?,
        },
        last_quarter: quarter_of(last_year, last_quarter)?,
    }))
}

fn current_revision(
    conn: &Connection,
    bin: &str,
    quarter: Quarter,
) -> Result<Option<CurrentRevision>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT filing_id, revision FROM filings WHERE bin_or_iin = ?1 AND kind = ?2 \
             AND year = ?3 AND quarter = ?4 AND superseded_by IS NULL",
        )?
        .query_row(
            params![
                bin,
                FilingKind::QuarterlyReport.as_str(),
                quarter.year(),
                quarter.quarter()
            ],
            |row| {
                Ok(CurrentRevision {
                    filing_id: row.get(0)?,
                    revision: row.get(1)?,
                })
            },
        )
        .optional()?)
}

fn finance_obligation_exists(conn: &Connection, quarter: Quarter) -> Result<bool, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM obligations WHERE kind = ?1 AND year = ?2 \
             AND quarter = ?3)",
        )?
        .query_row(
            params![
                ObligationKind::FinanceForm.as_str(),
                quarter.year(),
                quarter.quarter()
            ],
            |row| row.get(0),
        )?)
}

/// The blocks of the filing's pool that overlap ranges stored for other
/// persons. Every stored range is a CIDR block, so one that overlaps a
/// block either starts inside it or holds its first address; the second
/// kind starts at that address masked to its own prefix length, and only
/// the lengths stored ranges have (`ip_prefix_lengths`) are looked up. Each
/// look-up is one index seek; the table is never scanned.
fn ip_conflicts(conn: &Connection, filing: &Filing) -> Result<IpConflicts, StoreError> {
    let Some(pool) = filing.ip_pool() else {
        return Ok(IpConflicts::default());
    };
    let bin = filing.id().as_str();
    let prefixes = conn
        .prepare_cached("SELECT prefix FROM ip_prefix_lengths")?
        .query_map([], |row| row.get::<_, u32>(0))?
        .collect::<Result<Vec<u32>, _>>()?;
    let mut inside = conn.prepare_cached(
        "SELECT bin_or_iin, cidr FROM ip_ranges \
         WHERE range_start >= ?1 AND range_start <= ?2 AND bin_or_iin <> ?3",
    )?;
    let mut holding = conn.prepare_cached(
        "SELECT bin_or_iin, cidr FROM ip_ranges \
         WHERE range_start = ?1 AND range_end >= ?2 AND bin_or_iin <> ?3",
    )?;
    let mut conflicts = IpConflicts::default();
    for block in pool.blocks() {
        let (start, end) = (block.range.start_bytes(), block.range.end_bytes());
        let mut found: Vec<(String, String)> = inside
            .query_map(params![start, end, bin], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        for covering in covering_starts(block.range.start, prefixes.iter().copied()) {
            let rows = holding.query_map(params![covering.to_be_bytes(), start, bin], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            for row in rows {
                found.push(row?);
            }
        }
        found.sort();
        found.dedup();
        for (other_bin, other_cidr) in found {
            conflicts.add(conflict(block, other_bin, other_cidr));
        }
    }
    Ok(conflicts)
}

fn conflict(block: &IpBlock, other_bin_or_iin: String, other_cidr: String) -> IpConflict {
    IpConflict {
        cidr: block.cidr.clone(),
        other_cidr,
        other_bin_or_iin,
    }
}

pub fn extract_ack(
    conn: &Connection,
    extract_id: &str,
    subscriber: &str,
) -> Result<ExtractAckFacts, StoreError> {
    let earlier_receipt = conn
        .prepare_cached(
            "SELECT receipt FROM extract_acks WHERE extract_id = ?1 AND subscriber = ?2",
        )?
        .query_row([extract_id, subscriber], |row| row.get(0))
        .optional()?;
    let sent_due_date: Option<String> = conn
        .prepare_cached(
            "SELECT e.due_date FROM extracts e WHERE e.extract_id = ?1 AND EXISTS \
             (SELECT 1 FROM extract_attempts a WHERE a.extract_id = e.extract_id \
              AND a.subscriber = ?2)",
        )?
        .query_row([extract_id, subscriber], |row| row.get(0))
        .optional()?;
    let open_obligation = conn
        .prepare_cached(
            "SELECT obligation_id, due_date FROM obligations WHERE kind = ?1 \
             AND fulfilled_at IS NULL AND extract_id = ?2 ORDER BY seq LIMIT 1",
        )?
        .query_row(
            [ObligationKind::EnergyExtract.as_str(), extract_id],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )
        .optional()?
        .map(open)
        .transpose()?;
    Ok(ExtractAckFacts {
        earlier_receipt,
        sent_due_date: sent_due_date.as_deref().map(parse_date).transpose()?,
        open_obligation,
    })
}

fn open((obligation_id, due_date): (String, String)) -> Result<OpenObligation, StoreError> {
    Ok(OpenObligation {
        obligation_id,
        due_date: parse_date(&due_date)?,
    })
}

/// How many times each of `extract_ids` was sent to `subscriber`.
pub fn sendings(
    conn: &Connection,
    extract_ids: &[String],
    subscriber: &str,
) -> Result<Vec<u32>, StoreError> {
    let mut count = conn.prepare_cached(
        "SELECT COALESCE(MAX(attempt), 0) FROM extract_attempts \
         WHERE extract_id = ?1 AND subscriber = ?2",
    )?;
    extract_ids
        .iter()
        .map(|id| Ok(count.query_row([id.as_str(), subscriber], |row| row.get(0))?))
        .collect()
}

pub fn latest_revision(
    conn: &Connection,
    quarter: Quarter,
) -> Result<Option<LatestRevision>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT revision, content_sha256, form FROM form_revisions \
             WHERE year = ?1 AND quarter = ?2 ORDER BY revision DESC LIMIT 1",
        )?
        .query_row(params![quarter.year(), quarter.quarter()], |row| {
            Ok(LatestRevision {
                revision: row.get(0)?,
                content_sha256: row.get(1)?,
                form: row.get(2)?,
            })
        })
        .optional()?)
}

pub fn form_ack(
    conn: &Connection,
    quarter: Quarter,
    revision: u32,
) -> Result<FormAckFacts, StoreError> {
    let key = params![quarter.year(), quarter.quarter(), revision];
    let body_sha256 = conn
        .prepare_cached(
            "SELECT body_sha256 FROM form_revisions WHERE year = ?1 AND quarter = ?2 \
             AND revision = ?3",
        )?
        .query_row(key, |row| row.get(0))
        .optional()?;
    let earlier_receipt = conn
        .prepare_cached(
            "SELECT receipt FROM form_acks WHERE year = ?1 AND quarter = ?2 AND revision = ?3",
        )?
        .query_row(key, |row| row.get(0))
        .optional()?;
    let open_obligations = conn
        .prepare_cached(
            "SELECT obligation_id, due_date FROM obligations WHERE kind = ?1 \
             AND fulfilled_at IS NULL AND year = ?2 AND quarter = ?3 ORDER BY seq",
        )?
        .query_map(
            params![
                ObligationKind::FinanceForm.as_str(),
                quarter.year(),
                quarter.quarter()
            ],
            |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)),
        )?
        .map(|row| open(row?))
        .collect::<Result<_, _>>()?;
    Ok(FormAckFacts {
        body_sha256,
        earlier_receipt,
        open_obligations,
    })
}

/// PENDING obligations due before `today`, oldest first.
pub fn pending_due_before(
    conn: &Connection,
    today: chrono::NaiveDate,
) -> Result<Vec<Obligation>, StoreError> {
    conn.prepare_cached(&format!(
        "{OBLIGATION_COLUMNS} WHERE status = ?1 AND due_date < ?2 ORDER BY seq"
    ))?
    .query_map(
        params![ObligationStatus::Pending.as_str(), today.to_string()],
        obligation,
    )?
    .map(|row| row?)
    .collect()
}
