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
    let mut stop = Stop::catch()?;
    let live = sqlite_file(config, "backup")?;
    if !live.is_file() {
        bail!("there is no database at {}", live.display());
    }
    if let Some(to) = &args.to {
        refuse_taken_or_folder(to)?;
    }
    let names = args.names(chrono::Utc::now());
    if let Some(folder) = names[0].parent().filter(|p| !p.as_os_str().is_empty()) {
        files::create_private_leaf(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    let partial = Partial::beside(&names[0])?;
    let copying = Copying::default();
    let work = async {
        copy_live(&live, partial.path(), &copying).await?;
        verify_and_summarise(partial.path())
            .await
            .map_err(|error| error.context("the copy did not verify; no backup was written"))
    };
    let made = stop.run(work, || copying.interrupt()).await?;
    let to = settle_as_new(partial, &names)?;
    let bytes = fs::metadata(&to)?.len();
    println!(
        "backup written to {} ({bytes} bytes)\n{made}\n\
         not in the backup: the signing key ({}) and the PKI; keep them safe apart",
        to.display(),
        config.signing.key.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A `--to` that names a file already there (a dangling link too), or a
/// folder, is refused before anything is copied.
fn refuse_taken_or_folder(to: &Path) -> anyhow::Result<()> {
    if to.as_os_str().to_string_lossy().ends_with('/') || to.is_dir() {
        bail!(
            "{} is a folder: --to names the file to write (--into a folder)",
            to.display()
        );
    }
    if fs::symlink_metadata(to).is_ok() {
        bail!(
            "{} exists: a backup never overwrites a file; name a new one",
            to.display()
        );
    }
    Ok(())
}

/// Copies the live database into the empty file `partial` (one read
/// transaction, beside the gateway's writer); `copying` can cut it short.
async fn copy_live(live: &Path, partial: &Path, copying: &Copying) -> anyhow::Result<()> {
    let (live, copy, copying) = (live.to_owned(), partial.to_owned(), copying.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let conn = Connection::open_with_flags(
            &live,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        copying.started(conn.get_interrupt_handle())?;
        conn.execute("VACUUM INTO ?1", [copy.to_string_lossy()])
            .with_context(|| format!("copying {} to {}", live.display(), copy.display()))?;
        Ok(())
    })
    .await?
}

/// A copy's SQLite statement, to interrupt when the command is stopped.
#[derive(Clone, Default)]
struct Copying(Arc<std::sync::Mutex<(bool, Option<rusqlite::InterruptHandle>)>>);

impl Copying {
    /// Keeps `handle`, unless the command was stopped already.
    fn started(&self, handle: rusqlite::InterruptHandle) -> anyhow::Result<()> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 {
            bail!("stopped before the copy began");
        }
        state.1 = Some(handle);
        Ok(())
    }

    fn interrupt(&self) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.0 = true;
        if let Some(handle) = state.1.take() {
            handle.interrupt();
        }
    }
}

/// SIGTERM and SIGINT (a systemd stop, ^C), caught from the command's
/// start, so neither ends it before it has removed what it made.
struct Stop {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Stop {
    fn catch() -> anyhow::Result<Stop> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Stop {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// `work`'s result; or, if a signal comes first, `interrupt` is called
    /// and, once `work` has ended (nothing writes the partial copy any
    /// more), an error, on whose way out the partial copy is removed.
    async fn run<T>(
        &mut self,
        work: impl std::future::Future<Output = anyhow::Result<T>>,
        interrupt: impl FnOnce(),
    ) -> anyhow::Result<T> {
        tokio::pin!(work);
        let signal = tokio::select! {
            done = &mut work => return done,
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        };
        interrupt();
        let _ = work.await;
        bail!("stopped by {signal}; the partial copy was removed")
    }
}

/// A copy being made, beside the name it will take: `.NAME.partial-PID`,
/// so that runs at once never share one. It holds every filing (names,
/// BIN/IIN, bank details): made empty and owner-only first (VACUUM INTO
/// fills an empty file), so no moment finds it readable by others, whatever
/// the umask. Removed, with any journal SQLite left beside it, unless it
/// was given its name.
struct Partial(Option<PathBuf>);

impl Partial {
    fn beside(name: &Path) -> anyhow::Result<Partial> {
        let path = beside(name, &format!("partial-{}", std::process::id()))?;
        remove_if_present(&path)?;
        files::create_private_file(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Partial(Some(path)))
    }

    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    /// The path, no longer removed on drop.
    fn settled(mut self) -> PathBuf {
        self.0.take().unwrap_or_default()
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let _ = fs::remove_file(suffixed(&path, suffix));
            }
        }
    }
}

pub async fn restore(args: RestoreArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let mut stop = Stop::catch()?;
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
    if fs::symlink_metadata(&target).is_ok() {
        bail!(
            "{} exists (a link): restore writes only where there is nothing",
            target.display()
        );
    }
    if let Some(folder) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        files::create_private_folder(folder)
            .with_context(|| format!("creating {}", folder.display()))?;
    }
    // Owner-only whatever the backup's own mode (fs::copy would keep it).
    let partial = Partial::beside(&target)?;
    let work = async {
        let mut to = File::options().write(true).open(partial.path())?;
        std::io::copy(&mut File::open(&args.from)?, &mut to)
            .and_then(|_| to.sync_all())
            .with_context(|| format!("copying {}", args.from.display()))?;
        verify_and_summarise(partial.path())
            .await
            .map_err(|error| error.context("the backup did not verify; nothing was restored"))
    };
    let summary = stop.run(work, || ()).await?;
    settle_as_new(partial, std::slice::from_ref(&target))?;
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
    // An empty file is an empty SQLite database, which opening would make
    // a new gateway's: a copy with no schema is no copy.
    let looked = path.to_owned();
    if tokio::task::spawn_blocking(move || store::sqlite::schema_version(&looked)).await?? == 0 {
        bail!(
            "{} holds no minegate database (no schema in it)",
            path.display()
        );
    }
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
fn settle_as_new(partial: Partial, names: &[PathBuf]) -> anyhow::Result<PathBuf> {
    File::open(partial.path())?.sync_all()?;
    let name = link_as_new(partial.path(), names)?;
    fs::remove_file(partial.settled())?;
    sync_folder(&name)?;
    Ok(name)
}

/// Links `partial` as the first of `names` no file has; which one.
fn link_as_new(partial: &Path, names: &[PathBuf]) -> anyhow::Result<PathBuf> {
    for name in names {
        match fs::hard_link(partial, name) {
            Ok(()) => return Ok(name.clone()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            // A file system with no links: a copy, made as new.
            Err(_) if fs::symlink_metadata(name).is_err() => {
                let mut to = files::create_private_file(name)?;
                std::io::copy(&mut File::open(partial)?, &mut to)?;
                to.sync_all()?;
                return Ok(name.clone());
            }
            Err(error) => {
                return Err(error)
                    .with_context(|| format!("naming {} {}", partial.display(), name.display()));
            }
        }
    }
    bail!(
        "{} was taken meanwhile (another run?); nothing was written",
        names
            .last()
            .map_or(String::new(), |n| n.display().to_string()),
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
