//! Runs on PostgreSQL: a run of submissions (or of acknowledgements, or one
//! job's sendings) reads its facts in one query, is decided in memory job
//! after job, and writes in one statement of data-modifying `WITH` clauses
//! over `UNNEST`ed column arrays. Every text here is fixed, so sqlx keeps it
//! prepared; a run of 1 and a run of 200 cost the same round trips. The
//! writer admits to one run only submissions that read nothing another of
//! them writes ([`Independent`]), so deciding them from one snapshot gives
//! what deciding them one after another would.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use super::ledger::{self, LedgerRows, PgQuery};
use crate::{
    domain::{
        decisions::{
            self, Acceptance, CurrentRevision, EarlierFiling, ExtractAckDecision, ExtractAckFacts,
            OpenObligation, RegisterEntry, RegisterUpdate, RunState, Sending, SubmissionDecision,
            SubmissionFacts,
        },
        ip::IpRange,
        ledger::{Head, LedgerEvent},
        quantities::Quarter,
        register::{IpConflict, IpConflicts, RegisterState, RegisterStatus},
    },
    store::{
        AckBuilder, Incoming, PendingExtract, Recorded, StoreError, SubmitOutcome, micros, new_id,
        parse_date, parse_name, quarter_of,
    },
};

/// Which submissions may share a run: none reads what another writes (the
/// same caller's key, the same person, overlapping IP ranges).
#[derive(Debug, Default)]
pub struct Independent {
    keys: HashSet<(String, String)>,
    persons: HashSet<String>,
    ranges: Vec<IpRange>,
}

impl Independent {
    pub fn admits(&self, incoming: &Incoming) -> bool {
        let filing = &incoming.submission.filing;
        !self.keys.contains(&(
            incoming.submission.caller.clone(),
            filing.idempotency_key().as_str().to_owned(),
        )) && !self.persons.contains(filing.id().as_str())
            && filing.ip_pool().is_none_or(|pool| {
                pool.blocks()
                    .iter()
                    .all(|b| self.ranges.iter().all(|r| !r.overlaps(&b.range)))
            })
    }

    pub fn add(&mut self, incoming: &Incoming) {
        let filing = &incoming.submission.filing;
        self.keys.insert((
            incoming.submission.caller.clone(),
            filing.idempotency_key().as_str().to_owned(),
        ));
        self.persons.insert(filing.id().as_str().to_owned());
        if let Some(pool) = filing.ip_pool() {
            self.ranges.extend(pool.blocks().iter().map(|b| b.range));
        }
    }
}

/// Each submission's facts but its IP conflicts, in run order, and the
/// ledger's head; the uncorrelated subqueries run once per query.
const SUBMISSION_FACTS: &str = "\
SELECT f.filing_id, f.request_sha256, f.receipt, \
       r.register_number, r.status, r.activity_end_date, r.last_year, r.last_quarter, \
       p.filing_id, p.revision, \
       EXISTS (SELECT 1 FROM obligations o WHERE o.kind = 'FINANCE_FORM' \
               AND o.year = i.year AND o.quarter = i.quarter), \
       (SELECT COALESCE(MAX(seq), 0) + 1 FROM register), \
       (SELECT seq FROM ledger ORDER BY seq DESC LIMIT 1), \
       (SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1) \
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) \
     WITH ORDINALITY AS i(caller, ikey, bin, year, quarter, n) \
LEFT JOIN filings f ON f.caller = i.caller AND f.idempotency_key = i.ikey \
LEFT JOIN register r ON r.bin_or_iin = i.bin \
LEFT JOIN LATERAL (SELECT filing_id, revision FROM filings \
     WHERE bin_or_iin = i.bin AND kind = 'QUARTERLY_REPORT' AND year = i.year \
     AND quarter = i.quarter AND superseded_by IS NULL LIMIT 1) p ON true \
ORDER BY i.n";

/// The stored ranges of other persons that overlap each block of the run's
/// pools, by the GiST index on `ip_ranges.block`.
const IP_CONFLICTS: &str = "\
SELECT b.job, b.block_no, r.bin_or_iin, r.cidr \
FROM UNNEST($1::int[], $2::int[], $3::text[], $4::text[]) AS b(job, block_no, bin, cidr) \
JOIN ip_ranges r ON r.block && b.cidr::cidr AND r.bin_or_iin <> b.bin \
ORDER BY b.job, b.block_no, r.bin_or_iin, r.cidr";

