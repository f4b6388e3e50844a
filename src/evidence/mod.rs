//! Evidence anyone can check: the ledger as an RFC 9162 Merkle tree log.
//! [`merkle`] holds the hashing and the inclusion and consistency proofs,
//! pure and tested against the published Certificate Transparency vectors;
//! the store keeps the hashes, the services hand the proofs out.

pub mod merkle;
