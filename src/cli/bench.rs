//! `minegate bench` (BENCHMARKS.md): in one run on one machine, the gateway
//! and a baseline server — the same tonic server, TLS and certificates,
//! answering without validation or storage — both as child processes, driven
//! by the same load generator over mutual TLS with realistic quarterly
//! reports; then fan-out to two subscribers at a steady rate, and form 402
//! for a large quarter.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use tonic::transport::Channel;

mod connections;
mod documents;
mod edges;
mod replicas;
mod windows;

use super::submit::upload_file;
use crate::{
    client::ClientTls,
    config::child_gateway_environment,
    domain::identifiers::check_digit,
    proto::v1::{
        AcknowledgeExtractRequest, Contacts, DataCentre, DocumentKind, DocumentRef, EquipmentLine,
        Person, PullQuarterlyFormRequest, QuarterlyReport, SubscribeRequest,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
    },
    tls::pki::{self, LeafOptions},
};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A few seconds in all: proves the harness works (CI), measures little.
    #[arg(long)]
    pub quick: bool,
    /// Seconds measured at each concurrency, after the warm-up.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Also measure on PostgreSQL: a server URL (scratch databases are made
    /// there, and dropped when the bench ends).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Payers in the form 402 quarter.
    #[arg(long, default_value_t = 50_000)]
    pub form_payers: u64,
    /// Also print the fan-out's latency for each quarter second of submissions
    /// (to see whether it holds steady or drifts).
    #[arg(long)]
    pub timeline: bool,
    /// Measure only this part (while working on it).
    #[arg(long, value_enum)]
    pub only: Option<Part>,
    /// Documents: upload and fetch at concurrency N only, one connection
    /// per caller (as N separate clients would), instead of 1, 16 and 64
    /// callers over 4 connections.
    #[arg(long)]
    pub connections: Option<usize>,
    /// Documents: the size of each document, in MiB.
    #[arg(long, default_value_t = 20)]
    pub document_mib: usize,
    /// Run this binary's `serve` as the servers instead of this one's (to
    /// compare builds in one run; keys it does not know are warnings).
    #[arg(long)]
    pub server_binary: Option<PathBuf>,
}

/// The binary whose `serve` the bench starts (`--server-binary`).
static SERVER_BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// The parts of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// Submit throughput and latency, with the baseline, and peak RSS.
    Submit,
    /// Form 402 for a large quarter.
    Form,
    /// Receipt → subscriber at a steady rate.
    FanOut,
    /// Inclusion and consistency proofs at a ledger of a million entries.
    Proofs,
    /// Uploads and fetches of 20 MiB documents, with the baseline, and peak RSS.
    Documents,
    /// Subscribers that never read, against the default limits: peak RSS.
    Windows,
    /// Another agency's calls while one host holds silent connections.
    Handshakes,
    /// Calls to random method paths: `/metrics` size and RSS.
    Paths,
    /// 3,000 connections from one certificate: refusals, idle closing, RSS.
    Connections,
    /// Submit through 1, 2 and 3 replicas on one PostgreSQL database, and
    /// fan-out with the subscribers on another replica (`--postgres-url`).
    Replicas,
}

/// A child `minegate serve` and how to reach it.
struct Server {
    child: Child,
    server: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Server {
    /// CPU time the child has used (user + system), from /proc (Linux).
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which is in parentheses): utime
        // and stime are the 12th and 13th, in clock ticks (100 a second).
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_millis(ticks * 10))
    }

    /// Resident memory of the child now, from /proc (Linux), in KiB.
    fn rss_kib(&self) -> Option<u64> {
        self.status_kib("VmRSS:")
    }

    /// Peak resident memory of the child, from /proc (Linux), in KiB.
    fn peak_rss_kib(&self) -> Option<u64> {
        self.status_kib("VmHWM:")
    }

    /// A figure in KiB of the child's /proc status.
    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

const ROLES: &str = "urn:minegate:authority=authority,urn:minegate:energy=energy,\
urn:minegate:energy-backup=energy,urn:minegate:finance=finance,urn:minegate:operator=operator";

/// The limits the bench's gateways run with, over the defaults.
const BENCH_LIMITS: &[(&str, &str)] = &[
    // 256 MiB: the submit load's largest messages are far smaller.
    ("MINEGATE_LIMITS_MAX_MESSAGE_BYTES", "268435456"),
    (
        "MINEGATE_LIMITS_MAX_CONCURRENT_STREAMS_PER_CONNECTION",
        "256",
    ),
    // The open-loop fan-out load may have more calls waiting than a
    // production peer limit allows; the bench measures speed, not admission.
    ("MINEGATE_LIMITS_MAX_CONCURRENT_CALLS_PER_PEER", "4096"),
    // The fan-out's subscribers ask for 1,024 in flight.
    ("MINEGATE_LIMITS_MAX_IN_FLIGHT", "1024"),
];

