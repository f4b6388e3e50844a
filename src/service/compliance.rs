//! ComplianceService: obligations, findings, delivery status, signing keys, ledger.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{not_implemented, peer, store_error};
use crate::proto::v1::{
    DeliveryStatus, GetDeliveryStatusRequest, GetSigningKeysRequest, LedgerVerification,
    ListFindingsRequest, ListFindingsResponse, ListObligationsRequest, ListObligationsResponse,
    SigningKeys, VerifyLedgerRequest, compliance_service_server::ComplianceService,
};
use crate::{
    signing::Signer,
    store::{self, Store},
};

pub struct Compliance {
    store: Arc<dyn Store>,
    signer: Arc<Signer>,
}

impl Compliance {
    pub fn new(store: Arc<dyn Store>, signer: Arc<Signer>) -> Self {
        Compliance { store, signer }
    }
}

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
        peer(&request)?;
        Ok(Response::new(SigningKeys {
            keys: vec![self.signer.public_key()],
        }))
    }

    async fn verify_ledger(
        &self,
        request: Request<VerifyLedgerRequest>,
    ) -> Result<Response<LedgerVerification>, Status> {
        let caller = peer(&request)?;
        let report = store::verify_ledger(&*self.store)
            .await
            .map_err(store_error)?;
        tracing::info!(
            identity = %caller.identity,
            entries = report.entries_checked,
            intact = report.first_broken.is_none(),
            "ledger verified"
        );
        let (first_broken_entry, reason) = match report.first_broken {
            Some((seq, reason)) => (Some(seq as u64), reason),
            None => (None, String::new()),
        };
        Ok(Response::new(LedgerVerification {
            intact: first_broken_entry.is_none(),
            entries_checked: report.entries_checked,
            first_broken_entry,
            reason,
            head_hash: report.head_hash,
        }))
    }
}
