//! Certificates in operation: the CA bundle, CRLs, server certificate and key
//! are reloaded without a restart — at once on SIGHUP, and whenever their
//! contents change (checked every `tls.reload_check_ms`). A reload that fails
//! (a half-written file, a bad CRL) keeps the configuration in use and is
//! logged and counted. New connections use the new configuration; an open
//! connection whose client certificate a new CRL revokes is closed. Each
//! check also works out how many days the server's and CAs' certificates
//! have left.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, pem::PemObject},
};
use tokio::{sync::watch, task::JoinHandle};
use x509_parser::prelude::FromDer;

use super::acceptor::{TlsSetupError, load_server_config, read_crls};
use crate::{config::TlsConfig, metrics::Metrics};

/// A certificate as a CRL names it: the issuer's DER-encoded name and the
/// serial number's DER content bytes.
pub type CertificateKey = (Vec<u8>, Vec<u8>);

/// The certificates the configured CRLs revoke.
pub type Revoked = Arc<HashSet<CertificateKey>>;

/// The server configuration new connections are accepted with, and the
/// revoked certificates open connections are checked against.
#[derive(Clone)]
pub struct SharedServerConfig {
    config: Arc<RwLock<Arc<ServerConfig>>>,
    revoked: watch::Sender<Revoked>,
}

impl SharedServerConfig {
    pub fn new(config: Arc<ServerConfig>, revoked: Revoked) -> Self {
        SharedServerConfig {
            config: Arc::new(RwLock::new(config)),
            revoked: watch::Sender::new(revoked),
        }
    }

    /// Loads the configuration and the CRLs' revoked certificates from `tls`.
    pub fn load(tls: &TlsConfig) -> Result<Self, TlsSetupError> {
        Ok(SharedServerConfig::new(
            load_server_config(tls)?,
            Arc::new(revoked_certificates(tls)?),
        ))
    }

    pub fn current(&self) -> Arc<ServerConfig> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Changes whenever a reload brings new CRLs.
    pub fn revocations(&self) -> watch::Receiver<Revoked> {
        self.revoked.subscribe()
    }

    fn replace(&self, config: Arc<ServerConfig>, revoked: Revoked) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
        self.revoked.send_replace(revoked);
    }
}

/// The (issuer, serial) of a DER certificate, as CRLs name it.
pub fn certificate_key(der: &[u8]) -> Option<CertificateKey> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    Some((cert.issuer().as_raw().to_vec(), cert.raw_serial().to_vec()))
}

/// Every certificate revoked by the configured CRLs.
pub fn revoked_certificates(tls: &TlsConfig) -> Result<HashSet<CertificateKey>, TlsSetupError> {
    let mut revoked = HashSet::new();
    for path in &tls.crls {
        for crl in read_crls(path)? {
            let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&crl)
                .map_err(|e| TlsSetupError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            let issuer = crl.issuer().as_raw().to_vec();
            for entry in crl.iter_revoked_certificates() {
                revoked.insert((issuer.clone(), entry.raw_serial().to_vec()));
            }
        }
    }
    Ok(revoked)
}

/// SHA-256 over the configured files' paths and contents (or read errors).
pub fn fingerprint(tls: &TlsConfig) -> Vec<u8> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let paths = [&tls.ca_bundle, &tls.cert, &tls.key]
        .into_iter()
        .chain(tls.crls.iter());
    for path in paths {
        context.update(path.as_os_str().as_encoded_bytes());
        context.update(&[0]);
        match std::fs::read(path) {
            Ok(bytes) => {
                context.update(&(bytes.len() as u64).to_be_bytes());
                context.update(&bytes);
            }
            Err(error) => context.update(error.to_string().as_bytes()),
        }
        context.update(&[0]);
    }
    context.finish().as_ref().to_vec()
}