/// Reads the facts of a run of submissions in two queries.
async fn submission_facts(
    conn: &mut PgConnection,
    run: &[Incoming],
) -> Result<(Vec<SubmissionFacts>, Head), StoreError> {
    let filings = run.iter().map(|i| &i.submission.filing);
    let rows = sqlx::query(SUBMISSION_FACTS)
        .bind(
            run.iter()
                .map(|i| i.submission.caller.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            filings
                .clone()
                .map(|f| f.idempotency_key().as_str().to_owned())
                .collect::<Vec<_>>(),
        )
        .bind(
            filings
                .clone()
                .map(|f| f.id().to_string())
                .collect::<Vec<_>>(),
        )
        .bind(
            filings
                .clone()
                .map(|f| f.quarter().map(|q| i64::from(q.year())))
                .collect::<Vec<_>>(),
        )
        .bind(
            filings
                .map(|f| f.quarter().map(|q| i64::from(q.quarter())))
                .collect::<Vec<_>>(),
        )
        .fetch_all(&mut *conn)
        .await?;
    if rows.len() != run.len() {
        return Err(StoreError::Corrupt(format!(
            "{} facts rows for a run of {} submissions",
            rows.len(),
            run.len()
        )));
    }
    let head = match rows.first() {
        Some(row) => match (row.try_get(12)?, row.try_get(13)?) {
            (Some(seq), Some(hash)) => Head { seq, hash },
            _ => Head::default(),
        },
        None => Head::default(),
    };
    let mut conflicts = ip_conflicts(conn, run).await?;
    let mut facts = Vec::with_capacity(run.len());
    for (row, conflicts) in rows.iter().zip(conflicts.drain(..)) {
        facts.push(submission_fact(row, conflicts)?);
    }
    Ok((facts, head))
}

fn submission_fact(
    row: &sqlx::postgres::PgRow,
    ip_conflicts: IpConflicts,
) -> Result<SubmissionFacts, StoreError> {
    let earlier = match (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?) {
        (Some(filing_id), Some(request_sha256), Some(receipt)) => Some(EarlierFiling {
            filing_id,
            request_sha256,
            receipt,
        }),
        _ => None,
    };
    let entry = match (
        row.try_get::<Option<String>, _>(3)?,
        row.try_get::<Option<&str>, _>(4)?,
    ) {
        (Some(register_number), Some(status)) => {
            let end: Option<&str> = row.try_get(5)?;
            Some(RegisterEntry {
                register_number,
                state: RegisterState {
                    status: parse_name("register status", status, RegisterStatus::parse)?,
                    activity_end: end.map(parse_date).transpose()?,
                },
                last_quarter: quarter_of(row.try_get(6)?, row.try_get(7)?)?,
            })
        }
        _ => None,
    };
    let current_revision = match (row.try_get(8)?, row.try_get::<Option<i64>, _>(9)?) {
        (Some(filing_id), Some(revision)) => Some(CurrentRevision {
            filing_id,
            revision: u32::try_from(revision)
                .map_err(|_| StoreError::Corrupt(format!("revision {revision}")))?,
        }),
        _ => None,
    };
    Ok(SubmissionFacts {
        earlier,
        entry,
        next_register_seq: row.try_get(11)?,
        current_revision,
        finance_obligation_exists: row.try_get(10)?,
        ip_conflicts,
    })
}

/// Each submission's IP conflicts, in run order.
async fn ip_conflicts(
    conn: &mut PgConnection,
    run: &[Incoming],
) -> Result<Vec<IpConflicts>, StoreError> {
    let mut blocks = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (job, incoming) in run.iter().enumerate() {
        let filing = &incoming.submission.filing;
        for (n, block) in filing
            .ip_pool()
            .map_or(&[][..], |p| p.blocks())
            .iter()
            .enumerate()
        {
            blocks.0.push(job as i32);
            blocks.1.push(n as i32);
            blocks.2.push(filing.id().to_string());
            blocks.3.push(block.cidr.clone());
        }
    }
    let mut conflicts = vec![IpConflicts::default(); run.len()];
    if blocks.0.is_empty() {
        return Ok(conflicts);
    }
    let rows: Vec<(i32, i32, String, String)> = sqlx::query_as(IP_CONFLICTS)
        .bind(blocks.0)
        .bind(blocks.1)
        .bind(blocks.2)
        .bind(blocks.3)
        .fetch_all(conn)
        .await?;
    for (job, n, other_bin_or_iin, other_cidr) in rows {
        let block = usize::try_from(job)
            .ok()
            .and_then(|job| run.get(job))
            .and_then(|i| i.submission.filing.ip_pool())
            .and_then(|pool| pool.blocks().get(n as usize))
            .ok_or_else(|| StoreError::Corrupt("an IP look-up's tag".into()))?;
        conflicts[job as usize].add(IpConflict {
            cidr: block.cidr.clone(),
            other_cidr,
            other_bin_or_iin,
        });
    }
    Ok(conflicts)
}

/// Reads, decides and writes a run of independent submissions; the
/// outcomes, and the extracts the run made, to hand on to the streams once
/// committed.
pub async fn submissions(
    conn: &mut PgConnection,
    run: &[Incoming],
) -> Result<(Vec<SubmitOutcome>, Vec<PendingExtract>), StoreError> {
    let (facts, mut head) = submission_facts(conn, run).await?;
    let mut state = RunState::default();
    let mut rows = AcceptanceRows::default();
    let mut outcomes = Vec::with_capacity(run.len());
    // The EXTRACT_CREATED entries, by extract id: the writer proves the
    // extracts from them once it has sealed the batch.
    let mut created = std::collections::HashMap::new();
    for (incoming, facts) in run.iter().zip(facts) {
        let Incoming {
            submission,
            received,
        } = incoming;
        let facts = state.facts_now(facts, submission.filing.quarter());
        let decision =
            decisions::decide_submission(&submission.filing, received, facts, &mut new_id);
        state.record(&decision);
        outcomes.push(match decision {
            SubmissionDecision::Replay(receipt) => SubmitOutcome::Replayed(receipt),
            SubmissionDecision::KeyReused { filing_id } => SubmitOutcome::KeyReused { filing_id },
            SubmissionDecision::Accept(acceptance) => {
                let receipt = (submission.receipt)(&acceptance.accepted);
                rows.push(&acceptance, &submission.body, &receipt);
                let entries: Vec<_> = acceptance
                    .ledger_events(&receipt)
                    .iter()
                    .map(|event| head.append(event, received.received_at))
                    .collect();
                let accepted = Recorded::made(receipt, &entries, LedgerEvent::FILING_ACCEPTED);
                for entry in entries {
                    if entry.kind == LedgerEvent::EXTRACT_CREATED {
                        created.insert(entry.subject.clone(), entry.clone());
                    }
                    rows.ledger.push(entry);
                }
                SubmitOutcome::Accepted(accepted)
            }
        });
    }
    let mut made = Vec::new();
    if !rows.filings.filing_id.is_empty() {
        let bodies: Vec<(String, Vec<u8>)> = rows
            .extracts
            .id
            .iter()
            .cloned()
            .zip(rows.extracts.body.iter().cloned())
            .collect();
        for (extract_id, seq) in rows.write(conn).await? {
            let body = bodies
                .iter()
                .find(|(id, _)| *id == extract_id)
                .map(|(_, body)| body.clone())
                .ok_or_else(|| StoreError::Corrupt(format!("extract {extract_id} unknown")))?;
            made.push(PendingExtract {
                seq,
                entry: created.remove(&extract_id).map(Box::new),
                extract_id,
                body,
                attempts: 0,
                evidence: None,
            });
        }
        made.sort_by_key(|extract| extract.seq);
    }
    Ok((outcomes, made))
}

/// A run's accepted filings and everything they change, column by column:
/// one struct per clause of [`ACCEPTANCE_WRITES`], its fields in parameter
/// order.
#[derive(Debug, Default)]
struct AcceptanceRows {
    filings: Filings,
    superseded: Superseded,
    created: RegisterCreated,
    restarted: RegisterRestarted,
    reported: RegisterReported,
    terminated: RegisterTerminated,
    ranges: Ranges,
    findings: Findings,
    extracts: Extracts,
    extract_documents: ExtractDocuments,
    obligations: Obligations,
    ledger: LedgerRows,
}

/// Filings: the accepted filings.
#[derive(Debug, Default)]
struct Filings {
    filing_id: Vec<String>,
    kind: Vec<&'static str>,
    bin_or_iin: Vec<String>,
    caller: Vec<String>,
    idempotency_key: Vec<String>,
    request_sha256: Vec<String>,
    year: Vec<Option<i64>>,
    quarter: Vec<Option<i64>>,
    revision: Vec<i64>,
    received_at: Vec<i64>,
    body: Vec<Vec<u8>>,
    receipt: Vec<Vec<u8>>,
}

impl Filings {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.filing_id)
            .bind(self.kind)
            .bind(self.bin_or_iin)
            .bind(self.caller)
            .bind(self.idempotency_key)
            .bind(self.request_sha256)
            .bind(self.year)
            .bind(self.quarter)
            .bind(self.revision)
            .bind(self.received_at)
            .bind(self.body)
            .bind(self.receipt)
    }
}

