//! Verifying what the gateway hands out, as a ministry does: an artifact's
//! bytes, its [`pb::Evidence`] and the published keys are all it takes (no
//! re-encoding, no database). The steps are those of docs/evidence.md:
//!
//! 1. the entry is the artifact's kind of entry, at the leaf the evidence
//!    names, and its payload records SHA-256(artifact);
//! 2. SHA-256(0x00 ‖ entry) and the inclusion proof lead to the root of
//!    the checkpoint's tree;
//! 3. the checkpoint is signed by a published key, under the log's origin.
//!
//! Each failure is its own [`EvidenceError`], named for what it means.

use super::{
    merkle::{self, Hash, ProofError},
    note::{self, Checkpoint, NoteError},
};
use crate::{domain::hex, proto::v1 as pb};

/// What an artifact is, and so which entry records it and under which key
/// of the entry's payload its digest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A FilingReceipt: a FILING_ACCEPTED entry's `receipt_sha256`.
    Receipt,
    /// An EnergyExtract: an EXTRACT_CREATED entry's `extract_sha256`.
    Extract,
    /// An ExtractAcknowledgement: an EXTRACT_ACKNOWLEDGED entry's `receipt_sha256`.
    ExtractAck,
    /// A TaxDataForm's body: a FORM_REVISION_PUBLISHED entry's `body_sha256`.
    FormBody,
    /// A FormAcknowledgement: a FORM_ACKNOWLEDGED entry's `receipt_sha256`.
    FormAck,
}

impl ArtifactKind {
    /// The kind of ledger entry that records it.
    pub fn entry_kind(self) -> &'static str {
        match self {
            ArtifactKind::Receipt => "FILING_ACCEPTED",
            ArtifactKind::Extract => "EXTRACT_CREATED",
            ArtifactKind::ExtractAck => "EXTRACT_ACKNOWLEDGED",
            ArtifactKind::FormBody => "FORM_REVISION_PUBLISHED",
            ArtifactKind::FormAck => "FORM_ACKNOWLEDGED",
        }
    }

    /// The payload key holding the artifact's SHA-256 (hex).
    pub fn digest_key(self) -> &'static str {
        match self {
            ArtifactKind::Receipt | ArtifactKind::ExtractAck | ArtifactKind::FormAck => {
                "receipt_sha256"
            }
            ArtifactKind::Extract => "extract_sha256",
            ArtifactKind::FormBody => "body_sha256",
        }
    }
}

/// Why evidence does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("the artifact came without evidence")]
    Missing,
    #[error("the ledger entry is malformed: {0}")]
    BadEntry(&'static str),
    #[error("the ledger entry is a {found} entry, not the {expected} entry of this artifact")]
    WrongEntryKind {
        expected: &'static str,
        found: String,
    },
    #[error("the ledger entry is leaf {entry}, but the evidence says leaf {claimed}")]
    WrongLeaf { entry: u64, claimed: u64 },
    #[error(
        "the artifact was changed: its SHA-256 is {actual}, the ledger entry records {recorded}"
    )]
    ArtifactChanged { actual: String, recorded: String },
    #[error("the checkpoint is signed by no published key (keys known: {known})")]
    UnknownKey { known: String },
    #[error("the checkpoint: {0}")]
    Checkpoint(NoteError),
    #[error("the proof is for the tree of {proof}, the checkpoint's tree has {checkpoint}")]
    OtherTree { proof: u64, checkpoint: u64 },
    #[error("a proof hash is {0} bytes, not 32")]
    BadHash(usize),
    #[error("the inclusion proof of leaf {index} in the tree of {size}: {error}")]
    Inclusion {
        index: u64,
        size: u64,
        error: ProofError,
    },
    #[error(
        "the log was rewritten: the checkpoint of {old_size} entries is not a prefix of the checkpoint of {new_size} ({error})\n{old_note}\n{new_note}"
    )]
    Rewritten {
        old_size: u64,
        new_size: u64,
        error: ProofError,
        old_note: String,
        new_note: String,
    },
}

/// A checkpoint whose signature verified, and the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub checkpoint: Checkpoint,
    /// The signed note, as received.
    pub note: String,
    pub key_id: String,
}

