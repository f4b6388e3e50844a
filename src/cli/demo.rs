//! `minegate demo`: one quarter of the regime, end to end, in a temporary
//! folder. It makes a development PKI, starts the gateway on SQLite, and
//! plays ~25 generated filers through the same clients the agencies use —
//! `submit` (with generated PDF/PNG documents), an energy subscriber that
//! writes and acknowledges every extract, `finance pull` — over mutual TLS.
//! Dates are simulated (the gateway's clock is moved through the quarter);
//! everything else is real. The same `--seed` gives the same summary.

use std::{
    collections::{BTreeMap, HashMap},
    io::{IsTerminal, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use clap::Args;
use tokio::sync::watch;

use super::{
    energy::{self, write_durably},
    finance::{self, FormFormat},
    submit::{self, FilingKindArg, Submitted},
};
use crate::{
    client::ClientTls,
    config::Config,
    domain::identifiers::check_digit,
    proto::v1::{
        FindingKind, LedgerVerification, ListFindingsRequest, ListObligationsRequest,
        ListRegisterRequest, ObligationStatus, RegisterStatus, VerifyLedgerRequest,
        compliance_service_client::ComplianceServiceClient,
        filing_service_client::FilingServiceClient,
    },
    server,
    store::Clock,
    tls::pki,
};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The same seed plays the same quarter and prints the same numbers.
    #[arg(long, default_value_t = 2026)]
    pub seed: u64,
    /// How many persons file.
    #[arg(long, default_value_t = 25)]
    pub filers: u32,
    /// Remove the folder afterwards (it is kept for inspection otherwise).
    #[arg(long)]
    pub clean: bool,
    /// Play in this folder instead of a new temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// The simulated calendar the demo moves the gateway through.
struct DemoClock(Mutex<DateTime<Utc>>);

impl DemoClock {
    fn set(&self, date: NaiveDate, hour: u32) {
        *self.0.lock().expect("clock") =
            Utc.from_utc_datetime(&date.and_hms_opt(hour, 0, 0).expect("a time"));
    }
}

impl Clock for DemoClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

/// SplitMix64: small, seedable, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const PLACES: &[(&str, &str)] = &[
    ("Ekibastuz, Pavlodar region", "552210000"),
    ("Pavlodar", "551010000"),
    ("Karaganda", "351010000"),
    ("Astana", "711110000"),
    ("Almaty", "751110000"),
    ("Shymkent", "791510000"),
    ("Aktobe", "151010000"),
    ("Taraz, Zhambyl region", "311010000"),
    ("Ust-Kamenogorsk, East Kazakhstan region", "631010000"),
    ("Kostanay", "391010000"),
];
const STREETS: &[&str] = &[
    "Abai",
    "Satpayev",
    "Tole bi",
    "Kabanbay batyr",
    "Dostyk",
    "Auezov",
    "Zheltoksan",
    "Baitursynov",
];
const WORDS: &[&str] = &[
    "Qazaq",
    "Dala",
    "Altyn",
    "Sary-Arka",
    "Steppe",
    "Tengri",
    "Nomad",
    "Irtysh",
    "Khan",
    "Baiterek",
];
const TRADES: &[&str] = &[
    "Hash", "Compute", "Mining", "Data", "Energy", "Digital", "Blocks", "Hosting",
];
const SURNAMES: &[&str] = &[
    "Akhmetov",
    "Nurlanova",
    "Seitkali",
    "Zhaksylykov",
    "Omarova",
    "Bekov",
    "Tulegenova",
    "Ismailov",
];
const MODELS: &[&str] = &[
    "Antminer S21 Pro",
    "Antminer S19k Pro",
    "Whatsminer M60S",
    "Avalon A1466",
    "Antminer T21",
];

/// One generated person who files.
struct Filer {
    id: String,
    name: String,
    address: String,
    site: String,
    kato: String,
    phone: String,
    email: String,
    ip: String,
    power_kw: u64,
    jobs: u32,
    start_filed: NaiveDate,
    planned_start: NaiveDate,
}

fn with_check_digit(prefix: &str) -> Option<String> {
    let mut digits = [0u8; 12];
    for (i, c) in prefix.chars().enumerate() {
        digits[i] = c.to_digit(10)? as u8;
    }
    check_digit(&digits).map(|d| format!("{prefix}{d}"))
}

fn generate(rng: &mut Rng, n: u32) -> Vec<Filer> {
    let first_filing = NaiveDate::from_ymd_opt(2025, 12, 1).expect("a date");
    (0..n)
        .map(|i| {
            let individual = i % 4 == 3;
            let id = loop {
                let prefix = if individual {
                    let (year, month, day) =
                        (60 + rng.below(35), 1 + rng.below(12), 1 + rng.below(28));
                    format!(
                        "{year:02}{month:02}{day:02}{}{:04}",
                        3 + rng.below(2),
                        rng.below(10_000)
                    )
                } else {
                    format!(
                        "{:02}{:02}40{:05}",
                        10 + rng.below(14),
                        1 + rng.below(12),
                        rng.below(100_000)
                    )
                };
                if let Some(id) = with_check_digit(&prefix) {
                    break id;
                }
            };
            let name = if individual {
                format!(
                    "IE {} {}.",
                    rng.pick(SURNAMES),
                    (b'A' + rng.below(26) as u8) as char
                )
            } else {
                format!("TOO «{} {}»", rng.pick(WORDS), rng.pick(TRADES))
            };
            let (city, kato) = *rng.pick(PLACES);
            let street = rng.pick(STREETS);
            let start_filed = first_filing + Days::new(u64::from(i) * 2);
            // Every seventh notifies late: fewer than 30 days ahead.
            let ahead = if i % 7 == 5 {
                10 + rng.below(15)
            } else {
                35 + rng.below(25)
            };
            Filer {
                id,
                name,
                address: format!("{city}, {street} street {}", 1 + rng.below(200)),
                site: format!(
                    "{city}, industrial zone {}, building {}",
                    1 + rng.below(9),
                    1 + rng.below(40)
                ),
                kato: kato.to_owned(),
                phone: format!("+777{:08}", rng.below(100_000_000)),
                email: format!(
                    "office{}@{}.kz",
                    i + 1,
                    rng.pick(WORDS).to_lowercase().replace('-', "")
                ),
                ip: format!("37.{}.{}.0/24", 150 + i / 200, i % 200),
                power_kw: 500 + 250 * rng.below(80),
                jobs: 5 + rng.below(200) as u32,
                start_filed,
                planned_start: start_filed + Days::new(ahead),
            }
        })
        .collect()
}

fn date_json(date: NaiveDate) -> serde_json::Value {
    use chrono::Datelike;
    serde_json::json!({ "year": date.year(), "month": date.month(), "day": date.day() })
}

fn person_json(f: &Filer) -> serde_json::Value {
    serde_json::json!({
        "name": f.name,
        "binOrIin": f.id,
        "legalAddress": f.address,
        "contacts": { "phones": [f.phone], "emails": [f.email] },
        "activityKind": "ACTIVITY_KIND_MINING",
    })
}

/// A small, well-formed PDF whose text names what it is.
fn pdf(title: &str) -> Vec<u8> {
    let text = title.replace(['(', ')', '\\'], " ");
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_owned(),
    ];
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, object) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{object}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).bytes());
    for offset in offsets {
        out.extend(format!("{offset:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .bytes(),
    );
    out
}

/// A 1×1 PNG whose text chunk names what it is.
fn png(title: &str) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        out.extend(kind);
        out.extend(data);
        out.extend(crc32(&[kind.as_slice(), data].concat()).to_be_bytes());
    }
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for byte in bytes {
            crc ^= u32::from(*byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]);
    chunk(&mut out, b"tEXt", format!("Title\0{title}").as_bytes());
    // zlib stream of one scanline: filter 0, one grey pixel.
    chunk(
        &mut out,
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x02, 0x00, 0xFD, 0xFF, 0x00, 0x80, 0x00, 0x81, 0x00, 0x81,
        ],
    );
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Writes the filer's three documents; returns the `--document` arguments.
fn documents(dir: &Path, f: &Filer, tag: &str) -> anyhow::Result<Vec<String>> {
    let folder = dir.join("documents").join(&f.id);
    let files = [
        (
            "customs",
            format!("customs-declaration-{tag}.pdf"),
            pdf(&format!(
                "Customs declaration / title to equipment, {} ({}), {tag}",
                f.name, f.id
            )),
        ),
        (
            "residency",
            format!("residency-{tag}.png"),
            png(&format!(
                "Certificate of residency of the Republic of Kazakhstan, {} ({})",
                f.name, f.id
            )),
        ),
        (
            "grid",
            format!("grid-connection-{tag}.pdf"),
            pdf(&format!(
                "Technical conditions for grid connection, {} kW, {}",
                f.power_kw, f.site
            )),
        ),
    ];
    let mut args = Vec::new();
    for (kind, name, bytes) in files {
        let path = folder.join(name);
        write_durably(&path, &bytes)?;
        args.push(format!("{kind}={}", path.display()));
    }
    Ok(args)
}