/// §4 revisions superseded by the run's filings.
#[derive(Debug, Default)]
struct Superseded {
    old: Vec<String>,
    new: Vec<String>,
}

impl Superseded {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query.bind(self.old).bind(self.new)
    }
}

/// §3 register entries made.
#[derive(Debug, Default)]
struct RegisterCreated {
    seq: Vec<i64>,
    number: Vec<String>,
    bin: Vec<String>,
    name: Vec<String>,
    address: Vec<String>,
    activity: Vec<&'static str>,
    at: Vec<i64>,
    filing: Vec<String>,
    planned: Vec<String>,
    power: Vec<i64>,
}

impl RegisterCreated {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.seq)
            .bind(self.number)
            .bind(self.bin)
            .bind(self.name)
            .bind(self.address)
            .bind(self.activity)
            .bind(self.at)
            .bind(self.filing)
            .bind(self.planned)
            .bind(self.power)
    }
}

/// §3 entries of terminated persons who notified a new start.
#[derive(Debug, Default)]
struct RegisterRestarted {
    bin: Vec<String>,
    filing: Vec<String>,
    planned: Vec<String>,
    power: Vec<i64>,
    name: Vec<String>,
    address: Vec<String>,
    activity: Vec<&'static str>,
    at: Vec<i64>,
}

