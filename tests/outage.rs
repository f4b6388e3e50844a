//! Database outage (PostgreSQL): the gateway's connections are terminated
//! underneath it, then the PostgreSQL server is stopped and started again,
//! all during traffic. While the database is down, health is NOT_SERVING
//! and calls get UNAVAILABLE; afterwards both recover without restarting the
//! gateway, and nothing acknowledged is lost.
//!
//! This test stops the PostgreSQL cluster of the machine (`pg_ctlcluster`,
//! cluster from MINEGATE_TEST_PG_CLUSTER, default "<the one in
//! /etc/postgresql> main"), so it is the only test in this binary: cargo runs
//! test binaries one after another.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::Datelike;
use common::{
    cluster::Cluster,
    fixtures::{date, generated_bin, start_notification, upload_documents},
    *,
};
use minegate::proto::v1::{
    StartNotification, VerifyLedgerRequest, compliance_service_client::ComplianceServiceClient,
    filing_service_client::FilingServiceClient,
};
use prost::Message;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[derive(Default)]
struct Traffic {
    /// Index → receipt bytes, once one is received.
    receipts: BTreeMap<usize, Vec<u8>>,
    /// Codes of failed calls, in order.
    errors: Vec<Code>,
}

fn filing(i: usize, documents: &[minegate::proto::v1::DocumentRef]) -> StartNotification {
    let start = chrono::Utc::now().date_naive() + chrono::Days::new(40);
    start_notification(
        &generated_bin(i as u32),
        &format!("outage-{i}"),
        date(start.year(), start.month() as i32, start.day() as i32),
        &[&format!("37.{}.{}.0/24", 1 + i / 256, i % 256)],
        documents,
    )
}

async fn health(app: &TestApp) -> Option<ServingStatus> {
    let channel = app.client_tls("operator").connect().await.ok()?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "kz.digitalmining.v1.FilingService".into(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status())
}

async fn wait_for(what: &str, seconds: u64, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {seconds} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_gateway_survives_terminated_connections_and_a_stopped_server() {
    let Some(server) = postgres_url() else { return };
    let cluster = Cluster::from_environment();
    let clock = TestClock::at(&chrono::Utc::now().to_rfc3339());
    let app = spawn_on_with(Backend::Postgres, clock, |config| {
        config.limits.database_check_ms = 200;
    })
    .await
    .unwrap();
    let database = app
        .config
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let authority = app.channel("authority").await;
    let documents = Arc::new(upload_documents(authority.clone(), "outage").await);

    // One client submitting in a loop; a filing without a receipt is retried
    // with the same key until it gets one.
    let traffic = Arc::new(Mutex::new(Traffic::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let driver = {
        let (traffic, stop, documents) = (traffic.clone(), stop.clone(), documents.clone());
        let mut client = FilingServiceClient::new(authority.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let call = tokio::time::timeout(
                    Duration::from_secs(15),
                    client.submit_start_notification(filing(i, &documents)),
                )
                .await;
                match call {
                    Ok(Ok(receipt)) => {
                        let bytes = receipt.into_inner().encode_to_vec();
                        traffic.lock().unwrap().receipts.insert(i, bytes);
                        i += 1;
                    }
                    Ok(Err(status)) => {
                        traffic.lock().unwrap().errors.push(status.code());
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(_) => traffic.lock().unwrap().errors.push(Code::DeadlineExceeded),
                }
            }
            i
        })
    };
    let received = || traffic.lock().unwrap().receipts.len();
    wait_for("first receipts", 30, async || received() >= 20).await;

    // 1. Every connection of the gateway is terminated underneath it.
    let terminated = {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        n
    };
    assert!(terminated >= 1, "the gateway had connections to terminate");
    let before = received();
    wait_for("receipts after pg_terminate_backend", 30, async || {
        received() >= before + 20
    })
    .await;

    // 2. The server stops: NOT_SERVING, and calls get UNAVAILABLE.
    cluster.run("stop");
    wait_for("NOT_SERVING while PostgreSQL is down", 10, async || {
        health(&app).await == Some(ServingStatus::NotServing)
    })
    .await;
    let status = FilingServiceClient::new(authority.clone())
        .submit_start_notification(filing(60_000, &documents))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status.message(), "the database is unavailable; retry later");
    // `minegate status` says what it can and why the rest is unknown.
    let said = as_role(&app, "operator", &["status"]).await;
    assert_eq!(said.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&said.stdout),
        "gateway            NOT_SERVING\n\
         pending extracts   unknown: the database is unavailable; retry later\n\
         overdue            unknown: the database is unavailable; retry later\n"
    );
    // The driver's call in flight when the server stopped fails once the
    // writer gives up connecting (the pool's acquire timeout, 5 s).
    wait_for("the driver sees the outage", 15, async || {
        !traffic.lock().unwrap().errors.is_empty()
    })
    .await;

    // 3. It starts again: SERVING and receipts, with no restart of the gateway.
    cluster.start_and_wait();
    wait_for("SERVING once PostgreSQL is back", 30, async || {
        health(&app).await == Some(ServingStatus::Serving)
    })
    .await;
    let before = received();
    wait_for("receipts after the restart of PostgreSQL", 30, async || {
        received() >= before + 20
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let submitted = driver.await.unwrap();

    let traffic = std::mem::take(&mut *traffic.lock().unwrap());
    assert!(
        traffic
            .errors
            .iter()
            .all(|code| matches!(code, Code::Unavailable | Code::DeadlineExceeded)),
        "{:?}",
        traffic.errors
    );
    assert_eq!(traffic.receipts.len(), submitted);

    // Nothing acknowledged is lost, nothing is stored twice (the refused
    // filing 60000 was retried by no one and is not stored).
    assert_receipts_stored(authority, traffic.receipts.values().map(Vec::as_slice)).await;
    let url = &app.config.database_url;
    assert_eq!(
        scalar(url, "SELECT COUNT(*) FROM filings").await,
        submitted as i64
    );
    assert_eq!(
        scalar(url, "SELECT COUNT(*) FROM extracts").await,
        submitted as i64
    );
    let verification = ComplianceServiceClient::new(app.channel("operator").await)
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verification.intact, "{verification:?}");
    assert_eq!(verification.entries_checked, 3 + 2 * submitted as u64);
    app.gateway.shutdown().await.unwrap();
    drop(cluster);
}
