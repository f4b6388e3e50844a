//! Every artifact fits what delivers it, by construction: each string and
//! list of a filing is bounded, and `limits.max_message_bytes` may not be
//! set below `MIN_MESSAGE_BYTES`. Filings at every limit (four-byte
//! characters throughout) go through a gateway configured at that smallest
//! limit, and every artifact made of them comes back to clients that decode
//! no more than it: receipt, replay, GetFiling, the extract with its
//! evidence, the acknowledgement. Filings past a limit are refused with the
//! field and reason, and store nothing. Both backends.

#[macro_use]
mod common;

use common::{
    fixtures::{self, BIN_A, date, generated_bin, start_notification},
    *,
};
use minegate::{
    config::MIN_MESSAGE_BYTES,
    proto::v1::{
        AcknowledgeExtractRequest, Contacts, DataCentre, DocumentRef, EquipmentLine, FilingReceipt,
        GetDeliveryStatusRequest, GetFilingRequest, ListRegisterRequest, QuarterlyReport,
        StartNotification, SubscribeRequest, compliance_service_client::ComplianceServiceClient,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient,
    },
};
use prost::Message;
use tonic::{Code, transport::Channel};

on_both_backends!(
    filings_at_every_limit_give_artifacts_that_fit_the_smallest_message_limit,
    a_pool_shared_with_eleven_others_gives_a_receipt_of_21_conflict_findings,
    filings_past_a_limit_are_refused_with_the_field_and_store_nothing,
    an_extract_too_large_to_send_is_recorded_as_failed_and_holds_up_none_behind_it,
    extracts_a_subscriber_does_not_read_are_not_recorded_as_sent,
    a_register_page_stops_where_one_more_entry_would_not_fit,
    delivery_status_lists_the_latest_1000_sendings_and_counts_the_rest,
);

/// A character of four bytes in UTF-8: the most a character can take.
const WIDE: &str = "𝔸";

fn wide(chars: usize) -> String {
    WIDE.repeat(chars)
}

/// 1000 IPv6 addresses written out in full (43 characters each).
fn full_pool() -> Vec<String> {
    (0..1000)
        .map(|i| format!("2a03:e2c0:0000:0000:0000:0000:0000:{i:04x}/128"))
        .collect()
}

/// A start notification with every string and list at its limit.
fn start_at_every_limit(bin: &str, key: &str, documents: &[DocumentRef]) -> StartNotification {
    let mut start = start_notification(bin, key, date(2026, 6, 1), &[], documents);
    let person = start.person.as_mut().unwrap();
    person.name = wide(300);
    person.legal_address = wide(500);
    let email = format!(
        "{}@{}.{}.{}.kz",
        "a".repeat(64),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(58)
    );
    assert_eq!(email.len(), 254);
    person.contacts = Some(Contacts {
        phones: vec!["+77012345678".into(); 10],
        emails: vec![email; 10],
    });
    start.bank.as_mut().unwrap().bank_name = wide(300);
    start.ip_pool = full_pool();
    start.documents = (0..100)
        .map(|i| DocumentRef {
            file_name: wide(255),
            ..documents[i % documents.len()].clone()
        })
        .collect();
    start.data_centres = vec![
        DataCentre {
            address: wide(500),
            kato_code: Some("552210000".into()),
            consumption_wh: None,
        };
        200
    ];
    start.idempotency_key = "k".repeat(128);
    start
}

/// A quarterly report for 2026 Q1 with every string and list at its limit.
fn report_at_every_limit(documents: &[DocumentRef]) -> QuarterlyReport {
    let start = start_at_every_limit(BIN_A, "unused", documents);
    let mut report = fixtures::quarterly_report(BIN_A, "", 2026, 1, 200 * 5_000_000, &[], &[]);
    report.person = start.person;
    report.ip_pool = start.ip_pool;
    report.documents = start.documents;
    report.data_centres = start
        .data_centres
        .into_iter()
        .map(|site| DataCentre {
            consumption_wh: Some(5_000_000),
            ..site
        })
        .collect();
    report.equipment = vec![
        EquipmentLine {
            model: wide(200),
            count: 4_000_000_000,
        };
        1000
    ];
    report.idempotency_key = "q".repeat(128);
    report
}