fn start_server(dir: &Path, database_url: &str, baseline: bool) -> anyhow::Result<Server> {
    start_server_with(dir, database_url, baseline, BENCH_LIMITS)
}

/// A child `minegate serve` on `database_url`, with `limits` (environment
/// variables) over the default configuration.
fn start_server_with(
    dir: &Path,
    database_url: &str,
    baseline: bool,
    limits: &[(&str, &str)],
) -> anyhow::Result<Server> {
    let port = free_port()?;
    let pki = dir.join("certs");
    let binary = match SERVER_BINARY.get() {
        Some(binary) => binary.clone(),
        None => std::env::current_exe()?,
    };
    let mut command = Command::new(binary);
    command.arg("serve");
    if baseline {
        command.arg("--baseline");
    }
    command
        .current_dir(dir)
        .envs(child_gateway_environment(
            port,
            database_url,
            &pki,
            &dir.join("signing.key"),
        ))
        .env("MINEGATE_ROLES", ROLES)
        .envs(limits.iter().copied())
        .env("MINEGATE_LOG_FILTER", "error")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = command.spawn().context("starting minegate serve")?;
    let server = Server {
        child,
        server: format!("https://127.0.0.1:{port}"),
    };
    // Long enough for the tree to be built over a large ledger at start.
    let deadline = Instant::now() + Duration::from_secs(600);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the server on port {port} did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

fn tls(dir: &Path, server: &Server, role: &str) -> ClientTls {
    let pki = dir.join("certs");
    ClientTls {
        server: server.server.clone(),
        ca: pki.join("ca.pem"),
        cert: pki.join(format!("{role}.pem")),
        key: pki.join(format!("{role}.key")),
        domain: Some("localhost".into()),
    }
}

/// The `n`-th distinct valid BIN (n below 16.8 million): registration
/// years 2010-2023; a number that can never be issued moves to the same
/// month and serial in an earlier year block (2009, 2008, ...), which no
/// other `n` uses.
fn bin(n: u64) -> String {
    let (month, serial) = (1 + (n / 100_000) % 12, n % 100_000);
    let mut year = 10 + (n / 1_200_000) % 14;
    let mut alternative = 9;
    loop {
        let prefix = format!("{year:02}{month:02}40{serial:05}");
        let mut digits = [0u8; 12];
        for (i, c) in prefix.chars().enumerate() {
            digits[i] = c as u8 - b'0';
        }
        if let Some(check) = check_digit(&digits) {
            return format!("{prefix}{check}");
        }
        year = alternative;
        alternative -= 1;
    }
}

/// A realistic quarterly report for 2026 Q1 from the `n`-th payer.
fn report(n: u64, run: &str, documents: &[DocumentRef]) -> QuarterlyReport {
    let wh = 1_000_000_000 + n * 7_919;
    QuarterlyReport {
        person: Some(Person {
            name: format!("TOO «Bench Hash {n}»"),
            bin_or_iin: bin(n),
            legal_address: format!(
                "Ekibastuz, Satpayev street {}, Pavlodar region",
                1 + n % 200
            ),
            contacts: Some(Contacts {
                phones: vec![format!("+7701{:07}", n % 10_000_000)],
                emails: vec![format!("payer{n}@bench.kz")],
            }),
            activity_kind: 1,
        }),
        year: 2026,
        quarter: 1,
        consumption_wh: wh,
        equipment: vec![EquipmentLine {
            model: "Antminer S21 Pro".into(),
            count: 1 + (n % 2000) as u32,
        }],
        jobs: 10 + (n % 100) as u32,
        investment_rest_of_year_tiyn: 10_000_000_000,
        investment_next_12_months_tiyn: 20_000_000_000,
        ip_pool: vec![format!(
            "37.{}.{}.{}/32",
            1 + (n >> 16) % 200,
            (n >> 8) & 255,
            n & 255
        )],
        documents: documents.to_vec(),
        data_centres: vec![DataCentre {
            address: "Ekibastuz, industrial zone 3, building 7".into(),
            kato_code: Some("552210000".into()),
            consumption_wh: Some(wh),
        }],
        idempotency_key: format!("{run}-{n}"),
    }
}

/// What a load run measured.
struct Load {
    requests: u64,
    errors: u64,
    /// The server's CPU time per request over the measured window.
    cpu_per_request: Option<Duration>,
    /// The share of the machine's CPU time idle over the measured window.
    machine_idle: Option<f64>,
    per_second: f64,
    p50: Duration,
    p90: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// CPU time the servers have used in all, where /proc tells it.
fn cpu_time(servers: &[&Server]) -> Option<Duration> {
    servers.iter().map(|server| server.cpu_time()).sum()
}

/// The machine's idle and total CPU time so far, in ticks, from /proc/stat
/// (Linux): idle and iowait, and the sum of the first line's first eight
/// fields (guest time is counted in user).
fn machine_cpu() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let all = fields.iter().take(8).sum();
    Some((fields.get(3)? + fields.get(4)?, all))
}

/// `concurrency` callers submitting as fast as they are answered: a warm-up,
/// then `duration` measured. `next` numbers the payers across runs. Caller
/// `i` calls on `channels[i % channels.len()]`; the CPU per request is that
/// of all `servers`.
async fn drive(
    servers: &[&Server],
    channels: &[Channel],
    concurrency: usize,
    (warmup, duration): (Duration, Duration),
    run: &str,
    next: &Arc<AtomicU64>,
    documents: &Arc<Vec<DocumentRef>>,
) -> Load {
    let started = Instant::now();
    let measure_from = started + warmup;
    let until = measure_from + duration;
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let mut client = FilingServiceClient::new(channels[i % channels.len()].clone())
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let (next, documents, run) = (next.clone(), documents.clone(), run.to_owned());
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), 0u64);
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let filing = report(n, &run, &documents);
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let ok = client.submit_quarterly_report(filing).await.is_ok();
                if sent >= measure_from {
                    if ok {
                        latencies.push(sent.elapsed());
                    } else {
                        errors += 1;
                    }
                }
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep_until(measure_from.into()).await;
    let before = (cpu_time(servers), machine_cpu());
    tokio::time::sleep_until(until.into()).await;
    let after = (cpu_time(servers), machine_cpu());
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((latencies, e)) = task.await {
            all.extend(latencies);
            errors += e;
        }
    }
    all.sort_unstable();
    Load::of(all, errors, duration, before, after)
}

