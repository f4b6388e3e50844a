//! The tamper-evident ledger: every state change appends an entry in the same
//! transaction, `hash = sha256(prev_hash ‖ canonical entry)`. The entries are
//! typed ([`LedgerEvent`]): one variant per kind of state change, each with
//! its payload's fields. Verification recomputes the chain and names the
//! first entry that does not match.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::json;

use super::{
    Sha256Hex,
    filing::FilingKind,
    hex,
    obligation::{ObligationKind, ObligationStatus},
    quantities::Quarter,
    register::FindingKind,
};

/// A state change, as the ledger records it. The payload is the variant's
/// fields as JSON with sorted keys ([`LedgerEvent::payload`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerEvent {
    /// A document's bytes were stored (content-addressed).
    DocumentStored {
        sha256: Sha256Hex,
        media_type: String,
        size_bytes: u64,
    },
    /// §3–§5 a filing was accepted; its receipt's digest ties the receipt
    /// handed out to this entry.
    FilingAccepted {
        filing_id: String,
        kind: FilingKind,
        bin_or_iin: String,
        caller: String,
        request_sha256: Sha256Hex,
        register_number: Option<String>,
        revision: u32,
        findings: Vec<FindingKind>,
        receipt_sha256: Sha256Hex,
    },
    /// §6 the four-item extract of a filing was made.
    ExtractCreated {
        extract_id: String,
        filing_id: String,
        due_date: NaiveDate,
        extract_sha256: Sha256Hex,
    },
    /// §6 an extract was sent to a subscriber (its `attempt`-th sending).
    ExtractSent {
        extract_id: String,
        subscriber: String,
        attempt: u32,
    },
    /// §6 an extract could not be sent to a subscriber: nothing left the
    /// gateway (e.g. the extract with its evidence is larger than a message
    /// may be). The extract stays pending and its obligation open.
    ExtractSendFailed {
        extract_id: String,
        subscriber: String,
        reason: String,
    },
    /// §6 a subscriber acknowledged an extract (the first time).
    ExtractAcknowledged {
        extract_id: String,
        subscriber: String,
        receipt_sha256: Sha256Hex,
    },
    /// §6 / §6-1 an obligation was met, on time or late.
    ObligationFulfilled {
        obligation_id: String,
        kind: ObligationKind,
        due_date: NaiveDate,
        status: ObligationStatus,
    },
    /// An obligation's due date passed unmet.
    ObligationOverdue {
        obligation_id: String,
        kind: ObligationKind,
        due_date: NaiveDate,
        filing_id: Option<String>,
        quarter: Option<Quarter>,
    },
    /// §6-1 a new revision of form 402 for a quarter was compiled.
    FormRevisionPublished {
        quarter: Quarter,
        revision: u32,
        body_sha256: String,
        reports: usize,
    },
    /// §6-1 the finance ministry pulled a revision.
    FormPulled { quarter: Quarter, revision: u32 },
    /// §6-1 the finance ministry acknowledged a revision by its digest; the
    /// acknowledgement receipt's digest ties it to this entry (entries
    /// written before release 0.3 have none).
    FormAcknowledged {
        quarter: Quarter,
        revision: u32,
        body_sha256: String,
        receipt_sha256: Sha256Hex,
    },
}

impl LedgerEvent {
    /// The kind of the entry that records a filing's acceptance and its receipt.
    pub const FILING_ACCEPTED: &'static str = "FILING_ACCEPTED";
    /// The kind of the entry that records an extract and its bytes.
    pub const EXTRACT_CREATED: &'static str = "EXTRACT_CREATED";
    /// The kind of the entry that records an extract's first acknowledgement.
    pub const EXTRACT_ACKNOWLEDGED: &'static str = "EXTRACT_ACKNOWLEDGED";
    /// The kind of the entry that records a sending of an extract.
    pub const EXTRACT_SENT: &'static str = "EXTRACT_SENT";
    /// The kinds of the entries of form 402.
    pub const FORM_REVISION_PUBLISHED: &'static str = "FORM_REVISION_PUBLISHED";
    pub const FORM_PULLED: &'static str = "FORM_PULLED";
    pub const FORM_ACKNOWLEDGED: &'static str = "FORM_ACKNOWLEDGED";

