//! Every artifact of a filing the limits accept fits in the smallest
//! message the gateway may be configured for (`MIN_MESSAGE_BYTES`):
//! generated filings, from one entry to every list full and every
//! string at its limit in characters of one to four bytes, spaces
//! around values, each artifact with the largest evidence it can carry.

use super::*;
use crate::{
    config::MIN_MESSAGE_BYTES,
    domain::{
        ledger::LedgerEvent,
        obligation::{Obligation, ObligationKind},
        register::{self, IpConflict, IpConflicts, MAX_NAMED_CONFLICTS, RegisterState},
    },
    proto::v1::{Contacts, DataCentre, EquipmentLine, ExtractDelivery, filing::Body},
    service::validate::{
        MAX_ADDRESS, MAX_CONTACTS, MAX_DATA_CENTRES, MAX_DOCUMENTS, MAX_FILE_NAME, MAX_LIST,
        MAX_NAME,
    },
};
use chrono::{NaiveDate, TimeZone, Utc};
use proptest::prelude::*;

/// Up to `max` characters of one width (1 to 4 bytes), `max` as often
/// as not, some with spaces around (which count toward the limit).
fn text(max: usize) -> BoxedStrategy<String> {
    (
        prop::sample::select(vec!['a', 'ж', '€', '𝔸']),
        prop_oneof![Just(0usize), 0..3usize],
    )
        .prop_flat_map(move |(c, pad)| {
            let most = max - 2 * pad;
            (Just(c), Just(pad), prop_oneof![Just(most), 1..=most])
        })
        .prop_map(|(c, pad, n)| {
            let spaces = " ".repeat(pad);
            format!("{spaces}{}{spaces}", c.to_string().repeat(n))
        })
        .boxed()
}

/// Between one and `max` values, `max` as often as not.
fn list<S: Strategy + Clone>(value: S, max: usize) -> impl Strategy<Value = Vec<S::Value>> {
    prop_oneof![Just(max), 1..=max].prop_flat_map(move |n| prop::collection::vec(value.clone(), n))
}

fn person() -> impl Strategy<Value = pb::Person> {
    let email = format!(
        "{}@{}.{}.{}.kz",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(58)
    );
    (
        text(MAX_NAME),
        text(MAX_ADDRESS),
        list(Just("+77012345678".to_owned()), MAX_CONTACTS),
        list(Just(email), MAX_CONTACTS),
    )
        .prop_map(|(name, legal_address, phones, emails)| pb::Person {
            name,
            bin_or_iin: "210240001236".into(),
            legal_address,
            contacts: Some(Contacts { phones, emails }),
            activity_kind: pb::ActivityKind::Mining as i32,
        })
}

/// IPv6 addresses written out in full, with spaces around.
fn ip_pool() -> impl Strategy<Value = Vec<String>> {
    (prop_oneof![Just(MAX_LIST), 1..=MAX_LIST], 0..40usize).prop_map(|(n, pad)| {
        (0..n)
            .map(|i| {
                format!(
                    "{}2a03:e2c0:0000:0000:0000:0000:0000:{i:04x}/128",
                    " ".repeat(pad)
                )
            })
            .collect()
    })
}

fn documents() -> impl Strategy<Value = Vec<pb::DocumentRef>> {
    let kinds = [
        pb::DocumentKind::CustomsDeclarationOrTitle,
        pb::DocumentKind::Residency,
        pb::DocumentKind::GridConnectionConditions,
    ];
    (
        prop_oneof![Just(MAX_DOCUMENTS), 3..=MAX_DOCUMENTS],
        text(MAX_FILE_NAME),
    )
        .prop_map(move |(n, file_name)| {
            (0..n)
                .map(|i| pb::DocumentRef {
                    kind: kinds[i % 3] as i32,
                    sha256: format!("{i:064x}"),
                    media_type: "application/pdf".into(),
                    size_bytes: u64::MAX,
                    file_name: file_name.trim().to_owned(),
                })
                .collect()
        })
}

fn data_centres(consumption: Option<u64>) -> impl Strategy<Value = Vec<DataCentre>> {
    list(text(MAX_ADDRESS), MAX_DATA_CENTRES).prop_map(move |addresses| {
        addresses
            .into_iter()
            .map(|address| DataCentre {
                address,
                kato_code: Some("552210000".into()),
                consumption_wh: consumption,
            })
            .collect()
    })
}

fn start() -> impl Strategy<Value = StartNotification> {
    (
        person(),
        text(MAX_NAME),
        ip_pool(),
        documents(),
        data_centres(None),
    )
        .prop_map(
            |(person, bank_name, ip_pool, documents, data_centres)| StartNotification {
                person: Some(person),
                bank: Some(pb::BankDetails {
                    iban: "KZ75125KZT1001300335".into(),
                    bic: "HSBKKZKXXXX".into(),
                    bank_name,
                }),
                required_power_kw: 3600,
                planned_jobs: u32::MAX,
                planned_investment_tiyn: i64::MAX,
                ip_pool,
                documents,
                data_centres,
                planned_start_date: Some(pb::Date {
                    year: 2026,
                    month: 6,
                    day: 1,
                }),
                idempotency_key: "k".repeat(128),
            },
        )
}

