//! The operators' metrics: counters and latency histograms kept in memory,
//! counts read from the store at each scrape, served in the Prometheus text
//! format (version 0.0.4) on a listener of its own (`metrics.listen`), plain
//! HTTP, `GET /metrics`.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{
    store::{Gauges, Store},
    tls::HandshakeOutcome,
};

/// Upper bounds (seconds) of the request latency histogram's buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`], not cumulative; `+Inf` is `count`.
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; LATENCY_BUCKETS.len()];
        }
        if let Some(i) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Default)]
struct Counters {
    /// (kind, outcome) → filings.
    filings: BTreeMap<(String, String), u64>,
    /// Finding kind → findings recorded on accepted filings.
    findings: BTreeMap<String, u64>,
    /// gRPC method → latency of its calls (to the response's headers).
    latency: BTreeMap<String, Histogram>,
    /// (gRPC method, reason) → calls refused before reaching the service.
    refused: BTreeMap<(String, String), u64>,
    /// Certificate → days until it expires (negative: expired).
    certificate_days: BTreeMap<String, i64>,
    /// ("ok" | "failed") → TLS configuration reloads.
    tls_reloads: BTreeMap<String, u64>,
    /// How connections' TLS handshakes ended.
    handshakes: BTreeMap<HandshakeOutcome, u64>,
    /// §6 extracts that could not be sent (recorded EXTRACT_SEND_FAILED).
    extract_send_failures: u64,
    database_up: Option<bool>,
    /// The last background verification of the ledger.
    ledger_verification: Option<LedgerVerification>,
}

/// What the last background verification of the ledger found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LedgerVerification {
    pub intact: bool,
    /// Entries it read.
    pub entries: u64,
    /// When it finished, in seconds since the epoch.
    pub finished_at: f64,
}

/// The process's metrics; cheap to clone and share.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    counters: Arc<Mutex<Counters>>,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Counters) -> T) -> T {
        // A panic elsewhere while holding the lock leaves counts that are still usable.
        let mut counters = self
            .counters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut counters)
    }

    /// A filing of `kind` (`start_notification`, …) ended with `outcome`
    /// (`accepted`, `replayed`, `rejected`, `conflict`, `unavailable`, `error`).
    pub fn filing(&self, kind: &str, outcome: &str) {
        self.with(|c| {
            *c.filings
                .entry((kind.to_owned(), outcome.to_owned()))
                .or_default() += 1
        });
    }

    /// A finding of `kind` was recorded.
    pub fn finding(&self, kind: &str) {
        self.with(|c| *c.findings.entry(kind.to_owned()).or_default() += 1);
    }

    pub fn observe_latency(&self, method: &str, elapsed: Duration) {
        self.with(|c| {
            c.latency
                .entry(method.to_owned())
                .or_default()
                .observe(elapsed.as_secs_f64())
        });
    }

    pub fn refused(&self, method: &str, reason: &str) {
        self.with(|c| {
            *c.refused
                .entry((method.to_owned(), reason.to_owned()))
                .or_default() += 1
        });
    }

    /// Replaces the certificate expiry figures (after each TLS load).
    pub fn set_certificate_days(&self, days: &[(String, i64)]) {
        self.with(|c| c.certificate_days = days.iter().cloned().collect());
    }

    pub fn tls_reload(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.with(|c| *c.tls_reloads.entry(outcome.to_owned()).or_default() += 1);
    }

    /// A connection's TLS handshake ended so.
    pub fn handshake(&self, outcome: HandshakeOutcome) {
        self.with(|c| *c.handshakes.entry(outcome).or_default() += 1);
    }

    /// An extract could not be sent to a subscriber.
    pub fn extract_send_failed(&self) {
        self.with(|c| c.extract_send_failures += 1);
    }

    pub fn set_database_up(&self, up: bool) {
        self.with(|c| c.database_up = Some(up));
    }

    pub fn set_ledger_verification(&self, verification: LedgerVerification) {
        self.with(|c| c.ledger_verification = Some(verification));
    }

    /// The metrics in the Prometheus text format. Store counts are read now;
    /// if the store cannot be read, they are left out and
    /// `minegate_store_scrape_ok` is 0.
    pub async fn render(&self, store: &dyn Store, subscribers: &[String]) -> String {
        let gauges = store.gauges(subscribers).await;
        // A copy, so that the lock is not held while the text is written.
        let counters = self.with(|c| c.clone());
        let mut out = String::with_capacity(4096);
        filing_counts(&mut out, &counters);
        call_figures(&mut out, &counters);
        tls_figures(&mut out, &counters);
        health_figures(&mut out, &counters);
        single(
            &mut out,
            "minegate_store_scrape_ok",
            "gauge",
            "1 if this scrape could read the counts below from the store.",
            u8::from(gauges.is_ok()),
        );
        if let Ok(gauges) = gauges {
            store_counts(&mut out, &gauges);
        }
        out
    }
}

