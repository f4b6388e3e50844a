//! The rules themselves, with no I/O: identifiers and quantities that cannot
//! exist invalid, the deadlines, how a filing changes the register and which
//! compliance findings it raises, what every change of state writes
//! (`decisions`), and the ledger's typed entries. Nothing here imports
//! tonic, sqlx or rusqlite.

pub mod deadlines;
pub mod decisions;
pub mod document;
pub mod filing;
pub mod identifiers;
pub mod ip;
pub mod ledger;
pub mod obligation;
pub mod quantities;
pub mod register;

/// Lowercase hex of bytes (digests, serials).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A SHA-256 digest as 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    pub fn parse(s: &str) -> Result<Sha256Hex, String> {
        if s.len() != 64 || !s.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "a SHA-256 digest is 64 hex characters, got {:?}",
                s.chars().take(80).collect::<String>()
            ));
        }
        Ok(Sha256Hex(s.to_ascii_lowercase()))
    }

    pub fn of(bytes: &[u8]) -> Sha256Hex {
        Sha256Hex::from_digest(ring::digest::digest(&ring::digest::SHA256, bytes))
    }

    /// A digest computed incrementally (`ring::digest::Context`).
    pub fn from_digest(digest: ring::digest::Digest) -> Sha256Hex {
        Sha256Hex(hex(digest.as_ref()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
