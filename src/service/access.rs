//! Who may call what (docs/architecture.md §1): a tower layer in front of every service.
//! It maps the connection's certificate identity to a role through the
//! configuration, checks the role against the table below (default deny),
//! and hands the handler a typed `Peer`. Health and reflection are open to
//! any caller with a valid certificate. A path the gateway does not serve is
//! UNIMPLEMENTED here, and every metric names such a call `unknown`: the
//! path is the client's to choose (see `methods`). It also refuses every
//! call on a connection that came past a connection cap, counts each
//! connection's calls in progress (for its idle timeout), and gives each
//! document upload its part of the uploads' memory budget
//! (`upload_budget`) or refuses it.

use std::{
    borrow::Cow,
    collections::{BTreeMap, HashMap},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status, body::Body};
use tower::{Layer, Service};
use tracing::Instrument;

use super::{
    methods::KnownMethods,
    upload_budget::{BudgetedBody, UploadBudget},
};
use crate::{
    domain::ledger::LedgerEvent,
    metrics::Metrics,
    tls::{
        Peer, PeerInfo, Role,
        connections::{CallInProgress, REFUSAL_SENDING},
    },
};

/// Services any holder of a valid certificate may call.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// (service, method or every method, roles allowed). The first match decides.
const ACCESS_TABLE: &[(&str, Option<&str>, &[Role])] = &[
    (
        "kz.digitalmining.v1.FilingService",
        None,
        &[Role::Authority],
    ),
    (
        "kz.digitalmining.v1.EnergyExtractService",
        None,
        &[Role::Energy],
    ),
    ("kz.digitalmining.v1.FinanceService", None, &[Role::Finance]),
    // The ministries verify evidence themselves: every role may read the
    // public signing keys, checkpoints and proofs (hashes; the entries
    // behind them only as `entry_disclosure` allows).
    (
        "kz.digitalmining.v1.ComplianceService",
        Some("GetSigningKeys"),
        &[Role::Authority, Role::Energy, Role::Finance, Role::Operator],
    ),
    (
        "kz.digitalmining.v1.ComplianceService",
        Some("GetCheckpoint"),
        &[Role::Authority, Role::Energy, Role::Finance, Role::Operator],
    ),
    (
        "kz.digitalmining.v1.ComplianceService",
        Some("GetInclusionProof"),
        &[Role::Authority, Role::Energy, Role::Finance, Role::Operator],
    ),
    (
        "kz.digitalmining.v1.ComplianceService",
        Some("GetConsistencyProof"),
        &[Role::Authority, Role::Energy, Role::Finance, Role::Operator],
    ),
    (
        "kz.digitalmining.v1.ComplianceService",
        None,
        &[Role::Authority, Role::Operator],
    ),
];

/// Identity → role, from the configuration.
pub type RoleMap = BTreeMap<String, Role>;

/// Decides a call to `path` (`/package.Service/Method`) from a connection
/// whose certificate carries `identity`. `Ok(Some(peer))`: allowed, with a
/// known peer; `Ok(None)`: an open service called by an unmapped identity.
pub fn authorize(
    path: &str,
    identity: Option<&str>,
    roles: &RoleMap,
) -> Result<Option<Peer>, Status> {
    let (service, method) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .unwrap_or((path, ""));
    let peer = identity.and_then(|identity| {
        roles.get(identity).map(|role| Peer {
            identity: identity.to_owned(),
            role: *role,
        })
    });
    if OPEN_SERVICES.contains(&service) {
        return Ok(peer);
    }
    let peer = match (identity, peer) {
        (_, Some(peer)) => peer,
        (None, None) => {
            return Err(Status::unauthenticated(
                "the client certificate names no identity (no URI SAN and no subject CN)",
            ));
        }
        (Some(identity), None) => {
            return Err(Status::unauthenticated(format!(
                "identity {identity:?} is not known to this gateway"
            )));
        }
    };
    let allowed = ACCESS_TABLE
        .iter()
        .find(|(s, m, _)| *s == service && m.is_none_or(|m| m == method))
        .is_some_and(|(_, _, roles)| roles.contains(&peer.role));
    if allowed {
        Ok(Some(peer))
    } else {
        Err(Status::permission_denied(format!(
            "role {} ({}) may not call {service}/{method}",
            peer.role, peer.identity
        )))
    }
}

/// How much of a ledger entry a caller of GetInclusionProof is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryDisclosure {
    /// The entry's bytes.
    Entry,
    /// The entry's bytes if the extract it records was sent to the caller
    /// (the store knows; the entry does not say).
    EntryIfExtractSentToCaller(String),
    /// Only the leaf hash, which is all an inclusion or consistency check needs.
    LeafHashOnly,
}