/// Filings by kind and outcome, and findings by kind.
fn filing_counts(out: &mut String, c: &Counters) {
    header(
        out,
        "minegate_filings_total",
        "counter",
        "Filings received, by kind and outcome.",
    );
    for ((kind, outcome), n) in &c.filings {
        let _ = writeln!(
            out,
            "minegate_filings_total{{kind=\"{}\",outcome=\"{}\"}} {n}",
            escape(kind),
            escape(outcome)
        );
    }
    header(
        out,
        "minegate_findings_total",
        "counter",
        "Compliance findings recorded on accepted filings, by kind.",
    );
    for (kind, n) in &c.findings {
        let _ = writeln!(
            out,
            "minegate_findings_total{{kind=\"{}\"}} {n}",
            escape(kind)
        );
    }
}

/// The request latency histogram by gRPC method, and the calls refused
/// before reaching a service.
fn call_figures(out: &mut String, c: &Counters) {
    header(
        out,
        "minegate_request_duration_seconds",
        "histogram",
        "Time from a call's arrival to its response headers, by gRPC method.",
    );
    for (method, histogram) in &c.latency {
        let method = escape(method);
        let mut cumulative = 0;
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&histogram.buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "minegate_request_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "minegate_request_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {}",
            histogram.count
        );
        let _ = writeln!(
            out,
            "minegate_request_duration_seconds_sum{{method=\"{method}\"}} {}",
            histogram.sum
        );
        let _ = writeln!(
            out,
            "minegate_request_duration_seconds_count{{method=\"{method}\"}} {}",
            histogram.count
        );
    }
    header(
        out,
        "minegate_calls_refused_total",
        "counter",
        "Calls refused before reaching a service, by method and reason.",
    );
    for ((method, reason), n) in &c.refused {
        let _ = writeln!(
            out,
            "minegate_calls_refused_total{{method=\"{}\",reason=\"{}\"}} {n}",
            escape(method),
            escape(reason)
        );
    }
}

/// Certificate expiry, TLS configuration reloads and handshake outcomes.
fn tls_figures(out: &mut String, c: &Counters) {
    header(
        out,
        "minegate_certificate_days_left",
        "gauge",
        "Whole days until a certificate expires (negative: expired).",
    );
    for (certificate, days) in &c.certificate_days {
        let _ = writeln!(
            out,
            "minegate_certificate_days_left{{certificate=\"{}\"}} {days}",
            escape(certificate)
        );
    }
    header(
        out,
        "minegate_tls_reloads_total",
        "counter",
        "Reloads of the CA bundle, CRLs and server certificate, by outcome.",
    );
    for (outcome, n) in &c.tls_reloads {
        let _ = writeln!(
            out,
            "minegate_tls_reloads_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    header(
        out,
        "minegate_tls_handshakes_total",
        "counter",
        "TLS handshakes of accepted connections, by how they ended.",
    );
    // Every outcome from 0, so that increase() sees the first of each.
    for outcome in HandshakeOutcome::ALL {
        let n = c.handshakes.get(&outcome).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "minegate_tls_handshakes_total{{outcome=\"{}\"}} {n}",
            outcome.as_str()
        );
    }
}

