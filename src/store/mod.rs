//! Durable storage behind one interface, [`Store`], with two backends, each
//! in its own module with its own SQL, connections, writer and migrations:
//! [`sqlite`] (`sqlite://PATH`, the embedded default, through rusqlite) and
//! [`postgres`] (`postgres://…`, several gateway replicas sharing one
//! database, through sqlx). The URL's scheme chooses.
//!
//! Every write is a `Job` for the backend's one writer, which commits
//! whatever jobs are waiting in one transaction and answers each caller
//! only after that commit, in the order they were queued. What a job
//! changes is decided in [`crate::domain::decisions`] from facts the writer
//! reads first; the backends read, call the decision, and write its result.

pub mod postgres;
pub mod schema;
pub mod sqlite;

use std::{collections::VecDeque, sync::Arc};

use chrono::{DateTime, NaiveDate, Utc};
use tokio::sync::{mpsc, oneshot};

pub use crate::domain::decisions::{Accepted, AckFacts, ExtractFacts, FormFacts};
use crate::domain::{
    Sha256Hex,
    decisions::{BuiltExtract, Received},
    filing::{ActivityKind, DocumentKind, Filing, FilingKind},
    ledger,
    obligation::{Obligation, ObligationKind, ObligationStatus},
    quantities::Quarter,
    register::{FindingKind, RegisterStatus},
};
use crate::{
    evidence::{
        merkle::Hash,
        tree::{self, NodeId},
    },
    signing::{KeyRecord, Signer, SigningError, Standing},
};

/// Where "now" comes from; tests move it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// What can go wrong in the store. Each backend turns its driver's errors
/// into [`StoreError::Unavailable`] (the database cannot be reached: the
/// caller may retry once it is back) or [`StoreError::Database`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database_url {0:?}: expected sqlite://PATH or postgres://…")]
    UnknownScheme(String),
    #[error("cannot create {path} or its folder: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Database(String),
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database migration: {0}")]
    Migrate(String),
    #[error("the transaction did not commit: {0}")]
    NotCommitted(String),
    #[error("the store's writer has stopped")]
    WriterStopped,
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Signing(#[from] SigningError),
}

/// How a store is opened: to write, signing a checkpoint at the end of
/// each commit with the gateway's key (which the database's key history
/// must know: [`crate::signing::admit`]); or only to read and verify.
#[derive(Clone)]
pub enum Signing {
    With {
        signer: Arc<Signer>,
        /// Add the key to the history if it is not there (`serve --add-signing-key`).
        add_unknown_key: bool,
    },
    ReadOnly,
}

impl Signing {
    /// Signing with `signer`, which the history must know (or be empty).
    pub fn with(signer: Arc<Signer>) -> Signing {
        Signing::With {
            signer,
            add_unknown_key: false,
        }
    }

    pub(crate) fn signer(&self) -> Option<Arc<Signer>> {
        match self {
            Signing::With { signer, .. } => Some(signer.clone()),
            Signing::ReadOnly => None,
        }
    }
}

/// A signed checkpoint as stored: the tree size it is of, and the C2SP
/// signed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    pub note: String,
    /// When the writer signed it (its clock, inside the commit).
    pub signed_at: DateTime<Utc>,
}

/// What ties an artifact to the log: its entry, the entry's leaf index, an
/// inclusion proof to the latest checkpoint, and that checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafEvidence {
    pub leaf_index: u64,
    /// The entry's bytes: the leaf's data.
    pub entry: String,
    pub inclusion_proof: Vec<Hash>,
    pub checkpoint: StoredCheckpoint,
}

impl StoreError {
    /// True when the database cannot be reached (as opposed to a bug or bad
    /// data): the caller may retry once it is back.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::NotCommitted(_) | StoreError::WriterStopped
        )
    }
}

/// A queued recording of sendings: answers, once it committed, with each
/// extract's attempt number.
pub type QueuedAttempts = oneshot::Receiver<Result<Vec<u32>, StoreError>>;

/// What the metrics endpoint reads from the store at each scrape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gauges {
    /// (status, count), e.g. ("PENDING", 3), ("OVERDUE", 1).
    pub obligations: Vec<(String, i64)>,
    /// (obligation kind, when its oldest PENDING obligation arose, in
    /// microseconds since the epoch), for kinds with any pending.
    pub oldest_pending: Vec<(String, i64)>,
    pub ledger_entries: i64,
    /// (subscriber identity, extracts it has not acknowledged).
    pub pending_extracts: Vec<(String, i64)>,
    /// Runs of jobs decided together whose writes the database refused, so
    /// that each job was taken again alone, since the start (PostgreSQL;
    /// SQLite writes each job in its own savepoint and never does this).
    pub runs_taken_apart: u64,
    /// Times the connection that listens for other replicas' commits was
    /// lost since the start (PostgreSQL): their notices meanwhile were
    /// missed, and every subscriber read what is pending instead.
    pub listener_losses: u64,
}

/// The bytes of one stored chunk of a document (256 KiB); the last chunk
/// may be shorter. Uploads are written, and fetches read, a chunk at a time.
pub const DOCUMENT_CHUNK_BYTES: usize = 256 * 1024;

/// A finished upload to make a document of, its bytes checked: every chunk
/// written under `upload_id`, hashing to `sha256`, `size_bytes` in all.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub upload_id: String,
    pub sha256: Sha256Hex,
    pub media_type: String,
    pub size_bytes: u64,
}

/// A stored document's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRecord {
    pub sha256: Sha256Hex,
    pub media_type: String,
    pub size_bytes: u64,
    pub stored_at: DateTime<Utc>,
    /// False when the same bytes were already stored.
    pub newly_stored: bool,
}

/// Builds the extract's bytes, in the caller's task before its
/// filing is queued.
pub type ExtractBuilder = Arc<dyn Fn(&ExtractFacts) -> Vec<u8> + Send + Sync>;

/// Builds the acknowledgement receipt, stored and returned to repeats.
pub type AckBuilder = Box<dyn Fn(&AckFacts) -> Vec<u8> + Send + Sync>;

/// Which obligations to list.
#[derive(Debug, Clone, Default)]
pub struct ObligationQuery {
    pub kind: Option<ObligationKind>,
    pub status: Option<ObligationStatus>,
    pub due_before: Option<NaiveDate>,
    pub after_seq: i64,
    pub limit: u32,
}

/// A stored finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingRow {
    pub seq: i64,
    pub finding_id: String,
    pub kind: FindingKind,
    pub bin_or_iin: String,
    pub filing_id: String,
    pub days: i32,
    pub quarter: Option<(i32, u32)>,
    pub detail: String,
    pub detected_at: DateTime<Utc>,
}

/// Which stored findings to list.
#[derive(Debug, Clone, Default)]
pub struct FindingQuery {
    pub kind: Option<FindingKind>,
    pub bin_or_iin: Option<String>,
    pub after_seq: i64,
    pub limit: u32,
}