/// What `peer` may read of the entry `kind`/`subject`/`payload`. The
/// ministries see only the records of what was delivered to them: every
/// FILING_ACCEPTED entry names its filer's BIN or IIN (an individual's IIN
/// gives birth date and sex), which §6 and §6-1 give them only inside the
/// extracts and forms they receive, and one energy system's deliveries are
/// not another's business. The authority and the operators keep the whole
/// ledger (they verify it).
pub fn entry_disclosure(peer: &Peer, kind: &str, subject: &str, payload: &str) -> EntryDisclosure {
    let names_caller = || {
        serde_json::from_str::<serde_json::Value>(payload)
            .ok()
            .and_then(|p| p.get("subscriber")?.as_str().map(|s| s == peer.identity))
            .unwrap_or(false)
    };
    match (peer.role, kind) {
        (Role::Authority | Role::Operator, _) => EntryDisclosure::Entry,
        (Role::Energy, LedgerEvent::EXTRACT_CREATED) => {
            EntryDisclosure::EntryIfExtractSentToCaller(subject.to_owned())
        }
        (Role::Energy, LedgerEvent::EXTRACT_SENT | LedgerEvent::EXTRACT_ACKNOWLEDGED)
            if names_caller() =>
        {
            EntryDisclosure::Entry
        }
        // Form 402 goes to the finance ministry as a body: its
        // acknowledgements and (earlier releases') pulls name no identity.
        (
            Role::Finance,
            LedgerEvent::FORM_REVISION_PUBLISHED
            | LedgerEvent::FORM_ACKNOWLEDGED
            | LedgerEvent::FORM_PULLED,
        ) => EntryDisclosure::Entry,
        (Role::Energy | Role::Finance, _) => EntryDisclosure::LeafHashOnly,
    }
}

/// Calls in progress per certificate identity, over all its connections.
#[derive(Clone)]
struct PeerLimits {
    limit: u32,
    in_use: Arc<Mutex<HashMap<Arc<str>, Arc<Semaphore>>>>,
}

impl PeerLimits {
    /// A permit for one more call from `identity`, or `None` if it has
    /// `limit` calls in progress already.
    fn try_acquire(&self, identity: &Arc<str>) -> Option<OwnedSemaphorePermit> {
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        // Identities with nothing in progress are forgotten, so the map stays
        // as small as the set of busy peers.
        if in_use.len() > 1024 {
            let limit = self.limit as usize;
            in_use.retain(|_, s| s.available_permits() < limit);
        }
        let semaphore = in_use
            .entry(identity.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit as usize)))
            .clone();
        semaphore.try_acquire_owned().ok()
    }
}

/// How long a call may take. A document upload is a client stream as long
/// as the document: `upload` bounds it in all, and its handler ends one
/// whose next message takes longer than `call`. Every other call must be
/// answered within `call`. (A client's own `grpc-timeout` applies as well.)
#[derive(Debug, Clone, Copy)]
pub struct CallTimeouts {
    pub call: Duration,
    pub upload: Duration,
}

/// The one call whose length follows the client's data: UploadDocument.
const UPLOAD: &str = "/kz.digitalmining.v1.FilingService/UploadDocument";

/// How long a peer refused for too many calls is told to wait.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The tower layer that applies [`authorize`] to every call, limits each
/// peer's calls in progress, times each call for the metrics, and runs it in
/// a `call` span carrying the method, the peer's identity and (once known)
/// the filing id, so every log line of a call says whose it is.
#[derive(Clone)]
pub struct AccessLayer {
    roles: Arc<RoleMap>,
    limits: PeerLimits,
    timeouts: CallTimeouts,
    uploads: UploadBudget,
    metrics: Metrics,
    methods: Arc<KnownMethods>,
}

impl AccessLayer {
    pub fn new(
        roles: RoleMap,
        max_calls_per_peer: u32,
        timeouts: CallTimeouts,
        uploads: UploadBudget,
        metrics: Metrics,
    ) -> Self {
        AccessLayer {
            roles: Arc::new(roles),
            limits: PeerLimits {
                limit: max_calls_per_peer,
                in_use: Arc::default(),
            },
            timeouts,
            uploads,
            metrics,
            methods: Arc::new(KnownMethods::served()),
        }
    }
}

/// The longest part of a client's path a log line or an answer repeats.
const SHOWN_PATH_CHARS: usize = 128;

