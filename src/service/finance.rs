//! FinanceService: the finance ministry pulls form 402 (§6-1) for a quarter
//! and acknowledges a revision by its digest. The form is compiled from the
//! latest revision of each quarterly report of the quarter; the same content
//! pulled again is the same revision, and a report accepted after a pull
//! makes the next revision.

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
        AcknowledgeFormRequest, DataCentreLocation, FormAcknowledgement, PullQuarterlyFormRequest,
        QuarterlyReport, TaxDataForm, TaxDataFormBody, TaxDataRow, TaxDataTotals,
        finance_service_server::FinanceService,
    },
    store::{AckFacts, FormAck, FormAckOutcome, FormFacts, FormPublication, ReportForForm, Store},
};

pub struct FinanceForms {
    store: Arc<dyn Store>,
}

impl FinanceForms {
    pub fn new(store: Arc<dyn Store>) -> Self {
        FinanceForms { store }
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

/// §6-1 the rows (one per payer, by BIN/IIN) and totals of form 402.
pub fn compile(reports: &[ReportForForm]) -> Result<(Vec<TaxDataRow>, TaxDataTotals), Status> {
    let mut rows = Vec::with_capacity(reports.len());
    let mut total: u64 = 0;
    for report in reports {
        let body = QuarterlyReport::decode(report.body.as_slice())
            .map_err(|_| Status::internal("a stored quarterly report is unreadable"))?;
        let person = body.person.unwrap_or_default();
        total = total
            .checked_add(body.consumption_wh)
            .ok_or_else(|| Status::internal("the quarter's electricity overflows 64 bits of Wh"))?;
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

#[tonic::async_trait]
impl FinanceService for FinanceForms {
    async fn pull_quarterly_form(
        &self,
        request: Request<PullQuarterlyFormRequest>,
    ) -> Result<Response<TaxDataForm>, Status> {
        let caller = peer(&request)?;
        let wanted = request.into_inner();
        let quarter = quarter(wanted.year, wanted.quarter)?;
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
        let bytes = self
            .store
            .publish_form(FormPublication {
                quarter,
                content_sha256,
                filing_ids: reports.iter().map(|r| r.filing_id.clone()).collect(),
                build,
            })
            .await
            .map_err(store_error)?;
        let mut form = TaxDataForm::decode(bytes.as_slice())
            .map_err(|_| Status::internal("a stored form is unreadable"))?;
        // The ledger records the body's digest: the evidence is of the
        // body's bytes, which encode again as stored (prost, same fields).
        let body = form.body.clone().unwrap_or_default().encode_to_vec();
        if Sha256Hex::of(&body).as_str() != form.body_sha256 {
            return Err(Status::internal(
                "a stored form's body does not match its digest",
            ));
        }
        let revision = form.body.as_ref().map_or(0, |b| b.revision);
        let subject = ledger::form_subject(&quarter, &revision);
        form.evidence =
            Some(super::evidence(&*self.store, ArtifactKind::FormBody, &subject, body).await?);
        tracing::info!(
            identity = %caller.identity,
            %quarter,
            revision = form.body.as_ref().map_or(0, |b| b.revision),
            rows = reports.len(),
            "form 402 pulled"
        );
        Ok(Response::new(form))
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
