//! Assembles the gateway: dev PKI if asked for, the mutual-TLS acceptor, the
//! database, the four domain services behind the access layer, health and
//! reflection; serves until told to stop, then drains in-flight calls.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpListener,
    sync::{Notify, oneshot},
    task::JoinHandle,
};
use tonic::transport::Server;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::Config,
    metrics::{self, Metrics},
    proto::{
        self,
        v1::{
            compliance_service_server::ComplianceServiceServer,
            energy_extract_service_server::EnergyExtractServiceServer,
            filing_service_server::FilingServiceServer,
            finance_service_server::FinanceServiceServer,
        },
    },
    service::{
        access::{AccessLayer, CallTimeouts, RETRY_AFTER},
        compliance::Compliance,
        energy::EnergyExtracts,
        filing::Filings,
        finance::FinanceForms,
        upload_budget::UploadBudget,
    },
    signing::Signer,
    store::{self, Clock, Store, StoreError, SystemClock},
    tls::{
        Role,
        acceptor::{self, TlsSetupError},
        connections::ConnectionLimits,
        pki::{self, PkiError},
        reload::{Reloader, SharedServerConfig},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("development PKI in {dir}: {source}")]
    DevPki { dir: String, source: PkiError },
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics.listen {listen:?}: {source}")]
    MetricsBind {
        listen: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Signing(#[from] crate::signing::SigningError),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A running gateway.
pub struct Gateway {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
    store: Option<Arc<dyn Store>>,
}

impl Gateway {
    /// The address actually listened on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The Prometheus endpoint's address, if `metrics.listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The gateway's store (none for the baseline server): for embedding
    /// and for tests that watch what it commits.
    pub fn store(&self) -> Option<&Arc<dyn Store>> {
        self.store.as_ref()
    }

    /// Stops accepting, lets in-flight calls finish (up to the grace period), and waits.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// Makes the development PKI when the configuration asks for one and it is missing.
pub fn ensure_dev_pki(config: &Config) -> Result<(), ServeError> {
    let dir = &config.tls.dev_pki_dir;
    if dir.as_os_str().is_empty() || dir.join(pki::CA_CERT).exists() {
        return Ok(());
    }
    let made = pki::init(dir, false).map_err(|source| ServeError::DevPki {
        dir: dir.display().to_string(),
        source,
    })?;
    tracing::warn!(
        dir = %made.dir.display(),
        files = made.files.len(),
        "made a development PKI (CA, server and one client certificate per role); not for production"
    );
    Ok(())
}

/// The energy subscribers: every identity of the `energy` role, in order.
fn energy_subscribers(config: &Config) -> Vec<String> {
    config
        .roles
        .iter()
        .filter(|(_, role)| **role == Role::Energy)
        .map(|(identity, _)| identity.clone())
        .collect()
}

/// Starts the gateway described by `config` and returns once it listens.
pub async fn start(config: &Config) -> Result<Gateway, ServeError> {
    start_with_clock(config, Arc::new(SystemClock)).await
}

/// As [`start`], with the clock that stamps receipts and deadlines (tests move it).
///
/// In order: the TLS configuration and the store, the listeners, health and
/// reflection, the background work, the four services behind the access
/// layer, and the task that serves until [`Gateway::shutdown`].
pub async fn start_with_clock(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> Result<Gateway, ServeError> {
    ensure_dev_pki(config)?;
    let metrics = Metrics::new();
    let tls = SharedServerConfig::load(&config.tls)?;
    let store = open_store(config, &clock).await?;

    let (local_addr, incoming, accept_loop) = listen(config, tls.clone(), metrics.clone()).await?;
    let metrics_listener = metrics::bind(&config.metrics.listen)
        .await
        .map_err(|source| ServeError::MetricsBind {
            listen: config.metrics.listen.clone(),
            source,
        })?;
    let metrics_addr = metrics_listener.as_ref().map(|(_, addr)| *addr);

    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::Serving).await;
    // Reflection in both versions: v1, and v1alpha for the clients that
    // speak only it (Python's grpcio-reflection, several GUI tools).
    let described = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = described().build_v1()?;
    let reflection_v1alpha = described().build_v1alpha()?;

    let running = Running {
        config,
        store: &store,
        clock: &clock,
        metrics: &metrics,
        health: &health,
    };
    // Background work, stopped before the health turns NOT_SERVING for good.
    let background = running.spawn_background(tls, metrics_listener).await;

    let (stopping, stopping_rx) = tokio::sync::watch::channel(false);
    let services = running.services(stopping_rx);
    let router = server_builder(config)
        .layer(access_layer(config, metrics.clone()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(services.filing)
        .add_service(services.energy)
        .add_service(services.finance)
        .add_service(services.compliance);

    // §6 / §6-1 deadlines are watched: overdue obligations are marked, once.
    let overdue_scan = scan_overdue_every(
        store.clone(),
        clock.clone(),
        Duration::from_millis(config.limits.obligation_scan_ms),
    );

    let (stop, stopped) = oneshot::channel::<()>();
    let draining = Arc::new(Notify::new());
    let grace = Duration::from_millis(config.limits.shutdown_grace_ms);
    let signal = shutdown_signal(stopped, background, health, stopping, draining.clone());
    let kept = store.clone();
    let task = tokio::spawn(async move {
        let serve = router.serve_with_incoming_shutdown(incoming, signal);
        let result = tokio::select! {
            result = serve => result.map_err(ServeError::from),
            () = async { draining.notified().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(?grace, "calls still in flight after the grace period; closing them");
                Ok(())
            }
        };
        // Serving has ended, so the incoming stream is gone: the loop ends too.
        let _ = accept_loop.await;
        overdue_scan.abort();
        store.close().await;
        result
    });
    Ok(Gateway {
        local_addr,
        metrics_addr,
        stop: Some(stop),
        task,
        store: Some(kept),
    })
}

/// Resolves when the gateway is told to stop (or its [`Gateway`] is
/// dropped): stops the background work, turns the health NOT_SERVING, ends
/// the long-lived streams (`stopping`) and starts the grace period
/// (`draining`). Serving then takes no new connections and drains.
async fn shutdown_signal(
    stopped: oneshot::Receiver<()>,
    background: Vec<JoinHandle<()>>,
    health: HealthReporter,
    stopping: tokio::sync::watch::Sender<bool>,
    draining: Arc<Notify>,
) {
    // A dropped sender stops the server as a sent one does.
    let _ = stopped.await;
    tracing::info!("shutting down: no new connections, draining in-flight calls");
    for task in &background {
        task.abort();
    }
    set_health(&health, ServingStatus::NotServing).await;
    // Long-lived streams end now; subscribers reconnect elsewhere.
    let _ = stopping.send(true);
    draining.notify_one();
}

/// Opens the database `config` names, signing with the key it names
/// (made at the first start).
async fn open_store(config: &Config, clock: &Arc<dyn Clock>) -> Result<Arc<dyn Store>, ServeError> {
    store::check_url(&config.database_url)?;
    let signer = Arc::new(Signer::load_or_create(
        &config.signing.key,
        &config.signing.origin,
    )?);
    let signing = store::Signing::With {
        signer,
        add_unknown_key: config.signing.add_unknown_key,
    };
    Ok(store::open(&config.database_url, clock.clone(), signing).await?)
}

/// What the background work and the services of a starting gateway share.
struct Running<'a> {
    config: &'a Config,
    store: &'a Arc<dyn Store>,
    clock: &'a Arc<dyn Clock>,
    metrics: &'a Metrics,
    health: &'a HealthReporter,
}

/// The four domain services, each with the configured message size limit.
struct Services {
    filing: FilingServiceServer<Filings>,
    energy: EnergyExtractServiceServer<EnergyExtracts>,
    finance: FinanceServiceServer<FinanceForms>,
    compliance: ComplianceServiceServer<Compliance>,
}

impl Running<'_> {
    /// Starts the background work: the metrics listener (if configured), the
    /// TLS reloader with the certificates' health, the database check, the
    /// sweep of abandoned uploads and (if configured) the ledger's
    /// verification.
    async fn spawn_background(
        &self,
        tls: SharedServerConfig,
        metrics_listener: Option<(TcpListener, SocketAddr)>,
    ) -> Vec<JoinHandle<()>> {
        let (config, store, metrics) = (self.config, self.store, self.metrics);
        let mut background = Vec::new();
        if let Some((listener, addr)) = metrics_listener {
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            background.push(metrics::serve(
                listener,
                metrics.clone(),
                store.clone(),
                Arc::new(energy_subscribers(config)),
            ));
        }
        background.push(self.spawn_reloader(tls).await);
        background.push(watch_database(
            store.clone(),
            self.health.clone(),
            metrics.clone(),
            Duration::from_millis(config.limits.database_check_ms),
        ));

        background.push(sweep_uploads_every(
            store.clone(),
            self.clock.clone(),
            Duration::from_millis(config.limits.abandoned_upload_ms),
        ));
        if config.limits.ledger_verify_ms > 0 {
            background.push(verify_ledger_every(
                store.clone(),
                metrics.clone(),
                Duration::from_millis(config.limits.ledger_verify_ms),
            ));
        }
        background
    }

    /// The TLS reloader, which also keeps the certificates' health
    /// (`CERTIFICATES_HEALTH`) up to date.
    async fn spawn_reloader(&self, tls: SharedServerConfig) -> JoinHandle<()> {
        let reloader = Reloader {
            tls: self.config.tls.clone(),
            shared: tls,
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            on_expiry_check: {
                let health = self.health.clone();
                Box::new(move |fine| {
                    let health = health.clone();
                    tokio::spawn(async move {
                        health
                            .set_service_status(CERTIFICATES_HEALTH, serving_if(fine))
                            .await;
                    });
                })
            },
        };
        // Known before the first call, then kept up to date by the reloader.
        let certificates_fine = reloader.check_expiry();
        self.health
            .set_service_status(CERTIFICATES_HEALTH, serving_if(certificates_fine))
            .await;
        reloader.spawn()
    }

    /// The four domain services; the energy service's long-lived streams
    /// end when `stopping` turns true.
    fn services(&self, stopping: tokio::sync::watch::Receiver<bool>) -> Services {
        let (config, store, clock, metrics) = (self.config, self.store, self.clock, self.metrics);
        let limit = config.limits.max_message_bytes;
        Services {
            filing: FilingServiceServer::new(Filings::new(
                store.clone(),
                clock.clone(),
                config.limits.max_document_bytes,
                Duration::from_millis(config.limits.request_timeout_ms),
                metrics.clone(),
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
            energy: EnergyExtractServiceServer::new(EnergyExtracts::new(
                store.clone(),
                clock.clone(),
                &config.limits,
                metrics.clone(),
                stopping,
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
            finance: FinanceServiceServer::new(FinanceForms::new(
                store.clone(),
                clock.clone(),
                limit,
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
            compliance: ComplianceServiceServer::new(Compliance::new(
                store.clone(),
                clock.clone(),
                Arc::new(energy_subscribers(self.config)),
            ))
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        }
    }
}

/// Marks overdue obligations every `period` (§6 / §6-1 deadlines).
fn scan_overdue_every(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    period: Duration,
) -> JoinHandle<()> {
    every(period, move || {
        let (store, clock) = (store.clone(), clock.clone());
        async move { crate::service::compliance::scan_overdue(&*store, &*clock).await }
    })
}

/// The HTTP/2 server with every window, frame size and keepalive set from
/// the configuration, never hyper's defaults (1 MiB windows), and no
/// adaptive window, which would let a client's traffic grow them.
fn server_builder(config: &Config) -> Server {
    let limits = &config.limits;
    Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams_per_connection)
        .initial_stream_window_size(limits.http2_stream_window_bytes)
        .initial_connection_window_size(limits.http2_connection_window_bytes)
        .max_frame_size(limits.http2_max_frame_bytes)
        .http2_adaptive_window(Some(false))
        .http2_keepalive_interval(Some(Duration::from_millis(
            limits.http2_keepalive_interval_ms,
        )))
        .http2_keepalive_timeout(Some(Duration::from_millis(
            limits.http2_keepalive_timeout_ms,
        )))
}

/// Who may call what, the per-peer and upload limits, and call timeouts.
fn access_layer(config: &Config, metrics: Metrics) -> AccessLayer {
    AccessLayer::new(
        config.roles.clone(),
        config.limits.max_concurrent_calls_per_peer,
        timeouts(config),
        UploadBudget::new(
            config.limits.upload_bytes_in_flight,
            config.limits.http2_stream_window_bytes,
            RETRY_AFTER,
        ),
        metrics,
    )
}

/// Each call's time limit, and a document upload's (see [`CallTimeouts`]).
fn timeouts(config: &Config) -> CallTimeouts {
    CallTimeouts {
        call: Duration::from_millis(config.limits.request_timeout_ms),
        upload: Duration::from_millis(config.limits.max_upload_ms),
    }
}

/// The health service name that is NOT_SERVING while the server's or a CA's
/// certificate has fewer than `tls.expiry_warning_days` left.
pub const CERTIFICATES_HEALTH: &str = "minegate.certificates";

/// Checks the database every `every`: while it cannot be reached, the
/// gateway and its services are NOT_SERVING (calls get UNAVAILABLE from the
/// store meanwhile); once it answers again, SERVING.
fn watch_database(
    store: Arc<dyn Store>,
    health: HealthReporter,
    metrics: Metrics,
    every: Duration,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut up = true;
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let answer =
                tokio::time::timeout(every.max(Duration::from_secs(1)), store.ping()).await;
            let now_up = matches!(answer, Ok(Ok(())));
            metrics.set_database_up(now_up);
            if now_up == up {
                continue;
            }
            up = now_up;
            if up {
                tracing::info!("the database answers again: SERVING");
                set_health(&health, ServingStatus::Serving).await;
            } else {
                let error = match answer {
                    Ok(Err(error)) => error.to_string(),
                    _ => "no answer in time".to_owned(),
                };
                tracing::error!(%error, "the database cannot be reached: NOT_SERVING");
                set_health(&health, ServingStatus::NotServing).await;
            }
        }
    })
}

/// Removes the chunks of uploads unfinished `abandoned` after they started
/// (a client or a replica that went away mid-upload), checking four times
/// in that period.
fn sweep_uploads_every(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    abandoned: Duration,
) -> JoinHandle<()> {
    let age = chrono::Duration::from_std(abandoned).unwrap_or(chrono::Duration::MAX);
    every((abandoned / 4).max(Duration::from_millis(10)), move || {
        // An age past chrono's range: nothing is that old.
        let started_before = clock.now().checked_sub_signed(age);
        let store = store.clone();
        async move {
            let Some(started_before) = started_before else {
                return;
            };
            match store.sweep_uploads(started_before).await {
                Ok(0) => {}
                Ok(swept) => tracing::info!(swept, "abandoned uploads removed"),
                Err(error) => tracing::warn!(%error, "could not sweep abandoned uploads"),
            }
        }
    })
}

/// Runs `work` now and then every `period` (a late tick is not made up
/// for), until the task is aborted.
fn every<F, Fut>(period: Duration, mut work: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            work().await;
        }
    })
}

/// Verifies the ledger every `period`: hash chain, Merkle tree and signed
/// checkpoints, as `minegate ledger verify` does. The first verification,
/// at start, reads the whole ledger; each later one goes on from where the
/// last intact one ended, so it reads only the entries added since (a
/// change to older ones is found at the next start, or on demand by
/// `minegate ledger verify` and the VerifyLedger call, which read it all).
/// The outcome is the metric `minegate_ledger_verification_ok` (alerted
/// on, see deploy/prometheus/minegate-rules.yml); a broken ledger is also
/// logged with the entry where it breaks, and the next verification starts
/// again from the last intact point. A verification the database could not
/// answer is logged and tried again at the next tick.
fn verify_ledger_every(
    store: Arc<dyn Store>,
    metrics: Metrics,
    period: Duration,
) -> JoinHandle<()> {
    let verified = Arc::new(tokio::sync::Mutex::new(
        crate::store::VerifiedPrefix::default(),
    ));
    every(period, move || {
        let (store, metrics, verified) = (store.clone(), metrics.clone(), verified.clone());
        async move {
            let mut verified = verified.lock().await;
            let from = verified.clone();
            let (report, intact) = match crate::store::verify_ledger_from(&*store, from).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    tracing::warn!(%error, "could not verify the ledger; trying again later");
                    return;
                }
            };
            match &report.first_broken {
                None => tracing::info!(
                    entries = report.entries_checked,
                    new_entries = report.entries_checked - verified.entries(),
                    checkpoints = report.checkpoints_checked,
                    "ledger verified intact"
                ),
                Some((seq, reason)) => {
                    tracing::error!(seq, reason, "ledger verification FAILED")
                }
            }
            if let Some(intact) = intact {
                *verified = intact;
            }
            let finished_at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |since| since.as_secs_f64());
            metrics.set_ledger_verification(metrics::LedgerVerification {
                intact: report.first_broken.is_none(),
                entries: report.entries_checked,
                finished_at,
            });
        }
    })
}

