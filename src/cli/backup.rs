//! `minegate backup --to FILE` and `minegate restore --from FILE`: the
//! embedded SQLite database copied while the gateway serves, and put back
//! into an empty place. Both verify the copy's ledger (hash chain, Merkle
//! tree, signed checkpoints) before they report success, and say what it
//! holds. PostgreSQL is backed up with its own tools (docs/operations.md).
//!
//! The copy is SQLite's `VACUUM INTO`: one read transaction on the live
//! database, so the copy is the database as of one commit, taken beside the
//! gateway's writer without stopping it. Neither the signing key nor the PKI
//! is in the copy; they are kept safe apart.

use std::{
    fs::{self, File},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::Args;
use rusqlite::{Connection, OpenFlags};

use crate::{
    config::Config,
    files,
    store::{self, SystemClock, sqlite::database_path},
};

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct BackupArgs {
    /// The file to write the copy to; it must not exist. A missing folder
    /// is made, owner only (0700); its parent must exist.
    #[arg(long)]
    pub to: Option<PathBuf>,
    /// The folder to write the copy into, named for the moment it is taken:
    /// minegate-YYYY-MM-DDTHHMMSSZ.db (UTC; -2, -3 … after the second
    /// taken in the same second). A missing folder is made, owner only
    /// (0700); its parent must exist.
    #[arg(long)]
    pub into: Option<PathBuf>,
}

/// How many copies `--into` names within one second.
const NAMES_A_SECOND: u32 = 100;

impl BackupArgs {
    /// The names the copy may take, in the order tried: `--to`, else the
    /// names of this moment in `--into`.
    fn names(&self, now: chrono::DateTime<chrono::Utc>) -> Vec<PathBuf> {
        match (&self.to, &self.into) {
            (Some(to), _) => vec![to.clone()],
            (None, Some(folder)) => (1..=NAMES_A_SECOND)
                .map(|n| folder.join(backup_name(now, n)))
                .collect(),
            (None, None) => unreachable!("clap requires --to or --into"),
        }
    }
}

/// The `n`th name `--into` gives a backup taken at `now`: in time order
/// when listed, and unique, since a name taken goes to the next `n`.
pub fn backup_name(now: chrono::DateTime<chrono::Utc>, n: u32) -> String {
    let moment = now.format("%Y-%m-%dT%H%M%SZ");
    match n {
        1 => format!("minegate-{moment}.db"),
        n => format!("minegate-{moment}-{n}.db"),
    }
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A copy written by `minegate backup`.
    #[arg(long)]
    pub from: PathBuf,
}

/// What a verified copy holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub filings: i64,
    pub documents: i64,
    pub ledger_entries: u64,
    pub head: String,
    pub checkpoints: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "  filings         {}", self.filings)?;
        writeln!(f, "  documents       {}", self.documents)?;
        writeln!(f, "  ledger entries  {}", self.ledger_entries)?;
        writeln!(f, "  ledger head     {}", self.head)?;
        write!(
            f,
            "  verified        hash chain, Merkle tree, {} signed checkpoints",
            self.checkpoints
        )
    }
}

/// The SQLite file of the configuration, or why backup and restore do not
/// apply.
fn sqlite_file(config: &Config, verb: &str) -> anyhow::Result<PathBuf> {
    if config.database_url.starts_with("postgres") {
        bail!(
            "`minegate {verb}` is for the embedded SQLite database; this gateway uses PostgreSQL: \
             use pg_dump and pg_restore as docs/operations.md describes"
        );
    }
    Ok(database_path(&config.database_url)?)
}