fn report() -> impl Strategy<Value = QuarterlyReport> {
    let equipment = list(text(200), MAX_LIST);
    (
        person(),
        equipment,
        ip_pool(),
        documents(),
        data_centres(Some(1_000_000)),
    )
        .prop_map(
            |(person, models, ip_pool, documents, data_centres)| QuarterlyReport {
                person: Some(person),
                year: 2026,
                quarter: 1,
                consumption_wh: 1_000_000 * data_centres.len() as u64,
                equipment: models
                    .into_iter()
                    .map(|model| EquipmentLine {
                        model,
                        count: u32::MAX,
                    })
                    .collect(),
                jobs: u32::MAX,
                investment_rest_of_year_tiyn: i64::MAX,
                investment_next_12_months_tiyn: i64::MAX,
                ip_pool,
                documents,
                data_centres,
                idempotency_key: "q".repeat(128),
            },
        )
}

/// The largest evidence of `artifact`: an entry of the given payload
/// at the largest sequence number, a proof of 64 hashes (a tree of 2^64
/// leaves), a checkpoint of 1 KiB (origin and two signatures).
fn evidence(artifact: Vec<u8>, event: &LedgerEvent) -> pb::Evidence {
    let entry = format!(
        "{}\n{}\n{}\n2026-12-31T23:59:59.999999Z\n{}",
        u64::MAX,
        event.kind(),
        event.subject(),
        event.payload()
    );
    pb::Evidence {
        artifact,
        entry: entry.into_bytes(),
        leaf_index: u64::MAX,
        inclusion_proof: vec![vec![0xff; 32]; 64],
        checkpoint: "c".repeat(1024),
    }
}

/// The most findings a filing gets: late, a duplicate or a filing after
/// termination, and IP overlaps past those a receipt names.
fn accepted(filing: &Filing) -> Accepted {
    let at = Utc.with_ymd_and_hms(2030, 12, 31, 12, 0, 0).unwrap();
    let terminated = RegisterState {
        status: crate::domain::register::RegisterStatus::Terminated,
        activity_end: NaiveDate::from_ymd_opt(2020, 1, 1),
    };
    let operating = RegisterState {
        status: crate::domain::register::RegisterStatus::Operating,
        activity_end: None,
    };
    let entry = match filing {
        Filing::Quarterly(_) => terminated,
        _ => operating,
    };
    let named = IpConflict {
        cidr: "2a03:e2c0:1234:5678:9abc:def0:1234:5678/128".into(),
        other_cidr: "2a03:e2c0:1234:5678:9abc:def0:1234:5678/128".into(),
        other_bin_or_iin: "210240001236".into(),
    };
    let conflicts = IpConflicts {
        named: vec![named; MAX_NAMED_CONFLICTS],
        more: u64::MAX,
    };
    let assessment = register::assess(filing, at.date_naive(), Some(&entry), &conflicts);
    let id = |prefix: &str| format!("{prefix}-{}", "f".repeat(32));
    let obligation = |kind| {
        Obligation::new(
            id("obl"),
            kind,
            at.date_naive(),
            Some(id("fil")),
            Some(id("ext")),
            filing.quarter(),
            at,
        )
    };
    Accepted {
        filing_id: id("fil"),
        received_at: at,
        register_number: Some("KZ-DM-999999".into()),
        findings: assessment
            .findings
            .iter()
            .map(|f| (id("fnd"), f.clone()))
            .collect(),
        assessment,
        revision: u32::MAX,
        obligations: vec![
            obligation(ObligationKind::EnergyExtract),
            obligation(ObligationKind::FinanceForm),
        ],
    }
}