/// A path as logs and answers show it: the client chose it, and HTTP/2
/// lets it run to kilobytes, so only its first [`SHOWN_PATH_CHARS`].
fn shown(path: &str) -> Cow<'_, str> {
    match path.char_indices().nth(SHOWN_PATH_CHARS) {
        None => Cow::Borrowed(path),
        Some((cut, _)) => Cow::Owned(format!("{}…", &path[..cut])),
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    layer: AccessLayer,
}

impl<S> Service<http::Request<Body>> for Access<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        let info = request.extensions().get::<PeerInfo>().cloned();
        let identity = info.as_ref().and_then(|info| info.identity.clone());
        let path = request.uri().path().to_owned();
        let method = self.layer.methods.label(&path).to_owned();
        let refuse = |status: Status, reason: &str, metrics: &Metrics| {
            tracing::warn!(
                identity = identity.as_deref().unwrap_or("-"),
                method = %shown(&path),
                code = ?status.code(),
                reason = status.message(),
                "call refused"
            );
            metrics.refused(&method, reason);
            let response: Self::Future = Box::pin(std::future::ready(Ok(status.into_http())));
            response
        };
        if let Some(status) = info.as_ref().and_then(connection_refused) {
            return refuse(status, "connection_limit", &self.layer.metrics);
        }
        let peer = match authorize(&path, identity.as_deref(), &self.layer.roles) {
            Ok(peer) => peer,
            Err(status) => {
                let reason = match status.code() {
                    Code::PermissionDenied => "permission_denied",
                    _ => "unauthenticated",
                };
                return refuse(status, reason, &self.layer.metrics);
            }
        };
        // Answered here, before the peer limit, as no handler will run. A
        // gRPC client never adds a query; the router would ignore it and
        // run the method (found from outside).
        if !self.layer.methods.contains(&path) || request.uri().query().is_some() {
            let asked = request
                .uri()
                .path_and_query()
                .map_or(path.as_str(), |p| p.as_str());
            let status =
                Status::unimplemented(format!("this gateway has no method {}", shown(asked)));
            return refuse(status, "unimplemented", &self.layer.metrics);
        }
        let key: Arc<str> = identity.clone().unwrap_or_else(|| Arc::from("-"));
        let Some(permit) = self.layer.limits.try_acquire(&key) else {
            let status = super::resource_exhausted(
                format!(
                    "{key} has {} calls in progress, the most one peer may have; retry in {} s",
                    self.layer.limits.limit,
                    RETRY_AFTER.as_secs()
                ),
                RETRY_AFTER,
            );
            return refuse(status, "peer_limit", &self.layer.metrics);
        };
        // An upload's body carries its part of the budget until it drops.
        if path == UPLOAD {
            match self.layer.uploads.reserve() {
                Ok((part, chunk)) => {
                    request = request.map(|body| Body::new(BudgetedBody::new(body, part)));
                    request.extensions_mut().insert(chunk);
                }
                Err(status) => return refuse(status, "upload_budget", &self.layer.metrics),
            }
        }
        let in_progress = info.map(|info| info.activity.call_started());
        let span = tracing::info_span!(
            "call",
            method = %method,
            peer = %key,
            filing_id = tracing::field::Empty,
        );
        if let Some(peer) = peer {
            request.extensions_mut().insert(peer);
        }
        // The clone is not ready; call the one that poll_ready prepared.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.layer.metrics.clone();
        let limit = if path == UPLOAD {
            self.layer.timeouts.upload
        } else {
            self.layer.timeouts.call
        };
        let call = inner.call(request);
        Box::pin(
            async move {
                // Dropping the call on time-out drops its handler (an
                // upload's chunks go with it).
                let response = match tokio::time::timeout(limit, call).await {
                    Ok(response) => response,
                    Err(_) => Ok(Status::cancelled("Timeout expired").into_http()),
                };
                metrics.observe_latency(&method, started.elapsed());
                // A streamed response keeps the permit until its body ends.
                response.map(|mut response| {
                    codec_refusals_as_grpc_codes(response.headers_mut());
                    if let Some(code) = response
                        .headers()
                        .get("grpc-status")
                        .and_then(|v| v.to_str().ok())
                        .filter(|code| *code != "0")
                    {
                        tracing::info!(
                            code,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            "call failed"
                        );
                    }
                    response.map(|body| {
                        Body::new(HoldPermit {
                            body,
                            _permit: permit,
                            _in_progress: in_progress,
                        })
                    })
                })
            }
            .instrument(span),
        )
    }
}

