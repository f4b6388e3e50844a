//! What each change of state changes, decided by pure functions from named
//! facts the store read first: an accepted submission (register entry and
//! number, revision and what it supersedes, findings, obligations and their
//! due dates, the extract, the ledger entries), an energy acknowledgement,
//! a sending, a form 402 revision and its acknowledgement, and the overdue
//! scan. The store reads the facts, calls these, and writes what they
//! return; it decides nothing itself.

use std::collections::HashSet;

use chrono::{DateTime, NaiveDate, Utc};

use super::{
    Sha256Hex, deadlines,
    filing::{ActivityKind, DocumentKind, Filing, FilingKind},
    ip::IpBlock,
    ledger::LedgerEvent,
    obligation::{Obligation, ObligationKind, ObligationStatus},
    quantities::{FIRST_FORM_QUARTER, Quarter},
    register::{self, Assessment, FindingDraft, IpConflicts, RegisterChange, RegisterState},
};

/// Makes a new identifier with a prefix (`fil`, `ext`, `fnd`, `obl`); the
/// store passes one that makes UUIDv7s, tests one that counts.
pub trait NewIds {
    fn new_id(&mut self, prefix: &str) -> String;
}

impl<F: FnMut(&str) -> String> NewIds for F {
    fn new_id(&mut self, prefix: &str) -> String {
        self(prefix)
    }
}

/// What the gateway made for a submission when it took it in, before any
/// fact was read: the instant of receipt, the filing's id and, for a filing
/// that has one, its §6 extract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The caller's certificate identity.
    pub caller: String,
    /// SHA-256 of the request as received: a replay must match it.
    pub request_sha256: Sha256Hex,
    pub filing_id: String,
    pub received_at: DateTime<Utc>,
    pub extract: Option<BuiltExtract>,
}

/// §6 a filing's four-item extract, built before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltExtract {
    pub extract_id: String,
    pub due_date: NaiveDate,
    /// The extract (protobuf).
    pub body: Vec<u8>,
}

/// What an extract's builder is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractFacts {
    pub extract_id: String,
    pub filing_id: String,
    pub created_at: DateTime<Utc>,
    pub due_date: NaiveDate,
}

impl ExtractFacts {
    /// §6 an extract made at `received_at` is due 10 days after it.
    pub fn new(extract_id: String, filing_id: String, received_at: DateTime<Utc>) -> ExtractFacts {
        ExtractFacts {
            extract_id,
            filing_id,
            created_at: received_at,
            due_date: deadlines::energy_extract_due(deadlines::local_date(received_at)),
        }
    }
}

/// What the store read for a submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmissionFacts {
    /// The caller's earlier filing with the same idempotency key.
    pub earlier: Option<EarlierFiling>,
    /// The register entry of the filing's BIN/IIN.
    pub entry: Option<RegisterEntry>,
    /// The sequence number a new register entry takes (its number is made
    /// from it).
    pub next_register_seq: i64,
    /// §4 the current revision of the same person's report for the quarter.
    pub current_revision: Option<CurrentRevision>,
    /// §6-1 whether the quarter's FINANCE_FORM obligation exists already.
    pub finance_obligation_exists: bool,
    /// 3.9 / 4.11 the pool's blocks that overlap ranges of other persons.
    pub ip_conflicts: IpConflicts,
}

/// The filing an idempotency key was first used for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlierFiling {
    pub filing_id: String,
    pub request_sha256: String,
    pub receipt: Vec<u8>,
}

/// A register entry as the decisions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterEntry {
    pub register_number: String,
    pub state: RegisterState,
    /// The latest quarter reported.
    pub last_quarter: Option<Quarter>,
}

/// §4 the revision of a quarter's report that is current now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRevision {
    pub filing_id: String,
    pub revision: u32,
}

/// What a submission comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmissionDecision {
    /// The same caller, key and payload as before: the original receipt.
    Replay(Vec<u8>),
    /// The same caller and key with a different payload.
    KeyReused { filing_id: String },
    /// A new filing, and everything it changes.
    Accept(Box<Acceptance>),
}

/// What the receipt of an accepted filing is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub filing_id: String,
    pub received_at: DateTime<Utc>,
    pub register_number: Option<String>,
    pub assessment: Assessment,
    /// Each finding with its id.
    pub findings: Vec<(String, FindingDraft)>,
    /// §4 revision of a quarterly report; 0 for other kinds.
    pub revision: u32,
    /// §6 / §6-1 the obligations the filing created.
    pub obligations: Vec<Obligation>,
}

/// Everything an accepted filing changes, for the store to write in one
/// transaction with the filing's row and its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acceptance {
    pub accepted: Accepted,
    pub kind: FilingKind,
    pub bin_or_iin: String,
    pub caller: String,
    pub idempotency_key: String,
    pub request_sha256: Sha256Hex,
    pub quarter: Option<Quarter>,
    /// §4 the revision this one supersedes.
    pub supersedes: Option<String>,
    pub register: RegisterUpdate,
    /// 3.9 / 4.11 the BIN/IIN's IP ranges are replaced by these.
    pub ip_ranges: Option<Vec<IpBlock>>,
    /// §6 the extract, with the documents it references.
    pub extract: Option<NewExtract>,
}

/// §6 an extract to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExtract {
    pub extract_id: String,
    pub created_at: DateTime<Utc>,
    pub due_date: NaiveDate,
    pub body: Vec<u8>,
    /// The documents it references, each with the kind it is referenced as.
    pub documents: Vec<(Sha256Hex, DocumentKind)>,
}

