//! The filings conformance suite: every case runs against SQLite and against
//! PostgreSQL (`sqlite::…` and `postgres::…`), over real mutual TLS.

#[macro_use]
mod common;

use common::{
    Backend, TestClock, execute, fixtures::*, scalar, spawn_on, spawn_on_with, violations,
};
use minegate::proto::v1::{
    ActivityKind, DocumentKind, DocumentMetadata, FilingKind, FilingReceipt, FindingKind,
    GetFilingRequest, ListRegisterRequest, Quarter, RegisterStatus, UploadDocumentRequest,
    VerifyLedgerRequest, compliance_service_client::ComplianceServiceClient, filing::Body,
    filing_service_client::FilingServiceClient, upload_document_request::Part,
};
use minegate::{
    domain::Sha256Hex,
    evidence::verify::{ArtifactKind, EvidenceError, verify},
    proto::v1::GetSigningKeysRequest,
};
use prost::Message;
use tonic::Code;

on_both_backends!(
    each_kind_of_filing_is_accepted_registered_and_read_back,
    a_filing_with_five_problems_gets_five_violations_and_stores_nothing,
    an_idempotent_replay_returns_the_original_receipt_byte_for_byte,
    a_refiled_quarter_is_a_new_revision_that_supersedes_the_old,
    late_duplicate_unregistered_and_conflicting_filings_are_accepted_with_findings,
    editing_a_ledger_row_underneath_is_named_by_verify,
    concurrent_submissions_all_get_receipts_and_are_stored_exactly_once,
    documents_are_content_addressed_and_checked_against_their_bytes,
    a_pool_of_a_thousand_ipv6_blocks_is_stored_and_checked_against,
    a_submission_the_database_refuses_fails_alone_and_the_others_are_written,
);

fn ts(rfc3339: &str) -> Option<pbjson_types::Timestamp> {
    let at: chrono::DateTime<chrono::Utc> = rfc3339.parse().unwrap();
    Some(pbjson_types::Timestamp {
        seconds: at.timestamp(),
        nanos: 0,
    })
}