impl RegisterRestarted {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.bin)
            .bind(self.filing)
            .bind(self.planned)
            .bind(self.power)
            .bind(self.name)
            .bind(self.address)
            .bind(self.activity)
            .bind(self.at)
    }
}

/// §4 entries a report keeps current.
#[derive(Debug, Default)]
struct RegisterReported {
    bin: Vec<String>,
    status: Vec<&'static str>,
    name: Vec<String>,
    address: Vec<String>,
    year: Vec<i64>,
    quarter: Vec<i64>,
    at: Vec<i64>,
}

impl RegisterReported {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.bin)
            .bind(self.status)
            .bind(self.name)
            .bind(self.address)
            .bind(self.year)
            .bind(self.quarter)
            .bind(self.at)
    }
}

/// §5 entries whose activity ended.
#[derive(Debug, Default)]
struct RegisterTerminated {
    bin: Vec<String>,
    ended: Vec<String>,
    at: Vec<i64>,
}

impl RegisterTerminated {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query.bind(self.bin).bind(self.ended).bind(self.at)
    }
}

/// 3.9 / 4.11 the persons whose IP ranges are replaced, then the new ranges.
#[derive(Debug, Default)]
struct Ranges {
    replaced_for: Vec<String>,
    bin: Vec<String>,
    cidr: Vec<String>,
    start: Vec<Vec<u8>>,
    end: Vec<Vec<u8>>,
    filing: Vec<String>,
}

impl Ranges {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.replaced_for)
            .bind(self.bin)
            .bind(self.cidr)
            .bind(self.start)
            .bind(self.end)
            .bind(self.filing)
    }
}

/// The findings.
#[derive(Debug, Default)]
struct Findings {
    id: Vec<String>,
    kind: Vec<&'static str>,
    bin: Vec<String>,
    filing: Vec<String>,
    days: Vec<i64>,
    year: Vec<Option<i64>>,
    quarter: Vec<Option<i64>>,
    detail: Vec<String>,
    at: Vec<i64>,
}

impl Findings {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.id)
            .bind(self.kind)
            .bind(self.bin)
            .bind(self.filing)
            .bind(self.days)
            .bind(self.year)
            .bind(self.quarter)
            .bind(self.detail)
            .bind(self.at)
    }
}

/// §6 the extracts.
#[derive(Debug, Default)]
struct Extracts {
    id: Vec<String>,
    filing: Vec<String>,
    bin: Vec<String>,
    created: Vec<i64>,
    due: Vec<String>,
    body: Vec<Vec<u8>>,
}

impl Extracts {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.id)
            .bind(self.filing)
            .bind(self.bin)
            .bind(self.created)
            .bind(self.due)
            .bind(self.body)
    }
}

/// §6 the documents each extract references.
#[derive(Debug, Default)]
struct ExtractDocuments {
    extract: Vec<String>,
    sha256: Vec<String>,
    kind: Vec<&'static str>,
}

impl ExtractDocuments {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query.bind(self.extract).bind(self.sha256).bind(self.kind)
    }
}

/// §6 / §6-1 the obligations made.
#[derive(Debug, Default)]
struct Obligations {
    id: Vec<String>,
    kind: Vec<&'static str>,
    due: Vec<String>,
    status: Vec<&'static str>,
    filing: Vec<Option<String>>,
    extract: Vec<Option<String>>,
    year: Vec<Option<i64>>,
    quarter: Vec<Option<i64>>,
    created: Vec<i64>,
}

impl Obligations {
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.id)
            .bind(self.kind)
            .bind(self.due)
            .bind(self.status)
            .bind(self.filing)
            .bind(self.extract)
            .bind(self.year)
            .bind(self.quarter)
            .bind(self.created)
    }
}

const ACCEPTANCE_WRITES: &str = "\
WITH filed AS ( \
  INSERT INTO filings (filing_id, kind, bin_or_iin, caller, idempotency_key, request_sha256, \
                       year, quarter, revision, received_at, body, receipt) \
  SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
                       $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[], $11::bytea[], \
                       $12::bytea[])), \
superseded AS ( \
  UPDATE filings f SET superseded_by = u.new \
  FROM UNNEST($13::text[], $14::text[]) AS u(old, new) WHERE f.filing_id = u.old), \