    /// The entry's kind as stored.
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerEvent::DocumentStored { .. } => "DOCUMENT_STORED",
            LedgerEvent::FilingAccepted { .. } => Self::FILING_ACCEPTED,
            LedgerEvent::ExtractCreated { .. } => Self::EXTRACT_CREATED,
            LedgerEvent::ExtractSent { .. } => Self::EXTRACT_SENT,
            LedgerEvent::ExtractSendFailed { .. } => "EXTRACT_SEND_FAILED",
            LedgerEvent::ExtractAcknowledged { .. } => Self::EXTRACT_ACKNOWLEDGED,
            LedgerEvent::ObligationFulfilled { .. } => "OBLIGATION_FULFILLED",
            LedgerEvent::ObligationOverdue { .. } => "OBLIGATION_OVERDUE",
            LedgerEvent::FormRevisionPublished { .. } => Self::FORM_REVISION_PUBLISHED,
            LedgerEvent::FormPulled { .. } => Self::FORM_PULLED,
            LedgerEvent::FormAcknowledged { .. } => Self::FORM_ACKNOWLEDGED,
        }
    }

    /// What the entry is about: a document digest, a filing, extract or
    /// obligation id, or a form revision (`2026-Q1-r2`).
    pub fn subject(&self) -> String {
        let revision = form_subject;
        match self {
            LedgerEvent::DocumentStored { sha256, .. } => sha256.to_string(),
            LedgerEvent::FilingAccepted { filing_id, .. } => filing_id.clone(),
            LedgerEvent::ExtractCreated { extract_id, .. }
            | LedgerEvent::ExtractSent { extract_id, .. }
            | LedgerEvent::ExtractSendFailed { extract_id, .. }
            | LedgerEvent::ExtractAcknowledged { extract_id, .. } => extract_id.clone(),
            LedgerEvent::ObligationFulfilled { obligation_id, .. }
            | LedgerEvent::ObligationOverdue { obligation_id, .. } => obligation_id.clone(),
            LedgerEvent::FormRevisionPublished {
                quarter,
                revision: r,
                ..
            }
            | LedgerEvent::FormPulled {
                quarter,
                revision: r,
            }
            | LedgerEvent::FormAcknowledged {
                quarter,
                revision: r,
                ..
            } => revision(quarter, r),
        }
    }

    /// The payload: canonical JSON, keys sorted (`json!` builds maps that
    /// keep their keys in order). The field names and types are those
    /// stored since the first release: changing one changes what later
    /// entries look like, never what earlier ones verify against.
    pub fn payload(&self) -> String {
        let payload = match self {
            LedgerEvent::DocumentStored {
                sha256,
                media_type,
                size_bytes,
            } => json!({
                "sha256": sha256.as_str(),
                "media_type": media_type,
                "size_bytes": size_bytes,
            }),
            LedgerEvent::FilingAccepted {
                filing_id,
                kind,
                bin_or_iin,
                caller,
                request_sha256,
                register_number,
                revision,
                findings,
                receipt_sha256,
            } => json!({
                "filing_id": filing_id,
                "kind": kind.as_str(),
                "bin_or_iin": bin_or_iin,
                "caller": caller,
                "request_sha256": request_sha256.as_str(),
                "register_number": register_number,
                "revision": revision,
                "findings": findings.iter().map(|f| f.as_str()).collect::<Vec<_>>(),
                "receipt_sha256": receipt_sha256.as_str(),
            }),
            LedgerEvent::ExtractCreated {
                extract_id,
                filing_id,
                due_date,
                extract_sha256,
            } => json!({
                "extract_id": extract_id,
                "filing_id": filing_id,
                "due_date": due_date.to_string(),
                "extract_sha256": extract_sha256.as_str(),
            }),
            LedgerEvent::ExtractSent {
                extract_id,
                subscriber,
                attempt,
            } => json!({
                "extract_id": extract_id,
                "subscriber": subscriber,
                "attempt": attempt,
            }),
            LedgerEvent::ExtractSendFailed {
                extract_id,
                subscriber,
                reason,
            } => json!({
                "extract_id": extract_id,
                "reason": reason,
                "subscriber": subscriber,
            }),
            LedgerEvent::ExtractAcknowledged {
                extract_id,
                subscriber,
                receipt_sha256,
            } => json!({
                "extract_id": extract_id,
                "subscriber": subscriber,
                "receipt_sha256": receipt_sha256.as_str(),
            }),
            LedgerEvent::ObligationFulfilled {
                obligation_id,
                kind,
                due_date,
                status,
            } => json!({
                "obligation_id": obligation_id,
                "kind": kind.as_str(),
                "due_date": due_date.to_string(),
                "status": status.as_str(),
            }),
            LedgerEvent::ObligationOverdue {
                obligation_id,
                kind,
                due_date,
                filing_id,
                quarter,
            } => json!({
                "obligation_id": obligation_id,
                "kind": kind.as_str(),
                "due_date": due_date.to_string(),
                "filing_id": filing_id,
                "quarter": quarter.map(|q| format!("{}-Q{}", q.year(), q.quarter())),
            }),
            LedgerEvent::FormRevisionPublished {
                quarter,
                revision,
                body_sha256,
                reports,
            } => json!({
                "year": quarter.year(),
                "quarter": quarter.quarter(),
                "revision": revision,
                "body_sha256": body_sha256,
                "reports": reports,
            }),
            LedgerEvent::FormPulled { quarter, revision } => json!({
                "year": quarter.year(),
                "quarter": quarter.quarter(),
                "revision": revision,
            }),
            LedgerEvent::FormAcknowledged {
                quarter,
                revision,
                body_sha256,
                receipt_sha256,
            } => json!({
                "year": quarter.year(),
                "quarter": quarter.quarter(),
                "revision": revision,
                "body_sha256": body_sha256,
                "receipt_sha256": receipt_sha256.as_str(),
            }),
        };
        payload.to_string()
    }
}

