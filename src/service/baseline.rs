//! The benchmark's baseline: a FilingService that only decodes and answers —
//! no validation, no storage, no ledger — served by the same tonic server
//! behind the same TLS acceptor and access layer, so that `minegate bench`
//! can show what the gateway's own work costs. Documents likewise: an upload
//! is received and discarded (only its size is kept), and FetchDocument
//! sends that many bytes back in the gateway's chunks.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    proto::v1::{
        AcknowledgeExtractRequest, DocumentChunk, DocumentRef, ExtractAcknowledgement,
        ExtractDelivery, FetchDocumentRequest, Filing, FilingKind, FilingReceipt, GetFilingRequest,
        ListRegisterRequest, ListRegisterResponse, QuarterlyReport, StartNotification,
        SubscribeRequest, TerminationNotice, UploadDocumentRequest, document_chunk,
        energy_extract_service_server::EnergyExtractService, filing_service_server::FilingService,
        upload_document_request::Part,
    },
    store::DOCUMENT_CHUNK_BYTES,
};

/// Declared digest → size of every document the baseline received.
pub type Received = Arc<Mutex<HashMap<String, u64>>>;

#[derive(Debug, Default, Clone)]
pub struct BaselineFilings {
    pub received: Received,
}

/// The baseline's EnergyExtractService: FetchDocument only.
#[derive(Debug, Default, Clone)]
pub struct BaselineExtracts {
    pub received: Received,
}

/// A receipt of the gateway's usual size, built from the request alone,
/// with evidence of the usual size (a receipt's bytes, an entry, twenty
/// proof hashes, a signed checkpoint) but no ledger behind it.
fn answer(kind: FilingKind, bin_or_iin: &str, key: &str) -> FilingReceipt {
    let mut receipt = bare(kind, bin_or_iin, key);
    receipt.evidence = Some(crate::proto::v1::Evidence {
        artifact: receipt.encode_to_vec(),
        entry: vec![b'e'; 420],
        leaf_index: 1 << 20,
        inclusion_proof: vec![vec![0; 32]; 20],
        checkpoint: "minegate\n1048577\n".to_owned()
            + &"A".repeat(44)
            + "\n\n— minegate "
            + &"B".repeat(92)
            + "\n",
    });
    receipt
}

fn bare(kind: FilingKind, bin_or_iin: &str, key: &str) -> FilingReceipt {
    FilingReceipt {
        filing_id: format!("fil-{:032x}", 0u128),
        filing_kind: kind as i32,
        bin_or_iin: bin_or_iin.to_owned(),
        register_number: "KZ-DM-000000".into(),
        received_at: Some(pbjson_types::Timestamp {
            seconds: 0,
            nanos: 0,
        }),
        statutory_due_date: None,
        deadline_met: true,
        days_late: 0,
        findings: Vec::new(),
        obligations: Vec::new(),
        revision: 1,
        idempotency_key: key.to_owned(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl FilingService for BaselineFilings {
    async fn upload_document(
        &self,
        request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<DocumentRef>, Status> {
        let mut stream = request.into_inner();
        let Some(Ok(UploadDocumentRequest {
            part: Some(Part::Metadata(metadata)),
        })) = stream.next().await
        else {
            return Err(Status::invalid_argument("metadata first"));
        };
        let mut size = 0;
        while let Some(message) = stream.next().await {
            if let Some(Part::Chunk(chunk)) = message?.part {
                size += chunk.len() as u64;
            }
        }
        let sha256 = metadata.sha256.unwrap_or_default();
        if let Ok(mut received) = self.received.lock() {
            received.insert(sha256.clone(), size);
        }
        Ok(Response::new(DocumentRef {
            kind: metadata.kind,
            sha256,
            media_type: metadata.media_type,
            size_bytes: size,
            file_name: metadata.file_name,
        }))
    }

    async fn submit_start_notification(
        &self,
        request: Request<StartNotification>,
    ) -> Result<Response<FilingReceipt>, Status> {
        let m = request.into_inner();
        let bin = m.person.map(|p| p.bin_or_iin).unwrap_or_default();
        Ok(Response::new(answer(
            FilingKind::StartNotification,
            &bin,
            &m.idempotency_key,
        )))
    }

    async fn submit_quarterly_report(
        &self,
        request: Request<QuarterlyReport>,
    ) -> Result<Response<FilingReceipt>, Status> {
        let m = request.into_inner();
        let bin = m.person.map(|p| p.bin_or_iin).unwrap_or_default();
        Ok(Response::new(answer(
            FilingKind::QuarterlyReport,
            &bin,
            &m.idempotency_key,
        )))
    }

    async fn submit_termination_notice(
        &self,
        request: Request<TerminationNotice>,
    ) -> Result<Response<FilingReceipt>, Status> {
        let m = request.into_inner();
        Ok(Response::new(answer(
            FilingKind::TerminationNotice,
            &m.bin_or_iin,
            &m.idempotency_key,
        )))
    }

    async fn get_filing(
        &self,
        _request: Request<GetFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        Err(Status::unimplemented("the baseline answers filings only"))
    }

    async fn list_register(
        &self,
        _request: Request<ListRegisterRequest>,
    ) -> Result<Response<ListRegisterResponse>, Status> {
        Err(Status::unimplemented("the baseline answers filings only"))
    }
}

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl EnergyExtractService for BaselineExtracts {
    type SubscribeStream = Stream<ExtractDelivery>;
    type FetchDocumentStream = Stream<DocumentChunk>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("the baseline serves documents only"))
    }

    async fn acknowledge(
        &self,
        _request: Request<AcknowledgeExtractRequest>,
    ) -> Result<Response<ExtractAcknowledgement>, Status> {
        Err(Status::unimplemented("the baseline serves documents only"))
    }

    /// As many bytes as were uploaded under the digest, in the gateway's
    /// chunks, made as the client takes them.
    async fn fetch_document(
        &self,
        request: Request<FetchDocumentRequest>,
    ) -> Result<Response<Self::FetchDocumentStream>, Status> {
        let sha256 = request.into_inner().sha256;
        let size = self
            .received
            .lock()
            .ok()
            .and_then(|received| received.get(&sha256).copied())
            .ok_or_else(|| Status::not_found(format!("no document {sha256}")))?;
        let metadata = DocumentChunk {
            part: Some(document_chunk::Part::Metadata(DocumentRef {
                sha256,
                media_type: "application/pdf".into(),
                size_bytes: size,
                ..Default::default()
            })),
        };
        let chunks = size.div_ceil(DOCUMENT_CHUNK_BYTES as u64);
        let data = (0..chunks).map(move |i| {
            let len = (size - i * DOCUMENT_CHUNK_BYTES as u64).min(DOCUMENT_CHUNK_BYTES as u64);
            Ok(DocumentChunk {
                part: Some(document_chunk::Part::Data(vec![b'%'; len as usize])),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(
            std::iter::once(Ok(metadata)).chain(data),
        ))))
    }
}