created AS ( \
  INSERT INTO register (seq, register_number, bin_or_iin, name, legal_address, activity_kind, \
                        status, registered_at, start_filing_id, planned_start_date, \
                        required_power_kw, updated_at) \
  SELECT seq, number, bin, name, address, activity, 'PLANNED', at, filing, planned, power, at \
  FROM UNNEST($15::bigint[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[], \
              $21::bigint[], $22::text[], $23::text[], $24::bigint[]) \
       AS u(seq, number, bin, name, address, activity, at, filing, planned, power)), \
restarted AS ( \
  UPDATE register r SET status = 'PLANNED', activity_end_date = NULL, \
         start_filing_id = u.filing, planned_start_date = u.planned, \
         required_power_kw = u.power, name = u.name, legal_address = u.address, \
         activity_kind = u.activity, updated_at = u.at \
  FROM UNNEST($25::text[], $26::text[], $27::text[], $28::bigint[], $29::text[], $30::text[], \
              $31::text[], $32::bigint[]) \
       AS u(bin, filing, planned, power, name, address, activity, at) \
  WHERE r.bin_or_iin = u.bin), \
reported AS ( \
  UPDATE register r SET status = u.status, name = u.name, legal_address = u.address, \
         last_year = u.year, last_quarter = u.quarter, updated_at = u.at \
  FROM UNNEST($33::text[], $34::text[], $35::text[], $36::text[], $37::bigint[], \
              $38::bigint[], $39::bigint[]) AS u(bin, status, name, address, year, quarter, at) \
  WHERE r.bin_or_iin = u.bin), \
terminated AS ( \
  UPDATE register r SET status = 'TERMINATED', activity_end_date = u.ended, updated_at = u.at \
  FROM UNNEST($40::text[], $41::text[], $42::bigint[]) AS u(bin, ended, at) \
  WHERE r.bin_or_iin = u.bin), \
cleared AS ( \
  DELETE FROM ip_ranges WHERE bin_or_iin = ANY($43::text[])), \
ranged AS ( \
  INSERT INTO ip_ranges (bin_or_iin, cidr, range_start, range_end, filing_id, block) \
  SELECT bin, cidr, lo, hi, filing, cidr::cidr \
  FROM UNNEST($44::text[], $45::text[], $46::bytea[], $47::bytea[], $48::text[]) \
       AS u(bin, cidr, lo, hi, filing)), \
found AS ( \
  INSERT INTO findings (finding_id, kind, bin_or_iin, filing_id, days, year, quarter, detail, \
                        detected_at) \
  SELECT * FROM UNNEST($49::text[], $50::text[], $51::text[], $52::text[], $53::bigint[], \
                       $54::bigint[], $55::bigint[], $56::text[], $57::bigint[])), \
extracted AS ( \
  INSERT INTO extracts (extract_id, filing_id, bin_or_iin, created_at, due_date, body) \
  SELECT * FROM UNNEST($58::text[], $59::text[], $60::text[], $61::bigint[], $62::text[], \
                       $63::bytea[]) \
  RETURNING extract_id, seq), \
referenced AS ( \
  INSERT INTO extract_documents (extract_id, sha256, kind) \
  SELECT * FROM UNNEST($64::text[], $65::text[], $66::text[])), \
owed AS ( \
  INSERT INTO obligations (obligation_id, kind, due_date, status, filing_id, extract_id, year, \
                           quarter, created_at) \
  SELECT * FROM UNNEST($67::text[], $68::text[], $69::text[], $70::text[], $71::text[], \
                       $72::text[], $73::bigint[], $74::bigint[], $75::bigint[])), \
logged AS ( \
  INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash) \
  SELECT * FROM UNNEST($76::bigint[], $77::text[], $78::text[], $79::bigint[], $80::text[], \
                       $81::text[], $82::text[])) \
SELECT extract_id, seq FROM extracted";

