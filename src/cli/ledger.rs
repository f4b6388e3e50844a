//! `minegate ledger verify` and `minegate ledger checkpoint`, straight from
//! the database the configuration names.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::{
    config::Config,
    evidence::note::Checkpoint,
    store::{self, Store},
};

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every entry's hash; name the first entry that does not match.
    Verify,
    /// The latest signed checkpoint: its size and root, what the operators
    /// announce to the ministries' clients after a restore, and its note.
    Checkpoint,
}

pub async fn run(command: LedgerCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let store = store::open_existing(&config.database_url).await?;
    let result = match command {
        LedgerCommand::Verify => verify(&*store).await,
        LedgerCommand::Checkpoint => checkpoint(&*store).await,
    };
    store.close().await;
    result
}

async fn verify(store: &dyn Store) -> anyhow::Result<ExitCode> {
    let report = store::verify_ledger(store).await?;
    match report.first_broken {
        None => {
            println!(
                "ledger intact: {} entries, head {}; Merkle tree recomputed, {} signed checkpoints verified",
                report.entries_checked, report.head_hash, report.checkpoints_checked
            );
            Ok(ExitCode::SUCCESS)
        }
        Some((seq, reason)) => {
            println!("ledger BROKEN at entry {seq}: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn checkpoint(store: &dyn Store) -> anyhow::Result<ExitCode> {
    let latest = store
        .latest_checkpoint()
        .await?
        .context("the ledger has no signed checkpoint yet")?;
    let text = latest.note.split("\n\n").next().unwrap_or_default();
    let parsed = Checkpoint::parse(text).context("the latest checkpoint's note")?;
    let root = text.lines().nth(2).unwrap_or_default();
    println!(
        "size {}\nroot {root}\nsigned {}\n\n{}",
        parsed.size,
        latest.signed_at.format("%Y-%m-%dT%H:%M:%SZ"),
        latest.note.trim_end()
    );
    Ok(ExitCode::SUCCESS)
}
