//! The embedded default: one SQLite file through rusqlite, in WAL mode with
//! `synchronous=FULL`, so a filing that got a receipt survives power loss.
//! A dedicated writer thread owns the one writing connection
//! (`writer`); reads run on a few connections of their own, on tokio's
//! blocking threads (`Readers`), so neither ever waits on the async
//! runtime. One gateway process per file.

mod facts;
mod migrations;
mod reads;
mod tree;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, watch};

use super::{
    AckBuilder, Change, Clock, DeliveryRecord, DocumentRecord, FetchedDocument, FindingQuery,
    FindingRow, FormAck, FormAckOutcome, FormPublication, Gauges, JobQueue, NewDocument,
    ObligationQuery, PendingExtract, QueuedAttempts, RegisterQuery, RegisterRow, ReportForForm,
    Signing, Store, StoreError, StoredCheckpoint, StoredFiling, Submission, SubmitOutcome,
};
use crate::domain::{Sha256Hex, ledger::LedgerEntry, obligation::Obligation, quantities::Quarter};
use crate::{
    evidence::{merkle::Hash, tree::NodeId},
    files,
    signing::{self as keys, Admission, KeyRecord},
};

/// How long a connection waits for another's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections open at most at once.
const READERS: usize = 4;

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode::*;
        match error.sqlite_error_code() {
            // The file is locked, cannot be read or written, or is gone.
            Some(
                DatabaseBusy | DatabaseLocked | SystemIoFailure | DiskFull | CannotOpen | ReadOnly
                | OutOfMemory,
            ) => StoreError::Unavailable(error.to_string()),
            _ => StoreError::Database(error.to_string()),
        }
    }
}

pub struct SqliteStore {
    readers: Arc<Readers>,
    jobs: JobQueue,
    changes: watch::Sender<Change>,
}

/// The schema version a database holding every migration has.
pub const LATEST_SCHEMA: i64 = migrations::LATEST;

/// The schema version of the database file at `path`, read without making
/// or changing a file. With no `-wal` beside it, no gateway has it open:
/// it is read as immutable, which makes no `-wal` or `-shm` (made by
/// another user, as root running `check-config`, they would lock the
/// gateway out). With one, it is read through them, read-only.
pub fn schema_version(path: &Path) -> Result<i64, StoreError> {
    let conn = open_to_look(path)?;
    Ok(migrations::applied_version(&conn)?)
}

/// The key history of the database at `path`, oldest first; empty before
/// the database has one. Read as [`schema_version`] reads.
pub fn key_history(path: &Path) -> Result<Vec<crate::signing::KeyRecord>, StoreError> {
    let conn = open_to_look(path)?;
    let history: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'signing_keys'",
        [],
        |row| row.get(0),
    )?;
    if history == 0 {
        return Ok(Vec::new());
    }
    tree::signing_keys(&conn)
}

/// Opens `path` to read without making or changing a file: see
/// [`schema_version`].
fn open_to_look(path: &Path) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI;
    let conn = if suffixed(path, "-wal").exists() {
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?
    } else {
        let escaped = path
            .to_string_lossy()
            .replace('%', "%25")
            .replace('?', "%3f")
            .replace('#', "%23");
        let uri = format!("file:{escaped}?immutable=1");
        // An error naming the file names the path, not the URI read by.
        Connection::open_with_flags(&uri, flags).map_err(|error| {
            let said = error.to_string().replace(&uri, &path.display().to_string());
            StoreError::Database(format!("{}: {said}", path.display()))
        })?
    };
    conn.busy_timeout(BUSY_TIMEOUT)?;
    Ok(conn)
}

/// Opens a connection to `path` with the settings every connection has.
fn connect(path: &Path, flags: OpenFlags) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

/// Makes the database's folder (0700) and an empty database file (0600)
/// if they are missing, so SQLite's `-wal` and `-shm`, which take the
/// database file's mode, are owner-only too; takes other users' access off
/// a database and journal files an earlier release left readable.
fn private_files(path: &Path) -> Result<(), StoreError> {
    let folder_error = |source| StoreError::Folder {
        path: path.display().to_string(),
        source,
    };
    if let Some(folder) = path.parent() {
        files::create_private_folder(folder).map_err(folder_error)?;
    }
    match files::create_private_file(path) {
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(folder_error(error)),
    }
    for file in [
        path.to_owned(),
        suffixed(path, "-wal"),
        suffixed(path, "-shm"),
    ] {
        match files::make_private(&file) {
            Ok(true) => tracing::warn!(
                file = %file.display(),
                "the database file was readable by other users; it is now its owner's only"
            ),
            Ok(false) => {}
            // Not its owner (a tool run by another user that reads it): the
            // owner's gateway tightens it when it starts.
            Err(error) => tracing::warn!(
                file = %file.display(),
                %error,
                "cannot make the database file its owner's only"
            ),
        }
    }
    Ok(())
}

