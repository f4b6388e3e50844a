//! `minegate bench --only documents`: uploads, then fetches, of large
//! documents (20 MiB) at concurrency 1, 16 and 64 over 4 connections, or
//! at concurrency N on N connections (`--connections N`, as N separate
//! clients), on the baseline server (which receives and discards an
//! upload, and sends as many bytes back in the gateway's chunks) and on the
//! gateway, over the same TLS stack: MB/s, p50 and p99 per document, the
//! uploads refused (and retried after the hint) and the gateway's peak
//! resident memory.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tonic::transport::Channel;

use super::{Server, channels, percentile, report, start_server, tls};
use crate::{
    proto::v1::{
        AcknowledgeExtractRequest, DocumentKind, DocumentMetadata, DocumentRef,
        FetchDocumentRequest, SubscribeRequest, UploadDocumentRequest, document_chunk,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, upload_document_request::Part,
    },
    store::DOCUMENT_CHUNK_BYTES,
};

/// One direction at one concurrency.
pub struct Transfer {
    pub megabytes_per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Calls refused RESOURCE_EXHAUSTED, each tried again after its hint.
    pub refused: usize,
}

/// What the documents part measures.
pub struct Shape {
    pub quick: bool,
    /// `Some(n)`: concurrency n only, one connection per caller.
    pub connections: Option<usize>,
    /// Bytes of each document.
    pub size: usize,
}

/// The bytes every bench document shares after its own first line: random,
/// so that nothing along the way compresses or dedups them.
pub fn filler(size: usize) -> Arc<Vec<u8>> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes = Vec::with_capacity(size + 8);
    while bytes.len() < size {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(size);
    Arc::new(bytes)
}

/// The upload of document `id`: metadata, then 256 KiB chunks made as they
/// are sent. Its first line names it, so every document is distinct.
/// `declared` is the digest to declare (the baseline keys sizes by it).
fn upload_messages(
    id: u64,
    filler: Arc<Vec<u8>>,
    declared: Option<String>,
) -> impl tokio_stream::Stream<Item = UploadDocumentRequest> + Send + 'static {
    let size = filler.len();
    let header = format!("%PDF-1.4\n% bench document {id:020}\n").into_bytes();
    let metadata = UploadDocumentRequest {
        part: Some(Part::Metadata(DocumentMetadata {
            kind: DocumentKind::CustomsDeclarationOrTitle as i32,
            media_type: "application/pdf".into(),
            file_name: format!("scan-{id}.pdf"),
            size_bytes: Some(size as u64),
            sha256: declared,
        })),
    };
    let chunks = size.div_ceil(DOCUMENT_CHUNK_BYTES);
    let data = (0..chunks).map(move |i| {
        let range = i * DOCUMENT_CHUNK_BYTES..((i + 1) * DOCUMENT_CHUNK_BYTES).min(size);
        let mut chunk = filler[range].to_vec();
        if i == 0 {
            chunk[..header.len()].copy_from_slice(&header);
        }
        UploadDocumentRequest {
            part: Some(Part::Chunk(chunk)),
        }
    });
    tokio_stream::iter(std::iter::once(metadata).chain(data))
}

fn transfer(bytes: u64, wall: Duration, mut latencies: Vec<Duration>, refused: usize) -> Transfer {
    latencies.sort_unstable();
    Transfer {
        megabytes_per_second: bytes as f64 / 1e6 / wall.as_secs_f64(),
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        refused,
    }
}

/// How long a RESOURCE_EXHAUSTED refusal asks to wait (its RetryInfo), if
/// `status` is one; the wait is part of the document's latency.
fn retry_hint(status: &tonic::Status) -> Option<Duration> {
    use tonic_types::StatusExt;
    (status.code() == tonic::Code::ResourceExhausted).then(|| {
        status
            .get_details_retry_info()
            .and_then(|info| info.retry_delay)
            .unwrap_or(Duration::from_secs(1))
    })
}