/// Opens a checkpoint's signed note with the first published key that
/// signed it.
pub fn open_checkpoint(note: &str, keys: &[pb::SigningKey]) -> Result<Verified, EvidenceError> {
    for key in keys {
        match note::open(note, &key.note_verifier_key) {
            Ok(text) => {
                return Ok(Verified {
                    checkpoint: Checkpoint::parse(&text).map_err(EvidenceError::Checkpoint)?,
                    note: note.to_owned(),
                    key_id: key.key_id.clone(),
                });
            }
            Err(NoteError::NotSignedBy(_) | NoteError::BadKey(_)) => continue,
            Err(error) => return Err(EvidenceError::Checkpoint(error)),
        }
    }
    Err(EvidenceError::UnknownKey {
        known: keys
            .iter()
            .map(|k| k.key_id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Verifies that `evidence.artifact` is the artifact of `kind` recorded in
/// the log whose signed checkpoint the evidence carries.
pub fn verify(
    kind: ArtifactKind,
    evidence: Option<&pb::Evidence>,
    keys: &[pb::SigningKey],
) -> Result<Verified, EvidenceError> {
    let evidence = evidence.ok_or(EvidenceError::Missing)?;
    let entry = Entry::parse(&evidence.entry)?;
    if entry.kind != kind.entry_kind() {
        return Err(EvidenceError::WrongEntryKind {
            expected: kind.entry_kind(),
            found: entry.kind.to_owned(),
        });
    }
    if entry.leaf_index != evidence.leaf_index {
        return Err(EvidenceError::WrongLeaf {
            entry: entry.leaf_index,
            claimed: evidence.leaf_index,
        });
    }
    let recorded = entry.digest(kind.digest_key())?;
    let actual = hex(ring::digest::digest(&ring::digest::SHA256, &evidence.artifact).as_ref());
    if recorded != actual {
        return Err(EvidenceError::ArtifactChanged { actual, recorded });
    }
    let verified = open_checkpoint(&evidence.checkpoint, keys)?;
    let proof = hashes(&evidence.inclusion_proof)?;
    let (index, size) = (evidence.leaf_index, verified.checkpoint.size);
    merkle::verify_inclusion(
        index,
        size,
        &merkle::leaf_hash(&evidence.entry),
        &proof,
        &verified.checkpoint.root,
    )
    .map_err(|error| EvidenceError::Inclusion { index, size, error })?;
    Ok(verified)
}

/// Checks a `GetInclusionProof` answer against a checkpoint already
/// opened: the leaf hash (recomputed from the entry, when the answer has
/// one) and the proof lead to the checkpoint's root. A ministry that is
/// given the leaf hash alone checks inclusion just the same.
pub fn verify_inclusion_proof(
    answer: &pb::InclusionProof,
    checkpoint: &Verified,
) -> Result<(), EvidenceError> {
    let (index, size) = (answer.leaf_index, checkpoint.checkpoint.size);
    let inclusion = |error| EvidenceError::Inclusion { index, size, error };
    if answer.tree_size != size {
        return Err(EvidenceError::OtherTree {
            proof: answer.tree_size,
            checkpoint: size,
        });
    }
    let leaf: Hash = answer
        .leaf_hash
        .as_slice()
        .try_into()
        .map_err(|_| EvidenceError::BadHash(answer.leaf_hash.len()))?;
    if !answer.entry.is_empty() && merkle::leaf_hash(&answer.entry) != leaf {
        return Err(EvidenceError::BadEntry("the entry is not the leaf's data"));
    }
    let proof = hashes(&answer.hashes)?;
    merkle::verify_inclusion(index, size, &leaf, &proof, &checkpoint.checkpoint.root)
        .map_err(inclusion)
}

/// Checks that the log of `old` is a prefix of the log of `new` by
/// `proof`; a log that is not is reported with both checkpoints.
pub fn verify_consistency(
    old: &Verified,
    new: &Verified,
    proof: &[Vec<u8>],
) -> Result<(), EvidenceError> {
    let rewritten = |error| EvidenceError::Rewritten {
        old_size: old.checkpoint.size,
        new_size: new.checkpoint.size,
        error,
        old_note: old.note.clone(),
        new_note: new.note.clone(),
    };
    if old.checkpoint.origin != new.checkpoint.origin {
        return Err(rewritten(ProofError::RootMismatch));
    }
    merkle::verify_consistency(
        old.checkpoint.size,
        new.checkpoint.size,
        &old.checkpoint.root,
        &new.checkpoint.root,
        &hashes(proof)?,
    )
    .map_err(rewritten)
}

fn hashes(proof: &[Vec<u8>]) -> Result<Vec<Hash>, EvidenceError> {
    proof
        .iter()
        .map(|h| {
            h.as_slice()
                .try_into()
                .map_err(|_| EvidenceError::BadHash(h.len()))
        })
        .collect()
}

/// A ledger entry's fields, read from its bytes.
struct Entry<'a> {
    leaf_index: u64,
    kind: &'a str,
    payload: serde_json::Value,
}

impl<'a> Entry<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Entry<'a>, EvidenceError> {
        let text = std::str::from_utf8(bytes).map_err(|_| EvidenceError::BadEntry("not UTF-8"))?;
        let mut fields = text.splitn(5, '\n');
        let (Some(seq), Some(kind), Some(_subject), Some(_at), Some(payload)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(EvidenceError::BadEntry(
                "expected seq, kind, subject, recorded_at and payload lines",
            ));
        };
        let seq: u64 = seq
            .parse()
            .ok()
            .filter(|s| *s > 0)
            .ok_or(EvidenceError::BadEntry("seq is not a positive number"))?;
        let payload = serde_json::from_str(payload)
            .map_err(|_| EvidenceError::BadEntry("the payload is not JSON"))?;
        Ok(Entry {
            leaf_index: seq - 1,
            kind,
            payload,
        })
    }

    fn digest(&self, key: &'static str) -> Result<String, EvidenceError> {
        self.payload
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .ok_or(EvidenceError::BadEntry(
                "the payload does not record the artifact's digest",
            ))
    }
}
