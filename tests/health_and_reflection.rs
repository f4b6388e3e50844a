//! grpc.health.v1 reports each service; reflection v1 lists them.

mod common;

use common::spawn_app;
use minegate::proto::DOMAIN_SERVICES;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn health_reports_serving_for_the_gateway_and_each_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel("finance").await);
    for service in std::iter::once("").chain(DOMAIN_SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("{service:?}: {e}"))
            .into_inner()
            .status();
        assert_eq!(status, ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "kz.digitalmining.v1.NoSuchService".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    app.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn reflection_lists_the_services_and_describes_the_contracts() {
    let app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel("energy").await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "kz.digitalmining.v1.FilingService".into(),
            )),
        },
        // What a client such as grpcurl asks next: the imports, by file name.
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileByFilename(
                "kz/digitalmining/v1/common.proto".into(),
            )),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileByFilename(
                "google/protobuf/timestamp.proto".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "kz.digitalmining.v1.ComplianceService",
            "kz.digitalmining.v1.EnergyExtractService",
            "kz.digitalmining.v1.FilingService",
            "kz.digitalmining.v1.FinanceService",
        ]
    );

    for expected in [
        "kz/digitalmining/v1/filing.proto",
        "kz/digitalmining/v1/common.proto",
        "google/protobuf/timestamp.proto",
    ] {
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            responses.message().await.unwrap().unwrap().message_response
        else {
            panic!("expected the file descriptor of {expected}");
        };
        let names: Vec<String> = files
            .file_descriptor_proto
            .iter()
            .map(|bytes| {
                <pbjson_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                    .expect("a file descriptor")
                    .name
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, [expected]);
    }
    app.gateway.shutdown().await.unwrap();
}

/// Reflection v1alpha, for the clients that speak only it (Python's
/// grpcio-reflection, several GUI tools): they got PERMISSION_DENIED.
#[tokio::test]
async fn reflection_v1alpha_lists_the_services_and_describes_them_too() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = spawn_app().await;
    let mut reflection = ServerReflectionClient::new(app.channel("finance").await);
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "kz.digitalmining.v1.FinanceService".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            "kz.digitalmining.v1.ComplianceService",
            "kz.digitalmining.v1.EnergyExtractService",
            "kz.digitalmining.v1.FilingService",
            "kz.digitalmining.v1.FinanceService",
        ]
    );
    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected the file holding FinanceService");
    };
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| {
            <pbjson_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                .unwrap()
                .name
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(names, ["kz/digitalmining/v1/finance.proto"]);
    app.gateway.shutdown().await.unwrap();
}