/// `count` documents uploaded by `concurrency` callers over `channels`;
/// their references, and the figures.
pub async fn uploads(
    channels: &[Channel],
    concurrency: usize,
    count: usize,
    first_id: u64,
    filler: &Arc<Vec<u8>>,
    baseline: bool,
) -> anyhow::Result<(Vec<DocumentRef>, Transfer)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = FilingServiceClient::new(channels[worker % channels.len()].clone());
        let filler = filler.clone();
        tasks.push(tokio::spawn(async move {
            let (mut done, mut refused) = (Vec::new(), 0);
            for n in (worker..count).step_by(concurrency) {
                let id = first_id + n as u64;
                let declared = baseline.then(|| format!("{id:064x}"));
                let sent = Instant::now();
                let reference = loop {
                    let messages = upload_messages(id, filler.clone(), declared.clone());
                    match client.upload_document(messages).await {
                        Ok(reference) => break reference.into_inner(),
                        Err(status) => match retry_hint(&status) {
                            Some(wait) => {
                                refused += 1;
                                tokio::time::sleep(wait).await;
                            }
                            None => return Err(status.into()),
                        },
                    }
                };
                done.push((reference, sent.elapsed()));
            }
            anyhow::Ok((done, refused))
        }));
    }
    let (mut references, mut latencies, mut refused) = (Vec::new(), Vec::new(), 0);
    for task in tasks {
        let (done, worker_refused) = task.await??;
        refused += worker_refused;
        for (reference, latency) in done {
            references.push(reference);
            latencies.push(latency);
        }
    }
    let bytes = (count * filler.len()) as u64;
    Ok((
        references,
        transfer(bytes, started.elapsed(), latencies, refused),
    ))
}