/// The answer to every call on a connection that came past a connection
/// cap; the connection closes soon after sending it.
fn connection_refused(info: &PeerInfo) -> Option<Status> {
    let refusal = info.refusal.as_ref()?;
    info.activity.close_after(REFUSAL_SENDING);
    Some(super::resource_exhausted(refusal.to_string(), RETRY_AFTER))
}

/// tonic's codec refuses some requests with a code gRPC's status code table
/// gives to another cause; each is corrected where the status is carried:
/// in the headers of a trailers-only answer, else in the trailers.
fn codec_refusals_as_grpc_codes(headers: &mut http::HeaderMap) {
    too_large_is_resource_exhausted(headers);
    malformed_is_invalid_argument(headers);
}

/// tonic refuses a message over `limits.max_message_bytes` with
/// OUT_OF_RANGE; gRPC's status code table gives RESOURCE_EXHAUSTED for a
/// message larger than the limit (OUT_OF_RANGE is for a value past a
/// range the caller can iterate to), so the code is changed, the message
/// kept: in the headers of a trailers-only answer, else in the trailers.
fn too_large_is_resource_exhausted(headers: &mut http::HeaderMap) {
    let out_of_range = headers.get("grpc-status").is_some_and(|v| v == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        // Percent-encoded on the wire (a space is %20).
        .is_some_and(|m| m.replace("%20", " ").contains("message length too large"));
    if out_of_range && too_large {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
}

/// The start of a `prost::DecodeError` as tonic's codec reports it (with
/// INTERNAL), percent-encoded as in `grpc-message`.
const DECODE_ERROR: &str = "failed%20to%20decode%20Protobuf%20message";

/// A request whose bytes are not the method's protobuf message is the
/// caller's mistake: INVALID_ARGUMENT, saying so before prost's reason.
/// (tonic-prost's decoder answers INTERNAL, for health and reflection as
/// for ours; our own code never reports a decode error with that text, its
/// stored rows being "unreadable".) Only the server's answers pass here, so
/// a client's own decoding of a broken answer stays INTERNAL.
fn malformed_is_invalid_argument(headers: &mut http::HeaderMap) {
    let internal = headers.get("grpc-status").is_some_and(|v| v == "13");
    let Some(message) = headers
        .get("grpc-message")
        .filter(|m| m.as_bytes().starts_with(DECODE_ERROR.as_bytes()))
    else {
        return;
    };
    if !internal {
        return;
    }
    let prefix =
        "the%20request%20is%20not%20a%20valid%20protobuf%20message%20for%20this%20method:%20";
    let explained = [prefix.as_bytes(), message.as_bytes()].concat();
    if let Ok(explained) = http::HeaderValue::from_bytes(&explained) {
        headers.insert("grpc-message", explained);
    }
    headers.insert(
        "grpc-status",
        http::HeaderValue::from(Code::InvalidArgument as i32),
    );
}

/// A response body that holds its call's permit, and its place among its
/// connection's calls in progress, until it is dropped.
struct HoldPermit {
    body: Body,
    _permit: OwnedSemaphorePermit,
    _in_progress: Option<CallInProgress>,
}

impl http_body::Body for HoldPermit {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Status>>> {
        Pin::new(&mut self.get_mut().body)
            .poll_frame(cx)
            .map_ok(|mut frame| {
                if let Some(trailers) = frame.trailers_mut() {
                    codec_refusals_as_grpc_codes(trailers);
                }
                frame
            })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles() -> RoleMap {
        Role::ALL.iter().map(|r| (r.dev_identity(), *r)).collect()
    }

    fn decide(path: &str, identity: Option<&str>) -> Result<Option<Role>, (Code, String)> {
        authorize(path, identity, &roles())
            .map(|peer| peer.map(|p| p.role))
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn the_table_of_who_may_call_what() {
        let filing = "/kz.digitalmining.v1.FilingService/SubmitStartNotification";
        let energy = "/kz.digitalmining.v1.EnergyExtractService/Subscribe";
        let finance = "/kz.digitalmining.v1.FinanceService/PullQuarterlyForm";
        let compliance = "/kz.digitalmining.v1.ComplianceService/ListObligations";
        let keys = "/kz.digitalmining.v1.ComplianceService/GetSigningKeys";
        let expected: &[(&str, [bool; 4])] = &[
            // authority, energy, finance, operator
            (filing, [true, false, false, false]),
            (energy, [false, true, false, false]),
            (finance, [false, false, true, false]),
            (compliance, [true, false, false, true]),
            (keys, [true, true, true, true]),
            ("/grpc.health.v1.Health/Check", [true, true, true, true]),
            (
                "/kz.digitalmining.v1.Unknown/Call",
                [false, false, false, false],
            ),
        ];
        for (path, allowed) in expected {
            for (role, allowed) in Role::ALL.iter().zip(allowed) {
                let result = decide(path, Some(&role.dev_identity()));
                if *allowed {
                    assert_eq!(result, Ok(Some(*role)), "{role} → {path}");
                } else {
                    assert_eq!(
                        result.unwrap_err().0,
                        Code::PermissionDenied,
                        "{role} → {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_ministries_read_only_the_entries_of_what_was_delivered_to_them() {
        use EntryDisclosure::*;
        let peer = |role: Role| Peer {
            identity: role.dev_identity(),
            role,
        };
        let mine = r#"{"attempt":1,"extract_id":"ext-1","subscriber":"urn:minegate:energy"}"#;
        let theirs =
            r#"{"attempt":1,"extract_id":"ext-1","subscriber":"urn:minegate:energy-backup"}"#;
        let accepted = r#"{"bin_or_iin":"940140000385","filing_id":"fil-1"}"#;
        let cases: &[(Role, &str, &str, EntryDisclosure)] = &[
            (Role::Energy, "FILING_ACCEPTED", accepted, LeafHashOnly),
            (Role::Finance, "FILING_ACCEPTED", accepted, LeafHashOnly),
            (Role::Authority, "FILING_ACCEPTED", accepted, Entry),
            (Role::Operator, "FILING_ACCEPTED", accepted, Entry),
            (
                Role::Energy,
                "EXTRACT_CREATED",
                "{}",
                EntryIfExtractSentToCaller("ext-1".into()),
            ),
            (Role::Finance, "EXTRACT_CREATED", "{}", LeafHashOnly),
            (Role::Energy, "EXTRACT_SENT", mine, Entry),
            (Role::Energy, "EXTRACT_SENT", theirs, LeafHashOnly),
            (Role::Energy, "EXTRACT_ACKNOWLEDGED", mine, Entry),
            (Role::Energy, "EXTRACT_ACKNOWLEDGED", theirs, LeafHashOnly),
            (Role::Energy, "EXTRACT_SEND_FAILED", mine, LeafHashOnly),
            (Role::Energy, "FORM_ACKNOWLEDGED", "{}", LeafHashOnly),
            (Role::Finance, "FORM_REVISION_PUBLISHED", "{}", Entry),
            (Role::Finance, "FORM_ACKNOWLEDGED", "{}", Entry),
            (Role::Finance, "FORM_PULLED", "{}", Entry),
            (Role::Finance, "EXTRACT_ACKNOWLEDGED", mine, LeafHashOnly),
            (Role::Finance, "OBLIGATION_FULFILLED", "{}", LeafHashOnly),
            (Role::Energy, "DOCUMENT_STORED", "{}", LeafHashOnly),
        ];
        for (role, kind, payload, expected) in cases {
            assert_eq!(
                &entry_disclosure(&peer(*role), kind, "ext-1", payload),
                expected,
                "{role} reading {kind} {payload}"
            );
        }
    }

    #[test]
    fn refusals_name_the_role_and_method_or_the_identity() {
        assert_eq!(
            decide(
                "/kz.digitalmining.v1.FilingService/SubmitStartNotification",
                Some("urn:minegate:energy")
            ),
            Err((
                Code::PermissionDenied,
                "role energy (urn:minegate:energy) may not call kz.digitalmining.v1.FilingService/SubmitStartNotification".into()
            ))
        );
        assert_eq!(
            decide(
                "/kz.digitalmining.v1.FinanceService/Acknowledge",
                Some("urn:x")
            ),
            Err((
                Code::Unauthenticated,
                "identity \"urn:x\" is not known to this gateway".into()
            ))
        );
        assert_eq!(
            decide("/kz.digitalmining.v1.FinanceService/Acknowledge", None),
            Err((
                Code::Unauthenticated,
                "the client certificate names no identity (no URI SAN and no subject CN)".into()
            ))
        );
        // Open services need a valid certificate only.
        assert_eq!(
            decide("/grpc.health.v1.Health/Check", Some("urn:x")),
            Ok(None)
        );
        assert_eq!(
            decide(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                None
            ),
            Ok(None)
        );
        assert_eq!(
            decide(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                Some("urn:x")
            ),
            Ok(None)
        );
    }
}