async fn each_kind_of_filing_is_accepted_registered_and_read_back(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel.clone(), "A").await;

    let start = start_notification(
        BIN_A,
        "start-1",
        date(2026, 5, 1),
        &["95.56.0.0/16"],
        &documents,
    );
    let receipt = filings
        .submit_start_notification(start.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.filing_kind(), FilingKind::StartNotification);
    assert_eq!(receipt.bin_or_iin, BIN_A);
    assert_eq!(receipt.register_number, "KZ-DM-000001");
    assert_eq!(receipt.received_at, ts("2026-03-20T06:00:00Z"));
    assert_eq!(receipt.statutory_due_date, date(2026, 4, 1));
    assert!(receipt.deadline_met);
    assert_eq!(receipt.days_late, 0);
    assert_eq!(receipt.findings, vec![]);
    assert_eq!(receipt.revision, 0);
    assert_eq!(receipt.idempotency_key, "start-1");

    // The receipt is in the ledger under a checkpoint signed by the
    // gateway's published key; a forged one is not.
    let keys = ComplianceServiceClient::new(channel.clone())
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(keys.len(), 1);
    let proven = verify(ArtifactKind::Receipt, receipt.evidence.as_ref(), &keys).unwrap();
    assert_eq!(proven.key_id, keys[0].key_id);
    let attested =
        FilingReceipt::decode(receipt.evidence.as_ref().unwrap().artifact.as_slice()).unwrap();
    assert_eq!(
        attested,
        FilingReceipt {
            evidence: None,
            ..receipt.clone()
        },
        "the attested bytes are the receipt handed out"
    );
    let mut forged = receipt.evidence.clone().unwrap();
    let mut changed = attested.clone();
    changed.days_late = 0;
    changed.deadline_met = false;
    forged.artifact = changed.encode_to_vec();
    assert!(matches!(
        verify(ArtifactKind::Receipt, Some(&forged), &keys),
        Err(EvidenceError::ArtifactChanged { .. })
    ));

    // Read it back: the filing exactly as sent, and its receipt.
    let stored = filings
        .get_filing(GetFilingRequest {
            filing_id: receipt.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.body, Some(Body::StartNotification(start)));
    assert_eq!(stored.receipt.as_ref(), Some(&receipt));
    assert_eq!(stored.superseded_by, "");

    let register = filings
        .list_register(ListRegisterRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(register.entries.len(), 1);
    let entry = &register.entries[0];
    assert_eq!(entry.register_number, "KZ-DM-000001");
    assert_eq!(entry.status(), RegisterStatus::Planned);
    assert_eq!(entry.activity_kind(), ActivityKind::Mining);
    assert_eq!(entry.planned_start_date, date(2026, 5, 1));
    assert_eq!(entry.required_power_kw, 3600);
    assert_eq!(entry.start_filing_id, receipt.filing_id);

    // §4: the first quarterly report makes the entry OPERATING.
    clock.set("2026-04-08T06:00:00Z");
    let report = quarterly_report(
        BIN_A,
        "q1-2026",
        2026,
        1,
        1_250_000_000,
        &["95.56.0.0/16"],
        &documents,
    );
    let receipt = filings
        .submit_quarterly_report(report)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.filing_kind(), FilingKind::QuarterlyReport);
    assert_eq!(receipt.register_number, "KZ-DM-000001");
    assert_eq!(receipt.statutory_due_date, date(2026, 4, 10));
    assert!(receipt.deadline_met);
    assert_eq!(receipt.revision, 1);
    assert_eq!(receipt.findings, vec![]);
    let entry = filings
        .list_register(ListRegisterRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .remove(0);
    assert_eq!(entry.status(), RegisterStatus::Operating);
    assert_eq!(
        entry.last_reported_quarter,
        Some(Quarter {
            year: 2026,
            quarter: 1
        })
    );

    // §5: termination within 10 days.
    clock.set("2026-07-01T06:00:00Z");
    let receipt = filings
        .submit_termination_notice(termination(BIN_A, "end-1", date(2026, 6, 25)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.filing_kind(), FilingKind::TerminationNotice);
    assert_eq!(receipt.statutory_due_date, date(2026, 7, 5));
    assert!(receipt.deadline_met);
    assert_eq!(receipt.findings, vec![]);
    let terminated = filings
        .list_register(ListRegisterRequest {
            status: RegisterStatus::Terminated as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(terminated.entries.len(), 1);
    assert_eq!(terminated.entries[0].activity_end_date, date(2026, 6, 25));
    let planned = filings
        .list_register(ListRegisterRequest {
            status: RegisterStatus::Planned as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(planned.entries.len(), 0);

    let missing = filings
        .get_filing(GetFilingRequest {
            filing_id: "fil-nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::NotFound, "no filing \"fil-nope\"")
    );
    app.gateway.shutdown().await.unwrap();
}

async fn a_filing_with_five_problems_gets_five_violations_and_stores_nothing(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel.clone(), "A").await;

    let mut start = start_notification(
        "210240001237",
        "bad-1",
        date(2026, 5, 1),
        &["95.56.0.0/16", "10.1.0.0/16"],
        &documents,
    );
    start.bank.as_mut().unwrap().iban = "KZ76125KZT1001300335".into();
    start.planned_investment_tiyn = -100;
    start.data_centres[0].kato_code = Some("7511".into());
    let status = filings.submit_start_notification(start).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "5 problems, the first person.bin_or_iin: check digit (12th) is 7, but the first 11 digits give 6"
    );
    assert_eq!(
        violations(&status),
        vec![
            ("person.bin_or_iin".to_owned(), "check digit (12th) is 7, but the first 11 digits give 6".to_owned()),
            ("bank.iban".to_owned(), "check digits 76 do not match the account (mod-97 gives 2, expected 1)".to_owned()),
            ("planned_investment_tiyn".to_owned(), "money cannot be negative, got -100 tiyn".to_owned()),
            ("ip_pool[1]".to_owned(), "10.1.0.0/16 is not public address space: it overlaps 10.0.0.0/8, private (RFC 1918)".to_owned()),
            ("data_centres[0].kato_code".to_owned(), "a KATO code is 9 digits, got \"7511\"".to_owned()),
        ]
    );

    // A valid filing naming a document never uploaded.
    let mut unknown = documents.clone();
    unknown[2].sha256 = "ab".repeat(32);
    let status = filings
        .submit_start_notification(start_notification(
            BIN_A,
            "bad-2",
            date(2026, 5, 1),
            &["95.56.0.0/16"],
            &unknown,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        vec![(
            "documents[2].sha256".to_owned(),
            "no uploaded document has this digest; upload it first with UploadDocument".to_owned()
        )]
    );

    // Nothing was stored: no filing, no register entry, only the 3 documents in the ledger.
    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, 0);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM register").await, 0);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM findings").await, 0);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM ledger").await, 3);
    app.gateway.shutdown().await.unwrap();
}

async fn an_idempotent_replay_returns_the_original_receipt_byte_for_byte(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel, "A").await;
    let start = start_notification(
        BIN_A,
        "start-1",
        date(2026, 5, 1),
        &["95.56.0.0/16"],
        &documents,
    );

    let first = filings
        .submit_start_notification(start.clone())
        .await
        .unwrap()
        .into_inner();
    clock.set("2026-03-21T09:30:00Z"); // a retry a day later changes nothing
    let again = filings
        .submit_start_notification(start.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        again.evidence, first.evidence,
        "no commit between: the same evidence too"
    );
    assert_eq!(again.encode_to_vec(), first.encode_to_vec());

    let mut changed = start;
    changed.planned_jobs = 41;
    let status = filings
        .submit_start_notification(changed)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(
        status.message(),
        format!(
            "idempotency key already used by this caller for filing {} with a different payload",
            first.filing_id
        )
    );
    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, 1);
    assert_eq!(
        scalar(
            url,
            "SELECT COUNT(*) FROM ledger WHERE kind = 'FILING_ACCEPTED'"
        )
        .await,
        1
    );
    app.gateway.shutdown().await.unwrap();
}

