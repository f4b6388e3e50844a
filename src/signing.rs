//! The gateway's signing key. It signs one thing: the checkpoint each
//! commit ends with (the ledger's tree size and root, a C2SP signed note,
//! see [`crate::evidence`]), so one signature covers every receipt, extract,
//! form and acknowledgement of the commit. The key is made on first start at
//! the configured path. Every key that ever signed here is kept in the
//! database's key history ([`KeyRecord`]) and published by `GetSigningKeys`,
//! so evidence signed before a rotation still verifies. A writer that
//! finds its key retired by a rotation takes the key now at its file
//! ([`successor`]), and signs nothing until the history admits that one.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::SystemTime,
};

use chrono::{DateTime, Utc};
use ring::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};

use crate::{
    domain::hex,
    evidence::note::{self, Checkpoint},
};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error("signing key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error(
        "the signing key {key_id} is not in this database's key history (it knows {known}); \
         start once with --add-signing-key to add it, or configure a key the history has"
    )]
    UnknownKey { key_id: String, known: String },
    #[error(
        "the signing key {key_id} was retired at {retired_at} (`minegate signing rotate`); \
         configure the key that replaced it"
    )]
    Retired {
        key_id: String,
        retired_at: DateTime<Utc>,
    },
    #[error(
        "this database's ledger is named {history:?} in its key history, but signing.origin is {configured:?}"
    )]
    OriginChanged { history: String, configured: String },
    #[error(
        "the signing key {key_id} was retired at {retired_at} (`minegate signing rotate`) and \
         the key at {path} is {found}: put the key that replaced it there (copy it from where \
         the rotation ran); no checkpoint is signed until then"
    )]
    NoSuccessor {
        key_id: String,
        retired_at: DateTime<Utc>,
        path: String,
        /// What the history says of the key found at `path`.
        found: String,
    },
}

/// The gateway's signing key, and the name (the log's origin) it signs as.
pub struct Signer {
    key: Ed25519KeyPair,
    key_id: String,
    origin: String,
    created_at: DateTime<Utc>,
    /// The file it was loaded from, read again after a rotation.
    path: PathBuf,
}

impl Signer {
    /// Loads the PKCS#8 key at `path`, or makes one there (owner-only) if
    /// the file does not exist. It signs as `origin`.
    pub fn load_or_create(path: &Path, origin: &str) -> Result<Signer, SigningError> {
        if !path.exists() {
            write_new_key(path, None).map_err(|reason| SigningError::Key {
                path: path.display().to_string(),
                reason,
            })?;
            tracing::warn!(path = %path.display(), "made a new gateway signing key");
        }
        Signer::load(path, origin)
    }

    /// Loads the PKCS#8 key at `path`, which must exist. It signs as `origin`.
    /// DER or PEM, v2 (what the gateway makes) or v1 (what `openssl genpkey
    /// -algorithm ed25519` makes: the public key is derived).
    pub fn load(path: &Path, origin: &str) -> Result<Signer, SigningError> {
        let error = |reason: String| SigningError::Key {
            path: path.display().to_string(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let pkcs8 = match bytes.starts_with(b"-----BEGIN") {
            true => {
                use rustls_pki_types::{PrivatePkcs8KeyDer, pem::PemObject};
                match PrivatePkcs8KeyDer::from_pem_slice(&bytes) {
                    Ok(der) => der.secret_pkcs8_der().to_vec(),
                    Err(e) => return Err(error(format!("not a PEM PKCS#8 private key: {e}"))),
                }
            }
            false => bytes,
        };
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .or_else(|_| Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8))
            .map_err(|e| error(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let created_at = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH)
            .into();
        Ok(Signer {
            key_id: key_id(key.public_key().as_ref()),
            key,
            origin: origin.to_owned(),
            created_at,
            path: path.to_owned(),
        })
    }

    /// The key at this key's file now: after a rotation, the new one.
    pub fn reload(&self) -> Result<Signer, SigningError> {
        Signer::load(&self.path, &self.origin)
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The checkpoint as a signed note.
    pub fn sign_checkpoint(&self, checkpoint: &Checkpoint) -> String {
        note::sign(&checkpoint.text(), &self.origin, &self.key)
            .expect("a checkpoint's text ends with a newline")
    }

    /// The key as the history records it, valid from its file's time.
    pub fn record(&self) -> KeyRecord {
        KeyRecord {
            key_id: self.key_id.clone(),
            name: self.origin.clone(),
            public_key: self.key.public_key().as_ref().to_vec(),
            created_at: self.created_at,
            retired_at: None,
        }
    }
}

/// Writes a new Ed25519 key (PKCS#8) at `path`, owner-only (mode 0600
/// whatever the umask), synced; never over an existing file. With `owner`
/// (uid, gid) the file is given to them before the key is written: a
/// rotation run as root makes a key the service's user can read.
pub fn write_new_key(path: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| "no system randomness".to_owned())?;
    if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
        crate::files::create_private_folder(folder).map_err(|e| e.to_string())?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
                .map_err(|e| format!("cannot give it to uid {uid} gid {gid}: {e}"))?;
        }
    }
    #[cfg(not(unix))]
    let _ = owner;
    file.write_all(pkcs8.as_ref())
        .and_then(|()| file.sync_all())
        .map_err(|e| e.to_string())
}

