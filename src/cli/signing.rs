//! `minegate signing rotate` and `minegate signing keys`: the gateway's key
//! history, straight from the database the configuration names.
//!
//! A rotation makes a new key (owned like the old file, mode 0600, so a
//! rotation run as root leaves a key the service's user can read), puts it
//! at `signing.key` keeping the old file beside it
//! (`signing.key.retired-KEYID`), then records it in the history and
//! retires the old one there, in one transaction under the writers' lock,
//! at an instant taken inside it and never before the latest checkpoint's.
//! Evidence signed before still verifies: the history keeps every key.
//!
//! A running gateway need not stop: each commit that signs a checkpoint
//! first looks its key up in the history, in the same transaction, under
//! the same lock. Retired, it reads the file at `signing.key` again and
//! signs with that key if the history has it valid; else the commit fails
//! (no checkpoint is ever signed by a key after its retirement) and the
//! next one tries again, which is how a replica on another machine waits
//! for its copy of the new key. One started with the retired key refuses
//! to start.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::{
    config::Config,
    signing::{self, Signer},
    store,
};

#[derive(Debug, Subcommand)]
pub enum SigningCommand {
    /// Make a new signing key and retire the current one in the key history.
    Rotate,
    /// List the key history: every key that signed checkpoints here.
    Keys,
}

pub async fn run(command: SigningCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = store::open_existing(&config.database_url).await?;
    let result = match command {
        SigningCommand::Keys => keys(&*store).await,
        SigningCommand::Rotate => rotate(&*store, config).await,
    };
    store.close().await;
    result
}

async fn keys(store: &dyn store::Store) -> anyhow::Result<ExitCode> {
    for key in store.signing_keys().await? {
        println!(
            "{}  created {}  {}  {}",
            key.key_id,
            key.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
            key.retired_at.map_or("in use".to_owned(), |at| format!(
                "retired {}",
                at.format("%Y-%m-%dT%H:%M:%SZ")
            )),
            key.verifier_key()
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn rotate(store: &dyn store::Store, config: &Config) -> anyhow::Result<ExitCode> {
    let path = &config.signing.key;
    if !path.exists() {
        bail!("no signing key at {}: nothing to rotate", path.display());
    }
    let current = Signer::load(path, &config.signing.origin)?;
    let history = store.signing_keys().await?;
    if signing::admit(&history, &current.record(), false)? != signing::Admission::Known {
        bail!(
            "the key at {} is not in the key history yet: start the gateway with it once first",
            path.display()
        );
    }
    let fresh = PathBuf::from(format!("{}.new", path.display()));
    if fresh.exists() {
        bail!(
            "{} exists: an earlier rotation did not finish; remove it and retry",
            fresh.display()
        );
    }
    let owner = owner_of(path).with_context(|| format!("reading {}", path.display()))?;
    signing::write_new_key(&fresh, owner)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", fresh.display()))?;
    let new = Signer::load(&fresh, &config.signing.origin)?;
    let retired = PathBuf::from(format!("{}.retired-{}", path.display(), current.key_id()));
    // The file first, the history second: until the history retires the
    // old key, running gateways go on signing with it, as they may; once
    // it does, their next commit finds the new key already in place.
    std::fs::hard_link(path, &retired)
        .and_then(|()| std::fs::rename(&fresh, path))
        .with_context(|| format!("putting the new key at {}", path.display()))?;
    if let Err(error) = store.add_signing_key(new.record(), true).await {
        // The history does not know the new key: the old one goes back.
        std::fs::rename(&retired, path)
            .with_context(|| format!("putting the old key back at {}", path.display()))?;
        return Err(error).context("recording the new key in the history (nothing changed)");
    }
    println!(
        "signing key {} retired (kept at {}); key {} now at {}\n\
         gateways using {} sign with it from their next commit; copy it to every replica \
         on another machine (each fails its writes until it has it)",
        current.key_id(),
        retired.display(),
        new.key_id(),
        path.display(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The (uid, gid) owning `path`: the new key is given to them, so a
/// rotation run as root leaves a key the service's user can read.
fn owner_of(path: &Path) -> std::io::Result<Option<(u32, u32)>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path)?;
        Ok(Some((metadata.uid(), metadata.gid())))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}
