//! Defects an outside client found (issue 17), each with the test that
//! failed before its fix.

#[macro_use]
mod common;

use common::{fixtures::*, *};
use minegate::proto::v1::{
    ListObligationsRequest, ObligationKind, ObligationStatus, StartNotification,
    compliance_service_client::ComplianceServiceClient, filing_service_client::FilingServiceClient,
};

on_both_backends!(an_obligation_created_past_its_due_date_is_overdue_from_the_start);

/// `minegate finance pull --out f.csv`, a bare file name, writes f.csv in
/// the folder it runs in (it failed: "No such file or directory"), and
/// `energy subscribe --out out`, a bare folder name, writes under ./out.
#[tokio::test]
async fn commands_that_write_files_take_bare_relative_names() {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let app = spawn_on(Backend::Sqlite, clock.clone())
        .await
        .expect("SQLite needs no server");
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "bare").await;
    let mut filings = FilingServiceClient::new(authority);
    let pool = ["37.121.0.0/16"];
    filings
        .submit_start_notification(start_notification(
            BIN_A,
            "start",
            date(2026, 2, 10),
            &pool,
            &documents,
        ))
        .await
        .unwrap();
    clock.set("2026-04-06T06:00:00Z");
    filings
        .submit_quarterly_report(quarterly_report(
            BIN_A, "q1", 2026, 1, 1_000_000, &pool, &documents,
        ))
        .await
        .unwrap();
    let here = tempfile::tempdir().unwrap();
    let args = [
        "finance",
        "pull",
        "--year",
        "2026",
        "--quarter",
        "1",
        "--out",
        "f.csv",
    ];
    let pulled = as_role_in(&app, "finance", here.path(), &args).await;
    assert!(
        pulled.status.success(),
        "{}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let csv = std::fs::read_to_string(here.path().join("f.csv")).unwrap();
    assert!(csv.contains("210240001236"), "{csv}");
    assert!(here.path().join("minegate-checkpoint.note").exists());
    let args = ["energy", "subscribe", "--once", "--out", "out"];
    let subscribed = as_role_in(&app, "energy", here.path(), &args).await;
    assert!(
        subscribed.status.success(),
        "{}",
        String::from_utf8_lossy(&subscribed.stderr)
    );
    assert_eq!(
        std::fs::read_dir(here.path().join("out/extracts"))
            .unwrap()
            .count(),
        2
    );
    app.gateway.shutdown().await.unwrap();
}

/// A quarterly report for 2026 Q1 filed on 1 June: the quarter's form 402
/// obligation (due 15 May) arises already overdue, and says so in the
/// receipt, the list and the ledger, not PENDING until the next scan.
async fn an_obligation_created_past_its_due_date_is_overdue_from_the_start(backend: Backend) {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "late").await;
    let mut filings = FilingServiceClient::new(authority);
    let pool = ["37.120.0.0/16"];
    let start: StartNotification =
        start_notification(BIN_A, "start", date(2026, 2, 10), &pool, &documents);
    filings.submit_start_notification(start).await.unwrap();
    clock.set("2026-06-01T06:00:00Z");
    let receipt = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A, "late-q1", 2026, 1, 1_000_000, &pool, &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let form = receipt
        .obligations
        .iter()
        .find(|o| o.kind() == ObligationKind::FinanceForm)
        .expect("the quarter's form obligation");
    assert_eq!(form.status(), ObligationStatus::Overdue);
    assert_eq!(form.due_date, date(2026, 5, 15));
    let energy = receipt
        .obligations
        .iter()
        .find(|o| o.kind() == ObligationKind::EnergyExtract)
        .expect("the extract's obligation");
    assert_eq!(energy.status(), ObligationStatus::Pending);

    let listed = ComplianceServiceClient::new(app.channel("operator").await)
        .list_obligations(ListObligationsRequest {
            status: ObligationStatus::Overdue as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .obligations;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].obligation_id, form.obligation_id);
    let url = &app.config.database_url;
    assert_eq!(
        scalar(
            url,
            &format!(
                "SELECT COUNT(*) FROM ledger WHERE kind = 'OBLIGATION_OVERDUE' AND subject = '{}'",
                form.obligation_id
            )
        )
        .await,
        1
    );
    app.gateway.shutdown().await.unwrap();
}