/// A key of the history: every key that signed checkpoints of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// The first 16 hex characters of the public key's SHA-256.
    pub key_id: String,
    /// The name it signs as: the log's origin.
    pub name: String,
    /// The raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    /// When `minegate signing rotate` replaced it; it signs nothing after.
    pub retired_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// The C2SP verifier key (`name+hash+base64`) that opens its notes.
    pub fn verifier_key(&self) -> String {
        note::verifier_key(&self.name, &self.public_key)
    }
}

/// What the start-up does with the configured key, given the history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The history has it, not retired: sign with it.
    Known,
    /// Add it to the history first: the history is empty (a new or
    /// upgraded database), or the operator said to.
    Add,
}

/// Whether a gateway may sign with `current` on a database whose key
/// history is `history`: a key the history does not know only when told
/// (`add_unknown`), a retired key never, and always as the log's one name.
pub fn admit(
    history: &[KeyRecord],
    current: &KeyRecord,
    add_unknown: bool,
) -> Result<Admission, SigningError> {
    if let Some(first) = history.first()
        && first.name != current.name
    {
        return Err(SigningError::OriginChanged {
            history: first.name.clone(),
            configured: current.name.clone(),
        });
    }
    match history.iter().find(|k| k.key_id == current.key_id) {
        Some(KeyRecord {
            retired_at: Some(retired_at),
            ..
        }) => Err(SigningError::Retired {
            key_id: current.key_id.clone(),
            retired_at: *retired_at,
        }),
        Some(_) => Ok(Admission::Known),
        None if history.is_empty() || add_unknown => Ok(Admission::Add),
        None => Err(SigningError::UnknownKey {
            key_id: current.key_id.clone(),
            known: history
                .iter()
                .map(|k| k.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// What a key history says of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The history does not have it.
    Unknown,
    /// The history has it, not retired.
    Valid,
    Retired(DateTime<Utc>),
}

/// The key a writer signs with once the history says its key `current`
/// was retired at `retired_at`: `found`, the key now at its file, if the
/// history has it valid (a rotation put it there); else none, and the
/// writer signs nothing until it is there (a replica whose file was not
/// copied yet).
pub fn successor(
    current: &Signer,
    retired_at: DateTime<Utc>,
    found: Signer,
    standing: Standing,
) -> Result<Signer, SigningError> {
    let found_is = match standing {
        Standing::Valid => return Ok(found),
        Standing::Retired(_) if found.key_id == current.key_id => {
            format!("still that key ({})", found.key_id)
        }
        Standing::Retired(at) => format!("{}, retired at {at} too", found.key_id,),
        Standing::Unknown => format!("{}, which the key history does not know", found.key_id),
    };
    Err(SigningError::NoSuccessor {
        key_id: current.key_id.clone(),
        retired_at,
        path: current.path.display().to_string(),
        found: found_is,
    })
}

/// A key id: the first 16 hex characters of the public key's SHA-256.
fn key_id(public_key: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, public_key).as_ref())[..16].to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_key_openssl_makes_signs_pem_or_der() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("key.pem");
        let der = dir.path().join("key.der");
        let made = std::process::Command::new("openssl")
            .args(["genpkey", "-algorithm", "ed25519", "-out"])
            .arg(&pem)
            .status();
        let Ok(made) = made else {
            assert!(
                std::env::var("MINEGATE_TEST_TOOLS").as_deref() != Ok("required"),
                "openssl is required"
            );
            return;
        };
        assert!(made.success());
        let converted = std::process::Command::new("openssl")
            .args(["pkey", "-outform", "DER", "-in"])
            .arg(&pem)
            .arg("-out")
            .arg(&der)
            .status()
            .unwrap();
        assert!(converted.success());
        let from_pem = super::Signer::load(&pem, "o").unwrap();
        let from_der = super::Signer::load(&der, "o").unwrap();
        assert_eq!(from_pem.key_id(), from_der.key_id());
        assert_eq!(from_pem.key_id().len(), 16);
    }

    use super::*;

    fn record(key_id: &str, retired: bool) -> KeyRecord {
        KeyRecord {
            key_id: key_id.into(),
            name: "minegate".into(),
            public_key: vec![7; 32],
            created_at: DateTime::UNIX_EPOCH,
            retired_at: retired.then_some(DateTime::UNIX_EPOCH),
        }
    }

    #[test]
    fn a_key_is_loaded_back_and_signs_checkpoints_its_record_opens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.key");
        let signer = Signer::load_or_create(&path, "minegate.test/ledger").unwrap();
        let again = Signer::load_or_create(&path, "minegate.test/ledger").unwrap();
        assert_eq!(
            again.key_id(),
            signer.key_id(),
            "the same key is loaded back"
        );
        assert_eq!(signer.key_id().len(), 16);
        let checkpoint = Checkpoint {
            origin: "minegate.test/ledger".into(),
            size: 3,
            root: [9; 32],
        };
        let signed = signer.sign_checkpoint(&checkpoint);
        assert_eq!(
            note::open(&signed, &signer.record().verifier_key()),
            Ok(checkpoint.text())
        );
    }

    #[test]
    fn the_key_history_admits_known_keys_and_refuses_the_rest_by_name() {
        let current = record("aaaa", false);
        assert_eq!(admit(&[], &current, false).unwrap(), Admission::Add);
        assert_eq!(
            admit(&[record("aaaa", false)], &current, false).unwrap(),
            Admission::Known
        );
        let history = [record("bbbb", true), record("cccc", false)];
        assert_eq!(
            admit(&history, &current, false).unwrap_err().to_string(),
            "the signing key aaaa is not in this database's key history (it knows bbbb, cccc); \
             start once with --add-signing-key to add it, or configure a key the history has"
        );
        assert_eq!(admit(&history, &current, true).unwrap(), Admission::Add);
        assert!(matches!(
            admit(&history, &record("bbbb", false), true),
            Err(SigningError::Retired { key_id, .. }) if key_id == "bbbb"
        ));
        let renamed = KeyRecord {
            name: "other".into(),
            ..current
        };
        assert!(matches!(
            admit(&history, &renamed, true),
            Err(SigningError::OriginChanged { history, configured })
                if history == "minegate" && configured == "other"
        ));
    }

    #[test]
    fn a_retired_key_is_succeeded_only_by_a_key_the_history_has_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let old = Signer::load_or_create(&path, "minegate").unwrap();
        let retired_at: DateTime<Utc> = "2030-01-05T06:00:00Z".parse().unwrap();
        let refusal = |found: Signer, standing| {
            successor(&old, retired_at, found, standing)
                .err()
                .unwrap()
                .to_string()
        };
        let because = |found: &str| {
            format!(
                "the signing key {} was retired at 2030-01-05 06:00:00 UTC \
                 (`minegate signing rotate`) and the key at {} is {found}: put the key that \
                 replaced it there (copy it from where the rotation ran); no checkpoint is \
                 signed until then",
                old.key_id(),
                path.display()
            )
        };
        let same = old.reload().unwrap();
        assert_eq!(
            refusal(same, Standing::Retired(retired_at)),
            because(&format!("still that key ({})", old.key_id()))
        );
        std::fs::remove_file(&path).unwrap();
        write_new_key(&path, None).unwrap();
        let unknown = old.reload().unwrap();
        let unknown_id = unknown.key_id().to_owned();
        assert_eq!(
            refusal(unknown, Standing::Unknown),
            because(&format!(
                "{unknown_id}, which the key history does not know"
            ))
        );
        let also_retired = old.reload().unwrap();
        assert_eq!(
            refusal(also_retired, Standing::Retired(retired_at)),
            because(&format!(
                "{unknown_id}, retired at 2030-01-05 06:00:00 UTC too"
            ))
        );
        let next = successor(&old, retired_at, old.reload().unwrap(), Standing::Valid).unwrap();
        assert_eq!(next.key_id(), unknown_id);
    }

    #[cfg(unix)]
    #[test]
    fn a_new_key_is_owner_only_whatever_the_umask_and_given_to_the_owner_named() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.key");
        let mine = std::fs::metadata(dir.path()).unwrap();
        write_new_key(&path, Some((mine.uid(), mine.gid()))).unwrap();
        let made = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (made.uid(), made.gid(), made.permissions().mode() & 0o7777),
            (mine.uid(), mine.gid(), 0o600)
        );
        assert_eq!(
            write_new_key(&path, None).unwrap_err(),
            "File exists (os error 17)",
            "never over an existing file"
        );
    }
}
