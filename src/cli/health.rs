//! `minegate health`: the gateway's grpc.health.v1 answer, over mutual TLS.

use std::process::ExitCode;

use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::ClientArgs;
use crate::proto::DOMAIN_SERVICES;

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Prints each service's status; exit 0 only if all are SERVING.
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let channel = args
        .client
        .tls(crate::tls::Role::Operator)
        .connect()
        .await?;
    let mut health = HealthClient::new(channel);
    let mut all_serving = true;
    for service in std::iter::once("").chain(DOMAIN_SERVICES) {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await?
            .into_inner()
            .status();
        all_serving &= status == ServingStatus::Serving;
        let name = if service.is_empty() {
            "(gateway)"
        } else {
            service
        };
        println!("{name:<45} {}", status.as_str_name());
    }
    Ok(if all_serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
