//! FilingService: the authorized body's registry sends filings and documents;
//! every field is validated, every deadline computed, and the filing, its
//! register change, findings and ledger entry committed in one transaction
//! before the receipt is returned.

use super::mapping;
use std::{sync::Arc, time::Duration};

use prost::Message;
use tokio_stream::StreamExt;
use tonic::{Code, Request, Response, Status, Streaming};

use super::{
    enum_filter, invalid, next_page, obligation_pb, paging, peer, store_error, timestamp,
    to_pb_date,
    upload_budget::ChunkOnItsWay,
    validate::{self, Violations},
};
use crate::{
    domain::{
        Sha256Hex, deadlines,
        document::{ACCEPTED_MEDIA_TYPES, sniff_media_type},
        filing::{DocumentKind as DomainDocumentKind, Filing, FilingKind},
    },
    evidence::verify::ArtifactKind,
    metrics::Metrics,
    proto::v1::{
        self as pb, DocumentRef, FilingReceipt, GetFilingRequest, ListRegisterRequest,
        ListRegisterResponse, QuarterlyReport, StartNotification, TerminationNotice,
        UploadDocumentRequest, filing_service_server::FilingService, upload_document_request::Part,
    },
    store::{
        Accepted, Clock, DOCUMENT_CHUNK_BYTES, DocumentRecord, ExtractBuilder, ExtractFacts,
        NewDocument, Recorded, RegisterQuery, Store, StoreError, Submission, SubmitOutcome,
    },
};

/// Response metadata on a submission's answer when it replays an earlier
/// one (same idempotency key and payload): `true`. Absent on a new filing.
pub const REPLAYED_HEADER: &str = "minegate-replayed";

pub struct Filings {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    max_document_bytes: u64,
    /// The longest wait for an upload's next message.
    idle: Duration,
    metrics: Metrics,
    known: KnownDocuments,
}

/// Documents known to be stored (they never change or go), so a filing that
/// references documents just uploaded or already referenced does not ask the
/// database again. Bounded: emptied when full.
#[derive(Default)]
struct KnownDocuments(std::sync::Mutex<std::collections::HashMap<String, DocumentRecord>>);

impl KnownDocuments {
    const MAX: usize = 10_000;

    fn remember(&self, records: &[DocumentRecord]) {
        let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() + records.len() > Self::MAX {
            known.clear();
        }
        for record in records {
            known.insert(record.sha256.as_str().to_owned(), record.clone());
        }
    }

    /// The known records among `wanted`, and the digests not known.
    fn split(&self, wanted: &[Sha256Hex]) -> (Vec<DocumentRecord>, Vec<Sha256Hex>) {
        let known = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut found = Vec::new();
        let mut unknown = Vec::new();
        for digest in wanted {
            match known.get(digest.as_str()) {
                Some(record) => found.push(record.clone()),
                None => unknown.push(digest.clone()),
            }
        }
        (found, unknown)
    }
}

