//! `minegate signing rotate` and `minegate signing keys`: the gateway's key
//! history, straight from the database the configuration names.
//!
//! A rotation makes a new key, records it in the history and retires the
//! old one there, then puts the new key at `signing.key` and keeps the old
//! file beside it (`signing.key.retired-KEYID`). Evidence signed before
//! still verifies: the history keeps every key. Gateways sign with the key
//! they started with, so restart each replica with the new key file; one
//! started with the retired key refuses to start.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::{
    config::Config,
    signing::{self, Signer},
    store::{self, Clock, SystemClock},
};

#[derive(Debug, Subcommand)]
pub enum SigningCommand {
    /// Make a new signing key and retire the current one in the key history.
    Rotate,
    /// List the key history: every key that signed checkpoints here.
    Keys,
}

pub async fn run(command: SigningCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = store::open(
        &config.database_url,
        Arc::new(SystemClock),
        store::Signing::ReadOnly,
    )
    .await?;
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
    let current = Signer::load_or_create(path, &config.signing.origin)?;
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
    signing::write_new_key(&fresh).map_err(|reason| anyhow::anyhow!("{reason}"))?;
    let new = Signer::load_or_create(&fresh, &config.signing.origin)?;
    store
        .add_signing_key(new.record(), Some(SystemClock.now()))
        .await
        .context("recording the new key in the history")?;
    let retired = PathBuf::from(format!("{}.retired-{}", path.display(), current.key_id()));
    std::fs::rename(path, &retired)
        .and_then(|()| std::fs::rename(&fresh, path))
        .with_context(|| format!("putting the new key at {}", path.display()))?;
    println!(
        "signing key {} retired (kept at {}); key {} now at {}\n\
         restart every gateway replica with the new key file",
        current.key_id(),
        retired.display(),
        new.key_id(),
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