/// The servers' CPU time and the machine's CPU ticks (idle, all), at an instant.
type CpuSample = (Option<Duration>, Option<(u64, u64)>);

impl Load {
    /// The figures of a window of `duration`: the latencies (sorted) of the
    /// requests answered in it, with CPU samples at its start and end.
    fn of(
        sorted: Vec<Duration>,
        errors: u64,
        duration: Duration,
        (cpu_before, machine_before): CpuSample,
        (cpu_after, machine_after): CpuSample,
    ) -> Load {
        let cpu_per_request = cpu_before
            .zip(cpu_after)
            .filter(|_| !sorted.is_empty())
            .map(|(before, after)| (after - before) / sorted.len() as u32);
        let machine_idle =
            machine_before
                .zip(machine_after)
                .map(|((idle0, all0), (idle1, all1))| {
                    (idle1 - idle0) as f64 / (all1 - all0).max(1) as f64
                });
        Load {
            requests: sorted.len() as u64,
            errors,
            cpu_per_request,
            machine_idle,
            per_second: sorted.len() as f64 / duration.as_secs_f64(),
            p50: percentile(&sorted, 0.50),
            p90: percentile(&sorted, 0.90),
            p99: percentile(&sorted, 0.99),
        }
    }
}

async fn channels(tls: &ClientTls, n: usize) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(tls.connect().await?);
    }
    Ok(out)
}

async fn upload_documents(dir: &Path, tls: &ClientTls) -> anyhow::Result<Vec<DocumentRef>> {
    let channel = tls.connect().await?;
    let docs = dir.join("documents");
    std::fs::create_dir_all(&docs)?;
    let mut refs = Vec::new();
    for (kind, name, bytes) in [
        (
            DocumentKind::CustomsDeclarationOrTitle,
            "customs.pdf",
            b"%PDF-1.4\n% customs declaration\n%%EOF\n".to_vec(),
        ),
        (
            DocumentKind::Residency,
            "residency.pdf",
            b"%PDF-1.4\n% residency certificate\n%%EOF\n".to_vec(),
        ),
        (
            DocumentKind::GridConnectionConditions,
            "grid.xml",
            b"<?xml version=\"1.0\"?><conditions/>".to_vec(),
        ),
    ] {
        let path = docs.join(name);
        std::fs::write(&path, bytes)?;
        refs.push(upload_file(channel.clone(), kind, &path).await?);
    }
    Ok(refs)
}

