//! The gateway on PostgreSQL. Runs when MINEGATE_TEST_POSTGRES_URL is set;
//! under CI=true it must be set (the test fails rather than skip).

mod common;

use minegate::store::Database;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn postgres_url() -> Option<String> {
    match std::env::var("MINEGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "CI=true but MINEGATE_TEST_POSTGRES_URL is not set: the PostgreSQL half must run"
            )
        }
        _ => {
            eprintln!("MINEGATE_TEST_POSTGRES_URL not set: skipping the PostgreSQL test");
            None
        }
    }
}

#[tokio::test]
async fn the_gateway_runs_on_postgresql_chosen_by_the_url_scheme() {
    let Some(url) = postgres_url() else { return };
    let database = Database::connect(&url)
        .await
        .expect("connect to PostgreSQL");
    assert_eq!(database.backend(), "postgres");
    let Database::Postgres(pool) = &database else {
        unreachable!()
    };
    let answer: i32 = sqlx::query_scalar("SELECT 40 + 2")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(answer, 42);
    database.close().await;

    let app = common::spawn_app_with(|config| config.database_url = url.clone()).await;
    let status = HealthClient::new(app.channel("operator").await)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(status, ServingStatus::Serving);
    app.gateway.shutdown().await.unwrap();
}