/// Each artifact of `filing` (sent as `body`), with its evidence, fits
/// in the smallest message; `false` if the filing is refused.
fn artifacts_fit(
    message: &impl Message,
    validated: Result<Filing, Violations>,
    body: Body,
    refs: &[pb::DocumentRef],
) -> bool {
    let Ok(filing) = validated else {
        return false;
    };
    if validate::filing_size(message.encoded_len()).is_err() {
        return false;
    }
    let accepted = accepted(&filing);
    let mut receipt = receipt(filing.kind(), "210240001236", &"k".repeat(128), &accepted);
    let receipt_bytes = receipt.encode_to_vec();
    let recorded = LedgerEvent::FilingAccepted {
        filing_id: accepted.filing_id.clone(),
        kind: filing.kind(),
        bin_or_iin: "210240001236".into(),
        caller: "c".repeat(1024),
        request_sha256: Sha256Hex::of(b""),
        register_number: accepted.register_number.clone(),
        revision: u32::MAX,
        findings: accepted.findings.iter().map(|(_, f)| f.kind).collect(),
        receipt_sha256: Sha256Hex::of(&receipt_bytes),
    };
    receipt.evidence = Some(evidence(receipt_bytes, &recorded));
    assert!(
        receipt.encoded_len() <= MIN_MESSAGE_BYTES,
        "receipt {}",
        receipt.encoded_len()
    );
    let answer = pb::Filing {
        filing_id: accepted.filing_id.clone(),
        filing_kind: receipt.filing_kind,
        body: Some(body),
        receipt: Some(receipt),
        superseded_by: accepted.filing_id.clone(),
    };
    assert!(
        answer.encoded_len() <= MIN_MESSAGE_BYTES,
        "GetFiling {}",
        answer.encoded_len()
    );

    let stored: Vec<DocumentRecord> = refs
        .iter()
        .map(|r| DocumentRecord {
            sha256: Sha256Hex::parse(&r.sha256).unwrap(),
            media_type: "application/xml".into(),
            size_bytes: u64::MAX,
            stored_at: accepted.received_at,
            newly_stored: false,
        })
        .collect();
    let mut extract = four_item_extract(&filing, refs, &stored).unwrap();
    extract.extract_id = format!("ext-{}", "f".repeat(32));
    extract.source_filing_id = accepted.filing_id.clone();
    extract.created_at = Some(timestamp(accepted.received_at));
    extract.due_date = Some(to_pb_date(accepted.assessment.due_date));
    let bytes = extract.encode_to_vec();
    let made = LedgerEvent::ExtractCreated {
        extract_id: extract.extract_id.clone(),
        filing_id: accepted.filing_id.clone(),
        due_date: accepted.assessment.due_date,
        extract_sha256: Sha256Hex::of(&bytes),
    };
    extract.evidence = Some(evidence(bytes, &made));
    let delivery = ExtractDelivery {
        extract: Some(extract),
        attempt: u32::MAX,
        sent_at: Some(timestamp(accepted.received_at)),
    };
    assert!(
        delivery.encoded_len() <= MIN_MESSAGE_BYTES,
        "delivery {}",
        delivery.encoded_len()
    );
    true
}

/// Runs `check` on `cases` values of `strategy`; every one must be a
/// filing the limits accept, or the property says nothing.
fn every_case_accepted<S: Strategy>(strategy: S, cases: u32, check: impl Fn(S::Value) -> bool) {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    let accepted = std::cell::Cell::new(0);
    runner
        .run(&strategy, |value| {
            accepted.set(accepted.get() + u32::from(check(value)));
            Ok(())
        })
        .unwrap();
    assert_eq!(
        accepted.get(),
        cases,
        "filings refused: the generators are off"
    );
}

#[test]
fn every_artifact_of_a_start_notification_the_limits_accept_fits() {
    every_case_accepted(start(), 24, |start| {
        let validated = validate::start_notification(&start);
        let refs = start.documents.clone();
        artifacts_fit(
            &start,
            validated,
            Body::StartNotification(start.clone()),
            &refs,
        )
    });
}

#[test]
fn every_artifact_of_a_quarterly_report_the_limits_accept_fits() {
    let today = NaiveDate::from_ymd_opt(2026, 4, 2).unwrap();
    every_case_accepted(report(), 24, |report| {
        let validated = validate::quarterly_report(&report, today);
        let refs = report.documents.clone();
        artifacts_fit(
            &report,
            validated,
            Body::QuarterlyReport(report.clone()),
            &refs,
        )
    });
}

#[test]
fn a_filing_with_every_list_full_and_every_string_at_its_limit_is_accepted_and_fits() {
    // The generators' largest case, made by hand: it must be accepted,
    // or the property above proves nothing about the largest filings.
    let wide = |n: usize| "𝔸".repeat(n);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut start = proptest::strategy::ValueTree::current(&start().new_tree(&mut runner).unwrap());
    let person = start.person.as_mut().unwrap();
    person.name = wide(MAX_NAME);
    person.legal_address = wide(MAX_ADDRESS);
    start.bank.as_mut().unwrap().bank_name = wide(MAX_NAME);
    start.ip_pool = (0..MAX_LIST)
        .map(|i| format!("2a03:e2c0:0000:0000:0000:0000:0000:{i:04x}/128"))
        .collect();
    for r in &mut start.documents {
        r.file_name = wide(MAX_FILE_NAME);
    }
    start.data_centres = vec![
        DataCentre {
            address: wide(MAX_ADDRESS),
            kato_code: Some("552210000".into()),
            consumption_wh: None,
        };
        MAX_DATA_CENTRES
    ];
    let validated = validate::start_notification(&start);
    let refs = start.documents.clone();
    assert!(artifacts_fit(
        &start,
        validated,
        Body::StartNotification(start.clone()),
        &refs
    ));
}
