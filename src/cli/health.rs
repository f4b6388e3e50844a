//! `minegate health`: the gateway's grpc.health.v1 answer, over mutual TLS.

use std::process::ExitCode;

use clap::Args;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::ClientArgs;
use crate::{proto::DOMAIN_SERVICES, server::CERTIFICATES_HEALTH};

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Seconds to wait for the whole answer (connection, handshake and
    /// every check); a gateway that has not answered by then exits 3.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// The exit code when the fault is this side's: the configuration, or the
/// client's own certificate, key or CA file (nothing was asked).
pub const LOCAL_FAULT: u8 = 4;

/// Prints each service's status and the certificates' expiry warning.
/// Exit 0: all SERVING; 1: a service is not; 2: all serve, but a server or
/// CA certificate expires within `tls.expiry_warning_days`; 3: the gateway
/// could not be reached or did not answer; 4: [`LOCAL_FAULT`] (the error on
/// stderr for 3 and 4).
pub async fn run(args: HealthArgs) -> anyhow::Result<ExitCode> {
    let limit = std::time::Duration::from_secs(args.timeout);
    let server = args.client.tls(crate::tls::Role::Operator).server;
    let Ok(checked) = tokio::time::timeout(limit, check(args)).await else {
        eprintln!(
            "error: {server} did not answer within {} s",
            limit.as_secs()
        );
        return Ok(ExitCode::from(3));
    };
    match checked {
        Ok(code) => Ok(code),
        Err(error) => {
            eprintln!("error: {}", super::causes_once(&error));
            let local = error
                .downcast_ref::<crate::client::ClientError>()
                .is_some_and(|error| error.is_local());
            Ok(ExitCode::from(if local { LOCAL_FAULT } else { 3 }))
        }
    }
}

async fn check(args: HealthArgs) -> anyhow::Result<ExitCode> {
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
    let certificates = health
        .check(HealthCheckRequest {
            service: CERTIFICATES_HEALTH.to_owned(),
        })
        .await?
        .into_inner()
        .status();
    let certificates_fine = certificates == ServingStatus::Serving;
    if certificates_fine {
        println!("{CERTIFICATES_HEALTH:<45} SERVING");
    } else {
        println!(
            "{CERTIFICATES_HEALTH:<45} {} (a server or CA certificate expires within \
             tls.expiry_warning_days; minegate_certificate_days_left has the days)",
            certificates.as_str_name()
        );
    }
    Ok(match (all_serving, certificates_fine) {
        (true, true) => ExitCode::SUCCESS,
        (false, _) => ExitCode::FAILURE,
        (true, false) => ExitCode::from(2),
    })
}