impl AcceptanceRows {
    /// Adds an accepted filing's rows, table after table in the order of
    /// [`ACCEPTANCE_WRITES`]: longer than a screen, one plain push a column.
    fn push(&mut self, acceptance: &Acceptance, body: &[u8], receipt: &[u8]) {
        let accepted = &acceptance.accepted;
        let filing_id = &accepted.filing_id;
        let bin = &acceptance.bin_or_iin;
        let at = micros(accepted.received_at);
        let year_of = |q: Option<Quarter>| q.map(|q| i64::from(q.year()));
        let quarter_of = |q: Option<Quarter>| q.map(|q| i64::from(q.quarter()));
        let f = &mut self.filings;
        f.filing_id.push(filing_id.clone());
        f.kind.push(acceptance.kind.as_str());
        f.bin_or_iin.push(bin.clone());
        f.caller.push(acceptance.caller.clone());
        f.idempotency_key.push(acceptance.idempotency_key.clone());
        f.request_sha256.push(acceptance.request_sha256.to_string());
        f.year.push(year_of(acceptance.quarter));
        f.quarter.push(quarter_of(acceptance.quarter));
        f.revision.push(i64::from(accepted.revision));
        f.received_at.push(at);
        f.body.push(body.to_vec());
        f.receipt.push(receipt.to_vec());
        if let Some(previous) = &acceptance.supersedes {
            self.superseded.old.push(previous.clone());
            self.superseded.new.push(filing_id.clone());
        }
        self.push_register(acceptance, at);
        if let Some(blocks) = &acceptance.ip_ranges {
            let r = &mut self.ranges;
            r.replaced_for.push(bin.clone());
            for block in blocks {
                r.bin.push(bin.clone());
                r.cidr.push(block.cidr.clone());
                r.start.push(block.range.start_bytes().to_vec());
                r.end.push(block.range.end_bytes().to_vec());
                r.filing.push(filing_id.clone());
            }
        }
        for (finding_id, draft) in &accepted.findings {
            let f = &mut self.findings;
            f.id.push(finding_id.clone());
            f.kind.push(draft.kind.as_str());
            f.bin.push(bin.clone());
            f.filing.push(filing_id.clone());
            f.days.push(i64::from(draft.days));
            f.year.push(year_of(draft.quarter));
            f.quarter.push(quarter_of(draft.quarter));
            f.detail.push(draft.detail.clone());
            f.at.push(at);
        }
        if let Some(extract) = &acceptance.extract {
            let e = &mut self.extracts;
            e.id.push(extract.extract_id.clone());
            e.filing.push(filing_id.clone());
            e.bin.push(bin.clone());
            e.created.push(micros(extract.created_at));
            e.due.push(extract.due_date.to_string());
            e.body.push(extract.body.clone());
            for (sha256, kind) in &extract.documents {
                let d = &mut self.extract_documents;
                d.extract.push(extract.extract_id.clone());
                d.sha256.push(sha256.to_string());
                d.kind.push(kind.as_str());
            }
        }
        for obligation in &accepted.obligations {
            let o = &mut self.obligations;
            o.id.push(obligation.obligation_id.clone());
            o.kind.push(obligation.kind.as_str());
            o.due.push(obligation.due_date.to_string());
            o.status.push(obligation.status.as_str());
            o.filing.push(obligation.filing_id.clone());
            o.extract.push(obligation.extract_id.clone());
            o.year.push(year_of(obligation.quarter));
            o.quarter.push(quarter_of(obligation.quarter));
            o.created.push(micros(obligation.created_at));
        }
    }

    fn push_register(&mut self, acceptance: &Acceptance, at: i64) {
        let bin = &acceptance.bin_or_iin;
        match &acceptance.register {
            RegisterUpdate::Unchanged => {}
            RegisterUpdate::Create(entry) => {
                let c = &mut self.created;
                c.seq.push(entry.seq);
                c.number.push(entry.register_number.clone());
                c.bin.push(bin.clone());
                c.name.push(entry.name.clone());
                c.address.push(entry.legal_address.clone());
                c.activity.push(entry.activity.as_str());
                c.at.push(at);
                c.filing.push(acceptance.accepted.filing_id.clone());
                c.planned.push(entry.planned_start.to_string());
                c.power.push(entry.required_power_kw as i64);
            }
            RegisterUpdate::Restart {
                start_filing_id,
                name,
                legal_address,
                activity,
                planned_start,
                required_power_kw,
            } => {
                let r = &mut self.restarted;
                r.bin.push(bin.clone());
                r.filing.push(start_filing_id.clone());
                r.planned.push(planned_start.to_string());
                r.power.push(*required_power_kw as i64);
                r.name.push(name.clone());
                r.address.push(legal_address.clone());
                r.activity.push(activity.as_str());
                r.at.push(at);
            }
            RegisterUpdate::Report {
                status,
                name,
                legal_address,
                last_quarter,
            } => {
                let r = &mut self.reported;
                r.bin.push(bin.clone());
                r.status.push(status.as_str());
                r.name.push(name.clone());
                r.address.push(legal_address.clone());
                r.year.push(i64::from(last_quarter.year()));
                r.quarter.push(i64::from(last_quarter.quarter()));
                r.at.push(at);
            }
            RegisterUpdate::Terminate { activity_end } => {
                let t = &mut self.terminated;
                t.bin.push(bin.clone());
                t.ended.push(activity_end.to_string());
                t.at.push(at);
            }
        }
    }

    /// One statement, one round trip, whatever the run's size; each
    /// extract's id with the sequence number it was given.
    async fn write(self, conn: &mut PgConnection) -> Result<Vec<(String, i64)>, StoreError> {
        let query = sqlx::query(ACCEPTANCE_WRITES);
        let query = self.filings.bind(query);
        let query = self.superseded.bind(query);
        let query = self.created.bind(query);
        let query = self.restarted.bind(query);
        let query = self.reported.bind(query);
        let query = self.terminated.bind(query);
        let query = self.ranges.bind(query);
        let query = self.findings.bind(query);
        let query = self.extracts.bind(query);
        let query = self.extract_documents.bind(query);
        let query = self.obligations.bind(query);
        let rows = self.ledger.bind(query).fetch_all(conn).await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }
}

/// An energy acknowledgement in a run.
pub struct AckJob {
    pub extract_id: String,
    pub subscriber: String,
    pub build: AckBuilder,
}

