//! Evidence anyone can check: the ledger as an RFC 9162 Merkle tree log.
//! [`merkle`] holds the hashing and the inclusion and consistency proofs,
//! [`note`] the checkpoints and the signed notes that carry them; both pure
//! and tested against published vectors. The store will keep the hashes and
//! the services hand the proofs out.

pub mod merkle;
pub mod note;
pub mod tree;
pub mod verify;
