//! ComplianceService: obligations, findings, delivery status, signing keys, ledger.

use tonic::{Request, Response, Status};

use super::not_implemented;
use crate::proto::v1::{
    DeliveryStatus, GetDeliveryStatusRequest, GetSigningKeysRequest, LedgerVerification,
    ListFindingsRequest, ListFindingsResponse, ListObligationsRequest, ListObligationsResponse,
    SigningKeys, VerifyLedgerRequest, compliance_service_server::ComplianceService,
};

#[derive(Debug, Default, Clone)]
pub struct Compliance;

#[tonic::async_trait]
impl ComplianceService for Compliance {
    async fn list_obligations(
        &self,
        request: Request<ListObligationsRequest>,
    ) -> Result<Response<ListObligationsResponse>, Status> {
        Err(not_implemented(
            &request,
            "ComplianceService/ListObligations",
        ))
    }

    async fn list_findings(
        &self,
        request: Request<ListFindingsRequest>,
    ) -> Result<Response<ListFindingsResponse>, Status> {
        Err(not_implemented(&request, "ComplianceService/ListFindings"))
    }

    async fn get_delivery_status(
        &self,
        request: Request<GetDeliveryStatusRequest>,
    ) -> Result<Response<DeliveryStatus>, Status> {
        Err(not_implemented(
            &request,
            "ComplianceService/GetDeliveryStatus",
        ))
    }

    async fn get_signing_keys(
        &self,
        request: Request<GetSigningKeysRequest>,
    ) -> Result<Response<SigningKeys>, Status> {
        Err(not_implemented(
            &request,
            "ComplianceService/GetSigningKeys",
        ))
    }

    async fn verify_ledger(
        &self,
        request: Request<VerifyLedgerRequest>,
    ) -> Result<Response<LedgerVerification>, Status> {
        Err(not_implemented(&request, "ComplianceService/VerifyLedger"))
    }
}