/// `documents` fetched by `concurrency` callers over `channels`.
pub async fn fetches(
    channels: &[Channel],
    concurrency: usize,
    documents: &[DocumentRef],
) -> anyhow::Result<Transfer> {
    let started = Instant::now();
    let documents = Arc::new(documents.to_vec());
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = EnergyExtractServiceClient::new(channels[worker % channels.len()].clone());
        let documents = documents.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for n in (worker..documents.len()).step_by(concurrency) {
                let sent = Instant::now();
                let mut stream = client
                    .fetch_document(FetchDocumentRequest {
                        sha256: documents[n].sha256.clone(),
                    })
                    .await?
                    .into_inner();
                let mut received = 0u64;
                while let Some(message) = stream.message().await? {
                    if let Some(document_chunk::Part::Data(data)) = message.part {
                        received += data.len() as u64;
                    }
                }
                anyhow::ensure!(
                    received == documents[n].size_bytes,
                    "document {} came with {received} of its {} bytes",
                    documents[n].sha256,
                    documents[n].size_bytes
                );
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let bytes: u64 = documents.iter().map(|d| d.size_bytes).sum();
    Ok(transfer(bytes, started.elapsed(), latencies, 0))
}

/// Files a quarterly report for each of `documents` (with the two small
/// documents every filing also needs), then receives and acknowledges
/// their extracts as the energy ministry: the gateway serves a document
/// only to a subscriber sent an extract that references it.
pub async fn deliver(
    dir: &std::path::Path,
    gateway: &Server,
    documents: &[DocumentRef],
    small: &[DocumentRef],
    first_payer: u64,
) -> anyhow::Result<()> {
    let mut filings = FilingServiceClient::new(tls(dir, gateway, "authority").connect().await?);
    for (n, document) in documents.iter().enumerate() {
        let mut refs = vec![document.clone()];
        refs.extend(small.iter().cloned());
        filings
            .submit_quarterly_report(report(first_payer + n as u64, "documents", &refs))
            .await?;
    }
    let mut energy = EnergyExtractServiceClient::new(tls(dir, gateway, "energy").connect().await?);
    let mut stream = energy
        .subscribe(SubscribeRequest {
            max_in_flight: 64,
            until_caught_up: true,
        })
        .await?
        .into_inner();
    let mut acknowledged = 0;
    while let Some(delivery) = stream.message().await? {
        if let Some(extract) = delivery.extract {
            energy
                .acknowledge(AcknowledgeExtractRequest {
                    extract_id: extract.extract_id,
                })
                .await?;
            acknowledged += 1;
        }
    }
    anyhow::ensure!(
        acknowledged == documents.len(),
        "{acknowledged} extracts for {} filings",
        documents.len()
    );
    Ok(())
}

/// The `documents` part, on the baseline and then each backend: its lines.
pub async fn run(
    dir: &std::path::Path,
    backends: &[(&str, String)],
    shape: Shape,
) -> anyhow::Result<Vec<String>> {
    let one_level;
    let (size, concurrencies, connections): (usize, &[usize], usize) =
        match (shape.connections, shape.quick) {
            (Some(n), _) => {
                one_level = [n];
                (shape.size, &one_level, n)
            }
            (None, true) => (1 << 20, &[1, 4], 4),
            (None, false) => (shape.size, &[1, 16, 64], 4),
        };
    // Enough documents at each concurrency for a p99 to mean something.
    let count = |c: usize| c.max(8);
    let filler = filler(size);
    let mut lines = vec![format!(
        "{:<30} {:>5} {:>9} {:>9} {:>9} {:>9} {:>8}   ({connections} connections)",
        format!("documents of {} MiB", size >> 20),
        "conc",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "vs base",
        "refused"
    )];
    let row = |what: &str, c: usize, t: &Transfer, base: Option<&Transfer>| {
        format!(
            "{what:<30} {c:>5} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>8}",
            t.megabytes_per_second,
            t.p50.as_secs_f64() * 1e3,
            t.p99.as_secs_f64() * 1e3,
            base.map_or("1.00".to_owned(), |b| format!(
                "{:.2}",
                t.megabytes_per_second / b.megabytes_per_second
            )),
            t.refused
        )
    };

    let baseline = start_server(dir, "sqlite://baseline-unused.db", true)?;
    let base_channels = channels(&tls(dir, &baseline, "authority"), connections).await?;
    let (mut base_up, mut stored, mut next_id) = (Vec::new(), Vec::new(), 0);
    for &c in concurrencies {
        let (references, up) = uploads(&base_channels, c, count(c), next_id, &filler, true).await?;
        next_id += count(c) as u64;
        stored.extend(references);
        lines.push(row("upload, baseline (discards)", c, &up, None));
        base_up.push(up);
    }
    drop(base_channels);
    let base_channels = channels(&tls(dir, &baseline, "energy"), connections).await?;
    let mut base_fetch = Vec::new();
    for &c in concurrencies {
        let down = fetches(&base_channels, c, &stored[..count(c)]).await?;
        lines.push(row("fetch, baseline (sends)", c, &down, None));
        base_fetch.push(down);
    }
    drop(baseline);

    for (name, url) in backends {
        let gateway = start_server(dir, url, false)?;
        let authority = tls(dir, &gateway, "authority");
        let small = super::upload_documents(dir, &authority).await?[1..].to_vec();
        let up_channels = channels(&authority, connections).await?;
        let mut stored = Vec::new();
        for (i, &c) in concurrencies.iter().enumerate() {
            let (references, up) =
                uploads(&up_channels, c, count(c), next_id, &filler, false).await?;
            next_id += count(c) as u64;
            stored.extend(references);
            lines.push(row(
                &format!("upload, gateway ({name})"),
                c,
                &up,
                Some(&base_up[i]),
            ));
        }
        let after_uploads = gateway.peak_rss_kib();
        drop(up_channels);
        deliver(dir, &gateway, &stored, &small, 9_000_000).await?;
        let energy = channels(&tls(dir, &gateway, "energy"), connections).await?;
        for (i, &c) in concurrencies.iter().enumerate() {
            let down = fetches(&energy, c, &stored[..count(c)]).await?;
            lines.push(row(
                &format!("fetch, gateway ({name})"),
                c,
                &down,
                Some(&base_fetch[i]),
            ));
        }
        let mib = |kib: Option<u64>| {
            kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
        };
        lines.push(format!(
            "gateway peak RSS ({name}): {} after the uploads, {} after the fetches too",
            mib(after_uploads),
            mib(gateway.peak_rss_kib())
        ));
    }
    Ok(lines)
}
