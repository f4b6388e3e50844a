//! The forwarding duties, end to end over mutual TLS: §6 extracts to the
//! energy ministry, §6-1 form 402 to the finance ministry, the obligations
//! they fulfil and the deadlines watched. Cases run on SQLite and PostgreSQL.

#[macro_use]
mod common;

use prost::Message as _;
use std::time::Duration;

use common::{
    Backend, TestApp, TestClock, child::ChildGateway, fixtures::*, scalar, spawn_on_with, texts,
};
use minegate::{
    evidence::verify::{ArtifactKind, verify},
    proto::v1::{
        AcknowledgeExtractRequest, AcknowledgeFormRequest, DataCentreLocation, DocumentKind,
        EnergyExtract, ExtractDelivery, FetchDocumentRequest, FilingKind, FindingKind,
        GetDeliveryStatusRequest, GetSigningKeysRequest, ListFindingsRequest,
        ListObligationsRequest, ObligationKind, ObligationStatus, PullQuarterlyFormRequest,
        SigningKey, SubscribeRequest, TaxDataRow, VerifyLedgerRequest,
        compliance_service_client::ComplianceServiceClient, document_chunk::Part,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
    },
    tls::{
        Role,
        pki::{self, LeafOptions},
    },
};
use tonic::{Code, Streaming};

on_both_backends!(
    a_filing_reaches_the_subscriber_is_acknowledged_and_fulfils_its_obligation,
    unacknowledged_extracts_come_again_and_every_subscriber_gets_every_extract,
    form_402_has_exact_rows_a_stable_digest_and_a_new_revision_after_a_late_report,
    passing_a_due_date_marks_the_obligation_overdue_once_and_a_missing_report_is_found,
    two_subscribers_fetching_at_once_and_acknowledging_together_fulfil_each_obligation_once,
    a_connected_subscriber_gets_new_extracts_as_they_commit_within_its_window,
    a_subscriber_asking_for_more_in_flight_than_the_server_allows_gets_the_servers_limit,
    missing_reports_page_through_the_register_within_and_across_filers,
);