/// The subject of a form revision's entries: `2026-Q1-r2`.
pub fn form_subject(quarter: &Quarter, revision: &u32) -> String {
    format!("{}-Q{}-r{revision}", quarter.year(), quarter.quarter())
}

/// The ledger's last entry: where the next one is chained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub seq: i64,
    pub hash: String,
}

impl Default for Head {
    /// The head of an empty ledger.
    fn default() -> Self {
        Head {
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }
}

impl Head {
    /// The entry recording `event` at `at`, chained after this head, which
    /// moves on to it.
    pub fn append(&mut self, event: &LedgerEvent, at: DateTime<Utc>) -> LedgerEntry {
        let seq = self.seq + 1;
        let kind = event.kind().to_owned();
        let subject = event.subject();
        let recorded_at = at.timestamp_micros();
        let payload = event.payload();
        let hash = compute_hash(seq, &kind, &subject, recorded_at, &payload, &self.hash);
        let entry = LedgerEntry {
            seq,
            kind,
            subject,
            recorded_at,
            payload,
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.seq = seq;
        entry
    }
}

/// The `prev_hash` of the first entry: 32 zero bytes.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One ledger row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub seq: i64,
    pub kind: String,
    pub subject: String,
    /// Microseconds since the Unix epoch.
    pub recorded_at: i64,
    /// Canonical JSON (sorted keys).
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// An entry's bytes: `seq\nkind\nsubject\nrecorded_at\npayload`, UTF-8. The
/// chain hashes them after `prev_hash`; the Merkle tree's leaf is them.
pub fn canonical(seq: i64, kind: &str, subject: &str, recorded_at: i64, payload: &str) -> String {
    format!("{seq}\n{kind}\n{subject}\n{recorded_at}\n{payload}")
}

impl LedgerEntry {
    /// The entry's leaf in the Merkle tree log: its index (`seq - 1`) and
    /// data ([`canonical`]).
    pub fn leaf(&self) -> (u64, String) {
        (
            (self.seq - 1) as u64,
            canonical(
                self.seq,
                &self.kind,
                &self.subject,
                self.recorded_at,
                &self.payload,
            ),
        )
    }
}

/// The hash an entry must have, given its fields and `prev_hash`.
pub fn compute_hash(
    seq: i64,
    kind: &str,
    subject: &str,
    recorded_at: i64,
    payload: &str,
    prev_hash: &str,
) -> String {
    let canonical = canonical(seq, kind, subject, recorded_at, payload);
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(prev_hash.as_bytes());
    context.update(canonical.as_bytes());
    hex(context.finish().as_ref())
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub entries_checked: u64,
    /// The first entry that does not match, and why.
    pub first_broken: Option<(i64, String)>,
    pub head_hash: String,
    /// The Merkle tree's signed checkpoints whose root and signature were
    /// checked (set by the store's verification, not the chain's).
    pub checkpoints_checked: u64,
}

/// Walks the chain page by page (entries in `seq` order).
#[derive(Debug, Clone)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    checked: u64,
    broken: Option<(i64, String)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
            checked: 0,
            broken: None,
        }
    }
}

impl Verifier {
    /// Checks the next entries; returns false once the chain is broken.
    pub fn feed(&mut self, entries: &[LedgerEntry]) -> bool {
        for entry in entries {
            if self.broken.is_some() {
                return false;
            }
            self.checked += 1;
            let reason = if entry.seq != self.expected_seq {
                Some(format!(
                    "expected entry {} next, found {} (entries missing)",
                    self.expected_seq, entry.seq
                ))
            } else if entry.prev_hash != self.prev_hash {
                Some(format!(
                    "prev_hash {} does not match the hash of entry {}",
                    entry.prev_hash,
                    entry.seq - 1
                ))
            } else {
                let recomputed = compute_hash(
                    entry.seq,
                    &entry.kind,
                    &entry.subject,
                    entry.recorded_at,
                    &entry.payload,
                    &entry.prev_hash,
                );
                (recomputed != entry.hash).then(|| {
                    format!(
                        "content does not match its hash (stored {}, recomputed {recomputed})",
                        entry.hash
                    )
                })
            };
            match reason {
                Some(reason) => self.broken = Some((entry.seq, reason)),
                None => {
                    self.expected_seq += 1;
                    self.prev_hash = entry.hash.clone();
                }
            }
        }
        self.broken.is_none()
    }