/// How an accepted filing changes its BIN/IIN's register entry; every
/// change also sets the entry's `updated_at` to the time of receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterUpdate {
    Unchanged,
    /// §3 the first start notification of a BIN/IIN makes its entry, PLANNED.
    Create(NewRegisterEntry),
    /// §3 a terminated person notifies a new start: the entry is PLANNED
    /// again with the new notification's particulars.
    Restart {
        start_filing_id: String,
        name: String,
        legal_address: String,
        activity: ActivityKind,
        planned_start: NaiveDate,
        required_power_kw: u64,
    },
    /// §4 a report keeps the name and address current and moves the entry
    /// to `status` (OPERATING after the first report).
    Report {
        status: register::RegisterStatus,
        name: String,
        legal_address: String,
        last_quarter: Quarter,
    },
    /// §5 the activity ended.
    Terminate {
        activity_end: NaiveDate,
    },
}

/// A register entry to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRegisterEntry {
    pub seq: i64,
    pub register_number: String,
    pub name: String,
    pub legal_address: String,
    pub activity: ActivityKind,
    pub planned_start: NaiveDate,
    pub required_power_kw: u64,
}

/// The register number of the entry with sequence number `seq`.
pub fn register_number(seq: i64) -> String {
    format!("KZ-DM-{seq:06}")
}

/// Decides a valid filing received as `received`, from the facts read for
/// it. Findings and obligations take their ids from `ids`.
pub fn decide_submission(
    filing: &Filing,
    received: &Received,
    facts: SubmissionFacts,
    ids: &mut impl NewIds,
) -> SubmissionDecision {
    if let Some(earlier) = facts.earlier {
        return if earlier.request_sha256 == received.request_sha256.as_str() {
            SubmissionDecision::Replay(earlier.receipt)
        } else {
            SubmissionDecision::KeyReused {
                filing_id: earlier.filing_id,
            }
        };
    }
    let now = received.received_at;
    let filing_id = received.filing_id.clone();
    let state = facts.entry.as_ref().map(|entry| entry.state.clone());
    let assessment = register::assess(
        filing,
        deadlines::local_date(now),
        state.as_ref(),
        &facts.ip_conflicts,
    );
    let quarter = filing.quarter();
    let (revision, supersedes) = match (quarter, &facts.current_revision) {
        (None, _) => (0, None),
        (Some(_), None) => (1, None),
        (Some(_), Some(current)) => (current.revision + 1, Some(current.filing_id.clone())),
    };
    let (register, register_number) = register_update(filing, &assessment, &facts, &filing_id);
    let findings = assessment
        .findings
        .iter()
        .map(|finding| (ids.new_id("fnd"), finding.clone()))
        .collect();

    let (extract, obligations) = extract_and_obligations(filing, received, &facts, ids);
    SubmissionDecision::Accept(Box::new(Acceptance {
        accepted: Accepted {
            filing_id,
            received_at: now,
            register_number,
            assessment,
            findings,
            revision,
            obligations,
        },
        kind: filing.kind(),
        bin_or_iin: filing.id().to_string(),
        caller: received.caller.clone(),
        idempotency_key: filing.idempotency_key().as_str().to_owned(),
        request_sha256: received.request_sha256.clone(),
        quarter,
        supersedes,
        register,
        ip_ranges: filing.ip_pool().map(|pool| pool.blocks().to_vec()),
        extract,
    }))
}

/// §3–§5 how the filing changes its BIN/IIN's register entry, and the
/// entry's number after it (none for a person not in the register).
fn register_update(
    filing: &Filing,
    assessment: &Assessment,
    facts: &SubmissionFacts,
    filing_id: &str,
) -> (RegisterUpdate, Option<String>) {
    let number = facts.entry.as_ref().map(|e| e.register_number.clone());
    let update = match (filing, assessment.register) {
        (Filing::Start(start), RegisterChange::Create) => {
            let entry = NewRegisterEntry {
                seq: facts.next_register_seq,
                register_number: register_number(facts.next_register_seq),
                name: start.person.name.clone(),
                legal_address: start.person.legal_address.clone(),
                activity: start.person.activity,
                planned_start: start.planned_start,
                required_power_kw: start.required_power.value(),
            };
            let number = Some(entry.register_number.clone());
            return (RegisterUpdate::Create(entry), number);
        }
        (Filing::Start(start), RegisterChange::SetStatus(_)) => RegisterUpdate::Restart {
            start_filing_id: filing_id.to_owned(),
            name: start.person.name.clone(),
            legal_address: start.person.legal_address.clone(),
            activity: start.person.activity,
            planned_start: start.planned_start,
            required_power_kw: start.required_power.value(),
        },
        (Filing::Quarterly(report), change) => match &facts.entry {
            None => RegisterUpdate::Unchanged,
            Some(entry) => RegisterUpdate::Report {
                status: match change {
                    RegisterChange::SetStatus(status) => status,
                    _ => entry.state.status,
                },
                name: report.person.name.clone(),
                legal_address: report.person.legal_address.clone(),
                last_quarter: entry
                    .last_quarter
                    .map_or(report.quarter, |last| last.max(report.quarter)),
            },
        },
        (Filing::Termination(notice), RegisterChange::SetStatus(_)) => RegisterUpdate::Terminate {
            activity_end: notice.activity_end,
        },
        _ => RegisterUpdate::Unchanged,
    };
    (update, number)
}

