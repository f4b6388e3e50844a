//! The tamper-evident ledger: every state change appends an entry in the same
//! transaction, `hash = sha256(prev_hash ‖ canonical entry)`. Verification
//! recomputes the chain and names the first entry that does not match.

use crate::domain::hex;

/// The `prev_hash` of the first entry: 32 zero bytes.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One ledger row as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub seq: i64,
    pub kind: String,
    pub subject: String,
    /// Microseconds since the Unix epoch.
    pub recorded_at: i64,
    /// Canonical JSON (sorted keys).
    pub payload: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash an entry must have, given its fields and `prev_hash`.
pub fn compute_hash(
    seq: i64,
    kind: &str,
    subject: &str,
    recorded_at: i64,
    payload: &str,
    prev_hash: &str,
) -> String {
    let canonical = format!("{seq}\n{kind}\n{subject}\n{recorded_at}\n{payload}");
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(prev_hash.as_bytes());
    context.update(canonical.as_bytes());
    hex(context.finish().as_ref())
}

/// The result of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub entries_checked: u64,
    /// The first entry that does not match, and why.
    pub first_broken: Option<(i64, String)>,
    pub head_hash: String,
}

/// Walks the chain page by page (entries in `seq` order).
#[derive(Debug)]
pub struct Verifier {
    expected_seq: i64,
    prev_hash: String,
    checked: u64,
    broken: Option<(i64, String)>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier {
            expected_seq: 1,
            prev_hash: GENESIS.to_owned(),
            checked: 0,
            broken: None,
        }
    }
}

impl Verifier {
    /// Checks the next entries; returns false once the chain is broken.
    pub fn feed(&mut self, entries: &[LedgerEntry]) -> bool {
        for entry in entries {
            if self.broken.is_some() {
                return false;
            }
            self.checked += 1;
            let reason = if entry.seq != self.expected_seq {
                Some(format!(
                    "expected entry {} next, found {} (entries missing)",
                    self.expected_seq, entry.seq
                ))
            } else if entry.prev_hash != self.prev_hash {
                Some(format!(
                    "prev_hash {} does not match the hash of entry {}",
                    entry.prev_hash,
                    entry.seq - 1
                ))
            } else {
                let recomputed = compute_hash(
                    entry.seq,
                    &entry.kind,
                    &entry.subject,
                    entry.recorded_at,
                    &entry.payload,
                    &entry.prev_hash,
                );
                (recomputed != entry.hash).then(|| {
                    format!(
                        "content does not match its hash (stored {}, recomputed {recomputed})",
                        entry.hash
                    )
                })
            };
            match reason {
                Some(reason) => self.broken = Some((entry.seq, reason)),
                None => {
                    self.expected_seq += 1;
                    self.prev_hash = entry.hash.clone();
                }
            }
        }
        self.broken.is_none()
    }

    pub fn finish(self) -> Verification {
        Verification {
            entries_checked: self.checked,
            first_broken: self.broken,
            head_hash: self.prev_hash,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<LedgerEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let payload = format!("{{\"n\":{seq}}}");
                let hash = compute_hash(seq, "TEST", "s", seq * 10, &payload, &prev);
                let entry = LedgerEntry {
                    seq,
                    kind: "TEST".into(),
                    subject: "s".into(),
                    recorded_at: seq * 10,
                    payload,
                    prev_hash: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                entry
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies_and_each_kind_of_tampering_is_named() {
        let entries = chain(5);
        let mut verifier = Verifier::default();
        assert!(verifier.feed(&entries[..2]));
        assert!(verifier.feed(&entries[2..]));
        let report = verifier.finish();
        assert_eq!(report.entries_checked, 5);
        assert_eq!(report.first_broken, None);
        assert_eq!(report.head_hash, entries[4].hash);

        let mut edited = chain(5);
        edited[2].payload = "{\"n\":99}".into();
        let mut verifier = Verifier::default();
        assert!(!verifier.feed(&edited));
        let (seq, reason) = verifier.finish().first_broken.unwrap();
        assert_eq!(seq, 3);
        assert!(
            reason.starts_with("content does not match its hash"),
            "{reason}"
        );

        let mut missing = chain(5);
        missing.remove(1);
        let mut verifier = Verifier::default();
        verifier.feed(&missing);
        assert_eq!(
            verifier.finish().first_broken,
            Some((3, "expected entry 2 next, found 3 (entries missing)".into()))
        );
    }
}
