//! Who may call what (DESIGN.md §1): a tower layer in front of every service.
//! It maps the connection's certificate identity to a role through the
//! configuration, checks the role against the table below (default deny),
//! and hands the handler a typed `Peer`. Health and reflection are open to
//! any caller with a valid certificate.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{Status, body::Body};
use tower::{Layer, Service};

use crate::tls::{Peer, PeerInfo, Role};

/// Services any holder of a valid certificate may call.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
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
    // The ministries verify signatures offline, so every role may read the
    // public signing keys.
    (
        "kz.digitalmining.v1.ComplianceService",
        Some("GetSigningKeys"),
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

/// The tower layer that applies [`authorize`] to every call.
#[derive(Clone)]
pub struct AccessLayer {
    roles: Arc<RoleMap>,
}

impl AccessLayer {
    pub fn new(roles: RoleMap) -> Self {
        AccessLayer {
            roles: Arc::new(roles),
        }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;

    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            roles: self.roles.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    roles: Arc<RoleMap>,
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
        let identity = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|info| info.identity.clone());
        match authorize(request.uri().path(), identity.as_deref(), &self.roles) {
            Ok(peer) => {
                if let Some(peer) = peer {
                    request.extensions_mut().insert(peer);
                }
                // The clone is not ready; call the one that poll_ready prepared.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(request))
            }
            Err(status) => {
                tracing::warn!(
                    identity = identity.as_deref().unwrap_or("-"),
                    method = request.uri().path(),
                    code = ?status.code(),
                    reason = status.message(),
                    "call refused"
                );
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn roles() -> RoleMap {
        Role::ALL.iter().map(|r| (r.dev_identity(), *r)).collect()
    }

    fn decide(path: &str, identity: Option<&str>) -> Result<Option<Role>, (Code, String)> {
        authorize(path, identity, &roles())
            .map(|peer| peer.map(|p| p.role))
            .map_err(|s| (s.code(), s.message().to_owned()))
    }

    #[test]
    fn the_table_of_design_section_1() {
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
    }
}
