//! A ministry's witness of the gateway's log. The last checkpoint it
//! verified is kept in a file beside what it writes; at every connection
//! the gateway's latest checkpoint must be signed by a published key and
//! consistent with it (the older tree a prefix of the newer), and so must
//! the checkpoint of every artifact's evidence. A gateway that rewrote its
//! log, or served a shorter tree after a longer one, is reported with both
//! checkpoints; the caller then writes and acknowledges nothing more.
//!
//! After a restore the gateway's operators announced (its database put back
//! to a backup, so its log is shorter or other than the one the ministry
//! saw), [`accept_restored_log`] is the deliberate way on: the gateway's
//! log must continue the checkpoint the operators announced (size and root,
//! `minegate ledger checkpoint`), and only then is the kept checkpoint
//! replaced by the gateway's, the old one kept beside it and both named in
//! a log line.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};
use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Args;
use tonic::transport::Channel;

use super::energy::write_durably;
use crate::{
    evidence::{
        merkle::{self, Hash},
        verify::{self, ArtifactKind, EvidenceError, Verified},
    },
    proto::v1::{
        Evidence, GetCheckpointRequest, GetConsistencyProofRequest, GetSigningKeysRequest,
        SigningKey, compliance_service_client::ComplianceServiceClient,
    },
};

/// The file name of the kept checkpoint.
pub const CHECKPOINT_FILE: &str = "minegate-checkpoint.note";

pub struct Witness {
    compliance: ComplianceServiceClient<Channel>,
    keys: Vec<SigningKey>,
    path: PathBuf,
    last: Option<Verified>,
}

impl Witness {
    /// Reads the published keys and the kept checkpoint (at `path`, if
    /// any), and checks the gateway's latest checkpoint against it.
    pub async fn connect(channel: Channel, path: PathBuf) -> anyhow::Result<Witness> {
        let mut compliance = ComplianceServiceClient::new(channel);
        let keys = compliance
            .get_signing_keys(GetSigningKeysRequest {})
            .await
            .map_err(status)?
            .into_inner()
            .keys;
        let last = match std::fs::read_to_string(&path) {
            Ok(note) => Some(
                verify::open_checkpoint(&note, &keys)
                    .with_context(|| format!("the checkpoint kept in {}", path.display()))?,
            ),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(error).with_context(|| format!("reading {}", path.display()));
            }
        };
        let mut witness = Witness {
            compliance,
            keys,
            path,
            last,
        };
        let latest = witness
            .compliance
            .get_checkpoint(GetCheckpointRequest {})
            .await
            .map_err(status)?
            .into_inner();
        let latest = verify::open_checkpoint(&latest.note, &witness.keys)
            .context("the gateway's latest checkpoint")?;
        witness.see(latest).await?;
        Ok(witness)
    }

    /// The kept checkpoint's file for output written to `out` (a folder,
    /// or a file whose folder holds it).
    pub fn beside(out: &Path, out_is_folder: bool) -> PathBuf {
        let folder = if out_is_folder {
            out
        } else {
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        };
        folder.join(CHECKPOINT_FILE)
    }

    /// Verifies an artifact's evidence, and that its checkpoint is
    /// consistent with the last one seen.
    pub async fn verify(
        &mut self,
        kind: ArtifactKind,
        evidence: Option<&Evidence>,
    ) -> anyhow::Result<Verified> {
        let verified = verify::verify(kind, evidence, &self.keys)?;
        self.see(verified.clone()).await?;
        Ok(verified)
    }

    /// Checks `seen` against the kept checkpoint and keeps the larger.
    async fn see(&mut self, seen: Verified) -> anyhow::Result<()> {
        let Some(last) = &self.last else {
            return self.keep(seen);
        };
        // Most artifacts of a connection come under the checkpoint last
        // seen: nothing to ask the gateway then.
        if seen.checkpoint == last.checkpoint {
            return Ok(());
        }
        let seen_is_new = seen.checkpoint.size >= last.checkpoint.size;
        let (old, new) = if seen_is_new {
            (last.clone(), seen)
        } else {
            (seen, last.clone())
        };
        let proof = self
            .compliance
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: old.checkpoint.size,
                new_size: new.checkpoint.size,
            })
            .await;
        let proof = match proof {
            Ok(proof) => proof.into_inner().hashes,
            // A gateway that cannot prove the larger tree it signed has
            // lost or rewritten it. Said as the kept checkpoint against the
            // gateway's, in that order, whichever is larger.
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                let error = crate::evidence::merkle::ProofError::SizesOutOfOrder {
                    old_size: new.checkpoint.size,
                    new_size: old.checkpoint.size,
                };
                let (kept, gateway) = if seen_is_new { (old, new) } else { (new, old) };
                return Err(EvidenceError::Rewritten {
                    old_size: kept.checkpoint.size,
                    new_size: gateway.checkpoint.size,
                    error,
                    old_note: kept.note,
                    new_note: gateway.note,
                }
                .into());
            }
            Err(status) => return Err(self::status(status)),
        };
        verify::verify_consistency(&old, &new, &proof)?;
        if new.checkpoint.size > self.last.as_ref().map_or(0, |l| l.checkpoint.size) {
            self.keep(new)?;
        }
        Ok(())
    }

    fn keep(&mut self, checkpoint: Verified) -> anyhow::Result<()> {
        write_durably(&self.path, checkpoint.note.as_bytes())
            .with_context(|| format!("keeping the checkpoint in {}", self.path.display()))?;
        self.last = Some(checkpoint);
        Ok(())
    }
}