/// An extract still to be acknowledged by a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingExtract {
    /// Order of creation: every extract made later has a greater one.
    pub seq: i64,
    pub extract_id: String,
    /// The extract (protobuf), as its ledger entry's digest covers it.
    pub body: Vec<u8>,
    /// Sendings to this subscriber recorded so far.
    pub attempts: u32,
    /// Its EXTRACT_CREATED entry, when this process's writer made it.
    pub entry: Option<Box<ledger::LedgerEntry>>,
    /// Its evidence, when the writer that made it proved it from the
    /// checkpoint of its commit (the streams then send it without a read).
    pub evidence: Option<Box<LeafEvidence>>,
}

impl Sealed {
    /// Proves the extracts the sealed batch made.
    pub(crate) fn prove_extracts(&self, made: &mut [PendingExtract]) {
        for extract in made {
            if let Some(entry) = &extract.entry {
                extract.evidence = self.evidence(entry).map(Box::new);
            }
        }
    }
}

/// The changes the store knows of: how many, and what the latest made.
#[derive(Debug, Clone, Default)]
pub struct Change {
    /// Counts the changes: this process's commits and, on PostgreSQL, the
    /// other replicas' notices.
    pub count: u64,
    /// The latest changes, oldest first, each with the extracts it made,
    /// committed (`None`: not known here, a watcher must read them). A
    /// watcher woken less often than changes come finds the ones it
    /// missed here instead of reading them, while they are kept.
    recent: Arc<VecDeque<Made>>,
}

/// What one change made, committed: `None` if not known here.
type Made = Option<Arc<[PendingExtract]>>;

/// How many changes [`Change`] keeps, and how many bytes of extracts.
const RECENT_CHANGES: usize = 64;
const RECENT_BYTES: usize = 8 << 20;

impl Change {
    /// A commit of this process that made `extracts`.
    pub(crate) fn committed(&mut self, extracts: Vec<PendingExtract>) {
        self.push(Some(extracts.into()));
    }

    /// A change made elsewhere (another replica): what it made is not known here.
    pub(crate) fn elsewhere(&mut self) {
        self.push(None);
    }

    fn push(&mut self, made: Made) {
        self.count += 1;
        let recent = Arc::make_mut(&mut self.recent);
        recent.push_back(made);
        let bytes = |made: &Made| {
            made.iter()
                .flat_map(|e| e.iter())
                .map(|e| e.body.len())
                .sum::<usize>()
        };
        let mut kept: usize = recent.iter().map(bytes).sum();
        while recent.len() > RECENT_CHANGES || (kept > RECENT_BYTES && recent.len() > 1) {
            if let Some(oldest) = recent.pop_front() {
                kept -= bytes(&oldest);
            }
        }
    }

    /// Every extract the changes after the `seen`th made, if each of them
    /// is known here; `None`: they must be read.
    pub fn made_since(&self, seen: u64) -> Option<Vec<&PendingExtract>> {
        let missed = self.count.checked_sub(seen)?;
        let first = self
            .recent
            .len()
            .checked_sub(usize::try_from(missed).ok()?)?;
        let mut made = Vec::new();
        for change in self.recent.range(first..) {
            made.extend(change.as_deref()?);
        }
        Some(made)
    }
}

/// Which unfinished uploads to remove.
#[derive(Debug, Clone)]
pub(crate) enum UploadsToDrop {
    One(String),
    StartedBefore(DateTime<Utc>),
}

/// A document as fetched by a subscriber it was sent to: what it is, and
/// where its chunks are ([`Store::document_chunk`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedDocument {
    /// The kind under which the extract referenced it.
    pub kind: DocumentKind,
    pub media_type: String,
    pub size_bytes: u64,
    /// The upload whose chunks hold the bytes.
    pub upload_id: String,
}

impl FetchedDocument {
    /// How many chunks hold the bytes.
    pub fn chunks(&self) -> u64 {
        self.size_bytes.div_ceil(DOCUMENT_CHUNK_BYTES as u64)
    }
}

/// A quarterly report (latest revision) that goes into form 402.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportForForm {
    pub filing_id: String,
    pub revision: u32,
    pub body: Vec<u8>,
}

/// Builds (body SHA-256, form bytes) for a new revision.
pub type FormBuilder = Box<dyn FnOnce(&FormFacts) -> (String, Vec<u8>) + Send>;

/// A compiled form 402 to publish, unless the latest revision has the same content.
pub struct FormPublication {
    pub quarter: Quarter,
    /// Digest of the rows and totals only (not revision or time).
    pub content_sha256: String,
    /// The reports it was compiled from.
    pub filing_ids: Vec<String>,
    pub build: FormBuilder,
}

/// The finance ministry's acknowledgement of a form revision.
pub struct FormAck {
    pub quarter: Quarter,
    pub revision: u32,
    pub body_sha256: String,
    pub build: AckBuilder,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormAckOutcome {
    /// The receipt (the first one, for repeats).
    Acknowledged(Vec<u8>),
    UnknownRevision,
    DigestMismatch {
        expected: String,
    },
}

/// A form 402 revision that includes a filing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormRevisionIncluding {
    pub year: i32,
    pub quarter: u32,
    pub revision: u32,
    pub body_sha256: String,
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// How a filing was delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub extract_id: Option<String>,
    /// (subscriber, attempt, sent at)
    pub attempts: Vec<(String, u32, DateTime<Utc>)>,
    /// (subscriber, first acknowledgement)
    pub acknowledgements: Vec<(String, DateTime<Utc>)>,
    pub form_revisions: Vec<FormRevisionIncluding>,
    pub obligations: Vec<Obligation>,
}

/// Builds the receipt bytes once the store has decided, on the writer; they
/// are stored with the filing and returned to every replay.
pub type ReceiptBuilder = Arc<dyn Fn(&Accepted) -> Vec<u8> + Send + Sync>;

/// A valid filing to accept.
pub struct Submission {
    /// The caller's certificate identity.
    pub caller: String,
    pub filing: Filing,
    /// The request as received (protobuf), kept for GetFiling.
    pub body: Vec<u8>,
    /// SHA-256 of `body`: a replay must match it.
    pub request_sha256: Sha256Hex,
    pub receipt: ReceiptBuilder,
    /// §6 the extract to create with it (start notifications and quarterly reports).
    pub extract: Option<ExtractBuilder>,
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Newly accepted: the receipt, proven by the writer once it sealed
    /// the batch.
    Accepted(Recorded),
    /// The same caller, key and payload as before: the original receipt.
    Replayed(Vec<u8>),
    /// The same caller and key with a different payload.
    KeyReused { filing_id: String },
}

/// A stored filing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFiling {
    pub filing_id: String,
    pub kind: FilingKind,
    pub body: Vec<u8>,
    pub receipt: Vec<u8>,
    pub superseded_by: Option<String>,
}

/// Which register entries to list.
#[derive(Debug, Clone, Default)]
pub struct RegisterQuery {
    /// Entries after this sequence number (0: from the start).
    pub after_seq: i64,
    pub limit: u32,
    pub status: Option<RegisterStatus>,
    pub activity: Option<ActivityKind>,
    /// One filer's entry only.
    pub bin_or_iin: Option<String>,
}

