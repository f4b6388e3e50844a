//! FinanceService: the finance ministry pulls form 402 (§6-1) for a quarter
//! and acknowledges a revision by its digest. The form is compiled from the
//! latest revision of each quarterly report of the quarter; the same content
//! pulled again is the same revision and writes nothing, and a report
//! accepted after a pull makes the next revision. A form too large for one
//! message is handed out in pages: slices of its encoded body, each under
//! `limits.max_message_bytes`, with the whole body's digest and evidence.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};

use super::{invalid, peer, store_error, timestamp, to_pb_date, validate::Violations};
use crate::{
    domain::{
        Sha256Hex, deadlines, ledger,
        quantities::{Quarter, WattHours},
    },
    evidence::verify::ArtifactKind,
    proto::v1::{
        AcknowledgeFormRequest, DataCentreLocation, Evidence, FormAcknowledgement, FormPage,
        PullQuarterlyFormRequest, QuarterlyReport, TaxDataForm, TaxDataFormBody, TaxDataRow,
        TaxDataTotals, finance_service_server::FinanceService,
    },
    store::{
        AckFacts, Clock, FormAck, FormAckOutcome, FormFacts, FormPublication, ReportForForm, Store,
    },
};

/// What a page of form 402 keeps, under `limits.max_message_bytes`, for
/// all but its slice of the body: the digest (66 bytes), the page's header
/// (at most 40) and the evidence without its artifact — the entry (under
/// 1 KiB), an inclusion proof of at most 64 hashes (2.2 KiB) and the signed
/// checkpoint (under 1 KiB). It is fixed, so that a page's bounds depend on
/// the body and the limit only, not on the evidence of the moment.
pub const FORM_PAGE_RESERVE: usize = 16 * 1024;

/// Pulls served at once. A pull holds its quarter's whole form a few times
/// over (read, decoded, its body encoded), whichever page it answers, so
/// pulls beyond these wait their turn instead of multiplying that.
const PULLS_AT_ONCE: usize = 2;

pub struct FinanceForms {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    max_message_bytes: usize,
    pulls: tokio::sync::Semaphore,
}

impl FinanceForms {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, max_message_bytes: usize) -> Self {
        FinanceForms {
            store,
            clock,
            max_message_bytes,
            pulls: tokio::sync::Semaphore::new(PULLS_AT_ONCE),
        }
    }

    /// The current revision of the quarter's form (published first if its
    /// content changed), as stored: the form without evidence.
    async fn current(&self, quarter: Quarter) -> Result<Vec<u8>, Status> {
        let reports = self
            .store
            .reports_for_form(quarter)
            .await
            .map_err(store_error)?;
        let (rows, totals) = compile(&reports)?;
        // What the revision is about: rows and totals, not its number or time.
        let content = TaxDataFormBody {
            year: quarter.year(),
            quarter: quarter.quarter() as i32,
            rows,
            totals: Some(totals),
            ..Default::default()
        };
        let content_sha256 = Sha256Hex::of(&content.encode_to_vec()).to_string();
        let build = Box::new(move |facts: &FormFacts| {
            let body = TaxDataFormBody {
                revision: facts.revision,
                compiled_at: Some(timestamp(facts.compiled_at)),
                due_date: Some(to_pb_date(facts.due_date)),
                ..content
            };
            let body_sha256 = Sha256Hex::of(&body.encode_to_vec()).to_string();
            let form = TaxDataForm {
                body: Some(body),
                body_sha256: body_sha256.clone(),
                ..Default::default()
            };
            (body_sha256, form.encode_to_vec())
        });
        self.store
            .publish_form(FormPublication {
                quarter,
                content_sha256,
                filing_ids: reports.iter().map(|r| r.filing_id.clone()).collect(),
                build,
            })
            .await
            .map_err(store_error)
    }
}

fn quarter(year: i32, quarter: i32) -> Result<Quarter, Status> {
    let mut v = Violations::default();
    match u32::try_from(quarter)
        .map_err(|_| format!("quarter must be 1 to 4, got {quarter}"))
        .and_then(|q| Quarter::new(year, q))
    {
        Ok(quarter) => return Ok(quarter),
        Err(reason) if reason.starts_with("year") => v.add("year", reason),
        Err(reason) => v.add("quarter", reason),
    }
    Err(invalid(&v))
}

