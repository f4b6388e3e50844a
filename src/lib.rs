//! minegate: the gRPC gateway between the authorized body, the energy ministry
//! and the finance ministry for the digital mining notification regime
//! (order No. 146/НҚ, see docs/rules.md).
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