/// `path` with `suffix` added to its file name (`minegate.db-wal`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates `sqlite://PATH` (or
    /// `sqlite:PATH`), and starts the writer thread.
    pub async fn open(
        url: &str,
        clock: Arc<dyn Clock>,
        signing: Signing,
    ) -> Result<SqliteStore, StoreError> {
        let path = database_path(url)?;
        private_files(&path)?;
        let opened = path.clone();
        let signer = signing.signer();
        let now = clock.now();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, StoreError> {
            let mut conn = connect(&opened, OpenFlags::default())?;
            // Before WAL is set, which rewrites the file's header: a
            // database of a newer release is refused untouched.
            migrations::refuse_newer(&conn)?;
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))?;
            if mode != "wal" {
                return Err(StoreError::Database(format!(
                    "journal_mode is {mode}, WAL could not be set"
                )));
            }
            conn.pragma_update(None, "synchronous", "FULL")?;
            // Each job's savepoint keeps a copy of every page the job first
            // changes (the statement journal): in memory, not spilled to a
            // temporary file, where it was half of the writer's writes.
            conn.pragma_update(None, "temp_store", "MEMORY")?;
            migrations::run(&mut conn)?;
            if let Signing::With {
                signer,
                add_unknown_key,
            } = &signing
            {
                let tx = conn.transaction()?;
                // The gateway that signs is the one process writing this
                // file: uploads unfinished now were cut off when the last one
                // stopped or died. Their chunks go.
                tx.execute_batch(
                    "DELETE FROM document_chunks WHERE upload_id IN (SELECT upload_id FROM uploads); \
                     DELETE FROM uploads;",
                )?;
                let history = tree::signing_keys(&tx)?;
                if keys::admit(&history, &signer.record(), *add_unknown_key)? == Admission::Add {
                    tree::add_signing_key(&tx, &signer.record(), None)?;
                }
                tree::seal(&tx, &mut signer.clone(), now)?;
                tx.commit()?;
            }
            Ok(conn)
        })
        .await
        .map_err(|error| StoreError::Database(format!("opening the database: {error}")))??;

        let (queue, jobs, done) = JobQueue::new(clock.clone());
        let (changes, _) = watch::channel(Change::default());
        let (writer_changes, writer_clock) = (changes.clone(), clock);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer::run(conn, writer_clock, signer, jobs, writer_changes);
                let _ = done.send(());
            })
            .map_err(|error| StoreError::Database(format!("starting the writer: {error}")))?;
        Ok(SqliteStore {
            readers: Arc::new(Readers::new(path)),
            jobs: queue,
            changes,
        })
    }

    async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.readers.clone().read(read).await
    }
}

/// The file named by a `sqlite:` URL (`sqlite://data/minegate.db`,
/// `sqlite:///var/lib/minegate/minegate.db`, `sqlite:x.db`), without any
/// `?options`.
pub fn database_path(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::UnknownScheme(url.to_owned()))?;
    let path = rest.split('?').next().unwrap_or_default();
    // `sqlite://user:secret@/path` would be a file under a folder named
    // after the user and secret.
    if path
        .split('/')
        .next()
        .is_some_and(|first| first.contains('@'))
    {
        return Err(StoreError::Database(format!(
            "{}: a SQLite database has no user or password (sqlite://PATH)",
            crate::files::redacted_url(url)
        )));
    }
    if path.is_empty() || path == ":memory:" {
        return Err(StoreError::Database(format!(
            "{url:?}: the database must be a file (sqlite://PATH)"
        )));
    }
    Ok(PathBuf::from(path))
}

