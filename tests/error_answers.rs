//! Refusals every client can read (issue 23, finding 6): error details small
//! enough for the smallest common header limit, and a request that is not
//! protobuf named as the caller's mistake.

#[macro_use]
mod common;

use common::{Backend, TestClock, raw_call, spawn_on};
use tonic::Code;

on_both_backends!(a_request_body_that_is_not_protobuf_is_invalid_argument);

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