struct Progress {
    total: usize,
    done: usize,
    terminal: bool,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if self.terminal {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            eprint!(
                "\r[{}{}] {:>3}/{} {:<60}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.done,
                self.total,
                what.chars().take(60).collect::<String>()
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// The numbers a run comes to (the same for the same seed), and the latencies (not).
#[derive(Debug, Default)]
pub struct Summary {
    pub lines: Vec<String>,
    pub latencies_ms: Vec<u128>,
}

fn count_by<T: Ord>(items: impl IntoIterator<Item = T>) -> BTreeMap<T, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item).or_insert(0) += 1;
    }
    counts
}

fn counts_text(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Plays the quarter in `dir`; returns the summary.
///
/// The steps follow the calendar: the gateway starts in December, the
/// persons file their start notifications, one stops in March, the Q1
/// reports come in April, the finance ministry pulls form 402 in May, and
/// the operators look at what it all came to once the deadlines are past.
pub async fn play(seed: u64, filers: u32, dir: &Path) -> anyhow::Result<Summary> {
    if filers < 3 {
        bail!("--filers must be at least 3 (one revises, one stops, one never reports)");
    }
    let pki_dir = dir.join("certs");
    pki::init(&pki_dir, false)?;
    let config = demo_config(dir, &pki_dir)?;

    let clock = Arc::new(DemoClock(Mutex::new(Utc::now())));
    clock.set(NaiveDate::from_ymd_opt(2025, 12, 1).expect("a date"), 5);
    let gateway = server::start_with_clock(&config, clock.clone()).await?;
    let tls = |role: &str| ClientTls {
        server: format!("https://{}", gateway.local_addr()),
        ca: pki_dir.join("ca.pem"),
        cert: pki_dir.join(format!("{role}.pem")),
        key: pki_dir.join(format!("{role}.key")),
        domain: Some("localhost".into()),
    };
    let (authority, operator) = (tls("authority"), tls("operator"));

    let delivered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (stop_subscriber, stopped) = watch::channel(false);
    let subscriber =
        spawn_energy_subscriber(tls("energy"), dir.join("energy"), &delivered, stopped);

    let mut rng = Rng(seed);
    let people = generate(&mut rng, filers);
    let mut progress = Progress {
        total: people.len() * 2 + 2,
        done: 0,
        terminal: std::io::stderr().is_terminal(),
    };
    let mut filing = Filing {
        authority: &authority,
        delivered: &delivered,
        filings: dir.join("filings"),
        latencies: Vec::new(),
    };
    file_start_notifications(&mut filing, &clock, &mut rng, &people, dir, &mut progress).await?;
    file_termination(
        &mut filing,
        &clock,
        &people[people.len() / 2],
        &mut progress,
    )
    .await?;
    let total_reports =
        file_quarterly_reports(&mut filing, &clock, &mut rng, &people, dir, &mut progress).await?;

    // §6-1 the finance ministry pulls form 402 in May.
    clock.set(NaiveDate::from_ymd_opt(2026, 5, 12).expect("a date"), 7);
    let form_path = dir.join("finance").join("form402-2026-Q1.csv");
    let pulled = finance::pull(&tls("finance"), 2026, 1, FormFormat::Csv, &form_path).await?;
    progress.step("form 402 pulled and acknowledged");
    progress.finish();

    // After the deadlines: let the overdue scan run.
    clock.set(NaiveDate::from_ymd_opt(2026, 5, 20).expect("a date"), 7);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let _ = stop_subscriber.send(true);
    let extracts_written = subscriber.await.context("subscriber task")??;

    let seen = what_the_operators_see(&authority, &operator).await?;
    gateway.shutdown().await?;

    let filed = format!(
        "{} start notifications, {total_reports} quarterly reports (1 revised, 1 missing), 1 termination notice",
        people.len()
    );
    Ok(Summary {
        lines: summary_lines(&seen, &filed, extracts_written, &pulled),
        latencies_ms: filing.latencies,
    })
}

/// The gateway's configuration for the demo: SQLite and the signing key in
/// `dir`, the development PKI made in `pki_dir`, a short obligation scan and
/// no metrics listener.
fn demo_config(dir: &Path, pki_dir: &Path) -> anyhow::Result<Config> {
    let mut config = Config {
        listen: "127.0.0.1:0".parse()?,
        database_url: format!("sqlite://{}", dir.join("minegate.db").display()),
        ..Config::default()
    };
    config.tls.ca_bundle = pki_dir.join("ca.pem");
    config.tls.crls = vec![pki_dir.join("crl.pem")];
    config.tls.cert = pki_dir.join("server.pem");
    config.tls.key = pki_dir.join("server.key");
    config.tls.dev_pki_dir = PathBuf::new();
    config.signing.key = dir.join("signing.key");
    config.limits.ack_deadline_ms = 120_000;
    config.limits.obligation_scan_ms = 100;
    config.limits.shutdown_grace_ms = 2_000;
    config.metrics.listen = String::new();
    Ok(config)
}

/// The energy ministry's subscriber, running all along and writing into
/// `out`; it notes in `delivered` when each filing's extract was written.
fn spawn_energy_subscriber(
    energy_tls: ClientTls,
    out: PathBuf,
    delivered: &Arc<Mutex<HashMap<String, Instant>>>,
    stopped: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    let delivered = delivered.clone();
    tokio::spawn(async move {
        energy::subscribe(&energy_tls, &out, false, 16, stopped, move |w| {
            delivered
                .lock()
                .expect("delivered")
                .insert(w.extract.source_filing_id.clone(), Instant::now());
        })
        .await
    })
}

/// The authority's side of the demo: it writes each filing to `filings/`,
/// submits it, and waits for the energy subscriber to have its extract.
struct Filing<'a> {
    authority: &'a ClientTls,
    delivered: &'a Mutex<HashMap<String, Instant>>,
    filings: PathBuf,
    /// Receipt to the subscriber's acknowledgement, one per extract.
    latencies: Vec<u128>,
}