/// §6 the four-item extract (if one was made) and its 10-day obligation;
/// §6-1 the quarter's form obligation, once per quarter.
fn extract_and_obligations(
    filing: &Filing,
    received: &Received,
    facts: &SubmissionFacts,
    ids: &mut impl NewIds,
) -> (Option<NewExtract>, Vec<Obligation>) {
    let now = received.received_at;
    let mut obligations = Vec::new();
    let extract = received.extract.as_ref().map(|signed| {
        obligations.push(Obligation::new(
            ids.new_id("obl"),
            ObligationKind::EnergyExtract,
            signed.due_date,
            Some(received.filing_id.clone()),
            Some(signed.extract_id.clone()),
            None,
            now,
        ));
        NewExtract {
            extract_id: signed.extract_id.clone(),
            created_at: now,
            due_date: signed.due_date,
            body: signed.body.clone(),
            documents: filing
                .documents()
                .iter()
                .map(|d| (d.sha256.clone(), d.kind))
                .collect(),
        }
    });
    // §6-1 a quarter before form 402's first has no form, so no obligation.
    if let Some(quarter) = filing.quarter()
        && quarter >= FIRST_FORM_QUARTER
        && !facts.finance_obligation_exists
    {
        obligations.push(Obligation::new(
            ids.new_id("obl"),
            ObligationKind::FinanceForm,
            deadlines::finance_form_due(quarter),
            None,
            None,
            Some(quarter),
            now,
        ));
    }
    (extract, obligations)
}

impl Acceptance {
    /// The ledger entries of the acceptance, given its signed receipt: the
    /// extract's creation, then the filing's (with the receipt's digest).
    pub fn ledger_events(&self, receipt: &[u8]) -> Vec<LedgerEvent> {
        let accepted = &self.accepted;
        let mut events = Vec::with_capacity(2);
        if let Some(extract) = &self.extract {
            events.push(LedgerEvent::ExtractCreated {
                extract_id: extract.extract_id.clone(),
                filing_id: accepted.filing_id.clone(),
                due_date: extract.due_date,
                extract_sha256: Sha256Hex::of(&extract.body),
            });
        }
        events.push(LedgerEvent::FilingAccepted {
            filing_id: accepted.filing_id.clone(),
            kind: self.kind,
            bin_or_iin: self.bin_or_iin.clone(),
            caller: self.caller.clone(),
            request_sha256: self.request_sha256.clone(),
            register_number: accepted.register_number.clone(),
            revision: accepted.revision,
            findings: accepted.findings.iter().map(|(_, f)| f.kind).collect(),
            receipt_sha256: Sha256Hex::of(receipt),
        });
        // An obligation that arose overdue is recorded so, as the scan
        // records one that becomes overdue.
        events.extend(
            accepted
                .obligations
                .iter()
                .filter(|o| o.status == ObligationStatus::Overdue)
                .map(|o| LedgerEvent::ObligationOverdue {
                    obligation_id: o.obligation_id.clone(),
                    kind: o.kind,
                    due_date: o.due_date,
                    filing_id: o.filing_id.clone(),
                    quarter: o.quarter,
                }),
        );
        events
    }
}

/// What earlier submissions of a run decided that a later one must see when
/// all were read from one snapshot, before any was written (PostgreSQL's
/// runs): the register numbers they took and the quarters whose form
/// obligation they made. Submissions of one run never share a caller's key,
/// a person or an IP range, so nothing else carries over.
#[derive(Debug, Default)]
pub struct RunState {
    next_register_seq: Option<i64>,
    finance_quarters: HashSet<Quarter>,
}

impl RunState {
    /// `facts`, read before the run, as they stand after the run so far.
    pub fn facts_now(
        &self,
        mut facts: SubmissionFacts,
        quarter: Option<Quarter>,
    ) -> SubmissionFacts {
        if let Some(next) = self.next_register_seq {
            facts.next_register_seq = facts.next_register_seq.max(next);
        }
        if quarter.is_some_and(|q| self.finance_quarters.contains(&q)) {
            facts.finance_obligation_exists = true;
        }
        facts
    }

    /// Takes note of what `decision` changes.
    pub fn record(&mut self, decision: &SubmissionDecision) {
        let SubmissionDecision::Accept(acceptance) = decision else {
            return;
        };
        if let RegisterUpdate::Create(entry) = &acceptance.register {
            self.next_register_seq = Some(entry.seq + 1);
        }
        for obligation in &acceptance.accepted.obligations {
            if let (ObligationKind::FinanceForm, Some(quarter)) =
                (obligation.kind, obligation.quarter)
            {
                self.finance_quarters.insert(quarter);
            }
        }
    }
}

/// What an acknowledgement's builder is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckFacts {
    pub acknowledged_at: DateTime<Utc>,
    pub due_date: NaiveDate,
}

/// An obligation not yet fulfilled, as an acknowledgement finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenObligation {
    pub obligation_id: String,
    pub due_date: NaiveDate,
}

/// An obligation met by an act at `fulfilled_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fulfilment {
    pub obligation_id: String,
    pub kind: ObligationKind,
    pub due_date: NaiveDate,
    pub status: ObligationStatus,
    pub fulfilled_at: DateTime<Utc>,
}

impl Fulfilment {
    fn new(open: OpenObligation, kind: ObligationKind, at: DateTime<Utc>) -> Fulfilment {
        Fulfilment {
            status: ObligationStatus::fulfilled_on(deadlines::local_date(at), open.due_date),
            obligation_id: open.obligation_id,
            kind,
            due_date: open.due_date,
            fulfilled_at: at,
        }
    }

    fn event(&self) -> LedgerEvent {
        LedgerEvent::ObligationFulfilled {
            obligation_id: self.obligation_id.clone(),
            kind: self.kind,
            due_date: self.due_date,
            status: self.status,
        }
    }
}

/// What the store read for an energy subscriber's acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExtractAckFacts {
    /// The receipt of this subscriber's earlier acknowledgement.
    pub earlier_receipt: Option<Vec<u8>>,
    /// The extract's due date, if it was ever sent to this subscriber.
    pub sent_due_date: Option<NaiveDate>,
    /// §6 the extract's ENERGY_EXTRACT obligation, if still unfulfilled.
    pub open_obligation: Option<OpenObligation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtractAckDecision {
    /// Acknowledged before: the first receipt again.
    Repeat(Vec<u8>),
    /// The extract was never sent to this subscriber.
    NotSent,
    Acknowledge(ExtractAcknowledgement),
}