/// Whole days left (rounded down; negative once expired) of the server's
/// certificate (`server`) and of each CA in the bundle (`ca:` and its
/// subject CN, or its 1-based place in the bundle if it has none or its
/// name is taken).
pub fn certificate_days(
    tls: &TlsConfig,
    now: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, TlsSetupError> {
    let read = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
        CertificateDer::pem_file_iter(path)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| TlsSetupError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    };
    let days_left = |der: &CertificateDer<'_>, path: &std::path::Path| {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).map_err(|e| {
            TlsSetupError::File {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let not_after = cert.validity().not_after.timestamp();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok::<_, TlsSetupError>(((not_after - now.timestamp()).div_euclid(86_400), cn))
    };
    let mut days = Vec::new();
    if let Some(server) = read(&tls.cert)?.first() {
        days.push(("server".to_owned(), days_left(server, &tls.cert)?.0));
    }
    for (i, ca) in read(&tls.ca_bundle)?.iter().enumerate() {
        let (left, cn) = days_left(ca, &tls.ca_bundle)?;
        let mut label = format!("ca:{}", cn.unwrap_or_else(|| (i + 1).to_string()));
        if days.iter().any(|(taken, _)| *taken == label) {
            // Two CAs of one name: the second is told apart by its place.
            label = format!("{label}#{}", i + 1);
        }
        days.push((label, left));
    }
    Ok(days)
}

/// What the reloader reports to: the metrics, and a callback told whether
/// every certificate has at least `expiry_warning_days` left.
pub struct Reloader {
    pub tls: TlsConfig,
    pub shared: SharedServerConfig,
    pub metrics: Metrics,
    pub clock: Arc<dyn crate::store::Clock>,
    pub on_expiry_check: Box<dyn Fn(bool) + Send + Sync>,
}

impl Reloader {
    /// Reloads if the files changed (or always, if `force`); then checks
    /// expiry. Returns the new fingerprint when a reload succeeded.
    pub fn check(&self, last: &[u8], force: bool) -> Option<Vec<u8>> {
        let now = fingerprint(&self.tls);
        let mut reloaded = None;
        if force || now != last {
            let loaded = load_server_config(&self.tls)
                .and_then(|config| Ok((config, revoked_certificates(&self.tls)?)));
            match loaded {
                Ok((config, revoked)) => {
                    self.shared.replace(config, Arc::new(revoked));
                    self.metrics.tls_reload(true);
                    tracing::info!(
                        ca_bundle = %self.tls.ca_bundle.display(),
                        crls = self.tls.crls.len(),
                        "TLS configuration reloaded; new connections use it"
                    );
                    reloaded = Some(now);
                }
                Err(error) => {
                    self.metrics.tls_reload(false);
                    tracing::error!(%error, "TLS reload failed; the configuration in use is kept");
                }
            }
        }
        self.check_expiry();
        reloaded
    }

    /// Works out the days left, publishes them, and warns below the
    /// threshold; true when every certificate has enough days left.
    pub fn check_expiry(&self) -> bool {
        match certificate_days(&self.tls, self.clock.now()) {
            Ok(days) => {
                let threshold = i64::from(self.tls.expiry_warning_days);
                let mut all_fine = true;
                for (certificate, left) in days.iter().filter(|(_, left)| *left < threshold) {
                    all_fine = false;
                    tracing::warn!(
                        certificate,
                        days_left = left,
                        threshold,
                        "certificate expires soon; renew it"
                    );
                }
                self.metrics.set_certificate_days(&days);
                (self.on_expiry_check)(all_fine);
                all_fine
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read certificate expiry dates");
                false
            }
        }
    }

    /// Runs the reload loop: SIGHUP, and a check every `reload_check_ms`
    /// (every hour for expiry alone when that is 0). Call [`check_expiry`]
    /// first for the status at start-up.
    ///
    /// [`check_expiry`]: Reloader::check_expiry
    pub fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut last = fingerprint(&self.tls);
            let every = match self.tls.reload_check_ms {
                0 => Duration::from_secs(3600),
                ms => Duration::from_millis(ms),
            };
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval.tick().await;
            #[cfg(unix)]
            let mut hangup =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
            loop {
                #[cfg(unix)]
                let force = tokio::select! {
                    _ = interval.tick() => false,
                    Some(()) = async {
                        match hangup.as_mut() {
                            Some(signal) => signal.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {
                        tracing::info!("SIGHUP: reloading the TLS configuration");
                        true
                    },
                };
                #[cfg(not(unix))]
                let force = {
                    interval.tick().await;
                    false
                };
                if !force && self.tls.reload_check_ms == 0 {
                    let _ = self.check_expiry();
                    continue;
                }
                if let Some(new) = self.check(&last, force) {
                    last = new;
                }
            }
        })
    }
}
