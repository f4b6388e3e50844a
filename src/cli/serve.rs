//! `minegate serve`: run the gateway until SIGINT or SIGTERM.

use tokio::signal::unix::{SignalKind, signal};

use clap::Args;

use crate::{config::Config, files, server};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve the benchmark's baseline instead: the same TLS and server, a
    /// FilingService that only decodes and answers (used by `minegate bench`).
    #[arg(long, hide = true)]
    pub baseline: bool,
    /// Add the configured signing key to the database's key history if the
    /// history does not know it (a replica given a key of its own);
    /// without it, such a key is refused at start.
    #[arg(long)]
    pub add_signing_key: bool,
}

pub async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    config.signing.add_unknown_key |= args.add_signing_key;
    // Heard from before the port opens: a signal while starting (an
    // orchestrator that gives up on a slow start) stops it cleanly too.
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let gateway = if args.baseline {
        server::start_baseline(&config).await?
    } else {
        server::start(&config).await?
    };
    tracing::info!(
        listen = %gateway.local_addr(),
        working_dir = %std::env::current_dir().unwrap_or_default().display(),
        database = %files::redacted_url(&config.database_url),
        ca_bundle = %config.tls.ca_bundle.display(),
        crls = ?config.tls.crls,
        cert = %config.tls.cert.display(),
        identities = config.roles.len(),
        "minegate is serving over mutual TLS"
    );
    for (identity, role) in &config.roles {
        tracing::info!(%identity, %role, "identity mapped");
    }

    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM received"),
        _ = interrupt.recv() => tracing::info!("SIGINT received"),
    }
    gateway.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}