fn filings(channel: Channel) -> FilingServiceClient<Channel> {
    FilingServiceClient::new(channel)
        .max_decoding_message_size(MIN_MESSAGE_BYTES)
        .max_encoding_message_size(MIN_MESSAGE_BYTES)
}

async fn gateway(backend: Backend) -> Option<TestApp> {
    spawn_on_with(backend, TestClock::at("2026-04-02T06:00:00Z"), |config| {
        config.limits.max_message_bytes = MIN_MESSAGE_BYTES;
    })
    .await
}

fn encoded<M: Message>(message: &M) -> usize {
    message.encoded_len()
}

async fn filings_at_every_limit_give_artifacts_that_fit_the_smallest_message_limit(
    backend: Backend,
) {
    let Some(app) = gateway(backend).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "limits").await;
    let start = start_at_every_limit(BIN_A, "start-at-every-limit", &documents);
    let report = report_at_every_limit(&documents);
    // At every limit: 567 KB and 1.38 MB, well past what a test filing is.
    assert_eq!((encoded(&start), encoded(&report)), (566_830, 1_378_597));

    let mut client = filings(authority);
    let mut receipts: Vec<FilingReceipt> = Vec::new();
    receipts.push(
        client
            .submit_start_notification(start.clone())
            .await
            .unwrap()
            .into_inner(),
    );
    receipts.push(
        client
            .submit_quarterly_report(report.clone())
            .await
            .unwrap()
            .into_inner(),
    );
    assert_eq!(receipts[0].register_number, "KZ-DM-000001");
    assert_eq!(receipts[1].revision, 1);
    // A replay and GetFiling hand the same receipt back; GetFiling with the
    // whole filing beside it.
    let replayed = client
        .submit_quarterly_report(report.clone())
        .await
        .unwrap();
    assert_eq!(replayed.get_ref().filing_id, receipts[1].filing_id);
    for receipt in &receipts {
        let filing = client
            .get_filing(GetFilingRequest {
                filing_id: receipt.filing_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            encoded(&filing) <= MIN_MESSAGE_BYTES,
            "{}",
            encoded(&filing)
        );
        assert_eq!(
            filing.receipt.as_ref().unwrap().filing_id,
            receipt.filing_id
        );
    }

    // Both extracts, with their evidence, reach a subscriber that decodes
    // no more than the limit, and each is acknowledged.
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await)
        .max_decoding_message_size(MIN_MESSAGE_BYTES);
    let mut stream = energy
        .subscribe(SubscribeRequest {
            until_caught_up: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut delivered = Vec::new();
    while let Some(delivery) = stream.message().await.unwrap() {
        assert!(
            encoded(&delivery) <= MIN_MESSAGE_BYTES,
            "{}",
            encoded(&delivery)
        );
        let extract = delivery.extract.unwrap();
        assert_eq!(extract.data_centres.len(), 200);
        assert_eq!(extract.customs_declaration_or_title.len(), 34);
        assert_eq!(extract.name, wide(300));
        let ack = energy
            .acknowledge(AcknowledgeExtractRequest {
                extract_id: extract.extract_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(ack.deadline_met);
        delivered.push(extract.source_filing_id);
        if delivered.len() == 2 {
            break;
        }
    }
    assert_eq!(
        delivered,
        [receipts[0].filing_id.clone(), receipts[1].filing_id.clone()]
    );
}

async fn a_pool_shared_with_eleven_others_gives_a_receipt_of_21_conflict_findings(
    backend: Backend,
) {
    let Some(app) = gateway(backend).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "shared pool").await;
    let mut client = filings(authority);
    let pool = full_pool();
    let pool: Vec<&str> = pool.iter().map(String::as_str).collect();
    let mut last = None;
    for n in 0..12 {
        let filing = start_notification(
            &generated_bin(n),
            &format!("shared-{n}"),
            date(2026, 6, 1),
            &pool,
            &documents,
        );
        last = Some((
            filing.clone(),
            client
                .submit_start_notification(filing)
                .await
                .unwrap()
                .into_inner(),
        ));
    }
    let (filing, receipt) = last.unwrap();
    // 11 × 1000 overlaps: 20 named, the other 10,980 counted in one finding.
    assert_eq!(receipt.findings.len(), 21);
    assert_eq!(
        receipt.findings[0].detail,
        format!(
            "2a03:e2c0::/128 overlaps 2a03:e2c0::/128 registered to {}",
            generated_bin(0)
        )
    );
    assert_eq!(
        receipt.findings[20].detail,
        "and 10980 more overlaps with ranges registered to others (the first 20 are named)"
    );
    // 8.9 KB with its evidence, against 2 MiB (over 4 MB before the cap).
    assert_eq!(encoded(&receipt), 8_881);
    let replayed = client.submit_start_notification(filing).await.unwrap();
    assert_eq!(replayed.into_inner(), receipt);
    let stored = client
        .get_filing(GetFilingRequest {
            filing_id: receipt.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.receipt.unwrap().findings.len(), 21);
    let conflicts = "SELECT COUNT(*) FROM findings WHERE kind = 'IP_POOL_CONFLICT'";
    // Every filer after the first overlaps 1000 or more: 21 findings each.
    assert_eq!(scalar(&app.config.database_url, conflicts).await, 11 * 21);
}

async fn filings_past_a_limit_are_refused_with_the_field_and_store_nothing(backend: Backend) {
    let Some(app) = gateway(backend).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "past").await;
    let mut client = filings(authority);
    let mut start = start_at_every_limit(BIN_A, "past-every-limit", &documents);
    start
        .person
        .as_mut()
        .unwrap()
        .contacts
        .as_mut()
        .unwrap()
        .phones
        .push("+77012345678".into());
    start.documents[0].file_name = wide(256);
    start.documents[1].media_type = "text/html".into();
    start.data_centres.push(start.data_centres[0].clone());
    // Spaces around a value count toward its limit.
    start.person.as_mut().unwrap().name = format!("{}{}", wide(300), " ".repeat(1000));
    let refused = client.submit_start_notification(start).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [
            (
                "person.name",
                "the name (3.1) is longer than 300 characters"
            ),
            ("person.contacts.phones", "at most 10 entries, got 11"),
            (
                "documents[0].file_name",
                "must be at most 255 characters, without control or bidirectional formatting characters"
            ),
            (
                "documents[1].media_type",
                "must be empty or one of application/pdf, image/png, image/jpeg, application/xml"
            ),
            ("data_centres", "at most 200 entries, got 201"),
        ]
        .map(|(field, reason)| (field.to_owned(), reason.to_owned()))
    );
    // Spaces around an IP pool entry count toward its limit; characters
    // that reorder what is shown are refused in text and file names.
    let mut padded = start_notification(BIN_A, "padded", date(2026, 6, 1), &[], &documents);
    padded.ip_pool = vec![
        format!("37.99.0.0/24{}", " ".repeat(89)),
        format!("37.99.1.0/24{}", " ".repeat(88)),
    ];
    padded.person.as_mut().unwrap().name = "ТОО \u{202E}ниатйаМ".into();
    padded.documents[0].file_name = "report\u{202E}fdp.exe".into();
    let refused = client.submit_start_notification(padded).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [
            (
                "person.name",
                "the name (3.1) contains bidirectional formatting characters (U+202E and the like)"
            ),
            (
                "ip_pool[0]",
                "is longer than 100 characters (spaces included)"
            ),
            (
                "documents[0].file_name",
                "must be at most 255 characters, without control or bidirectional formatting characters"
            ),
        ]
        .map(|(field, reason)| (field.to_owned(), reason.to_owned()))
    );
    // A reference's size and media type, when given, are the document's.
    let mut misdescribed =
        start_notification(BIN_A, "misdescribed", date(2026, 6, 1), &[], &documents);
    misdescribed.ip_pool = vec!["37.99.0.0/24".into()];
    misdescribed.documents[0].size_bytes = 1;
    misdescribed.documents[1].media_type = "application/pdf".into();
    let refused = client
        .submit_start_notification(misdescribed)
        .await
        .unwrap_err();
    assert_eq!(
        violations(&refused),
        [
            (
                "documents[0].size_bytes".to_owned(),
                format!(
                    "the document with this digest is {} bytes",
                    documents[0].size_bytes
                )
            ),
            (
                "documents[1].media_type".to_owned(),
                "the document with this digest is image/png".to_owned()
            ),
        ]
    );
    // Dates outside the regime's years are typing errors.
    let ancient = fixtures::termination(BIN_A, "ancient", date(1, 1, 1));
    let refused = client.submit_termination_notice(ancient).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [(
            "activity_end_date".to_owned(),
            "the date the activity ended must be in the years 2020 to 2100, got 0001-01-01"
                .to_owned()
        )]
    );
    let far = start_notification(
        BIN_A,
        "far",
        date(9999, 5, 2),
        &["37.99.0.0/24"],
        &documents,
    );
    let refused = client.submit_start_notification(far).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [(
            "planned_start_date".to_owned(),
            "the planned start date must be in the years 2020 to 2100, got 9999-05-02".to_owned()
        )]
    );
    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, 0);
    assert_eq!(
        scalar(
            url,
            "SELECT COUNT(*) FROM ledger WHERE kind <> 'DOCUMENT_STORED'"
        )
        .await,
        0
    );
}