/// One entry of the register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterRow {
    pub seq: i64,
    pub register_number: String,
    pub bin_or_iin: String,
    pub name: String,
    pub legal_address: String,
    pub activity: ActivityKind,
    pub status: RegisterStatus,
    pub registered_at: DateTime<Utc>,
    pub start_filing_id: String,
    pub planned_start_date: NaiveDate,
    pub required_power_kw: u64,
    pub last_quarter: Option<(i32, u32)>,
    pub activity_end_date: Option<NaiveDate>,
}

/// The storage interface every part of the gateway uses.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// A round trip to the database.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Counts for the operators' metrics: obligations by status, ledger
    /// length, and extracts not yet acknowledged by each of `subscribers`.
    async fn gauges(&self, subscribers: &[String]) -> Result<Gauges, StoreError>;
    /// Writes chunk `index` of the upload `upload_id` (the first one also
    /// records when the upload started). Chunks are not a document until
    /// [`Store::complete_upload`].
    async fn write_chunk(
        &self,
        upload_id: &str,
        index: u64,
        data: Vec<u8>,
    ) -> Result<(), StoreError>;
    /// Makes a document of a finished upload's chunks, in one transaction
    /// with its ledger entry. Documents are content-addressed: if the same
    /// bytes are stored already, that document is answered and the upload's
    /// chunks are removed.
    async fn complete_upload(&self, document: NewDocument) -> Result<DocumentRecord, StoreError>;
    /// Removes an unfinished upload's chunks.
    async fn abandon_upload(&self, upload_id: &str) -> Result<(), StoreError>;
    /// Removes every unfinished upload started before `started_before`, with
    /// its chunks; how many.
    async fn sweep_uploads(&self, started_before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Chunk `index` of the document stored from `upload_id`.
    async fn document_chunk(
        &self,
        upload_id: &str,
        index: u64,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// The stored documents among `digests`.
    async fn documents(&self, digests: &[Sha256Hex]) -> Result<Vec<DocumentRecord>, StoreError>;
    /// Accepts a valid filing (or recognises a replay) in one transaction.
    async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, StoreError>;
    async fn filing(&self, filing_id: &str) -> Result<Option<StoredFiling>, StoreError>;
    async fn register(&self, query: &RegisterQuery) -> Result<Vec<RegisterRow>, StoreError>;
    /// Ledger entries after `after_seq`, at most `limit`, in order.
    async fn ledger_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<ledger::LedgerEntry>, StoreError>;
    /// Stops the writer once the jobs queued before have committed, and
    /// closes the connections.
    async fn close(&self);

    /// Moves after every committed write on any replica: a subscriber
    /// waits on it for new extracts and acknowledgements.
    fn changes(&self) -> tokio::sync::watch::Receiver<Change>;
    /// Extracts `subscriber` has not acknowledged, oldest first, from
    /// sequence number `from_seq` on (a caller that knows every earlier one
    /// is acknowledged skips them; acknowledgements are never undone),
    /// passing by those numbered in `skip` (a stream's in flight: it needs
    /// only what it has not sent).
    async fn pending_extracts(
        &self,
        subscriber: &str,
        from_seq: i64,
        limit: u32,
        skip: &[i64],
    ) -> Result<Vec<PendingExtract>, StoreError>;
    /// Those of `extract_ids` that `subscriber` has acknowledged.
    async fn acknowledged(
        &self,
        subscriber: &str,
        extract_ids: &[String],
    ) -> Result<Vec<String>, StoreError>;
    /// Queues one writer job that records a sending of each of `extract_ids`
    /// (handed to `subscriber`'s stream) and a failed attempt of each of
    /// `failed` (id, why nothing was sent) at `sent_at`, and returns as soon
    /// as it is queued, not committed. The receiver answers once it
    /// committed (or failed).
    async fn queue_attempts(
        &self,
        extract_ids: Vec<String>,
        failed: Vec<(String, String)>,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<QueuedAttempts, StoreError>;
    /// [`Store::queue_attempts`] for one sending, without waiting: `None`
    /// if the writer's queue is full (the caller queues it the waiting way).
    /// For a transport taking a delivery: a record queued before the bytes
    /// leave commits before any acknowledgement of them.
    fn try_queue_sending(
        &self,
        extract_id: &str,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<Option<QueuedAttempts>, StoreError>;
    /// Acknowledges an extract sent to `subscriber`; `None` if it was never sent to them.
    async fn acknowledge_extract(
        &self,
        extract_id: &str,
        subscriber: &str,
        build: AckBuilder,
    ) -> Result<Option<Recorded>, StoreError>;
    /// Whether extract `extract_id` was ever sent to `subscriber`.
    async fn extract_sent_to(&self, extract_id: &str, subscriber: &str)
    -> Result<bool, StoreError>;
    /// A document referenced by an extract that was sent to `subscriber`.
    async fn document_for(
        &self,
        sha256: &str,
        subscriber: &str,
    ) -> Result<Option<FetchedDocument>, StoreError>;
    /// The latest revision of every quarterly report of `quarter`, by BIN/IIN.
    async fn reports_for_form(&self, quarter: Quarter) -> Result<Vec<ReportForForm>, StoreError>;
    /// The stored form (without evidence) of a revision of a quarter's form 402.
    async fn form_revision(
        &self,
        quarter: Quarter,
        revision: u32,
    ) -> Result<Option<Vec<u8>>, StoreError>;
    /// Publishes a new revision unless the content is unchanged (then writes
    /// nothing); returns the form.
    async fn publish_form(&self, publication: FormPublication) -> Result<Vec<u8>, StoreError>;
    async fn acknowledge_form(&self, ack: FormAck) -> Result<FormAckOutcome, StoreError>;
    async fn obligations(&self, query: &ObligationQuery) -> Result<Vec<Obligation>, StoreError>;
    /// Marks PENDING obligations due before `today` OVERDUE (each once); returns them.
    async fn mark_overdue(&self, today: NaiveDate) -> Result<Vec<Obligation>, StoreError>;
    async fn findings(&self, query: &FindingQuery) -> Result<Vec<FindingRow>, StoreError>;
    /// (BIN/IIN, year, quarter) of every quarterly report received.
    /// The quarters each of `bins` has filed a report for.
    async fn reported_quarters(
        &self,
        bins: &[String],
    ) -> Result<Vec<(String, i32, u32)>, StoreError>;
    async fn delivery(&self, filing_id: &str) -> Result<Option<DeliveryRecord>, StoreError>;

    // The Merkle tree log (see `crate::evidence`).
    /// The latest signed checkpoint.
    async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>, StoreError>;
    /// Signed checkpoints of trees larger than `after_size`, smallest first.
    async fn checkpoints(
        &self,
        after_size: u64,
        limit: u32,
    ) -> Result<Vec<StoredCheckpoint>, StoreError>;
    /// The stored hashes of these perfect subtrees, in order.
    async fn tree_nodes(&self, ids: Vec<NodeId>) -> Result<Vec<Option<Hash>>, StoreError>;
    /// The evidence of the artifact with SHA-256 `digest` recorded by an
    /// entry of `kind` about `subject` (the one that names the digest, see
    /// `recording`: an extract has one acknowledgement entry per
    /// subscriber), against the latest checkpoint, which every committed
    /// entry is under (each commit ends with one).
    async fn evidence(
        &self,
        kind: &'static str,
        subject: &str,
        digest: &Sha256Hex,
    ) -> Result<Option<LeafEvidence>, StoreError>;
    /// Every key that signed here, oldest first.
    async fn signing_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Adds a key to the history; with `retire`, retires every other, at
    /// an instant taken inside the transaction and never before the
    /// latest checkpoint's (see `minegate signing rotate`).
    async fn add_signing_key(&self, key: KeyRecord, retire: bool) -> Result<(), StoreError>;
}

/// Opens the store named by `url`, creating and migrating the database as
/// needed. Signing, it first checks the key against the key history, then
/// brings the Merkle tree up to the ledger (over a database kept before
/// the tree was, every entry becomes a leaf) under a signed checkpoint.
/// Whether `url` names a database this gateway can open at all (its scheme,
/// and for SQLite the file), without opening it: so that a start that will
/// fail on it fails before writing anything (the signing key).
pub fn check_url(url: &str) -> Result<(), StoreError> {
    if url.starts_with("sqlite:") {
        sqlite::database_path(url).map(|_| ())
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        postgres_parameters_known(url)
    } else {
        Err(StoreError::UnknownScheme(crate::files::redacted_url(url)))
    }
}

/// The connection parameters sqlx's PostgreSQL driver reads from a URL.
const POSTGRES_PARAMETERS: &[&str] = &[
    "sslmode",
    "ssl-mode",
    "sslrootcert",
    "ssl-root-cert",
    "ssl-ca",
    "sslcert",
    "ssl-cert",
    "sslkey",
    "ssl-key",
    "statement-cache-capacity",
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "application_name",
    "options",
];

/// Refuses a parameter the driver does not know: it would log it, value
/// and all, and go on without it (found from outside: `?PASSWORD=…`).
fn postgres_parameters_known(url: &str) -> Result<(), StoreError> {
    let query = url.split_once('?').map_or("", |(_, query)| query);
    let query = query.split('#').next().unwrap_or_default();
    let unknown = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map_or((pair, false), |(name, _)| (name, true))
        })
        .find(|(name, _)| !POSTGRES_PARAMETERS.contains(name) && !name.starts_with("options["));
    if let Some((name, valued)) = unknown {
        // With no `=`, the "name" may hold the value (`password%3DSECRET`).
        let name = match !valued && crate::files::says_password(name) {
            true => "(one whose name says password)".to_owned(),
            false => format!("{name:?}"),
        };
        return Err(StoreError::Database(format!(
            "{}: unknown parameter {name} (known: {}; names are lower case)",
            crate::files::redacted_url(url),
            POSTGRES_PARAMETERS.join(", ")
        )));
    }
    // What the driver itself refuses (a port past 65535, an unknown
    // sslmode, a host it cannot read) is the URL's fault too, found before
    // any connection is tried; and a root certificate it names must exist.
    let options: sqlx::postgres::PgConnectOptions = url.parse().map_err(|error: sqlx::Error| {
        let reason = error.to_string().replace("error with configuration: ", "");
        StoreError::Database(format!("{}: {reason}", crate::files::redacted_url(url)))
    })?;
    if let Some((name, file)) = ssl_files(url)
        .into_iter()
        .find(|(_, file)| !std::path::Path::new(file).is_file())
    {
        return Err(StoreError::Database(format!(
            "{}: {name} {file}: no such file",
            crate::files::redacted_url(url)
        )));
    }
    drop(options);
    Ok(())
}

/// The files a PostgreSQL URL names for TLS: (parameter, path) of
/// `sslrootcert`, `sslcert` and `sslkey` (or their dashed names).
fn ssl_files(url: &str) -> Vec<(String, String)> {
    const NAMES: &[&str] = &[
        "sslrootcert",
        "ssl-root-cert",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
    ];
    let Some(query) = url.split_once('?').and_then(|(_, q)| q.split('#').next()) else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(name, _)| NAMES.contains(name))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

/// Opens the database at `url` to read (and sign nothing), for the
/// commands that only look at one (`ledger`, `signing`): a SQLite file
/// that is not there is refused, not made ([`schema::refuse_absent`]).
pub async fn open_existing(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    schema::refuse_absent(url)?;
    open(url, Arc::new(SystemClock), Signing::ReadOnly).await
}

pub async fn open(
    url: &str,
    clock: Arc<dyn Clock>,
    signing: Signing,
) -> Result<Arc<dyn Store>, StoreError> {
    check_url(url)?;
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            sqlite::SqliteStore::open(url, clock, signing).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(
            postgres::PgStore::open(url, clock, signing).await?,
        ))
    } else {
        Err(StoreError::UnknownScheme(crate::files::redacted_url(url)))
    }
}

