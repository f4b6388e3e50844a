//! Stopping the gateway: health turns NOT_SERVING for open watchers, no new
//! connection is accepted, and shutdown completes even with a stream open.

mod common;

use std::time::{Duration, Instant};

use common::spawn_app_with;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::test]
async fn shutdown_tells_watchers_not_serving_and_finishes_within_the_grace_period() {
    let app = spawn_app_with(|config| config.limits.shutdown_grace_ms = 1_000).await;
    let mut watch = HealthClient::new(app.channel("operator").await)
        .watch(HealthCheckRequest {
            service: "kz.digitalmining.v1.FilingService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );

    let addr = app.addr;
    let started = Instant::now();
    let stopping = tokio::spawn(app.gateway.shutdown());
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::NotServing
    );
    // The open watch stream would hold the server forever; the grace period ends it.
    stopping.await.unwrap().expect("clean shutdown");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The listener is closed: nothing new is accepted.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