/// §6 a first acknowledgement: the first from any energy identity fulfils
/// the extract's obligation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractAcknowledgement {
    pub extract_id: String,
    pub subscriber: String,
    pub facts: AckFacts,
    pub fulfils: Option<Fulfilment>,
}

pub fn decide_extract_ack(
    extract_id: &str,
    subscriber: &str,
    facts: ExtractAckFacts,
    now: DateTime<Utc>,
) -> ExtractAckDecision {
    if let Some(receipt) = facts.earlier_receipt {
        return ExtractAckDecision::Repeat(receipt);
    }
    let Some(due_date) = facts.sent_due_date else {
        return ExtractAckDecision::NotSent;
    };
    ExtractAckDecision::Acknowledge(ExtractAcknowledgement {
        extract_id: extract_id.to_owned(),
        subscriber: subscriber.to_owned(),
        facts: AckFacts {
            acknowledged_at: now,
            due_date,
        },
        fulfils: facts
            .open_obligation
            .map(|open| Fulfilment::new(open, ObligationKind::EnergyExtract, now)),
    })
}

impl ExtractAcknowledgement {
    /// The ledger entries, given the signed receipt.
    pub fn ledger_events(&self, receipt: &[u8]) -> Vec<LedgerEvent> {
        let mut events = vec![LedgerEvent::ExtractAcknowledged {
            extract_id: self.extract_id.clone(),
            subscriber: self.subscriber.clone(),
            receipt_sha256: Sha256Hex::of(receipt),
        }];
        events.extend(self.fulfils.iter().map(Fulfilment::event));
        events
    }
}

/// §6 one sending of an extract to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sending {
    pub extract_id: String,
    pub subscriber: String,
    /// 1 for the first sending to this subscriber.
    pub attempt: u32,
}

impl Sending {
    /// The sending after `earlier` ones.
    pub fn after(extract_id: &str, subscriber: &str, earlier: u32) -> Sending {
        Sending {
            extract_id: extract_id.to_owned(),
            subscriber: subscriber.to_owned(),
            attempt: earlier + 1,
        }
    }

    pub fn event(&self) -> LedgerEvent {
        LedgerEvent::ExtractSent {
            extract_id: self.extract_id.clone(),
            subscriber: self.subscriber.clone(),
            attempt: self.attempt,
        }
    }