/// The inclusion proof of leaf `index` in the tree of `size`, from stored
/// hashes; the caller keeps `size` within the latest checkpoint's. `None`
/// if the leaf is not in that tree.
pub async fn inclusion_proof(
    store: &dyn Store,
    index: u64,
    size: u64,
) -> Result<Option<Vec<Hash>>, StoreError> {
    match tree::inclusion_plan(index, size) {
        Some(plan) => stored_proof(store, &plan).await.map(Some),
        None => Ok(None),
    }
}

/// The consistency proof from the tree of `old_size` to the tree of
/// `new_size`, from stored hashes; the caller keeps `new_size` within the
/// latest checkpoint's. `None` if the sizes are out of order.
pub async fn consistency_proof(
    store: &dyn Store,
    old_size: u64,
    new_size: u64,
) -> Result<Option<Vec<Hash>>, StoreError> {
    match tree::consistency_plan(old_size, new_size) {
        Some(plan) => stored_proof(store, &plan).await.map(Some),
        None => Ok(None),
    }
}

/// The proof `plan` describes, its nodes read in one go.
async fn stored_proof(store: &dyn Store, plan: &[(u64, u64)]) -> Result<Vec<Hash>, StoreError> {
    let ids = tree::nodes_of(plan);
    let hashes = store.tree_nodes(ids.clone()).await?;
    proof_from(plan, &ids, &hashes)
}

/// The proof `plan` describes, from the stored `hashes` of its nodes `ids`
/// (as [`tree::nodes_of`] lists them, sorted).
pub(crate) fn proof_from(
    plan: &[(u64, u64)],
    ids: &[NodeId],
    hashes: &[Option<Hash>],
) -> Result<Vec<Hash>, StoreError> {
    tree::assemble(plan, |id| {
        ids.binary_search(&id).ok().and_then(|i| hashes[i])
    })
    .map_err(missing_node)
}

/// A node a proof needs that is not stored: the tree is damaged.
pub(crate) fn missing_node(id: NodeId) -> StoreError {
    StoreError::Corrupt(format!(
        "the Merkle tree has no node at level {} index {}",
        id.level, id.index
    ))
}

impl LeafEvidence {
    /// The evidence of `entry` in the tree of `checkpoint`, by `inclusion_proof`.
    pub(crate) fn of(
        entry: &ledger::LedgerEntry,
        checkpoint: StoredCheckpoint,
        inclusion_proof: Vec<Hash>,
    ) -> LeafEvidence {
        let (leaf_index, data) = entry.leaf();
        LeafEvidence {
            leaf_index,
            entry: data,
            inclusion_proof,
            checkpoint,
        }
    }
}