/// An extract's obligations are found by `obligations_by_extract` alone:
/// the `OFFSET 0` keeps the planner from joining the kind's index as well,
/// which read every energy obligation ever made for each acknowledgement
/// (0.4 ms of 0.8 at 10,000 obligations, growing with the register).
const ACK_FACTS: &str = "\
SELECT a.receipt, e.due_date, o.obligation_id, o.due_date, \
       (SELECT seq FROM ledger ORDER BY seq DESC LIMIT 1), \
       (SELECT hash FROM ledger ORDER BY seq DESC LIMIT 1) \
FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS i(extract_id, subscriber, n) \
LEFT JOIN extract_acks a ON a.extract_id = i.extract_id AND a.subscriber = i.subscriber \
LEFT JOIN extracts e ON e.extract_id = i.extract_id AND EXISTS (SELECT 1 FROM extract_attempts t \
     WHERE t.extract_id = i.extract_id AND t.subscriber = i.subscriber) \
LEFT JOIN LATERAL (SELECT obligation_id, due_date FROM \
     (SELECT obligation_id, due_date, kind, fulfilled_at, seq FROM obligations \
      WHERE extract_id = i.extract_id OFFSET 0) x \
     WHERE kind = 'ENERGY_EXTRACT' AND fulfilled_at IS NULL ORDER BY seq LIMIT 1) o ON true \
ORDER BY i.n";

const ACK_WRITES: &str = "\
WITH logged AS ( \
  INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash) \
  SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                       $6::text[], $7::text[])), \
acked AS ( \
  INSERT INTO extract_acks (extract_id, subscriber, acknowledged_at, receipt) \
  SELECT * FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::bytea[])), \
fulfilled AS ( \
  UPDATE obligations o SET status = u.status, fulfilled_at = u.at \
  FROM UNNEST($12::text[], $13::text[], $14::bigint[]) AS u(id, status, at) \
  WHERE o.obligation_id = u.id) \
SELECT 1";

