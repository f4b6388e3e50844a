//! The finance ministry's command: `minegate finance pull`. The form's
//! digest and evidence are verified (its body is in the gateway's log under
//! a signed checkpoint consistent with the last one seen, kept beside the
//! output: [`super::witness`]), the form written (CSV or proto3 JSON) and
//! fsynced, and only then acknowledged; the acknowledgement's evidence is
//! verified too.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::bail;
use clap::{Subcommand, ValueEnum};
use prost::Message;

use tonic::transport::Channel;

use super::{
    ClientArgs,
    energy::write_durably,
    witness::{self, Announced, Witness},
};
use crate::{
    client::ClientTls,
    domain::Sha256Hex,
    evidence::verify::ArtifactKind,
    proto::v1::{
        AcknowledgeFormRequest, PullQuarterlyFormRequest, TaxDataForm, TaxDataFormBody,
        finance_service_client::FinanceServiceClient,
    },
    tls::Role,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormFormat {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum FinanceCommand {
    /// Pull form 402 for a quarter (page by page if large), verify it, write it, acknowledge it.
    Pull {
        #[arg(long)]
        year: i32,
        #[arg(long)]
        quarter: i32,
        #[arg(long, value_enum, default_value_t = FormFormat::Csv)]
        format: FormFormat,
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// After a restore the gateway's operators announced: accept the
    /// restored log in place of the checkpoint kept beside OUT, if the
    /// gateway's log continues the announced checkpoint.
    AcceptRestoredLog {
        /// The file `pull --out` writes (its folder's minegate-checkpoint.note).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        announced: Announced,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// What a pull came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub revision: u32,
    pub rows: usize,
    pub total_wh: u64,
    pub total_kwh: String,
    pub body_sha256: String,
}

fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Form 402 as CSV: one line per payer.
pub fn to_csv(form: &TaxDataForm) -> String {
    let mut out = String::from(
        "bin_or_iin,payer_name,legal_address,data_centres,kato_codes,electricity_kwh,electricity_wh,source_report_id,source_report_revision\n",
    );
    for row in form.body.iter().flat_map(|b| &b.rows) {
        let addresses: Vec<&str> = row.locations.iter().map(|l| l.address.as_str()).collect();
        let katos: Vec<&str> = row
            .locations
            .iter()
            .map(|l| l.kato_code.as_deref().unwrap_or(""))
            .collect();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{}",
            csv_field(&row.bin_or_iin),
            csv_field(&row.payer_name),
            csv_field(&row.legal_address),
            csv_field(&addresses.join("; ")),
            csv_field(&katos.join("; ")),
            row.electricity_kwh,
            row.electricity_wh,
            row.source_report_id,
            row.source_report_revision
        );
    }
    out
}

async fn pull_page(
    finance: &mut FinanceServiceClient<Channel>,
    request: PullQuarterlyFormRequest,
) -> anyhow::Result<TaxDataForm> {
    Ok(finance
        .pull_quarterly_form(request)
        .await
        .map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?
        .into_inner())
}

/// Form 402 for a quarter as one message: a form that fits one comes whole;
/// a larger one page by page, of the revision the first page names, and
/// the pages' slices are joined into the body and its evidence's artifact,
/// for the digest and the evidence to be checked as of a whole form.
pub async fn pull_form(
    finance: &mut FinanceServiceClient<Channel>,
    year: i32,
    quarter: i32,
) -> anyhow::Result<TaxDataForm> {
    let mut request = PullQuarterlyFormRequest {
        year,
        quarter,
        revision: 0,
        page: 1,
    };
    let mut last = pull_page(finance, request).await?;
    let Some(first) = last.page.clone() else {
        return Ok(last);
    };
    let digest = last.body_sha256.clone();
    let mut body = Vec::with_capacity(usize::try_from(first.body_bytes)?);
    request.revision = first.revision;
    loop {
        let page = last.page.take().unwrap_or_default();
        let of_the_same_form = (
            page.count,
            page.body_bytes,
            page.revision,
            &last.body_sha256,
        ) == (first.count, first.body_bytes, first.revision, &digest);
        if !of_the_same_form || page.offset != body.len() as u64 {
            bail!(
                "page {} of form 402 does not follow the pages before it",
                page.index
            );
        }
        body.extend_from_slice(&page.body_part);
        if page.index >= first.count {
            break;
        }
        request.page = page.index + 1;
        last = pull_page(finance, request).await?;
    }
    if body.len() as u64 != first.body_bytes {
        bail!(
            "the pages of form 402 hold {} bytes, not the {} they announce",
            body.len(),
            first.body_bytes
        );
    }
    let mut evidence = last.evidence.take().unwrap_or_default();
    evidence.artifact = body;
    Ok(TaxDataForm {
        evidence: Some(evidence),
        ..last
    })
}

/// Pulls, verifies, writes `out`, acknowledges.
pub async fn pull(
    tls: &ClientTls,
    year: i32,
    quarter: i32,
    format: FormFormat,
    out: &Path,
) -> anyhow::Result<Pulled> {
    let channel = tls.connect().await?;
    let mut witness = Witness::connect(channel.clone(), Witness::beside(out, false)).await?;
    let mut finance = FinanceServiceClient::new(channel);
    let mut form = pull_form(&mut finance, year, quarter).await?;
    witness
        .verify(ArtifactKind::FormBody, form.evidence.as_ref())
        .await
        .map_err(|e| e.context("form 402: its evidence does not hold"))?;
    // What the log attests is the body's bytes in the evidence: they are
    // what is written, and their digest what is acknowledged.
    let attested = &form.evidence.as_ref().expect("verified above").artifact;
    let digest = Sha256Hex::of(attested);
    if digest.as_str() != form.body_sha256 {
        bail!(
            "the form's body hashes to {digest}, not the {} it claims",
            form.body_sha256
        );
    }
    let body = TaxDataFormBody::decode(attested.as_slice())
        .map_err(|e| anyhow::anyhow!("the attested form body does not decode: {e}"))?;
    form.body = Some(body.clone());
    let bytes = match format {
        FormFormat::Csv => to_csv(&form).into_bytes(),
        FormFormat::Json => serde_json::to_vec_pretty(&form)?,
    };
    write_durably(out, &bytes)?;
    let ack = finance
        .acknowledge(AcknowledgeFormRequest {
            year,
            quarter,
            revision: body.revision,
            body_sha256: form.body_sha256.clone(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("acknowledging: {:?}: {}", s.code(), s.message()))?
        .into_inner();
    witness
        .verify(ArtifactKind::FormAck, ack.evidence.as_ref())
        .await
        .map_err(|e| e.context("the form's acknowledgement: its evidence does not hold"))?;
    let totals = body.totals.unwrap_or_default();
    Ok(Pulled {
        revision: body.revision,
        rows: body.rows.len(),
        total_wh: totals.electricity_wh,
        total_kwh: totals.electricity_kwh,
        body_sha256: form.body_sha256,
    })
}

pub async fn run(command: FinanceCommand) -> anyhow::Result<ExitCode> {
    match command {
        FinanceCommand::Pull {
            year,
            quarter,
            format,
            out,
            client,
        } => run_pull(&client.tls(Role::Finance), year, quarter, format, &out)
            .await
            .map_err(|error| {
                witness::with_restore_hint(error, "minegate finance accept-restored-log --out FILE")
            }),
        FinanceCommand::AcceptRestoredLog {
            out,
            announced,
            client,
        } => {
            let path = Witness::beside(&out, false);
            witness::run_accept(&client.tls(Role::Finance), path, &announced).await
        }
    }
}

async fn run_pull(
    tls: &ClientTls,
    year: i32,
    quarter: i32,
    format: FormFormat,
    out: &Path,
) -> anyhow::Result<ExitCode> {
    let pulled = pull(tls, year, quarter, format, out).await?;
    println!(
        "form 402 for {year} Q{quarter}: revision {}, {} rows, total {} kWh ({} Wh); written to {} and acknowledged",
        pulled.revision,
        pulled.rows,
        pulled.total_kwh,
        pulled.total_wh,
        out.display()
    );
    println!("digest {}", pulled.body_sha256);
    Ok(ExitCode::SUCCESS)
}