/// Of the entries about an artifact's subject, the one that records its
/// digest (else the first: an entry of a release that recorded none).
pub(crate) fn recording<'e>(
    entries: &'e [ledger::LedgerEntry],
    digest: &Sha256Hex,
) -> Option<&'e ledger::LedgerEntry> {
    let quoted = format!("\"{}\"", digest.as_str());
    entries
        .iter()
        .find(|e| e.payload.contains(&quoted))
        .or(entries.first())
}

/// How far a verification of the ledger got with everything up to there
/// intact: the hash chain's state and the Merkle tree's frontier after its
/// last entry. A later verification can go on from here
/// ([`verify_ledger_from`]) instead of from entry 1.
#[derive(Debug, Clone)]
pub struct VerifiedPrefix {
    chain: ledger::Verifier,
    frontier: tree::Frontier,
    checkpoints: u64,
}

impl Default for VerifiedPrefix {
    /// Nothing verified yet: a verification from here reads the whole ledger.
    fn default() -> Self {
        VerifiedPrefix {
            chain: ledger::Verifier::default(),
            frontier: tree::Frontier::new(0, Vec::new()).expect("the empty tree"),
            checkpoints: 0,
        }
    }
}

impl VerifiedPrefix {
    /// The entries verified.
    pub fn entries(&self) -> u64 {
        self.frontier.size()
    }
}

/// Recomputes the whole ledger chain, a page at a time.
///
/// With it, the Merkle tree: every entry's leaf and every node it completes
/// is recomputed and compared with the stored hash, and every stored
/// checkpoint's root is compared with the recomputed root of its size and
/// its signature checked against the key history (by a key not retired
/// before the checkpoint's time). The first entry at
/// which any of these fails is reported (for a checkpoint, the entry that
/// ends its tree).
pub async fn verify_ledger(store: &dyn Store) -> Result<ledger::Verification, StoreError> {
    Ok(verify_ledger_from(store, VerifiedPrefix::default())
        .await?
        .0)
}

/// As [`verify_ledger`], over the entries after `from` only: the chain and
/// tree go on from its state, so entries and checkpoints it covers are not
/// read again (a change to them is found by a verification from the start).
/// The report's counts include `from`'s. Where the ledger is intact, also
/// the prefix a next verification can go on from. The hashing and signature
/// checks run on tokio's blocking threads, a page at a time, so a long
/// ledger does not hold up the workers that serve calls.
pub async fn verify_ledger_from(
    store: &dyn Store,
    from: VerifiedPrefix,
) -> Result<(ledger::Verification, Option<VerifiedPrefix>), StoreError> {
    const PAGE: u32 = 5_000;
    let keys = Arc::new(store.signing_keys().await?);
    let sealed = store.latest_checkpoint().await?.map_or(0, |c| c.size);
    let mut pass = PagePass {
        prefix: from,
        checkpoints: std::collections::VecDeque::new(),
        keys,
    };
    let (mut fetched_to, mut exhausted) = (pass.prefix.entries(), false);
    let mut broken = None;
    loop {
        let page = store
            .ledger_page(pass.prefix.entries() as i64, PAGE)
            .await?;
        if page.is_empty() {
            break;
        }
        // The checkpoints of every size this page reaches.
        let reach = pass.prefix.entries() + page.len() as u64;
        while !exhausted && fetched_to < reach {
            let more = store.checkpoints(fetched_to, PAGE).await?;
            exhausted = more.len() < PAGE as usize;
            fetched_to = more.last().map_or(fetched_to, |c| c.size);
            pass.checkpoints.extend(more);
        }
        let (returned, outcome) = tokio::task::spawn_blocking(move || {
            let outcome = pass.check(&page);
            (pass, outcome)
        })
        .await
        .map_err(|e| StoreError::Database(format!("ledger verification stopped: {e}")))?;
        pass = returned;
        let made = match outcome {
            PageOutcome::Checked(made) => made,
            PageOutcome::ChainBroken => break,
            PageOutcome::Broken(seq, reason) => {
                broken = Some((seq, reason));
                break;
            }
        };
        if let Some(wrong) = wrong_node(store, &made, sealed).await? {
            broken = Some(wrong);
            break;
        }
    }
    if pass.checkpoints.is_empty() && broken.is_none() {
        let after = pass.prefix.entries().max(fetched_to);
        pass.checkpoints.extend(store.checkpoints(after, 1).await?);
    }
    let mut report = pass.prefix.chain.clone().finish();
    if report.first_broken.is_none() {
        if broken.is_none()
            && let Some(beyond) = pass.checkpoints.front()
            // Not if a commit has appended entries since the last page:
            // its checkpoint is for the next verification.
            && store
                .ledger_page(pass.prefix.entries() as i64, 1)
                .await?
                .is_empty()
        {
            broken = Some((
                beyond.size as i64,
                format!(
                    "a checkpoint is of {} entries, but the ledger has {}",
                    beyond.size,
                    pass.prefix.entries()
                ),
            ));
        }
        report.first_broken = broken;
    }
    report.checkpoints_checked = pass.prefix.checkpoints;
    let intact = report.first_broken.is_none().then_some(pass.prefix);
    Ok((report, intact))
}

/// A verification's state as it goes from page to page.
struct PagePass {
    prefix: VerifiedPrefix,
    /// Fetched checkpoints not yet reached, smallest first.
    checkpoints: std::collections::VecDeque<StoredCheckpoint>,
    keys: Arc<Vec<KeyRecord>>,
}

enum PageOutcome {
    /// Intact: the tree nodes the page's entries completed, to compare with
    /// the stored ones.
    Checked(Vec<(tree::NodeId, Hash)>),
    /// The hash chain breaks (the chain verifier holds where and why).
    ChainBroken,
    /// A checkpoint does not verify at this entry.
    Broken(i64, String),
}

impl PagePass {
    /// Feeds a page to the chain and the tree, checking every checkpoint
    /// whose size it reaches. CPU work only: run it off the async workers.
    fn check(&mut self, page: &[ledger::LedgerEntry]) -> PageOutcome {
        if !self.prefix.chain.feed(page) {
            return PageOutcome::ChainBroken;
        }
        let mut made = Vec::new();
        for entry in page {
            let (_, data) = entry.leaf();
            let frontier = &mut self.prefix.frontier;
            made.extend(frontier.append(crate::evidence::merkle::leaf_hash(data.as_bytes())));
            while let Some(checkpoint) = self.checkpoints.front() {
                if checkpoint.size != frontier.size() {
                    break;
                }
                if let Err(reason) = check_checkpoint(checkpoint, frontier, &self.keys) {
                    return PageOutcome::Broken(entry.seq, reason);
                }
                self.checkpoints.pop_front();
                self.prefix.checkpoints += 1;
            }
        }
        PageOutcome::Checked(made)
    }
}

