//! The benchmark's baseline: a FilingService that only decodes and answers —
//! no validation, no storage, no ledger — served by the same tonic server
//! behind the same TLS acceptor and access layer, so that `minegate bench`
//! can show what the gateway's own work costs.

use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::proto::v1::{
    DocumentRef, Filing, FilingKind, FilingReceipt, GetFilingRequest, ListRegisterRequest,
    ListRegisterResponse, QuarterlyReport, StartNotification, TerminationNotice,
    UploadDocumentRequest, filing_service_server::FilingService,
};

#[derive(Debug, Default, Clone)]
pub struct BaselineFilings;

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
        _request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<DocumentRef>, Status> {
        Err(Status::unimplemented("the baseline answers filings only"))
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