/// The benchmark's baseline server: the same TLS acceptor, access layer and
/// tonic server as the gateway, with a FilingService that only decodes and
/// answers (no validation, no storage), and FetchDocument sending back as
/// many bytes as were uploaded.
pub async fn start_baseline(config: &Config) -> Result<Gateway, ServeError> {
    let tls = SharedServerConfig::load(&config.tls)?;
    let (local_addr, incoming, accept_loop) = listen(config, tls, Metrics::new()).await?;
    let limit = config.limits.max_message_bytes;
    let received = crate::service::baseline::Received::default();
    let router = server_builder(config)
        .layer(access_layer(config, Metrics::new()))
        .add_service(
            FilingServiceServer::new(crate::service::baseline::BaselineFilings {
                received: received.clone(),
            })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        )
        .add_service(
            EnergyExtractServiceServer::new(crate::service::baseline::BaselineExtracts {
                received,
            })
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        );
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await
            .map_err(ServeError::from);
        let _ = accept_loop.await;
        result
    });
    Ok(Gateway {
        local_addr,
        metrics_addr: None,
        stop: Some(stop),
        task,
        store: None,
    })
}

/// Binds the configured address and starts accepting mutual-TLS connections.
async fn listen(
    config: &Config,
    tls: SharedServerConfig,
    metrics: Metrics,
) -> Result<(SocketAddr, acceptor::TlsIncoming, JoinHandle<()>), ServeError> {
    let bind_error = |source| ServeError::Bind {
        addr: config.listen,
        source,
    };
    let listener = bind_listener(config.listen).map_err(bind_error)?;
    let local_addr = listener.local_addr().map_err(bind_error)?;
    let limits = acceptor::HandshakeLimits::from_config(&config.tls, &config.limits);
    let connections = ConnectionLimits::new(
        config.limits.max_connections,
        config.limits.max_connections_per_identity,
    );
    let (incoming, accept_loop) = acceptor::accept(listener, tls, limits, connections, metrics);
    Ok((local_addr, incoming, accept_loop))
}

/// A listener whose accept queue holds as many connections as the kernel
/// allows (`net.core.somaxconn`, 4096 on current kernels; tokio's default is
/// 1024), so that a burst of connections the accept loop closes at once does
/// not overflow it and delay others' connections by a SYN retransmission.
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn serving_if(fine: bool) -> ServingStatus {
    if fine {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for service in proto::DOMAIN_SERVICES {
        health.set_service_status(service, status).await;
    }
}