/// Writes `bytes` over the extract `extract_id`'s stored body, underneath
/// the gateway (as an extract made by an earlier release, before filings
/// were bounded, would be).
async fn replace_extract_body(url: &str, extract_id: &str, bytes: &[u8]) {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let literal = if sqlite_path(url).is_some() {
        format!("X'{hex}'")
    } else {
        format!("decode('{hex}', 'hex')")
    };
    let sql = format!("UPDATE extracts SET body = {literal} WHERE extract_id = '{extract_id}'");
    assert_eq!(execute(url, &sql).await, 1);
}

async fn an_extract_too_large_to_send_is_recorded_as_failed_and_holds_up_none_behind_it(
    backend: Backend,
) {
    let Some(app) = spawn_on(backend, TestClock::at("2026-04-02T06:00:00Z")).await else {
        return;
    };
    let url = app.config.database_url.clone();
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "poison").await;
    let mut client = FilingServiceClient::new(authority);
    let (mut filing_ids, mut extract_ids) = (Vec::new(), Vec::new());
    for n in 0..4 {
        let pool = format!("37.{}.0.0/16", 10 + n);
        let filing = start_notification(
            &generated_bin(n),
            &format!("poison-{n}"),
            date(2026, 6, 1),
            &[&pool],
            &documents,
        );
        let filing_id = client
            .submit_start_notification(filing)
            .await
            .unwrap()
            .into_inner()
            .filing_id;
        let sql = format!("SELECT extract_id FROM extracts WHERE filing_id = '{filing_id}'");
        extract_ids.push(text_of(&url, &sql).await);
        filing_ids.push(filing_id);
    }
    // The first extract made 5 MB, as an earlier release could; the third's
    // stored bytes damaged.
    let (large, damaged) = (extract_ids[0].clone(), extract_ids[2].clone());
    let extract = minegate::proto::v1::EnergyExtract {
        extract_id: large.clone(),
        name: "x".repeat(5 * 1024 * 1024),
        ..Default::default()
    };
    replace_extract_body(&url, &large, &extract.encode_to_vec()).await;
    replace_extract_body(&url, &damaged, &[0xff; 16]).await;

    // A subscriber that takes one at a time gets the two others.
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    let mut stream = energy
        .subscribe(SubscribeRequest {
            max_in_flight: 1,
            until_caught_up: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut delivered = Vec::new();
    while let Some(delivery) = stream.message().await.unwrap() {
        let extract = delivery.extract.unwrap();
        energy
            .acknowledge(AcknowledgeExtractRequest {
                extract_id: extract.extract_id.clone(),
            })
            .await
            .unwrap();
        delivered.push(extract.source_filing_id);
    }
    assert_eq!(delivered, [filing_ids[1].clone(), filing_ids[3].clone()]);

    // The ledger says what happened: two sent, two failed with the reason.
    let kinds = "SELECT kind || ' ' || subject FROM ledger \
                 WHERE kind IN ('EXTRACT_SENT', 'EXTRACT_SEND_FAILED') ORDER BY seq";
    assert_eq!(
        texts(&url, kinds).await,
        [
            format!("EXTRACT_SEND_FAILED {large}"),
            format!("EXTRACT_SENT {}", extract_ids[1]),
            format!("EXTRACT_SEND_FAILED {damaged}"),
            format!("EXTRACT_SENT {}", extract_ids[3]),
        ]
    );
    let payload = |id: &str| {
        format!(
            "SELECT payload FROM ledger WHERE kind = 'EXTRACT_SEND_FAILED' AND subject = '{id}'"
        )
    };
    let too_large = text_of(&url, &payload(&large)).await;
    assert!(
        too_large.starts_with(&format!(
            "{{\"extract_id\":\"{large}\",\"reason\":\"the extract with its evidence is "
        )) && too_large.ends_with(
            " bytes, more than one message may be (4194304 bytes, limits.max_message_bytes)\",\
             \"subscriber\":\"urn:minegate:energy\"}"
        ),
        "{too_large}"
    );
    assert_eq!(
        text_of(&url, &payload(&damaged)).await,
        format!(
            "{{\"extract_id\":\"{damaged}\",\"reason\":\"the stored extract is unreadable\",\
             \"subscriber\":\"urn:minegate:energy\"}}"
        )
    );
    // Never delivered, neither can be acknowledged; their obligations stay open.
    for id in [&large, &damaged] {
        let refused = energy
            .acknowledge(AcknowledgeExtractRequest {
                extract_id: id.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (refused.code(), refused.message().to_owned()),
            (
                Code::NotFound,
                format!("no extract {id:?} has been sent to this subscriber")
            )
        );
    }
    let status = "SELECT status FROM obligations WHERE kind = 'ENERGY_EXTRACT' ORDER BY seq";
    assert_eq!(
        texts(&url, status).await,
        ["PENDING", "FULFILLED", "PENDING", "FULFILLED"]
    );
    // The operators see it: one failure each, counted and alerted on.
    let (_, metrics) = http_get(app.gateway.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        metrics.contains("\nminegate_extract_send_failures_total 2\n"),
        "{metrics}"
    );
}

/// One text value read underneath the gateway.
async fn text_of(url: &str, sql: &str) -> String {
    if let Some(path) = sqlite_path(url) {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(sql, [], |row| row.get(0))
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        value
    }
}

/// A channel as the energy ministry whose HTTP/2 windows stay at 64 KiB
/// until the application reads.
async fn narrow_energy_channel(app: &TestApp) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let dir = app.pki_dir();
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("energy.pem"), read("energy.key")))
        .domain_name("localhost");
    Endpoint::from_shared(format!("https://{}", app.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap()
}

async fn extracts_a_subscriber_does_not_read_are_not_recorded_as_sent(backend: Backend) {
    let Some(app) = gateway(backend).await else {
        return;
    };
    let url = app.config.database_url.clone();
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "unread").await;
    let mut client = filings(authority);
    for n in 0..6 {
        let mut start = start_at_every_limit(&generated_bin(n), "", &documents);
        start.idempotency_key = format!("unread-{n}");
        client.submit_start_notification(start).await.unwrap();
    }
    // Six extracts of about 800 KB each; the subscriber reads none of them.
    let mut energy = EnergyExtractServiceClient::new(narrow_energy_channel(&app).await)
        .max_decoding_message_size(MIN_MESSAGE_BYTES);
    let mut stream = energy
        .subscribe(SubscribeRequest {
            max_in_flight: 6,
            until_caught_up: false,
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let sent = "SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_SENT'";
    let unread = scalar(&url, sent).await;
    // The transport took two: one it is sending (64 KiB of it went), one
    // encoded behind it; the other four wait in the stream, unrecorded.
    assert_eq!(unread, 2, "only what the transport took is recorded");
    // Read, each is recorded as the transport takes it, and acknowledged.
    // Acknowledged on a connection of their own: the narrow one's window is
    // full of the next extract while this one is acknowledged.
    let mut acks = EnergyExtractServiceClient::new(app.channel("energy").await);
    for _ in 0..6 {
        let extract = stream.message().await.unwrap().unwrap().extract.unwrap();
        acks.acknowledge(AcknowledgeExtractRequest {
            extract_id: extract.extract_id,
        })
        .await
        .unwrap();
    }
    assert_eq!(scalar(&url, sent).await, 6);
    let acknowledged = "SELECT COUNT(*) FROM ledger WHERE kind = 'EXTRACT_ACKNOWLEDGED'";
    assert_eq!(scalar(&url, acknowledged).await, 6);
}

async fn a_register_page_stops_where_one_more_entry_would_not_fit(backend: Backend) {
    let Some(app) = gateway(backend).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "register").await;
    let mut client = filings(authority);
    for n in 0..400u32 {
        let pool = format!("37.{}.{}.0/24", 1 + n / 256, n % 256);
        let mut start = start_notification(
            &generated_bin(n),
            &format!("register-{n}"),
            date(2026, 6, 1),
            &[&pool],
            &documents,
        );
        let person = start.person.as_mut().unwrap();
        person.name = wide(300);
        person.legal_address = wide(500);
        client.submit_start_notification(start).await.unwrap();
    }
    // 400 entries of about 3.3 KB at page size 1000: two pages, the first
    // cut where one more would pass half the smallest message.
    let mut pages = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_register(ListRegisterRequest {
                page_size: 1000,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            encoded(&page) <= MIN_MESSAGE_BYTES / 2 + 64,
            "{}",
            encoded(&page)
        );
        token = page.next_page_token.clone();
        pages.push(page.entries);
        if token.is_empty() {
            break;
        }
    }
    // Each entry counted with 4 bytes for its tag and length.
    let entry_size = encoded(&pages[0][0]) + 4;
    let first = (MIN_MESSAGE_BYTES / 2) / entry_size;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        [first, 400 - first]
    );
    let numbers: Vec<String> = pages
        .concat()
        .into_iter()
        .map(|e| e.register_number)
        .collect();
    let expected: Vec<String> = (1..=400).map(|n| format!("KZ-DM-{n:06}")).collect();
    assert_eq!(numbers, expected);
}