impl Filings {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        max_document_bytes: u64,
        idle: Duration,
        metrics: Metrics,
    ) -> Self {
        Filings {
            store,
            clock,
            max_document_bytes,
            idle,
            metrics,
            known: KnownDocuments::default(),
        }
    }

    /// Submits, then counts the outcome for the metrics.
    /// A replay's answer carries the [`REPLAYED_HEADER`] metadata.
    async fn submit_counted<M: Message>(
        &self,
        kind: &str,
        request: Request<M>,
        validate: impl FnOnce(&M, chrono::NaiveDate) -> Result<Filing, Violations>,
        field_of_documents: &[pb::DocumentRef],
    ) -> Result<Response<FilingReceipt>, Status> {
        let result = self.submit(request, validate, field_of_documents).await;
        let outcome = match &result {
            Ok((_, true)) => "accepted",
            Ok((_, false)) => "replayed",
            Err(status) => match status.code() {
                Code::InvalidArgument => "rejected",
                Code::AlreadyExists => "conflict",
                Code::Unavailable => "unavailable",
                _ => "error",
            },
        };
        self.metrics.filing(kind, outcome);
        if let Ok((receipt, true)) = &result {
            for finding in &receipt.get_ref().findings {
                let kind = pb::FindingKind::try_from(finding.kind).unwrap_or_default();
                self.metrics.finding(
                    kind.as_str_name()
                        .strip_prefix("FINDING_KIND_")
                        .unwrap_or(kind.as_str_name()),
                );
            }
        }
        result.map(|(mut receipt, new)| {
            if !new {
                // The receipt is the first one's, byte for byte; the header
                // lets a client say "replayed" rather than "accepted".
                receipt.metadata_mut().insert(
                    REPLAYED_HEADER,
                    tonic::metadata::MetadataValue::from_static("true"),
                );
            }
            receipt
        })
    }

    /// Checks the referenced documents exist, then commits the filing.
    async fn submit<M: Message>(
        &self,
        request: Request<M>,
        validate: impl FnOnce(&M, chrono::NaiveDate) -> Result<Filing, Violations>,
        field_of_documents: &[pb::DocumentRef],
    ) -> Result<(Response<FilingReceipt>, bool), Status> {
        let caller = peer(&request)?;
        let message = request.into_inner();
        let today = deadlines::local_date(self.clock.now());
        let filing = validate(&message, today).map_err(|v| invalid(&v))?;
        let body = message.encode_to_vec();
        super::validate::filing_size(body.len()).map_err(|v| invalid(&v))?;

        let wanted: Vec<Sha256Hex> = filing.document_digests().into_iter().cloned().collect();
        let (mut stored, unknown) = self.known.split(&wanted);
        if !unknown.is_empty() {
            let found = self.store.documents(&unknown).await.map_err(store_error)?;
            self.known.remember(&found);
            stored.extend(found);
        }
        let mut missing = Violations::default();
        for (i, document) in field_of_documents.iter().enumerate() {
            let digest = document.sha256.to_ascii_lowercase();
            let Some(record) = stored.iter().find(|s| s.sha256.as_str() == digest) else {
                missing.add(
                    format!("documents[{i}].sha256"),
                    "no uploaded document has this digest; upload it first with UploadDocument",
                );
                continue;
            };
            // Optional in a reference; when given, they are the document's.
            if document.size_bytes != 0 && document.size_bytes != record.size_bytes {
                missing.add(
                    format!("documents[{i}].size_bytes"),
                    format!(
                        "the document with this digest is {} bytes",
                        record.size_bytes
                    ),
                );
            }
            if !document.media_type.is_empty() && document.media_type != record.media_type {
                missing.add(
                    format!("documents[{i}].media_type"),
                    format!("the document with this digest is {}", record.media_type),
                );
            }
        }
        if !missing.is_empty() {
            return Err(invalid(&missing));
        }

        let kind = filing.kind();
        let bin_or_iin = filing.id().to_string();
        let key = filing.idempotency_key().as_str().to_owned();
        let extract = four_item_extract(&filing, field_of_documents, &stored).map(|template| {
            Arc::new(move |facts: &ExtractFacts| {
                let mut extract = template.clone();
                extract.extract_id = facts.extract_id.clone();
                extract.source_filing_id = facts.filing_id.clone();
                extract.created_at = Some(timestamp(facts.created_at));
                extract.due_date = Some(to_pb_date(facts.due_date));
                extract.encode_to_vec()
            }) as ExtractBuilder
        });
        let submission = Submission {
            caller: caller.identity.clone(),
            request_sha256: Sha256Hex::of(&body),
            body,
            filing,
            receipt: Arc::new(move |accepted| {
                receipt(kind, &bin_or_iin, &key, accepted).encode_to_vec()
            }),
            extract,
        };
        match self.store.submit(submission).await.map_err(store_error)? {
            outcome @ (SubmitOutcome::Accepted(_) | SubmitOutcome::Replayed(_)) => {
                let (recorded, new) = match outcome {
                    SubmitOutcome::Accepted(recorded) => (recorded, true),
                    SubmitOutcome::Replayed(bytes) => (Recorded::found(bytes), false),
                    SubmitOutcome::KeyReused { .. } => unreachable!("matched above"),
                };
                let mut receipt = FilingReceipt::decode(recorded.bytes.as_slice())
                    .map_err(|_| Status::internal("a stored receipt is unreadable"))?;
                let filing_id = receipt.filing_id.clone();
                receipt.evidence = Some(
                    super::recorded_evidence(
                        &*self.store,
                        ArtifactKind::Receipt,
                        &filing_id,
                        recorded,
                    )
                    .await?,
                );
                tracing::Span::current().record("filing_id", receipt.filing_id.as_str());
                tracing::info!(
                    kind = kind.as_str(),
                    findings = receipt.findings.len(),
                    "{}",
                    if new {
                        "filing accepted"
                    } else {
                        "filing replayed (same idempotency key and payload)"
                    }
                );
                Ok((Response::new(receipt), new))
            }
            SubmitOutcome::KeyReused { filing_id } => Err(Status::already_exists(format!(
                "idempotency key already used by this caller for filing {filing_id} with a different payload"
            ))),
        }
    }
}