impl Filing<'_> {
    /// Writes `json` to `filings/{name}`, submits it with `docs`, and (but
    /// for a termination notice, which has no extract) waits until the
    /// subscriber has written its extract.
    async fn submit(
        &mut self,
        kind: FilingKindArg,
        json: serde_json::Value,
        name: String,
        docs: Vec<String>,
    ) -> anyhow::Result<()> {
        let file = self.filings.join(name);
        write_durably(&file, serde_json::to_string_pretty(&json)?.as_bytes())?;
        let receipt = match submit::submit_file(self.authority, kind, &file, &docs).await? {
            Submitted::Accepted { receipt, .. } => receipt,
            Submitted::Rejected(problems) => bail!("{} rejected: {problems:?}", file.display()),
        };
        if kind != FilingKindArg::Termination {
            self.await_extract(&receipt.filing_id, Instant::now())
                .await?;
        }
        Ok(())
    }

    /// Waits (up to 20 s) for the subscriber to write and acknowledge the
    /// extract of `filing_id`; notes the latency from `receipt_at`.
    async fn await_extract(&mut self, filing_id: &str, receipt_at: Instant) -> anyhow::Result<()> {
        let deadline = receipt_at + Duration::from_secs(20);
        loop {
            if let Some(at) = self.delivered.lock().expect("delivered").get(filing_id) {
                self.latencies
                    .push(at.saturating_duration_since(receipt_at).as_millis());
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the extract of {filing_id} was not delivered within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// §3 start notifications, December to January.
async fn file_start_notifications(
    filing: &mut Filing<'_>,
    clock: &DemoClock,
    rng: &mut Rng,
    people: &[Filer],
    dir: &Path,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    for f in people {
        clock.set(f.start_filed, 4 + (rng.below(8) as u32));
        let json = serde_json::json!({
            "person": person_json(f),
            "bank": { "iban": "KZ75125KZT1001300335", "bic": "HSBKKZKX", "bankName": "Halyk Bank of Kazakhstan" },
            "requiredPowerKw": f.power_kw.to_string(),
            "plannedJobs": f.jobs,
            "plannedInvestmentTiyn": (f.power_kw * 4_000_000).to_string(),
            "ipPool": [f.ip],
            "dataCentres": [{ "address": f.site, "katoCode": f.kato }],
            "plannedStartDate": date_json(f.planned_start),
            "idempotencyKey": format!("{}-start", f.id),
        });
        let docs = documents(dir, f, "start")?;
        filing
            .submit(
                FilingKindArg::Start,
                json,
                format!("{}-start.json", f.id),
                docs,
            )
            .await?;
        progress.step(&format!("start notification {}", f.name));
    }
    Ok(())
}

/// One person (`leaver`) stops in March and says so within the 10 days.
async fn file_termination(
    filing: &mut Filing<'_>,
    clock: &DemoClock,
    leaver: &Filer,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    clock.set(NaiveDate::from_ymd_opt(2026, 3, 24).expect("a date"), 6);
    let notice = serde_json::json!({
        "name": leaver.name,
        "binOrIin": leaver.id,
        "activityEndDate": date_json(NaiveDate::from_ymd_opt(2026, 3, 20).expect("a date")),
        "idempotencyKey": format!("{}-end", leaver.id),
    });
    filing
        .submit(
            FilingKindArg::Termination,
            notice,
            format!("{}-end.json", leaver.id),
            vec![],
        )
        .await?;
    progress.step(&format!("termination notice {}", leaver.name));
    Ok(())
}

/// §4 the Q1 reports in April: most by the 10th, every fifth late, the
/// second person's revised, the last person's never. Returns how many
/// reports were filed.
async fn file_quarterly_reports(
    filing: &mut Filing<'_>,
    clock: &DemoClock,
    rng: &mut Rng,
    people: &[Filer],
    dir: &Path,
    progress: &mut Progress,
) -> anyhow::Result<usize> {
    let revised = 1usize;
    let never_reports = people.len() - 1;
    let mut total_reports = 0;
    for (i, f) in people.iter().enumerate() {
        if i == never_reports {
            progress.step(&format!("no report from {}", f.name));
            continue;
        }
        let day = if i % 5 == 2 {
            12 + rng.below(9)
        } else {
            1 + rng.below(10)
        };
        clock.set(
            NaiveDate::from_ymd_opt(2026, 4, day as u32).expect("a date"),
            6,
        );
        let versions = if i == revised { 2 } else { 1 };
        for version in 1..=versions {
            let json = quarterly_report_json(rng, f, version);
            let docs = documents(dir, f, "2026q1")?;
            filing
                .submit(
                    FilingKindArg::Quarterly,
                    json,
                    format!("{}-2026q1-v{version}.json", f.id),
                    docs,
                )
                .await?;
            total_reports += 1;
        }
        progress.step(&format!("quarterly report {}", f.name));
    }
    Ok(total_reports)
}

/// `f`'s 2026 Q1 report (its `version`), with generated consumption and
/// equipment.
fn quarterly_report_json(rng: &mut Rng, f: &Filer, version: u32) -> serde_json::Value {
    let hours = 2_160u64; // the quarter's hours
    let wh = f.power_kw * 1_000 * hours * (60 + rng.below(35)) / 100 + rng.below(1_000);
    let units = (f.power_kw / 3 + rng.below(20)) as u32;
    serde_json::json!({
        "person": person_json(f),
        "year": 2026,
        "quarter": 1,
        "consumptionWh": wh.to_string(),
        "equipment": [{ "model": rng.pick(MODELS), "count": units.max(1) }],
        "jobs": f.jobs,
        "investmentRestOfYearTiyn": (f.power_kw * 1_000_000).to_string(),
        "investmentNext12MonthsTiyn": (f.power_kw * 1_500_000).to_string(),
        "ipPool": [f.ip],
        "dataCentres": [{ "address": f.site, "katoCode": f.kato, "consumptionWh": wh.to_string() }],
        "idempotencyKey": format!("{}-2026q1-v{version}", f.id),
    })
}

/// What the quarter came to, as the operators see it through the API.
struct Outcome {
    register_entries: usize,
    statuses: BTreeMap<String, usize>,
    obligations: BTreeMap<String, usize>,
    findings: BTreeMap<String, usize>,
    ledger: LedgerVerification,
}

/// Reads the register (as the authority), the obligations, findings and the
/// ledger's verification (as an operator), and counts them by status.
async fn what_the_operators_see(
    authority: &ClientTls,
    operator: &ClientTls,
) -> anyhow::Result<Outcome> {
    let channel = operator.connect().await?;
    let mut compliance = ComplianceServiceClient::new(channel);
    let register = FilingServiceClient::new(authority.connect().await?)
        .list_register(ListRegisterRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .entries;
    let statuses = count_by(register.iter().map(|e| {
        RegisterStatus::try_from(e.status)
            .unwrap_or_default()
            .as_str_name()
            .trim_start_matches("REGISTER_STATUS_")
            .to_owned()
    }));
    let obligations = compliance
        .list_obligations(ListObligationsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .obligations;
    let obligation_counts = count_by(obligations.iter().map(|o| {
        ObligationStatus::try_from(o.status)
            .unwrap_or_default()
            .as_str_name()
            .trim_start_matches("OBLIGATION_STATUS_")
            .to_owned()
    }));
    let findings = compliance
        .list_findings(ListFindingsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await?
        .into_inner()
        .findings;
    let finding_counts = count_by(findings.iter().map(|f| {
        FindingKind::try_from(f.kind)
            .unwrap_or_default()
            .as_str_name()
            .trim_start_matches("FINDING_KIND_")
            .to_owned()
    }));
    let ledger = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await?
        .into_inner();
    Ok(Outcome {
        register_entries: register.len(),
        statuses,
        obligations: obligation_counts,
        findings: finding_counts,
        ledger,
    })
}

/// The summary's lines (their text is what the demo prints and what tests
/// compare across runs: keep it stable).
fn summary_lines(
    seen: &Outcome,
    filed: &str,
    extracts_written: u64,
    pulled: &finance::Pulled,
) -> Vec<String> {
    let ledger = &seen.ledger;
    let mut lines = vec![
        format!(
            "register           {} entries: {}",
            seen.register_entries,
            counts_text(&seen.statuses)
        ),
        format!("filings            {filed}"),
        format!(
            "extracts           {extracts_written} written to energy/ with their documents, verified and acknowledged"
        ),
        format!(
            "form 402 2026 Q1   revision {}, {} payers, {} kWh; acknowledged",
            pulled.revision, pulled.rows, pulled.total_kwh
        ),
        format!("obligations        {}", counts_text(&seen.obligations)),
        format!("findings           {}", counts_text(&seen.findings)),
        format!(
            "ledger             {} entries, {}",
            ledger.entries_checked,
            if ledger.intact {
                "verified intact".to_owned()
            } else {
                format!("BROKEN at entry {:?}", ledger.first_broken_entry)
            }
        ),
    ];
    if !ledger.intact {
        lines.push(ledger.reason.clone());
    }
    lines
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let (dir, keep) = match &args.dir {
        Some(dir) => {
            crate::files::create_private_folder(dir)?;
            (dir.clone(), true)
        }
        None => (tempfile_dir()?, !args.clean),
    };
    let started = Instant::now();
    eprintln!(
        "minegate demo: seed {}, {} filers, quarter 2026 Q1 — simulated dates; real mTLS, storage and evidence",
        args.seed, args.filers
    );
    let result = play(args.seed, args.filers, &dir).await;
    let summary = match result {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("the demo stopped; its folder is kept: {}", dir.display());
            return Err(error);
        }
    };
    for line in &summary.lines {
        println!("{line}");
    }
    let mut latencies = summary.latencies_ms.clone();
    latencies.sort_unstable();
    if let (Some(p50), Some(max)) = (latencies.get(latencies.len() / 2), latencies.last()) {
        println!(
            "delivery latency   p50 {p50} ms, max {max} ms (receipt to the subscriber's acknowledgement; varies run to run)"
        );
    }
    println!(
        "took               {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if keep && args.dir.is_none() {
        println!(
            "folder             {} (filings/, documents/, energy/, finance/, minegate.db)",
            dir.display()
        );
    } else if !keep {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("minegate-demo-{}", uuid::Uuid::new_v4().simple()));
    crate::files::create_private_folder(&dir)?;
    Ok(dir)
}
