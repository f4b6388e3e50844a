//! minegate: the gRPC gateway between the authorized body, the energy ministry
//! and the finance ministry for the digital mining notification regime
//! (order No. 146/НҚ, see docs/rules.md).
//!
//! # Where to start reading
//!
//! `docs/architecture.md` draws the whole; its last section is this list.
//! The modules in reading order, from the rules to the process serving them:
//!
//! 1. [`domain`]: the rules, no I/O; start at [`domain::register::assess`].
//! 2. [`proto`]: the generated contracts of `proto/kz/digitalmining/v1/`.
//! 3. [`service`]: one gRPC service a file; [`service::access`] says who may call.
//! 4. [`store`]: the [`store::Store`] trait; its SQLite and PostgreSQL backends.
//! 5. [`evidence`]: the ledger as a Merkle tree log; proofs, signed checkpoints.
//! 6. [`signing`]: the key that signs each commit's checkpoint; the key history.
//! 7. [`tls`]: the development PKI, the mutual-TLS acceptor, identities and roles.
//! 8. [`server`]: assembles the gateway ([`server::start`]) and drains it.
//! 9. [`config`]: `minegate.toml` and its `MINEGATE_*` overrides.
//! 10. [`metrics`]: the operators' Prometheus endpoint.
//! 11. [`client`]: an agency's mutual-TLS channel to a gateway.
//! 12. [`cli`]: the `minegate` command; [`cli::demo`] plays a quarter end to end.
//! 13. [`files`]: the gateway's files are its owner's only.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod cli;
pub mod client;
pub mod config;
pub mod domain;
pub mod evidence;
pub mod files;
pub mod metrics;
pub mod proto;
pub mod server;
pub mod service;
pub mod signing;
pub mod store;
pub mod tls;