/// §6 the electronic document for the energy ministry: whom it concerns and
/// items 6.1-6.4, nothing else. `None` for a termination notice.
fn four_item_extract(
    filing: &Filing,
    refs: &[pb::DocumentRef],
    stored: &[DocumentRecord],
) -> Option<pb::EnergyExtract> {
    let (person, data_centres) = match filing {
        Filing::Start(f) => (&f.person, &f.data_centres),
        Filing::Quarterly(f) => (&f.person, &f.data_centres),
        Filing::Termination(_) => return None,
    };
    let documents_of = |kind: DomainDocumentKind| -> Vec<pb::DocumentRef> {
        filing
            .documents()
            .iter()
            .zip(refs)
            .filter(|(d, _)| d.kind == kind)
            .map(|(d, r)| {
                let record = stored.iter().find(|s| s.sha256 == d.sha256);
                pb::DocumentRef {
                    kind: r.kind,
                    sha256: d.sha256.to_string(),
                    media_type: record.map(|s| s.media_type.clone()).unwrap_or_default(),
                    size_bytes: record.map_or(0, |s| s.size_bytes),
                    file_name: r.file_name.clone(),
                }
            })
            .collect()
    };
    Some(pb::EnergyExtract {
        extract_id: String::new(),
        source_filing_id: String::new(),
        source_filing_kind: mapping::filing_kind(filing.kind()) as i32,
        bin_or_iin: person.id.to_string(),
        name: person.name.clone(),
        customs_declaration_or_title: documents_of(DomainDocumentKind::CustomsDeclarationOrTitle),
        data_centres: data_centres
            .iter()
            .map(|d| pb::DataCentreLocation {
                address: d.address.clone(),
                kato_code: d.kato.as_ref().map(|k| k.as_str().to_owned()),
            })
            .collect(),
        residency: documents_of(DomainDocumentKind::Residency),
        grid_connection_conditions: documents_of(DomainDocumentKind::GridConnectionConditions),
        created_at: None,
        due_date: None,
        ..Default::default()
    })
}

