//! The mutual-TLS front door. The server builds its own rustls `ServerConfig`
//! (tonic's `ServerTlsConfig` cannot take CRLs): a client certificate is
//! required and verified against the CA bundle and CRLs; TLS 1.2 and 1.3
//! only; ALPN h2. Every accepted TCP connection does its handshake in its own
//! task under a timeout, so a client that connects and sends nothing holds up
//! no one; only finished handshakes reach the gRPC server, each carrying the
//! identity read from its certificate.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    path::Path,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::{
    config::TlsConfig,
    tls::{
        identity_from_certificate,
        reload::{CertificateKey, Revoked, SharedServerConfig, certificate_key},
    },
};

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

fn file_error(path: &Path, reason: impl ToString) -> TlsSetupError {
    TlsSetupError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Builds the server's rustls configuration from the configured files.
pub fn load_server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(&tls.ca_bundle).map_err(|e| file_error(&tls.ca_bundle, e))?
    {
        let cert = cert.map_err(|e| file_error(&tls.ca_bundle, e))?;
        roots.add(cert).map_err(|e| file_error(&tls.ca_bundle, e))?;
    }
    if roots.is_empty() {
        return Err(file_error(
            &tls.ca_bundle,
            "no CA certificate in the bundle",
        ));
    }

    let mut crls = Vec::new();
    for path in &tls.crls {
        crls.extend(read_crls(path)?);
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .with_crls(crls);
    if tls.allow_unknown_revocation {
        verifier = verifier.allow_unknown_revocation_status();
    }
    let verifier = verifier.build()?;

    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| file_error(&tls.cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(&tls.cert, e))?;
    if chain.is_empty() {
        return Err(file_error(&tls.cert, "no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|e| file_error(&tls.key, e))?;

    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// CRLs from a PEM file (any number of CRLs) or a DER file (one CRL).
pub(crate) fn read_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsSetupError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(path, e))?;
    if bytes.starts_with(b"-----BEGIN") {
        let crls: Vec<_> = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(path, e))?;
        if crls.is_empty() {
            return Err(file_error(path, "no CRL in the file"));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// What the gRPC layer learns about a connection: where it comes from and the
/// identity in its (verified) client certificate.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// First URI SAN, else subject CN; `None` if the certificate has neither.
    pub identity: Option<Arc<str>>,
}

/// A TLS connection whose handshake finished and whose client certificate
/// verified. It fails its next read or write once a reloaded CRL revokes
/// that certificate, which closes the connection.
pub struct PeerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl PeerStream {
    fn check_revoked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        match self.revoked.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client certificate has been revoked",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

/// Ends when `key` appears among the revoked certificates; never, if it has
/// no key (an unreadable certificate cannot be looked up).
fn revoked_later(
    key: Option<CertificateKey>,
    mut revocations: tokio::sync::watch::Receiver<Revoked>,
    remote_addr: SocketAddr,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let Some(key) = key else {
            return std::future::pending().await;
        };
        loop {
            if revocations.changed().await.is_err() {
                return std::future::pending().await;
            }
            if revocations.borrow_and_update().contains(&key) {
                tracing::warn!(%remote_addr, "client certificate revoked: closing its connection");
                return;
            }
        }
    })
}

impl Connected for PeerStream {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_revoked(cx)?;
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_revoked(cx)?;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_revoked(cx)?;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The stream of authenticated connections handed to tonic.
pub type TlsIncoming = ReceiverStream<Result<PeerStream, io::Error>>;

/// Accepts TCP connections on `listener` and performs each TLS handshake in
/// its own task, with the configuration `config` holds at that moment, at
/// most `max_pending` at once, each within `timeout`. The accept loop stops,
/// closing the listener, when the returned stream is dropped; the returned
/// handle finishes then.
pub fn accept(
    listener: TcpListener,
    config: SharedServerConfig,
    timeout: Duration,
    max_pending: usize,
) -> (TlsIncoming, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(max_pending);
    let pending = Arc::new(Semaphore::new(max_pending));
    let accept_loop = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                _ = tx.closed() => break,
                permit = pending.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let (tcp, remote_addr) = tokio::select! {
                _ = tx.closed() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Usually out of file descriptors: back off, keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            // The configuration in use now: a reload applies from the next connection.
            let acceptor = TlsAcceptor::from(config.current());
            let mut revocations = config.revocations();
            revocations.mark_unchanged();
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(timeout, acceptor.accept(tcp)).await;
                drop(permit);
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(%remote_addr, %error, "TLS handshake refused");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%remote_addr, ?timeout, "TLS handshake timed out");
                        return;
                    }
                };
                let leaf = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first());
                let identity = leaf
                    .and_then(|cert| identity_from_certificate(cert))
                    .map(Arc::from);
                let key = leaf.and_then(|cert| certificate_key(cert));
                tracing::debug!(%remote_addr, identity = identity.as_deref().unwrap_or("-"), "TLS connection established");
                let info = PeerInfo {
                    remote_addr,
                    identity,
                };
                let _ = tx
                    .send(Ok(PeerStream {
                        inner: stream,
                        info,
                        revoked: revoked_later(key, revocations, remote_addr),
                    }))
                    .await;
            });
        }
        tracing::debug!("listener closed");
    });
    (ReceiverStream::new(rx), accept_loop)
}