/// CPU time per request in microseconds, or "n/a" where /proc is not.
fn micros(d: Option<Duration>) -> String {
    d.map_or("n/a".into(), |d| format!("{:.0}", d.as_secs_f64() * 1e6))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Fan-out: filings at a steady `rate` per second for `duration`, two
/// subscriber identities acknowledging everything; receipt → arrival times.
/// The subscribers connect to `subscribed`, the submitters to `submitted`
/// (replicas of one database, or the same server).
async fn fan_out(
    dir: &Path,
    (subscribed, submitted): (&Server, &Server),
    documents: &[DocumentRef],
    rate: u64,
    duration: Duration,
    timeline: bool,
) -> anyhow::Result<FanOut> {
    let arrivals: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let mut subscribers = Vec::new();
    for role in ["energy", "energy-backup"] {
        let channel = tls(dir, subscribed, role).connect().await?;
        subscribers.push(subscribe_acknowledging(channel, arrivals.clone()).await?);
    }
    let (receipts, failed) = submit_at_rate(dir, submitted, documents, rate, duration).await?;
    // Each accepted filing's extract goes to both subscribers.
    let expected = receipts.len() * 2;
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrivals.lock().expect("arrivals").len() < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for subscriber in subscribers {
        subscriber.abort();
    }
    let arrivals = arrivals.lock().expect("arrivals");
    // An extract handed on at commit often reaches its subscriber before
    // the receipt reaches the submitter: those count as 0.
    let early = arrivals
        .iter()
        .filter(|(filing, at)| receipts.get(filing).is_some_and(|r| at < r))
        .count();
    let mut latencies: Vec<Duration> = arrivals
        .iter()
        .filter_map(|(filing, at)| {
            receipts
                .get(filing)
                .map(|r| at.saturating_duration_since(*r))
        })
        .collect();
    if timeline {
        print_fan_out_timeline(&receipts, &arrivals);
    }
    latencies.sort_unstable();
    Ok(FanOut {
        arrived: latencies.len(),
        early,
        failed,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
    })
}

/// Subscribes on `channel` (asking 1,024 in flight) and, in a task, notes
/// each extract's arrival in `arrivals` and acknowledges it without waiting.
async fn subscribe_acknowledging(
    channel: Channel,
    arrivals: Arc<Mutex<Vec<(String, Instant)>>>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut stream = EnergyExtractServiceClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            max_in_flight: 1024,
            until_caught_up: false,
        })
        .await?
        .into_inner();
    Ok(tokio::spawn(async move {
        let energy = EnergyExtractServiceClient::new(channel);
        while let Ok(Some(delivery)) = stream.message().await {
            let Some(extract) = delivery.extract else {
                continue;
            };
            arrivals
                .lock()
                .expect("arrivals")
                .push((extract.source_filing_id.clone(), Instant::now()));
            let mut energy = energy.clone();
            tokio::spawn(async move {
                let _ = energy
                    .acknowledge(AcknowledgeExtractRequest {
                        extract_id: extract.extract_id,
                    })
                    .await;
            });
        }
    }))
}