    /// The record of an attempt that sent nothing: no attempt number is
    /// taken, and the extract stays pending.
    pub fn failure(extract_id: &str, subscriber: &str, reason: &str) -> LedgerEvent {
        LedgerEvent::ExtractSendFailed {
            extract_id: extract_id.to_owned(),
            subscriber: subscriber.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// What a form revision's builder is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormFacts {
    pub revision: u32,
    pub compiled_at: DateTime<Utc>,
    pub due_date: NaiveDate,
}

/// The latest stored revision of a quarter's form 402.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestRevision {
    pub revision: u32,
    /// Digest of the rows and totals only (not revision or time).
    pub content_sha256: String,
    /// The signed form.
    pub form: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormDecision {
    /// The content is what the latest revision holds: that one is pulled.
    Unchanged { revision: u32, form: Vec<u8> },
    /// §6-1 a report arrived since: a new revision.
    Publish(FormFacts),
}

/// §6-1 whether compiling the form at `now` makes a new revision.
pub fn decide_form(
    quarter: Quarter,
    content_sha256: &str,
    latest: Option<LatestRevision>,
    now: DateTime<Utc>,
) -> FormDecision {
    match latest {
        Some(latest) if latest.content_sha256 == content_sha256 => FormDecision::Unchanged {
            revision: latest.revision,
            form: latest.form,
        },
        latest => FormDecision::Publish(FormFacts {
            revision: latest.map_or(1, |l| l.revision + 1),
            compiled_at: now,
            due_date: deadlines::finance_form_due(quarter),
        }),
    }
}

/// What the store read for the finance ministry's acknowledgement.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormAckFacts {
    /// The revision's body digest, if the revision exists.
    pub body_sha256: Option<String>,
    /// The receipt of an earlier acknowledgement of it.
    pub earlier_receipt: Option<Vec<u8>>,
    /// §6-1 the quarter's FINANCE_FORM obligations still unfulfilled.
    pub open_obligations: Vec<OpenObligation>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormAckDecision {
    UnknownRevision,
    DigestMismatch { expected: String },
    Repeat(Vec<u8>),
    Acknowledge(FormAcknowledgement),
}

/// §6-1 a first acknowledgement of a revision: it fulfils the quarter's
/// form obligation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormAcknowledgement {
    pub quarter: Quarter,
    pub revision: u32,
    pub body_sha256: String,
    pub facts: AckFacts,
    pub fulfils: Vec<Fulfilment>,
}

pub fn decide_form_ack(
    quarter: Quarter,
    revision: u32,
    body_sha256: &str,
    facts: FormAckFacts,
    now: DateTime<Utc>,
) -> FormAckDecision {
    let Some(expected) = facts.body_sha256 else {
        return FormAckDecision::UnknownRevision;
    };
    if expected != body_sha256.to_ascii_lowercase() {
        return FormAckDecision::DigestMismatch { expected };
    }
    if let Some(receipt) = facts.earlier_receipt {
        return FormAckDecision::Repeat(receipt);
    }
    FormAckDecision::Acknowledge(FormAcknowledgement {
        quarter,
        revision,
        body_sha256: expected,
        facts: AckFacts {
            acknowledged_at: now,
            due_date: deadlines::finance_form_due(quarter),
        },
        fulfils: facts
            .open_obligations
            .into_iter()
            .map(|open| Fulfilment::new(open, ObligationKind::FinanceForm, now))
            .collect(),
    })
}

impl FormAcknowledgement {
    /// The entries the acknowledgement appends; `receipt` is the
    /// acknowledgement receipt handed back, tied to its entry by digest.
    pub fn ledger_events(&self, receipt: &[u8]) -> Vec<LedgerEvent> {
        let mut events = vec![LedgerEvent::FormAcknowledged {
            quarter: self.quarter,
            revision: self.revision,
            body_sha256: self.body_sha256.clone(),
            receipt_sha256: Sha256Hex::of(receipt),
        }];
        events.extend(self.fulfils.iter().map(Fulfilment::event));
        events
    }
}

/// The overdue scan: of the PENDING obligations given, those overdue on
/// `today`, each now OVERDUE, with its ledger entry.
pub fn overdue(today: NaiveDate, pending: Vec<Obligation>) -> Vec<(Obligation, LedgerEvent)> {
    pending
        .into_iter()
        .filter(|o| o.status == ObligationStatus::Pending)
        .filter(|o| ObligationStatus::is_overdue(today, o.due_date))
        .map(|mut obligation| {
            obligation.status = ObligationStatus::Overdue;
            let event = LedgerEvent::ObligationOverdue {
                obligation_id: obligation.obligation_id.clone(),
                kind: obligation.kind,
                due_date: obligation.due_date,
                filing_id: obligation.filing_id.clone(),
                quarter: obligation.quarter,
            };
            (obligation, event)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::register::IpConflict;
    use crate::domain::{
        filing::{
            BankDetails, DocumentRef, IdempotencyKey, Person, QuarterlyReport, StartNotification,
            TerminationNotice,
        },
        identifiers::{Bic, BinOrIin, Iban},
        ip::IpPool,
        quantities::{Kilowatts, Tiyn, WattHours},
        register::{FindingKind, RegisterStatus},
    };

    const BIN: &str = "210240001236";

    fn at(rfc3339: &str) -> DateTime<Utc> {
        rfc3339.parse().unwrap()
    }

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn quarter(year: i32, q: u32) -> Quarter {
        Quarter::new(year, q).unwrap()
    }

    /// Ids `fnd-1`, `obl-2`, … in the order asked.
    fn counting() -> impl FnMut(&str) -> String {
        let mut n = 0;
        move |prefix: &str| {
            n += 1;
            format!("{prefix}-{n}")
        }
    }

    fn person() -> Person {
        Person {
            name: "TOO Qazaq Hash".into(),
            id: BinOrIin::parse(BIN).unwrap(),
            legal_address: "Astana, Mangilik El 55".into(),
            phones: vec![],
            emails: vec![],
            activity: ActivityKind::Mining,
        }
    }

    fn document() -> DocumentRef {
        DocumentRef {
            kind: DocumentKind::Residency,
            sha256: Sha256Hex::of(b"residency"),
        }
    }

    fn start(planned: &str) -> Filing {
        Filing::Start(StartNotification {
            person: person(),
            bank: BankDetails {
                iban: Iban::parse("KZ75125KZT1001300335").unwrap(),
                bic: Bic::parse("HSBKKZKX").unwrap(),
                bank_name: "Halyk".into(),
            },
            required_power: Kilowatts::new(3600).unwrap(),
            planned_jobs: 12,
            planned_investment: Tiyn::new(1_000_000).unwrap(),
            ip_pool: IpPool::parse(&["95.56.0.0/16"]).unwrap(),
            documents: vec![document()],
            data_centres: vec![],
            planned_start: date(planned),
            idempotency_key: IdempotencyKey::parse("s-1").unwrap(),
        })
    }

    fn report(q: Quarter) -> Filing {
        Filing::Quarterly(QuarterlyReport {
            person: Person {
                name: "TOO Qazaq Hash (renamed)".into(),
                ..person()
            },
            quarter: q,
            consumption: WattHours(5_000_000),
            equipment: vec![],
            jobs: 12,
            investment_rest_of_year: Tiyn::new(0).unwrap(),
            investment_next_12_months: Tiyn::new(0).unwrap(),
            ip_pool: IpPool::parse(&["95.56.0.0/16"]).unwrap(),
            documents: vec![document()],
            data_centres: vec![],
            idempotency_key: IdempotencyKey::parse("q-1").unwrap(),
        })
    }

    fn termination(end: &str) -> Filing {
        Filing::Termination(TerminationNotice {
            name: "TOO Qazaq Hash".into(),
            id: BinOrIin::parse(BIN).unwrap(),
            activity_end: date(end),
            idempotency_key: IdempotencyKey::parse("t-1").unwrap(),
        })
    }

    fn received(instant: &str, with_extract: bool) -> Received {
        let received_at = at(instant);
        Received {
            caller: "urn:minegate:authority".into(),
            request_sha256: Sha256Hex::of(b"request"),
            filing_id: "fil-new".into(),
            received_at,
            extract: with_extract.then(|| BuiltExtract {
                extract_id: "ext-new".into(),
                due_date: deadlines::energy_extract_due(deadlines::local_date(received_at)),
                body: b"signed extract".to_vec(),
            }),
        }
    }

    fn entry(status: RegisterStatus, last_quarter: Option<Quarter>) -> RegisterEntry {
        RegisterEntry {
            register_number: "KZ-DM-000007".into(),
            state: RegisterState {
                status,
                activity_end: None,
            },
            last_quarter,
        }
    }

    fn accept(decision: SubmissionDecision) -> Acceptance {
        match decision {
            SubmissionDecision::Accept(acceptance) => *acceptance,
            other => panic!("expected an acceptance, got {other:?}"),
        }
    }

    #[test]
    fn a_first_start_notification_creates_the_entry_its_extract_and_one_obligation() {
        let facts = SubmissionFacts {
            next_register_seq: 42,
            ..SubmissionFacts::default()
        };
        let received = received("2026-03-20T06:00:00Z", true);
        let acceptance = accept(decide_submission(
            &start("2026-05-01"),
            &received,
            facts,
            &mut counting(),
        ));
        assert_eq!(
            acceptance.register,
            RegisterUpdate::Create(NewRegisterEntry {
                seq: 42,
                register_number: "KZ-DM-000042".into(),
                name: "TOO Qazaq Hash".into(),
                legal_address: "Astana, Mangilik El 55".into(),
                activity: ActivityKind::Mining,
                planned_start: date("2026-05-01"),
                required_power_kw: 3600,
            })
        );
        let accepted = &acceptance.accepted;
        assert_eq!(accepted.register_number.as_deref(), Some("KZ-DM-000042"));
        assert_eq!((accepted.revision, accepted.findings.len()), (0, 0));
        // §3 due 30 days before the planned start; §6 the extract 10 days
        // after receipt (2026-03-20 in Almaty).
        assert_eq!(accepted.assessment.due_date, date("2026-04-01"));
        assert_eq!(
            accepted.obligations,
            vec![Obligation::new(
                "obl-1".into(),
                ObligationKind::EnergyExtract,
                date("2026-03-30"),
                Some("fil-new".into()),
                Some("ext-new".into()),
                None,
                at("2026-03-20T06:00:00Z"),
            )]
        );
        let extract = acceptance.extract.as_ref().unwrap();
        assert_eq!(
            extract.documents,
            vec![(Sha256Hex::of(b"residency"), DocumentKind::Residency)]
        );
        assert_eq!(
            acceptance.ip_ranges.as_ref().unwrap()[0].cidr,
            "95.56.0.0/16"
        );
        assert_eq!(acceptance.supersedes, None);
        let events = acceptance.ledger_events(b"receipt");
        assert_eq!(
            events.iter().map(LedgerEvent::kind).collect::<Vec<_>>(),
            ["EXTRACT_CREATED", "FILING_ACCEPTED"]
        );
        assert_eq!(
            events[1],
            LedgerEvent::FilingAccepted {
                filing_id: "fil-new".into(),
                kind: FilingKind::StartNotification,
                bin_or_iin: BIN.into(),
                caller: "urn:minegate:authority".into(),
                request_sha256: Sha256Hex::of(b"request"),
                register_number: Some("KZ-DM-000042".into()),
                revision: 0,
                findings: vec![],
                receipt_sha256: Sha256Hex::of(b"receipt"),
            }
        );
    }

    #[test]
    fn the_same_key_replays_the_receipt_or_is_refused_with_another_payload() {
        let earlier = |digest: &Sha256Hex| SubmissionFacts {
            earlier: Some(EarlierFiling {
                filing_id: "fil-1".into(),
                request_sha256: digest.to_string(),
                receipt: b"the first receipt".to_vec(),
            }),
            ..SubmissionFacts::default()
        };
        let received = received("2026-03-20T06:00:00Z", true);
        assert_eq!(
            decide_submission(
                &start("2026-05-01"),
                &received,
                earlier(&Sha256Hex::of(b"request")),
                &mut counting()
            ),
            SubmissionDecision::Replay(b"the first receipt".to_vec())
        );
        assert_eq!(
            decide_submission(
                &start("2026-05-01"),
                &received,
                earlier(&Sha256Hex::of(b"another request")),
                &mut counting()
            ),
            SubmissionDecision::KeyReused {
                filing_id: "fil-1".into()
            }
        );
    }

    #[test]
    fn a_refiled_quarter_supersedes_the_current_revision_and_keeps_the_latest_quarter() {
        let facts = SubmissionFacts {
            entry: Some(entry(RegisterStatus::Operating, Some(quarter(2026, 2)))),
            current_revision: Some(CurrentRevision {
                filing_id: "fil-r2".into(),
                revision: 2,
            }),
            finance_obligation_exists: true,
            ..SubmissionFacts::default()
        };
        let acceptance = accept(decide_submission(
            &report(quarter(2026, 1)),
            &received("2026-04-08T06:00:00Z", true),
            facts,
            &mut counting(),
        ));
        assert_eq!(acceptance.accepted.revision, 3);
        assert_eq!(acceptance.supersedes.as_deref(), Some("fil-r2"));
        assert_eq!(
            acceptance.register,
            RegisterUpdate::Report {
                status: RegisterStatus::Operating,
                name: "TOO Qazaq Hash (renamed)".into(),
                legal_address: "Astana, Mangilik El 55".into(),
                // Q1 re-filed after Q2 was reported: Q2 stays the latest.
                last_quarter: quarter(2026, 2),
            }
        );
        // The quarter's form obligation exists: only the extract's is made.
        assert_eq!(
            acceptance
                .accepted
                .obligations
                .iter()
                .map(|o| o.kind)
                .collect::<Vec<_>>(),
            [ObligationKind::EnergyExtract]
        );
        assert_eq!(acceptance.quarter, Some(quarter(2026, 1)));
    }

    #[test]
    fn a_first_report_makes_the_entry_operating_and_the_quarters_form_obligation() {
        let facts = SubmissionFacts {
            entry: Some(entry(RegisterStatus::Planned, None)),
            ..SubmissionFacts::default()
        };
        let acceptance = accept(decide_submission(
            &report(quarter(2026, 1)),
            &received("2026-04-08T06:00:00Z", true),
            facts,
            &mut counting(),
        ));
        assert_eq!(acceptance.accepted.revision, 1);
        assert_eq!(
            acceptance.register,
            RegisterUpdate::Report {
                status: RegisterStatus::Operating,
                name: "TOO Qazaq Hash (renamed)".into(),
                legal_address: "Astana, Mangilik El 55".into(),
                last_quarter: quarter(2026, 1),
            }
        );
        let finance = &acceptance.accepted.obligations[1];
        assert_eq!(
            (
                finance.kind,
                finance.due_date,
                finance.quarter,
                finance.filing_id.as_ref()
            ),
            (
                ObligationKind::FinanceForm,
                date("2026-05-15"),
                Some(quarter(2026, 1)),
                None
            )
        );
        assert_eq!(finance.obligation_id, "obl-2");
    }

    #[test]
    fn an_unregistered_late_report_with_an_ip_conflict_is_accepted_with_its_findings() {
        let facts = SubmissionFacts {
            ip_conflicts: IpConflicts {
                named: vec![IpConflict {
                    cidr: "95.56.0.0/16".into(),
                    other_cidr: "95.56.128.0/17".into(),
                    other_bin_or_iin: "990240000013".into(),
                }],
                more: 0,
            },
            ..SubmissionFacts::default()
        };
        let acceptance = accept(decide_submission(
            &report(quarter(2026, 1)),
            &received("2026-04-13T06:00:00Z", false),
            facts,
            &mut counting(),
        ));
        assert_eq!(acceptance.register, RegisterUpdate::Unchanged);
        assert_eq!(acceptance.accepted.register_number, None);
        assert_eq!(
            acceptance
                .accepted
                .findings
                .iter()
                .map(|(id, f)| (id.as_str(), f.kind, f.days))
                .collect::<Vec<_>>(),
            [
                ("fnd-1", FindingKind::LateQuarterlyReport, 3),
                ("fnd-2", FindingKind::UnregisteredFiler, 0),
                ("fnd-3", FindingKind::IpPoolConflict, 0),
            ]
        );
        // No extract was made for it here: only the form obligation.
        assert_eq!(acceptance.extract, None);
        assert_eq!(acceptance.accepted.obligations.len(), 1);
    }

    #[test]
    fn a_termination_ends_the_entry_and_a_new_start_after_it_restarts_it() {
        let terminated = accept(decide_submission(
            &termination("2026-06-25"),
            &received("2026-07-01T06:00:00Z", false),
            SubmissionFacts {
                entry: Some(entry(RegisterStatus::Operating, None)),
                ..SubmissionFacts::default()
            },
            &mut counting(),
        ));
        assert_eq!(
            terminated.register,
            RegisterUpdate::Terminate {
                activity_end: date("2026-06-25")
            }
        );
        assert_eq!(terminated.ip_ranges, None);
        assert_eq!(terminated.accepted.obligations, vec![]);
        let restarted = accept(decide_submission(
            &start("2026-09-01"),
            &received("2026-07-20T06:00:00Z", true),
            SubmissionFacts {
                entry: Some(entry(RegisterStatus::Terminated, None)),
                next_register_seq: 99,
                ..SubmissionFacts::default()
            },
            &mut counting(),
        ));
        assert_eq!(
            restarted.register,
            RegisterUpdate::Restart {
                start_filing_id: "fil-new".into(),
                name: "TOO Qazaq Hash".into(),
                legal_address: "Astana, Mangilik El 55".into(),
                activity: ActivityKind::Mining,
                planned_start: date("2026-09-01"),
                required_power_kw: 3600,
            }
        );
        // The entry keeps its number.
        assert_eq!(
            restarted.accepted.register_number.as_deref(),
            Some("KZ-DM-000007")
        );
    }

    #[test]
    fn a_run_carries_register_numbers_and_form_obligations_to_later_submissions() {
        let mut run = RunState::default();
        let read = SubmissionFacts {
            next_register_seq: 5,
            ..SubmissionFacts::default()
        };
        let first = decide_submission(
            &start("2026-05-01"),
            &received("2026-03-20T06:00:00Z", true),
            run.facts_now(read.clone(), None),
            &mut counting(),
        );
        run.record(&first);
        // Read before the run, the next number is still 5: the run says 6.
        assert_eq!(run.facts_now(read.clone(), None).next_register_seq, 6);
        let q1 = quarter(2026, 1);
        let report = decide_submission(
            &report(q1),
            &received("2026-04-08T06:00:00Z", true),
            run.facts_now(read.clone(), Some(q1)),
            &mut counting(),
        );
        assert_eq!(accept(report.clone()).accepted.obligations.len(), 2);
        run.record(&report);
        assert!(
            run.facts_now(read.clone(), Some(q1))
                .finance_obligation_exists
        );
        assert!(
            !run.facts_now(read, Some(quarter(2026, 2)))
                .finance_obligation_exists
        );
    }

    #[test]
    fn an_acknowledgement_fulfils_on_time_or_late_and_a_repeat_returns_the_first_receipt() {
        let open = |due: &str| ExtractAckFacts {
            sent_due_date: Some(date(due)),
            open_obligation: Some(OpenObligation {
                obligation_id: "obl-1".into(),
                due_date: date(due),
            }),
            ..ExtractAckFacts::default()
        };
        // 2026-03-30T20:00Z is already 31 March in Almaty (UTC+5).
        let late = at("2026-03-30T20:00:00Z");
        let ExtractAckDecision::Acknowledge(ack) =
            decide_extract_ack("ext-1", "urn:energy", open("2026-03-30"), late)
        else {
            panic!("a first acknowledgement");
        };
        assert_eq!(
            ack.fulfils,
            Some(Fulfilment {
                obligation_id: "obl-1".into(),
                kind: ObligationKind::EnergyExtract,
                due_date: date("2026-03-30"),
                status: ObligationStatus::FulfilledLate,
                fulfilled_at: late,
            })
        );
        assert_eq!(
            ack.facts,
            AckFacts {
                acknowledged_at: late,
                due_date: date("2026-03-30")
            }
        );
        assert_eq!(
            ack.ledger_events(b"ack receipt")
                .iter()
                .map(LedgerEvent::kind)
                .collect::<Vec<_>>(),
            ["EXTRACT_ACKNOWLEDGED", "OBLIGATION_FULFILLED"]
        );
        let ExtractAckDecision::Acknowledge(on_time) = decide_extract_ack(
            "ext-1",
            "urn:energy",
            open("2026-03-30"),
            at("2026-03-30T18:59:59Z"),
        ) else {
            panic!("a first acknowledgement");
        };
        assert_eq!(on_time.fulfils.unwrap().status, ObligationStatus::Fulfilled);
        assert_eq!(
            decide_extract_ack(
                "ext-1",
                "urn:energy",
                ExtractAckFacts {
                    earlier_receipt: Some(b"first".to_vec()),
                    ..open("2026-03-30")
                },
                late
            ),
            ExtractAckDecision::Repeat(b"first".to_vec())
        );
        assert_eq!(
            decide_extract_ack("ext-1", "urn:energy", ExtractAckFacts::default(), late),
            ExtractAckDecision::NotSent
        );
    }

    #[test]
    fn a_sending_counts_on_from_the_earlier_ones() {
        let sending = Sending::after("ext-1", "urn:energy", 2);
        assert_eq!(sending.attempt, 3);
        assert_eq!(
            sending.event(),
            LedgerEvent::ExtractSent {
                extract_id: "ext-1".into(),
                subscriber: "urn:energy".into(),
                attempt: 3
            }
        );
    }

    #[test]
    fn a_form_with_new_content_is_the_next_revision_and_unchanged_content_the_same() {
        let q1 = quarter(2026, 1);
        let now = at("2026-05-02T06:00:00Z");
        let latest = LatestRevision {
            revision: 2,
            content_sha256: "aaa".into(),
            form: b"form r2".to_vec(),
        };
        assert_eq!(
            decide_form(q1, "aaa", Some(latest.clone()), now),
            FormDecision::Unchanged {
                revision: 2,
                form: b"form r2".to_vec()
            }
        );
        let next = FormFacts {
            revision: 3,
            compiled_at: now,
            due_date: date("2026-05-15"),
        };
        assert_eq!(
            decide_form(q1, "bbb", Some(latest), now),
            FormDecision::Publish(next.clone())
        );
        assert_eq!(
            decide_form(q1, "bbb", None, now),
            FormDecision::Publish(FormFacts {
                revision: 1,
                ..next
            })
        );
    }

    #[test]
    fn a_form_acknowledgement_checks_the_digest_and_fulfils_the_quarters_obligation() {
        let q1 = quarter(2026, 1);
        let facts = FormAckFacts {
            body_sha256: Some("abc".into()),
            earlier_receipt: None,
            open_obligations: vec![OpenObligation {
                obligation_id: "obl-9".into(),
                due_date: date("2026-05-15"),
            }],
        };
        let now = at("2026-05-10T06:00:00Z");
        assert_eq!(
            decide_form_ack(q1, 1, "abc", FormAckFacts::default(), now),
            FormAckDecision::UnknownRevision
        );
        assert_eq!(
            decide_form_ack(q1, 1, "abd", facts.clone(), now),
            FormAckDecision::DigestMismatch {
                expected: "abc".into()
            }
        );
        let FormAckDecision::Acknowledge(ack) = decide_form_ack(q1, 1, "ABC", facts.clone(), now)
        else {
            panic!("a first acknowledgement (digests compare case-blind)");
        };
        assert_eq!(ack.facts.due_date, date("2026-05-15"));
        assert_eq!(ack.fulfils[0].status, ObligationStatus::Fulfilled);
        assert_eq!(
            ack.ledger_events(b"form ack receipt")[0],
            LedgerEvent::FormAcknowledged {
                quarter: q1,
                revision: 1,
                body_sha256: "abc".into(),
                receipt_sha256: Sha256Hex::of(b"form ack receipt"),
            }
        );
        assert_eq!(
            decide_form_ack(
                q1,
                1,
                "abc",
                FormAckFacts {
                    earlier_receipt: Some(b"first".to_vec()),
                    ..facts
                },
                now
            ),
            FormAckDecision::Repeat(b"first".to_vec())
        );
    }

    #[test]
    fn the_overdue_scan_marks_pending_obligations_past_their_date_only() {
        let made = at("2026-03-20T06:00:00Z");
        let due_on = |id: &str, due: &str| {
            Obligation::new(
                id.into(),
                ObligationKind::EnergyExtract,
                date(due),
                Some("fil-1".into()),
                None,
                None,
                made,
            )
        };
        let fulfilled = Obligation {
            status: ObligationStatus::Fulfilled,
            ..due_on("obl-3", "2026-03-01")
        };
        let marked = overdue(
            date("2026-03-31"),
            vec![
                due_on("obl-1", "2026-03-30"),
                due_on("obl-2", "2026-03-31"),
                fulfilled,
            ],
        );
        assert_eq!(marked.len(), 1);
        let (obligation, event) = &marked[0];
        assert_eq!(
            (obligation.obligation_id.as_str(), obligation.status),
            ("obl-1", ObligationStatus::Overdue)
        );
        assert_eq!(
            event.payload(),
            r#"{"due_date":"2026-03-30","filing_id":"fil-1","kind":"ENERGY_EXTRACT","obligation_id":"obl-1","quarter":null}"#
        );
    }
}