/// The receipt of an accepted filing.
fn receipt(kind: FilingKind, bin_or_iin: &str, key: &str, accepted: &Accepted) -> FilingReceipt {
    let quarter_of = |q: Option<crate::domain::quantities::Quarter>| {
        q.map(|q| pb::Quarter {
            year: q.year(),
            quarter: q.quarter() as i32,
        })
    };
    FilingReceipt {
        filing_id: accepted.filing_id.clone(),
        filing_kind: mapping::filing_kind(kind) as i32,
        bin_or_iin: bin_or_iin.to_owned(),
        register_number: accepted.register_number.clone().unwrap_or_default(),
        received_at: Some(timestamp(accepted.received_at)),
        statutory_due_date: Some(to_pb_date(accepted.assessment.due_date)),
        deadline_met: accepted.assessment.deadline_met(),
        days_late: accepted.assessment.days_late,
        findings: accepted
            .findings
            .iter()
            .map(|(finding_id, finding)| pb::Finding {
                finding_id: finding_id.clone(),
                kind: mapping::finding_kind(finding.kind) as i32,
                bin_or_iin: bin_or_iin.to_owned(),
                filing_id: accepted.filing_id.clone(),
                days: finding.days,
                quarter: quarter_of(finding.quarter),
                detail: finding.detail.clone(),
                detected_at: Some(timestamp(accepted.received_at)),
            })
            .collect(),
        obligations: accepted.obligations.iter().map(obligation_pb).collect(),
        revision: accepted.revision,
        idempotency_key: key.to_owned(),
        ..Default::default()
    }
}

impl Filings {
    /// An upload's first message, its metadata, checked: every problem at
    /// once, as for a filing.
    async fn upload_metadata(
        &self,
        stream: &mut Streaming<UploadDocumentRequest>,
    ) -> Result<(pb::DocumentMetadata, pb::DocumentKind), Status> {
        let mut v = Violations::default();
        let metadata = match self.next_part(stream).await? {
            Some(Ok(UploadDocumentRequest {
                part: Some(Part::Metadata(metadata)),
            })) => metadata,
            Some(Err(status)) => return Err(status),
            _ => {
                v.add(
                    "metadata",
                    "the first message must carry the document's metadata",
                );
                return Err(invalid(&v));
            }
        };
        let kind = pb::DocumentKind::try_from(metadata.kind).unwrap_or_default();
        if kind == pb::DocumentKind::Unspecified {
            v.add(
                "metadata.kind",
                "must be DOCUMENT_KIND_CUSTOMS_DECLARATION_OR_TITLE, DOCUMENT_KIND_RESIDENCY or DOCUMENT_KIND_GRID_CONNECTION_CONDITIONS",
            );
        }
        if !ACCEPTED_MEDIA_TYPES.contains(&metadata.media_type.as_str()) {
            v.add(
                "metadata.media_type",
                format!(
                    "{:?} is not accepted; use one of {}",
                    metadata.media_type,
                    ACCEPTED_MEDIA_TYPES.join(", ")
                ),
            );
        }
        if !super::validate::file_name_ok(&metadata.file_name) {
            v.add("metadata.file_name", super::validate::FILE_NAME_RULE);
        }
        if let Some(size) = metadata.size_bytes
            && size > self.max_document_bytes
        {
            v.add(
                "metadata.size_bytes",
                format!(
                    "{size} bytes is over the limit of {} bytes",
                    self.max_document_bytes
                ),
            );
        }
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        Ok((metadata, kind))
    }

