//! Memory bounded by configuration whatever clients do: the connection
//! caps (in all and per identity) answer a clear refusal, idle connections
//! are closed while one carrying a long call is kept, and document uploads
//! past their memory budget are refused while others go on.

mod common;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use common::{fixtures, *};
use minegate::proto::v1::{
    DocumentKind, DocumentMetadata, SubscribeRequest, UploadDocumentRequest,
    energy_extract_service_client::EnergyExtractServiceClient,
    filing_service_client::FilingServiceClient, upload_document_request::Part,
};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

async fn health_check(channel: Channel) -> Result<(), tonic::Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|_| ())
}

async fn scrape(addr: SocketAddr) -> String {
    http_get(addr, "/metrics").await.1
}

#[tokio::test]
async fn past_the_identitys_connection_cap_a_new_connections_calls_are_refused_naming_it() {
    let app = spawn_app_with(|c| c.limits.max_connections_per_identity = 2).await;
    let first = app.channel("authority").await;
    let second = app.channel("authority").await;
    health_check(first.clone()).await.unwrap();
    health_check(second.clone()).await.unwrap();

    let third = app.channel("authority").await;
    let refused = health_check(third).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "urn:minegate:authority has 2 connections open, the most one identity may have \
         (limits.max_connections_per_identity); this connection is closed: make calls on \
         the ones open"
    );
    assert_eq!(
        refused.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(1))
    );
    // Another identity is not affected.
    health_check(app.channel("operator").await).await.unwrap();
    let metrics = scrape(app.gateway.metrics_addr().unwrap()).await;
    assert!(
        metrics.contains(
            "minegate_calls_refused_total{method=\"/grpc.health.v1.Health/Check\",\
             reason=\"connection_limit\"} 1\n"
        ),
        "{metrics}"
    );

    // A closed connection gives its place back.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    health_check(app.channel("authority").await).await.unwrap();
}

/// A raw TLS connection as `name` that has sent HTTP/2's preface and
/// settings; reads until the gateway closes it.
async fn open_http2(app: &TestApp, name: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let pki = app.pki_dir();
    let config = rustls_client(
        &pki.join("ca.pem"),
        Some((
            &pki.join(format!("{name}.pem")),
            &pki.join(format!("{name}.key")),
        )),
    );
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    // The preface, then an empty SETTINGS frame.
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    tls
}

/// Reads what the gateway sends until it closes the connection.
async fn until_closed(mut tls: tokio_rustls::client::TlsStream<TcpStream>) {
    let mut buf = [0u8; 1024];
    loop {
        match tls.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_and_one_carrying_a_stream_is_kept() {
    let app = spawn_app_with(|c| c.limits.idle_connection_timeout_ms = 500).await;
    let opened = std::time::Instant::now();
    let idle = open_http2(&app, "operator").await;
    let mut subscriber = EnergyExtractServiceClient::new(app.channel("energy").await);
    let mut stream = subscriber
        .subscribe(SubscribeRequest {
            max_in_flight: 16,
            until_caught_up: false,
        })
        .await
        .unwrap()
        .into_inner();

    // Closed after its idle timeout (the bound only keeps a broken test from hanging).
    tokio::time::timeout(Duration::from_secs(10), until_closed(idle))
        .await
        .expect("the idle connection is closed");
    assert!(
        opened.elapsed() >= Duration::from_millis(500),
        "closed before its idle timeout, after {:?}",
        opened.elapsed()
    );
    // The stream, three idle timeouts on, is still open: nothing came and
    // nothing failed.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let waiting = tokio::time::timeout(Duration::from_millis(200), stream.message()).await;
    assert!(waiting.is_err(), "the stream ended: {waiting:?}");
}

/// An upload that has sent its metadata and first chunk, and ends when
/// the returned sender drops.
async fn held_upload(
    id: &str,
) -> (
    tokio::sync::mpsc::Sender<UploadDocumentRequest>,
    tokio_stream::wrappers::ReceiverStream<UploadDocumentRequest>,
) {
    let bytes = fixtures::pdf(id);
    let (messages, stream) = tokio::sync::mpsc::channel(2);
    messages
        .send(UploadDocumentRequest {
            part: Some(Part::Metadata(DocumentMetadata {
                kind: DocumentKind::CustomsDeclarationOrTitle as i32,
                media_type: "application/pdf".into(),
                file_name: format!("{id}.pdf"),
                size_bytes: Some(bytes.len() as u64),
                sha256: None,
            })),
        })
        .await
        .unwrap();
    messages
        .send(UploadDocumentRequest {
            part: Some(Part::Chunk(bytes)),
        })
        .await
        .unwrap();
    (
        messages,
        tokio_stream::wrappers::ReceiverStream::new(stream),
    )
}

#[tokio::test]
async fn an_upload_past_the_budget_is_refused_while_the_others_go_on() {
    // One upload's reservation: its 256 KiB stream window and four chunks.
    let app = spawn_app_with(|c| c.limits.upload_bytes_in_flight = 1_280 * 1024).await;
    let channel = app.channel("authority").await;
    let (finish, held) = held_upload("first").await;
    let mut client = FilingServiceClient::new(channel.clone());
    let first = tokio::spawn(async move { client.upload_document(held).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let bytes = fixtures::pdf("second");
    let upload = |bytes: Vec<u8>| {
        let channel = channel.clone();
        async move {
            fixtures::upload(
                channel,
                DocumentKind::CustomsDeclarationOrTitle,
                "application/pdf",
                "second.pdf",
                &bytes,
                1024,
            )
            .await
        }
    };
    let refused = upload(bytes.clone()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "uploads in progress hold the 1310720 bytes the gateway gives them \
         (limits.upload_bytes_in_flight); retry in 1 s"
    );
    assert_eq!(
        refused.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(1))
    );

    drop(finish);
    let stored = first.await.unwrap().unwrap().into_inner();
    assert_eq!(stored.size_bytes, fixtures::pdf("first").len() as u64);
    let second = upload(bytes.clone()).await.unwrap();
    assert_eq!(second.size_bytes, bytes.len() as u64);
    let metrics = scrape(app.gateway.metrics_addr().unwrap()).await;
    assert!(
        metrics.contains(
            "minegate_calls_refused_total{method=\"/kz.digitalmining.v1.FilingService/UploadDocument\",\
             reason=\"upload_budget\"} 1\n"
        ),
        "{metrics}"
    );
}
