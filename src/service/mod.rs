//! The gRPC services. Each file implements one service of
//! `proto/kz/digitalmining/v1/`, translating between proto and domain types;
//! `access` decides who may call what before any handler runs.

pub mod access;
pub mod compliance;
pub mod energy;
pub mod filing;
pub mod finance;

use std::pin::Pin;

use tokio_stream::Stream;
use tonic::{Request, Status};

use crate::tls::Peer;

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

/// The answer of a method whose behaviour a later part of the work builds.
fn not_implemented<T>(request: &Request<T>, method: &str) -> Status {
    match peer(request) {
        Ok(peer) => {
            tracing::debug!(identity = %peer.identity, role = %peer.role, method, "not implemented yet");
            Status::unimplemented(format!("{method} is not implemented yet"))
        }
        Err(status) => status,
    }
}
