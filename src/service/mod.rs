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
pub mod upload_budget;
pub mod validate;

use std::{borrow::Cow, pin::Pin};

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

/// Field violations an INVALID_ARGUMENT answer lists; one more entry
/// counts the rest. The details travel base64-encoded in one header,
/// `grpc-status-details-bin`, and the smallest limit among common clients
/// is grpc-java's 8 KiB for all of an answer's headers (grpc-core's is 8 KiB
/// soft, 16 KiB hard; over it the answer becomes "Stream removed" and every
/// problem is lost). The details are kept within [`MAX_DETAILS_HEADER_BYTES`],
/// half of that, which leaves room for `grpc-message` (the summary again,
/// at most 3 times its bytes percent-encoded) and the rest. With every
/// field path and reason at its longest ([`MAX_FIELD_BYTES`],
/// [`MAX_REASON_BYTES`]) a listed violation takes 272 bytes encoded and
/// everything else (summary, count entry, wrappers) 415: 9 take 2,863
/// bytes (3,818 in base64) of the 3,072 that 4 KiB of base64 carries, and
/// a 10th would not fit (`tests::the_worst_details_fit_and_one_more_would_not`).
pub const MAX_LISTED_VIOLATIONS: usize = 9;

/// Most bytes of `grpc-status-details-bin`, base64 as it is sent.
pub const MAX_DETAILS_HEADER_BYTES: usize = 4096;

/// Longest field path an answer repeats, in bytes (the longest the
/// contracts make, `data_centres[199].consumption_wh`, has 32).
pub const MAX_FIELD_BYTES: usize = 64;

/// Longest reason an answer repeats, in bytes: a reason quoting the
/// caller's text can be longer than any the rules need (the longest, a
/// late notice's, is about 130); it is cut, ending with "…".
pub const MAX_REASON_BYTES: usize = 200;

/// `text` cut to at most `max` bytes at a character boundary, ending with
/// "…" where it was cut.
fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// A violation as an answer repeats it: field path and reason cut to
/// [`MAX_FIELD_BYTES`] and [`MAX_REASON_BYTES`].
fn shown((field, reason): &(String, String)) -> (Cow<'_, str>, Cow<'_, str>) {
    (cut(field, MAX_FIELD_BYTES), cut(reason, MAX_REASON_BYTES))
}

/// INVALID_ARGUMENT with a `google.rpc.BadRequest` field violation per
/// problem, the first [`MAX_LISTED_VIOLATIONS`] of them, and one entry
/// (field "", the whole request) counting the others.
pub fn invalid(violations: &validate::Violations) -> Status {
    let all = &violations.0;
    let mut details = ErrorDetails::new();
    for (field, reason) in all.iter().take(MAX_LISTED_VIOLATIONS).map(shown) {
        details.add_bad_request_violation(field, reason);
    }
    if all.len() > MAX_LISTED_VIOLATIONS {
        details.add_bad_request_violation(
            "",
            format!(
                "and {} more problems, not listed: only the first {MAX_LISTED_VIOLATIONS} of {} are",
                all.len() - MAX_LISTED_VIOLATIONS,
                all.len()
            ),
        );
    }
    let summary = match all.first().map(shown) {
        Some((field, reason)) if all.len() == 1 => format!("{field}: {reason}"),
        Some((field, reason)) => {
            format!("{} problems, the first {field}: {reason}", all.len())
        }
        None => "the request is invalid".to_owned(),
    };
    Status::with_error_details(Code::InvalidArgument, summary, details)
}

/// RESOURCE_EXHAUSTED with `message` and a RetryInfo of `retry_after`: a
/// limit the caller met, and when to try again.
pub fn resource_exhausted(message: String, retry_after: std::time::Duration) -> Status {
    Status::with_error_details(
        Code::ResourceExhausted,
        message,
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
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

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    /// `grpc-status-details-bin` as tonic sends it: base64 without padding.
    fn details_header(status: &Status) -> usize {
        base64::engine::general_purpose::STANDARD_NO_PAD
            .encode(status.details())
            .len()
    }

    /// `count` violations, each field path and reason longer than an answer
    /// repeats (10,000: more than any request's lists can give).
    fn longest(count: usize) -> validate::Violations {
        validate::Violations(
            (0..count)
                .map(|_| ("f".repeat(100), "r".repeat(300)))
                .collect(),
        )
    }

    #[test]
    fn the_worst_details_fit_and_one_more_would_not() {
        let worst = invalid(&longest(10_000));
        let listed = |count| invalid(&longest(count)).details().len();
        // Each listed violation at its longest: its encoding within BadRequest.
        let per_violation = listed(3) - listed(2);
        assert_eq!(per_violation, 272);
        assert_eq!(worst.details().len(), 2_863);
        assert_eq!(details_header(&worst), 3_818);
        assert!(details_header(&worst) <= MAX_DETAILS_HEADER_BYTES);
        // The raw bytes 4 KiB of base64 carries, less those used: under one more.
        assert!(MAX_DETAILS_HEADER_BYTES / 4 * 3 - worst.details().len() < per_violation);
        assert_eq!(bad_request(&worst).len(), MAX_LISTED_VIOLATIONS + 1);
    }

    fn bad_request(status: &Status) -> Vec<(String, String)> {
        status
            .get_details_bad_request()
            .unwrap()
            .field_violations
            .into_iter()
            .map(|v| (v.field, v.description))
            .collect()
    }

    #[test]
    fn long_paths_and_reasons_are_cut_at_a_character_boundary() {
        let mut v = validate::Violations::default();
        v.add("f".repeat(100), "ж".repeat(150));
        let status = invalid(&v);
        let (field, reason) = bad_request(&status).remove(0);
        assert_eq!(field, format!("{}…", "f".repeat(61)));
        // 98 two-byte characters and the ellipsis: 199 bytes.
        assert_eq!(reason, format!("{}…", "ж".repeat(98)));
        assert_eq!(status.message(), format!("{field}: {reason}"));
        assert_eq!(cut("short", 5), "short");
    }

    #[test]
    fn the_rest_are_counted_in_one_entry_for_the_whole_request() {
        let mut v = validate::Violations::default();
        for i in 0..12 {
            v.add(format!("ip_pool[{i}]"), "private");
        }
        let status = invalid(&v);
        assert_eq!(
            status.message(),
            "12 problems, the first ip_pool[0]: private"
        );
        let listed = bad_request(&status);
        assert_eq!(listed.len(), 10);
        assert_eq!(listed[8], ("ip_pool[8]".to_owned(), "private".to_owned()));
        assert_eq!(
            listed[9],
            (
                String::new(),
                "and 3 more problems, not listed: only the first 9 of 12 are".to_owned()
            )
        );
    }
}