/// The read connections: opened as needed, up to [`READERS`] at once, kept
/// for the next read. Each read runs on a blocking thread.
struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl Readers {
    fn new(path: PathBuf) -> Readers {
        Readers {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(READERS)),
        }
    }

    async fn read<T: Send + 'static>(
        self: Arc<Self>,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        tokio::task::spawn_blocking(move || {
            let idle = self.idle.lock().map(|mut idle| idle.pop()).ok().flatten();
            let conn = match idle {
                Some(conn) => conn,
                None => {
                    let conn = connect(&self.path, OpenFlags::default())?;
                    conn.pragma_update(None, "query_only", true)?;
                    conn
                }
            };
            let result = read(&conn);
            // A connection whose read failed for want of the database is
            // dropped: the next read opens a fresh one.
            if !matches!(result, Err(StoreError::Unavailable(_)))
                && let Ok(mut idle) = self.idle.lock()
            {
                idle.push(conn);
            }
            drop(permit);
            result
        })
        .await
        .map_err(|error| StoreError::Database(format!("a read stopped: {error}")))?
    }

    fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
        self.permits.close();
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError> {
        self.read(tree::latest).await
    }

    async fn checkpoints(
        &self,
        after_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError> {
        self.read(move |conn| tree::checkpoints(conn, after_size, limit))
            .await
    }

    async fn tree_nodes(&self, ids: Vec<NodeId>) -> Result<Vec<Option<Hash>>, StoreError> {
        self.read(move |conn| tree::nodes(conn, &ids)).await
    }

    async fn evidence(
        &self,
        kind: &'static str,
        subject: &str,
        digest: &Sha256Hex,
    ) -> Result<Option<super::LeafEvidence>, StoreError> {
        let (subject, digest) = (subject.to_owned(), digest.clone());
        self.read(move |conn| tree::evidence(conn, kind, &subject, &digest))
            .await
    }

    async fn signing_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.read(tree::signing_keys).await
    }

    async fn add_signing_key(&self, key: KeyRecord, retire: bool) -> Result<(), StoreError> {
        self.jobs.add_signing_key(key, retire).await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn gauges(&self, subscribers: &[String]) -> Result<Gauges, StoreError> {
        let subscribers = subscribers.to_vec();
        // Each job has its own savepoint here: no run is ever taken apart,
        // and `reads::gauges` says 0.
        self.read(move |conn| reads::gauges(conn, &subscribers))
            .await
    }

    async fn write_chunk(
        &self,
        upload_id: &str,
        index: u64,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.jobs.write_chunk(upload_id, index, data).await
    }

    async fn complete_upload(&self, document: NewDocument) -> Result<DocumentRecord, StoreError> {
        self.jobs.complete_upload(document).await
    }

    async fn abandon_upload(&self, upload_id: &str) -> Result<(), StoreError> {
        self.jobs.abandon_upload(upload_id).await
    }

    async fn sweep_uploads(&self, started_before: DateTime<Utc>) -> Result<u64, StoreError> {
        self.jobs.sweep_uploads(started_before).await
    }

    async fn document_chunk(
        &self,
        upload_id: &str,
        index: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let upload_id = upload_id.to_owned();
        self.read(move |conn| reads::document_chunk(conn, &upload_id, index))
            .await
    }

    async fn documents(&self, digests: &[Sha256Hex]) -> Result<Vec<DocumentRecord>, StoreError> {
        let digests = digests.to_vec();
        self.read(move |conn| reads::documents(conn, &digests))
            .await
    }

    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, StoreError> {
        self.jobs.submit(submission).await
    }

    async fn filing(&self, filing_id: &str) -> Result<Option<StoredFiling>, StoreError> {
        let filing_id = filing_id.to_owned();
        self.read(move |conn| reads::filing(conn, &filing_id)).await
    }

    async fn register(&self, query: &RegisterQuery) -> Result<Vec<RegisterRow>, StoreError> {
        let query = query.clone();
        self.read(move |conn| reads::register(conn, &query)).await
    }

    async fn ledger_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(move |conn| reads::ledger_page(conn, after_seq, limit))
            .await
    }

    async fn close(&self) {
        // The writer stops once the jobs queued before this have committed.
        self.jobs.stop().await;
        self.readers.close();
    }

    fn changes(&self) -> watch::Receiver<Change> {
        self.changes.subscribe()
    }

    async fn pending_extracts(
        &self,
        subscriber: &str,
        from_seq: i64,
        limit: u32,
        skip: &[i64],
    ) -> Result<Vec<PendingExtract>, StoreError> {
        let subscriber = subscriber.to_owned();
        let skip: std::collections::HashSet<i64> = skip.iter().copied().collect();
        self.read(move |conn| reads::pending_extracts(conn, &subscriber, from_seq, limit, &skip))
            .await
    }

    async fn acknowledged(
        &self,
        subscriber: &str,
        extract_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let (subscriber, extract_ids) = (subscriber.to_owned(), extract_ids.to_vec());
        self.read(move |conn| reads::acknowledged(conn, &subscriber, &extract_ids))
            .await
    }

    async fn queue_attempts(
        &self,
        extract_ids: Vec<String>,
        failed: Vec<(String, String)>,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<QueuedAttempts, StoreError> {
        self.jobs
            .queue_attempts(extract_ids, failed, subscriber, sent_at)
            .await
    }

    fn try_queue_sending(
        &self,
        extract_id: &str,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<Option<QueuedAttempts>, StoreError> {
        self.jobs.try_queue_sending(extract_id, subscriber, sent_at)
    }

    async fn acknowledge_extract(
        &self,
        extract_id: &str,
        subscriber: &str,
        build: AckBuilder,
    ) -> Result<Option<super::Recorded>, StoreError> {
        self.jobs
            .acknowledge_extract(extract_id, subscriber, build)
            .await
    }

    async fn extract_sent_to(
        &self,
        extract_id: &str,
        subscriber: &str,
    ) -> Result<bool, StoreError> {
        let (extract_id, subscriber) = (extract_id.to_owned(), subscriber.to_owned());
        self.read(move |conn| reads::extract_sent_to(conn, &extract_id, &subscriber))
            .await
    }

    async fn document_for(
        &self,
        sha256: &str,
        subscriber: &str,
    ) -> Result<Option<FetchedDocument>, StoreError> {
        let (sha256, subscriber) = (sha256.to_owned(), subscriber.to_owned());
        self.read(move |conn| reads::document_for(conn, &sha256, &subscriber))
            .await
    }

    async fn reports_for_form(&self, quarter: Quarter) -> Result<Vec<ReportForForm>, StoreError> {
        self.read(move |conn| reads::reports_for_form(conn, quarter))
            .await
    }

    async fn form_revision(
        &self,
        quarter: Quarter,
        revision: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(move |conn| reads::form_revision(conn, quarter, revision))
            .await
    }

    async fn publish_form(&self, publication: FormPublication) -> Result<Vec<u8>, StoreError> {
        self.jobs.publish_form(publication).await
    }

    async fn acknowledge_form(&self, ack: FormAck) -> Result<FormAckOutcome, StoreError> {
        self.jobs.acknowledge_form(ack).await
    }

    async fn obligations(&self, query: &ObligationQuery) -> Result<Vec<Obligation>, StoreError> {
        let query = query.clone();
        self.read(move |conn| reads::obligations(conn, &query))
            .await
    }

    async fn mark_overdue(&self, today: NaiveDate) -> Result<Vec<Obligation>, StoreError> {
        self.jobs.mark_overdue(today).await
    }

    async fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRow>, StoreError> {
        let query = query.clone();
        self.read(move |conn| reads::findings(conn, &query)).await
    }

    async fn reported_quarters(
        &self,
        bins: &[String],
    ) -> Result<Vec<(String, i32, u32)>, StoreError> {
        let bins = bins.to_vec();
        self.read(move |conn| reads::reported_quarters(conn, &bins))
            .await
    }

    async fn delivery(&self, filing_id: &str) -> Result<Option<DeliveryRecord>, StoreError> {
        let filing_id = filing_id.to_owned();
        self.read(move |conn| reads::delivery(conn, &filing_id))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_url_names_a_relative_or_absolute_file_and_options_are_dropped() {
        let path = |url: &str| database_path(url).map(|p| p.display().to_string());
        assert_eq!(
            path("sqlite://data/minegate.db").unwrap(),
            "data/minegate.db"
        );
        assert_eq!(
            path("sqlite:///var/lib/minegate/minegate.db").unwrap(),
            "/var/lib/minegate/minegate.db"
        );
        assert_eq!(path("sqlite:x.db?mode=rwc").unwrap(), "x.db");
        assert_eq!(
            path("sqlite::memory:").unwrap_err().to_string(),
            "database: \"sqlite::memory:\": the database must be a file (sqlite://PATH)"
        );
    }

    /// Found from outside: the journal mode was set to WAL, rewriting the
    /// file's header, before the version was read and the file refused.
    #[tokio::test]
    async fn a_database_of_a_newer_release_is_refused_byte_for_byte_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (x); PRAGMA user_version = 99;")
            .unwrap();
        drop(conn);
        let before = std::fs::read(&path).unwrap();
        let url = format!("sqlite://{}", path.display());
        let refused =
            SqliteStore::open(&url, Arc::new(crate::store::SystemClock), Signing::ReadOnly)
                .await
                .err()
                .unwrap();
        assert_eq!(
            refused.to_string(),
            "database migration: the database is at schema version 99, newer than this \
             release knows (6): run the release that wrote it"
        );
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("newer.db-wal").exists());
    }
}
