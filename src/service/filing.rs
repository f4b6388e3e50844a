//! FilingService: the authorized body's registry sends filings and documents.

use tonic::{Request, Response, Status, Streaming};

use super::not_implemented;
use crate::proto::v1::{
    DocumentRef, Filing, FilingReceipt, GetFilingRequest, ListRegisterRequest,
    ListRegisterResponse, QuarterlyReport, StartNotification, TerminationNotice,
    UploadDocumentRequest, filing_service_server::FilingService,
};

#[derive(Debug, Default, Clone)]
pub struct Filings;

#[tonic::async_trait]
impl FilingService for Filings {
    async fn upload_document(
        &self,
        request: Request<Streaming<UploadDocumentRequest>>,
    ) -> Result<Response<DocumentRef>, Status> {
        Err(not_implemented(&request, "FilingService/UploadDocument"))
    }

    async fn submit_start_notification(
        &self,
        request: Request<StartNotification>,
    ) -> Result<Response<FilingReceipt>, Status> {
        Err(not_implemented(
            &request,
            "FilingService/SubmitStartNotification",
        ))
    }

    async fn submit_quarterly_report(
        &self,
        request: Request<QuarterlyReport>,
    ) -> Result<Response<FilingReceipt>, Status> {
        Err(not_implemented(
            &request,
            "FilingService/SubmitQuarterlyReport",
        ))
    }

    async fn submit_termination_notice(
        &self,
        request: Request<TerminationNotice>,
    ) -> Result<Response<FilingReceipt>, Status> {
        Err(not_implemented(
            &request,
            "FilingService/SubmitTerminationNotice",
        ))
    }

    async fn get_filing(
        &self,
        request: Request<GetFilingRequest>,
    ) -> Result<Response<Filing>, Status> {
        Err(not_implemented(&request, "FilingService/GetFiling"))
    }

    async fn list_register(
        &self,
        request: Request<ListRegisterRequest>,
    ) -> Result<Response<ListRegisterResponse>, Status> {
        Err(not_implemented(&request, "FilingService/ListRegister"))
    }
}
