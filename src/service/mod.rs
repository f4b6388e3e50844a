//! The gRPC services. Each file implements one service of
//! `proto/kz/digitalmining/v1/`, translating between proto and domain types;
//! `access` decides who may call what before any handler runs.

pub mod access;
pub mod baseline;
pub mod compliance;
pub mod energy;
pub mod filing;
pub mod finance;
pub mod mapping;
pub mod methods;
pub mod validate;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Status};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use crate::{proto::v1 as pb, store::StoreError, tls::Peer};

/// A server stream as the generated traits want it.
pub type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The authenticated caller of a request. The access layer puts it there for
/// every call to a domain service, so its absence is an internal fault.
pub fn peer<T>(request: &Request<T>) -> Result<Peer, Status> {
    request
        .extensions()
        .get::<Peer>()
        .cloned()
        .ok_or_else(|| Status::internal("call reached a service without an authenticated peer"))
}

/// INVALID_ARGUMENT with one `google.rpc.BadRequest` field violation per problem.
pub fn invalid(violations: &validate::Violations) -> Status {
    let mut details = ErrorDetails::new();
    for (field, description) in &violations.0 {
        details.add_bad_request_violation(field.clone(), description.clone());
    }
    let summary = match violations.0.as_slice() {
        [(field, description)] => format!("{field}: {description}"),
        all => format!(
            "{} problems, the first {}: {}",
            all.len(),
            all[0].0,
            all[0].1
        ),
    };
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// A storage failure as the caller should see it: UNAVAILABLE when the
/// database cannot be reached (retry later), INTERNAL otherwise.
pub fn store_error(error: StoreError) -> Status {
    if error.is_unavailable() {
        tracing::warn!(%error, "database unavailable");
        Status::unavailable("the database is unavailable; retry later")
    } else {
        tracing::error!(%error, "storage failure");
        Status::internal("storage failure; the operators have the details in the log")
    }
}

pub fn timestamp(at: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

pub fn to_pb_date(date: NaiveDate) -> pb::Date {
    pb::Date {
        year: date.year(),
        month: date.month() as i32,
        day: date.day() as i32,
    }
}

/// An obligation as the contracts carry it.
pub fn obligation_pb(row: &crate::domain::obligation::Obligation) -> pb::Obligation {
    pb::Obligation {
        obligation_id: row.obligation_id.clone(),
        kind: mapping::obligation_kind(row.kind) as i32,
        due_date: Some(to_pb_date(row.due_date)),
        status: mapping::obligation_status(row.status) as i32,
        filing_id: row.filing_id.clone().unwrap_or_default(),
        extract_id: row.extract_id.clone().unwrap_or_default(),
        quarter: row.quarter.map(|quarter| pb::Quarter {
            year: quarter.year(),
            quarter: quarter.quarter() as i32,
        }),
        fulfilled_at: row.fulfilled_at.map(timestamp),
        created_at: Some(timestamp(row.created_at)),
    }
}

/// `page_size` (default 100, at most 1000) and a `page_token` that is the
/// sequence number the previous page ended at.
pub fn paging(page_size: u32, page_token: &str, v: &mut validate::Violations) -> (u32, i64) {
    let limit = match page_size {
        0 => 100,
        n if n <= 1000 => n,
        n => {
            v.add("page_size", format!("at most 1000, got {n}"));
            0
        }
    };
    let after_seq = if page_token.is_empty() {
        0
    } else {
        page_token.parse().unwrap_or_else(|_| {
            v.add("page_token", "not a token from a previous response");
            0
        })
    };
    (limit, after_seq)
}

/// A filter given as a proto enum: `None` for `*_UNSPECIFIED` (no
/// filter), else the domain value `map` gives; a number the contract does
/// not define is a violation of `field`.
pub fn enum_filter<P: TryFrom<i32>, D>(
    field: &str,
    value: i32,
    map: fn(P) -> Option<D>,
    v: &mut validate::Violations,
) -> Option<D> {
    mapping::from_wire(value, map).unwrap_or_else(|_| {
        v.add(field, format!("{value} is not a value of this enum"));
        None
    })
}

/// Trims rows fetched with `limit + 1` to `limit`; the next page's token is
/// the last kept row's sequence number, or empty on the last page.
pub fn next_page<T>(rows: &mut Vec<T>, limit: u32, seq: impl Fn(&T) -> i64) -> String {
    if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last()
            .map(|row| seq(row).to_string())
            .unwrap_or_default()
    } else {
        String::new()
    }
}

/// Most bytes of entries one page of a list answers with: half the
/// smallest message the gateway may be configured for.
pub const PAGE_BYTES: usize = crate::config::MIN_MESSAGE_BYTES / 2;

/// Cuts a page (`entries`, with their sequence numbers `seqs`) where one
/// more entry would pass [`PAGE_BYTES`], whatever `page_size` allowed; the
/// page token then names the last entry kept. One entry always fits.
pub fn fit_page<T: prost::Message>(entries: &mut Vec<T>, seqs: &[i64], token: &mut String) {
    let mut size = 0;
    let fits = entries
        .iter()
        .take_while(|entry| {
            // Each entry's tag and length prefix: at most 4 more bytes.
            size += entry.encoded_len() + 4;
            size <= PAGE_BYTES
        })
        .count()
        .max(1);
    if fits < entries.len() {
        entries.truncate(fits);
        *token = seqs[fits - 1].to_string();
    }
}

/// The evidence that `artifact` (its bytes as stored, as the ledger's
/// digest covers them) is in the ledger: the entry of `kind` about
/// `subject`, its inclusion proof and the latest signed checkpoint.
pub async fn evidence(
    store: &dyn crate::store::Store,
    kind: crate::evidence::verify::ArtifactKind,
    subject: &str,
    artifact: Vec<u8>,
) -> Result<pb::Evidence, Status> {
    let digest = crate::domain::Sha256Hex::of(&artifact);
    let found = store
        .evidence(kind.entry_kind(), subject, &digest)
        .await
        .map_err(store_error)?
        .ok_or_else(|| {
            Status::internal(format!(
                "the ledger has no {} entry about {subject} under a checkpoint",
                kind.entry_kind()
            ))
        })?;
    Ok(to_pb_evidence(found, artifact))
}

/// The evidence of an artifact a store job made or found: proven by the
/// writer if it made it, else read.
pub async fn recorded_evidence(
    store: &dyn crate::store::Store,
    kind: crate::evidence::verify::ArtifactKind,
    subject: &str,
    recorded: crate::store::Recorded,
) -> Result<pb::Evidence, Status> {
    match recorded.evidence {
        Some(found) => Ok(to_pb_evidence(*found, recorded.bytes)),
        None => evidence(store, kind, subject, recorded.bytes).await,
    }
}

/// The evidence of `artifact` as the contract carries it.
pub fn to_pb_evidence(found: crate::store::LeafEvidence, artifact: Vec<u8>) -> pb::Evidence {
    pb::Evidence {
        artifact,
        entry: found.entry.into_bytes(),
        leaf_index: found.leaf_index,
        inclusion_proof: found.inclusion_proof.iter().map(|h| h.to_vec()).collect(),
        checkpoint: found.checkpoint.note,
    }
}
