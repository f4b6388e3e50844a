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
