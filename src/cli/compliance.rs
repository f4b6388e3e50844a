//! The operators' commands: `minegate compliance obligations|findings` and
//! `minegate status`.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::ClientArgs;
use crate::{
    proto::v1::{
        FindingKind, GetPendingExtractsRequest, ListFindingsRequest, ListObligationsRequest,
        Obligation, ObligationKind, ObligationStatus, SubscriberPending,
        compliance_service_client::ComplianceServiceClient,
    },
    tls::Role,
};

#[derive(Debug, Subcommand)]
pub enum ComplianceCommand {
    /// §6 / §6-1 obligations and their deadlines.
    Obligations {
        /// energy-extract or finance-form
        #[arg(long)]
        kind: Option<String>,
        /// pending, fulfilled, overdue or fulfilled-late
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compliance findings, including missing quarterly reports.
    Findings {
        /// e.g. late-quarterly-report, missing-quarterly-report
        #[arg(long)]
        kind: Option<String>,
        /// Only findings about this BIN/IIN.
        #[arg(long)]
        bin_or_iin: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Seconds to wait for the whole answer; a gateway that has not
    /// answered by then is an error (exit 1).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

fn enum_arg<T>(
    prefix: &str,
    value: &str,
    parse: fn(&str) -> Option<T>,
    hint: &str,
) -> anyhow::Result<T> {
    parse(&format!(
        "{prefix}{}",
        value.to_uppercase().replace('-', "_")
    ))
    .with_context(|| format!("{value:?}: use {hint}"))
}

/// Every obligation matching the filters, all pages.
pub async fn all_obligations(
    channel: Channel,
    kind: ObligationKind,
    status: ObligationStatus,
) -> anyhow::Result<Vec<Obligation>> {
    let client = ComplianceServiceClient::new(channel);
    super::all_pages(|page_token| {
        let mut client = client.clone();
        async move {
            let page = client
                .list_obligations(ListObligationsRequest {
                    kind: kind as i32,
                    status: status as i32,
                    due_before: None,
                    page_size: 1000,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((page.obligations, page.next_page_token))
        }
    })
    .await
}

fn date(d: &Option<crate::proto::v1::Date>) -> String {
    d.as_ref().map_or("-".into(), |d| {
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
    })
}

pub async fn run(command: ComplianceCommand) -> anyhow::Result<ExitCode> {
    match command {
        ComplianceCommand::Obligations {
            kind,
            status,
            json,
            client,
        } => {
            let kind = match kind {
                None => ObligationKind::Unspecified,
                Some(k) => enum_arg(
                    "OBLIGATION_KIND_",
                    &k,
                    ObligationKind::from_str_name,
                    "energy-extract or finance-form",
                )?,
            };
            let status = match status {
                None => ObligationStatus::Unspecified,
                Some(s) => enum_arg(
                    "OBLIGATION_STATUS_",
                    &s,
                    ObligationStatus::from_str_name,
                    "pending, fulfilled, overdue or fulfilled-late",
                )?,
            };
            let obligations =
                all_obligations(client.tls(Role::Operator).connect().await?, kind, status).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&obligations)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!("{:<15} {:<15} {:<11} SUBJECT", "KIND", "STATUS", "DUE");
            for o in &obligations {
                let subject = match &o.quarter {
                    Some(q) => format!("{} Q{}", q.year, q.quarter),
                    None => format!("filing {}", o.filing_id),
                };
                println!(
                    "{:<15} {:<15} {:<11} {subject}",
                    o.kind()
                        .as_str_name()
                        .trim_start_matches("OBLIGATION_KIND_"),
                    o.status()
                        .as_str_name()
                        .trim_start_matches("OBLIGATION_STATUS_"),
                    date(&o.due_date)
                );
            }
            println!("{} obligations", obligations.len());
        }
        ComplianceCommand::Findings {
            kind,
            bin_or_iin,
            json,
            client,
        } => {
            let kind = match kind {
                None => FindingKind::Unspecified,
                Some(k) => enum_arg(
                    "FINDING_KIND_",
                    &k,
                    FindingKind::from_str_name,
                    "a finding kind such as late-quarterly-report",
                )?,
            };
            let compliance =
                ComplianceServiceClient::new(client.tls(Role::Operator).connect().await?);
            let bin_or_iin = bin_or_iin.unwrap_or_default();
            let findings = super::all_pages(|page_token| {
                let (mut compliance, bin_or_iin) = (compliance.clone(), bin_or_iin.clone());
                async move {
                    let page = compliance
                        .list_findings(ListFindingsRequest {
                            kind: kind as i32,
                            bin_or_iin,
                            page_size: 1000,
                            page_token,
                        })
                        .await?
                        .into_inner();
                    Ok((page.findings, page.next_page_token))
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
                return Ok(ExitCode::SUCCESS);
            }
            for f in &findings {
                println!(
                    "{:<26} {:<13} {}",
                    f.kind().as_str_name().trim_start_matches("FINDING_KIND_"),
                    f.bin_or_iin,
                    f.detail
                );
            }
            println!("{} findings", findings.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Health, extracts not yet acknowledged by each subscriber, overdue
/// obligations. Exit 1 when not serving or when anything is overdue.
pub async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let limit = std::time::Duration::from_secs(args.timeout);
    let tls = args.client.tls(Role::Operator);
    tokio::time::timeout(limit, report(tls.clone()))
        .await
        .map_err(|_| {
            anyhow::anyhow!("{} did not answer within {} s", tls.server, limit.as_secs())
        })?
}

/// `status`'s lines, and its exit code.
async fn report(tls: crate::client::ClientTls) -> anyhow::Result<ExitCode> {
    let channel = tls.connect().await?;
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await?
        .into_inner()
        .status();
    println!("gateway            {}", health.as_str_name());
    // While the database is down the gateway still answers health: what
    // needs the database is said unknown, and why, line by line.
    // Both at once: while the database is down each waits for it (up to the
    // gateway's pool timeout), and one after the other would not fit the
    // default --timeout.
    let mut compliance = ComplianceServiceClient::new(channel.clone());
    let (pending, overdue) = tokio::join!(
        compliance.get_pending_extracts(GetPendingExtractsRequest {}),
        all_obligations(
            channel,
            ObligationKind::Unspecified,
            ObligationStatus::Overdue,
        )
    );
    match &pending {
        Ok(pending) => print_pending(&pending.get_ref().subscribers),
        Err(status) => println!("pending extracts   unknown: {}", status.message()),
    }
    match &overdue {
        Ok(overdue) => print_overdue(overdue),
        Err(error) => {
            let why = match error.downcast_ref::<super::CallError>() {
                Some(refused) => refused.message.clone(),
                None => super::causes_once(error),
            };
            println!("overdue            unknown: {why}");
        }
    }
    let fine = health == ServingStatus::Serving
        && pending.is_ok()
        && overdue.is_ok_and(|overdue| overdue.is_empty());
    Ok(if fine {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `overdue` and each overdue obligation on a line of its own.
fn print_overdue(overdue: &[Obligation]) {
    println!("overdue            {}", overdue.len());
    for o in overdue {
        println!(
            "  {} due {} ({})",
            o.kind()
                .as_str_name()
                .trim_start_matches("OBLIGATION_KIND_"),
            date(&o.due_date),
            if o.filing_id.is_empty() {
                o.quarter
                    .as_ref()
                    .map_or(String::new(), |q| format!("{} Q{}", q.year, q.quarter))
            } else {
                o.filing_id.clone()
            }
        );
    }
}

/// `pending extracts` with each energy subscriber's count on a line of its own.
fn print_pending(pending: &[SubscriberPending]) {
    if pending.is_empty() {
        println!("pending extracts   no energy subscriber in [roles]");
        return;
    }
    println!("pending extracts   not acknowledged, by subscriber");
    for subscriber in pending {
        println!("  {:>8}  {}", subscriber.extracts, subscriber.subscriber);
    }
}