/// Submits quarterly reports to `server` at a steady `rate` per second for
/// `duration` (over 4 connections, not waiting for one to finish before the
/// next is due); returns when each was receipted, by filing, and how many
/// failed.
async fn submit_at_rate(
    dir: &Path,
    server: &Server,
    documents: &[DocumentRef],
    rate: u64,
    duration: Duration,
) -> anyhow::Result<(HashMap<String, Instant>, usize)> {
    let receipts: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let failed = Arc::new(AtomicU64::new(0));
    let channels = channels(&tls(dir, server, "authority"), 4).await?;
    let total = rate * duration.as_secs().max(1);
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut submits = Vec::new();
    let documents = Arc::new(documents.to_vec());
    for n in 0..total {
        interval.tick().await;
        let mut client = FilingServiceClient::new(channels[n as usize % channels.len()].clone());
        let (receipts, documents, failed) = (receipts.clone(), documents.clone(), failed.clone());
        submits.push(tokio::spawn(async move {
            match client
                .submit_quarterly_report(report(10_000_000 + n, "fanout", &documents))
                .await
            {
                Ok(receipt) => {
                    receipts
                        .lock()
                        .expect("receipts")
                        .insert(receipt.into_inner().filing_id, Instant::now());
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for submit in submits {
        let _ = submit.await;
    }
    let receipts = std::mem::take(&mut *receipts.lock().expect("receipts"));
    Ok((receipts, failed.load(Ordering::Relaxed) as usize))
}

/// `--timeline`: the fan-out's latency for each quarter second of
/// submissions (by when the filing was receipted).
fn print_fan_out_timeline(receipts: &HashMap<String, Instant>, arrivals: &[(String, Instant)]) {
    let start = receipts.values().min().copied();
    let mut by_second: std::collections::BTreeMap<u64, Vec<Duration>> = Default::default();
    for (filing, at) in arrivals {
        if let (Some(r), Some(s)) = (receipts.get(filing), start) {
            by_second
                .entry(r.duration_since(s).as_millis() as u64 / 250)
                .or_default()
                .push(at.saturating_duration_since(*r));
        }
    }
    for (q, mut l) in by_second {
        l.sort_unstable();
        println!(
            "  submitted at {:>5} ms: {:>5} arrivals, p50 {:>8} ms, p99 {:>8} ms",
            q * 250,
            l.len(),
            ms(percentile(&l, 0.5)),
            ms(percentile(&l, 0.99)),
        );
    }
}

/// What [`fan_out`] measured.
struct FanOut {
    /// Extracts that reached a subscriber (two per accepted filing).
    arrived: usize,
    /// Of them, those that arrived before their filing's receipt.
    early: usize,
    /// Submissions that failed.
    failed: usize,
    /// Receipt → arrival.
    p50: Duration,
    p99: Duration,
}

/// Fills the quarter to `payers` reports, then times pulling form 402.
async fn form_402(
    dir: &Path,
    server: &Server,
    documents: &[DocumentRef],
    payers: u64,
    next: &Arc<AtomicU64>,
) -> anyhow::Result<(u64, Duration, Duration, usize)> {
    let have = next.load(Ordering::Relaxed);
    if have < payers {
        let channels = channels(&tls(dir, server, "authority"), 4).await?;
        let documents = Arc::new(documents.to_vec());
        let mut tasks = Vec::new();
        for i in 0..64usize {
            let mut client = FilingServiceClient::new(channels[i % channels.len()].clone());
            let (next, documents) = (next.clone(), documents.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= payers {
                        break;
                    }
                    let _ = client
                        .submit_quarterly_report(report(n, "load", &documents))
                        .await;
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    }
    let mut finance = FinanceServiceClient::new(tls(dir, server, "finance").connect().await?)
        .max_decoding_message_size(256 << 20);
    let started = Instant::now();
    let form = finance
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            ..Default::default()
        })
        .await?
        .into_inner();
    let first = started.elapsed();
    let rows = form.body.map_or(0, |b| b.rows.len());
    let started = Instant::now();
    finance
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            ..Default::default()
        })
        .await?;
    let again = started.elapsed();
    Ok((payers, first, again, rows))
}

struct Backend {
    name: &'static str,
    url: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(binary) = &args.server_binary {
        let _ = SERVER_BINARY.set(std::fs::canonicalize(binary)?);
    }
    let dir =
        std::env::temp_dir().join(format!("minegate-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    let result = bench(&args, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(server_url) = &args.postgres_url {
        drop_databases(server_url).await;
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// The scratch databases this run made (each part's gateway is stopped by
/// the time the run ends), to drop then.
static MADE_DATABASES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Drops the scratch databases this run made; one that cannot be dropped
/// is named on stderr.
async fn drop_databases(server_url: &str) {
    use sqlx::Connection;
    let names = std::mem::take(&mut *MADE_DATABASES.lock().unwrap_or_else(|p| p.into_inner()));
    let Ok(mut admin) = sqlx::PgConnection::connect(server_url).await else {
        eprintln!("could not connect to drop the bench's databases: {names:?}");
        return;
    };
    for name in names {
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        if let Err(error) = sqlx::query(&drop).execute(&mut admin).await {
            eprintln!("could not drop {name}: {error}");
        }
    }
}

/// How long and how much each part measures: a few seconds in all with
/// `--quick`, the figures BENCHMARKS.md quotes without.
struct Plan {
    warmup: Duration,
    duration: Duration,
    /// Submit concurrencies (none when the submit part is not wanted).
    concurrencies: &'static [usize],
    fan_rate: u64,
    fan_time: Duration,
    payers: u64,
}

impl Plan {
    fn of(args: &BenchArgs) -> Plan {
        let (warmup, duration) = if args.quick {
            (Duration::from_millis(200), Duration::from_millis(500))
        } else {
            (Duration::from_secs(2), Duration::from_secs(args.duration))
        };
        let concurrencies: &'static [usize] = if !wanted(args, Part::Submit) {
            &[]
        } else if args.quick {
            &[1, 16]
        } else {
            &[1, 16, 64]
        };
        let (fan_rate, fan_time) = if args.quick {
            (100, Duration::from_secs(1))
        } else {
            (1_000, Duration::from_secs(5))
        };
        let payers = if args.quick { 300 } else { args.form_payers };
        Plan {
            warmup,
            duration,
            concurrencies,
            fan_rate,
            fan_time,
            payers,
        }
    }
}

/// Whether `--only` leaves `part` in.
fn wanted(args: &BenchArgs, part: Part) -> bool {
    args.only.is_none_or(|only| only == part)
}

/// The submit table's rows are printed as they are measured; every other
/// part's lines are collected and printed after it.
async fn bench(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    pki::init(&dir.join("certs"), false)?;
    pki::issue(
        &dir.join("certs"),
        "energy-backup",
        &LeafOptions::client("backup", Some("urn:minegate:energy-backup")),
    )?;
    let plan = Plan::of(args);
    print_submit_header(&plan);

    let mut backends = vec![Backend {
        name: "sqlite",
        url: format!("sqlite://{}", dir.join("bench.db").display()),
    }];
    if let Some(server) = &args.postgres_url {
        backends.push(Backend {
            name: "postgres",
            url: create_database(server).await?,
        });
    }

    let base = submit_baseline(dir, &plan).await?;
    let mut others = Vec::new();
    for backend in &backends {
        submit_and_form(dir, args, &plan, backend, &base, &mut others).await?;
        if wanted(args, Part::FanOut) {
            others.push(fan_out_fresh(dir, args, &plan, backend).await?);
        }
    }
    other_parts(dir, args, &plan, &backends, &mut others).await?;
    println!();
    for line in others {
        println!("{line}");
    }
    Ok(())
}

/// The run's first line and the submit table's header.
fn print_submit_header(plan: &Plan) {
    println!(
        "minegate bench — {} cores, {} build; {} s measured after {} s warm-up at each concurrency",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if cfg!(debug_assertions) {
            "DEBUG (numbers not representative)"
        } else {
            "release"
        },
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64()
    );
    println!();
    println!(
        "{:<28} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>11}",
        "submit (quarterly report)",
        "conc",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "vs base",
        "server µs/req"
    );
}

/// The baseline (a server that decodes and answers, storing nothing) at
/// each concurrency: prints its rows, returns its requests per second by
/// concurrency, which the gateway's rows are compared with.
async fn submit_baseline(dir: &Path, plan: &Plan) -> anyhow::Result<HashMap<usize, f64>> {
    let baseline = start_server(dir, "sqlite://baseline-unused.db", true)?;
    let baseline_channels = channels(&tls(dir, &baseline, "authority"), 4).await?;
    let no_documents = Arc::new(Vec::new());
    let mut base = HashMap::new();
    let counter = Arc::new(AtomicU64::new(0));
    for &c in plan.concurrencies {
        let load = drive(
            &[&baseline],
            &baseline_channels,
            c,
            (plan.warmup, plan.duration),
            "base",
            &counter,
            &no_documents,
        )
        .await;
        println!(
            "{:<28} {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>11}",
            "baseline (decode + answer)",
            c,
            load.per_second,
            ms(load.p50),
            ms(load.p90),
            ms(load.p99),
            "1.00",
            micros(load.cpu_per_request)
        );
        base.insert(c, load.per_second);
    }
    Ok(base)
}

/// On one gateway over `backend`: the submit rows (printed) and the peak RSS
/// under that load, then form 402 for a large quarter (the submissions
/// count among its payers).
async fn submit_and_form(
    dir: &Path,
    args: &BenchArgs,
    plan: &Plan,
    backend: &Backend,
    base: &HashMap<usize, f64>,
    others: &mut Vec<String>,
) -> anyhow::Result<()> {
    let gateway = start_server(dir, &backend.url, false)?;
    let authority = tls(dir, &gateway, "authority");
    let documents = Arc::new(upload_documents(dir, &authority).await?);
    let gateway_channels = channels(&authority, 4).await?;
    let next = Arc::new(AtomicU64::new(0));
    for &c in plan.concurrencies {
        let load = drive(
            &[&gateway],
            &gateway_channels,
            c,
            (plan.warmup, plan.duration),
            "load",
            &next,
            &documents,
        )
        .await;
        println!(
            "{:<28} {:>5} {:>10.0} {:>9} {:>9} {:>9} {:>9.2} {:>11}{}",
            format!("gateway ({})", backend.name),
            c,
            load.per_second,
            ms(load.p50),
            ms(load.p90),
            ms(load.p99),
            load.per_second / base[&c].max(1.0),
            micros(load.cpu_per_request),
            if load.errors > 0 {
                format!("  ({} errors)", load.errors)
            } else {
                String::new()
            }
        );
        let _ = load.requests;
    }
    if wanted(args, Part::Submit) {
        let rss = gateway
            .peak_rss_kib()
            .map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        others.push(format!(
            "gateway peak RSS under the submit load ({}): {rss}",
            backend.name
        ));
    }
    if wanted(args, Part::Form) {
        let (payers, first, again, rows) =
            form_402(dir, &gateway, &documents, plan.payers, &next).await?;
        others.push(format!(
            "form 402 for {payers} payers ({}): {rows} rows; first pull (compile, publish, transfer) {} ms, pulled again {} ms",
            backend.name,
            ms(first),
            ms(again)
        ));
    }
    Ok(())
}

/// A fresh database of `backend`'s kind: the SQLite file `file` in `dir`, or
/// a new scratch database on the `--postgres-url` server.
async fn fresh_database(
    dir: &Path,
    args: &BenchArgs,
    backend: &Backend,
    file: &str,
) -> anyhow::Result<String> {
    Ok(match backend.name {
        "sqlite" => format!("sqlite://{}", dir.join(file).display()),
        _ => create_database(args.postgres_url.as_deref().unwrap_or_default()).await?,
    })
}

/// Fan-out on a fresh database of `backend`'s kind, so no backlog is
/// pending; returns its line.
async fn fan_out_fresh(
    dir: &Path,
    args: &BenchArgs,
    plan: &Plan,
    backend: &Backend,
) -> anyhow::Result<String> {
    let fresh = fresh_database(dir, args, backend, "fanout.db").await?;
    let gateway = start_server(dir, &fresh, false)?;
    let documents = upload_documents(dir, &tls(dir, &gateway, "authority")).await?;
    let FanOut {
        arrived,
        early,
        failed,
        p50,
        p99,
    } = fan_out(
        dir,
        (&gateway, &gateway),
        &documents,
        plan.fan_rate,
        plan.fan_time,
        args.timeline,
    )
    .await?;
    Ok(format!(
        "fan-out at {} filings/s for {} s, 2 subscribers ({}): {arrived} arrivals ({early} before their receipt), {failed} submissions failed, receipt → subscriber p50 {} ms, p99 {} ms",
        plan.fan_rate,
        plan.fan_time.as_secs(),
        backend.name,
        ms(p50),
        ms(p99)
    ))
}

/// The parts after submit, form 402 and fan-out, in order, each on fresh
/// databases or servers of its own; a blank line before each part but
/// proofs.
async fn other_parts(
    dir: &Path,
    args: &BenchArgs,
    plan: &Plan,
    backends: &[Backend],
    others: &mut Vec<String>,
) -> anyhow::Result<()> {
    if wanted(args, Part::Proofs) {
        let (entries, calls) = if args.quick {
            (10_000, 200)
        } else {
            (1_000_000, 5_000)
        };
        for backend in backends {
            let url = fresh_database(dir, args, backend, "proofs.db").await?;
            others.push(proofs(dir, backend.name, &url, entries, calls).await?);
        }
    }
    if wanted(args, Part::Documents) {
        let mut fresh = Vec::new();
        for backend in backends {
            let url = fresh_database(dir, args, backend, "documents.db").await?;
            fresh.push((backend.name, url));
        }
        others.push(String::new());
        let shape = documents::Shape {
            quick: args.quick,
            connections: args.connections,
            size: args.document_mib << 20,
        };
        others.extend(documents::run(dir, &fresh, shape).await?);
    }
    if wanted(args, Part::Windows) {
        others.push(String::new());
        others.extend(windows::run(dir, args.quick).await?);
    }
    if wanted(args, Part::Handshakes) {
        others.push(String::new());
        others.extend(edges::handshakes(dir, args.quick).await?);
    }
    if wanted(args, Part::Paths) {
        others.push(String::new());
        others.extend(edges::paths(dir, args.quick).await?);
    }
    if wanted(args, Part::Connections) {
        others.push(String::new());
        others.extend(connections::run(dir, args.quick).await?);
    }
    if wanted(args, Part::Replicas) {
        others.push(String::new());
        match &args.postgres_url {
            Some(server_url) => {
                let shape = replicas::Shape {
                    quick: args.quick,
                    window: (plan.warmup, plan.duration),
                    timeline: args.timeline,
                };
                others.extend(replicas::run(dir, server_url, shape).await?);
            }
            None => others.push(
                "replicas: skipped (PostgreSQL only: give --postgres-url to measure it)".into(),
            ),
        }
    }
    Ok(())
}

/// Proofs at a large tree: a ledger of `entries` entries written straight
/// into a scratch database, the gateway started on it (which builds the
/// tree over them, as over any ledger kept before the tree was: timed),
/// then `calls` GetInclusionProof (a random leaf in the latest tree) and
/// GetConsistencyProof (a random older size to the latest), one at a time,
/// against GetCheckpoint on the same connection (one row read: the floor).
async fn proofs(
    dir: &Path,
    name: &str,
    url: &str,
    entries: u64,
    calls: usize,
) -> anyhow::Result<String> {
    use crate::proto::v1::{
        GetCheckpointRequest, GetConsistencyProofRequest, GetInclusionProofRequest,
        compliance_service_client::ComplianceServiceClient,
    };
    fill_ledger(url, entries).await?;
    let started = Instant::now();
    let gateway = start_server(dir, url, false)?;
    let built = started.elapsed();
    let mut compliance =
        ComplianceServiceClient::new(tls(dir, &gateway, "operator").connect().await?);
    let size = compliance
        .get_checkpoint(GetCheckpointRequest {})
        .await?
        .into_inner()
        .size;
    if size != entries {
        bail!("the gateway's tree has {size} leaves, not {entries}");
    }
    // A fixed xorshift sequence: the same leaves and sizes every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let (mut base, mut inclusion, mut consistency) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..calls {
        let sent = Instant::now();
        compliance.get_checkpoint(GetCheckpointRequest {}).await?;
        base.push(sent.elapsed());
        let request = GetInclusionProofRequest {
            leaf_index: random(size),
            tree_size: size,
        };
        let sent = Instant::now();
        compliance.get_inclusion_proof(request).await?;
        inclusion.push(sent.elapsed());
        let request = GetConsistencyProofRequest {
            old_size: 1 + random(size - 1),
            new_size: size,
        };
        let sent = Instant::now();
        compliance.get_consistency_proof(request).await?;
        consistency.push(sent.elapsed());
    }
    let figures = |mut latencies: Vec<Duration>| {
        latencies.sort_unstable();
        format!(
            "p50 {} ms, p99 {} ms",
            ms(percentile(&latencies, 0.50)),
            ms(percentile(&latencies, 0.99))
        )
    };
    Ok(format!(
        "proofs at {entries} entries ({name}): tree built at start in {:.1} s; {calls} calls each, one at a time: GetCheckpoint (baseline) {}; GetInclusionProof {}; GetConsistencyProof {}",
        built.as_secs_f64(),
        figures(base),
        figures(inclusion),
        figures(consistency)
    ))
}

/// Writes `entries` DOCUMENT_STORED entries, chained, into the (migrated)
/// database at `url`, as a long-running gateway would have.
async fn fill_ledger(url: &str, entries: u64) -> anyhow::Result<()> {
    use crate::domain::{
        Sha256Hex,
        ledger::{Head, LedgerEntry, LedgerEvent},
    };
    let store = crate::store::open(
        url,
        Arc::new(crate::store::SystemClock),
        crate::store::Signing::ReadOnly,
    )
    .await?;
    store.close().await;
    let at = chrono::DateTime::parse_from_rfc3339("2026-01-05T06:00:00Z")?.to_utc();
    let mut head = Head::default();
    let mut next = move || -> LedgerEntry {
        let n = head.seq as u64 + 1;
        let event = LedgerEvent::DocumentStored {
            sha256: Sha256Hex::of(&n.to_be_bytes()),
            media_type: "application/pdf".into(),
            size_bytes: 100_000 + n % 1000,
        };
        head.append(&event, at)
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        let mut conn = rusqlite::Connection::open(path)?;
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare(
                "INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            for _ in 0..entries {
                let e = next();
                insert.execute(rusqlite::params![
                    e.seq,
                    e.kind,
                    e.subject,
                    e.recorded_at,
                    e.payload,
                    e.prev_hash,
                    e.hash
                ])?;
            }
        }
        tx.commit()?;
        return Ok(());
    }
    let pool = sqlx::PgPool::connect(url).await?;
    let mut written = 0;
    while written < entries {
        let batch: Vec<LedgerEntry> = (0..10_000.min(entries - written)).map(|_| next()).collect();
        written += batch.len() as u64;
        let column = |f: fn(&LedgerEntry) -> String| batch.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO ledger (seq, kind, subject, recorded_at, payload, prev_hash, hash) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], \
             $5::text[], $6::text[], $7::text[])",
        )
        .bind(batch.iter().map(|e| e.seq).collect::<Vec<_>>())
        .bind(column(|e| e.kind.clone()))
        .bind(column(|e| e.subject.clone()))
        .bind(batch.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .bind(column(|e| e.payload.clone()))
        .bind(column(|e| e.prev_hash.clone()))
        .bind(column(|e| e.hash.clone()))
        .execute(&pool)
        .await?;
    }
    pool.close().await;
    Ok(())
}

async fn create_database(server_url: &str) -> anyhow::Result<String> {
    use sqlx::Connection;
    let name = format!("minegate_bench_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    MADE_DATABASES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(name.clone());
    let (base, _) = server_url
        .rsplit_once('/')
        .context("a PostgreSQL URL with a database")?;
    Ok(format!("{base}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::identifiers::BinOrIin;

    #[test]
    fn bench_bins_are_valid_and_distinct() {
        let bins: Vec<String> = (0..20_000).map(bin).collect();
        for b in &bins {
            assert!(matches!(BinOrIin::parse(b), Ok(BinOrIin::Bin(_))), "{b}");
        }
        let mut unique = bins.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), bins.len());
    }
}
