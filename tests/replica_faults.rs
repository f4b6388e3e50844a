//! Replicas under faults (RELIABILITY.md): three gateways on one PostgreSQL
//! database serve 16 submitters, two energy subscriber identities and
//! finance; every client moves to the next replica when one fails it (the
//! submitters retrying with the same idempotency key). Meanwhile, at seeded
//! random moments (the seed is printed; MINEGATE_TEST_SEED repeats a run):
//! a replica is killed with SIGKILL and started again, a replica is paused
//! with SIGSTOP for longer than its request timeout and continued, PostgreSQL
//! terminates every gateway connection, and PostgreSQL restarts.
//!
//! Afterwards, exactly: every receipt a client got is stored with the same
//! bytes and nothing is stored twice; register numbers are unique and without
//! gaps; every extract was delivered to and acknowledged by both identities,
//! its sendings numbered without gaps, its obligation fulfilled once; the
//! ledger's records match the tables and it verifies on every replica; every
//! checkpoint any client saw is one log with the final one (no fork); every
//! replica is SERVING without having been touched.
//!
//! It restarts the machine's PostgreSQL cluster (tests/common/cluster.rs),
//! so it is the only test in this binary. PostgreSQL only.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::Datelike;
use common::{
    child::{ChildGateway, replica_home},
    cluster::Cluster,
    fixtures::{date, generated_bin, quarterly_report, start_notification, upload_documents},
    *,
};
use minegate::{
    client::ClientTls,
    evidence::verify::{ArtifactKind, Verified, open_checkpoint, verify, verify_consistency},
    proto::v1::{
        AcknowledgeExtractRequest, AcknowledgeFormRequest, DocumentRef, Evidence,
        GetCheckpointRequest, GetConsistencyProofRequest, GetSigningKeysRequest,
        PullQuarterlyFormRequest, QuarterlyReport, SigningKey, StartNotification, SubscribeRequest,
        VerifyLedgerRequest, compliance_service_client::ComplianceServiceClient,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
    },
    tls::pki::{self, LeafOptions},
};
use prost::Message;
use tonic::{Code, Status, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const REPLICAS: usize = 3;
const SUBMITTERS: usize = 16;
/// Each submitter's filers: each files a start notification, then its
/// report for the last quarter.
const FILERS_EACH: usize = 5;
const FILERS: usize = SUBMITTERS * FILERS_EACH;
const FILINGS: usize = 2 * FILERS;
const SUBSCRIBERS: [&str; 2] = ["energy", "energy-backup"];
/// The replicas' request timeout; a pause lasts longer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const PAUSE: Duration = Duration::from_secs(5);
/// A client gives a call this long before it moves to the next replica:
/// more than a writer can wait for the lock a paused replica holds (5 s).
const CALL: Duration = Duration::from_secs(12);

/// A small deterministic generator (the fault plan and the pacing).
#[derive(Clone)]
struct Lcg(u64);

impl Lcg {
    fn next_fraction(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + ((to - from) as f64 * self.next_fraction()) as u64)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    Pause,
    Terminate,
    RestartPostgres,
}

/// How a client reaches replica `k` as `name`, with HTTP/2 pings so that a
/// paused replica's connection is found dead within seconds.
#[derive(Clone)]
struct Reach {
    pki: PathBuf,
    ports: Vec<u16>,
}

impl Reach {
    fn tls(&self, replica: usize, name: &str) -> ClientTls {
        ClientTls {
            server: format!("https://127.0.0.1:{}", self.ports[replica]),
            ca: self.pki.join("ca.pem"),
            cert: self.pki.join(format!("{name}.pem")),
            key: self.pki.join(format!("{name}.key")),
            domain: Some("localhost".into()),
        }
    }

    async fn connect(&self, replica: usize, name: &str) -> Option<Channel> {
        let endpoint = self
            .tls(replica, name)
            .endpoint()
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        tokio::time::timeout(Duration::from_secs(3), endpoint.connect())
            .await
            .ok()?
            .ok()
    }
}

/// What the clients saw.
#[derive(Default)]
struct Seen {
    /// Idempotency key → the receipt's bytes.
    receipts: Mutex<BTreeMap<String, Vec<u8>>>,
    /// Subscriber → extract id → the acknowledgement's evidence.
    acks: Mutex<HashMap<String, HashMap<String, Evidence>>>,
    /// Every other piece of evidence handed out (extracts, form acks).
    evidence: Mutex<Vec<(ArtifactKind, Evidence)>>,
    /// Failed calls by code (a client timeout counts as DEADLINE_EXCEEDED).
    failures: Mutex<BTreeMap<String, usize>>,
    /// Acknowledgements answered NOT_FOUND (sent, its record not committed).
    acks_not_found: AtomicUsize,
    /// Form revisions acknowledged.
    form_acks: AtomicUsize,
    submitted: AtomicBool,
}

impl Seen {
    fn failed(&self, code: Code) {
        *self
            .failures
            .lock()
            .unwrap()
            .entry(format!("{code:?}"))
            .or_default() += 1;
    }

    fn acked(&self, subscriber: &str) -> usize {
        self.acks
            .lock()
            .unwrap()
            .get(subscriber)
            .map_or(0, HashMap::len)
    }
}

/// One filing of the plan.
#[derive(Clone)]
enum Filing {
    Start(StartNotification),
    Report(QuarterlyReport),
}

impl Filing {
    fn key(&self) -> &str {
        match self {
            Filing::Start(f) => &f.idempotency_key,
            Filing::Report(f) => &f.idempotency_key,
        }
    }

    async fn submit(&self, channel: Channel) -> Result<Vec<u8>, Status> {
        let mut client = FilingServiceClient::new(channel);
        let receipt = match self {
            Filing::Start(f) => client.submit_start_notification(f.clone()).await?,
            Filing::Report(f) => client.submit_quarterly_report(f.clone()).await?,
        };
        Ok(receipt.into_inner().encode_to_vec())
    }
}

/// The quarter before today's.
fn last_quarter() -> (i32, i32) {
    let today = chrono::Utc::now().date_naive();
    let quarter = (today.month0() / 3) as i32 + 1;
    if quarter == 1 {
        (today.year() - 1, 4)
    } else {
        (today.year(), quarter - 1)
    }
}

/// Submitter `s`'s filings, in order: for each of its filers a start
/// notification, then (once it has a receipt) the last quarter's report.
fn plan(s: usize, documents: &[DocumentRef]) -> Vec<Filing> {
    let start = chrono::Utc::now().date_naive() + chrono::Days::new(40);
    let (year, quarter) = last_quarter();
    let mut filings = Vec::new();
    for f in 0..FILERS_EACH {
        let n = s * FILERS_EACH + f;
        let bin = generated_bin(n as u32);
        let pool = format!("37.{}.{}.0/24", 1 + n / 256, n % 256);
        filings.push(Filing::Start(start_notification(
            &bin,
            &format!("faults-start-{n}"),
            date(start.year(), start.month() as i32, start.day() as i32),
            &[&pool],
            documents,
        )));
        filings.push(Filing::Report(quarterly_report(
            &bin,
            &format!("faults-report-{n}"),
            year,
            quarter,
            1_000_000 + n as u64,
            &[&pool],
            documents,
        )));
    }
    filings
}

/// Files `filings` one after another, at a seeded pace; each until it gets
/// a receipt, moving to the next replica on any failure.
async fn submitter(s: usize, filings: Vec<Filing>, reach: Reach, seen: Arc<Seen>, mut pace: Lcg) {
    let mut replica = s % REPLICAS;
    let mut channel = None;
    for filing in filings {
        tokio::time::sleep(pace.millis(500, 2_500)).await;
        loop {
            if channel.is_none() {
                channel = reach.connect(replica, "authority").await;
            }
            let answer = match &channel {
                Some(c) => match tokio::time::timeout(CALL, filing.submit(c.clone())).await {
                    Ok(answer) => answer,
                    Err(_) => Err(Status::deadline_exceeded("the client's timeout")),
                },
                None => Err(Status::unavailable("cannot connect")),
            };
            match answer {
                Ok(receipt) => {
                    let earlier = seen
                        .receipts
                        .lock()
                        .unwrap()
                        .insert(filing.key().to_owned(), receipt);
                    assert!(earlier.is_none(), "{}: two receipts", filing.key());
                    break;
                }
                Err(status) => {
                    assert!(
                        retryable(status.code()),
                        "{}: {} {}",
                        filing.key(),
                        status.code(),
                        status.message()
                    );
                    seen.failed(status.code());
                    replica = (replica + 1) % REPLICAS;
                    channel = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Failures a client meets when a replica or the database fails it, and
/// takes to the next replica; anything else fails the test.
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

/// One energy identity: a Subscribe stream on one replica, each delivery
/// acknowledged through another (so that acknowledgements race the
/// sending's record across replicas); a stream that fails or goes silent
/// moves to the next replica. Ends once every filing's extract is
/// acknowledged.
async fn subscriber(name: &'static str, first: usize, reach: Reach, seen: Arc<Seen>) {
    let mut replica = first;
    while !(seen.submitted.load(Ordering::SeqCst) && seen.acked(name) == FILINGS) {
        if let Some(channel) = reach.connect(replica, name).await {
            let request = SubscribeRequest {
                max_in_flight: 16,
                ..Default::default()
            };
            let subscribed = tokio::time::timeout(
                CALL,
                EnergyExtractServiceClient::new(channel).subscribe(request),
            )
            .await;
            if let Ok(Ok(stream)) = subscribed {
                take_deliveries(name, replica, stream.into_inner(), &reach, &seen).await;
            }
        }
        replica = (replica + 1) % REPLICAS;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Takes a stream's deliveries until it fails, or says nothing for 3 s
/// while some are still unacknowledged (it is sent again meanwhile, after
/// the replicas' acknowledgement deadline, unless its replica is stuck).
async fn take_deliveries(
    name: &'static str,
    replica: usize,
    mut stream: tonic::Streaming<minegate::proto::v1::ExtractDelivery>,
    reach: &Reach,
    seen: &Seen,
) {
    let mut ackers: Vec<Option<Channel>> = vec![None; REPLICAS];
    loop {
        let next = tokio::time::timeout(Duration::from_secs(3), stream.message()).await;
        let delivery = match next {
            Ok(Ok(Some(delivery))) => delivery,
            Err(_) if seen.acked(name) < FILINGS || !seen.submitted.load(Ordering::SeqCst) => {
                continue;
            }
            _ => return,
        };
        let extract = delivery.extract.expect("an extract");
        if let Some(evidence) = &extract.evidence {
            let mut all = seen.evidence.lock().unwrap();
            all.push((ArtifactKind::Extract, evidence.clone()));
        }
        // Through the other replicas, the next one first.
        for k in [1, 2].map(|d| (replica + d) % REPLICAS) {
            if acknowledge(name, &extract.extract_id, reach, k, &mut ackers[k], seen).await {
                break;
            }
        }
    }
}

/// Acknowledges `extract_id` through replica `k`; whether to stop trying
/// (acknowledged, or NOT_FOUND: the sending's record did not commit, and
/// the extract comes again).
async fn acknowledge(
    name: &str,
    extract_id: &str,
    reach: &Reach,
    k: usize,
    channel: &mut Option<Channel>,
    seen: &Seen,
) -> bool {
    if channel.is_none() {
        *channel = reach.connect(k, name).await;
    }
    let Some(c) = channel.clone() else {
        seen.failed(Code::Unavailable);
        return false;
    };
    let request = AcknowledgeExtractRequest {
        extract_id: extract_id.to_owned(),
    };
    let mut client = EnergyExtractServiceClient::new(c);
    match tokio::time::timeout(CALL, client.acknowledge(request)).await {
        Ok(Ok(ack)) => {
            let ack = ack.into_inner();
            assert_eq!(
                (ack.extract_id.as_str(), ack.subscriber.as_str()),
                (extract_id, &*format!("urn:minegate:{name}"))
            );
            let mut acks = seen.acks.lock().unwrap();
            let mine = acks.entry(name.to_owned()).or_default();
            mine.insert(extract_id.to_owned(), ack.evidence.expect("evidence"));
            true
        }
        Ok(Err(status)) if status.code() == Code::NotFound => {
            seen.acks_not_found.fetch_add(1, Ordering::Relaxed);
            true
        }
        Ok(Err(status)) => {
            assert!(retryable(status.code()), "ack: {status:?}");
            seen.failed(status.code());
            *channel = None;
            false
        }
        Err(_) => {
            seen.failed(Code::DeadlineExceeded);
            *channel = None;
            false
        }
    }
}

/// Finance: pulls the last quarter's form 402 through the replicas in turn
/// and acknowledges each revision it gets, until the submissions are done;
/// then the final revision.
async fn finance(reach: Reach, seen: Arc<Seen>) -> (u32, u32) {
    let mut replica = 0;
    loop {
        let done = seen.submitted.load(Ordering::SeqCst);
        match pull_and_acknowledge(&reach, replica, &seen).await {
            Some(last) if done => return last,
            Some(_) => tokio::time::sleep(Duration::from_millis(700)).await,
            None => replica = (replica + 1) % REPLICAS,
        }
    }
}

/// The latest revision, acknowledged: (revision, payers); `None` if a call
/// failed.
async fn pull_and_acknowledge(reach: &Reach, k: usize, seen: &Seen) -> Option<(u32, u32)> {
    let (year, quarter) = last_quarter();
    let channel = reach.connect(k, "finance").await?;
    let mut client = FinanceServiceClient::new(channel);
    let request = PullQuarterlyFormRequest {
        year,
        quarter,
        ..Default::default()
    };
    let outcome = async {
        let form = client.pull_quarterly_form(request).await?.into_inner();
        let body = form.body.expect("a body");
        let ack = client
            .acknowledge(AcknowledgeFormRequest {
                year,
                quarter,
                revision: body.revision,
                body_sha256: form.body_sha256.clone(),
            })
            .await?
            .into_inner();
        assert_eq!(ack.revision, body.revision);
        let payers = body.totals.expect("totals").payers;
        let mut all = seen.evidence.lock().unwrap();
        all.push((ArtifactKind::FormBody, form.evidence.expect("evidence")));
        all.push((ArtifactKind::FormAck, ack.evidence.expect("evidence")));
        Ok::<_, Status>((body.revision, payers))
    };
    match tokio::time::timeout(CALL, outcome).await {
        Ok(Ok(last)) => {
            seen.form_acks.fetch_add(1, Ordering::Relaxed);
            Some(last)
        }
        Ok(Err(status)) => {
            assert!(retryable(status.code()), "finance: {status:?}");
            seen.failed(status.code());
            None
        }
        Err(_) => {
            seen.failed(Code::DeadlineExceeded);
            None
        }
    }
}

/// The three replicas: each its own folder (`r0`…, its log there) with the
/// shared PKI and the first one's signing key, and its metrics port.
struct Replicas {
    gateways: Vec<ChildGateway>,
    metrics: Vec<u16>,
}

impl Replicas {
    async fn start(dir: &Path, database_url: &str) -> Replicas {
        let roles = "urn:minegate:authority=authority,urn:minegate:energy=energy,\
                     urn:minegate:energy-backup=energy,urn:minegate:finance=finance,\
                     urn:minegate:operator=operator";
        let (mut gateways, mut metrics) = (Vec::new(), Vec::new());
        let timeout = REQUEST_TIMEOUT.as_millis().to_string();
        for k in 0..REPLICAS {
            // Chosen as it starts: ports chosen together may coincide.
            let port = common::child::free_port();
            metrics.push(port);
            let listen = format!("127.0.0.1:{port}");
            let env = [
                ("MINEGATE_ROLES", roles),
                ("MINEGATE_METRICS_LISTEN", listen.as_str()),
                ("MINEGATE_LIMITS_REQUEST_TIMEOUT_MS", timeout.as_str()),
                ("MINEGATE_LIMITS_ACK_DEADLINE_MS", "3000"),
            ];
            let home = replica_home(dir, k);
            gateways.push(ChildGateway::start(&home, database_url, &env).await);
        }
        Replicas { gateways, metrics }
    }

    fn reach(&self, pki: &Path) -> Reach {
        Reach {
            pki: pki.to_owned(),
            ports: self.gateways.iter().map(|g| g.port).collect(),
        }
    }

    async fn listener_losses(&self, k: usize) -> u64 {
        let addr = format!("127.0.0.1:{}", self.metrics[k]).parse().unwrap();
        let (_, body) = http_get(addr, "/metrics").await;
        let line = body
            .lines()
            .find(|l| l.starts_with("minegate_store_listener_losses_total "))
            .expect("the listener losses metric");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// Terminates every connection to `database` but the caller's: the
/// replicas' pools, writers and listeners.
async fn terminate_connections(server_url: &str, database: &str) -> i64 {
    use sqlx::Connection;
    let mut admin = sqlx::PgConnection::connect(server_url).await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

/// Where the faults land: the receipts count at which each starts.
fn fault_plan(random: &mut Lcg) -> Vec<(Fault, usize, usize)> {
    let mut faults = vec![
        Fault::Kill,
        Fault::Pause,
        Fault::Terminate,
        Fault::RestartPostgres,
    ];
    // A seeded shuffle, then one fault in each fifth of the receipts.
    for i in (1..faults.len()).rev() {
        let j = (random.next_fraction() * (i + 1) as f64) as usize;
        faults.swap(i, j);
    }
    faults
        .into_iter()
        .enumerate()
        .map(|(i, fault)| {
            let at = (0.1 + 0.2 * i as f64 + 0.1 * random.next_fraction()) * FILINGS as f64;
            let victim = (random.next_fraction() * REPLICAS as f64) as usize;
            (fault, at as usize, victim)
        })
        .collect()
}

async fn inject(
    fault: Fault,
    victim: usize,
    replicas: &mut Replicas,
    (server_url, database): (&str, &str),
    random: &mut Lcg,
) {
    match fault {
        Fault::Kill => {
            replicas.gateways[victim].kill9().await;
            tokio::time::sleep(random.millis(200, 2_000)).await;
            replicas.gateways[victim].restart().await;
        }
        Fault::Pause => {
            replicas.gateways[victim].signal("STOP").await;
            tokio::time::sleep(PAUSE).await;
            replicas.gateways[victim].signal("CONT").await;
        }
        Fault::Terminate => {
            let n = terminate_connections(server_url, database).await;
            assert!(n >= 3 * REPLICAS as i64, "{n} connections terminated");
        }
        Fault::RestartPostgres => {
            let cluster = Cluster::from_environment();
            tokio::task::spawn_blocking(move || {
                cluster.run("restart");
                cluster.start_and_wait();
            })
            .await
            .unwrap();
        }
    }
}

/// Keeps the test's folder (the replicas' logs) for a look after a failure.
fn keep(dir: &Arc<tempfile::TempDir>) -> PathBuf {
    let kept = std::env::temp_dir().join(format!("minegate-replica-faults-{}", std::process::id()));
    let _ = std::process::Command::new("cp")
        .arg("-a")
        .arg(dir.path())
        .arg(&kept)
        .status();
    kept
}

/// A task's outcome, if it ends within `seconds`.
async fn within<T>(what: &str, seconds: u64, task: tokio::task::JoinHandle<T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), task)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {seconds} s"))
        .unwrap()
}

fn seed() -> u64 {
    std::env::var("MINEGATE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_killed_paused_and_cut_off_lose_nothing_and_keep_one_log() {
    let Some(server_url) = postgres_url() else {
        return;
    };
    let dir = fresh_folder();
    let pki = pki_dir(&dir);
    pki::issue(
        &pki,
        "energy-backup",
        &LeafOptions::client("backup", Some("urn:minegate:energy-backup")),
    )
    .unwrap();
    let made = fresh_postgres_database(&server_url).await;
    let database_url = made.url.clone();
    let database = database_url.rsplit('/').next().unwrap().to_owned();
    let mut replicas = Replicas::start(dir.path(), &database_url).await;
    let reach = replicas.reach(&pki);
    let documents = upload_documents(reach.connect(0, "authority").await.unwrap(), "faults").await;

    let seed = seed();
    eprintln!("replica faults seed: {seed} (MINEGATE_TEST_SEED={seed} repeats it)");
    let mut random = Lcg(seed);
    let faults = fault_plan(&mut random);
    eprintln!("faults: {faults:?}");
    let started = Instant::now();
    let seen = Arc::new(Seen::default());
    let submitters: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let pace = Lcg(seed ^ (s as u64 + 1));
            let filings = plan(s, &documents);
            tokio::spawn(submitter(s, filings, reach.clone(), seen.clone(), pace))
        })
        .collect();
    let subscribers: Vec<_> = SUBSCRIBERS
        .iter()
        .enumerate()
        .map(|(k, name)| tokio::spawn(subscriber(name, k, reach.clone(), seen.clone())))
        .collect();
    let finance = tokio::spawn(finance(reach.clone(), seen.clone()));

    for &(fault, at, victim) in &faults {
        while seen.receipts.lock().unwrap().len() < at {
            assert!(started.elapsed() < Duration::from_secs(240), "stuck");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        eprintln!(
            "{:>6.1} s: {fault:?} replica {victim} at {at} receipts",
            started.elapsed().as_secs_f64()
        );
        inject(
            fault,
            victim,
            &mut replicas,
            (&server_url, &database),
            &mut random,
        )
        .await;
        // Every connection is back before the next fault (the listeners
        // retry each second).
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    for submitter in submitters {
        within("the submitters", 240, submitter).await;
    }
    seen.submitted.store(true, Ordering::SeqCst);
    eprintln!(
        "{:>6.1} s: every filing has its receipt",
        started.elapsed().as_secs_f64()
    );
    for (subscriber, name) in subscribers.into_iter().zip(SUBSCRIBERS) {
        let waited = tokio::time::timeout(Duration::from_secs(120), subscriber).await;
        if waited.is_err() {
            let sql = format!(
                "SELECT e.extract_id || ' attempts ' || COALESCE((SELECT STRING_AGG(a.attempt || '@' || a.sent_at, ',') \
                 FROM extract_attempts a WHERE a.extract_id = e.extract_id AND a.subscriber = 'urn:minegate:{name}'), '-') \
                 FROM extracts e WHERE NOT EXISTS (SELECT 1 FROM extract_acks k WHERE k.extract_id = e.extract_id \
                 AND k.subscriber = 'urn:minegate:{name}')"
            );
            panic!(
                "{name}: {} of {FILINGS} acknowledged within 120 s; unacknowledged: {:?}; dir kept: {}",
                seen.acked(name),
                texts(&database_url, &sql).await,
                keep(&dir).display()
            );
        }
    }
    let (revision, payers) = within("finance", 60, finance).await;
    eprintln!(
        "{:>6.1} s: done; failed calls {:?}, acknowledgements answered NOT_FOUND {}, form revision {revision}",
        started.elapsed().as_secs_f64(),
        seen.failures.lock().unwrap(),
        seen.acks_not_found.load(Ordering::Relaxed)
    );
    assert_eq!(payers as usize, FILERS);

    every_replica_serving(&replicas).await;
    // Every replica listens for the others' commits again, whether or not
    // a subscriber is connected to it.
    let listening = format!(
        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = '{database}' \
         AND query LIKE 'LISTEN %'"
    );
    assert_eq!(scalar(&database_url, &listening).await, REPLICAS as i64);
    let killed: Vec<usize> = faults
        .iter()
        .filter(|f| f.0 == Fault::Kill)
        .map(|f| f.2)
        .collect();
    for k in (0..REPLICAS).filter(|k| !killed.contains(k)) {
        // One loss for the terminated connections, one for the restart.
        assert_eq!(replicas.listener_losses(k).await, 2, "replica {k}");
    }
    stored_once_and_true(&reach, &database_url, &seen, revision).await;
    one_log(&reach, &seen).await;
    ledger_verifies_everywhere(&reach, &database_url).await;
    for gateway in &mut replicas.gateways {
        gateway.signal("TERM").await;
        assert_eq!(gateway.exit_code().await, Some(0));
    }
}

async fn every_replica_serving(replicas: &Replicas) {
    for (k, gateway) in replicas.gateways.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = match gateway.tls("operator").connect().await {
                Ok(channel) => HealthClient::new(channel)
                    .check(HealthCheckRequest::default())
                    .await
                    .map(|answer| answer.into_inner().status())
                    .ok(),
                Err(_) => None,
            };
            if status == Some(ServingStatus::Serving) {
                break;
            }
            assert!(Instant::now() < deadline, "replica {k}: {status:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The receipts, the register, the deliveries and the ledger's records,
/// each against what the clients saw.
async fn stored_once_and_true(reach: &Reach, url: &str, seen: &Seen, revision: u32) {
    let receipts = seen.receipts.lock().unwrap().clone();
    assert_eq!(receipts.len(), FILINGS);
    let channel = reach.connect(0, "authority").await.unwrap();
    assert_receipts_stored(channel, receipts.values().map(Vec::as_slice)).await;
    let (f, filers) = (FILINGS as i64, FILERS as i64);
    let counts = [
        ("SELECT COUNT(*) FROM filings", f),
        ("SELECT COUNT(DISTINCT idempotency_key) FROM filings", f),
        ("SELECT COUNT(*) FROM register", filers),
        (
            "SELECT COUNT(DISTINCT register_number) FROM register",
            filers,
        ),
        ("SELECT MIN(seq) FROM register", 1),
        ("SELECT MAX(seq) FROM register", filers),
        ("SELECT COUNT(*) FROM extracts", f),
        (
            "SELECT COUNT(*) FROM obligations WHERE kind = 'ENERGY_EXTRACT'",
            f,
        ),
        (
            "SELECT COUNT(*) FROM obligations WHERE kind = 'ENERGY_EXTRACT' \
             AND status IN ('FULFILLED', 'FULFILLED_LATE')",
            f,
        ),
        ("SELECT COUNT(*) FROM extract_acks", 2 * f),
        // Each (extract, subscriber)'s sendings numbered 1, 2, … without gaps.
        (
            "SELECT COUNT(*) FROM (SELECT extract_id, subscriber FROM extract_attempts \
             GROUP BY 1, 2 HAVING COUNT(*) = MAX(attempt)) t",
            2 * f,
        ),
        (
            "SELECT COUNT(*) FROM form_revision_reports \
             WHERE revision = (SELECT MAX(revision) FROM form_revisions)",
            filers,
        ),
        ("SELECT MAX(revision) FROM form_acks", revision as i64),
    ];
    for (sql, expected) in counts {
        assert_eq!(scalar(url, sql).await, expected, "{sql}");
    }
    for name in SUBSCRIBERS {
        let sql = format!(
            "SELECT extract_id FROM extract_acks WHERE subscriber = 'urn:minegate:{name}' \
             ORDER BY extract_id"
        );
        let mut acked: Vec<String> = seen.acks.lock().unwrap()[name].keys().cloned().collect();
        acked.sort();
        assert_eq!(texts(url, &sql).await, acked, "{name}");
    }
    ledger_matches_the_tables(url).await;
}

/// Every ledger record of a kind is one row of what it records.
async fn ledger_matches_the_tables(url: &str) {
    let kinds = [
        ("FILING_ACCEPTED", "SELECT COUNT(*) FROM filings"),
        ("EXTRACT_CREATED", "SELECT COUNT(*) FROM extracts"),
        ("EXTRACT_SENT", "SELECT COUNT(*) FROM extract_attempts"),
        ("EXTRACT_ACKNOWLEDGED", "SELECT COUNT(*) FROM extract_acks"),
        (
            "OBLIGATION_FULFILLED",
            "SELECT COUNT(*) FROM obligations WHERE status IN ('FULFILLED', 'FULFILLED_LATE')",
        ),
        (
            "FORM_REVISION_PUBLISHED",
            "SELECT COUNT(*) FROM form_revisions",
        ),
        ("FORM_ACKNOWLEDGED", "SELECT COUNT(*) FROM form_acks"),
    ];
    for (kind, rows) in kinds {
        let records = format!("SELECT COUNT(*) FROM ledger WHERE kind = '{kind}'");
        let subjects = format!("SELECT COUNT(DISTINCT subject) FROM ledger WHERE kind = '{kind}'");
        let expected = scalar(url, rows).await;
        assert_eq!(scalar(url, &records).await, expected, "{kind}");
        if kind == "OBLIGATION_FULFILLED" {
            assert_eq!(scalar(url, &subjects).await, expected, "fulfilled once");
        }
    }
}

/// Every checkpoint any client saw: at most one root per size, and each
/// consistent with the latest.
async fn one_log(reach: &Reach, seen: &Seen) {
    let channel = reach.connect(1, "operator").await.unwrap();
    let mut compliance = ComplianceServiceClient::new(channel);
    let keys: Vec<SigningKey> = compliance
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let mut all = seen.evidence.lock().unwrap().clone();
    for receipt in seen.receipts.lock().unwrap().values() {
        let receipt = minegate::proto::v1::FilingReceipt::decode(receipt.as_slice()).unwrap();
        all.push((ArtifactKind::Receipt, receipt.evidence.unwrap()));
    }
    for acks in seen.acks.lock().unwrap().values() {
        all.extend(acks.values().map(|e| (ArtifactKind::ExtractAck, e.clone())));
    }
    let mut by_size: BTreeMap<u64, Verified> = BTreeMap::new();
    for (kind, evidence) in &all {
        let then = verify(*kind, Some(evidence), &keys).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        let size = then.checkpoint.size;
        let earlier = by_size.entry(size).or_insert_with(|| then.clone());
        assert_eq!(
            earlier.checkpoint.root, then.checkpoint.root,
            "two logs at size {size}"
        );
    }
    let latest = compliance
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    let latest = open_checkpoint(&latest.note, &keys).unwrap();
    for (size, then) in &by_size {
        let proof = compliance
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: *size,
                new_size: latest.checkpoint.size,
            })
            .await
            .unwrap()
            .into_inner();
        verify_consistency(then, &latest, &proof.hashes)
            .unwrap_or_else(|e| panic!("size {size}: {e}"));
    }
    eprintln!(
        "{} pieces of evidence at {} checkpoints, each consistent with the latest ({} entries)",
        all.len(),
        by_size.len(),
        latest.checkpoint.size
    );
}

async fn ledger_verifies_everywhere(reach: &Reach, url: &str) {
    let entries = scalar(url, "SELECT COUNT(*) FROM ledger").await as u64;
    for k in 0..REPLICAS {
        let channel = reach.connect(k, "operator").await.unwrap();
        let verification = ComplianceServiceClient::new(channel)
            .verify_ledger(VerifyLedgerRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(verification.intact, "replica {k}: {verification:?}");
        assert_eq!(verification.entries_checked, entries, "replica {k}");
    }
}
