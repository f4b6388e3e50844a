//! C2SP signed notes and checkpoints, the form in which the gateway will
//! sign the ledger's state once per commit. A checkpoint (C2SP
//! tlog-checkpoint) is the text `origin\nsize\nbase64(root)\n`; a signed note
//! (C2SP signed-note) is that text, a blank line, and one line per
//! signature: `— name base64(key hash ‖ Ed25519 signature)`. The key hash is
//! the first four bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key); a
//! verifier key is written `name+hash+base64(0x01 ‖ public key)`.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use super::merkle::Hash;

/// The algorithm byte of Ed25519 keys in signed notes.
const ED25519_ALGORITHM: u8 = 0x01;

/// Why a note or checkpoint is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("not a signed note: {0}")]
    Malformed(&'static str),
    #[error("not a verifier key: {0}")]
    BadKey(&'static str),
    #[error("no signature by {0}")]
    NotSignedBy(String),
    #[error("the signature by {0} does not verify: the text was changed")]
    BadSignature(String),
    #[error("not a checkpoint: {0}")]
    BadCheckpoint(&'static str),
}

/// The four-byte hash that names `public_key` of `name` in signature lines.
fn key_hash(name: &str, public_key: &[u8]) -> [u8; 4] {
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &[name.as_bytes(), b"\n", &[ED25519_ALGORITHM], public_key].concat(),
    );
    let mut hash = [0; 4];
    hash.copy_from_slice(&digest.as_ref()[..4]);
    hash
}

/// The verifier key of `public_key` under `name`, as published.
pub fn verifier_key(name: &str, public_key: &[u8]) -> String {
    format!(
        "{name}+{}+{}",
        crate::domain::hex(&key_hash(name, public_key)),
        STANDARD.encode([&[ED25519_ALGORITHM], public_key].concat())
    )
}

/// Signs `text` (which ends with a newline) as `name`: the signed note.
pub fn sign(text: &str, name: &str, key: &Ed25519KeyPair) -> Result<String, NoteError> {
    if !text.ends_with('\n') || text.is_empty() {
        return Err(NoteError::Malformed("the text must end with a newline"));
    }
    let signature = key.sign(text.as_bytes());
    let blob = [
        &key_hash(name, key.public_key().as_ref())[..],
        signature.as_ref(),
    ]
    .concat();
    Ok(format!("{text}\n— {name} {}\n", STANDARD.encode(blob)))
}

/// A verifier key parsed: name, key hash and Ed25519 public key.
struct Verifier {
    name: String,
    hash: [u8; 4],
    public_key: Vec<u8>,
}

fn parse_verifier_key(key: &str) -> Result<Verifier, NoteError> {
    let mut parts = key.splitn(3, '+');
    let (Some(name), Some(hash), Some(encoded)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::BadKey("expected name+hash+key"));
    };
    let decoded = STANDARD
        .decode(encoded)
        .map_err(|_| NoteError::BadKey("the key is not base64"))?;
    let Some((&ED25519_ALGORITHM, public_key)) = decoded.split_first() else {
        return Err(NoteError::BadKey("not an Ed25519 key"));
    };
    if public_key.len() != 32 {
        return Err(NoteError::BadKey("an Ed25519 key is 32 bytes"));
    }
    let hash = u32::from_str_radix(hash, 16)
        .map_err(|_| NoteError::BadKey("the key hash is not hex"))?
        .to_be_bytes();
    if hash != key_hash(name, public_key) {
        return Err(NoteError::BadKey("the key hash does not match the key"));
    }
    Ok(Verifier {
        name: name.to_owned(),
        hash,
        public_key: public_key.to_vec(),
    })
}

/// Opens a signed note with `verifier_key`: its text, if a signature by
/// that key is on it and verifies. Signatures by other keys are passed by.
pub fn open(note: &str, verifier_key: &str) -> Result<String, NoteError> {
    let verifier = parse_verifier_key(verifier_key)?;
    let Some(split) = note.rfind("\n\n") else {
        return Err(NoteError::Malformed("no blank line before the signatures"));
    };
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    if !signatures.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the last signature line has no newline",
        ));
    }
    for line in signatures.lines() {
        let Some(rest) = line.strip_prefix("— ") else {
            return Err(NoteError::Malformed("a signature line starts with '— '"));
        };
        let Some((name, encoded)) = rest.split_once(' ') else {
            return Err(NoteError::Malformed(
                "a signature line is '— name signature'",
            ));
        };
        let blob = STANDARD
            .decode(encoded)
            .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
        if name != verifier.name || blob.len() < 4 || blob[..4] != verifier.hash {
            continue;
        }
        return UnparsedPublicKey::new(&ED25519, &verifier.public_key)
            .verify(text.as_bytes(), &blob[4..])
            .map(|()| text.to_owned())
            .map_err(|_| NoteError::BadSignature(verifier.name.clone()));
    }
    Err(NoteError::NotSignedBy(verifier.name))
}

