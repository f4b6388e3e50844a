//! `minegate bench --only windows`: subscribers that never read. A gateway
//! with the default limits and a backlog of extracts; then 128 Subscribe
//! streams, each on its own connection (as 128 clients would open them)
//! with HTTP/2 windows of 64 KiB, ask for 1,024 in flight and read
//! nothing. The gateway's peak resident memory before and while they hold
//! shows what a stream that does not read costs: it is bounded by
//! `limits.max_in_flight`, not by what the subscriber asks.

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
    let mut held = Vec::new();
    for _ in 0..streams {
        let channel = energy
            .endpoint()?
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535)
            .connect()
            .await?;
        let stream = EnergyExtractServiceClient::new(channel.clone())
            .subscribe(SubscribeRequest {
                max_in_flight: 1024,
                until_caught_up: false,
            })
            .await?
            .into_inner();
        held.push((channel, stream));
    }
    tokio::time::sleep(hold).await;
    let during = gateway.peak_rss_kib().unwrap_or(0);
    drop(held);
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(vec![format!(
        "{streams} subscribers not reading, each asking 1,024 in flight on its own connection \
         (64 KiB windows), {backlog} extracts pending, default limits (sqlite): gateway peak RSS \
         {:.1} MiB before, {:.1} MiB while they hold ({:.0} KiB a subscriber)",
        mib(before),
        mib(during),
        during.saturating_sub(before) as f64 / streams as f64
    )])
}