/// The first of `made` whose stored hash differs or, up to the latest
/// checkpoint (`sealed`), is missing: the entry that completes it and why.
async fn wrong_node(
    store: &dyn Store,
    made: &[(tree::NodeId, Hash)],
    sealed: u64,
) -> Result<Option<(i64, String)>, StoreError> {
    let stored = store
        .tree_nodes(made.iter().map(|(id, _)| *id).collect())
        .await?;
    // A node is completed by its last leaf's entry; past the latest
    // checkpoint nodes are not stored yet.
    Ok(made.iter().zip(&stored).find_map(|((id, hash), stored)| {
        let completed_by = (id.index + 1) << id.level;
        let what = match stored {
            Some(stored) if stored != hash => "does not match the entries",
            None if completed_by <= sealed => "is missing",
            _ => return None,
        };
        Some((
            completed_by as i64,
            format!(
                "the stored Merkle node at level {} index {} {what} up to entry {completed_by}",
                id.level, id.index
            ),
        ))
    }))
}

/// Whether a stored checkpoint is of the recomputed tree and signed by a
/// key of the history, no later than that key's retirement.
fn check_checkpoint(
    stored: &StoredCheckpoint,
    tree: &tree::Frontier,
    keys: &[KeyRecord],
) -> Result<(), String> {
    use crate::evidence::note;
    let (key, text) = keys
        .iter()
        .find_map(|key| Some((key, note::open(&stored.note, &key.verifier_key()).ok()?)))
        .ok_or_else(|| {
            format!(
                "the checkpoint of {} entries is not signed by a key of the history",
                stored.size
            )
        })?;
    if let Some(retired_at) = key.retired_at.filter(|at| *at < stored.signed_at) {
        let time = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        return Err(format!(
            "the checkpoint of {} entries was signed at {} by key {}, retired at {}",
            stored.size,
            time(stored.signed_at),
            key.key_id,
            time(retired_at)
        ));
    }
    let checkpoint = note::Checkpoint::parse(&text).map_err(|error| error.to_string())?;
    if checkpoint.size != tree.size() || checkpoint.root != tree.root() {
        return Err(format!(
            "the checkpoint of {} entries has a root the entries do not give",
            stored.size
        ));
    }
    Ok(())
}

/// A submission as taken in: made in the caller's task before it is queued
/// (its instant, its filing's id and its extract), so the writer only
/// reads, decides, builds the receipt and writes.
pub(crate) struct Incoming {
    pub submission: Submission,
    pub received: Received,
}

impl Incoming {
    pub(crate) fn new(submission: Submission, clock: &dyn Clock) -> Incoming {
        let received_at = clock.now();
        let filing_id = new_id("fil");
        let extract = submission.extract.as_ref().map(|build| {
            let facts = ExtractFacts::new(new_id("ext"), filing_id.clone(), received_at);
            BuiltExtract {
                body: build(&facts),
                extract_id: facts.extract_id,
                due_date: facts.due_date,
            }
        });
        let received = Received {
            caller: submission.caller.clone(),
            request_sha256: submission.request_sha256.clone(),
            filing_id,
            received_at,
            extract,
        };
        Incoming {
            submission,
            received,
        }
    }
}

/// Work for a writer, with where to send the answer.
pub(crate) enum Job {
    Filing(
        Box<Incoming>,
        oneshot::Sender<Result<SubmitOutcome, StoreError>>,
    ),
    /// A chunk of an upload (SQLite; PostgreSQL writes chunks itself).
    Chunk {
        upload_id: String,
        index: u64,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Document(
        NewDocument,
        oneshot::Sender<Result<DocumentRecord, StoreError>>,
    ),
    /// Removes unfinished uploads and their chunks (SQLite).
    DropUploads(UploadsToDrop, oneshot::Sender<Result<u64, StoreError>>),
    Attempts {
        extract_ids: Vec<String>,
        /// Extracts not sent, each with the reason.
        failed: Vec<(String, String)>,
        subscriber: String,
        sent_at: DateTime<Utc>,
        reply: oneshot::Sender<Result<Vec<u32>, StoreError>>,
    },
    AckExtract {
        extract_id: String,
        subscriber: String,
        build: AckBuilder,
        reply: oneshot::Sender<Result<Option<Recorded>, StoreError>>,
    },
    PublishForm(
        Box<FormPublication>,
        oneshot::Sender<Result<Vec<u8>, StoreError>>,
    ),
    AckForm(
        Box<FormAck>,
        oneshot::Sender<Result<FormAckOutcome, StoreError>>,
    ),
    MarkOverdue(
        NaiveDate,
        oneshot::Sender<Result<Vec<Obligation>, StoreError>>,
    ),
    AddKey {
        key: KeyRecord,
        /// A rotation: every other key is retired, at the instant the
        /// writer takes inside the transaction (under the write lock).
        retire: bool,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Ends the writer after the jobs queued before it ([`Store::close`]).
    Stop,
}

impl Job {
    /// Answers the job's caller with a failure.
    pub(crate) fn fail(self, reason: &str) {
        let error = || StoreError::NotCommitted(reason.to_owned());
        match self {
            Job::Filing(_, reply) => drop(reply.send(Err(error()))),
            Job::Chunk { reply, .. } => drop(reply.send(Err(error()))),
            Job::Document(_, reply) => drop(reply.send(Err(error()))),
            Job::DropUploads(_, reply) => drop(reply.send(Err(error()))),
            Job::Attempts { reply, .. } => drop(reply.send(Err(error()))),
            Job::AckExtract { reply, .. } => drop(reply.send(Err(error()))),
            Job::PublishForm(_, reply) => drop(reply.send(Err(error()))),
            Job::AckForm(_, reply) => drop(reply.send(Err(error()))),
            Job::MarkOverdue(_, reply) => drop(reply.send(Err(error()))),
            Job::AddKey { reply, .. } => drop(reply.send(Err(error()))),
            Job::Stop => {}
        }
    }
}

/// What to do once the batch's commit is known: answer with the job's own
/// result, proven against the batch's checkpoint ([`Provable`]), if it
/// committed; or with the commit's failure.
pub(crate) type Finisher = Box<dyn FnOnce(&Result<(), String>, Option<&Sealed>) + Send>;

pub(crate) fn finisher<T: Provable + Send + 'static>(
    reply: oneshot::Sender<Result<T, StoreError>>,
    result: Result<T, StoreError>,
) -> Finisher {
    Box::new(move |committed, sealed| {
        let _ = reply.send(match committed {
            Ok(()) => result.map(|answer| answer.prove(sealed)),
            Err(reason) => Err(StoreError::NotCommitted(reason.clone())),
        });
    })
}

/// An artifact a job made or found again: its bytes; the ledger entry that
/// records it, when the job appended that entry; its evidence, once the
/// writer sealed the batch (read back when it is not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    pub bytes: Vec<u8>,
    pub entry: Option<Box<ledger::LedgerEntry>>,
    pub evidence: Option<Box<LeafEvidence>>,
}

impl Recorded {
    /// An artifact stored before (a repeat): proven by a read.
    pub fn found(bytes: Vec<u8>) -> Recorded {
        Recorded {
            bytes,
            entry: None,
            evidence: None,
        }
    }

