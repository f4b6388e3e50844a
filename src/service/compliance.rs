//! ComplianceService: obligations and their deadlines, findings (including
//! missing quarterly reports, computed for today), delivery status, the
//! gateway's signing keys and the ledger.

use super::mapping;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    access::{EntryDisclosure, entry_disclosure},
    enum_filter, invalid, next_page, obligation_pb, paging, peer, store_error, timestamp,
    validate::Violations,
};
use crate::{
    domain::{
        deadlines,
        ledger::LedgerEntry,
        quantities::Quarter,
        register::{FindingKind, missing_quarterly_reports},
    },
    evidence::merkle,
    proto::v1::{
        self as pb, DeliveryAcknowledgement, DeliveryAttempt, DeliveryStatus, FormRevisionRef,
        GetDeliveryStatusRequest, GetSigningKeysRequest, LedgerVerification, ListFindingsRequest,
        ListFindingsResponse, ListObligationsRequest, ListObligationsResponse, SigningKeys,
        VerifyLedgerRequest, compliance_service_server::ComplianceService,
    },
    signing::KeyRecord,
    store::{self, Clock, FindingQuery, ObligationQuery, RegisterQuery, Store},
    tls::Peer,
};

pub struct Compliance {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// The identities of the `energy` role, for GetPendingExtracts.
    subscribers: Arc<Vec<String>>,
}

impl Compliance {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        subscribers: Arc<Vec<String>>,
    ) -> Self {
        Compliance {
            store,
            clock,
            subscribers,
        }
    }

    /// The latest checkpoint's size: proofs are for trees up to it.
    async fn latest_size(&self) -> Result<u64, Status> {
        Ok(self
            .store
            .latest_checkpoint()
            .await
            .map_err(store_error)?
            .map_or(0, |c| c.size))
    }

    /// Whether `caller` may read `entry` ([`entry_disclosure`]).
    async fn may_read(&self, caller: &Peer, entry: &LedgerEntry) -> Result<bool, Status> {
        match entry_disclosure(caller, &entry.kind, &entry.subject, &entry.payload) {
            EntryDisclosure::Entry => Ok(true),
            EntryDisclosure::LeafHashOnly => Ok(false),
            EntryDisclosure::EntryIfExtractSentToCaller(extract_id) => self
                .store
                .extract_sent_to(&extract_id, &caller.identity)
                .await
                .map_err(store_error),
        }
    }

    /// MISSING_QUARTERLY_REPORT findings as of today, in register order,
    /// from `from` on, at most `room`; and where the next page starts, if
    /// any is left. The register is read a page at a time from `from`, and
    /// the reported quarters only of each page's filers.
    async fn missing_reports(
        &self,
        bin_or_iin: Option<&str>,
        mut from: MissingFrom,
        room: usize,
    ) -> Result<(Vec<pb::Finding>, Option<MissingFrom>), Status> {
        let now = self.clock.now();
        let mut findings = Vec::new();
        loop {
            let page = self
                .store
                .register(&RegisterQuery {
                    after_seq: from.after_seq,
                    limit: 200,
                    bin_or_iin: bin_or_iin.map(str::to_owned),
                    ..Default::default()
                })
                .await
                .map_err(store_error)?;
            if page.is_empty() {
                return Ok((findings, None));
            }
            let bins: Vec<String> = page.iter().map(|e| e.bin_or_iin.clone()).collect();
            let reported = self
                .store
                .reported_quarters(&bins)
                .await
                .map_err(store_error)?;
            for entry in &page {
                let all = missing_for(entry, &reported, now);
                let rest = all.get(from.skip..).unwrap_or_default();
                // Full already, and this entry has more: the next page starts here.
                if findings.len() == room && !rest.is_empty() {
                    return Ok((findings, Some(from)));
                }
                let fit = rest.len().min(room - findings.len());
                findings.extend_from_slice(&rest[..fit]);
                if fit < rest.len() {
                    from.skip += fit;
                    return Ok((findings, Some(from)));
                }
                from = MissingFrom {
                    after_seq: entry.seq,
                    skip: 0,
                };
            }
        }
    }
}

/// Where a page of MISSING_QUARTERLY_REPORT findings starts: after the
/// register entry `after_seq`, past the first `skip` findings of the next
/// entry that has any. Its token is `m<after_seq>.<skip>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct MissingFrom {
    after_seq: i64,
    skip: usize,
}

