//! What operators run the gateway with: the Prometheus endpoint, per-peer
//! call limits, certificate reloads without a restart, and certificate
//! expiry in health and metrics.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{
    fixtures::{self, BIN_A, BIN_B},
    *,
};
use minegate::{
    proto::v1::{
        DocumentKind, DocumentMetadata, GetFilingRequest, GetSigningKeysRequest, SubscribeRequest,
        UploadDocumentRequest, compliance_service_client::ComplianceServiceClient,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, upload_document_request::Part,
    },
    server::CERTIFICATES_HEALTH,
    tls::pki,
};
use rustls::AlertDescription;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_types::StatusExt;

/// The sample lines (no comments) of a scrape whose name starts with `prefix`.
fn samples(body: &str, prefix: &str) -> Vec<String> {
    body.lines()
        .filter(|line| !line.starts_with('#') && line.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

async fn health(app: &TestApp, service: &str) -> ServingStatus {
    HealthClient::new(app.channel("operator").await)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .unwrap()
        .into_inner()
        .status()
}

#[tokio::test]
async fn the_metrics_endpoint_counts_filings_findings_calls_and_reads_the_store() {
    let clock = TestClock::at("2026-03-02T06:00:00Z");
    let app = spawn_on(Backend::Sqlite, clock).await.unwrap();
    let metrics = app.gateway.metrics_addr().expect("metrics listener");
    let channel = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(channel.clone());

    // Accepted, but 6 days short of the 10-day notice: one finding.
    let documents = fixtures::upload_documents(channel.clone(), "a").await;
    let start = fixtures::start_notification(
        BIN_A,
        "k-1",
        fixtures::date(2026, 3, 6),
        &["37.99.0.0/24"],
        &documents,
    );
    filings
        .submit_start_notification(start.clone())
        .await
        .unwrap();
    // Replayed.
    filings.submit_start_notification(start).await.unwrap();
    // Rejected (bad BIN), and the same key with another payload: a conflict.
    let mut bad = fixtures::start_notification(
        "210240001237",
        "k-2",
        fixtures::date(2026, 4, 1),
        &["198.51.100.0/24"],
        &documents,
    );
    assert_eq!(
        filings
            .submit_start_notification(bad.clone())
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    bad.person = fixtures::person(BIN_B);
    bad.idempotency_key = "k-1".into();
    bad.ip_pool = vec!["37.99.1.0/24".into()];
    let conflict = filings.submit_start_notification(bad).await.unwrap_err();
    assert_eq!(conflict.code(), Code::AlreadyExists, "{conflict:?}");

    let (status, body) = http_get(metrics, "/metrics").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(
        samples(&body, "minegate_filings_total"),
        [
            "minegate_filings_total{kind=\"start_notification\",outcome=\"accepted\"} 1",
            "minegate_filings_total{kind=\"start_notification\",outcome=\"conflict\"} 1",
            "minegate_filings_total{kind=\"start_notification\",outcome=\"rejected\"} 1",
            "minegate_filings_total{kind=\"start_notification\",outcome=\"replayed\"} 1",
        ]
    );
    assert_eq!(
        samples(&body, "minegate_findings_total"),
        ["minegate_findings_total{kind=\"LATE_START_NOTIFICATION\"} 1"]
    );
    let method = "/kz.digitalmining.v1.FilingService/SubmitStartNotification";
    assert_eq!(
        samples(
            &body,
            &format!("minegate_request_duration_seconds_count{{method=\"{method}\"}}")
        ),
        [format!(
            "minegate_request_duration_seconds_count{{method=\"{method}\"}} 4"
        )]
    );
    assert_eq!(
        samples(
            &body,
            &format!("minegate_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}}")
        ),
        [format!(
            "minegate_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} 4"
        )]
    );
    // One extract, due in 10 days, not yet delivered to the energy identity.
    assert_eq!(
        samples(&body, "minegate_obligations"),
        ["minegate_obligations{status=\"PENDING\"} 1"]
    );
    assert_eq!(
        samples(&body, "minegate_extracts_pending"),
        ["minegate_extracts_pending{subscriber=\"urn:minegate:energy\"} 1"]
    );
    // It arose at the acceptance, 2026-03-02T06:00:00Z.
    assert_eq!(
        samples(&body, "minegate_obligation_oldest_pending"),
        [
            "minegate_obligation_oldest_pending_timestamp_seconds{kind=\"ENERGY_EXTRACT\"} 1772431200.000"
        ]
    );
    // 3 documents stored, the filing accepted, its extract created.
    assert_eq!(
        samples(&body, "minegate_ledger_entries"),
        ["minegate_ledger_entries 5"]
    );
    assert_eq!(
        samples(&body, "minegate_store_runs_taken_apart_total"),
        ["minegate_store_runs_taken_apart_total 0"]
    );
    assert_eq!(
        samples(&body, "minegate_store_listener_losses_total"),
        ["minegate_store_listener_losses_total 0"]
    );
    // The dev PKI: server certificate for 825 days and CA for 3650, issued
    // moments ago (the test clock is earlier still, so more days are left).
    let days = samples(&body, "minegate_certificate_days_left");
    assert_eq!(days.len(), 2, "{days:?}");
    assert!(
        days[0].starts_with(
            "minegate_certificate_days_left{certificate=\"ca:minegate development CA\"} "
        ),
        "{days:?}"
    );
    assert!(
        days[1].starts_with("minegate_certificate_days_left{certificate=\"server\"} "),
        "{days:?}"
    );
    assert_eq!(
        samples(&body, "minegate_store_scrape_ok"),
        ["minegate_store_scrape_ok 1"]
    );

    let (status, body) = http_get(metrics, "/").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert_eq!(body, "only GET /metrics is served here\n");
}

/// Polls the metrics until `name` reads `value`; the sample lines then.
async fn until_metric(addr: SocketAddr, name: &str, value: &str) -> String {
    let wanted = format!("{name} {value}");
    for _ in 0..100 {
        let (_, body) = http_get(addr, "/metrics").await;
        if samples(&body, name).contains(&wanted) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = http_get(addr, "/metrics").await;
    panic!("{name} never read {value}: {:?}", samples(&body, name));
}

/// A start notification for `bin` under `key`, with its own documents
/// (`tag`) and IP pool: 5 ledger entries in 4 commits.
async fn file_start(app: &TestApp, bin: &str, key: &str, tag: &str, pool: &str) {
    let channel = app.channel("authority").await;
    let documents = fixtures::upload_documents(channel.clone(), tag).await;
    FilingServiceClient::new(channel)
        .submit_start_notification(fixtures::start_notification(
            bin,
            key,
            fixtures::date(2026, 3, 20),
            &[pool],
            &documents,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_ledger_is_verified_in_the_background_and_a_broken_one_shows_in_the_metrics() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let clock = TestClock::at("2026-03-02T06:00:00Z");
        let Some(app) = spawn_on_with(backend, clock, |config| {
            config.limits.ledger_verify_ms = 100;
        })
        .await
        else {
            continue;
        };
        let metrics = app.gateway.metrics_addr().expect("metrics listener");
        file_start(&app, BIN_A, "k-1", "a", "37.99.0.0/24").await;

        // 3 documents, the acceptance, its extract: 5 entries, intact.
        let body = until_metric(metrics, "minegate_ledger_verified_entries", "5").await;
        assert_eq!(
            samples(&body, "minegate_ledger_verification_ok"),
            ["minegate_ledger_verification_ok 1"],
            "{backend:?}"
        );
        let at = samples(&body, "minegate_ledger_verification_timestamp_seconds");
        let at: f64 = at[0].rsplit_once(' ').unwrap().1.parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(now - at < 10.0, "{backend:?}: verified at {at}, now {now}");

        // Someone edits an entry underneath that a pass has verified. The
        // passes go on from where the last one ended: the next filing's 5
        // entries are verified, the edited one is not read again.
        let edited = execute(
            &app.config.database_url,
            "UPDATE ledger SET payload = payload || ' ' WHERE seq = 4",
        )
        .await;
        assert_eq!(edited, 1, "{backend:?}");
        file_start(&app, BIN_B, "k-2", "b", "37.99.1.0/24").await;
        let body = until_metric(metrics, "minegate_ledger_verified_entries", "10").await;
        assert_eq!(
            samples(&body, "minegate_ledger_verification_ok"),
            ["minegate_ledger_verification_ok 1"],
            "{backend:?}"
        );
        // A verification on demand reads it all and names the entry...
        let report = ComplianceServiceClient::new(app.channel("operator").await)
            .verify_ledger(minegate::proto::v1::VerifyLedgerRequest {})
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (report.intact, report.first_broken_entry),
            (false, Some(4)),
            "{backend:?}"
        );
        // ... and so does the first pass after a restart.
        let app = app.restart().await;
        let metrics = app.gateway.metrics_addr().expect("metrics listener");
        let body = until_metric(metrics, "minegate_ledger_verification_ok", "0").await;
        assert_eq!(
            samples(&body, "minegate_ledger_verified_entries"),
            ["minegate_ledger_verified_entries 4"],
            "{backend:?}"
        );
        app.gateway.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_verification_from_a_verified_prefix_reads_only_what_came_after() {
    use minegate::store::{self, VerifiedPrefix, verify_ledger, verify_ledger_from};
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let clock = TestClock::at("2026-03-02T06:00:00Z");
        let Some(app) = spawn_on(backend, clock.clone()).await else {
            continue;
        };
        let url = app.config.database_url.clone();
        file_start(&app, BIN_A, "k-1", "a", "37.99.0.0/24").await;
        let reader = store::open(&url, clock.clone(), store::Signing::ReadOnly)
            .await
            .unwrap();
        let (report, prefix) = verify_ledger_from(&*reader, VerifiedPrefix::default())
            .await
            .unwrap();
        let prefix = prefix.expect("intact");
        // 3 documents and a filing (its acceptance and extract, one commit):
        // 5 entries, 4 checkpoints.
        assert_eq!(
            (
                report.entries_checked,
                report.checkpoints_checked,
                prefix.entries()
            ),
            (5, 4, 5),
            "{backend:?}"
        );

        file_start(&app, BIN_B, "k-2", "b", "37.99.1.0/24").await;
        // An edited new entry is found from the prefix ...
        let edit =
            |seq: i64| format!("UPDATE ledger SET payload = payload || ' ' WHERE seq = {seq}");
        assert_eq!(execute(&url, &edit(9)).await, 1);
        let (report, after) = verify_ledger_from(&*reader, prefix.clone()).await.unwrap();
        assert_eq!(
            report.first_broken.map(|(seq, _)| seq),
            Some(9),
            "{backend:?}"
        );
        assert_eq!(report.entries_checked, 9, "{backend:?}");
        assert!(after.is_none(), "{backend:?}");
        // ... an edited old one is not: only a verification from the start reads it.
        let undo =
            "UPDATE ledger SET payload = SUBSTR(payload, 1, LENGTH(payload) - 1) WHERE seq = 9";
        assert_eq!(execute(&url, undo).await, 1);
        assert_eq!(execute(&url, &edit(2)).await, 1);
        let (report, after) = verify_ledger_from(&*reader, prefix).await.unwrap();
        assert_eq!(
            (
                report.first_broken,
                report.entries_checked,
                report.checkpoints_checked
            ),
            (None, 10, 8),
            "{backend:?}"
        );
        assert_eq!(after.expect("intact").entries(), 10, "{backend:?}");
        let full = verify_ledger(&*reader).await.unwrap();
        assert_eq!(
            full.first_broken.map(|(seq, _)| seq),
            Some(2),
            "{backend:?}"
        );
        app.gateway.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn certificate_days_left_are_exact_and_health_warns_below_the_threshold() {
    // The dev PKI is issued after `issued`, for 825 (server) and 3650 (CA)
    // days, its dates in whole seconds: a clock 30 days on, less a second,
    // sees 795 and 3620 whole days left.
    let issued = chrono::Utc::now().timestamp();
    let later = chrono::DateTime::from_timestamp(issued + 30 * 86_400 - 1, 0)
        .unwrap()
        .to_rfc3339();
    let clock = TestClock::at(&later);
    let app = spawn_on_with(Backend::Sqlite, clock, |config| {
        config.tls.expiry_warning_days = 800;
    })
    .await
    .unwrap();
    let (_, body) = http_get(app.gateway.metrics_addr().unwrap(), "/metrics").await;
    assert_eq!(
        samples(&body, "minegate_certificate_days_left"),
        [
            "minegate_certificate_days_left{certificate=\"ca:minegate development CA\"} 3620",
            "minegate_certificate_days_left{certificate=\"server\"} 795",
        ]
    );
    // 795 < 800: the certificates' health warns; the gateway itself serves.
    assert_eq!(
        health(&app, CERTIFICATES_HEALTH).await,
        ServingStatus::NotServing
    );
    assert_eq!(health(&app, "").await, ServingStatus::Serving);
    // `minegate health` says so, and exits 2: serving, with a warning.
    let pki = app.pki_dir();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .arg("health")
        .arg("--server")
        .arg(format!("https://{}", app.addr))
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join("operator.pem"))
        .arg("--key")
        .arg(pki.join("operator.key"))
        .args(["--tls-domain", "localhost"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().last(),
        Some(
            "minegate.certificates                         NOT_SERVING (a server or CA certificate \
             expires within tls.expiry_warning_days; minegate_certificate_days_left has the days)"
        )
    );

    let fine = spawn_app().await;
    assert_eq!(
        health(&fine, CERTIFICATES_HEALTH).await,
        ServingStatus::Serving
    );
}

/// An upload that sends its metadata and then nothing: a call held open.
fn held_upload(
    channel: tonic::transport::Channel,
) -> (
    mpsc::Sender<UploadDocumentRequest>,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(4);
    tx.try_send(UploadDocumentRequest {
        part: Some(Part::Metadata(DocumentMetadata {
            kind: DocumentKind::Residency as i32,
            media_type: "application/pdf".into(),
            file_name: "slow.pdf".into(),
            size_bytes: None,
            sha256: None,
        })),
    })
    .unwrap();
    let call = tokio::spawn(async move {
        FilingServiceClient::new(channel)
            .upload_document(ReceiverStream::new(rx))
            .await
            .map(drop)
    });
    (tx, call)
}

#[tokio::test]
async fn a_peer_holding_a_thousand_calls_gets_resource_exhausted_and_others_are_served() {
    let app = spawn_app_with(|config| {
        config.limits.max_concurrent_calls_per_peer = 32;
    })
    .await;
    let mut channels = Vec::new();
    for _ in 0..8 {
        let channel = app.channel("authority").await;
        // One call first, so the client knows the server's HTTP/2 settings
        // (64 streams per connection) before it opens 125 streams at once.
        ComplianceServiceClient::new(channel.clone())
            .get_signing_keys(GetSigningKeysRequest {})
            .await
            .unwrap();
        channels.push(channel);
    }
    let mut held = Vec::new();
    for i in 0..1000 {
        held.push(held_upload(channels[i % channels.len()].clone()));
    }
    // 968 are refused at once; 32 stay open.
    let finished = |held: &[(
        mpsc::Sender<UploadDocumentRequest>,
        tokio::task::JoinHandle<_>,
    )]| { held.iter().filter(|(_, call)| call.is_finished()).count() };
    for _ in 0..400 {
        if finished(&held) >= 968 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(finished(&held), 968);
    let mut open = Vec::new();
    for (tx, call) in held {
        if !call.is_finished() {
            open.push((tx, call));
            continue;
        }
        let status = call.await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert_eq!(
            status.message(),
            "urn:minegate:authority has 32 calls in progress, the most one peer may have; retry in 1 s"
        );
        let retry = status.get_details_retry_info().expect("a retry hint");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));
    }
    assert_eq!(open.len(), 32);

    // Another agency is served meanwhile, over its own connection.
    let keys = ComplianceServiceClient::new(app.channel("energy").await)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
    // The authority itself is at its limit, for any method.
    let status = FilingServiceClient::new(app.channel("authority").await)
        .get_filing(GetFilingRequest {
            filing_id: "F-none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);

    // The held calls end (an empty document is refused); the peer may call again.
    drop(open);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = FilingServiceClient::new(app.channel("authority").await)
        .get_filing(GetFilingRequest {
            filing_id: "F-none".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    let (_, body) = http_get(app.gateway.metrics_addr().unwrap(), "/metrics").await;
    assert_eq!(
        samples(&body, "minegate_calls_refused_total"),
        [
            "minegate_calls_refused_total{method=\"/kz.digitalmining.v1.FilingService/GetFiling\",reason=\"peer_limit\"} 1",
            "minegate_calls_refused_total{method=\"/kz.digitalmining.v1.FilingService/UploadDocument\",reason=\"peer_limit\"} 968",
        ]
    );
}

/// [`probe`] as the dev PKI's client `name`.
async fn handshake(app: &TestApp, name: &str) -> Option<AlertDescription> {
    let dir = app.pki_dir();
    let config = rustls_client(
        &dir.join("ca.pem"),
        Some((
            &dir.join(format!("{name}.pem")),
            &dir.join(format!("{name}.key")),
        )),
    );
    probe(app.addr, config).await
}

#[tokio::test]
async fn a_changed_crl_file_is_reloaded_the_revoked_peers_connections_close_and_its_next_is_refused()
 {
    let app = spawn_app_with(|config| {
        config.tls.reload_check_ms = 100;
    })
    .await;
    // The energy ministry has a Subscribe stream open; finance a connection.
    let mut stream = EnergyExtractServiceClient::new(app.channel("energy").await)
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap()
        .into_inner();
    let finance = app.channel("finance").await;
    assert_eq!(handshake(&app, "energy").await, None);

    pki::revoke(&app.pki_dir(), "energy").unwrap();
    let mut refused = None;
    for _ in 0..50 {
        refused = handshake(&app, "energy").await;
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, Some(AlertDescription::CertificateRevoked));
    // The revoked peer's open connection is closed: its stream ends in an error.
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("the stream is cut");
    assert!(ended.is_err(), "{ended:?}");
    // Others still get in, and their open connections stay.
    assert_eq!(handshake(&app, "finance").await, None);
    ComplianceServiceClient::new(finance)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap();

    let (_, body) = http_get(app.gateway.metrics_addr().unwrap(), "/metrics").await;
    assert_eq!(
        samples(&body, "minegate_tls_reloads_total"),
        ["minegate_tls_reloads_total{outcome=\"ok\"} 1"]
    );
}

#[tokio::test]
async fn a_second_ca_added_to_the_bundle_is_trusted_without_a_restart_and_a_broken_file_is_not_loaded()
 {
    let app = spawn_app_with(|config| {
        config.tls.reload_check_ms = 100;
    })
    .await;
    // A second agency CA, with a client certificate for the authority's identity.
    let other = tempfile::tempdir().unwrap();
    let other_ca =
        pki::CertificateAuthority::generate("Ministry of Digital Development CA").unwrap();
    let leaf = other_ca
        .issue_client(&pki::LeafOptions::client(
            "authority",
            Some("urn:minegate:authority"),
        ))
        .unwrap();
    std::fs::write(other.path().join("authority.pem"), &leaf.cert_pem).unwrap();
    std::fs::write(other.path().join("authority.key"), &leaf.key_pem).unwrap();
    let client = rustls_client(
        &app.pki_dir().join("ca.pem"),
        Some((
            &other.path().join("authority.pem"),
            &other.path().join("authority.key"),
        )),
    );
    assert_eq!(
        probe(app.addr, client.clone()).await,
        Some(AlertDescription::UnknownCA)
    );

    // A half-written bundle is refused and the old one kept.
    let dir = app.pki_dir();
    let finance = rustls_client(
        &dir.join("ca.pem"),
        Some((&dir.join("finance.pem"), &dir.join("finance.key"))),
    );
    let bundle = app.pki_dir().join("ca.pem");
    let original = std::fs::read_to_string(&bundle).unwrap();
    std::fs::write(&bundle, "-----BEGIN CERTIFICATE-----\nnot base64\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(probe(app.addr, finance).await, None);

    // The other CA and its CRL are appended.
    let crl = app.pki_dir().join("crl.pem");
    let crls = std::fs::read_to_string(&crl).unwrap() + &other_ca.sign_crl(&[], 1).unwrap();
    std::fs::write(&crl, crls).unwrap();
    std::fs::write(&bundle, original + other_ca.cert_pem()).unwrap();

    let mut accepted = false;
    for _ in 0..50 {
        if probe(app.addr, client.clone()).await.is_none() {
            accepted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(accepted, "the other CA's certificate was never accepted");

    let (_, body) = http_get(app.gateway.metrics_addr().unwrap(), "/metrics").await;
    let reloads = samples(&body, "minegate_tls_reloads_total");
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert!(reloads[0].starts_with("minegate_tls_reloads_total{outcome=\"failed\"} "));
    assert!(reloads[1].starts_with("minegate_tls_reloads_total{outcome=\"ok\"} "));
}

#[tokio::test]
async fn an_oversized_message_and_a_stalled_call_are_refused_and_change_nothing() {
    let app = spawn_app_with(|config| {
        config.limits.max_message_bytes = minegate::config::MIN_MESSAGE_BYTES;
        config.limits.request_timeout_ms = 500;
    })
    .await;
    let channel = app.channel("authority").await;
    let documents = fixtures::upload_documents(channel.clone(), "big").await;
    let mut filing = fixtures::start_notification(
        BIN_A,
        "big",
        fixtures::date(2026, 6, 1),
        &["37.99.0.0/24"],
        &documents,
    );
    filing.person.as_mut().unwrap().name = "Ж".repeat(1_100_000);
    let status = FilingServiceClient::new(channel.clone())
        .submit_start_notification(filing)
        .await
        .unwrap_err();
    // gRPC's status code table: a message over the limit is
    // RESOURCE_EXHAUSTED (it was OUT_OF_RANGE, tonic's own code).
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().ends_with("the limit is: 2097152 bytes"),
        "{status:?}"
    );
    assert_eq!(
        scalar(&app.config.database_url, "SELECT COUNT(*) FROM filings").await,
        0
    );

    // An upload that sends its first message and then nothing is ended
    // once no message has come for the request timeout, and the connection
    // goes on serving.
    let (tx, call) = held_upload(channel.clone());
    let status = call.await.unwrap().unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(
        status.message(),
        "no part of the document arrived for 500 ms"
    );
    drop(tx);
    let keys = ComplianceServiceClient::new(channel)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(keys.keys.len(), 1);
    assert_eq!(
        scalar(&app.config.database_url, "SELECT COUNT(*) FROM documents").await,
        3
    );
}