/// A log's state: its origin (the log's name), size and root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

impl Checkpoint {
    /// The checkpoint's text, to be signed as a note.
    pub fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        )
    }

    /// Parses a checkpoint's text (lines after the third are extensions,
    /// kept by the signature but not read here).
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let mut lines = text.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(NoteError::BadCheckpoint(
                "expected origin, size and root lines",
            ));
        };
        if origin.is_empty() {
            return Err(NoteError::BadCheckpoint("the origin is empty"));
        }
        let size = size
            .parse()
            .ok()
            .filter(|_| size == "0" || !size.starts_with('0'))
            .ok_or(NoteError::BadCheckpoint("the size is not a decimal number"))?;
        let root: Hash = STANDARD
            .decode(root)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(NoteError::BadCheckpoint(
                "the root is not 32 bytes of base64",
            ))?;
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signed-note reference key and note (Go's sumdb/note, which the
    /// C2SP specification follows).
    const SIGNER_SEED: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const VERIFIER_KEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                        then you don't know what your problem is.\n";
    const SIGNATURE: &str = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter() -> Ed25519KeyPair {
        let seed = STANDARD.decode(SIGNER_SEED).unwrap();
        assert_eq!(seed[0], ED25519_ALGORITHM);
        Ed25519KeyPair::from_seed_unchecked(&seed[1..]).unwrap()
    }

    #[test]
    fn the_reference_note_is_signed_and_opened_byte_for_byte() {
        let key = peter();
        assert_eq!(
            verifier_key("PeterNeumann", key.public_key().as_ref()),
            VERIFIER_KEY
        );
        let note = sign(TEXT, "PeterNeumann", &key).unwrap();
        assert_eq!(note, format!("{TEXT}\n{SIGNATURE}"));
        assert_eq!(open(&note, VERIFIER_KEY).unwrap(), TEXT);
    }

    #[test]
    fn a_changed_text_another_key_or_a_bad_key_is_refused_and_named() {
        let note = format!("{TEXT}\n{SIGNATURE}");
        assert_eq!(
            open(&note.replace("cryptography", "cryptographY"), VERIFIER_KEY),
            Err(NoteError::BadSignature("PeterNeumann".into()))
        );
        let other = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
        let other_key = verifier_key("minegate.example/ledger", other.public_key().as_ref());
        assert_eq!(
            open(&note, &other_key),
            Err(NoteError::NotSignedBy("minegate.example/ledger".into()))
        );
        // Two signatures: each key opens the note.
        let both = format!(
            "{}{}",
            note,
            sign(TEXT, "minegate.example/ledger", &other).unwrap()[TEXT.len() + 1..].to_owned()
        );
        assert_eq!(open(&both, &other_key).unwrap(), TEXT);
        assert_eq!(open(&both, VERIFIER_KEY).unwrap(), TEXT);
        assert_eq!(
            open(
                &note,
                "PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::BadKey("the key hash does not match the key"))
        );
        assert_eq!(
            sign("no newline", "x", &other),
            Err(NoteError::Malformed("the text must end with a newline"))
        );
    }

    #[test]
    fn a_checkpoint_is_written_and_read_back() {
        let checkpoint = Checkpoint {
            origin: "minegate.example/ledger".into(),
            size: 88,
            root: super::super::merkle::leaf_hash(b""),
        };
        assert_eq!(
            checkpoint.text(),
            "minegate.example/ledger\n88\nbjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=\n"
        );
        assert_eq!(Checkpoint::parse(&checkpoint.text()), Ok(checkpoint));
        assert_eq!(
            Checkpoint::parse("log\n08\nbjQLnP+zepicpUTmu3gKLHiQHT+zNzh2hRGjBhevoB0=\n"),
            Err(NoteError::BadCheckpoint("the size is not a decimal number"))
        );
        assert_eq!(
            Checkpoint::parse("log\n8\nbjQL\n"),
            Err(NoteError::BadCheckpoint(
                "the root is not 32 bytes of base64"
            ))
        );
    }
}