    /// The document's bytes, into storage a chunk at a time as they arrive
    /// and hashed on the way, checked against the metadata as early as each
    /// check can be made: its digest and size.
    async fn receive(
        &self,
        stream: &mut Streaming<UploadDocumentRequest>,
        metadata: &pb::DocumentMetadata,
        upload: &mut Upload,
    ) -> Result<(Sha256Hex, u64), Status> {
        let mut v = Violations::default();
        // The bytes go to storage a chunk at a time as they arrive, hashed on
        // the way: memory is a chunk per upload, whatever the document's size.
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut pending: Vec<u8> = Vec::with_capacity(DOCUMENT_CHUNK_BYTES);
        let mut size: u64 = 0;
        while let Some(message) = self.next_part(stream).await? {
            let chunk = match message?.part {
                Some(Part::Chunk(chunk)) => chunk,
                _ => {
                    v.add("metadata", "metadata may only come in the first message");
                    return Err(invalid(&v));
                }
            };
            size += chunk.len() as u64;
            if size > self.max_document_bytes {
                v.add(
                    "chunk",
                    format!(
                        "the document is over the limit of {} bytes",
                        self.max_document_bytes
                    ),
                );
                return Err(invalid(&v));
            }
            if let Some(declared) = metadata.size_bytes
                && size > declared
            {
                v.add(
                    "metadata.size_bytes",
                    format!("declared {declared} bytes, received more"),
                );
                return Err(invalid(&v));
            }
            hasher.update(&chunk);
            let mut rest = chunk.as_slice();
            while !rest.is_empty() {
                let take = rest.len().min(DOCUMENT_CHUNK_BYTES - pending.len());
                pending.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if pending.len() == DOCUMENT_CHUNK_BYTES {
                    if upload.is_empty() {
                        check_media_type(&pending, &metadata.media_type, &mut v);
                        if !v.is_empty() {
                            return Err(invalid(&v));
                        }
                    }
                    let full =
                        std::mem::replace(&mut pending, Vec::with_capacity(DOCUMENT_CHUNK_BYTES));
                    upload.write(full).await.map_err(store_error)?;
                }
            }
        }
        if size == 0 {
            v.add("chunk", "the document is empty");
            return Err(invalid(&v));
        }
        let sha256 = Sha256Hex::from_digest(hasher.finish());
        if let Some(declared) = metadata.size_bytes
            && declared != size
        {
            v.add(
                "metadata.size_bytes",
                format!("declared {declared} bytes, received {size}"),
            );
        }
        if let Some(expected) = &metadata.sha256
            && expected.to_ascii_lowercase() != sha256.as_str()
        {
            v.add(
                "metadata.sha256",
                format!("declared {expected}, but the bytes received hash to {sha256}"),
            );
        }
        if upload.is_empty() {
            check_media_type(&pending, &metadata.media_type, &mut v);
        }
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        if !pending.is_empty() {
            upload.write(pending).await.map_err(store_error)?;
        }
        Ok((sha256, size))
    }

    /// An upload's next message, waiting at most `idle`: a document may
    /// take as long as its size needs (up to `limits.max_upload_ms`), but
    /// a client that stops sending is let go.
    async fn next_part(
        &self,
        stream: &mut Streaming<UploadDocumentRequest>,
    ) -> Result<Option<Result<UploadDocumentRequest, Status>>, Status> {
        tokio::time::timeout(self.idle, stream.next())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no part of the document arrived for {} ms",
                    self.idle.as_millis()
                ))
            })
    }
}