async fn keys(app: &TestApp) -> Vec<SigningKey> {
    ComplianceServiceClient::new(app.channel("operator").await)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

async fn next(stream: &mut Streaming<ExtractDelivery>) -> ExtractDelivery {
    next_within(stream, Duration::from_secs(5)).await
}

async fn next_within(stream: &mut Streaming<ExtractDelivery>, limit: Duration) -> ExtractDelivery {
    tokio::time::timeout(limit, stream.message())
        .await
        .unwrap_or_else(|_| panic!("an extract within {limit:?}"))
        .expect("a healthy stream")
        .expect("the stream stays open")
}

async fn subscribe(app: &TestApp, name: &str, max_in_flight: u32) -> Streaming<ExtractDelivery> {
    EnergyExtractServiceClient::new(app.channel(name).await)
        .subscribe(SubscribeRequest {
            max_in_flight,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Files a start notification for `bin` under `key` with the pool
/// 37.`octet`.0.0/16 (each filer its own: no overlap findings).
async fn file_start(
    filings: &mut FilingServiceClient<tonic::transport::Channel>,
    (bin, key, octet): (&str, &str, usize),
    planned_start: Option<minegate::proto::v1::Date>,
    documents: &[minegate::proto::v1::DocumentRef],
) {
    let pool = format!("37.{octet}.0.0/16");
    filings
        .submit_start_notification(start_notification(
            bin,
            key,
            planned_start,
            &[&pool],
            documents,
        ))
        .await
        .unwrap();
}

/// The second energy system's client certificate, `pki/energy-backup.*`
/// (its role comes from [`with_second_energy_system`]).
fn issue_backup_certificate(app: &TestApp) {
    pki::issue(
        &app.pki_dir(),
        "energy-backup",
        &LeafOptions::client("backup", Some("urn:minegate:energy-backup")),
    )
    .unwrap();
}

fn with_second_energy_system(config: &mut minegate::config::Config) {
    config
        .roles
        .insert("urn:minegate:energy-backup".into(), Role::Energy);
}

async fn a_filing_reaches_the_subscriber_is_acknowledged_and_fulfils_its_obligation(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock.clone(), |_| {}).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "A").await;
    let mut stream = subscribe(&app, "energy", 0).await;

    let receipt = FilingServiceClient::new(authority.clone())
        .submit_start_notification(start_notification(
            BIN_A,
            "a",
            date(2026, 6, 1),
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    // The receipt names the obligation the filing created.
    assert_eq!(receipt.obligations.len(), 1);
    let obligation = &receipt.obligations[0];
    assert_eq!(obligation.kind(), ObligationKind::EnergyExtract);
    assert_eq!(obligation.due_date, date(2026, 3, 30));
    assert_eq!(obligation.status(), ObligationStatus::Pending);

    // Pushed to the subscriber as it commits: within a second.
    let delivery = tokio::time::timeout(Duration::from_secs(1), stream.message())
        .await
        .expect("the extract within a second")
        .unwrap()
        .unwrap();
    assert_eq!(delivery.attempt, 1);
    let extract = delivery.extract.unwrap();
    let proven = verify(
        ArtifactKind::Extract,
        extract.evidence.as_ref(),
        &keys(&app).await,
    )
    .expect("the extract's evidence holds");
    assert_eq!(
        extract.evidence.as_ref().unwrap().artifact,
        EnergyExtract {
            evidence: None,
            ..extract.clone()
        }
        .encode_to_vec(),
        "the evidence is of the extract as delivered"
    );
    assert!(proven.checkpoint.size > extract.evidence.as_ref().unwrap().leaf_index);
    assert_eq!(obligation.extract_id, extract.extract_id);
    // Exactly whom it concerns and items 6.1-6.4: no bank details, contacts,
    // IPs, money or consumption — the whole message is this.
    let expected = EnergyExtract {
        extract_id: extract.extract_id.clone(),
        source_filing_id: receipt.filing_id.clone(),
        source_filing_kind: FilingKind::StartNotification as i32,
        bin_or_iin: BIN_A.into(),
        name: format!("TOO Qazaq Hash {BIN_A}"),
        customs_declaration_or_title: vec![documents[0].clone()],
        data_centres: vec![DataCentreLocation {
            address: "Ekibastuz, industrial zone 3, building 7".into(),
            kato_code: Some("552210000".into()),
        }],
        residency: vec![documents[1].clone()],
        grid_connection_conditions: vec![documents[2].clone()],
        created_at: receipt.received_at,
        due_date: date(2026, 3, 30),
        evidence: extract.evidence.clone(),
        ..Default::default()
    };
    assert_eq!(extract, expected);

    // The documents it references can be fetched, byte for byte.
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    let mut chunks = energy
        .fetch_document(FetchDocumentRequest {
            sha256: documents[2].sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let Some(Part::Metadata(meta)) = chunks.message().await.unwrap().unwrap().part else {
        panic!("metadata first")
    };
    assert_eq!(meta.kind(), DocumentKind::GridConnectionConditions);
    assert_eq!(meta.media_type, "application/xml");
    let mut bytes = Vec::new();
    while let Some(chunk) = chunks.message().await.unwrap() {
        let Some(Part::Data(data)) = chunk.part else {
            panic!("data after metadata")
        };
        bytes.extend(data);
    }
    assert_eq!(bytes, xml("A"));

    // Acknowledge: the first time fulfils the obligation; repeats are the same bytes.
    clock.set("2026-03-21T06:00:00Z");
    let ack = energy
        .acknowledge(AcknowledgeExtractRequest {
            extract_id: extract.extract_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.subscriber, "urn:minegate:energy");
    assert!(ack.deadline_met);
    verify(
        ArtifactKind::ExtractAck,
        ack.evidence.as_ref(),
        &keys(&app).await,
    )
    .expect("the acknowledgement's evidence holds");
    clock.set("2026-03-25T06:00:00Z");
    let again = energy
        .acknowledge(AcknowledgeExtractRequest {
            extract_id: extract.extract_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, ack);

    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let obligations = compliance
        .list_obligations(ListObligationsRequest {
            kind: ObligationKind::EnergyExtract as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .obligations;
    assert_eq!(obligations.len(), 1);
    assert_eq!(obligations[0].status(), ObligationStatus::Fulfilled);
    assert_eq!(obligations[0].fulfilled_at, ack.acknowledged_at);

    let status = compliance
        .get_delivery_status(GetDeliveryStatusRequest {
            filing_id: receipt.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.extract_id, extract.extract_id);
    assert_eq!(status.attempts.len(), 1);
    assert_eq!(status.attempts[0].subscriber, "urn:minegate:energy");
    assert_eq!(status.acknowledgements.len(), 1);
    assert_eq!(
        status.acknowledgements[0].acknowledged_at,
        ack.acknowledged_at
    );

    // Energy cannot fetch what it was not sent: the same answer as for nothing.
    let other = upload(
        authority,
        DocumentKind::Residency,
        "application/pdf",
        "other.pdf",
        &pdf("never sent"),
        1024,
    )
    .await
    .unwrap();
    let refused = energy
        .fetch_document(FetchDocumentRequest {
            sha256: other.sha256.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message().to_owned()),
        (Code::NotFound, format!("no document {}", other.sha256))
    );
    let nothing = energy
        .fetch_document(FetchDocumentRequest {
            sha256: "cd".repeat(32),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (nothing.code(), nothing.message().to_owned()),
        (Code::NotFound, format!("no document {}", "cd".repeat(32)))
    );
    let never = energy
        .acknowledge(AcknowledgeExtractRequest {
            extract_id: "ext-unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(never.code(), Code::NotFound);

    let ledger = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(ledger.intact);
    // 4 documents, extract created, filing accepted, sent, acknowledged, obligation fulfilled
    assert_eq!(ledger.entries_checked, 9);
    app.gateway.shutdown().await.unwrap();
}

async fn unacknowledged_extracts_come_again_and_every_subscriber_gets_every_extract(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock, |config| {
        with_second_energy_system(config);
        config.limits.ack_deadline_ms = 1_000;
    })
    .await
    else {
        return;
    };
    issue_backup_certificate(&app);
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "A").await;
    let mut filings = FilingServiceClient::new(authority);
    for (bin, key) in [(BIN_A, "a"), (BIN_B, "b"), (BIN_C, "c")] {
        let octet = 100 + bin[9..11].parse::<usize>().unwrap();
        file_start(
            &mut filings,
            (bin, key, octet),
            date(2026, 6, 1),
            &documents,
        )
        .await;
    }

    // The first subscriber takes two at a time, acknowledges the first, then drops.
    let mut stream = subscribe(&app, "energy", 2).await;
    let first = next(&mut stream).await.extract.unwrap();
    let second = next(&mut stream).await.extract.unwrap();
    assert_eq!(
        (first.bin_or_iin.as_str(), second.bin_or_iin.as_str()),
        (BIN_A, BIN_B)
    );
    // The third waits until there is room.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err()
    );
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    energy
        .acknowledge(AcknowledgeExtractRequest {
            extract_id: first.extract_id.clone(),
        })
        .await
        .unwrap();
    let third = next(&mut stream).await;
    assert_eq!(
        (
            third.extract.as_ref().unwrap().bin_or_iin.as_str(),
            third.attempt
        ),
        (BIN_C, 1)
    );
    // Not acknowledged within the deadline: the second comes again on the same stream.
    let resent = next(&mut stream).await;
    assert_eq!(
        (resent.extract.unwrap().extract_id, resent.attempt),
        (second.extract_id.clone(), 2)
    );
    drop(stream);

    // Reconnecting: everything unacknowledged comes again, nothing acknowledged does.
    let mut stream = subscribe(&app, "energy", 10).await;
    let again: Vec<(String, u32)> = vec![next(&mut stream).await, next(&mut stream).await]
        .into_iter()
        .map(|d| (d.extract.unwrap().bin_or_iin, d.attempt))
        .collect();
    assert_eq!(again[0].0, BIN_B);
    assert!(again[0].1 >= 3, "{again:?}");
    assert_eq!(again[1], (BIN_C.to_owned(), 2));

    // The second energy system is its own consumer: it gets all three, from attempt 1.
    let mut backup = subscribe(&app, "energy-backup", 10).await;
    let mut received = Vec::new();
    for _ in 0..3 {
        let d = next(&mut backup).await;
        received.push((d.extract.unwrap().bin_or_iin, d.attempt));
    }
    assert_eq!(
        received,
        vec![
            (BIN_A.to_owned(), 1),
            (BIN_B.to_owned(), 1),
            (BIN_C.to_owned(), 1)
        ]
    );
    app.gateway.shutdown().await.unwrap();
}

async fn form_402_has_exact_rows_a_stable_digest_and_a_new_revision_after_a_late_report(
    backend: Backend,
) {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock.clone(), |_| {}).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "A").await;
    let mut filings = FilingServiceClient::new(authority);
    for (bin, key) in [(BIN_A, "a"), (BIN_B, "b"), (BIN_C, "c")] {
        let octet = 100 + bin[9..11].parse::<usize>().unwrap();
        file_start(
            &mut filings,
            (bin, key, octet),
            date(2026, 2, 10),
            &documents,
        )
        .await;
    }
    clock.set("2026-04-06T06:00:00Z");
    let pool = |bin: &str| format!("37.{}.0.0/16", 100 + bin[9..11].parse::<u32>().unwrap());
    let a = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A,
            "a-q1",
            2026,
            1,
            1_234_567,
            &[&pool(BIN_A)],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let b1 = filings
        .submit_quarterly_report(quarterly_report(
            BIN_B,
            "b-q1",
            2026,
            1,
            500_000_000,
            &[&pool(BIN_B)],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    // B corrects its report: revision 2 replaces revision 1 in the form.
    let b2 = filings
        .submit_quarterly_report(quarterly_report(
            BIN_B,
            "b-q1-fix",
            2026,
            1,
            510_000_001,
            &[&pool(BIN_B)],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((b1.revision, b2.revision), (1, 2));
    // The first report of the quarter created its FINANCE_FORM obligation.
    assert_eq!(a.obligations.len(), 2);
    assert_eq!(a.obligations[1].kind(), ObligationKind::FinanceForm);
    assert_eq!(a.obligations[1].due_date, date(2026, 5, 15));
    assert_eq!(b1.obligations.len(), 1, "only the extract's");

    let mut finance = FinanceServiceClient::new(app.channel("finance").await);
    clock.set("2026-05-02T06:00:00Z");
    let form = finance
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    verify(
        ArtifactKind::FormBody,
        form.evidence.as_ref(),
        &keys(&app).await,
    )
    .expect("the form's evidence holds");
    let body = form.body.clone().unwrap();
    assert_eq!((body.year, body.quarter, body.revision), (2026, 1, 1));
    assert_eq!(body.due_date, date(2026, 5, 15));
    let location = || {
        vec![DataCentreLocation {
            address: "Ekibastuz, industrial zone 3, building 7".into(),
            kato_code: Some("552210000".into()),
        }]
    };
    assert_eq!(
        body.rows,
        vec![
            TaxDataRow {
                payer_name: format!("TOO Qazaq Hash {BIN_B}"),
                bin_or_iin: BIN_B.into(),
                legal_address: "Ekibastuz, Mashkhur Zhusup 118, Pavlodar region".into(),
                locations: location(),
                electricity_wh: 510_000_001,
                electricity_kwh: "510000.001".into(),
                source_report_id: b2.filing_id.clone(),
                source_report_revision: 2,
            },
            TaxDataRow {
                payer_name: format!("TOO Qazaq Hash {BIN_A}"),
                bin_or_iin: BIN_A.into(),
                legal_address: "Ekibastuz, Mashkhur Zhusup 118, Pavlodar region".into(),
                locations: location(),
                electricity_wh: 1_234_567,
                electricity_kwh: "1234.567".into(),
                source_report_id: a.filing_id.clone(),
                source_report_revision: 1,
            },
        ]
    );
    let totals = body.totals.clone().unwrap();
    assert_eq!(
        (
            totals.payers,
            totals.electricity_wh,
            totals.electricity_kwh.as_str()
        ),
        (2, 511_234_568, "511234.568")
    );
    assert_eq!(
        form.body_sha256,
        minegate::domain::Sha256Hex::of(&prost::Message::encode_to_vec(&body)).to_string()
    );

    // Pulled again, unchanged: the same revision and digest.
    clock.set("2026-05-03T06:00:00Z");
    let again = finance
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // A pull is a read: nothing was appended, so even the evidence, under
    // the same checkpoint, is the same.
    assert_eq!(again, form);

    // A wrong digest is refused; the right one fulfils the obligation on time.
    let wrong = finance
        .acknowledge(AcknowledgeFormRequest {
            year: 2026,
            quarter: 1,
            revision: 1,
            body_sha256: "00".repeat(32),
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    assert_eq!(
        wrong.message(),
        format!(
            "body_sha256 does not match revision 1 of form 402 for 2026 Q1 (its digest is {})",
            form.body_sha256
        )
    );
    let ack = finance
        .acknowledge(AcknowledgeFormRequest {
            year: 2026,
            quarter: 1,
            revision: 1,
            body_sha256: form.body_sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ack.deadline_met);
    verify(
        ArtifactKind::FormAck,
        ack.evidence.as_ref(),
        &keys(&app).await,
    )
    .expect("the form acknowledgement's evidence holds");

    // C reports late; the next pull is revision 2 with three rows.
    clock.set("2026-05-04T06:00:00Z");
    let c = filings
        .submit_quarterly_report(quarterly_report(
            BIN_C,
            "c-q1",
            2026,
            1,
            7,
            &[&pool(BIN_C)],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(c.findings[0].kind(), FindingKind::LateQuarterlyReport);
    let revised = finance
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let body = revised.body.unwrap();
    assert_eq!(body.revision, 2);
    assert_eq!(
        body.rows
            .iter()
            .map(|r| r.bin_or_iin.as_str())
            .collect::<Vec<_>>(),
        [BIN_B, BIN_A, BIN_C]
    );
    assert_eq!(body.totals.unwrap().electricity_wh, 511_234_575);
    assert_ne!(revised.body_sha256, form.body_sha256);

    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let finance_obligations = compliance
        .list_obligations(ListObligationsRequest {
            kind: ObligationKind::FinanceForm as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .obligations;
    assert_eq!(finance_obligations.len(), 1);
    assert_eq!(finance_obligations[0].status(), ObligationStatus::Fulfilled);
    let status = compliance
        .get_delivery_status(GetDeliveryStatusRequest {
            filing_id: a.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status
            .form_revisions
            .iter()
            .map(|f| f.revision)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(
        status.form_revisions[0].acknowledged_at,
        ack.acknowledged_at
    );
    assert_eq!(status.form_revisions[1].acknowledged_at, None);
    app.gateway.shutdown().await.unwrap();
}

async fn passing_a_due_date_marks_the_obligation_overdue_once_and_a_missing_report_is_found(
    backend: Backend,
) {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock.clone(), |config| {
        config.limits.obligation_scan_ms = 50
    })
    .await
    else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "A").await;
    FilingServiceClient::new(authority)
        .submit_start_notification(start_notification(
            BIN_A,
            "a",
            date(2026, 2, 10),
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap();
    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let url = app.config.database_url.clone();
    let overdue_entries = || {
        scalar(
            &url,
            "SELECT COUNT(*) FROM ledger WHERE kind = 'OBLIGATION_OVERDUE'",
        )
    };

    // Due 15 January; on the 15th it is still only pending.
    clock.set("2026-01-15T12:00:00Z");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(overdue_entries().await, 0);
    clock.set("2026-01-16T06:00:00Z");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while overdue_entries().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked overdue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Many more scans: still exactly once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(overdue_entries().await, 1);
    let overdue = compliance
        .list_obligations(ListObligationsRequest {
            status: ObligationStatus::Overdue as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .obligations;
    assert_eq!(overdue.len(), 1);
    assert_eq!(overdue[0].due_date, date(2026, 1, 15));

    // The Q1 report is due 10 April: missing from the 11th, not before.
    let missing = |compliance: &mut ComplianceServiceClient<_>| {
        let request = ListFindingsRequest {
            kind: FindingKind::MissingQuarterlyReport as i32,
            ..Default::default()
        };
        let mut compliance = compliance.clone();
        async move {
            compliance
                .list_findings(request)
                .await
                .unwrap()
                .into_inner()
                .findings
        }
    };
    clock.set("2026-04-10T12:00:00Z");
    assert_eq!(missing(&mut compliance).await, vec![]);
    clock.set("2026-04-11T06:00:00Z");
    let found = missing(&mut compliance).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].bin_or_iin, BIN_A);
    assert_eq!(found[0].days, 1);
    assert_eq!(
        found[0].detail,
        "no quarterly report for 2026 Q1, due 2026-04-10: 1 days overdue"
    );
    // All findings: the stored ones (none here) and the computed one.
    let all = compliance
        .list_findings(ListFindingsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.findings.len(), 1);
    assert_eq!(all.next_page_token, "");
    app.gateway.shutdown().await.unwrap();
}

/// A second gateway (a `minegate serve` process, killed when dropped) on
/// `app`'s PostgreSQL database, PKI and signing key, serving, and an energy
/// channel to it.
async fn second_replica(app: &TestApp) -> (ChildGateway, tonic::transport::Channel) {
    let other = ChildGateway::start(app.dir.path(), &app.config.database_url, &[]).await;
    let channel = other.channel("energy").await;
    (other, channel)
}

/// Two gateways on one PostgreSQL database: a filing through one reaches a
/// subscriber on the other (a separate `minegate serve` process).
#[tokio::test]
async fn a_filing_through_one_gateway_reaches_a_subscriber_on_another() {
    let Some(server) = common::postgres_url() else {
        return;
    };
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(Backend::Postgres, clock, |_| {}).await else {
        return;
    };
    let _ = server;
    let (other, channel) = second_replica(&app).await;
    let mut stream = EnergyExtractServiceClient::new(channel)
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    // Nothing pending yet.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err()
    );

    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "A").await;
    let receipt = FilingServiceClient::new(authority)
        .submit_start_notification(start_notification(
            BIN_A,
            "a",
            date(2026, 6, 1),
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let delivery = tokio::time::timeout(Duration::from_secs(3), stream.message())
        .await
        .expect("woken by the other replica within 3 s")
        .unwrap()
        .unwrap();
    assert_eq!(
        delivery.extract.unwrap().source_filing_id,
        receipt.filing_id
    );
    drop(other);
    app.gateway.shutdown().await.unwrap();
}

/// Two gateways on one PostgreSQL database: a subscriber on one fetches a
/// document of each extract and acknowledges the extract through the other
/// the moment it arrives, racing the sending's record, which the first
/// commits: every fetch and acknowledgement succeeds, none is NOT_FOUND.
#[tokio::test]
async fn an_extract_sent_by_one_replica_is_acknowledged_through_another_at_once() {
    const EXTRACTS: usize = 48;
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(Backend::Postgres, clock, |_| {}).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let filings = FilingServiceClient::new(authority.clone());
    let mut filed = tokio::task::JoinSet::new();
    for i in 0..EXTRACTS {
        let (mut filings, authority) = (filings.clone(), authority.clone());
        filed.spawn(async move {
            // Documents of its own: only this extract names them.
            let documents = upload_documents(authority, &format!("race-{i}")).await;
            let (bin, key) = (generated_bin(i as u32), format!("race-{i}"));
            file_start(&mut filings, (&bin, &key, i), date(2026, 6, 1), &documents).await;
        });
    }
    filed.join_all().await;
    let (other, channel) = second_replica(&app).await;
    let started = std::time::Instant::now();
    let mut stream = EnergyExtractServiceClient::new(channel)
        .subscribe(SubscribeRequest {
            max_in_flight: 64,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let here = EnergyExtractServiceClient::new(app.channel("energy").await);
    let mut acks = tokio::task::JoinSet::new();
    for _ in 0..EXTRACTS {
        let delivery = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        let extract = delivery.extract.unwrap();
        let document = extract.residency[0].clone();
        let mut here = here.clone();
        acks.spawn(async move {
            let fetched = here
                .fetch_document(FetchDocumentRequest {
                    sha256: document.sha256,
                })
                .await;
            let mut chunks = fetched.map_err(|s| (s.code(), s.message().to_owned()))?;
            let mut size = 0;
            while let Some(chunk) = chunks.get_mut().message().await.unwrap() {
                if let Some(Part::Data(data)) = chunk.part {
                    size += data.len() as u64;
                }
            }
            assert_eq!(size, document.size_bytes);
            let extract_id = extract.extract_id;
            here.acknowledge(AcknowledgeExtractRequest { extract_id })
                .await
                .map(|_| ())
                .map_err(|status| (status.code(), status.message().to_owned()))
        });
    }
    let outcomes: Vec<_> = acks.join_all().await;
    // The window (16) fills three times: each time the stream learns of
    // the acknowledgements made elsewhere from the other replica's notice
    // (within 250 ms), not from its 5-second poll, which would take 10 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{took:?}");
    let refused: Vec<_> = outcomes.into_iter().filter_map(Result::err).collect();
    assert_eq!(refused, []);
    assert_eq!(
        scalar(
            &app.config.database_url,
            "SELECT COUNT(*) FROM extract_acks"
        )
        .await,
        EXTRACTS as i64
    );
    drop(other);
    app.gateway.shutdown().await.unwrap();
}

/// Two energy systems receive 12 extracts; each fetches every document the
/// moment an extract arrives (before its sending may have committed), then
/// both acknowledge everything at once, so the writer takes their
/// acknowledgements of the same extract together.
async fn two_subscribers_fetching_at_once_and_acknowledging_together_fulfil_each_obligation_once(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock.clone(), with_second_energy_system).await else {
        return;
    };
    issue_backup_certificate(&app);
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "P").await;
    let mut filings = FilingServiceClient::new(authority);
    const FILINGS: usize = 12;
    for n in 0..FILINGS {
        let (bin, key) = (generated_bin(n as u32), format!("p{n}"));
        file_start(
            &mut filings,
            (&bin, &key, 10 + n),
            date(2026, 6, 1),
            &documents,
        )
        .await;
    }

    let mut received = Vec::new();
    for name in ["energy", "energy-backup"] {
        let channel = app.channel(name).await;
        let mut stream = subscribe(&app, name, 0).await;
        let mut energy = EnergyExtractServiceClient::new(channel);
        let mut ids = Vec::new();
        for _ in 0..FILINGS {
            let extract = next(&mut stream).await.extract.unwrap();
            for document in [
                &extract.customs_declaration_or_title,
                &extract.residency,
                &extract.grid_connection_conditions,
            ]
            .into_iter()
            .flatten()
            {
                let chunks: Vec<_> = energy
                    .fetch_document(FetchDocumentRequest {
                        sha256: document.sha256.clone(),
                    })
                    .await
                    .unwrap_or_else(|status| {
                        panic!("{name} fetching {}: {status:?}", document.sha256)
                    })
                    .into_inner()
                    .message()
                    .await
                    .unwrap()
                    .into_iter()
                    .collect();
                assert_eq!(chunks.len(), 1);
            }
            ids.push(extract.extract_id);
        }
        received.push((energy, ids, stream));
    }
    let ids: Vec<Vec<String>> = received.iter().map(|(_, ids, _)| ids.clone()).collect();
    assert_eq!(ids[0], ids[1]);

    // The acknowledgements go to the store itself, all queued before its
    // writer runs (this test's runtime has one thread), so they are taken
    // as one batch: each extract's two acknowledgements side by side, and
    // the first one repeated at the end.
    drop(received);
    let (url, clock) = (app.config.database_url.clone(), clock.clone());
    app.gateway.shutdown().await.unwrap();
    let store = minegate::store::open(&url, clock, common::signing(&app.config))
        .await
        .unwrap();
    let mut jobs: Vec<(String, &str)> = Vec::new();
    for id in &ids[0] {
        jobs.push((id.clone(), "urn:minegate:energy"));
        jobs.push((id.clone(), "urn:minegate:energy-backup"));
    }
    jobs.push((ids[0][0].clone(), "urn:minegate:energy"));
    let mut acks = tokio::task::JoinSet::new();
    for (n, (id, subscriber)) in jobs.into_iter().enumerate() {
        let store = store.clone();
        acks.spawn(async move {
            let build = Box::new(move |facts: &minegate::store::AckFacts| {
                format!("receipt {n} at {}", facts.acknowledged_at).into_bytes()
            });
            let recorded = store
                .acknowledge_extract(&id, subscriber, build)
                .await
                .unwrap()
                .unwrap();
            let proven = recorded.evidence.is_some();
            (n, String::from_utf8(recorded.bytes).unwrap(), proven)
        });
    }
    let mut receipts = acks.join_all().await;
    receipts.sort();
    let at = "2026-03-20 06:00:00 UTC";
    // Each first acknowledgement is proven by the writer from its batch's
    // checkpoint; the repeat (24) gives the first receipt, proven by a read.
    let expected: Vec<(usize, String, bool)> = (0..25)
        .map(|n| {
            (
                n,
                format!("receipt {} at {at}", if n == 24 { 0 } else { n }),
                n != 24,
            )
        })
        .collect();
    assert_eq!(receipts, expected);

    let url = &url;
    let count = |sql: &'static str| async move { scalar(url, sql).await };
    assert_eq!(count("SELECT COUNT(*) FROM extract_acks").await, 24);
    assert_eq!(
        count("SELECT COUNT(*) FROM obligations WHERE kind = 'ENERGY_EXTRACT' AND status = 'FULFILLED'").await,
        12
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM ledger WHERE kind = 'OBLIGATION_FULFILLED'").await,
        12
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_ACKNOWLEDGED'").await,
        24
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_SENT'").await,
        24
    );
    // SQLite took the batch's acknowledgements as runs, none refused whole.
    assert_eq!(store.gauges(&[]).await.unwrap().runs_taken_apart, 0);
    let verification = minegate::store::verify_ledger(&*store).await.unwrap();
    // 3 documents; per filing its extract and acceptance; 24 sendings, 24
    // acknowledgements, 12 obligations fulfilled.
    assert_eq!(
        (verification.entries_checked, verification.first_broken),
        (87, None)
    );

    // Sendings queued together, as streams taking deliveries at once queue
    // them, are recorded in one batch (one run on PostgreSQL): an extract
    // sent twice in it counts both, a failed one takes no number.
    let (energy, backup) = ("urn:minegate:energy", "urn:minegate:energy-backup");
    let at = chrono::DateTime::parse_from_rfc3339("2026-03-20T06:00:01Z")
        .unwrap()
        .to_utc();
    let (first, second) = (ids[0][0].clone(), ids[0][1].clone());
    let sendings = [
        (vec![first.clone(), second.clone()], vec![], energy),
        (vec![first.clone()], vec![], energy),
        (
            vec![],
            vec![(second.clone(), "too large".to_owned())],
            backup,
        ),
        (vec![first.clone()], vec![], backup),
    ];
    let mut queued = Vec::new();
    for (sent, failed, subscriber) in sendings {
        queued.push(
            store
                .queue_attempts(sent, failed, subscriber, at)
                .await
                .unwrap(),
        );
    }
    let mut numbers = Vec::new();
    for answer in queued {
        numbers.push(answer.await.unwrap().unwrap());
    }
    assert_eq!(numbers, vec![vec![2, 2], vec![3], vec![], vec![2]]);
    assert_eq!(
        count("SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_SENT'").await,
        28
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_SEND_FAILED'").await,
        1
    );
    let attempts = texts(
        url,
        &format!(
            "SELECT subscriber || ' ' || attempt FROM extract_attempts \
             WHERE extract_id = '{first}' ORDER BY subscriber, attempt"
        ),
    )
    .await;
    assert_eq!(
        attempts,
        [
            "urn:minegate:energy 1",
            "urn:minegate:energy 2",
            "urn:minegate:energy 3",
            "urn:minegate:energy-backup 1",
            "urn:minegate:energy-backup 2",
        ]
    );
    store.close().await;
}

/// A stream that has read what was pending gets what commits afterwards:
/// on SQLite handed on by the commit itself (no read), on PostgreSQL read.
/// Either way never more than its window, and the rest as soon as it
/// acknowledges (not at the next five-second look).
async fn a_connected_subscriber_gets_new_extracts_as_they_commit_within_its_window(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock, |config| {
        // No sending again within this test.
        config.limits.ack_deadline_ms = 60_000;
    })
    .await
    else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "W").await;
    let mut filings = FilingServiceClient::new(authority);
    let bins: Vec<String> = (0..4).map(|n| generated_bin(100 + n)).collect();
    let mut file = async |n: usize| {
        let key = format!("w{n}");
        file_start(
            &mut filings,
            (&bins[n], &key, 120 + n),
            date(2026, 6, 1),
            &documents,
        )
        .await;
    };
    file(0).await;
    let mut stream = subscribe(&app, "energy", 2).await;
    let first = next(&mut stream).await;
    // The stream has read what was pending; these commit while it is open.
    for n in 1..4 {
        file(n).await;
    }
    let second = next(&mut stream).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), stream.message())
            .await
            .is_err(),
        "the window of two is full"
    );
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    let mut received = vec![first, second];
    for n in 0..2 {
        let extract_id = received[n].extract.as_ref().unwrap().extract_id.clone();
        energy
            .acknowledge(AcknowledgeExtractRequest { extract_id })
            .await
            .unwrap();
        received.push(next_within(&mut stream, Duration::from_secs(2)).await);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), stream.message())
                .await
                .is_err(),
            "one acknowledgement makes room for one"
        );
    }
    let received: Vec<(String, u32)> = received
        .into_iter()
        .map(|d| (d.extract.unwrap().bin_or_iin, d.attempt))
        .collect();
    let expected: Vec<(String, u32)> = bins.iter().map(|bin| (bin.clone(), 1)).collect();
    assert_eq!(received, expected);
    app.gateway.shutdown().await.unwrap();
}

/// SQLite: a commit hands on the extracts it made, each with the sequence
/// number and body a read of the pending extracts gives, so a stream that
/// knows everything before them sends them without reading.
#[tokio::test]
async fn a_commit_hands_on_the_extracts_it_made_as_a_read_would_give_them() {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let app = spawn_on_with(Backend::Sqlite, clock, |_| {})
        .await
        .expect("SQLite needs no server");
    let store = app.gateway.store().expect("a gateway's store").clone();
    let mut changes = store.changes();
    // The first commit is the scan for overdue obligations at start.
    while changes.borrow_and_update().count == 0 {
        changes.changed().await.unwrap();
    }
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "H").await;
    let mut filings = FilingServiceClient::new(authority);
    let mut handed_on = Vec::new();
    let first = changes.borrow_and_update().count;
    for (n, bin) in [BIN_A, BIN_B].into_iter().enumerate() {
        let before = changes.borrow_and_update().count;
        let key = format!("h{n}");
        file_start(
            &mut filings,
            (bin, &key, 140 + n),
            date(2026, 6, 1),
            &documents,
        )
        .await;
        // The change moves before the receipt is answered.
        let change = changes.borrow_and_update().clone();
        let made = change.made_since(before).expect("known here");
        assert_eq!((change.count, made.len()), (before + 1, 1));
        handed_on.extend(made.into_iter().cloned());
    }
    // A stream that looked last before both finds both, in order.
    let change = changes.borrow_and_update().clone();
    let made: Vec<i64> = change
        .made_since(first)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(made, [1, 2]);
    let pending = store
        .pending_extracts("urn:minegate:energy", 0, 10, &[])
        .await
        .unwrap();
    assert_eq!(
        pending
            .iter()
            .map(|p| (p.seq, p.attempts))
            .collect::<Vec<_>>(),
        vec![(1, 0), (2, 0)]
    );
    let read_as = |p: &minegate::store::PendingExtract| {
        (p.seq, p.extract_id.clone(), p.body.clone(), p.attempts)
    };
    assert_eq!(
        handed_on.iter().map(read_as).collect::<Vec<_>>(),
        pending.iter().map(read_as).collect::<Vec<_>>()
    );
    // What a commit hands on is proven already, from the commit's own
    // checkpoint (a stream sends it without reading); a read is proven later.
    let keys = keys(&app).await;
    for extract in &handed_on {
        let evidence = extract.evidence.clone().expect("proven by the writer");
        let evidence = minegate::service::to_pb_evidence(*evidence, extract.body.clone());
        verify(ArtifactKind::Extract, Some(&evidence), &keys).unwrap();
    }
    assert!(pending.iter().all(|p| p.evidence.is_none()));
    let bins: Vec<String> = pending
        .iter()
        .map(|p| {
            <EnergyExtract as prost::Message>::decode(p.body.as_slice())
                .unwrap()
                .bin_or_iin
        })
        .collect();
    assert_eq!(bins, vec![BIN_A, BIN_B]);
    app.gateway.shutdown().await.unwrap();
}

/// `limits.max_in_flight` is a ceiling: a subscriber asking for 1,024 gets
/// the server's three, and one more only for each acknowledgement.
async fn a_subscriber_asking_for_more_in_flight_than_the_server_allows_gets_the_servers_limit(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock, |config| {
        config.limits.max_in_flight = 3;
        config.limits.ack_deadline_ms = 60_000;
    })
    .await
    else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "C").await;
    let mut filings = FilingServiceClient::new(authority);
    for n in 0..5usize {
        let (bin, key) = (generated_bin(200 + n as u32), format!("c{n}"));
        file_start(
            &mut filings,
            (&bin, &key, 150 + n),
            date(2026, 6, 1),
            &documents,
        )
        .await;
    }
    let mut stream = subscribe(&app, "energy", 1024).await;
    let mut received = Vec::new();
    for _ in 0..3 {
        received.push(next(&mut stream).await.extract.unwrap().extract_id);
    }
    assert!(
        quiet(&mut stream).await,
        "three in flight, the server's limit"
    );
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    energy
        .acknowledge(AcknowledgeExtractRequest {
            extract_id: received[0].clone(),
        })
        .await
        .unwrap();
    received.push(next(&mut stream).await.extract.unwrap().extract_id);
    assert!(
        quiet(&mut stream).await,
        "one acknowledgement, room for one"
    );
    let sent = "SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_SENT'";
    assert_eq!(scalar(&app.config.database_url, sent).await, 4);
}

/// Nothing more arrives on `stream` within half a second.
async fn quiet(stream: &mut Streaming<ExtractDelivery>) -> bool {
    tokio::time::timeout(Duration::from_millis(500), stream.message())
        .await
        .is_err()
}

/// MISSING_QUARTERLY_REPORT findings are computed a register page at a
/// time: a page may end inside one filer's findings or between filers, and
/// the next begins exactly there.
async fn missing_reports_page_through_the_register_within_and_across_filers(backend: Backend) {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock.clone(), |_| {}).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "M").await;
    let mut filings = FilingServiceClient::new(authority);
    for (n, bin) in [BIN_A, BIN_B, BIN_C].into_iter().enumerate() {
        let pool = format!("95.{}.0.0/16", 60 + n);
        let start = start_notification(
            bin,
            &format!("m{n}"),
            date(2026, 2, 10),
            &[&pool],
            &documents,
        );
        filings.submit_start_notification(start).await.unwrap();
    }
    // Q1, Q2 and Q3 of 2026 are due by 10 October; B reported Q2.
    clock.set("2026-10-11T06:00:00Z");
    let report = quarterly_report(
        BIN_B,
        "b-q2",
        2026,
        2,
        1_000_000,
        &["95.61.0.0/16"],
        &documents,
    );
    filings.submit_quarterly_report(report).await.unwrap();
    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let mut page = async |bin: &str, size: u32, token: String| {
        let page = compliance
            .list_findings(ListFindingsRequest {
                kind: FindingKind::MissingQuarterlyReport as i32,
                bin_or_iin: bin.to_owned(),
                page_size: size,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<String> = page.findings.iter().map(|f| f.finding_id.clone()).collect();
        (ids, page.next_page_token)
    };
    let id = |bin: &str, quarter: u32| format!("missing-{bin}-2026Q{quarter}");
    let (first, token) = page("", 3, String::new()).await;
    assert_eq!(first, [id(BIN_A, 1), id(BIN_A, 2), id(BIN_A, 3)]);
    assert_eq!(token, "m1.0");
    let (second, token) = page("", 3, token).await;
    assert_eq!(second, [id(BIN_B, 1), id(BIN_B, 3), id(BIN_C, 1)]);
    assert_eq!(token, "m2.1");
    let (third, token) = page("", 3, token).await;
    assert_eq!(third, [id(BIN_C, 2), id(BIN_C, 3)]);
    assert_eq!(token, "");
    // One filer's, two at a time.
    let (first, token) = page(BIN_C, 2, String::new()).await;
    assert_eq!(
        (first, token.as_str()),
        (vec![id(BIN_C, 1), id(BIN_C, 2)], "m0.2")
    );
    let (rest, token) = page(BIN_C, 2, token).await;
    assert_eq!((rest, token.as_str()), (vec![id(BIN_C, 3)], ""));
    app.gateway.shutdown().await.unwrap();
}

/// `limits.max_subscribe_streams_per_identity`: past it a new Subscribe of
/// the same identity is RESOURCE_EXHAUSTED; once a stream has ended it is
/// served again.
#[tokio::test]
async fn an_identity_past_its_subscribe_streams_is_refused_until_one_ends() {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let app = spawn_on_with(Backend::Sqlite, clock, |config| {
        config.limits.max_subscribe_streams_per_identity = 2;
    })
    .await
    .unwrap();
    let first = subscribe(&app, "energy", 16).await;
    let _second = subscribe(&app, "energy", 16).await;
    let refused = EnergyExtractServiceClient::new(app.channel("energy").await)
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            Code::ResourceExhausted,
            "urn:minegate:energy already has 2 Subscribe streams open \
             (limits.max_subscribe_streams_per_identity); end one first"
        )
    );
    assert_eq!(
        tonic_types::StatusExt::get_details_retry_info(&refused)
            .unwrap()
            .retry_delay,
        Some(Duration::from_secs(1))
    );
    drop(first);
    // The gateway sees the stream end when its client goes.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let again = EnergyExtractServiceClient::new(app.channel("energy").await)
            .subscribe(SubscribeRequest::default())
            .await;
        match again {
            Ok(_) => break,
            Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
        }
        assert!(tokio::time::Instant::now() < deadline, "never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.gateway.shutdown().await.unwrap();
}
