//! FinanceService: the finance ministry pulls form 402 (§6-1).

use tonic::{Request, Response, Status};

use super::not_implemented;
use crate::proto::v1::{
    AcknowledgeFormRequest, FormAcknowledgement, PullQuarterlyFormRequest, TaxDataForm,
    finance_service_server::FinanceService,
};

#[derive(Debug, Default, Clone)]
pub struct FinanceForms;

#[tonic::async_trait]
impl FinanceService for FinanceForms {
    async fn pull_quarterly_form(
        &self,
        request: Request<PullQuarterlyFormRequest>,
    ) -> Result<Response<TaxDataForm>, Status> {
        Err(not_implemented(
            &request,
            "FinanceService/PullQuarterlyForm",
        ))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeFormRequest>,
    ) -> Result<Response<FormAcknowledgement>, Status> {
        Err(not_implemented(&request, "FinanceService/Acknowledge"))
    }
}
