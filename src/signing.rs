//! The gateway's signatures: receipts, extracts, forms and acknowledgements
//! are signed with the gateway's own Ed25519 key (ring) over the protobuf
//! encoding of the message with its `signature` field cleared. The key is
//! made on first start at the configured path; `GetSigningKeys` publishes the
//! public half so a ministry can verify offline with [`verify_message`].

use std::{io::Write, path::Path, time::SystemTime};

use chrono::{DateTime, Utc};
use prost::Message;
use ring::{
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};

use crate::{
    domain::hex,
    proto::v1::{
        EnergyExtract, ExtractAcknowledgement, FilingReceipt, FormAcknowledgement, Signature,
        SignatureAlgorithm, SigningKey, TaxDataForm,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing key {path}: {reason}")]
    Key { path: String, reason: String },
}

/// Why a signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the message carries no signature")]
    Unsigned,
    #[error("no published key has id {0:?}")]
    UnknownKey(String),
    #[error("the signature does not match the message")]
    Mismatch,
}

/// The gateway's signing key.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
    created_at: DateTime<Utc>,
}

impl Signer {
    /// Loads the PKCS#8 key at `path`, or makes one there (owner-only) if
    /// the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Signer, SigningError> {
        let error = |reason: String| SigningError::Key {
            path: path.display().to_string(),
            reason,
        };
        if !path.exists() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map_err(|_| error("no system randomness".into()))?;
            if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
                std::fs::create_dir_all(folder).map_err(|e| error(e.to_string()))?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(|e| error(e.to_string()))?;
            file.write_all(pkcs8.as_ref())
                .and_then(|()| file.sync_all())
                .map_err(|e| error(e.to_string()))?;
            tracing::warn!(path = %path.display(), "made a new gateway signing key");
        }
        let pkcs8 = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| error(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let created_at = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .into();
        Ok(Signer {
            key_id: key_id(key.public_key().as_ref()),
            key,
            created_at,
        })
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The signature of `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Signature {
        Signature {
            key_id: self.key_id.clone(),
            algorithm: SignatureAlgorithm::Ed25519 as i32,
            value: self.key.sign(bytes).as_ref().to_vec(),
        }
    }

    /// The public key as published.
    pub fn public_key(&self) -> SigningKey {
        SigningKey {
            key_id: self.key_id.clone(),
            algorithm: SignatureAlgorithm::Ed25519 as i32,
            public_key: self.key.public_key().as_ref().to_vec(),
            created_at: Some(pbjson_types::Timestamp {
                seconds: self.created_at.timestamp(),
                nanos: 0,
            }),
        }
    }

    /// Signs `message` in place: clears its signature, signs the encoding, sets it.
    pub fn sign_message<M: Signed>(&self, message: &mut M) {
        *message.signature_mut() = None;
        let signature = self.sign(&message.encode_to_vec());
        *message.signature_mut() = Some(signature);
    }
}

/// A key id: the first 16 hex characters of the public key's SHA-256.
fn key_id(public_key: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, public_key).as_ref())[..16].to_owned()
}

/// A message that carries the gateway's signature.
pub trait Signed: Message + Clone {
    fn signature_mut(&mut self) -> &mut Option<Signature>;
}

macro_rules! signed {
    ($($t:ty),*) => {
        $(impl Signed for $t {
            fn signature_mut(&mut self) -> &mut Option<Signature> {
                &mut self.signature
            }
        })*
    };
}
signed!(
    FilingReceipt,
    EnergyExtract,
    ExtractAcknowledgement,
    TaxDataForm,
    FormAcknowledgement
);

/// Verifies a signed message against the published keys.
pub fn verify_message<M: Signed>(keys: &[SigningKey], message: &M) -> Result<(), VerifyError> {
    let mut unsigned = message.clone();
    let signature = unsigned
        .signature_mut()
        .take()
        .ok_or(VerifyError::Unsigned)?;
    let key = keys
        .iter()
        .find(|k| k.key_id == signature.key_id)
        .ok_or_else(|| VerifyError::UnknownKey(signature.key_id.clone()))?;
    UnparsedPublicKey::new(&ED25519, &key.public_key)
        .verify(&unsigned.encode_to_vec(), &signature.value)
        .map_err(|_| VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::v1::{DataCentreLocation, EnergyExtract};

    #[test]
    fn a_signed_extract_verifies_and_a_tampered_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.key");
        let signer = Signer::load_or_create(&path).unwrap();
        let again = Signer::load_or_create(&path).unwrap();
        assert_eq!(
            again.key_id(),
            signer.key_id(),
            "the same key is loaded back"
        );
        let keys = vec![signer.public_key()];
        assert_eq!(keys[0].public_key.len(), 32);

        let mut extract = EnergyExtract {
            extract_id: "ext-1".into(),
            bin_or_iin: "210240001236".into(),
            data_centres: vec![DataCentreLocation {
                address: "Ekibastuz".into(),
                kato_code: Some("552210000".into()),
            }],
            ..Default::default()
        };
        assert_eq!(verify_message(&keys, &extract), Err(VerifyError::Unsigned));
        signer.sign_message(&mut extract);
        assert_eq!(verify_message(&keys, &extract), Ok(()));

        let mut tampered = extract.clone();
        tampered.data_centres[0].address = "Almaty".into();
        assert_eq!(verify_message(&keys, &tampered), Err(VerifyError::Mismatch));

        let mut foreign = extract.clone();
        foreign.signature.as_mut().unwrap().key_id = "0000".into();
        assert_eq!(
            verify_message(&keys, &foreign),
            Err(VerifyError::UnknownKey("0000".into()))
        );
    }
}