/// §6-1 a quarter whose form can be pulled on `today`: from 2022 Q1, once ended.
fn form_quarter(year: i32, wanted: i32, today: chrono::NaiveDate) -> Result<Quarter, Status> {
    let mut v = Violations::default();
    match quarter(year, wanted)?.can_have_form(today) {
        Ok(quarter) => return Ok(quarter),
        Err(reason) => v.add("quarter", reason),
    }
    Err(invalid(&v))
}

/// §6-1 the rows (one per payer, by BIN/IIN) and totals of form 402.
pub fn compile(reports: &[ReportForForm]) -> Result<(Vec<TaxDataRow>, TaxDataTotals), Status> {
    let mut rows = Vec::with_capacity(reports.len());
    let mut total: u64 = 0;
    for report in reports {
        let body = QuarterlyReport::decode(report.body.as_slice())
            .map_err(|_| Status::internal("a stored quarterly report is unreadable"))?;
        let person = body.person.unwrap_or_default();
        // Reports are held to 10 TWh each when filed; only one accepted by
        // an earlier release can make the total overflow.
        total = total.checked_add(body.consumption_wh).ok_or_else(|| {
            Status::failed_precondition(format!(
                "the quarter's electricity overflows 64 bits of Wh at report {} ({} Wh); \
                 a corrected revision of it is needed",
                report.filing_id, body.consumption_wh
            ))
        })?;
        rows.push(TaxDataRow {
            payer_name: person.name.trim().to_owned(),
            bin_or_iin: person.bin_or_iin.trim().to_owned(),
            legal_address: person.legal_address.trim().to_owned(),
            locations: body
                .data_centres
                .into_iter()
                .map(|d| DataCentreLocation {
                    address: d.address.trim().to_owned(),
                    kato_code: d.kato_code,
                })
                .collect(),
            electricity_wh: body.consumption_wh,
            electricity_kwh: WattHours(body.consumption_wh).kwh_text(),
            source_report_id: report.filing_id.clone(),
            source_report_revision: report.revision,
        });
    }
    let totals = TaxDataTotals {
        payers: rows.len() as u32,
        electricity_wh: total,
        electricity_kwh: WattHours(total).kwh_text(),
    };
    Ok((rows, totals))
}

/// A stored form and its body's bytes, checked against its digest.
fn stored_form(bytes: &[u8]) -> Result<(TaxDataForm, Vec<u8>), Status> {
    let form =
        TaxDataForm::decode(bytes).map_err(|_| Status::internal("a stored form is unreadable"))?;
    // The ledger records the body's digest: the evidence is of the
    // body's bytes, which encode again as stored (prost, same fields).
    let body = form.body.clone().unwrap_or_default().encode_to_vec();
    if Sha256Hex::of(&body).as_str() != form.body_sha256 {
        return Err(Status::internal(
            "a stored form's body does not match its digest",
        ));
    }
    Ok((form, body))
}

/// What one message carries of `form` with the evidence of its body: the
/// whole form when it fits `max_message_bytes`, else page `page` (from 1)
/// of the body, `max_message_bytes - FORM_PAGE_RESERVE` bytes a page.
pub fn form_message(
    form: TaxDataForm,
    evidence: Evidence,
    page: u32,
    max_message_bytes: usize,
) -> Result<TaxDataForm, Status> {
    let whole = TaxDataForm {
        evidence: Some(evidence),
        ..form
    };
    let whole_bytes = whole.encoded_len();
    if whole_bytes <= max_message_bytes {
        return Ok(whole);
    }
    let (year, quarter, revision) = whole
        .body
        .as_ref()
        .map_or((0, 0, 0), |b| (b.year, b.quarter, b.revision));
    let TaxDataForm {
        body_sha256,
        evidence,
        ..
    } = whole;
    let mut evidence = evidence.unwrap_or_default();
    let body = std::mem::take(&mut evidence.artifact);
    let per_page = max_message_bytes - FORM_PAGE_RESERVE;
    let count = body.len().div_ceil(per_page);
    let form = format!("revision {revision} of form 402 for {year} Q{quarter}");
    if page == 0 {
        return Err(Status::failed_precondition(format!(
            "{form} is {whole_bytes} bytes with its evidence, more than one message holds \
             ({max_message_bytes}): pull its pages 1 to {count} with revision {revision}"
        )));
    }
    let start = (page as usize - 1).saturating_mul(per_page);
    if start >= body.len() {
        return Err(Status::out_of_range(format!(
            "{form} has {count} pages, not {page}"
        )));
    }
    let end = body.len().min(start + per_page);
    Ok(TaxDataForm {
        body_sha256,
        evidence: Some(evidence),
        page: Some(FormPage {
            index: page,
            count: count as u32,
            offset: start as u64,
            body_bytes: body.len() as u64,
            body_part: body[start..end].to_vec(),
            revision,
        }),
        ..Default::default()
    })
}