    /// An artifact made now, recorded by `entry` of the job's entries.
    pub(crate) fn made(bytes: Vec<u8>, entries: &[ledger::LedgerEntry], kind: &str) -> Recorded {
        Recorded {
            bytes,
            entry: entries
                .iter()
                .find(|e| e.kind == kind)
                .cloned()
                .map(Box::new),
            evidence: None,
        }
    }
}

impl Provable for Recorded {
    fn prove(mut self, sealed: Option<&Sealed>) -> Self {
        if let (Some(sealed), Some(entry)) = (sealed, &self.entry) {
            self.evidence = sealed.evidence(entry).map(Box::new);
        }
        self
    }
}

/// How a batch was sealed: the checkpoint it ended with, and the tree's
/// nodes it read (the frontier before it) or made. Any leaf the batch
/// appended is proven from these alone: its left siblings are frontier
/// nodes or new, its right siblings new.
pub(crate) struct Sealed {
    pub checkpoint: StoredCheckpoint,
    pub nodes: std::collections::HashMap<NodeId, Hash>,
}

impl Sealed {
    /// The evidence of `entry`, appended in the sealed batch.
    pub(crate) fn evidence(&self, entry: &ledger::LedgerEntry) -> Option<LeafEvidence> {
        let plan = tree::inclusion_plan((entry.seq - 1) as u64, self.checkpoint.size)?;
        let inclusion_proof = tree::assemble(&plan, |id| self.nodes.get(&id).copied()).ok()?;
        Some(LeafEvidence::of(
            entry,
            self.checkpoint.clone(),
            inclusion_proof,
        ))
    }
}

/// A writer's answer, completed once its batch is sealed: an artifact made
/// in the batch gets its evidence from the batch's checkpoint, so the
/// caller need not read it back. Most answers carry no artifact.
pub(crate) trait Provable: Sized {
    fn prove(self, _sealed: Option<&Sealed>) -> Self {
        self
    }
}

impl Provable for SubmitOutcome {
    fn prove(self, sealed: Option<&Sealed>) -> Self {
        match self {
            SubmitOutcome::Accepted(receipt) => SubmitOutcome::Accepted(receipt.prove(sealed)),
            other => other,
        }
    }
}

impl Provable for () {}
impl Provable for DocumentRecord {}
impl Provable for Vec<u8> {}
impl Provable for Option<Recorded> {
    fn prove(self, sealed: Option<&Sealed>) -> Self {
        self.map(|recorded| recorded.prove(sealed))
    }
}
impl Provable for Vec<u32> {}
impl Provable for u64 {}
impl Provable for Vec<Obligation> {}
impl Provable for FormAckOutcome {}

/// Most jobs committed in one transaction.
pub(crate) const MAX_BATCH: usize = 256;

/// The sending side of a backend's writer: every write of the [`Store`]
/// trait is a [`Job`] queued here, answered once it committed. The same for
/// both backends; each owns the receiving side ([`take_batch`]).
pub(crate) struct JobQueue {
    writer: mpsc::Sender<Job>,
    /// Answered when the writer has ended.
    stopped: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
    /// Takes the instant of each submission as it comes in.
    clock: Arc<dyn Clock>,
}

impl JobQueue {
    /// A queue, the writer's end of it, and what the writer answers when it
    /// has ended.
    pub(crate) fn new(
        clock: Arc<dyn Clock>,
    ) -> (JobQueue, mpsc::Receiver<Job>, oneshot::Sender<()>) {
        let (writer, jobs) = mpsc::channel(1024);
        let (done, stopped) = oneshot::channel();
        let queue = JobQueue {
            writer,
            stopped: std::sync::Mutex::new(Some(stopped)),
            clock,
        };
        (queue, jobs, done)
    }

