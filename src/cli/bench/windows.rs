//! `minegate bench --only windows`: subscribers that never read. A gateway
//! with the default limits and a backlog of extracts; then 128 Subscribe
//! calls of one identity, each on its own connection (as 128 clients would
//! open them) with HTTP/2 windows of 64 KiB, ask for 1,024 in flight and
//! read nothing (past `limits.max_subscribe_streams_per_identity` they are
//! refused). The gateway's peak resident memory before and while they hold
//! shows what streams that do not read cost: bounded by the server's
//! limits, not by what the subscribers ask.

use std::{path::Path, time::Duration};

use super::{report, start_server_with, tls, upload_documents};
use crate::proto::v1::{
    SubscribeRequest, energy_extract_service_client::EnergyExtractServiceClient,
    filing_service_client::FilingServiceClient,
};

/// The lines of the windows part.
pub async fn run(dir: &Path, quick: bool) -> anyhow::Result<Vec<String>> {
    let (backlog, streams, hold) = if quick {
        (40, 8, Duration::from_millis(500))
    } else {
        (400, 128, Duration::from_secs(5))
    };
    let url = format!("sqlite://{}", dir.join("windows.db").display());
    // The default limits: 16 in flight, 128 calls per identity, 4 MiB messages.
    let gateway = start_server_with(dir, &url, false, &[])?;
    let authority = tls(dir, &gateway, "authority");
    let documents = upload_documents(dir, &authority).await?;
    let mut filings = FilingServiceClient::new(authority.connect().await?);
    for n in 0..backlog {
        filings
            .submit_quarterly_report(report(20_000_000 + n, "windows", &documents))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = gateway.peak_rss_kib().unwrap_or(0);
    let energy = tls(dir, &gateway, "energy");
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..streams {
        let channel = energy
            .endpoint()?
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await?;
        let answer = EnergyExtractServiceClient::new(channel.clone())
            .subscribe(SubscribeRequest {
                max_in_flight: 1024,
                until_caught_up: false,
            })
            .await;
        match answer {
            Ok(stream) => held.push((channel, stream.into_inner())),
            // Past limits.max_subscribe_streams_per_identity.
            Err(status) if status.code() == tonic::Code::ResourceExhausted => refused += 1,
            Err(status) => return Err(status.into()),
        }
    }
    tokio::time::sleep(hold).await;
    let during = gateway.peak_rss_kib().unwrap_or(0);
    let open = held.len();
    drop(held);
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(vec![format!(
        "{streams} Subscribe calls of one identity not reading, each asking 1,024 in flight on \
         its own connection (64 KiB windows), {backlog} extracts pending, default limits \
         (sqlite): {open} streams open, {refused} refused; gateway peak RSS {:.1} MiB before, \
         {:.1} MiB while they hold",
        mib(before),
        mib(during),
    )])
}