pub async fn backup(args: BackupArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let live = sqlite_file(config, "backup")?;
    if !live.is_file() {
        bail!("there is no database at {}", live.display());
    }
    let names = args.names(chrono::Utc::now());
    if let Some(to) = &args.to
        && to.exists()
    {
        bail!(
            "{} exists: a backup never overwrites a file; name a new one",
            to.display()
        );
    }
    if let Some(folder) = names[0].parent().filter(|p| !p.as_os_str().is_empty()) {
        files::create_private_leaf(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    // Each run its own partial file, so runs at once never share one.
    let partial = beside(&names[0], &format!("partial-{}", std::process::id()))?;
    remove_if_present(&partial)?;
    // It holds every filing (names, BIN/IIN, bank details): made empty and
    // owner-only first (VACUUM INTO fills an empty file), so no moment
    // finds the copy readable by others, whatever the umask.
    files::create_private_file(&partial)
        .with_context(|| format!("creating {}", partial.display()))?;
    let copy = partial.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let conn = Connection::open_with_flags(
            &live,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .with_context(|| format!("copying {} to {}", live.display(), copy.display()))?;
        Ok(())
    })
    .await??;
    let summary = match verify_and_summarise(&partial).await {
        Ok(summary) => summary,
        Err(error) => {
            let _ = fs::remove_file(&partial);
            return Err(error.context("the copy did not verify; no backup was written"));
        }
    };
    let to = settle_as_new(&partial, &names)?;
    let bytes = fs::metadata(&to)?.len();
    println!(
        "backup written to {} ({bytes} bytes)\n{summary}\n\
         not in the backup: the signing key ({}) and the PKI; keep them safe apart",
        to.display(),
        config.signing.key.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn restore(args: RestoreArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let target = sqlite_file(config, "restore")?;
    for existing in [
        target.clone(),
        suffixed(&target, "-wal"),
        suffixed(&target, "-shm"),
    ] {
        if existing.exists() {
            bail!(
                "{} exists: restore writes only where there is no database; \
                 stop the gateway and move the database away first",
                existing.display()
            );
        }
    }
    if !args.from.is_file() {
        bail!("there is no backup at {}", args.from.display());
    }
    if let Some(folder) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        files::create_private_folder(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    let partial = beside(&target, "partial")?;
    remove_if_present(&partial)?;
    // Owner-only whatever the backup's own mode (fs::copy would keep it).
    let copied = files::create_private_file(&partial).and_then(|mut to| {
        std::io::copy(&mut File::open(&args.from)?, &mut to)?;
        to.sync_all()
    });
    copied.with_context(|| format!("copying {} to {}", args.from.display(), partial.display()))?;
    let summary = match verify_and_summarise(&partial).await {
        Ok(summary) => summary,
        Err(error) => {
            let _ = fs::remove_file(&partial);
            return Err(error.context("the backup did not verify; nothing was restored"));
        }
    };
    settle_as_new(&partial, std::slice::from_ref(&target))?;
    println!(
        "restored {} into {}\n{summary}\n\
         start the gateway with the signing key it had (signing.key = {}); \
         if that key is lost, start with a new one and `minegate serve --add-signing-key`",
        args.from.display(),
        target.display(),
        config.signing.key.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Opens the copy as the gateway would (read-only signing), verifies its
/// whole ledger, counts what it holds, and leaves it one self-contained
/// file (rollback journal, no `-wal` beside it; the gateway turns WAL on
/// again when it opens it).
pub async fn verify_and_summarise(path: &Path) -> anyhow::Result<Summary> {
    let url = format!("sqlite://{}", path.display());
    let opened = store::open(&url, Arc::new(SystemClock), store::Signing::ReadOnly).await?;
    let report = store::verify_ledger(&*opened).await;
    opened.close().await;
    let report = report?;
    if let Some((seq, reason)) = report.first_broken {
        bail!("the ledger is broken at entry {seq}: {reason}");
    }
    let path = path.to_owned();
    let (filings, documents) =
        tokio::task::spawn_blocking(move || -> anyhow::Result<(i64, i64)> {
            let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
            let count = |table: &str| -> rusqlite::Result<i64> {
                conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                    row.get(0)
                })
            };
            let counts = (count("filings")?, count("documents")?);
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "delete", |row| row.get(0))?;
            if mode != "delete" {
                bail!("could not make {} one self-contained file", path.display());
            }
            Ok(counts)
        })
        .await??;
    Ok(Summary {
        filings,
        documents,
        ledger_entries: report.entries_checked,
        head: report.head_hash,
        checkpoints: report.checkpoints_checked,
    })
}

/// `.NAME.what` in the folder of `path`.
fn beside(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file name", path.display()))?;
    Ok(path.with_file_name(format!(".{}.{what}", name.to_string_lossy())))
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            Err(error).with_context(|| format!("removing {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Makes the finished `partial` durable and gives it the first of `names`
/// no file has, durably; which one. A link, not a rename, so a file that
/// appeared meanwhile is never replaced.
fn settle_as_new(partial: &Path, names: &[PathBuf]) -> anyhow::Result<PathBuf> {
    File::open(partial)?.sync_all()?;
    for name in names {
        match fs::hard_link(partial, name) {
            Ok(()) => {
                fs::remove_file(partial)?;
                sync_folder(name)?;
                return Ok(name.clone());
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // A file system with no links: a rename, after a look.
            Err(_) if !name.exists() => {
                fs::rename(partial, name).with_context(|| {
                    format!("renaming {} to {}", partial.display(), name.display())
                })?;
                sync_folder(name)?;
                return Ok(name.clone());
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("naming {} {}", partial.display(), name.display()));
            }
        }
    }
    bail!(
        "{} appeared meanwhile; the copy is left at {}",
        names
            .last()
            .map_or(String::new(), |n| n.display().to_string()),
        partial.display()
    )
}

/// Makes the entry of `path` in its folder durable.
fn sync_folder(path: &Path) -> anyhow::Result<()> {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(folder)?.sync_all()?;
    Ok(())
}