    /// Sends a job and waits for its committed answer.
    async fn send<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Job,
    ) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(make(reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        answer.await.map_err(|_| StoreError::WriterStopped)?
    }

    pub(crate) async fn submit(&self, submission: Submission) -> Result<SubmitOutcome, StoreError> {
        let incoming = Incoming::new(submission, &*self.clock);
        self.send(|reply| Job::Filing(Box::new(incoming), reply))
            .await
    }

    pub(crate) async fn write_chunk(
        &self,
        upload_id: &str,
        index: u64,
        data: Vec<u8>,
    ) -> Result<(), StoreError> {
        let upload_id = upload_id.to_owned();
        self.send(|reply| Job::Chunk {
            upload_id,
            index,
            data,
            reply,
        })
        .await
    }

    /// See [`Store::abandon_upload`].
    pub(crate) async fn abandon_upload(&self, upload_id: &str) -> Result<(), StoreError> {
        let which = UploadsToDrop::One(upload_id.to_owned());
        self.send(|reply| Job::DropUploads(which, reply))
            .await
            .map(drop)
    }

    /// See [`Store::sweep_uploads`].
    pub(crate) async fn sweep_uploads(
        &self,
        started_before: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let which = UploadsToDrop::StartedBefore(started_before);
        self.send(|reply| Job::DropUploads(which, reply)).await
    }

    pub(crate) async fn complete_upload(
        &self,
        document: NewDocument,
    ) -> Result<DocumentRecord, StoreError> {
        self.send(|reply| Job::Document(document, reply)).await
    }

    /// See [`Store::queue_attempts`]: answers once queued.
    pub(crate) async fn queue_attempts(
        &self,
        extract_ids: Vec<String>,
        failed: Vec<(String, String)>,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<QueuedAttempts, StoreError> {
        let (reply, answer) = oneshot::channel();
        let subscriber = subscriber.to_owned();
        self.writer
            .send(Job::Attempts {
                extract_ids,
                failed,
                subscriber,
                sent_at,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        Ok(answer)
    }

    /// See [`Store::try_queue_sending`].
    pub(crate) fn try_queue_sending(
        &self,
        extract_id: &str,
        subscriber: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<Option<QueuedAttempts>, StoreError> {
        let (reply, answer) = oneshot::channel();
        let job = Job::Attempts {
            extract_ids: vec![extract_id.to_owned()],
            failed: Vec::new(),
            subscriber: subscriber.to_owned(),
            sent_at,
            reply,
        };
        match self.writer.try_send(job) {
            Ok(()) => Ok(Some(answer)),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(None),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(StoreError::WriterStopped),
        }
    }

    pub(crate) async fn acknowledge_extract(
        &self,
        extract_id: &str,
        subscriber: &str,
        build: AckBuilder,
    ) -> Result<Option<Recorded>, StoreError> {
        let (extract_id, subscriber) = (extract_id.to_owned(), subscriber.to_owned());
        self.send(|reply| Job::AckExtract {
            extract_id,
            subscriber,
            build,
            reply,
        })
        .await
    }

    pub(crate) async fn publish_form(
        &self,
        publication: FormPublication,
    ) -> Result<Vec<u8>, StoreError> {
        self.send(|reply| Job::PublishForm(Box::new(publication), reply))
            .await
    }

    pub(crate) async fn acknowledge_form(
        &self,
        ack: FormAck,
    ) -> Result<FormAckOutcome, StoreError> {
        self.send(|reply| Job::AckForm(Box::new(ack), reply)).await
    }

    pub(crate) async fn mark_overdue(
        &self,
        today: NaiveDate,
    ) -> Result<Vec<Obligation>, StoreError> {
        self.send(|reply| Job::MarkOverdue(today, reply)).await
    }

    pub(crate) async fn add_signing_key(
        &self,
        key: KeyRecord,
        retire: bool,
    ) -> Result<(), StoreError> {
        self.send(|reply| Job::AddKey { key, retire, reply }).await
    }

    /// Stops the writer once the jobs queued before have committed, and
    /// waits for it to end.
    pub(crate) async fn stop(&self) {
        let stopped = self.stopped.lock().ok().and_then(|mut s| s.take());
        let _ = self.writer.send(Job::Stop).await;
        if let Some(stopped) = stopped {
            let _ = stopped.await;
        }
    }
}

/// A writer's next batch: `first` and the jobs waiting after it, up to
/// [`MAX_BATCH`]. Jobs queued after a [`Job::Stop`] are refused; `true`
/// when the writer is to stop after this batch ([`refuse_the_rest`]).
pub(crate) fn take_batch(first: Job, jobs: &mut mpsc::Receiver<Job>) -> (Vec<Job>, bool) {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match jobs.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    let stop = batch.iter().position(|job| matches!(job, Job::Stop));
    if let Some(at) = stop {
        for job in batch.split_off(at) {
            job.fail("the store is closing");
        }
    }
    (batch, stop.is_some())
}

/// After a stop: closes the queue and refuses whatever is still in it.
pub(crate) fn refuse_the_rest(jobs: &mut mpsc::Receiver<Job>) {
    jobs.close();
    while let Ok(job) = jobs.try_recv() {
        job.fail("the store is closing");
    }
}

/// A new identifier. UUIDv7 (time first, then random bits) keeps ids unique
/// across replicas and makes each index take new ids at its end, so a batch
/// dirties a few pages instead of one per row.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

// Row encoding, the same on both backends: instants are microseconds since
// the Unix epoch, civil dates 'YYYY-MM-DD' text, enums their contract names.

pub(crate) fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

pub(crate) fn from_micros(value: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(value)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {value} out of range")))
}

pub(crate) fn parse_date(text: &str) -> Result<NaiveDate, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("date {text:?}")))
}

/// A stored (year, quarter).
pub(crate) fn quarter_of(
    year: Option<i64>,
    quarter: Option<i64>,
) -> Result<Option<Quarter>, StoreError> {
    match (year, quarter) {
        (Some(year), Some(quarter)) => i32::try_from(year)
            .ok()
            .zip(u32::try_from(quarter).ok())
            .and_then(|(y, q)| Quarter::new(y, q).ok())
            .map(Some)
            .ok_or_else(|| StoreError::Corrupt(format!("quarter {year}-Q{quarter}"))),
        _ => Ok(None),
    }
}

/// A stored enum, by its contract name.
pub(crate) fn parse_name<T>(
    what: &str,
    text: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, StoreError> {
    parse(text).ok_or_else(|| StoreError::Corrupt(format!("{what} {text:?}")))
}

/// A row of the signing key history: key_id, name, public_key, created_at,
/// retired_at (µs since the epoch).
pub(crate) type KeyRow = (String, String, Vec<u8>, i64, Option<i64>);

/// A key of the history from its stored row.
pub(crate) fn key_from_row(
    (key_id, name, public_key, created_at, retired_at): KeyRow,
) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        key_id,
        name,
        public_key,
        created_at: from_micros(created_at)?,
        retired_at: retired_at.map(from_micros).transpose()?,
    })
}

/// What the history says of a key, from its `retired_at` column (µs) if it
/// has a row.
pub(crate) fn standing_from_row(row: Option<Option<i64>>) -> Result<Standing, StoreError> {
    Ok(match row {
        None => Standing::Unknown,
        Some(None) => Standing::Valid,
        Some(Some(at)) => Standing::Retired(from_micros(at)?),
    })
}

/// An obligation from its stored columns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn obligation_from_row(
    seq: i64,
    obligation_id: String,
    kind: &str,
    due_date: &str,
    status: &str,
    filing_id: Option<String>,
    extract_id: Option<String>,
    year: Option<i64>,
    quarter: Option<i64>,
    fulfilled_at: Option<i64>,
    created_at: i64,
) -> Result<Obligation, StoreError> {
    Ok(Obligation {
        seq,
        obligation_id,
        kind: parse_name("obligation kind", kind, ObligationKind::parse)?,
        due_date: parse_date(due_date)?,
        status: parse_name("obligation status", status, ObligationStatus::parse)?,
        filing_id,
        extract_id,
        quarter: quarter_of(year, quarter)?,
        fulfilled_at: fulfilled_at.map(from_micros).transpose()?,
        created_at: from_micros(created_at)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract(seq: i64, bytes: usize) -> PendingExtract {
        PendingExtract {
            seq,
            extract_id: format!("x-{seq}"),
            body: vec![0; bytes],
            attempts: 0,
            entry: None,
            evidence: None,
        }
    }

    fn seqs(made: Option<Vec<&PendingExtract>>) -> Option<Vec<i64>> {
        made.map(|made| made.iter().map(|e| e.seq).collect())
    }

    #[test]
    fn a_watcher_finds_what_the_changes_it_missed_made_while_they_are_kept() {
        let mut change = Change::default();
        change.committed(vec![extract(1, 10), extract(2, 10)]);
        change.committed(Vec::new());
        change.committed(vec![extract(3, 10)]);
        assert_eq!(seqs(change.made_since(0)), Some(vec![1, 2, 3]));
        assert_eq!(seqs(change.made_since(2)), Some(vec![3]));
        assert_eq!(seqs(change.made_since(3)), Some(vec![]));
        // Seen more than there are: not this store's count.
        assert_eq!(seqs(change.made_since(4)), None);
        // Another replica's change: what it made must be read.
        change.elsewhere();
        change.committed(vec![extract(5, 10)]);
        assert_eq!(seqs(change.made_since(3)), None);
        assert_eq!(seqs(change.made_since(4)), Some(vec![5]));
        // Only the latest 64 changes are kept.
        for seq in 6..=69 {
            change.committed(vec![extract(seq, 10)]);
        }
        assert_eq!(change.count, 69);
        assert_eq!(seqs(change.made_since(4)), None);
        assert_eq!(seqs(change.made_since(5)).map(|s| s.len()), Some(64));
        // And no more than 8 MiB of extracts, however few changes: the
        // latest is kept whatever its size.
        change.committed(vec![extract(70, 5 << 20)]);
        change.committed(vec![extract(71, 5 << 20)]);
        assert_eq!(seqs(change.made_since(70)), Some(vec![71]));
        assert_eq!(seqs(change.made_since(69)), None);
        change.committed(vec![extract(72, 9 << 20)]);
        assert_eq!(seqs(change.made_since(72)), Some(vec![]));
        assert_eq!(seqs(change.made_since(71)), Some(vec![72]));
        assert_eq!(seqs(change.made_since(70)), None);
    }
}
