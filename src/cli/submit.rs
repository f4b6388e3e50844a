//! The authorized body's commands: `minegate submit` (a filing written in
//! proto3 JSON, with its documents uploaded first), `minegate register list`,
//! `minegate filing show`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

use super::ClientArgs;
use crate::{
    client::ClientTls,
    domain::document::sniff_media_type,
    evidence::verify::{ArtifactKind, verify},
    proto::v1::{
        DocumentKind, DocumentMetadata, DocumentRef, FilingReceipt, GetFilingRequest,
        GetSigningKeysRequest, ListRegisterRequest, QuarterlyReport, RegisterEntry, RegisterStatus,
        StartNotification, TerminationNotice, UploadDocumentRequest,
        compliance_service_client::ComplianceServiceClient,
        filing_service_client::FilingServiceClient, upload_document_request::Part,
    },
    tls::Role,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilingKindArg {
    /// §3 start notification
    Start,
    /// §4 quarterly report
    Quarterly,
    /// §5 termination notice
    Termination,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Which filing FILE holds.
    pub kind: FilingKindArg,
    /// The filing in proto3 JSON (the canonical mapping; see examples/).
    pub file: PathBuf,
    /// Upload a document first and add its reference: KIND=PATH, KIND one of
    /// customs, residency, grid. Repeatable.
    #[arg(long = "document", value_name = "KIND=PATH")]
    pub documents: Vec<String>,
    /// Print the receipt as proto3 JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum RegisterCommand {
    /// Every entry of the register, in register-number order.
    List {
        /// Only PLANNED, OPERATING or TERMINATED entries.
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum FilingCommand {
    /// A filing as submitted, with its receipt.
    Show {
        filing_id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What a submission came to.
pub enum Submitted {
    /// A new filing's receipt, or (`replayed`) the receipt of the filing an
    /// earlier submission with the same idempotency key made.
    Accepted {
        receipt: Box<FilingReceipt>,
        replayed: bool,
    },
    /// Field path and reason of each problem.
    Rejected(Vec<(String, String)>),
}

fn document_kind(name: &str) -> anyhow::Result<DocumentKind> {
    Ok(match name {
        "customs" | "customs-declaration-or-title" => DocumentKind::CustomsDeclarationOrTitle,
        "residency" => DocumentKind::Residency,
        "grid" | "grid-connection-conditions" => DocumentKind::GridConnectionConditions,
        other => bail!("document kind {other:?}: use customs, residency or grid"),
    })
}

/// Uploads one file as a document of `kind`, its media type read from the bytes.
pub async fn upload_file(
    channel: Channel,
    kind: DocumentKind,
    path: &Path,
) -> anyhow::Result<DocumentRef> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let media_type = sniff_media_type(&bytes)
        .with_context(|| format!("{} is not a PDF, PNG, JPEG or XML file", path.display()))?;
    let mut messages = vec![UploadDocumentRequest {
        part: Some(Part::Metadata(DocumentMetadata {
            kind: kind as i32,
            media_type: media_type.to_owned(),
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes: Some(bytes.len() as u64),
            sha256: None,
        })),
    }];
    messages.extend(bytes.chunks(256 * 1024).map(|chunk| UploadDocumentRequest {
        part: Some(Part::Chunk(chunk.to_vec())),
    }));
    let stored = FilingServiceClient::new(channel)
        .upload_document(tokio_stream::iter(messages))
        .await
        .map_err(|status| rejection(&status).unwrap_or_else(|| status_error(&status)))
        .with_context(|| format!("uploading {}", path.display()))?;
    Ok(stored.into_inner())
}

fn status_error(status: &Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

fn rejection(status: &Status) -> Option<anyhow::Error> {
    let violations = violations(status)?;
    let mut text = format!("rejected ({} problems):", violations.len());
    for (field, reason) in violations {
        let _ = write!(text, "\n  {field}: {reason}");
    }
    Some(anyhow::anyhow!(text))
}

fn violations(status: &Status) -> Option<Vec<(String, String)>> {
    if status.code() != Code::InvalidArgument {
        return None;
    }
    let bad = status.get_details_bad_request()?;
    Some(
        bad.field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect(),
    )
}

/// Reads a filing from `file`, uploads `documents` (KIND=PATH) and adds their
/// references, and submits it.
pub async fn submit_file(
    tls: &ClientTls,
    kind: FilingKindArg,
    file: &Path,
    documents: &[String],
) -> anyhow::Result<Submitted> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let channel = tls.connect().await?;
    let mut uploaded = Vec::new();
    for spec in documents {
        let (kind, path) = spec
            .split_once('=')
            .with_context(|| format!("--document {spec:?}: expected KIND=PATH"))?;
        uploaded.push(upload_file(channel.clone(), document_kind(kind)?, Path::new(path)).await?);
    }
    let parse = |e: serde_json::Error| {
        anyhow::anyhow!("{}: not a valid filing in proto3 JSON: {e}", file.display())
    };
    let mut client = FilingServiceClient::new(channel.clone());
    let result = match kind {
        FilingKindArg::Start => {
            let mut filing: StartNotification = serde_json::from_str(&text).map_err(parse)?;
            filing.documents.extend(uploaded);
            client.submit_start_notification(filing).await
        }
        FilingKindArg::Quarterly => {
            let mut filing: QuarterlyReport = serde_json::from_str(&text).map_err(parse)?;
            filing.documents.extend(uploaded);
            client.submit_quarterly_report(filing).await
        }
        FilingKindArg::Termination => {
            if !uploaded.is_empty() {
                bail!("a termination notice carries no documents");
            }
            let filing: TerminationNotice = serde_json::from_str(&text).map_err(parse)?;
            client.submit_termination_notice(filing).await
        }
    };
    match result {
        Ok(receipt) => {
            // The receipt is checked as a ministry checks what it gets: its
            // evidence against the published keys (docs/evidence.md).
            let replayed = receipt
                .metadata()
                .get(crate::service::filing::REPLAYED_HEADER)
                .is_some_and(|value| value == "true");
            let receipt = receipt.into_inner();
            let keys = ComplianceServiceClient::new(channel)
                .get_signing_keys(GetSigningKeysRequest {})
                .await
                .map_err(|status| status_error(&status))?
                .into_inner()
                .keys;
            verify(ArtifactKind::Receipt, receipt.evidence.as_ref(), &keys)
                .context("the receipt's evidence does not hold")?;
            Ok(Submitted::Accepted {
                receipt: Box::new(receipt),
                replayed,
            })
        }
        Err(status) => match violations(&status) {
            Some(violations) => Ok(Submitted::Rejected(violations)),
            None => Err(status_error(&status)),
        },
    }
}

fn date(d: &Option<crate::proto::v1::Date>) -> String {
    d.as_ref().map_or("-".into(), |d| {
        format!("{:04}-{:02}-{:02}", d.year, d.month, d.day)
    })
}

fn time(t: &Option<pbjson_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32))
        .map_or("-".into(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
}

/// A receipt as a person reads it; `replayed`: the answer to a repeated
/// submission, which stored nothing new.
pub fn receipt_table(receipt: &FilingReceipt, replayed: bool) -> String {
    let mut out = String::new();
    let kind = receipt
        .filing_kind()
        .as_str_name()
        .trim_start_matches("FILING_KIND_")
        .to_lowercase()
        .replace('_', " ");
    if replayed {
        let _ = writeln!(
            out,
            "replayed: {kind} {} (accepted before with this idempotency key and payload; \
             nothing new was stored)",
            receipt.filing_id
        );
    } else {
        let _ = writeln!(out, "accepted: {kind} {}", receipt.filing_id);
    }
    let _ = writeln!(out, "  BIN/IIN           {}", receipt.bin_or_iin);
    let _ = writeln!(
        out,
        "  register number   {}",
        if receipt.register_number.is_empty() {
            "(not registered)"
        } else {
            &receipt.register_number
        }
    );
    let _ = writeln!(out, "  received          {}", time(&receipt.received_at));
    let met = if receipt.deadline_met {
        "met".to_owned()
    } else {
        format!("missed by {} days", receipt.days_late)
    };
    let _ = writeln!(
        out,
        "  statutory due     {} ({met})",
        date(&receipt.statutory_due_date)
    );
    if receipt.revision > 0 {
        let _ = writeln!(out, "  revision          {}", receipt.revision);
    }
    if receipt.findings.is_empty() {
        let _ = writeln!(out, "  findings          none");
    }
    for finding in &receipt.findings {
        let _ = writeln!(
            out,
            "  finding           {}: {}",
            finding
                .kind()
                .as_str_name()
                .trim_start_matches("FINDING_KIND_"),
            finding.detail
        );
    }
    for obligation in &receipt.obligations {
        let _ = writeln!(
            out,
            "  obligation        {} due {}",
            obligation
                .kind()
                .as_str_name()
                .trim_start_matches("OBLIGATION_KIND_"),
            date(&obligation.due_date)
        );
    }
    if let Some(evidence) = &receipt.evidence {
        let size = evidence.checkpoint.lines().nth(1).unwrap_or("?");
        let _ = writeln!(
            out,
            "  in the ledger     leaf {} of the signed tree of {size}, verified",
            evidence.leaf_index
        );
    }
    out
}

pub async fn run(args: SubmitArgs) -> anyhow::Result<ExitCode> {
    let tls = args.client.tls(Role::Authority);
    match submit_file(&tls, args.kind, &args.file, &args.documents).await? {
        Submitted::Accepted { receipt, replayed } => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&receipt)?);
            } else {
                print!("{}", receipt_table(&receipt, replayed));
            }
            Ok(ExitCode::SUCCESS)
        }
        Submitted::Rejected(violations) => {
            eprintln!(
                "error: {} rejected ({} problems):",
                args.file.display(),
                violations.len()
            );
            for (field, reason) in violations {
                eprintln!("  {field}: {reason}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}

fn register_line(entry: &RegisterEntry) -> String {
    format!(
        "{:<14} {:<13} {:<10} {:>8} kW  {}",
        entry.register_number,
        entry.bin_or_iin,
        entry
            .status()
            .as_str_name()
            .trim_start_matches("REGISTER_STATUS_"),
        entry.required_power_kw,
        entry.name
    )
}

pub async fn run_register(command: RegisterCommand) -> anyhow::Result<ExitCode> {
    let RegisterCommand::List {
        status,
        json,
        client,
    } = command;
    let status = match status.as_deref() {
        None => RegisterStatus::Unspecified,
        Some(s) => RegisterStatus::from_str_name(&format!("REGISTER_STATUS_{}", s.to_uppercase()))
            .with_context(|| format!("--status {s:?}: use planned, operating or terminated"))?,
    };
    let filings = FilingServiceClient::new(client.tls(Role::Authority).connect().await?);
    let entries = super::all_pages(|page_token| {
        let mut filings = filings.clone();
        async move {
            let page = filings
                .list_register(ListRegisterRequest {
                    page_size: 1000,
                    page_token,
                    status: status as i32,
                    activity_kind: 0,
                })
                .await?
                .into_inner();
            Ok((page.entries, page.next_page_token))
        }
    })
    .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        println!(
            "{:<14} {:<13} {:<10} {:>11}  NAME",
            "NUMBER", "BIN/IIN", "STATUS", "POWER"
        );
        for entry in &entries {
            println!("{}", register_line(entry));
        }
        println!("{} entries", entries.len());
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn run_filing(command: FilingCommand) -> anyhow::Result<ExitCode> {
    let FilingCommand::Show { filing_id, client } = command;
    let filing = FilingServiceClient::new(client.tls(Role::Authority).connect().await?)
        .get_filing(GetFilingRequest { filing_id })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    println!("{}", serde_json::to_string_pretty(&filing)?);
    Ok(ExitCode::SUCCESS)
}
