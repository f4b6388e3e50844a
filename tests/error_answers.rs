//! Refusals every client can read (issue 23, finding 6): error details small
//! enough for the smallest common header limit, and a request that is not
//! protobuf named as the caller's mistake.

#[macro_use]
mod common;

use base64::Engine as _;
use common::{Backend, TestClock, fixtures, fixtures::BIN_A, raw_call, spawn_on, violations};
use minegate::{
    proto::v1::filing_service_client::FilingServiceClient,
    service::{MAX_DETAILS_HEADER_BYTES, MAX_LISTED_VIOLATIONS},
};
use tonic::Code;

on_both_backends!(
    a_filing_with_a_thousand_bad_ranges_lists_the_first_nine_and_counts_the_rest,
    a_request_body_that_is_not_protobuf_is_invalid_argument,
);

async fn a_filing_with_a_thousand_bad_ranges_lists_the_first_nine_and_counts_the_rest(
    backend: Backend,
) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock).await else {
        return;
    };
    let channel = app.channel("authority").await;
    let documents = fixtures::upload_documents(channel.clone(), "A").await;
    // A thousand private ranges: each one a violation.
    let pool: Vec<String> = (0..1000)
        .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
        .collect();
    let pool: Vec<&str> = pool.iter().map(String::as_str).collect();
    let start = fixtures::start_notification(
        BIN_A,
        "many-bad",
        fixtures::date(2026, 5, 1),
        &pool,
        &documents,
    );

    let status = FilingServiceClient::new(channel)
        .submit_start_notification(start)
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "1000 problems, the first ip_pool[0]: 10.0.0.0/24 is not public address space: it overlaps 10.0.0.0/8, private (RFC 1918)"
    );
    let mut expected: Vec<(String, String)> = (0..MAX_LISTED_VIOLATIONS)
        .map(|i| {
            (
                format!("ip_pool[{i}]"),
                format!(
                    "10.0.{i}.0/24 is not public address space: it overlaps 10.0.0.0/8, private (RFC 1918)"
                ),
            )
        })
        .collect();
    expected.push((
        String::new(),
        "and 991 more problems, not listed: only the first 9 of 1000 are".to_owned(),
    ));
    assert_eq!(violations(&status), expected);
    // grpc-status-details-bin as it crossed the wire: base64 without padding.
    let header = base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.details());
    eprintln!("grpc-status-details-bin: {} bytes", header.len());
    assert_eq!(header.len(), 1_508);
    assert!(header.len() <= MAX_DETAILS_HEADER_BYTES);
    app.gateway.shutdown().await.unwrap();
}

async fn a_request_body_that_is_not_protobuf_is_invalid_argument(backend: Backend) {
    let clock = TestClock::at("2026-03-20T06:00:00Z");
    let Some(app) = spawn_on(backend, clock).await else {
        return;
    };
    // Field 1 with wire type 7, which protobuf does not have.
    let garbage = vec![0x0f, 0xde, 0xad, 0xbe, 0xef];
    let expected = "the request is not a valid protobuf message for this method: failed to decode Protobuf message: invalid wire type value: 7";
    // A unary call, a client stream (the upload's first message) and an
    // open service: each decoded by tonic before or inside its handler.
    let calls = [
        (
            "authority",
            "/kz.digitalmining.v1.FilingService/SubmitStartNotification",
        ),
        (
            "authority",
            "/kz.digitalmining.v1.FilingService/UploadDocument",
        ),
        (
            "energy",
            "/kz.digitalmining.v1.EnergyExtractService/Acknowledge",
        ),
        ("operator", "/grpc.health.v1.Health/Check"),
    ];
    for (role, path) in calls {
        let status = raw_call(app.channel(role).await, path, garbage.clone())
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, expected),
            "{path}"
        );
    }
    app.gateway.shutdown().await.unwrap();
}