#[tonic::async_trait]
impl FilingService for Filings {
    async fn upload_document(
        &self,
        request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<DocumentRef>, Status> {
        let caller = peer(&request)?;
        let chunk_budget = request.extensions().get::<ChunkOnItsWay>().cloned();
        let mut stream = request.into_inner();
        let (metadata, kind) = self.upload_metadata(&mut stream).await?;
        let mut upload = Upload::new(self.store.clone(), chunk_budget);
        let (sha256, size) = self.receive(&mut stream, &metadata, &mut upload).await?;
        let record = upload
            .complete(sha256.clone(), metadata.media_type.clone(), size)
            .await
            .map_err(store_error)?;
        self.known.remember(std::slice::from_ref(&record));
        tracing::info!(identity = %caller.identity, %sha256, size, new = record.newly_stored, "document stored");
        Ok(Response::new(DocumentRef {
            kind: kind as i32,
            sha256: sha256.to_string(),
            media_type: record.media_type,
            size_bytes: size,
            file_name: metadata.file_name,
        }))
    }

    async fn submit_start_notification(
        &self,
        request: Request<StartNotification>,
    ) -> Result<Response<FilingReceipt>, Status> {
        let documents = request.get_ref().documents.clone();
        self.submit_counted(
            "start_notification",
            request,
            |m, _| validate::start_notification(m),
            &documents,
        )
        .await
    }

    async fn submit_quarterly_report(
        &self,
        request: Request<QuarterlyReport>,
    ) -> Result<Response<FilingReceipt>, Status> {
        let documents = request.get_ref().documents.clone();
        self.submit_counted(
            "quarterly_report",
            request,
            validate::quarterly_report,
            &documents,
        )
        .await
    }

    async fn submit_termination_notice(
        &self,
        request: Request<TerminationNotice>,
    ) -> Result<Response<FilingReceipt>, Status> {
        self.submit_counted(
            "termination_notice",
            request,
            validate::termination_notice,
            &[],
        )
        .await
    }

    async fn get_filing(
        &self,
        request: Request<GetFilingRequest>,
    ) -> Result<Response<pb::Filing>, Status> {
        peer(&request)?;
        let id = request.into_inner().filing_id;
        let stored = self
            .store
            .filing(&id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("no filing {id:?}")))?;
        let unreadable = |_| Status::internal("a stored filing is unreadable");
        let body = match stored.kind {
            FilingKind::StartNotification => pb::filing::Body::StartNotification(
                StartNotification::decode(stored.body.as_slice()).map_err(unreadable)?,
            ),
            FilingKind::QuarterlyReport => pb::filing::Body::QuarterlyReport(
                QuarterlyReport::decode(stored.body.as_slice()).map_err(unreadable)?,
            ),
            FilingKind::TerminationNotice => pb::filing::Body::TerminationNotice(
                TerminationNotice::decode(stored.body.as_slice()).map_err(unreadable)?,
            ),
        };
        let mut receipt = FilingReceipt::decode(stored.receipt.as_slice()).map_err(unreadable)?;
        receipt.evidence = Some(
            super::evidence(
                &*self.store,
                ArtifactKind::Receipt,
                &stored.filing_id,
                stored.receipt,
            )
            .await?,
        );
        Ok(Response::new(pb::Filing {
            filing_id: stored.filing_id,
            filing_kind: receipt.filing_kind,
            body: Some(body),
            receipt: Some(receipt),
            superseded_by: stored.superseded_by.unwrap_or_default(),
        }))
    }

    async fn list_register(
        &self,
        request: Request<ListRegisterRequest>,
    ) -> Result<Response<ListRegisterResponse>, Status> {
        peer(&request)?;
        let query = request.into_inner();
        let mut v = Violations::default();
        let (limit, after_seq) = paging(query.page_size, &query.page_token, &mut v);
        let status = enum_filter(
            "status",
            query.status,
            mapping::register_status_from,
            &mut v,
        );
        let activity = enum_filter(
            "activity_kind",
            query.activity_kind,
            mapping::activity_kind_from,
            &mut v,
        );
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        let mut rows = self
            .store
            .register(&RegisterQuery {
                after_seq,
                limit: limit + 1,
                status,
                activity,
                bin_or_iin: None,
            })
            .await
            .map_err(store_error)?;
        let mut next_page_token = next_page(&mut rows, limit, |r| r.seq);
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let mut entries: Vec<pb::RegisterEntry> = rows
            .into_iter()
            .map(|row| pb::RegisterEntry {
                register_number: row.register_number,
                bin_or_iin: row.bin_or_iin,
                name: row.name,
                legal_address: row.legal_address,
                activity_kind: mapping::activity_kind(row.activity) as i32,
                status: mapping::register_status(row.status) as i32,
                registered_at: Some(timestamp(row.registered_at)),
                start_filing_id: row.start_filing_id,
                planned_start_date: Some(to_pb_date(row.planned_start_date)),
                required_power_kw: row.required_power_kw,
                last_reported_quarter: row.last_quarter.map(|(year, quarter)| pb::Quarter {
                    year,
                    quarter: quarter as i32,
                }),
                activity_end_date: row.activity_end_date.map(to_pb_date),
            })
            .collect();
        super::fit_page(&mut entries, &seqs, &mut next_page_token);
        Ok(Response::new(ListRegisterResponse {
            entries,
            next_page_token,
        }))
    }
}

