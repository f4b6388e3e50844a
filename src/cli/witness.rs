//! A ministry's witness of the gateway's log. The last checkpoint it
//! verified is kept in a file beside what it writes; at every connection
//! the gateway's latest checkpoint must be signed by a published key and
//! consistent with it (the older tree a prefix of the newer), and so must
//! the checkpoint of every artifact's evidence. A gateway that rewrote its
//! log, or served a shorter tree after a longer one, is reported with both
//! checkpoints; the caller then writes and acknowledges nothing more.

use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use tonic::transport::Channel;

use super::energy::write_durably;
use crate::{
    evidence::verify::{self, ArtifactKind, EvidenceError, Verified},
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
        let (old, new) = if seen.checkpoint.size >= last.checkpoint.size {
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
            // lost or rewritten it.
            Err(status) if status.code() == tonic::Code::InvalidArgument => {
                return Err(EvidenceError::Rewritten {
                    old_size: old.checkpoint.size,
                    new_size: new.checkpoint.size,
                    error: crate::evidence::merkle::ProofError::SizesOutOfOrder {
                        old_size: new.checkpoint.size,
                        new_size: old.checkpoint.size,
                    },
                    old_note: old.note,
                    new_note: new.note,
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