/// Reads, decides and writes a run of acknowledgements, each of a different
/// (extract, subscriber): read, decide, write in one function, as for
/// submissions, so longer than a screen. The first acknowledgement of an extract from any
/// energy identity fulfils its obligation: later ones in the run find it
/// fulfilled, as they would have read it had they come alone.
pub async fn acknowledgements(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    run: &[AckJob],
) -> Result<Vec<Option<Recorded>>, StoreError> {
    let rows = sqlx::query(ACK_FACTS)
        .bind(run.iter().map(|a| a.extract_id.clone()).collect::<Vec<_>>())
        .bind(run.iter().map(|a| a.subscriber.clone()).collect::<Vec<_>>())
        .fetch_all(&mut *conn)
        .await?;
    let mut head = match rows.first() {
        Some(row) => match (row.try_get(4)?, row.try_get(5)?) {
            (Some(seq), Some(hash)) => Head { seq, hash },
            _ => Head::default(),
        },
        None => Head::default(),
    };
    let mut fulfilled = HashSet::new();
    let mut ledger = LedgerRows::default();
    let mut acks: (Vec<String>, Vec<String>, Vec<i64>, Vec<Vec<u8>>) = Default::default();
    let mut fulfils: (Vec<String>, Vec<&'static str>, Vec<i64>) = Default::default();
    let mut answers = Vec::with_capacity(run.len());
    for (job, row) in run.iter().zip(&rows) {
        let due: Option<&str> = row.try_get(1)?;
        let open = match (
            row.try_get::<Option<String>, _>(2)?,
            row.try_get::<Option<&str>, _>(3)?,
        ) {
            (Some(id), Some(due)) if !fulfilled.contains(&id) => Some(OpenObligation {
                obligation_id: id,
                due_date: parse_date(due)?,
            }),
            _ => None,
        };
        let facts = ExtractAckFacts {
            earlier_receipt: row.try_get(0)?,
            sent_due_date: due.map(parse_date).transpose()?,
            open_obligation: open,
        };
        answers.push(
            match decisions::decide_extract_ack(&job.extract_id, &job.subscriber, facts, now) {
                ExtractAckDecision::Repeat(receipt) => Some(Recorded::found(receipt)),
                ExtractAckDecision::NotSent => None,
                ExtractAckDecision::Acknowledge(ack) => {
                    let receipt = (job.build)(&ack.facts);
                    acks.0.push(job.extract_id.clone());
                    acks.1.push(job.subscriber.clone());
                    acks.2.push(micros(now));
                    acks.3.push(receipt.clone());
                    if let Some(fulfilment) = &ack.fulfils {
                        fulfilled.insert(fulfilment.obligation_id.clone());
                        fulfils.0.push(fulfilment.obligation_id.clone());
                        fulfils.1.push(fulfilment.status.as_str());
                        fulfils.2.push(micros(fulfilment.fulfilled_at));
                    }
                    let entries: Vec<_> = ack
                        .ledger_events(&receipt)
                        .iter()
                        .map(|event| head.append(event, now))
                        .collect();
                    let recorded =
                        Recorded::made(receipt, &entries, LedgerEvent::EXTRACT_ACKNOWLEDGED);
                    entries.into_iter().for_each(|entry| ledger.push(entry));
                    Some(recorded)
                }
            },
        );
    }
    if !acks.0.is_empty() {
        ledger
            .bind(sqlx::query(ACK_WRITES))
            .bind(acks.0)
            .bind(acks.1)
            .bind(acks.2)
            .bind(acks.3)
            .bind(fulfils.0)
            .bind(fulfils.1)
            .bind(fulfils.2)
            .execute(conn)
            .await?;
    }
    Ok(answers)
}

const SENDINGS_FACTS: &str = "\
SELECT COALESCE((SELECT MAX(attempt) FROM extract_attempts t \
                 WHERE t.extract_id = i.extract_id AND t.subscriber = i.subscriber), 0) \
FROM UNNEST($1::text[], $2::text[]) WITH ORDINALITY AS i(extract_id, subscriber, n) \
ORDER BY i.n";

const SENDINGS_WRITES: &str = "\
WITH logged AS ( \
  INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash) \
  SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[], \
                       $6::text[], $7::text[])) \
INSERT INTO extract_attempts (extract_id, subscriber, attempt, sent_at) \
SELECT * FROM UNNEST($8::text[], $9::text[], $10::bigint[], $11::bigint[])";

/// One job's sendings to record: see [`crate::store::Job::Attempts`].
pub struct SendingJob {
    pub extract_ids: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub subscriber: String,
    pub sent_at: DateTime<Utc>,
}

/// Records a run of jobs' sendings (each one's attempt numbers, in order)
/// in three statements, however many streams queued them.
pub async fn sendings(
    conn: &mut PgConnection,
    run: &[SendingJob],
) -> Result<Vec<Vec<u32>>, StoreError> {
    let pairs: Vec<(&str, &str)> = run
        .iter()
        .flat_map(|job| {
            job.extract_ids
                .iter()
                .map(|id| (id.as_str(), job.subscriber.as_str()))
        })
        .collect();
    let (ids, subscribers): (Vec<&str>, Vec<&str>) = pairs.iter().copied().unzip();
    let stored: Vec<i64> = sqlx::query_scalar(SENDINGS_FACTS)
        .bind(&ids)
        .bind(&subscribers)
        .fetch_all(&mut *conn)
        .await?;
    let mut head = ledger::head(conn).await?;
    let mut ledger = LedgerRows::default();
    // The latest attempt of each pair: one may be sent twice in a run.
    let mut latest: HashMap<(&str, &str), u32> = pairs
        .iter()
        .copied()
        .zip(stored.iter().map(|n| *n as u32))
        .collect();
    let (mut attempts, mut sent_at) = (Vec::with_capacity(ids.len()), Vec::new());
    let mut answers = Vec::with_capacity(run.len());
    for job in run {
        let mut numbers = Vec::with_capacity(job.extract_ids.len());
        for id in &job.extract_ids {
            let earlier = latest
                .entry((id.as_str(), job.subscriber.as_str()))
                .or_default();
            let sending = Sending::after(id, &job.subscriber, *earlier);
            *earlier = sending.attempt;
            ledger.push(head.append(&sending.event(), job.sent_at));
            attempts.push(i64::from(sending.attempt));
            sent_at.push(micros(job.sent_at));
            numbers.push(sending.attempt);
        }
        for (id, reason) in &job.failed {
            ledger.push(head.append(&Sending::failure(id, &job.subscriber, reason), job.sent_at));
        }
        answers.push(numbers);
    }
    ledger
        .bind(sqlx::query(SENDINGS_WRITES))
        .bind(&ids)
        .bind(&subscribers)
        .bind(attempts)
        .bind(sent_at)
        .execute(conn)
        .await?;
    Ok(answers)
}

/// Appends `events` after the head, on their own.
pub async fn append(
    conn: &mut PgConnection,
    events: &[LedgerEvent],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let mut head = ledger::head(conn).await?;
    let mut rows = LedgerRows::default();
    for event in events {
        rows.push(head.append(event, at));
    }
    rows.insert(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{filing::FilingKind, obligation::ObligationKind};

    /// The SQL above writes some names as literals: they must be the
    /// contract's.
    #[test]
    fn the_names_written_as_literals_are_the_contract_names() {
        assert!(SUBMISSION_FACTS.contains(&format!(
            "o.kind = '{}'",
            ObligationKind::FinanceForm.as_str()
        )));
        assert!(SUBMISSION_FACTS.contains(&format!(
            "kind = '{}'",
            FilingKind::QuarterlyReport.as_str()
        )));
        assert!(ACK_FACTS.contains(&format!(
            "kind = '{}'",
            ObligationKind::EnergyExtract.as_str()
        )));
        assert!(ACCEPTANCE_WRITES.contains(&format!("'{}'", RegisterStatus::Planned.as_str())));
        assert!(ACCEPTANCE_WRITES.contains(&format!("'{}'", RegisterStatus::Terminated.as_str())));
    }
}
