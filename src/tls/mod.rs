//! Transport security: the development PKI, the rustls acceptor that only lets
//! authenticated agencies in, and the peer identity and role read from a
//! client certificate. Nothing here knows which role may call what; that
//! policy lives in `service::access`.

pub mod acceptor;
pub mod connections;
pub mod identity;
pub mod pki;
pub mod reload;

pub use acceptor::{
    HandshakeLimits, HandshakeOutcome, PeerInfo, PeerStream, TlsIncoming, load_server_config,
};
pub use identity::{Peer, Role, identity_from_certificate};
