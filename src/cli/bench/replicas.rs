//! `minegate bench --only replicas` (PostgreSQL only): the scale-out
//! figure. Quarterly reports at concurrency 64 through one, two and three
//! `minegate serve` replicas on one PostgreSQL database (each replica its
//! own process and port, the same signing key and configuration; a fresh
//! database for each count, so each starts from the same state), the
//! callers spread round-robin over the replicas, each replica on 4
//! connections as the submit part opens them; beside the same-run baseline
//! at 64. Then the fan-out's receipt → subscriber latency with two replicas
//! on a fresh database: the subscribers on the submitters' replica, and on
//! the other one (each delivery then goes through PostgreSQL's
//! LISTEN/NOTIFY and a read of what is pending).
//!
//! On one machine the replicas share its cores with each other, PostgreSQL
//! and the load generator: the figure shows what coordinating replicas
//! costs (one advisory lock per writer transaction, notifications), not
//! what replicas on machines of their own would serve.

use std::{
    path::Path,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use tonic::transport::Channel;

use super::{
    FanOut, Load, Server, channels, create_database, drive, fan_out, micros, ms, start_server, tls,
    upload_documents,
};

/// Callers, as at the submit part's highest level.
const CONCURRENCY: usize = 64;

/// Connections the load generator opens to each server, as the submit part.
const CONNECTIONS: usize = 4;

/// What the replicas part measures.
pub struct Shape {
    pub quick: bool,
    /// Warm-up, then the measured window, at each replica count.
    pub window: (Duration, Duration),
    /// Print the fan-out's latency for each quarter second of submissions.
    pub timeline: bool,
}

/// The lines of the replicas part.
pub async fn run(dir: &Path, server_url: &str, shape: Shape) -> anyhow::Result<Vec<String>> {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut lines = vec![
        format!(
            "replicas on one PostgreSQL database, concurrency {CONCURRENCY}, callers \
             round-robin over the replicas, {CONNECTIONS} connections to each; all on this \
             machine's {cores} cores (replicas, PostgreSQL and the load generator share them)"
        ),
        format!(
            "  {:<30} {:>10} {:>9} {:>9} {:>9} {:>9} {:>13} {:>12}",
            "", "req/s", "p50 ms", "p90 ms", "p99 ms", "vs base", "server µs/req", "machine idle"
        ),
    ];
    let base = baseline(dir, shape.window).await?;
    lines.push(row("baseline (decode + answer)", &base, 1.0));
    for replicas in 1..=3 {
        let load = submit(dir, server_url, replicas, shape.window).await?;
        let vs = load.per_second / base.per_second.max(1.0);
        let label = format!(
            "gateway, {replicas} replica{}",
            if replicas == 1 { "" } else { "s" }
        );
        lines.push(row(&label, &load, vs));
    }
    let rates: &[(u64, Duration)] = if shape.quick {
        &[(100, Duration::from_secs(1))]
    } else {
        &[
            (200, Duration::from_secs(5)),
            (1_000, Duration::from_secs(5)),
        ]
    };
    for &(rate, time) in rates {
        for across in [false, true] {
            if shape.timeline {
                println!("{}", fan_out_line(rate, time, across, None));
            }
            let fan = (rate, time, shape.timeline);
            let figures = fan_out_between(dir, server_url, fan, across).await?;
            lines.push(fan_out_line(rate, time, across, Some(&figures)));
        }
    }
    Ok(lines)
}

/// The baseline server at concurrency 64 on 4 connections.
async fn baseline(dir: &Path, window: (Duration, Duration)) -> anyhow::Result<Load> {
    let baseline = start_server(dir, "sqlite://baseline-unused.db", true)?;
    let connections = channels(&tls(dir, &baseline, "authority"), CONNECTIONS).await?;
    let next = Arc::new(AtomicU64::new(0));
    let no_documents = Arc::new(Vec::new());
    Ok(drive(
        &[&baseline],
        &connections,
        CONCURRENCY,
        window,
        "base",
        &next,
        &no_documents,
    )
    .await)
}

/// `replicas` gateways on a fresh database, the callers round-robin over them.
async fn submit(
    dir: &Path,
    server_url: &str,
    replicas: usize,
    window: (Duration, Duration),
) -> anyhow::Result<Load> {
    let url = create_database(server_url).await?;
    // One after another: the first makes the schema, each has its own port;
    // all use the bench's one signing key file and configuration.
    let gateways = (0..replicas)
        .map(|_| start_server(dir, &url, false))
        .collect::<anyhow::Result<Vec<Server>>>()?;
    let documents = Arc::new(upload_documents(dir, &tls(dir, &gateways[0], "authority")).await?);
    let mut each = Vec::new();
    for gateway in &gateways {
        each.push(channels(&tls(dir, gateway, "authority"), CONNECTIONS).await?);
    }
    // Interleaved, so that caller i (on connection i % len) calls replica i % replicas.
    let connections: Vec<Channel> = (0..CONNECTIONS)
        .flat_map(|c| each.iter().map(move |replica| replica[c].clone()))
        .collect();
    let servers: Vec<&Server> = gateways.iter().collect();
    let next = Arc::new(AtomicU64::new(0));
    Ok(drive(
        &servers,
        &connections,
        CONCURRENCY,
        window,
        "load",
        &next,
        &documents,
    )
    .await)
}

/// The fan-out on a fresh database served by two replicas: the submitters
/// on the first, the subscribers on the second (`across`) or the first.
async fn fan_out_between(
    dir: &Path,
    server_url: &str,
    (rate, time, timeline): (u64, Duration, bool),
    across: bool,
) -> anyhow::Result<FanOut> {
    let url = create_database(server_url).await?;
    let submitted = start_server(dir, &url, false)?;
    // Running in both cases, so that only where the subscribers are differs.
    let other = start_server(dir, &url, false)?;
    let subscribed = if across { &other } else { &submitted };
    let documents = upload_documents(dir, &tls(dir, &submitted, "authority")).await?;
    fan_out(
        dir,
        (subscribed, &submitted),
        &documents,
        rate,
        time,
        timeline,
    )
    .await
}

/// One row of the submit table.
fn row(label: &str, load: &Load, vs_base: f64) -> String {
    format!(
        "  {:<30} {:>10.0} {:>9} {:>9} {:>9} {:>9.2} {:>13} {:>12}{}",
        label,
        load.per_second,
        ms(load.p50),
        ms(load.p90),
        ms(load.p99),
        vs_base,
        micros(load.cpu_per_request),
        load.machine_idle
            .map_or("n/a".into(), |idle| format!("{:.0} %", idle * 100.0)),
        if load.errors > 0 {
            format!("  ({} errors)", load.errors)
        } else {
            String::new()
        }
    )
}

/// A fan-out line: what was measured, then (`None`: a heading) its figures.
fn fan_out_line(rate: u64, time: Duration, across: bool, figures: Option<&FanOut>) -> String {
    let what = format!(
        "  fan-out at {rate} filings/s for {} s, two replicas, 2 subscribers on {}",
        time.as_secs(),
        if across {
            "the OTHER replica (LISTEN/NOTIFY)"
        } else {
            "the submitters' replica"
        },
    );
    let Some(figures) = figures else {
        return format!("{what}:");
    };
    format!(
        "{what}: {} arrivals ({} before their receipt), {} submissions failed, \
         receipt → subscriber p50 {} ms, p99 {} ms",
        figures.arrived,
        figures.early,
        figures.failed,
        ms(figures.p50),
        ms(figures.p99)
    )
}