async fn delivery_status_lists_the_latest_1000_sendings_and_counts_the_rest(backend: Backend) {
    let Some(app) = gateway(backend).await else {
        return;
    };
    let url = app.config.database_url.clone();
    let authority = app.channel("authority").await;
    let documents = fixtures::upload_documents(authority.clone(), "attempts").await;
    let mut client = filings(authority.clone());
    let start = start_notification(
        BIN_A,
        "attempts",
        date(2026, 6, 1),
        &["37.99.0.0/24"],
        &documents,
    );
    let filing_id = client
        .submit_start_notification(start)
        .await
        .unwrap()
        .into_inner()
        .filing_id;
    // 1,200 sendings, as a subscriber reconnecting without acknowledging
    // leaves them, planted underneath.
    let extract_id = text_of(
        &url,
        &format!("SELECT extract_id FROM extracts WHERE filing_id = '{filing_id}'"),
    )
    .await;
    let rows: Vec<String> = (1..=1200)
        .map(|n| {
            format!(
                "('{extract_id}', 'urn:minegate:energy', {n}, {})",
                1_780_000_000_000_000i64 + n
            )
        })
        .collect();
    let insert = format!(
        "INSERT INTO extract_attempts (extract_id, subscriber, attempt, sent_at) VALUES {}",
        rows.join(", ")
    );
    assert_eq!(execute(&url, &insert).await, 1200);
    let status = ComplianceServiceClient::new(authority)
        .get_delivery_status(GetDeliveryStatusRequest { filing_id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.earlier_attempts_not_listed, 200);
    let listed: Vec<u32> = status.attempts.iter().map(|a| a.attempt).collect();
    assert_eq!(listed, (201..=1200).collect::<Vec<u32>>());
}
