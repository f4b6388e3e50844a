//! `minegate bench --only connections`: one certificate opens 3,000
//! connections, 16 at a time, and makes one health check on each, then
//! keeps them all and makes no call. A gateway with the default limits
//! (idle timeout shortened to 10 s so the run is short; `--quick`: 200
//! connections, 1 s): how many calls are
//! answered and how many refused, the gateway's open sockets 5 s after the
//! last connection and again after the idle timeout, and its peak resident
//! memory before and after.

use std::{path::Path, sync::Arc, time::Duration};

use tokio::sync::Semaphore;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::{Server, start_server_with, tls};

/// The lines of the connections part.
pub async fn run(dir: &Path, quick: bool) -> anyhow::Result<Vec<String>> {
    let (connections, idle_timeout, hold) = if quick {
        (200, Duration::from_secs(1), Duration::from_millis(500))
    } else {
        (3_000, Duration::from_secs(10), Duration::from_secs(5))
    };
    let idle = idle_timeout.as_millis().to_string();
    let gateway = start_server_with(
        dir,
        &format!("sqlite://{}", dir.join("connections.db").display()),
        false,
        &[("MINEGATE_LIMITS_IDLE_CONNECTION_TIMEOUT_MS", &idle)],
    )?;
    let authority = tls(dir, &gateway, "authority");
    let check = |channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
    };
    check(authority.connect().await?).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (before, sockets_before) = (gateway.peak_rss_kib(), sockets(&gateway));

    // 16 at a time: under the per-address handshake cap (32).
    let slots = Arc::new(Semaphore::new(16));
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let slot = slots.clone().acquire_owned().await?;
        let authority = authority.clone();
        tasks.push(tokio::spawn(async move {
            let channel = authority.connect().await?;
            let answer = check(channel.clone()).await.map(|_| ());
            drop(slot);
            anyhow::Ok((channel, answer))
        }));
    }
    let (mut held, mut answered, mut refused, mut failed) = (Vec::new(), 0, 0, 0);
    for task in tasks {
        let (channel, answer) = task.await??;
        match answer {
            Ok(()) => answered += 1,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
            Err(_) => failed += 1,
        }
        held.push(channel);
    }
    tokio::time::sleep(hold).await;
    let (during, sockets_held) = (gateway.peak_rss_kib(), sockets(&gateway));
    tokio::time::sleep(idle_timeout).await;
    let sockets_after = sockets(&gateway);
    drop(held);
    let mib =
        |kib: Option<u64>| kib.map_or("n/a".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
    let count = |n: Option<usize>| n.map_or("n/a".into(), |n| n.to_string());
    Ok(vec![
        format!(
            "{connections} connections from one certificate, one health check each: \
             {answered} answered, {refused} refused RESOURCE_EXHAUSTED, {failed} failed"
        ),
        format!(
            "gateway sockets: {} before, {} {:?} after the last connection, {} after the idle \
             timeout ({:?}) as well",
            count(sockets_before),
            count(sockets_held),
            hold,
            count(sockets_after),
            idle_timeout
        ),
        format!(
            "gateway peak RSS: {} before, {} with the connections",
            mib(before),
            mib(during)
        ),
    ])
}

/// The gateway's open sockets, from /proc (Linux).
fn sockets(server: &Server) -> Option<usize> {
    let fds = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).ok()?;
    Some(
        fds.filter_map(Result::ok)
            .filter(|fd| {
                std::fs::read_link(fd.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count(),
    )
}
