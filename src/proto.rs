//! The generated contracts of `proto/kz/digitalmining/v1/`: prost messages,
//! tonic clients and servers, and proto3-JSON serde impls (pbjson).

#[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("kz.digitalmining.v1");
    include!(concat!(env!("OUT_DIR"), "/kz.digitalmining.v1.serde.rs"));
}

/// The encoded file descriptor set of all contracts, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/minegate_descriptor.bin"));

/// Fully qualified names of the four domain services, as health names them.
pub const DOMAIN_SERVICES: [&str; 4] = [
    "kz.digitalmining.v1.FilingService",
    "kz.digitalmining.v1.EnergyExtractService",
    "kz.digitalmining.v1.FinanceService",
    "kz.digitalmining.v1.ComplianceService",
];
