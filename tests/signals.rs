//! The gateway process and its signals: SIGTERM with 50 calls in flight
//! (25 uploads mid-stream, 25 submissions sent with the signal),
//! SIGHUP reloading the CRL, and the JSON log naming peer and filing.

mod common;

use std::time::Duration;

use chrono::Datelike;
use common::{
    child::ChildGateway,
    fixtures::{self, date, generated_bin, start_notification, upload_documents},
    *,
};
use minegate::{
    proto::v1::{
        DocumentKind, DocumentMetadata, SubscribeRequest, UploadDocumentRequest,
        VerifyLedgerRequest, compliance_service_client::ComplianceServiceClient,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, upload_document_request::Part,
    },
    tls::pki,
};
use prost::Message;
use rustls::AlertDescription;
use tonic::Code;

fn in_40_days() -> Option<minegate::proto::v1::Date> {
    let start = chrono::Utc::now().date_naive() + chrono::Days::new(40);
    date(start.year(), start.month() as i32, start.day() as i32)
}

fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("minegate.db").display())
}

#[tokio::test]
async fn sigterm_with_50_calls_in_flight_completes_or_refuses_each_and_exits_0() {
    let dir = fresh_folder();
    let url = sqlite_url(&dir);
    let mut gateway = ChildGateway::start(dir.path(), &url, &[]).await;
    let documents = upload_documents(gateway.channel("authority").await, "term").await;

    // A subscriber with its stream open.
    let mut stream = EnergyExtractServiceClient::new(gateway.channel("energy").await)
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();

    // 25 uploads that have sent their metadata and wait to send the content:
    // certainly in flight when the signal comes.
    let mut channels = Vec::new();
    for _ in 0..5 {
        channels.push(gateway.channel("authority").await);
    }
    let uploads: Vec<_> = (0..25)
        .map(|i| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.try_send(UploadDocumentRequest {
                part: Some(Part::Metadata(DocumentMetadata {
                    kind: DocumentKind::Residency as i32,
                    media_type: "application/pdf".into(),
                    file_name: format!("residency-{i}.pdf"),
                    size_bytes: None,
                    sha256: None,
                })),
            })
            .unwrap();
            let mut client = FilingServiceClient::new(channels[i % 5].clone());
            let call = tokio::spawn(async move {
                client
                    .upload_document(tokio_stream::wrappers::ReceiverStream::new(rx))
                    .await
            });
            (tx, call)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // And 25 submissions sent at the same moment as the signal.
    let submits: Vec<_> = (0..25)
        .map(|i| {
            let mut client = FilingServiceClient::new(channels[i % 5].clone());
            let filing = start_notification(
                &generated_bin(i as u32),
                &format!("term-{i}"),
                in_40_days(),
                &[&format!("37.1.{i}.0/24")],
                &documents,
            );
            tokio::spawn(async move { client.submit_start_notification(filing).await })
        })
        .collect();
    gateway.signal("TERM").await;

    // The uploads finish during the drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, (tx, _)) in uploads.iter().enumerate() {
        tx.send(UploadDocumentRequest {
            part: Some(Part::Chunk(fixtures::pdf(&format!("residency {i}")))),
        })
        .await
        .unwrap();
    }
    let mut stored_documents = 0;
    for (tx, call) in uploads {
        drop(tx);
        match call.await.unwrap() {
            Ok(_) => stored_documents += 1,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
    }
    assert_eq!(
        stored_documents, 25,
        "in-flight uploads complete during the drain"
    );

    let mut completed = Vec::new();
    let mut refused = 0;
    for call in submits {
        match call.await.unwrap() {
            Ok(receipt) => completed.push(receipt.into_inner()),
            Err(status) => {
                assert!(refused_unprocessed(&status), "{status:?}");
                refused += 1;
            }
        }
    }
    // Calls made after the signal are refused, not lost.
    for i in 0..10 {
        let status = FilingServiceClient::new(channels[i % 5].clone())
            .submit_start_notification(start_notification(
                &generated_bin(100 + i as u32),
                &format!("late-{i}"),
                in_40_days(),
                &[&format!("37.2.{i}.0/24")],
                &documents,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    }
    // Extracts made before the signal may arrive; then the stream ends cleanly.
    let mut delivered = 0;
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => delivered += 1,
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .expect("the stream ends");
    if let Err(status) = ended {
        panic!("the stream ended with an error: {status:?}");
    }
    assert!(delivered <= completed.len());
    assert_eq!(gateway.exit_code().await, Some(0));
    assert_eq!(completed.len() + refused, 25);
    eprintln!("{} completed, {refused} refused", completed.len());

    // Nothing half-written: exactly the completed filings are stored, each
    // whole (extract and obligation), and the ledger verifies.
    let n = completed.len() as i64;
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM filings").await, n);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM extracts").await, n);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM obligations").await, n);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM documents").await, 3 + 25);
    // Extracts sent to the open stream before it ended were recorded as sent.
    let sent = scalar(&url, "SELECT COUNT(*) FROM extract_attempts").await;
    assert!(
        sent as usize >= delivered,
        "{sent} attempts, {delivered} delivered"
    );
    gateway.restart().await;
    let completed: Vec<Vec<u8>> = completed.iter().map(Message::encode_to_vec).collect();
    assert_receipts_stored(
        gateway.channel("authority").await,
        completed.iter().map(Vec::as_slice),
    )
    .await;
    let verification = ComplianceServiceClient::new(gateway.channel("operator").await)
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(verification.intact);
    // 3 + 25 documents, each filing and its extract, each sending.
    assert_eq!(
        verification.entries_checked,
        3 + 25 + 2 * n as u64 + sent as u64
    );
}

