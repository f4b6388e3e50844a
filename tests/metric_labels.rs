//! The metrics are labelled by the methods the gateway serves, never by a
//! path a client made up (issue 23, finding 2): any certificate the CA
//! signed, mapped to a role or not, could otherwise add series without end.

#[macro_use]
mod common;

use common::{Backend, TestApp, TestClock, http_get, metric_series, raw_call, spawn_on_with};
use minegate::tls::pki::{self, LeafOptions};
use tokio::task::JoinSet;
use tonic::Code;

on_both_backends!(
    random_method_paths_are_unimplemented_and_add_no_metric_series,
    a_served_method_with_a_query_is_unimplemented,
);

/// Made-up calls of each kind in the flood, as (certificate, service
/// prefix, the answer expected).
const PROBES: &[(&str, &str, Code)] = &[
    // An open service, by an identity mapped to no role.
    ("stranger", "/grpc.health.v1.Health/", Code::Unimplemented),
    (
        "stranger",
        "/grpc.reflection.v1.ServerReflection/",
        Code::Unimplemented,
    ),
    // A domain service: the unmapped identity is refused before anything else.
    (
        "stranger",
        "/kz.digitalmining.v1.FilingService/",
        Code::Unauthenticated,
    ),
    // A service the caller's role may call.
    (
        "authority",
        "/kz.digitalmining.v1.FilingService/",
        Code::Unimplemented,
    ),
    // A service nobody may call, as it does not exist.
    ("authority", "/x.Unknown/", Code::PermissionDenied),
];

/// A method name as long and as random as an attacker likes (192 characters).
fn random_method() -> String {
    (0..6)
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect()
}

/// Sends `rounds` made-up calls of every kind in [`PROBES`], 40 at a time,
/// and checks each answer's code.
async fn probe(app: &TestApp, rounds: usize) {
    let stranger = app.channel("stranger").await;
    let authority = app.channel("authority").await;
    let mut calls = JoinSet::new();
    for round in 0..rounds {
        for (who, prefix, expected) in PROBES {
            let channel = match *who {
                "stranger" => stranger.clone(),
                _ => authority.clone(),
            };
            let path = format!("{prefix}{}", random_method());
            calls.spawn(async move {
                let status = raw_call(channel, &path, Vec::new()).await.unwrap_err();
                assert_eq!(status.code(), *expected, "{path}: {status:?}");
            });
        }
        if round % 8 == 7 {
            while let Some(done) = calls.join_next().await {
                done.unwrap();
            }
        }
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
}

async fn random_method_paths_are_unimplemented_and_add_no_metric_series(backend: Backend) {
    let clock = TestClock::at("2026-03-02T06:00:00Z");
    // No background ledger verification: its metrics would appear mid-test.
    let Some(app) = spawn_on_with(backend, clock, |c| c.limits.ledger_verify_ms = 0).await else {
        return;
    };
    pki::issue(
        &app.pki_dir(),
        "stranger",
        &LeafOptions::client("stranger", Some("urn:example:stranger")),
    )
    .unwrap();
    let metrics = app.gateway.metrics_addr().unwrap();
    // The database check's first answer adds minegate_database_up.
    for _ in 0..100 {
        if http_get(metrics, "/metrics")
            .await
            .1
            .contains("minegate_database_up 1")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // One real call, and one made-up call of each kind, make every series
    // the flood could touch.
    tonic_health::pb::health_client::HealthClient::new(app.channel("stranger").await)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    probe(&app, 1).await;
    let before = http_get(metrics, "/metrics").await.1;

    let rounds = 2_000;
    probe(&app, rounds).await;
    let after = http_get(metrics, "/metrics").await.1;

    eprintln!(
        "/metrics: {} bytes before {} made-up calls, {} after",
        before.len(),
        rounds * PROBES.len(),
        after.len()
    );
    assert_eq!(metric_series(&after), metric_series(&before));
    let refused: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("minegate_calls_refused_total{"))
        .collect();
    assert_eq!(
        refused,
        [
            "minegate_calls_refused_total{method=\"unknown\",reason=\"permission_denied\"} 2001",
            "minegate_calls_refused_total{method=\"unknown\",reason=\"unauthenticated\"} 2001",
            "minegate_calls_refused_total{method=\"unknown\",reason=\"unimplemented\"} 6003",
        ]
    );
    let latency: Vec<&str> = after
        .lines()
        .filter(|l| l.starts_with("minegate_request_duration_seconds_count{"))
        .collect();
    assert_eq!(
        latency,
        ["minegate_request_duration_seconds_count{method=\"/grpc.health.v1.Health/Check\"} 1"]
    );
    // Only the three counters' digits grew: 1 → 2001 twice, 3 → 6003.
    assert_eq!(after.len(), before.len() + 3 + 3 + 3);
    app.gateway.shutdown().await.unwrap();
}

/// A served method's path with a query is not a method of the gateway:
/// tonic's router would have ignored the query and run it.
async fn a_served_method_with_a_query_is_unimplemented(backend: Backend) {
    let clock = TestClock::at("2026-03-02T06:00:00Z");
    let Some(app) = spawn_on_with(backend, clock, |_| {}).await else {
        return;
    };
    let operator = app.channel("operator").await;
    let path = "/kz.digitalmining.v1.ComplianceService/GetCheckpoint?x=1";
    let status = raw_call(operator.clone(), path, Vec::new())
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unimplemented,
            "this gateway has no method /kz.digitalmining.v1.ComplianceService/GetCheckpoint?x=1"
        )
    );
    // The same path without the query is the method.
    let plain = "/kz.digitalmining.v1.ComplianceService/GetCheckpoint";
    assert!(raw_call(operator, plain, Vec::new()).await.is_ok());
    app.gateway.shutdown().await.unwrap();
}