async fn a_refiled_quarter_is_a_new_revision_that_supersedes_the_old(backend: Backend) {
    let clock = TestClock::at("2026-03-01T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel, "A").await;
    filings
        .submit_start_notification(start_notification(
            BIN_A,
            "start",
            date(2026, 4, 1),
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap();

    clock.set("2026-04-03T06:00:00Z");
    let first = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A,
            "q1-a",
            2026,
            1,
            1_000_000,
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let second = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A,
            "q1-b",
            2026,
            1,
            1_100_000,
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.revision, second.revision), (1, 2));
    let old = filings
        .get_filing(GetFilingRequest {
            filing_id: first.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(old.superseded_by, second.filing_id);
    let new = filings
        .get_filing(GetFilingRequest {
            filing_id: second.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(new.superseded_by, "");
    let Some(Body::QuarterlyReport(body)) = new.body else {
        panic!("a quarterly report")
    };
    assert_eq!(body.consumption_wh, 1_100_000);

    // A different quarter starts again at revision 1.
    clock.set("2026-07-02T06:00:00Z");
    let q2 = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A,
            "q2-a",
            2026,
            2,
            900_000,
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q2.revision, 1);
    app.gateway.shutdown().await.unwrap();
}

async fn late_duplicate_unregistered_and_conflicting_filings_are_accepted_with_findings(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel, "A").await;
    let kinds = |r: &FilingReceipt| {
        r.findings
            .iter()
            .map(|f| (f.kind(), f.days, f.detail.clone()))
            .collect::<Vec<_>>()
    };

    // 21 days ahead instead of 30: accepted, 9 days short.
    let late = filings
        .submit_start_notification(start_notification(
            BIN_A,
            "a-start",
            date(2026, 4, 10),
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(late.register_number, "KZ-DM-000001");
    assert_eq!(late.statutory_due_date, date(2026, 3, 11));
    assert!(!late.deadline_met);
    assert_eq!(late.days_late, 9);
    assert_eq!(
        kinds(&late),
        vec![(
            FindingKind::LateStartNotification,
            9,
            "filed 2026-03-20, 21 days before the planned start 2026-04-10; the rules require at least 30 (due 2026-03-11), 9 days short".to_owned()
        )]
    );

    // A second start for the same BIN.
    let duplicate = filings
        .submit_start_notification(start_notification(
            BIN_A,
            "a-start-2",
            date(2026, 6, 1),
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(duplicate.register_number, "KZ-DM-000001");
    assert_eq!(
        kinds(&duplicate),
        vec![(
            FindingKind::DuplicateStart,
            0,
            "210240001236 is already in the register (PLANNED); the entry is unchanged".to_owned()
        )]
    );

    // Another person claims part of A's range: on time, registered, but a conflict.
    let conflict = filings
        .submit_start_notification(start_notification(
            BIN_B,
            "b-start",
            date(2026, 6, 1),
            &["95.56.128.0/17", "2.132.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(conflict.register_number, "KZ-DM-000002");
    assert_eq!(
        kinds(&conflict),
        vec![(
            FindingKind::IpPoolConflict,
            0,
            "95.56.128.0/17 overlaps 95.56.0.0/16 registered to 210240001236".to_owned()
        )]
    );
    // A wider range holding B's, and one just beside A's: one conflict.
    let wider = filings
        .submit_start_notification(start_notification(
            BIN_C,
            "c-start",
            date(2026, 6, 1),
            &["2.128.0.0/12", "95.57.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        kinds(&wider),
        vec![(
            FindingKind::IpPoolConflict,
            0,
            "2.128.0.0/12 overlaps 2.132.0.0/16 registered to 190540005677".to_owned()
        )]
    );

    // A quarterly report, 5 days late, from someone never registered; the
    // moment is 23:30 UTC on 14 April, already the 15th in Almaty.
    clock.set("2026-04-14T23:30:00Z");
    let unregistered = filings
        .submit_quarterly_report(quarterly_report(
            IIN_D,
            "d-q1",
            2026,
            1,
            10_000,
            &["37.99.0.0/24"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unregistered.register_number, "");
    assert_eq!(unregistered.days_late, 5);
    assert_eq!(
        kinds(&unregistered),
        vec![
            (FindingKind::LateQuarterlyReport, 5, "report for 2026 Q1 filed 2026-04-15, due 2026-04-10: 5 days late".to_owned()),
            (
                FindingKind::UnregisteredFiler,
                0,
                "quarterly report from 850315301235, who has no entry in the register (no start notification)".to_owned()
            ),
        ]
    );
    assert_eq!(
        unregistered.findings[0].quarter,
        Some(Quarter {
            year: 2026,
            quarter: 1
        })
    );

    // A termination notice 3 days late.
    clock.set("2026-07-08T06:00:00Z");
    let ended = filings
        .submit_termination_notice(termination(BIN_B, "b-end", date(2026, 6, 25)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ended.days_late, 3);
    assert_eq!(
        kinds(&ended),
        vec![(
            FindingKind::LateTerminationNotice,
            3,
            "activity ended 2026-06-25, notice filed 2026-07-08, due 2026-07-05: 3 days late"
                .to_owned()
        )]
    );

    // Bad input is named, and changes nothing.
    let status = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A,
            "future",
            2026,
            3,
            1,
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        vec![(
            "quarter".to_owned(),
            "2026 Q3 has not ended; it can be reported from 2026-10-01".to_owned()
        )]
    );
    let mut five = quarterly_report(BIN_A, "q5", 2026, 5, 1, &["95.56.0.0/16"], &documents);
    five.equipment[0].count = 0;
    let status = filings.submit_quarterly_report(five).await.unwrap_err();
    assert_eq!(
        violations(&status),
        vec![
            (
                "quarter".to_owned(),
                "quarter must be 1 to 4, got 5".to_owned()
            ),
            (
                "equipment[0].count".to_owned(),
                "the number of units must be at least 1".to_owned()
            ),
        ]
    );
    let status = filings
        .submit_termination_notice(termination(BIN_A, "later", date(2026, 8, 1)))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        vec![(
            "activity_end_date".to_owned(),
            "2026-08-01 is in the future; notify once the activity has ended (§5)".to_owned()
        )]
    );

    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM findings").await, 7);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, 6);
    app.gateway.shutdown().await.unwrap();
}

async fn editing_a_ledger_row_underneath_is_named_by_verify(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel, "A").await;
    for (bin, key) in [(BIN_A, "a"), (BIN_B, "b"), (BIN_C, "c")] {
        filings
            .submit_start_notification(
                start_notification(bin, key, date(2026, 6, 1), &[], &documents).with_pool(bin),
            )
            .await
            .unwrap();
    }
    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let report = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact);
    assert_eq!(report.entries_checked, 9); // 3 documents; 3 × (extract created, filing accepted)
    assert_eq!(report.first_broken_entry, None);
    assert_eq!(report.head_hash.len(), 64);

    // Someone edits entry 7 (B's filing) in the database, behind the gateway's back.
    let url = app.config.database_url.clone();
    let changed = execute(&url, "UPDATE ledger SET payload = REPLACE(payload, '190540005677', '190540005678') WHERE seq = 7").await;
    assert_eq!(changed, 1);
    let report = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!report.intact);
    assert_eq!(report.first_broken_entry, Some(7));
    assert!(
        report
            .reason
            .starts_with("content does not match its hash (stored "),
        "{}",
        report.reason
    );
    assert_eq!(report.entries_checked, 7);

    // The operator's command line says the same, straight from the database.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .args(["ledger", "verify"])
        .env("MINEGATE_DATABASE_URL", &url)
        .current_dir(app.dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("ledger BROKEN at entry 7: content does not match its hash"),
        "{stdout}"
    );
    app.gateway.shutdown().await.unwrap();
}

async fn concurrent_submissions_all_get_receipts_and_are_stored_exactly_once(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "A").await;
    let submit_all = || {
        let tasks: Vec<_> = (0..200u32)
            .map(|n| {
                let mut filings = FilingServiceClient::new(channel.clone());
                let pool = format!("37.{}.{}.0/24", 1 + n / 256, n % 256);
                let filing = start_notification(
                    &generated_bin(n),
                    &format!("load-{n}"),
                    date(2026, 6, 1),
                    &[&pool],
                    &documents,
                );
                tokio::spawn(async move {
                    filings
                        .submit_start_notification(filing)
                        .await
                        .map(|r| r.into_inner())
                })
            })
            .collect();
        async move {
            let mut receipts = Vec::new();
            for task in tasks {
                receipts.push(
                    task.await
                        .unwrap()
                        .expect("every submission gets a receipt"),
                );
            }
            receipts
        }
    };
    let receipts = submit_all().await;
    let mut ids: Vec<&str> = receipts.iter().map(|r| r.filing_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    // Each filing's FILING_ACCEPTED entry names the receipt it was given
    // (the receipts of a run are signed beside its other writes and their
    // digests put in the ledger after).
    let store = app.gateway.store().unwrap().clone();
    let ledger = store.ledger_page(0, 5_000).await.unwrap();
    let accepted: Vec<serde_json::Value> = ledger
        .iter()
        .filter(|entry| entry.kind == "FILING_ACCEPTED")
        .map(|entry| serde_json::from_str(&entry.payload).unwrap())
        .collect();
    assert_eq!(accepted.len(), 200);
    for receipt in &receipts {
        let payload = accepted
            .iter()
            .find(|p| p["filing_id"] == receipt.filing_id.as_str())
            .expect("a FILING_ACCEPTED entry for each receipt");
        let keys: Vec<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "bin_or_iin",
                "caller",
                "filing_id",
                "findings",
                "kind",
                "receipt_sha256",
                "register_number",
                "request_sha256",
                "revision"
            ]
        );
        assert_eq!(
            payload["receipt_sha256"],
            Sha256Hex::of(&receipt.evidence.as_ref().unwrap().artifact).as_str()
        );
        assert_eq!(payload["register_number"], receipt.register_number.as_str());
    }
    let mut numbers: Vec<&str> = receipts
        .iter()
        .map(|r| r.register_number.as_str())
        .collect();
    numbers.sort();
    assert_eq!(numbers.first(), Some(&"KZ-DM-000001"));
    assert_eq!(numbers.last(), Some(&"KZ-DM-000200"));
    numbers.dedup();
    assert_eq!(numbers.len(), 200);

    // Every retry returns the same receipt bytes (under whatever checkpoint
    // is latest), and stores nothing more.
    let replays = submit_all().await;
    for (first, again) in receipts.iter().zip(&replays) {
        assert_eq!(
            first.evidence.as_ref().unwrap().artifact,
            again.evidence.as_ref().unwrap().artifact
        );
    }
    // The register pages through all 200, in register-number order.
    let mut filings = FilingServiceClient::new(channel.clone());
    let first = filings
        .list_register(ListRegisterRequest {
            page_size: 150,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.entries.len(), 150);
    assert_eq!(first.entries[0].register_number, "KZ-DM-000001");
    assert_eq!(first.entries[149].register_number, "KZ-DM-000150");
    assert_eq!(first.next_page_token, "150");
    let second = filings
        .list_register(ListRegisterRequest {
            page_size: 150,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.entries.len(), 50);
    assert_eq!(second.entries[49].register_number, "KZ-DM-000200");
    assert_eq!(second.next_page_token, "");
    let hosting = filings
        .list_register(ListRegisterRequest {
            activity_kind: ActivityKind::InfrastructureServices as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(hosting.entries.len(), 0);
    let status = filings
        .list_register(ListRegisterRequest {
            page_size: 5000,
            page_token: "x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        vec![
            ("page_size".to_owned(), "at most 1000, got 5000".to_owned()),
            (
                "page_token".to_owned(),
                "not a token from a previous response".to_owned()
            ),
        ]
    );

    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, 200);
    assert_eq!(
        scalar(url, "SELECT COUNT(DISTINCT idempotency_key) FROM filings").await,
        200
    );
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM register").await, 200);
    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let report = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.intact);
    assert_eq!(report.entries_checked, 403); // 3 documents, 200 × (extract, filing)
    app.gateway.shutdown().await.unwrap();
}

async fn documents_are_content_addressed_and_checked_against_their_bytes(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock, |c| c.limits.max_document_bytes = 4096).await
    else {
        return;
    };
    let channel = app.channel("authority").await;
    let bytes = pdf("title deed");
    let digest = minegate::domain::Sha256Hex::of(&bytes).to_string();

    let stored = upload(
        channel.clone(),
        DocumentKind::CustomsDeclarationOrTitle,
        "application/pdf",
        "deed.pdf",
        &bytes,
        7,
    )
    .await
    .unwrap();
    assert_eq!(stored.sha256, digest);
    assert_eq!(stored.size_bytes, bytes.len() as u64);
    assert_eq!(stored.media_type, "application/pdf");
    assert_eq!(stored.file_name, "deed.pdf");
    assert_eq!(stored.kind(), DocumentKind::CustomsDeclarationOrTitle);
    // The same bytes again: the same reference, nothing stored twice.
    let again = upload(
        channel.clone(),
        DocumentKind::CustomsDeclarationOrTitle,
        "application/pdf",
        "deed.pdf",
        &bytes,
        1000,
    )
    .await
    .unwrap();
    assert_eq!(again, stored);
    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM documents").await, 1);
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM ledger").await, 1);

    let cases: Vec<(Vec<u8>, &str, (&str, String))> = vec![
        (png(), "application/pdf", ("metadata.media_type", "declared application/pdf but the bytes are image/png".into())),
        (b"MZ\x90\0".to_vec(), "application/pdf", ("metadata.media_type", "the bytes are not PDF, PNG, JPEG or XML".into())),
        (vec![b'%'; 5000], "application/pdf", ("metadata.size_bytes", "5000 bytes is over the limit of 4096 bytes".into())),
        (Vec::new(), "application/pdf", ("chunk", "the document is empty".into())),
        (pdf("x"), "application/zip", (
            "metadata.media_type",
            "\"application/zip\" is not accepted; use one of application/pdf, image/png, image/jpeg, application/xml".into(),
        )),
    ];
    for (bytes, media_type, (field, description)) in cases {
        let status = upload(
            channel.clone(),
            DocumentKind::Residency,
            media_type,
            "x",
            &bytes,
            1024,
        )
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violations(&status), vec![(field.to_owned(), description)]);
    }
    // Without a declared size, the limit stops the stream as it crosses it.
    let mut messages = vec![UploadDocumentRequest {
        part: Some(Part::Metadata(DocumentMetadata {
            kind: DocumentKind::Residency as i32,
            media_type: "application/pdf".into(),
            file_name: "big.pdf".into(),
            size_bytes: None,
            sha256: None,
        })),
    }];
    messages.extend((0..5).map(|_| UploadDocumentRequest {
        part: Some(Part::Chunk(vec![b'%'; 1000])),
    }));
    let status = FilingServiceClient::new(channel.clone())
        .upload_document(tokio_stream::iter(messages))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&status),
        vec![(
            "chunk".to_owned(),
            "the document is over the limit of 4096 bytes".to_owned()
        )]
    );
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM documents").await, 1);
    app.gateway.shutdown().await.unwrap();
}

/// Gives each test filer its own public range, so filings do not conflict.
trait WithPool {
    fn with_pool(self, bin: &str) -> Self;
}

impl WithPool for minegate::proto::v1::StartNotification {
    fn with_pool(mut self, bin: &str) -> Self {
        let octet: u32 = bin[9..11].parse().unwrap();
        self.ip_pool = vec![format!("37.{}.0.0/16", 100 + octet)];
        self
    }
}

/// The largest pool a filing may carry, each block IPv6 (its overlap
/// look-up takes the most parameters): stored whole, and a later filing
/// overlapping one of its blocks is found.
async fn a_pool_of_a_thousand_ipv6_blocks_is_stored_and_checked_against(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());
    let documents = upload_documents(channel, "V6").await;
    let blocks: Vec<String> = (1..=1000).map(|n| format!("2a03:{n:x}::/32")).collect();
    let block_refs: Vec<&str> = blocks.iter().map(String::as_str).collect();
    let wide = filings
        .submit_start_notification(start_notification(
            BIN_A,
            "a-wide",
            date(2026, 6, 1),
            &block_refs,
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(wide.findings.len(), 0);
    assert_eq!(
        scalar(&app.config.database_url, "SELECT COUNT(*) FROM ip_ranges").await,
        1000
    );
    let inside = filings
        .submit_start_notification(start_notification(
            BIN_B,
            "b-inside",
            date(2026, 6, 1),
            &["2a03:200:8000::/33", "2a04::/32"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let found: Vec<(i32, String)> = inside
        .findings
        .iter()
        .map(|f| (f.kind, f.detail.clone()))
        .collect();
    assert_eq!(
        found,
        vec![(
            FindingKind::IpPoolConflict as i32,
            "2a03:200:8000::/33 overlaps 2a03:200::/32 registered to 210240001236".to_owned()
        )]
    );
    app.gateway.shutdown().await.unwrap();
}

/// Concurrent submissions commit a batch at a time. One that the database
/// refuses to write (a trigger stands in for a fault that hits only it)
/// fails alone and the others are written. SQLite gives each job its own
/// savepoint and never takes a run apart; PostgreSQL writes a run at once
/// and, when that fails, takes that one run apart (the gauge counts it) and
/// writes each of its jobs alone.
async fn a_submission_the_database_refuses_fails_alone_and_the_others_are_written(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock).await else {
        return;
    };
    let url = app.config.database_url.clone();
    match backend {
        Backend::Sqlite => {
            common::execute(
                &url,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON filings \
                 WHEN NEW.idempotency_key = 'poison' \
                 BEGIN SELECT RAISE(ABORT, 'refused for the test'); END",
            )
            .await;
        }
        Backend::Postgres => {
            common::execute(
                &url,
                "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                 BEGIN IF NEW.idempotency_key = 'poison' THEN \
                 RAISE EXCEPTION 'refused for the test'; END IF; RETURN NEW; END $$",
            )
            .await;
            common::execute(
                &url,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON filings \
                 FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            )
            .await;
        }
    }
    let channel = app.channel("authority").await;
    let documents = upload_documents(channel.clone(), "A").await;
    // Filers `range` all at once; the 20th's key is the refused one.
    let wave = async |range: std::ops::Range<u32>| {
        let tasks: Vec<_> = range
            .map(|n| {
                let mut filings = FilingServiceClient::new(channel.clone());
                let key = if n == 20 {
                    "poison".to_owned()
                } else {
                    format!("ok-{n}")
                };
                let filing = start_notification(
                    &generated_bin(n),
                    &key,
                    date(2026, 6, 1),
                    &[&format!("37.9.{n}.0/24")],
                    &documents,
                );
                tokio::spawn(async move { filings.submit_start_notification(filing).await })
            })
            .collect();
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(
                task.await
                    .unwrap()
                    .map(|_| ())
                    .map_err(|status| status.code()),
            );
        }
        outcomes
    };
    let outcomes = wave(0..40).await;
    let refused: Vec<usize> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.is_err())
        .map(|(n, _)| n)
        .collect();
    assert_eq!(refused, vec![20]);
    assert_eq!(outcomes[20].as_ref().unwrap_err(), &Code::Internal);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM filings").await, 39);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM register").await, 39);
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM filings WHERE idempotency_key = 'poison'"
        )
        .await,
        0
    );
    let verification = ComplianceServiceClient::new(app.channel("operator").await)
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    // 3 documents, then per filing its extract and its acceptance.
    assert_eq!(
        (verification.intact, verification.entries_checked),
        (true, 3 + 2 * 39)
    );
    let store = app.gateway.store().unwrap().clone();
    let taken_apart = store.gauges(&[]).await.unwrap().runs_taken_apart;
    match backend {
        Backend::Sqlite => assert_eq!(taken_apart, 0),
        // The run holding the refused one (none, if it happened to be alone).
        Backend::Postgres => assert!(taken_apart <= 1, "{taken_apart}"),
    }
    // 40 more at once, none refused: no run is taken apart.
    assert_eq!(wave(40..80).await, vec![Ok(()); 40]);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM filings").await, 79);
    assert_eq!(
        store.gauges(&[]).await.unwrap().runs_taken_apart,
        taken_apart
    );
    app.gateway.shutdown().await.unwrap();
}