    pub fn finish(self) -> Verification {
        Verification {
            entries_checked: self.checked,
            first_broken: self.broken,
            head_hash: self.prev_hash,
            checkpoints_checked: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_json_with_sorted_keys_as_stored_since_the_first_release() {
        let quarter = Quarter::new(2026, 1).unwrap();
        let overdue = LedgerEvent::ObligationOverdue {
            obligation_id: "obl-1".into(),
            kind: ObligationKind::FinanceForm,
            due_date: "2026-05-15".parse().unwrap(),
            filing_id: None,
            quarter: Some(quarter),
        };
        assert_eq!(overdue.kind(), "OBLIGATION_OVERDUE");
        assert_eq!(overdue.subject(), "obl-1");
        assert_eq!(
            overdue.payload(),
            r#"{"due_date":"2026-05-15","filing_id":null,"kind":"FINANCE_FORM","obligation_id":"obl-1","quarter":"2026-Q1"}"#
        );
        let published = LedgerEvent::FormRevisionPublished {
            quarter,
            revision: 2,
            body_sha256: "ab".into(),
            reports: 7,
        };
        assert_eq!(published.subject(), "2026-Q1-r2");
        assert_eq!(
            published.payload(),
            r#"{"body_sha256":"ab","quarter":1,"reports":7,"revision":2,"year":2026}"#
        );
        let accepted = LedgerEvent::FilingAccepted {
            filing_id: "fil-1".into(),
            kind: FilingKind::QuarterlyReport,
            bin_or_iin: "940140000385".into(),
            caller: "urn:a".into(),
            request_sha256: Sha256Hex::of(b"request"),
            register_number: None,
            revision: 1,
            findings: vec![FindingKind::UnregisteredFiler],
            receipt_sha256: Sha256Hex::of(b"receipt"),
        };
        assert_eq!(
            accepted.payload(),
            format!(
                r#"{{"bin_or_iin":"940140000385","caller":"urn:a","filing_id":"fil-1","findings":["UNREGISTERED_FILER"],"kind":"QUARTERLY_REPORT","receipt_sha256":"{}","register_number":null,"request_sha256":"{}","revision":1}}"#,
                Sha256Hex::of(b"receipt"),
                Sha256Hex::of(b"request")
            )
        );
    }

    #[test]
    fn appending_chains_each_entry_on_the_head_and_moves_it() {
        let mut head = Head::default();
        let at: DateTime<Utc> = "2026-04-01T10:00:00Z".parse().unwrap();
        let event = LedgerEvent::FormPulled {
            quarter: Quarter::new(2026, 1).unwrap(),
            revision: 1,
        };
        let first = head.append(&event, at);
        let second = head.append(&event, at);
        assert_eq!((first.seq, first.prev_hash.as_str()), (1, GENESIS));
        assert_eq!(second.prev_hash, first.hash);
        assert_eq!(
            head,
            Head {
                seq: 2,
                hash: second.hash.clone()
            }
        );
        assert_eq!(first.recorded_at, 1_775_037_600_000_000);
        let mut verifier = Verifier::default();
        assert!(verifier.feed(&[first, second]));
        assert_eq!(verifier.finish().first_broken, None);
    }

    fn chain(n: i64) -> Vec<LedgerEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let payload = format!("{{\"n\":{seq}}}");
                let hash = compute_hash(seq, "TEST", "s", seq * 10, &payload, &prev);
                let entry = LedgerEntry {
                    seq,
                    kind: "TEST".into(),
                    subject: "s".into(),
                    recorded_at: seq * 10,
                    payload,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                entry
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let entries = chain(5);
        let mut verifier = Verifier::default();
        assert!(verifier.feed(&entries[..2]));
        assert!(verifier.feed(&entries[2..]));
        let report = verifier.finish();
        assert_eq!(report.entries_checked, 5);
        assert_eq!(report.first_broken, None);
        assert_eq!(report.head_hash, entries[4].hash);

        let mut edited = chain(5);
        edited[2].payload = "{\"n\":99}".into();
        let mut verifier = Verifier::default();
        assert!(!verifier.feed(&edited));
        let (seq, reason) = verifier.finish().first_broken.unwrap();
        assert_eq!(seq, 3);
        assert!(
            reason.starts_with("content does not match its hash"),
            "{reason}"
        );

        let mut missing = chain(5);
        missing.remove(1);
        let mut verifier = Verifier::default();
        verifier.feed(&missing);
        assert_eq!(
            verifier.finish().first_broken,
            Some((3, "expected entry 2 next, found 3 (entries missing)".into()))
        );
    }
}
