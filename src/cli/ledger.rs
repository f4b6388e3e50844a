//! `minegate ledger verify`: recompute the ledger's hash chain straight from
//! the database the configuration names.

use std::{process::ExitCode, sync::Arc};

use clap::Subcommand;

use crate::{
    config::Config,
    store::{self, SystemClock},
};

#[derive(Debug, Subcommand)]
pub enum LedgerCommand {
    /// Recompute every entry's hash; name the first entry that does not match.
    Verify,
}

pub async fn run(command: LedgerCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match command {
        LedgerCommand::Verify => {
            let store = store::open(
                &config.database_url,
                Arc::new(SystemClock),
                store::Signing::ReadOnly,
            )
            .await?;
            let report = store::verify_ledger(&*store).await?;
            store.close().await;
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
    }
}