#[tonic::async_trait]
impl FinanceService for FinanceForms {
    async fn pull_quarterly_form(
        &self,
        request: Request<PullQuarterlyFormRequest>,
    ) -> Result<Response<TaxDataForm>, Status> {
        let caller = peer(&request)?;
        let wanted = request.into_inner();
        let today = deadlines::local_date(self.clock.now());
        let quarter = form_quarter(wanted.year, wanted.quarter, today)?;
        let _turn = self
            .pulls
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the gateway is stopping"))?;
        let stored = match (wanted.revision, wanted.page) {
            (0, 0 | 1) => self.current(quarter).await?,
            (0, page) => {
                let mut v = Violations::default();
                v.add(
                    "revision",
                    format!("page {page} needs the revision page 1 gave, so that the pages are of one body"),
                );
                return Err(invalid(&v));
            }
            (revision, _) => self
                .store
                .form_revision(quarter, revision)
                .await
                .map_err(store_error)?
                .ok_or_else(|| {
                    Status::not_found(format!("form 402 for {quarter} has no revision {revision}"))
                })?,
        };
        let (form, body) = stored_form(&stored)?;
        let revision = form.body.as_ref().map_or(0, |b| b.revision);
        let rows = form.body.as_ref().map_or(0, |b| b.rows.len());
        let subject = ledger::form_subject(&quarter, &revision);
        let evidence =
            super::evidence(&*self.store, ArtifactKind::FormBody, &subject, body).await?;
        let message = form_message(form, evidence, wanted.page, self.max_message_bytes)?;
        tracing::info!(
            identity = %caller.identity,
            %quarter,
            revision,
            rows,
            page = message.page.as_ref().map_or(0, |p| p.index),
            "form 402 pulled"
        );
        Ok(Response::new(message))
    }

    async fn acknowledge(
        &self,
        request: Request<AcknowledgeFormRequest>,
    ) -> Result<Response<FormAcknowledgement>, Status> {
        let caller = peer(&request)?;
        let ack = request.into_inner();
        let quarter = quarter(ack.year, ack.quarter)?;
        let mut v = Violations::default();
        if ack.revision == 0 {
            v.add("revision", "revisions start at 1");
        }
        if let Err(reason) = Sha256Hex::parse(&ack.body_sha256) {
            v.add("body_sha256", reason);
        }
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        let (revision, digest) = (ack.revision, ack.body_sha256.to_ascii_lowercase());
        let body_sha256 = digest.clone();
        let build = Box::new(move |facts: &AckFacts| {
            FormAcknowledgement {
                year: quarter.year(),
                quarter: quarter.quarter() as i32,
                revision,
                body_sha256: body_sha256.clone(),
                acknowledged_at: Some(timestamp(facts.acknowledged_at)),
                due_date: Some(to_pb_date(facts.due_date)),
                deadline_met: deadlines::local_date(facts.acknowledged_at) <= facts.due_date,
                ..Default::default()
            }
            .encode_to_vec()
        });
        let outcome = self
            .store
            .acknowledge_form(FormAck {
                quarter,
                revision,
                body_sha256: digest,
                build,
            })
            .await
            .map_err(store_error)?;
        match outcome {
            FormAckOutcome::Acknowledged(bytes) => {
                tracing::info!(identity = %caller.identity, %quarter, revision, "form 402 acknowledged");
                let mut ack = FormAcknowledgement::decode(bytes.as_slice())
                    .map_err(|_| Status::internal("a stored acknowledgement is unreadable"))?;
                let subject = ledger::form_subject(&quarter, &revision);
                ack.evidence = Some(
                    super::evidence(&*self.store, ArtifactKind::FormAck, &subject, bytes).await?,
                );
                Ok(Response::new(ack))
            }
            FormAckOutcome::UnknownRevision => Err(Status::not_found(format!(
                "form 402 for {quarter} has no revision {revision}"
            ))),
            FormAckOutcome::DigestMismatch { expected } => {
                Err(Status::failed_precondition(format!(
                    "body_sha256 does not match revision {revision} of form 402 for {quarter} (its digest is {expected})"
                )))
            }
        }
    }
}