fn status(status: tonic::Status) -> anyhow::Error {
    anyhow!("{:?}: {}", status.code(), status.message())
}

/// The checkpoint of the restored log that the gateway's operators
/// announced (`minegate ledger checkpoint` prints it).
#[derive(Debug, Clone, Args)]
pub struct Announced {
    /// The announced checkpoint's tree size (entries).
    #[arg(long)]
    pub size: u64,
    /// The announced checkpoint's root, base64 as in its note.
    #[arg(long)]
    pub root: String,
}

/// What [`accept_restored_log`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The kept checkpoint is consistent with the gateway's log: nothing
    /// was rewritten, nothing changed (beyond the usual newer checkpoint).
    NotRewritten,
    /// The kept checkpoint was replaced by the gateway's.
    Replaced(Box<Replacement>),
}

/// The kept checkpoint `old`, replaced by the gateway's `new`; the old note
/// is kept at `kept_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    pub old: Verified,
    pub new: Verified,
    pub kept_at: PathBuf,
}

/// Whether `error` says the log was rewritten (the kept checkpoint is not a
/// prefix of the gateway's), itself or in the energy client's [`Refused`].
///
/// [`Refused`]: super::energy::Refused
pub fn is_rewritten(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<EvidenceError>(),
            Some(EvidenceError::Rewritten { .. })
        ) || cause
            .downcast_ref::<super::energy::Refused>()
            .is_some_and(|refused| is_rewritten(&refused.0))
    })
}

/// `error`, with what to do when it says the log was rewritten: accept
/// the restored log with `command` once the operators announced it.
pub fn with_restore_hint(error: anyhow::Error, command: &str) -> anyhow::Error {
    if !is_rewritten(&error) {
        return error;
    }
    anyhow!(
        "{}\nif the gateway's operators announced a restore of its database, accept the \
         restored log they announced: {command} --size SIZE --root ROOT \
         (docs/operations.md, \"Resuming the ministries' clients\"); otherwise report both \
         checkpoints to them",
        super::causes_once(&error)
    )
}

