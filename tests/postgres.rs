//! The gateway on PostgreSQL, chosen by the URL scheme. Runs when
//! MINEGATE_TEST_POSTGRES_URL is set; under CI=true it must be set.

mod common;

use std::sync::Arc;

use minegate::store::{self, SystemClock};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn the_gateway_runs_on_postgresql_chosen_by_the_url_scheme() {
    let Some(server) = common::postgres_url() else {
        return;
    };
    let database = common::fresh_postgres_database(&server).await;
    let url = database.url.clone();
    let store = store::open(&url, Arc::new(SystemClock), store::Signing::ReadOnly)
        .await
        .expect("open and migrate PostgreSQL");
    assert_eq!(store.backend(), "postgres");
    store.ping().await.unwrap();
    store.close().await;
    // Opening an already migrated database again is fine.
    let app = common::spawn_app_with(|config| config.database_url = url.clone()).await;
    let status = HealthClient::new(app.channel("operator").await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    assert_eq!(
        common::scalar(&url, "SELECT COUNT(*) FROM _sqlx_migrations").await,
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .unwrap()
            .count() as i64
    );
    app.gateway.shutdown().await.unwrap();
}

/// A replica paused (SIGSTOP) while it holds the writers' lock holds up the
/// other replicas' writes only until PostgreSQL ends its session, idle in
/// a transaction for 5 s (the gateway sets `idle_in_transaction_session_timeout`
/// for its sessions). Woken, it finds its transaction gone: its caller gets
/// UNAVAILABLE and nothing of that filing is stored; then it serves again.
#[tokio::test]
async fn a_replica_paused_holding_the_writers_lock_holds_up_the_others_only_five_seconds() {
    use common::{
        child::{ChildGateway, replica_home},
        fixtures::{date, generated_bin, start_notification, upload_documents},
    };
    use minegate::proto::v1::filing_service_client::FilingServiceClient;
    use sqlx::Connection;
    use std::time::{Duration, Instant};

    let Some(server) = common::postgres_url() else {
        return;
    };
    let dir = common::fresh_folder();
    let made = common::fresh_postgres_database(&server).await;
    let url = made.url.clone();
    let database = url.rsplit('/').next().unwrap().to_owned();
    let a = ChildGateway::start(&replica_home(dir.path(), 0), &url, &[]).await;
    let b = ChildGateway::start(&replica_home(dir.path(), 1), &url, &[]).await;
    let documents = upload_documents(b.channel("authority").await, "lock").await;
    let filing = move |i: u32| {
        let key = format!("lock-{i}");
        let pool = format!("37.1.{i}.0/24");
        start_notification(
            &generated_bin(i),
            &key,
            date(2027, 3, 1),
            &[&pool],
            &documents,
        )
    };
    let advisory = |granted: bool| {
        format!(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
             WHERE l.locktype = 'advisory' AND l.granted = {granted} AND d.datname = '{database}'"
        )
    };
    let until = async |sql: &str, n: i64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while common::scalar(&url, sql).await != n {
            assert!(Instant::now() < deadline, "{sql}: never {n}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    // The test takes the writers' lock; a filing through `a` waits for it.
    let mut holder = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(71462022)")
        .execute(&mut holder)
        .await
        .unwrap();
    let mut through_a = FilingServiceClient::new(a.channel("authority").await);
    let paused_call = tokio::spawn({
        let filing = filing(1);
        async move { through_a.submit_start_notification(filing).await }
    });
    until(&advisory(false), 1).await;
    // `a` is paused; the lock passes to its session, which now holds it
    // with nobody at the other end.
    a.signal("STOP").await;
    sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    until(&advisory(true), 1).await;
    let paused_at = Instant::now();

    let mut through_b = FilingServiceClient::new(b.channel("authority").await);
    let other_call = {
        let filing = filing(2);
        tokio::spawn(async move { through_b.submit_start_notification(filing).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!other_call.is_finished(), "b waits for the lock `a` holds");
    let receipt = tokio::time::timeout(Duration::from_secs(10), other_call)
        .await
        .expect("b writes once PostgreSQL ends a's session")
        .unwrap()
        .unwrap();
    let waited = paused_at.elapsed();
    assert!(waited >= Duration::from_secs(4), "{waited:?}");
    assert!(!receipt.into_inner().filing_id.is_empty());

    a.signal("CONT").await;
    let refused = tokio::time::timeout(Duration::from_secs(10), paused_call)
        .await
        .expect("a answers once woken")
        .unwrap()
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let stored = "SELECT COUNT(*) FROM filings WHERE idempotency_key = 'lock-1'";
    assert_eq!(common::scalar(&url, stored).await, 0);
    // `a` writes again (a new connection), with the same key.
    let mut through_a = FilingServiceClient::new(a.channel("authority").await);
    through_a
        .submit_start_notification(filing(1))
        .await
        .unwrap();
    assert_eq!(common::scalar(&url, stored).await, 1);
}
