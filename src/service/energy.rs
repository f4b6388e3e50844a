//! EnergyExtractService: the energy ministry receives the §6 extracts.

use tonic::{Request, Response, Status};

use super::{ResponseStream, not_implemented};
use crate::proto::v1::{
    AcknowledgeExtractRequest, DocumentChunk, ExtractAcknowledgement, ExtractDelivery,
    FetchDocumentRequest, SubscribeRequest, energy_extract_service_server::EnergyExtractService,
};

#[derive(Debug, Default, Clone)]
pub struct EnergyExtracts;

#[tonic::async_trait]
impl EnergyExtractService for EnergyExtracts {
    type SubscribeStream = ResponseStream<ExtractDelivery>;
    type FetchDocumentStream = ResponseStream<DocumentChunk>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(not_implemented(&request, "EnergyExtractService/Subscribe"))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeExtractRequest>,
    ) -> Result<Response<ExtractAcknowledgement>, Status> {
        Err(not_implemented(
            &request,
            "EnergyExtractService/Acknowledge",
        ))
    }

    async fn fetch_document(
        &self,
        request: Request<FetchDocumentRequest>,
    ) -> Result<Response<Self::FetchDocumentStream>, Status> {
        Err(not_implemented(
            &request,
            "EnergyExtractService/FetchDocument",
        ))
    }
}