/// Replaces the checkpoint kept at `path` by the gateway's latest, when the
/// kept one is not a prefix of the gateway's log (a restore) and the
/// gateway's log continues the `announced` checkpoint. Refuses, changing
/// nothing, when the gateway's log does not continue it.
pub async fn accept_restored_log(
    channel: Channel,
    path: PathBuf,
    announced: &Announced,
) -> anyhow::Result<Accepted> {
    let root = announced_root(&announced.root)?;
    // Found from outside: a folder with no checkpoint was "nothing to
    // accept", and keeping the gateway's checkpoint there trusted it.
    if !path.exists() {
        anyhow::bail!(
            "no checkpoint is kept in {}: this client has not followed the gateway's log \
             from there (check --out); nothing was changed",
            path.display()
        );
    }
    let mut compliance = ComplianceServiceClient::new(channel.clone());
    let keys = compliance
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .keys;
    let note = compliance
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .note;
    let new = verify::open_checkpoint(&note, &keys).context("the gateway's latest checkpoint")?;
    // The announcement is checked whether or not the log was rewritten.
    continues(&mut compliance, &new, announced.size, &root).await?;
    match Witness::connect(channel, path.clone()).await {
        Ok(_) => return Ok(Accepted::NotRewritten),
        Err(error) if is_rewritten(&error) => {}
        Err(error) => return Err(error),
    }
    let old_note =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let old = verify::open_checkpoint(&old_note, &keys)
        .with_context(|| format!("the checkpoint kept in {}", path.display()))?;
    let kept_at = PathBuf::from(format!(
        "{}.replaced-{}-{}",
        path.display(),
        old.checkpoint.size,
        &crate::domain::hex(&old.checkpoint.root)[..16]
    ));
    if !kept_at.exists() {
        std::fs::hard_link(&path, &kept_at)
            .with_context(|| format!("keeping the old checkpoint at {}", kept_at.display()))?;
    }
    write_durably(&path, new.note.as_bytes())
        .with_context(|| format!("keeping the checkpoint in {}", path.display()))?;
    tracing::warn!(
        old_size = old.checkpoint.size,
        old_root = %STANDARD.encode(old.checkpoint.root),
        new_size = new.checkpoint.size,
        new_root = %STANDARD.encode(new.checkpoint.root),
        announced_size = announced.size,
        announced_root = %announced.root,
        kept_at = %kept_at.display(),
        "accepted the gateway's restored log in place of the checkpoint kept"
    );
    Ok(Accepted::Replaced(Box::new(Replacement {
        old,
        new,
        kept_at,
    })))
}

fn announced_root(root: &str) -> anyhow::Result<Hash> {
    STANDARD
        .decode(root)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| format!("--root {root}: not 32 bytes of base64, as in a checkpoint note"))
}

/// Checks that the gateway's log, of `latest`'s size, continues the
/// announced checkpoint of `size` entries and root `root`.
async fn continues(
    compliance: &mut ComplianceServiceClient<Channel>,
    latest: &Verified,
    size: u64,
    root: &Hash,
) -> anyhow::Result<()> {
    let latest_size = latest.checkpoint.size;
    if size == 0 || size > latest_size {
        bail!(
            "the announced checkpoint of {size} entries is not in the gateway's log of \
             {latest_size} entries; nothing changed"
        );
    }
    let hashes = compliance
        .get_consistency_proof(GetConsistencyProofRequest {
            old_size: size,
            new_size: latest_size,
        })
        .await
        .map_err(status)?
        .into_inner()
        .hashes;
    let proof = hashes
        .iter()
        .map(|h| Hash::try_from(h.as_slice()))
        .collect::<Result<Vec<Hash>, _>>()
        .map_err(|_| anyhow!("the consistency proof holds a hash that is not 32 bytes"))?;
    merkle::verify_consistency(size, latest_size, root, &latest.checkpoint.root, &proof).map_err(
        |error| {
            anyhow!(
                "the gateway's log of {latest_size} entries does not continue the announced \
                 checkpoint of {size} entries (root {}): {error}; nothing changed",
                STANDARD.encode(root)
            )
        },
    )
}

/// `minegate energy|finance accept-restored-log`: accepts the restored log
/// for the checkpoint kept at `path`, as the client `tls` names, and says
/// what it did.
pub async fn run_accept(
    tls: &crate::client::ClientTls,
    path: PathBuf,
    announced: &Announced,
) -> anyhow::Result<std::process::ExitCode> {
    let channel = tls.connect().await?;
    let accepted = accept_restored_log(channel, path.clone(), announced).await?;
    println!("{}", describe(&accepted, &path));
    Ok(std::process::ExitCode::SUCCESS)
}

/// The message of an accepted restored log, or of nothing to accept.
fn describe(accepted: &Accepted, path: &Path) -> String {
    match accepted {
        Accepted::NotRewritten => format!(
            "nothing to accept: the checkpoint kept in {} is consistent with the gateway's log",
            path.display()
        ),
        Accepted::Replaced(replaced) => format!(
            "accepted the restored log: the checkpoint kept in {} of {} entries (root {}) is \
             replaced by the gateway's of {} entries (root {}); the old one is kept at {}",
            path.display(),
            replaced.old.checkpoint.size,
            STANDARD.encode(replaced.old.checkpoint.root),
            replaced.new.checkpoint.size,
            STANDARD.encode(replaced.new.checkpoint.root),
            replaced.kept_at.display()
        ),
    }
}
