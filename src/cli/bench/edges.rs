//! `minegate bench --only handshakes` and `--only paths`: what a client
//! with no business there can do to a gateway, measured from outside.
//!
//! Handshakes: another agency's calls, each on a connection of its own
//! (health checks, from 127.0.0.1), first alone, then while one host
//! (127.0.0.2) holds 1,000 connections that never send a byte and opens
//! another as each is closed, then while 20 hosts (127.0.0.2–21) hold 600
//! that send a whole ClientHello and then nothing (more than the 256
//! handshakes that may be past their ClientHello at once). Paths: 10,000 calls to random method paths,
//! and the size of `/metrics` and the gateway's resident memory before and
//! after.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};

use super::{Server, ms, percentile, start_server_with, tls};
use crate::client::ClientTls;

/// What each of the attacker's connections sends: nothing, or a whole
/// ClientHello (then nothing).
type Hello = Option<Arc<Vec<u8>>>;

/// The lines of the handshakes part.
pub async fn handshakes(dir: &std::path::Path, quick: bool) -> anyhow::Result<Vec<String>> {
    let (silent, calls) = if quick { (100, 20) } else { (1000, 400) };
    let url = format!("sqlite://{}", dir.join("handshakes.db").display());
    let gateway = start_server_with(dir, &url, false, &[])?;
    let operator = tls(dir, &gateway, "operator");
    let alone = health_checks(&operator, calls).await?;
    let attack = Attack::start(&gateway, silent, 1, None)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let attacked = health_checks(&operator, calls).await;
    let opened = attack.stop();
    let attacked = attacked?;
    let (hosts, stalled) = if quick { (4, 60) } else { (20, 600) };
    let hello = client_hello(&dir.join("certs/ca.pem"))?;
    let attack = Attack::start(&gateway, stalled, hosts, Some(Arc::new(hello)))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_run = health_checks(&operator, calls).await;
    let stalled_opened = attack.stop();
    let stalled_run = stalled_run?;
    let line = |what: &str, times: &[Duration]| {
        format!(
            "  {what}: p50 {} ms, p99 {} ms, max {} ms",
            ms(percentile(times, 0.50)),
            ms(percentile(times, 0.99)),
            ms(*times.last().expect("calls were made"))
        )
    };
    Ok(vec![
        format!(
            "{calls} health checks, each on a new connection (connect, TLS, call), default \
             limits (sqlite):"
        ),
        line("alone", &alone),
        line(
            &format!(
                "while one other host holds {silent} silent connections, reopening each as it \
                 closes ({opened} opened)"
            ),
            &attacked,
        ),
        line(
            &format!(
                "while {hosts} other hosts hold {stalled} connections that sent a ClientHello \
                 and then nothing, reopening each as it closes ({stalled_opened} opened)"
            ),
            &stalled_run,
        ),
    ])
}

/// The first flight of a TLS client that trusts `ca`: its ClientHello.
fn client_hello(ca: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut client = rustls::ClientConnection::new(Arc::new(config), "localhost".try_into()?)?;
    let mut hello = Vec::new();
    client.write_tls(&mut hello)?;
    Ok(hello)
}

/// `calls` health checks one after another, each on a connection of its
/// own; their times, sorted. Every one must succeed.
async fn health_checks(tls: &ClientTls, calls: usize) -> anyhow::Result<Vec<Duration>> {
    let mut times = Vec::with_capacity(calls);
    for call in 0..calls {
        let started = Instant::now();
        let channel = tls.connect().await?;
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
            .with_context(|| format!("health check {call}"))?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times)
}

/// One host's silent connections, on a thread and runtime of their own (as
/// another process would be), until stopped.
struct Attack {
    stop: tokio::sync::watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    opened: Arc<AtomicU64>,
}