impl MissingFrom {
    fn token(self) -> String {
        format!("m{}.{}", self.after_seq, self.skip)
    }

    fn parse(token: &str) -> Option<MissingFrom> {
        let (after_seq, skip) = token.split_once('.')?;
        Some(MissingFrom {
            after_seq: after_seq.parse().ok()?,
            skip: skip.parse().ok()?,
        })
    }
}

/// The MISSING_QUARTERLY_REPORT findings of one register entry as of `now`.
fn missing_for(
    entry: &crate::store::RegisterRow,
    reported: &[(String, i32, u32)],
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<pb::Finding> {
    let quarters: Vec<Quarter> = reported
        .iter()
        .filter(|(b, ..)| *b == entry.bin_or_iin)
        .filter_map(|(_, y, q)| Quarter::new(*y, *q).ok())
        .collect();
    let today = deadlines::local_date(now);
    missing_quarterly_reports(entry.status, entry.planned_start_date, &quarters, today)
        .into_iter()
        .map(|(quarter, due, days)| pb::Finding {
            finding_id: format!(
                "missing-{}-{}Q{}",
                entry.bin_or_iin,
                quarter.year(),
                quarter.quarter()
            ),
            kind: pb::FindingKind::MissingQuarterlyReport as i32,
            bin_or_iin: entry.bin_or_iin.clone(),
            filing_id: String::new(),
            days,
            quarter: Some(pb::Quarter {
                year: quarter.year(),
                quarter: quarter.quarter() as i32,
            }),
            detail: format!("no quarterly report for {quarter}, due {due}: {days} days overdue"),
            detected_at: Some(timestamp(now)),
        })
        .collect()
}

/// Most sendings GetDeliveryStatus lists (about 40 bytes each).
const MAX_ATTEMPTS_LISTED: usize = 1000;

#[tonic::async_trait]
impl ComplianceService for Compliance {
    async fn list_obligations(
        &self,
        request: Request<ListObligationsRequest>,
    ) -> Result<Response<ListObligationsResponse>, Status> {
        peer(&request)?;
        let query = request.into_inner();
        let mut v = Violations::default();
        let (limit, after_seq) = paging(query.page_size, &query.page_token, &mut v);
        let kind = enum_filter("kind", query.kind, mapping::obligation_kind_from, &mut v);
        let status = enum_filter(
            "status",
            query.status,
            mapping::obligation_status_from,
            &mut v,
        );
        let due_before = match &query.due_before {
            None => None,
            Some(d) => match u32::try_from(d.month)
                .ok()
                .zip(u32::try_from(d.day).ok())
                .and_then(|(m, day)| chrono::NaiveDate::from_ymd_opt(d.year, m, day))
            {
                Some(date) => Some(date),
                None => {
                    v.add(
                        "due_before",
                        format!(
                            "{:04}-{:02}-{:02} is not a calendar date",
                            d.year, d.month, d.day
                        ),
                    );
                    None
                }
            },
        };
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        let mut rows = self
            .store
            .obligations(&ObligationQuery {
                kind,
                status,
                due_before,
                after_seq,
                limit: limit + 1,
            })
            .await
            .map_err(store_error)?;
        let next_page_token = next_page(&mut rows, limit, |r| r.seq);
        Ok(Response::new(ListObligationsResponse {
            obligations: rows.iter().map(obligation_pb).collect(),
            next_page_token,
        }))
    }

    async fn list_findings(
        &self,
        request: Request<ListFindingsRequest>,
    ) -> Result<Response<ListFindingsResponse>, Status> {
        peer(&request)?;
        let query = request.into_inner();
        let mut v = Violations::default();
        // Findings page with their own tokens (below); only the size is shared.
        let (limit, _) = paging(query.page_size, "", &mut v);
        let limit = limit as usize;
        let kind = enum_filter("kind", query.kind, mapping::finding_kind_from, &mut v);
        // Tokens: "s<seq>" while paging stored findings, "m…" in the computed ones.
        let (mut after_seq, mut missing_from) = (0i64, None);
        if let Some(rest) = query.page_token.strip_prefix('s') {
            after_seq = rest.parse().unwrap_or_else(|_| {
                v.add("page_token", "not a token from a previous response");
                0
            });
        } else if let Some(rest) = query.page_token.strip_prefix('m') {
            missing_from = MissingFrom::parse(rest);
            if missing_from.is_none() {
                v.add("page_token", "not a token from a previous response");
            }
        } else if !query.page_token.is_empty() {
            v.add("page_token", "not a token from a previous response");
        }
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        let bin = (!query.bin_or_iin.is_empty()).then_some(query.bin_or_iin.as_str());
        let mut findings = Vec::new();
        let mut next_page_token = String::new();
        if missing_from.is_none() && kind != Some(FindingKind::MissingQuarterlyReport) {
            let rows = self
                .store
                .findings(&FindingQuery {
                    kind,
                    bin_or_iin: bin.map(str::to_owned),
                    after_seq,
                    limit: limit as u32 + 1,
                })
                .await
                .map_err(store_error)?;
            for row in rows.iter().take(limit) {
                findings.push(pb::Finding {
                    finding_id: row.finding_id.clone(),
                    kind: mapping::finding_kind(row.kind) as i32,
                    bin_or_iin: row.bin_or_iin.clone(),
                    filing_id: row.filing_id.clone(),
                    days: row.days,
                    quarter: row.quarter.map(|(year, quarter)| pb::Quarter {
                        year,
                        quarter: quarter as i32,
                    }),
                    detail: row.detail.clone(),
                    detected_at: Some(timestamp(row.detected_at)),
                });
            }
            if rows.len() > limit {
                next_page_token = format!("s{}", rows[limit - 1].seq);
            } else if kind.is_none() {
                missing_from = Some(MissingFrom::default());
            }
        }
        if kind == Some(FindingKind::MissingQuarterlyReport) && missing_from.is_none() {
            missing_from = Some(MissingFrom::default());
        }
        if let Some(from) = missing_from
            && next_page_token.is_empty()
        {
            let room = limit - findings.len();
            let (missing, next) = self.missing_reports(bin, from, room).await?;
            findings.extend(missing);
            next_page_token = next.map(MissingFrom::token).unwrap_or_default();
        }
        Ok(Response::new(ListFindingsResponse {
            findings,
            next_page_token,
        }))
    }

    async fn get_delivery_status(
        &self,
        request: Request<GetDeliveryStatusRequest>,
    ) -> Result<Response<DeliveryStatus>, Status> {
        peer(&request)?;
        let filing_id = request.into_inner().filing_id;
        let record = self
            .store
            .delivery(&filing_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::not_found(format!("no filing {filing_id:?}")))?;
        // The latest sendings only, so the answer fits in a message however
        // often a subscriber reconnected.
        let not_listed = record.attempts.len().saturating_sub(MAX_ATTEMPTS_LISTED);
        Ok(Response::new(DeliveryStatus {
            filing_id,
            extract_id: record.extract_id.unwrap_or_default(),
            earlier_attempts_not_listed: not_listed as u32,
            attempts: record
                .attempts
                .into_iter()
                .skip(not_listed)
                .map(|(subscriber, attempt, sent_at)| DeliveryAttempt {
                    subscriber,
                    attempt,
                    sent_at: Some(timestamp(sent_at)),
                })
                .collect(),
            acknowledgements: record
                .acknowledgements
                .into_iter()
                .map(|(subscriber, at)| DeliveryAcknowledgement {
                    subscriber,
                    acknowledged_at: Some(timestamp(at)),
                })
                .collect(),
            form_revisions: record
                .form_revisions
                .into_iter()
                .map(|f| FormRevisionRef {
                    quarter: Some(pb::Quarter {
                        year: f.year,
                        quarter: f.quarter as i32,
                    }),
                    revision: f.revision,
                    body_sha256: f.body_sha256,
                    acknowledged_at: f.acknowledged_at.map(timestamp),
                })
                .collect(),
            obligations: record.obligations.iter().map(obligation_pb).collect(),
        }))
    }

    async fn get_signing_keys(
        &self,
        request: Request<GetSigningKeysRequest>,
    ) -> Result<Response<SigningKeys>, Status> {
        peer(&request)?;
        let keys = self.store.signing_keys().await.map_err(store_error)?;
        Ok(Response::new(SigningKeys {
            keys: keys.iter().map(published).collect(),
        }))
    }

    async fn get_pending_extracts(
        &self,
        request: Request<pb::GetPendingExtractsRequest>,
    ) -> Result<Response<pb::PendingExtracts>, Status> {
        peer(&request)?;
        let gauges = self
            .store
            .gauges(&self.subscribers)
            .await
            .map_err(store_error)?;
        let subscribers = gauges
            .pending_extracts
            .into_iter()
            .map(|(subscriber, extracts)| pb::SubscriberPending {
                subscriber,
                extracts: extracts.max(0) as u64,
            })
            .collect();
        Ok(Response::new(pb::PendingExtracts { subscribers }))
    }

    async fn get_checkpoint(
        &self,
        request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::SignedCheckpoint>, Status> {
        peer(&request)?;
        let latest = self
            .store
            .latest_checkpoint()
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::unavailable("the ledger has no checkpoint yet"))?;
        Ok(Response::new(pb::SignedCheckpoint {
            size: latest.size,
            note: latest.note,
        }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::InclusionProof>, Status> {
        let caller = peer(&request)?;
        let wanted = request.into_inner();
        let latest = self.latest_size().await?;
        let mut v = Violations::default();
        if wanted.tree_size == 0 || wanted.tree_size > latest {
            v.add(
                "tree_size",
                format!("must be a tree size from 1 to the latest checkpoint's, {latest}"),
            );
        } else if wanted.leaf_index >= wanted.tree_size {
            v.add(
                "leaf_index",
                format!("must be below tree_size {}", wanted.tree_size),
            );
        }
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        let hashes = store::inclusion_proof(&*self.store, wanted.leaf_index, wanted.tree_size)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::internal("no proof for a leaf of the tree"))?;
        let seq = wanted.leaf_index as i64 + 1;
        let entry = self
            .store
            .ledger_page(seq - 1, 1)
            .await
            .map_err(store_error)?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| Status::internal(format!("ledger entry {seq} is missing")))?;
        let data = entry.leaf().1.into_bytes();
        let shown = self.may_read(&caller, &entry).await?;
        Ok(Response::new(pb::InclusionProof {
            leaf_index: wanted.leaf_index,
            tree_size: wanted.tree_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
            leaf_hash: merkle::leaf_hash(&data).to_vec(),
            entry: if shown { data } else { Vec::new() },
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::ConsistencyProof>, Status> {
        peer(&request)?;
        let wanted = request.into_inner();
        let latest = self.latest_size().await?;
        let mut v = Violations::default();
        if wanted.new_size > latest {
            v.add(
                "new_size",
                format!("must not exceed the latest checkpoint's size, {latest}"),
            );
        }
        if wanted.old_size > wanted.new_size {
            v.add(
                "old_size",
                format!("must not exceed new_size {}", wanted.new_size),
            );
        }
        if !v.is_empty() {
            return Err(invalid(&v));
        }
        let hashes = store::consistency_proof(&*self.store, wanted.old_size, wanted.new_size)
            .await
            .map_err(store_error)?
            .ok_or_else(|| Status::internal("no proof between two sizes in order"))?;
        Ok(Response::new(pb::ConsistencyProof {
            old_size: wanted.old_size,
            new_size: wanted.new_size,
            hashes: hashes.iter().map(|h| h.to_vec()).collect(),
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
            checkpoints_checked: report.checkpoints_checked,
        }))
    }
}

/// A key of the history as `GetSigningKeys` publishes it.
pub fn published(key: &KeyRecord) -> pb::SigningKey {
    pb::SigningKey {
        key_id: key.key_id.clone(),
        algorithm: pb::SignatureAlgorithm::Ed25519 as i32,
        public_key: key.public_key.clone(),
        created_at: Some(timestamp(key.created_at)),
        retired_at: key.retired_at.map(timestamp),
        note_verifier_key: key.verifier_key(),
    }
}

/// Marks obligations past their due date OVERDUE, once each, with a warning.
pub async fn scan_overdue(store: &dyn Store, clock: &dyn Clock) {
    let today = deadlines::local_date(clock.now());
    match store.mark_overdue(today).await {
        Ok(marked) => {
            for obligation in marked {
                tracing::warn!(
                    obligation_id = %obligation.obligation_id,
                    kind = obligation.kind.as_str(),
                    due_date = %obligation.due_date,
                    filing_id = obligation.filing_id.as_deref().unwrap_or("-"),
                    "obligation overdue"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not scan for overdue obligations"),
    }
}
