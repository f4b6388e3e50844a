//! Documents at realistic size, streamed in and out: a 20 MiB document
//! round-trips byte for byte; an upload cut off (client gone, gateway
//! killed) leaves no document and no chunks; a lie about the bytes found
//! part way stores nothing; identical uploads at once give one document.
//! Both backends.

#[macro_use]
mod common;

use std::time::Duration;

use chrono::Datelike;
use common::{
    child::ChildGateway,
    fixtures::{self, BIN_A, date, start_notification},
    *,
};
use minegate::proto::v1::{
    DocumentKind, DocumentMetadata, DocumentRef, FetchDocumentRequest, UploadDocumentRequest,
    document_chunk::Part as FetchPart, energy_extract_service_client::EnergyExtractServiceClient,
    filing_service_client::FilingServiceClient, upload_document_request::Part,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, transport::Channel};

const MIB: usize = 1024 * 1024;

/// `size` bytes of a PDF whose content is a pseudo-random run from `seed`.
fn big_pdf(size: usize, seed: u64) -> Vec<u8> {
    let mut bytes = b"%PDF-1.4\n".to_vec();
    let mut state = seed;
    while bytes.len() < size {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    minegate::domain::Sha256Hex::of(bytes).to_string()
}

fn metadata(kind: DocumentKind, media_type: &str, bytes: &[u8]) -> DocumentMetadata {
    DocumentMetadata {
        kind: kind as i32,
        media_type: media_type.into(),
        file_name: "scan.pdf".into(),
        size_bytes: Some(bytes.len() as u64),
        sha256: Some(sha256(bytes)),
    }
}

async fn upload(
    channel: Channel,
    metadata: DocumentMetadata,
    bytes: &[u8],
) -> Result<DocumentRef, tonic::Status> {
    let mut messages = vec![UploadDocumentRequest {
        part: Some(Part::Metadata(metadata)),
    }];
    messages.extend(bytes.chunks(64 * 1024).map(|c| UploadDocumentRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    FilingServiceClient::new(channel)
        .upload_document(tokio_stream::iter(messages))
        .await
        .map(|r| r.into_inner())
}

/// A gateway on `backend`, its database URL and a channel as the authority;
/// `None` when PostgreSQL is not configured.
async fn gateway(backend: Backend) -> Option<(TestApp, String, Channel)> {
    let app = spawn_on(backend, TestClock::at("2026-03-02T06:00:00Z")).await?;
    let url = app.config.database_url.clone();
    let channel = app.channel("authority").await;
    Some((app, url, channel))
}

/// Files a start notification whose customs declaration (3.10) is
/// `document`, with small documents of the other two kinds.
async fn file_referencing(channel: Channel, document: &DocumentRef, key: &str) {
    let mut documents = fixtures::upload_documents(channel.clone(), key).await;
    documents[0] = document.clone();
    FilingServiceClient::new(channel)
        .submit_start_notification(start_notification(
            BIN_A,
            key,
            date(2026, 4, 10),
            &["37.99.0.0/24"],
            &documents,
        ))
        .await
        .unwrap();
}

/// `minegate energy subscribe --once --out OUT`, as the energy ministry.
async fn subscribe_once(app: &TestApp, out: &std::path::Path) -> std::process::Output {
    as_role(
        app,
        "energy",
        &[
            "energy",
            "subscribe",
            "--once",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await
}

/// What is stored of documents: (documents, chunks, unfinished uploads).
async fn stored(url: &str) -> (i64, i64, i64) {
    (
        scalar(url, "SELECT COUNT(*) FROM documents").await,
        scalar(url, "SELECT COUNT(*) FROM document_chunks").await,
        scalar(url, "SELECT COUNT(*) FROM uploads").await,
    )
}

/// Waits (up to 10 s) until what is stored of documents is `wanted`.
async fn until_stored(url: &str, wanted: (i64, i64, i64)) {
    for _ in 0..200 {
        if stored(url).await == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored(url).await, wanted);
}

/// Starts an upload of `bytes` through a channel that stays open after
/// `sent` bytes, waits until the gateway has written every whole chunk of
/// them, and gives back the sender (drop it, or the call, to end it).
async fn half_upload(
    channel: Channel,
    url: &str,
    bytes: &[u8],
    sent: usize,
) -> (
    mpsc::Sender<UploadDocumentRequest>,
    tokio::task::JoinHandle<Result<DocumentRef, tonic::Status>>,
) {
    let (tx, rx) = mpsc::channel(16);
    let call = tokio::spawn(async move {
        FilingServiceClient::new(channel)
            .upload_document(ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    tx.send(UploadDocumentRequest {
        part: Some(Part::Metadata(metadata(
            DocumentKind::CustomsDeclarationOrTitle,
            "application/pdf",
            bytes,
        ))),
    })
    .await
    .unwrap();
    for chunk in bytes[..sent].chunks(64 * 1024) {
        tx.send(UploadDocumentRequest {
            part: Some(Part::Chunk(chunk.to_vec())),
        })
        .await
        .unwrap();
    }
    let written = (sent / (256 * 1024)) as i64;
    for _ in 0..400 {
        if scalar(url, "SELECT COUNT(*) FROM document_chunks").await == written {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        scalar(url, "SELECT COUNT(*) FROM document_chunks").await,
        written,
        "the chunks received so far are in storage"
    );
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM uploads").await, 1);
    (tx, call)
}

async fn a_20_mib_document_round_trips_through_an_extract_and_fetch(backend: Backend) {
    let Some((app, url, channel)) = gateway(backend).await else {
        return;
    };
    let scan = big_pdf(20 * MIB, 7);
    let reference = upload(
        channel.clone(),
        metadata(
            DocumentKind::CustomsDeclarationOrTitle,
            "application/pdf",
            &scan,
        ),
        &scan,
    )
    .await
    .unwrap();
    assert_eq!(reference.sha256, sha256(&scan));
    assert_eq!(reference.size_bytes, (20 * MIB) as u64);
    // 80 chunks of 256 KiB, no upload left unfinished.
    assert_eq!(stored(&url).await, (1, 80, 0));

    file_referencing(channel, &reference, "big-1").await;

    // The energy ministry's client writes it to disk as it streams.
    let out = tempfile::tempdir().unwrap();
    let subscribed = subscribe_once(&app, out.path()).await;
    assert!(
        subscribed.status.success(),
        "{}",
        String::from_utf8_lossy(&subscribed.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&subscribed.stdout).lines().last(),
        Some(
            format!(
                "1 extracts written to {} and acknowledged",
                out.path().display()
            )
            .as_str()
        )
    );
    let written = std::fs::read(
        out.path()
            .join("documents")
            .join(format!("{}.pdf", reference.sha256)),
    )
    .unwrap();
    assert!(written == scan, "the document on disk differs");
    let leftovers: Vec<_> = std::fs::read_dir(out.path().join("documents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // FetchDocument streams it a stored chunk at a time.
    let mut stream = EnergyExtractServiceClient::new(app.channel("energy").await)
        .fetch_document(FetchDocumentRequest {
            sha256: reference.sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let (mut parts, mut fetched) = (Vec::new(), Vec::new());
    while let Some(message) = stream.message().await.unwrap() {
        match message.part.unwrap() {
            FetchPart::Metadata(metadata) => parts.push(format!(
                "{} {} {}",
                metadata.sha256, metadata.media_type, metadata.size_bytes
            )),
            FetchPart::Data(data) => {
                parts.push(data.len().to_string());
                fetched.extend(data);
            }
        }
    }
    assert_eq!(parts.len(), 81);
    assert_eq!(
        parts[0],
        format!("{} application/pdf {}", reference.sha256, 20 * MIB)
    );
    assert!(parts[1..].iter().all(|part| part == "262144"), "{parts:?}");
    assert!(fetched == scan, "the fetched document differs");
}

async fn an_upload_the_client_drops_leaves_no_document_and_no_chunks(backend: Backend) {
    let Some((app, url, _)) = gateway(backend).await else {
        return;
    };
    let scan = big_pdf(4 * MIB, 11);
    let (sender, call) = half_upload(app.channel("authority").await, &url, &scan, MIB).await;
    // The client goes away mid-stream.
    call.abort();
    drop(sender);
    until_stored(&url, (0, 0, 0)).await;
    // Nothing about it in the ledger either.
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM ledger").await, 0);
}

async fn an_upload_cut_off_by_kill_9_is_removed_after_the_restart(backend: Backend) {
    let dir = fresh_folder();
    let Some(database) = database_for(backend, &dir).await else {
        return;
    };
    let database_url = database.url.clone();
    // Uploads end after 1 s, so one unfinished after 2 s is abandoned.
    let mut gateway = ChildGateway::start(
        dir.path(),
        &database_url,
        &[
            ("MINEGATE_LIMITS_MAX_UPLOAD_MS", "1000"),
            ("MINEGATE_LIMITS_ABANDONED_UPLOAD_MS", "2000"),
        ],
    )
    .await;
    let scan = big_pdf(4 * MIB, 13);
    let (sender, _call) = half_upload(
        gateway.channel("authority").await,
        &database_url,
        &scan,
        MIB,
    )
    .await;
    gateway.kill9().await;
    drop(sender);
    // The chunks of the cut-off upload are still there underneath.
    assert_eq!(stored(&database_url).await, (0, 4, 1));
    gateway.restart().await;
    // SQLite: removed as the gateway starts; PostgreSQL (replicas may be
    // mid-upload): by the sweep, once the upload is older than 2 s.
    until_stored(&database_url, (0, 0, 0)).await;
    assert_eq!(
        scalar(&database_url, "SELECT COUNT(*) FROM ledger").await,
        0
    );
    // And the gateway takes the same document whole afterwards.
    let reference = upload(
        gateway.channel("authority").await,
        metadata(
            DocumentKind::CustomsDeclarationOrTitle,
            "application/pdf",
            &scan,
        ),
        &scan,
    )
    .await
    .unwrap();
    assert_eq!(reference.sha256, sha256(&scan));
    assert_eq!(stored(&database_url).await, (1, 16, 0));
    gateway.signal("TERM").await;
    assert_eq!(gateway.exit_code().await, Some(0));
}

async fn a_lie_about_the_bytes_found_part_way_stores_nothing(backend: Backend) {
    let Some((_app, url, channel)) = gateway(backend).await else {
        return;
    };
    let scan = big_pdf(3 * MIB, 17);
    let kind = DocumentKind::CustomsDeclarationOrTitle;

    // Declared smaller than it is: refused as soon as it is more.
    let mut small = metadata(kind, "application/pdf", &scan);
    small.size_bytes = Some(MIB as u64);
    let refused = upload(channel.clone(), small, &scan).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [(
            "metadata.size_bytes".to_owned(),
            format!("declared {MIB} bytes, received more")
        )]
    );
    // Declared larger: found at the end.
    let mut large = metadata(kind, "application/pdf", &scan);
    large.size_bytes = Some((4 * MIB) as u64);
    let refused = upload(channel.clone(), large, &scan).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [(
            "metadata.size_bytes".to_owned(),
            format!("declared {} bytes, received {}", 4 * MIB, 3 * MIB)
        )]
    );
    // Another digest than the bytes'.
    let mut wrong = metadata(kind, "application/pdf", &scan);
    let other = sha256(b"other bytes");
    wrong.sha256 = Some(other.clone());
    let refused = upload(channel.clone(), wrong, &scan).await.unwrap_err();
    assert_eq!(
        violations(&refused),
        [(
            "metadata.sha256".to_owned(),
            format!(
                "declared {other}, but the bytes received hash to {}",
                sha256(&scan)
            )
        )]
    );
    // Declared PNG, the first chunk is a PDF: refused at the first chunk.
    let refused = upload(channel.clone(), metadata(kind, "image/png", &scan), &scan)
        .await
        .unwrap_err();
    assert_eq!(
        violations(&refused),
        [(
            "metadata.media_type".to_owned(),
            "declared image/png but the bytes are application/pdf".to_owned()
        )]
    );
    // None of them left a document, a chunk or an entry.
    until_stored(&url, (0, 0, 0)).await;
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM ledger").await, 0);
}

async fn identical_uploads_at_once_give_one_document_a_filing_may_use_at_once(backend: Backend) {
    let Some((_app, url, channel)) = gateway(backend).await else {
        return;
    };
    let scan = big_pdf(2 * MIB, 19);
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let (channel, scan) = (channel.clone(), scan.clone());
            tokio::spawn(async move {
                upload(
                    channel,
                    metadata(
                        DocumentKind::CustomsDeclarationOrTitle,
                        "application/pdf",
                        &scan,
                    ),
                    &scan,
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut references = Vec::new();
    for upload in uploads {
        references.push(upload.await.unwrap());
    }
    assert!(
        references.iter().all(|r| *r == references[0]),
        "{references:?}"
    );
    // One document of 8 chunks, one entry; the other uploads' chunks gone.
    until_stored(&url, (1, 8, 0)).await;
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM ledger WHERE kind = 'DOCUMENT_STORED'"
        )
        .await,
        1
    );
    // A filing references it at once.
    let mut documents = fixtures::upload_documents(channel.clone(), "at once").await;
    documents[0] = references[0].clone();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 4, 10).unwrap();
    let receipt = FilingServiceClient::new(channel)
        .submit_start_notification(start_notification(
            BIN_A,
            "at-once",
            date(today.year(), today.month() as i32, today.day() as i32),
            &["37.99.0.0/24"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.register_number, "KZ-DM-000001");
}

async fn the_energy_client_keeps_no_document_whose_bytes_differ_from_its_digest(backend: Backend) {
    let Some((app, url, channel)) = gateway(backend).await else {
        return;
    };
    let scan = big_pdf(MIB, 23);
    let reference = upload(
        channel.clone(),
        metadata(
            DocumentKind::CustomsDeclarationOrTitle,
            "application/pdf",
            &scan,
        ),
        &scan,
    )
    .await
    .unwrap();
    file_referencing(channel, &reference, "tampered-1").await;
    // Someone changes a stored chunk underneath: the gateway now sends other
    // bytes than the digest the extract names.
    let zeros = match backend {
        Backend::Sqlite => "zeroblob(262144)",
        Backend::Postgres => "decode(repeat('00', 262144), 'hex')",
    };
    let changed = execute(
        &url,
        &format!(
            "UPDATE document_chunks SET data = {zeros} WHERE idx = 2 AND upload_id = \
             (SELECT upload_id FROM documents WHERE size_bytes = 1048576)"
        ),
    )
    .await;
    assert_eq!(changed, 1);

    let out = tempfile::tempdir().unwrap();
    let subscribed = subscribe_once(&app, out.path()).await;
    assert_eq!(subscribed.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&subscribed.stderr),
        format!(
            "error: document {} arrived with other bytes than its digest names\n",
            reference.sha256
        )
    );
    // Nothing of it is kept, not even the partial file; the extract is not
    // acknowledged.
    let kept: Vec<_> = std::fs::read_dir(out.path().join("documents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with(&reference.sha256))
        .collect();
    assert!(kept.is_empty(), "{kept:?}");
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM extract_acks").await, 0);
}

/// Sends `bytes` as an upload in 64 KiB messages, one every `pace`.
async fn paced_upload(
    channel: Channel,
    bytes: Vec<u8>,
    pace: Duration,
) -> Result<DocumentRef, tonic::Status> {
    let (tx, rx) = mpsc::channel(1);
    let sender = tokio::spawn(async move {
        let first = UploadDocumentRequest {
            part: Some(Part::Metadata(metadata(
                DocumentKind::CustomsDeclarationOrTitle,
                "application/pdf",
                &bytes,
            ))),
        };
        if tx.send(first).await.is_err() {
            return;
        }
        for chunk in bytes.chunks(64 * 1024) {
            tokio::time::sleep(pace).await;
            let part = UploadDocumentRequest {
                part: Some(Part::Chunk(chunk.to_vec())),
            };
            if tx.send(part).await.is_err() {
                return;
            }
        }
    });
    let answer = FilingServiceClient::new(channel)
        .upload_document(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    sender.abort();
    answer
}

async fn a_slow_upload_goes_on_while_it_sends_and_ends_when_it_stops_or_runs_over(
    backend: Backend,
) {
    // Each message within 300 ms; an upload within 2 s in all.
    let Some(app) = spawn_on_with(backend, TestClock::at("2026-03-02T06:00:00Z"), |config| {
        config.limits.request_timeout_ms = 300;
        config.limits.max_upload_ms = 2_000;
    })
    .await
    else {
        return;
    };
    let url = app.config.database_url.clone();
    let channel = app.channel("authority").await;

    // 1 MiB, a message every 100 ms: 1.6 s in all, over the 300 ms that any
    // other call gets, and taken.
    let slow = big_pdf(MIB, 29);
    let started = std::time::Instant::now();
    let reference = paced_upload(channel.clone(), slow.clone(), Duration::from_millis(100))
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(1_600));
    assert_eq!(reference.sha256, sha256(&slow));
    assert_eq!(stored(&url).await, (1, 4, 0));

    // A client that pauses longer than 300 ms is let go.
    let paused = paced_upload(
        channel.clone(),
        big_pdf(MIB, 31),
        Duration::from_millis(600),
    )
    .await
    .unwrap_err();
    assert_eq!(paused.code(), Code::DeadlineExceeded, "{paused:?}");
    assert_eq!(
        paused.message(),
        "no part of the document arrived for 300 ms"
    );

    // 2 MiB at a message every 100 ms would take 3.2 s: ended at 2 s.
    let long = paced_upload(
        channel.clone(),
        big_pdf(2 * MIB, 37),
        Duration::from_millis(100),
    )
    .await
    .unwrap_err();
    assert_eq!(long.code(), Code::Cancelled, "{long:?}");
    assert_eq!(long.message(), "Timeout expired");

    // Neither left anything behind.
    until_stored(&url, (1, 4, 0)).await;
}

on_both_backends!(
    a_slow_upload_goes_on_while_it_sends_and_ends_when_it_stops_or_runs_over,
    the_energy_client_keeps_no_document_whose_bytes_differ_from_its_digest,
    a_20_mib_document_round_trips_through_an_extract_and_fetch,
    an_upload_the_client_drops_leaves_no_document_and_no_chunks,
    an_upload_cut_off_by_kill_9_is_removed_after_the_restart,
    a_lie_about_the_bytes_found_part_way_stores_nothing,
    identical_uploads_at_once_give_one_document_a_filing_may_use_at_once,
    uploads_cancelled_at_random_moments_never_take_a_stored_documents_bytes,
);

/// Every document's bytes as stored (its chunks in order), by digest.
async fn stored_documents(url: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
    const SQL: &str = "SELECT d.sha256, c.data FROM documents d \
                       JOIN document_chunks c ON c.upload_id = d.upload_id \
                       ORDER BY d.sha256, c.idx";
    let rows: Vec<(String, Vec<u8>)> = if let Some(path) = sqlite_path(url) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn.prepare(SQL).unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query_as(SQL).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows
    };
    let mut documents = std::collections::BTreeMap::<String, Vec<u8>>::new();
    for (sha256, data) in rows {
        documents.entry(sha256).or_default().extend(data);
    }
    documents
}

/// 240 uploads of 200 KB (60 distinct documents, each sent four times),
/// 16 at once, half of them cancelled at a moment drawn from 0-15 ms after
/// the call began: before, during and after the last chunk, and while the
/// writer makes the document. What the cancelled calls leave must never
/// take a stored document's bytes.
async fn uploads_cancelled_at_random_moments_never_take_a_stored_documents_bytes(backend: Backend) {
    let Some((_app, url, channel)) = gateway(backend).await else {
        return;
    };
    let scans: Vec<Vec<u8>> = (0..60).map(|seed| big_pdf(200 * 1000, seed)).collect();
    let by_digest: std::collections::BTreeMap<String, &Vec<u8>> =
        scans.iter().map(|scan| (sha256(scan), scan)).collect();
    let mut random = 0x5eed_u64;
    let (mut ok, mut cancelled) = (Vec::new(), 0);
    for round in 0..15 {
        let calls: Vec<_> = (0..16)
            .map(|i| {
                random = random
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let scan = scans[(round * 16 + i) % scans.len()].clone();
                let cancel_after = (i % 2 == 0).then_some((random >> 33) % 16);
                let channel = channel.clone();
                let call = tokio::spawn(async move {
                    let metadata = metadata(
                        DocumentKind::CustomsDeclarationOrTitle,
                        "application/pdf",
                        &scan,
                    );
                    upload(channel, metadata, &scan).await
                });
                (call, cancel_after)
            })
            .collect();
        for (call, cancel_after) in calls {
            if let Some(ms) = cancel_after {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                call.abort();
            }
            match call.await {
                Ok(Ok(reference)) => ok.push(reference.sha256),
                Ok(Err(status)) => panic!("an upload was refused: {status:?}"),
                Err(_) => cancelled += 1,
            }
        }
    }
    assert!(cancelled > 0 && !ok.is_empty(), "{cancelled} cancelled");
    // Whatever the cancelled calls left behind is gone ...
    for _ in 0..200 {
        if scalar(&url, "SELECT COUNT(*) FROM uploads").await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let documents = stored_documents(&url).await;
    let rows = scalar(&url, "SELECT COUNT(*) FROM documents").await;
    // ... and every document stored is whole, byte for byte: each one
    // answered OK, and each one with a DOCUMENT_STORED entry.
    assert_eq!(
        documents.len() as i64,
        rows,
        "documents with no chunks left"
    );
    for (digest, bytes) in &documents {
        assert!(bytes == by_digest[digest], "document {digest} differs");
    }
    for digest in &ok {
        assert!(
            documents.contains_key(digest),
            "{digest} answered OK, not stored"
        );
    }
    let entries = "SELECT COUNT(*) FROM ledger WHERE kind = 'DOCUMENT_STORED'";
    assert_eq!(scalar(&url, entries).await, rows);
    // No chunk but the documents' (one each: 200 KB is under a chunk).
    until_stored(&url, (rows, rows, 0)).await;
    // A cancelled upload of stored bytes, uploaded again, is the same document.
    for scan in scans.iter().take(5) {
        let metadata = metadata(
            DocumentKind::CustomsDeclarationOrTitle,
            "application/pdf",
            scan,
        );
        assert_eq!(
            upload(channel.clone(), metadata, scan)
                .await
                .unwrap()
                .sha256,
            sha256(scan)
        );
    }
    let documents = stored_documents(&url).await;
    for scan in scans.iter().take(5) {
        assert!(documents[&sha256(scan)] == *scan);
    }
}