/// Extracts that could not be sent, the database check and the last
/// background verification of the ledger (each of the last two only once
/// it has happened).
fn health_figures(out: &mut String, c: &Counters) {
    single(
        out,
        "minegate_extract_send_failures_total",
        "counter",
        "Extracts that could not be sent (larger than a message may be); each is EXTRACT_SEND_FAILED in the ledger.",
        c.extract_send_failures,
    );
    if let Some(up) = c.database_up {
        single(
            out,
            "minegate_database_up",
            "gauge",
            "1 if the last database check succeeded.",
            u8::from(up),
        );
    }
    if let Some(verification) = c.ledger_verification {
        single(
            out,
            "minegate_ledger_verification_ok",
            "gauge",
            "1 if the last background verification found the ledger intact (hash chain, Merkle tree, signed checkpoints).",
            u8::from(verification.intact),
        );
        single(
            out,
            "minegate_ledger_verification_timestamp_seconds",
            "gauge",
            "When the last background verification of the ledger finished.",
            format!("{:.3}", verification.finished_at),
        );
        single(
            out,
            "minegate_ledger_verified_entries",
            "gauge",
            "Entries the last background verification of the ledger read.",
            verification.entries,
        );
    }
}

/// The counts read from the store at this scrape.
fn store_counts(out: &mut String, gauges: &Gauges) {
    header(
        out,
        "minegate_obligations",
        "gauge",
        "Obligations (deadlines) by status.",
    );
    for (status, n) in &gauges.obligations {
        let _ = writeln!(
            out,
            "minegate_obligations{{status=\"{}\"}} {n}",
            escape(status)
        );
    }
    header(
        out,
        "minegate_obligation_oldest_pending_timestamp_seconds",
        "gauge",
        "When the oldest obligation still PENDING arose, by kind (absent: none pending).",
    );
    for (kind, micros) in &gauges.oldest_pending {
        let _ = writeln!(
            out,
            "minegate_obligation_oldest_pending_timestamp_seconds{{kind=\"{}\"}} {:.3}",
            escape(kind),
            *micros as f64 / 1e6
        );
    }
    header(
        out,
        "minegate_extracts_pending",
        "gauge",
        "Extracts an energy subscriber has not acknowledged yet.",
    );
    for (subscriber, n) in &gauges.pending_extracts {
        let _ = writeln!(
            out,
            "minegate_extracts_pending{{subscriber=\"{}\"}} {n}",
            escape(subscriber)
        );
    }
    single(
        out,
        "minegate_ledger_entries",
        "gauge",
        "Entries in the tamper-evident ledger.",
        gauges.ledger_entries,
    );
    single(
        out,
        "minegate_store_runs_taken_apart_total",
        "counter",
        "Runs of submissions or acknowledgements the database refused as a whole, taken again one at a time.",
        gauges.runs_taken_apart,
    );
    single(
        out,
        "minegate_store_listener_losses_total",
        "counter",
        "Times the connection listening for other replicas' commits was lost (PostgreSQL); subscribers then read what is pending.",
        gauges.listener_losses,
    );
}

/// A metric of one sample, with no labels.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `listener` until the task is aborted. Anything
/// else gets 404; a request head must arrive within 5 s and fit in 8 KiB.
pub fn serve(
    listener: TcpListener,
    metrics: Metrics,
    store: Arc<dyn Store>,
    subscribers: Arc<Vec<String>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let (metrics, store, subscribers) =
                (metrics.clone(), store.clone(), subscribers.clone());
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    answer(stream, &metrics, &*store, &subscribers),
                )
                .await;
            });
        }
    })
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    store: &dyn Store,
    subscribers: &[String],
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > 8192 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (parts.next(), parts.next());
    let (status, content_type, body) = match (method, target) {
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(store, subscribers).await,
        ),
        _ => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds the metrics listener, if one is configured.
pub async fn bind(listen: &str) -> std::io::Result<Option<(TcpListener, SocketAddr)>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok(Some((listener, local)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_in_the_text() {
        let mut h = Histogram::default();
        for ms in [0.5, 3.0, 3.0, 20.0, 20_000.0] {
            h.observe(ms / 1000.0);
        }
        assert_eq!(h.count, 5);
        // 0.5 ms → ≤1 ms; 3 ms → ≤5 ms; 20 ms → ≤25 ms; 20 s → only +Inf.
        assert_eq!(h.buckets, vec![1, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