/// Adds a violation unless `first_bytes` (the document's first chunk) are
/// of the declared media type.
fn check_media_type(first_bytes: &[u8], declared: &str, v: &mut Violations) {
    match sniff_media_type(first_bytes) {
        Some(sniffed) if sniffed == declared => {}
        Some(sniffed) => v.add(
            "metadata.media_type",
            format!("declared {declared} but the bytes are {sniffed}"),
        ),
        None => v.add(
            "metadata.media_type",
            "the bytes are not PDF, PNG, JPEG or XML",
        ),
    }
}

/// An upload's chunks in storage. Until [`Upload::complete`] they are no
/// document; an upload dropped before that (refused, failed, or the client
/// gone, which drops the handler) has its chunks removed at once. One the
/// gateway could not remove (it died) goes at the next sweep. Removal takes
/// only an upload still in progress, so a drop that races the upload's
/// completion in the writer leaves the document whole.
///
/// A chunk's write runs as a task of its own: dropped mid-commit, a write
/// could still land after the removal (another connection's), leaving the
/// upload until the sweep. The removal waits for the write to end instead.
struct Upload {
    store: Arc<dyn Store>,
    id: String,
    /// Chunks written.
    chunks: u64,
    /// A chunk was handed to the store: it may be there even if its write
    /// was cut off before answering.
    started: bool,
    completed: bool,
    /// The write of the chunk now on its way, while it runs.
    writing: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    /// The budget's part for that chunk (none outside a served call), held
    /// by each write until it ends.
    chunk_budget: Option<ChunkOnItsWay>,
}

impl Upload {
    fn new(store: Arc<dyn Store>, chunk_budget: Option<ChunkOnItsWay>) -> Upload {
        Upload {
            store,
            id: new_upload_id(),
            chunks: 0,
            started: false,
            completed: false,
            writing: None,
            chunk_budget,
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks == 0
    }

    async fn write(&mut self, data: Vec<u8>) -> Result<(), StoreError> {
        self.started = true;
        let (store, id, index) = (self.store.clone(), self.id.clone(), self.chunks);
        let held = self.chunk_budget.clone();
        let writing = self.writing.insert(tokio::spawn(async move {
            let written = store.write_chunk(&id, index, data).await;
            drop(held);
            written
        }));
        let written = writing.await;
        self.writing = None;
        written
            .map_err(|error| StoreError::Database(format!("a chunk's write ended: {error}")))??;
        self.chunks += 1;
        Ok(())
    }

    async fn complete(
        mut self,
        sha256: Sha256Hex,
        media_type: String,
        size_bytes: u64,
    ) -> Result<DocumentRecord, StoreError> {
        let record = self
            .store
            .complete_upload(NewDocument {
                upload_id: self.id.clone(),
                sha256,
                media_type,
                size_bytes,
            })
            .await?;
        self.completed = true;
        Ok(record)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.completed || !self.started {
            return;
        }
        // No runtime (it is shutting down): the sweep removes them later.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, id) = (self.store.clone(), std::mem::take(&mut self.id));
        let writing = self.writing.take();
        runtime.spawn(async move {
            if let Some(writing) = writing {
                // Whatever it wrote has committed (or never will) first.
                let _ = writing.await;
            }
            if let Err(error) = store.abandon_upload(&id).await {
                tracing::warn!(upload = id, %error, "an unfinished upload's chunks stay until the sweep");
            }
        });
    }
}

/// A new upload's id: time-ordered, unique across replicas.
fn new_upload_id() -> String {
    format!("upl-{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
#[path = "filing_budget_tests.rs"]
mod budget_tests;