impl Attack {
    /// `connections` from `hosts` addresses (127.0.0.2 on), each sending `hello`.
    fn start(
        gateway: &Server,
        connections: usize,
        hosts: u8,
        hello: Hello,
    ) -> anyhow::Result<Attack> {
        let addr: std::net::SocketAddr = gateway
            .server
            .trim_start_matches("https://")
            .parse()
            .context("the gateway's address")?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let opened = Arc::new(AtomicU64::new(0));
        let counted = opened.clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let holders: Vec<_> = (0..connections)
                    .map(|n| {
                        let source = [127, 0, 0, 2 + (n % usize::from(hosts)) as u8];
                        let (stopped, counted) = (stopped.clone(), counted.clone());
                        tokio::spawn(hold(addr, source, hello.clone(), stopped, counted))
                    })
                    .collect();
                for holder in holders {
                    let _ = holder.await;
                }
            })
        });
        Ok(Attack {
            stop,
            thread,
            opened,
        })
    }

    /// Stops the attack; the connections it opened.
    fn stop(self) -> u64 {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
        self.opened.load(Ordering::Relaxed)
    }
}

/// Holds one connection from `source` that sends `hello` (or nothing) and
/// then nothing, opening another 100 ms after the gateway closes it, until
/// stopped.
async fn hold(
    addr: std::net::SocketAddr,
    source: [u8; 4],
    hello: Hello,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    opened: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    while !*stopped.borrow_and_update() {
        let connect = async {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind((source, 0).into())?;
            let mut conn = socket.connect(addr).await?;
            if let Some(hello) = &hello {
                conn.write_all(hello).await?;
            }
            Ok::<_, std::io::Error>(conn)
        };
        let Ok(mut conn) = connect.await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        opened.fetch_add(1, Ordering::Relaxed);
        let mut byte = [0u8; 1];
        tokio::select! {
            _ = stopped.changed() => return,
            _ = conn.read(&mut byte) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The lines of the paths part.
pub async fn paths(dir: &std::path::Path, quick: bool) -> anyhow::Result<Vec<String>> {
    let calls = if quick { 500 } else { 10_000 };
    let url = format!("sqlite://{}", dir.join("paths.db").display());
    let metrics_port = super::free_port()?;
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let gateway = start_server_with(
        dir,
        &url,
        false,
        &[("MINEGATE_METRICS_LISTEN", metrics_listen.as_str())],
    )?;
    let channel = tls(dir, &gateway, "operator").connect().await?;
    // Every known method once, so that the figures after are of unknown ones alone.
    let mut health = HealthClient::new(channel.clone());
    health.check(HealthCheckRequest::default()).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let size_before = metrics_body(metrics_port).await?.len();
    let rss_before = gateway.rss_kib().unwrap_or(0);
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut answers = std::collections::BTreeMap::<String, u32>::new();
    for call in 0..calls {
        let path = random_path(call);
        grpc.ready().await?;
        let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
        let answer = grpc
            .unary(
                tonic::Request::new(HealthCheckRequest::default()),
                path.parse()?,
                codec,
            )
            .await;
        let code = answer.err().map_or(tonic::Code::Ok, |status| status.code());
        *answers.entry(format!("{code:?}")).or_default() += 1;
    }
    let size_after = metrics_body(metrics_port).await?.len();
    let rss_after = gateway.rss_kib().unwrap_or(0);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let answers: Vec<String> = answers
        .iter()
        .map(|(code, n)| format!("{n} {code}"))
        .collect();
    Ok(vec![format!(
        "{calls} calls to random method paths as the operator ({}), one connection (sqlite): \
         /metrics {size_before} bytes before, {size_after} after; gateway RSS {:.1} MiB \
         before, {:.1} MiB after",
        answers.join(", "),
        mib(rss_before),
        mib(rss_after)
    )])
}

/// A path no gateway serves: every third under the health service's
/// prefix, which every certificate may call; the rest under prefixes the
/// operator may not call.
fn random_path(call: usize) -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 48];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random numbers");
    let noise: String = bytes.iter().map(|b| char::from(b'a' + b % 26)).collect();
    match call % 3 {
        0 => format!("/grpc.health.v1.Health/{noise}"),
        1 => format!("/minegate.v1.{noise}/Submit"),
        _ => format!("/{noise}/{noise}"),
    }
}

/// The body of `GET /metrics`.
async fn metrics_body(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (_, body) = response
        .split_once("\r\n\r\n")
        .context("an HTTP answer from /metrics")?;
    Ok(body.to_owned())
}