/// Whether a fresh TLS connection as `name` is accepted (`None`) or refused.
async fn handshake(gateway: &ChildGateway, name: &str) -> Option<AlertDescription> {
    let pki = gateway.dir.join("pki");
    let config = rustls_client(
        &pki.join("ca.pem"),
        Some((
            &pki.join(format!("{name}.pem")),
            &pki.join(format!("{name}.key")),
        )),
    );
    probe(
        std::net::SocketAddr::from(([127, 0, 0, 1], gateway.port)),
        config,
    )
    .await
}

#[tokio::test]
async fn sighup_reloads_the_crl_and_the_revoked_certificate_is_refused_next() {
    let dir = fresh_folder();
    // No periodic check: only the signal reloads.
    let mut gateway = ChildGateway::start(
        dir.path(),
        &sqlite_url(&dir),
        &[("MINEGATE_TLS_RELOAD_CHECK_MS", "0")],
    )
    .await;
    pki::revoke(&dir.path().join("pki"), "finance").unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        handshake(&gateway, "finance").await,
        None,
        "not reloaded yet"
    );

    gateway.signal("HUP").await;
    let mut refused = None;
    for _ in 0..50 {
        refused = handshake(&gateway, "finance").await;
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, Some(AlertDescription::CertificateRevoked));
    assert_eq!(handshake(&gateway, "energy").await, None);

    gateway.signal("TERM").await;
    assert_eq!(gateway.exit_code().await, Some(0));
    let log = std::fs::read_to_string(gateway.log(1)).unwrap();
    assert!(
        log.contains("SIGHUP: reloading the TLS configuration"),
        "{log}"
    );
}

#[tokio::test]
async fn json_log_lines_of_a_call_carry_the_peer_and_the_filing_id() {
    let dir = fresh_folder();
    let mut gateway = ChildGateway::start(
        dir.path(),
        &sqlite_url(&dir),
        &[
            ("MINEGATE_LOG_FORMAT", "json"),
            ("MINEGATE_LOG_FILTER", "info"),
        ],
    )
    .await;
    let channel = gateway.channel("authority").await;
    let documents = upload_documents(channel.clone(), "log").await;
    let mut filings = FilingServiceClient::new(channel);
    let receipt = filings
        .submit_start_notification(start_notification(
            &generated_bin(1),
            "log-1",
            in_40_days(),
            &["37.1.1.0/24"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let refused = filings
        .submit_start_notification(start_notification(
            "210240001237",
            "log-2",
            in_40_days(),
            &["37.1.2.0/24"],
            &documents,
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    gateway.signal("TERM").await;
    assert_eq!(gateway.exit_code().await, Some(0));

    let log = std::fs::read_to_string(gateway.log(1)).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let method = "/kz.digitalmining.v1.FilingService/SubmitStartNotification";
    let accepted: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "filing accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "{log}");
    assert_eq!(accepted[0]["span"]["name"], "call");
    assert_eq!(accepted[0]["span"]["method"], method);
    assert_eq!(accepted[0]["span"]["peer"], "urn:minegate:authority");
    assert_eq!(accepted[0]["span"]["filing_id"], receipt.filing_id.as_str());
    assert_eq!(accepted[0]["fields"]["kind"], "START_NOTIFICATION");

    let failed: Vec<_> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "call failed")
        .collect();
    assert_eq!(failed.len(), 1, "{log}");
    assert_eq!(failed[0]["span"]["method"], method);
    assert_eq!(failed[0]["span"]["peer"], "urn:minegate:authority");
    assert_eq!(failed[0]["fields"]["code"], "3");

    // Every line logged inside a call names its peer.
    for line in lines.iter().filter(|l| l["span"]["name"] == "call") {
        assert!(line["span"]["peer"].as_str().is_some(), "{line}");
    }
}

/// A call the gateway refused while stopping: UNAVAILABLE from the gateway,
/// or a stream the client opened after the gateway's GOAWAY (NO_ERROR) left
/// and that the gateway therefore never saw; the client library reports
/// that one as a transport error, and HTTP/2 says it may be retried.
fn refused_unprocessed(status: &tonic::Status) -> bool {
    let text = format!("{status:?}");
    status.code() == Code::Unavailable
        || (status.code() == Code::Internal && text.contains("GoAway") && text.contains("NO_ERROR"))
}
