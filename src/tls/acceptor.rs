//! The mutual-TLS front door. The server builds its own rustls `ServerConfig`
//! (tonic's `ServerTlsConfig` cannot take CRLs): a client certificate is
//! required and verified against the CA bundle and CRLs; TLS 1.2 and 1.3
//! only; ALPN h2. Every accepted TCP connection does its handshake in its own
//! task under two deadlines (its ClientHello, then the whole handshake), so a
//! client that connects and sends nothing holds up no one; connections are
//! capped per source address and while they await their ClientHello, and
//! only a connection that sent one takes a handshake slot. Only finished
//! handshakes reach the gRPC server, each carrying the identity read from its
//! certificate, its place under the connection caps (`connections`) and
//! the count of its calls in progress, and closing itself once idle.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
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
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, Sleep},
};
use tokio_rustls::LazyConfigAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::{
    config::{Limits, TlsConfig},
    metrics::Metrics,
    tls::{
        connections::{
            Admission, ConnectionActivity, ConnectionLimits, ConnectionPlace, ConnectionRefusal,
            REFUSED_CONNECTION_GRACE,
        },
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

/// What the gRPC layer learns about a connection: where it comes from, the
/// identity in its (verified) client certificate, whether it came past a
/// connection cap, and where its calls in progress are counted.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// First URI SAN, else subject CN; `None` if the certificate has neither.
    pub identity: Option<Arc<str>>,
    /// Set when the connection came past a cap: every call on it is refused.
    pub refusal: Option<ConnectionRefusal>,
    pub activity: Arc<ConnectionActivity>,
}

/// A TLS connection whose handshake finished and whose client certificate
/// verified. It fails its next read or write once a reloaded CRL revokes
/// that certificate, or once it has carried no call for its idle timeout,
/// which closes the connection.
pub struct PeerStream {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    info: PeerInfo,
    revoked: Pin<Box<dyn Future<Output = ()> + Send>>,
    idle_timeout: Duration,
    idle_check: Pin<Box<Sleep>>,
    /// Whether the timer has this task's waker since it was last set.
    idle_check_registered: bool,
    /// Its place under the caps, or among the refused connections.
    _place: Place,
}

/// Held, not read: dropping it gives the place back.
enum Place {
    Admitted { _place: ConnectionPlace },
    Refused { _place: OwnedSemaphorePermit },
}

impl PeerStream {
    fn check_revoked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Poll::Ready(()) = self.revoked.as_mut().poll(cx) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the client certificate has been revoked",
            ));
        }
        self.check_idle(cx)
    }

    /// Fails once the connection is to close (no call in progress for the
    /// idle timeout, or a refusal sent). The timer, whose wake-up brings
    /// hyper back to read, is moved only when that moment comes sooner than
    /// it is set for, or when it is due; it is not polled on every read
    /// and write (a reset takes the timer driver's lock; a call ending on a
    /// busy connection moves the idle moment thousands of times a second).
    fn check_idle(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let now = Instant::now();
        let wanted = self.info.activity.close_deadline(self.idle_timeout);
        if wanted.is_some_and(|deadline| deadline <= now) {
            tracing::debug!(remote_addr = %self.info.remote_addr, "idle connection closed");
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the connection is idle, or past a connection cap",
            ));
        }
        let set = self.idle_check.deadline();
        let next = match wanted {
            Some(deadline) if deadline < set => Some(deadline),
            // Due, and not yet to close: the next moment it could be.
            _ if set <= now => Some(wanted.unwrap_or(now + self.idle_timeout)),
            _ => None,
        };
        if let Some(next) = next {
            self.idle_check.as_mut().reset(next);
            self.idle_check_registered = false;
        }
        if !self.idle_check_registered {
            // Registers this task's waker; it cannot be due yet.
            let _ = self.idle_check.as_mut().poll(cx);
            self.idle_check_registered = true;
        }
        Ok(())
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

/// How the front door bounds connections whose handshake has not finished.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeLimits {
    /// A connection must send its ClientHello within this time.
    pub client_hello_timeout: Duration,
    /// ... and finish its handshake within this time of connecting.
    pub handshake_timeout: Duration,
    /// Connections accepted and not yet through their ClientHello.
    pub max_awaiting_hello: usize,
    /// Handshakes past their ClientHello and not yet finished.
    pub max_pending: usize,
    /// Connections from one source address not yet through their handshake.
    pub max_per_address: usize,
    /// A connection with no call in progress this long is closed.
    pub idle_timeout: Duration,
}

impl HandshakeLimits {
    pub fn from_config(tls: &TlsConfig, limits: &Limits) -> Self {
        HandshakeLimits {
            client_hello_timeout: Duration::from_millis(tls.client_hello_timeout_ms),
            handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
            max_awaiting_hello: tls.max_awaiting_client_hello,
            max_pending: tls.max_pending_handshakes,
            max_per_address: tls.max_pending_handshakes_per_address,
            idle_timeout: Duration::from_millis(limits.idle_connection_timeout_ms),
        }
    }
}

/// How a connection's handshake ended; the `outcome` label of
/// `minegate_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HandshakeOutcome {
    /// Finished: the connection goes to the gRPC server.
    Established,
    /// The client's TLS was refused (bad certificate, protocol, ALPN, a
    /// malformed ClientHello).
    Refused,
    /// The client closed the connection before its handshake finished.
    Closed,
    /// No complete ClientHello within `tls.client_hello_timeout_ms`.
    HelloTimeout,
    /// Not finished within `tls.handshake_timeout_ms`.
    Timeout,
    /// Closed at its ClientHello deadline without its turn: its source
    /// address had `tls.max_pending_handshakes_per_address` handshakes
    /// under way all along.
    AddressLimit,
    /// Closed to make room for a newer connection: it was the oldest of
    /// `tls.max_awaiting_client_hello` connections waiting for their
    /// ClientHello, or of `tls.max_pending_handshakes` handshakes past it.
    Evicted,
    /// Closed as its handshake finished: past `limits.max_connections` or
    /// `limits.max_connections_per_identity`, with as many connections
    /// past them already open to carry their refusals as are kept.
    ConnectionLimit,
}

impl HandshakeOutcome {
    pub const ALL: [HandshakeOutcome; 8] = [
        HandshakeOutcome::Established,
        HandshakeOutcome::Refused,
        HandshakeOutcome::Closed,
        HandshakeOutcome::HelloTimeout,
        HandshakeOutcome::Timeout,
        HandshakeOutcome::AddressLimit,
        HandshakeOutcome::Evicted,
        HandshakeOutcome::ConnectionLimit,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeOutcome::Established => "established",
            HandshakeOutcome::Refused => "refused",
            HandshakeOutcome::Closed => "closed",
            HandshakeOutcome::HelloTimeout => "hello_timeout",
            HandshakeOutcome::Timeout => "timeout",
            HandshakeOutcome::AddressLimit => "address_limit",
            HandshakeOutcome::Evicted => "evicted",
            HandshakeOutcome::ConnectionLimit => "connection_limit",
        }
    }
}

/// Handshakes under way per source address, at most `max` each; more from
/// the same address wait for one to end (within their ClientHello deadline,
/// in the awaiting-hello phase, where a flood's are the first evicted). So
/// one host cannot run more than `max` handshakes at once, while a client
/// that opens many connections at once (a pool) is served in turn.
struct PerAddress {
    max: usize,
    semaphores: Mutex<HashMap<IpAddr, Arc<tokio::sync::Semaphore>>>,
}

/// A connection's turn among its address's handshakes: waiting, then held
/// until it drops.
struct AddressTicket {
    table: Arc<PerAddress>,
    ip: IpAddr,
    semaphore: Option<Arc<tokio::sync::Semaphore>>,
    permit: Option<OwnedSemaphorePermit>,
}

impl PerAddress {
    fn new(max: usize) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            max,
            semaphores: Mutex::new(HashMap::new()),
        })
    }

    fn ticket(self: &Arc<Self>, ip: IpAddr) -> AddressTicket {
        let mut semaphores = self.semaphores.lock().unwrap_or_else(|p| p.into_inner());
        let semaphore = semaphores
            .entry(ip)
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max)))
            .clone();
        AddressTicket {
            table: self.clone(),
            ip,
            semaphore: Some(semaphore),
            permit: None,
        }
    }
}

impl AddressTicket {
    /// Waits for a place among the address's handshakes.
    async fn claimed(&mut self) {
        if let Some(semaphore) = self.semaphore.clone() {
            self.permit = semaphore.acquire_owned().await.ok();
        }
    }
}

impl Drop for AddressTicket {
    fn drop(&mut self) {
        let mut semaphores = self
            .table
            .semaphores
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.permit.take();
        // The table's and this one: no other connection of the address is
        // under way or waiting (each holds a clone), so its entry can go.
        if let Some(semaphore) = self.semaphore.take()
            && Arc::strong_count(&semaphore) == 2
        {
            semaphores.remove(&self.ip);
        }
    }
}

/// Places for connections in one phase of their handshake, at most `max`.
/// When all are taken, a newcomer takes a place held by the source address
/// holding the most, its oldest: a flood's connections come from far fewer
/// addresses than they number, so it is they that are closed, not another
/// agency's one connection, however fast the flood comes; and no one waits
/// for a place.
struct Slots {
    max: usize,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// By age (ids only grow): the address and the signal that closes it.
    slots: std::collections::BTreeMap<u64, (IpAddr, oneshot::Sender<()>)>,
    per_address: HashMap<IpAddr, usize>,
    next: u64,
}

/// A place in [`Slots`]; `evicted` resolves if a newer connection takes it.
struct Slot {
    slots: Arc<Slots>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl Slots {
    fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max,
            held: Mutex::new(Held::default()),
        })
    }

    fn take(self: &Arc<Self>, ip: IpAddr) -> Slot {
        let (evict, evicted) = oneshot::channel();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.slots.len() >= self.max {
            held.evict_one();
        }
        let id = held.next;
        held.next += 1;
        held.slots.insert(id, (ip, evict));
        *held.per_address.entry(ip).or_default() += 1;
        Slot {
            slots: self.clone(),
            id,
            evicted,
        }
    }
}

impl Held {
    /// Closes the oldest place of the address that holds the most.
    fn evict_one(&mut self) {
        let Some(most) = self.per_address.values().copied().max() else {
            return;
        };
        let victim = self
            .slots
            .iter()
            .find(|(_, (ip, _))| self.per_address.get(ip) == Some(&most))
            .map(|(id, _)| *id);
        if let Some((_, evict)) = victim.and_then(|id| self.remove(id)) {
            let _ = evict.send(());
        }
    }

    fn remove(&mut self, id: u64) -> Option<(IpAddr, oneshot::Sender<()>)> {
        let (ip, evict) = self.slots.remove(&id)?;
        if let Some(count) = self.per_address.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.per_address.remove(&ip);
            }
        }
        Some((ip, evict))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|p| p.into_inner());
        held.remove(self.id);
    }
}

/// Accepts TCP connections on `listener` and performs each TLS handshake in
/// its own task, with the configuration `config` holds when its ClientHello
/// arrives. Accepting never waits: a connection past the per-address cap is
/// closed at once; one past `max_awaiting_hello` (before its ClientHello) or
/// `max_pending` (after it) closes the oldest in that phase instead (see
/// `Slots`), so silent connections cannot hold the port. A finished
/// handshake takes its place under `connections`. The accept loop stops,
/// closing the listener, when the returned stream is dropped; the returned
/// handle finishes then.
pub fn accept(
    listener: TcpListener,
    config: SharedServerConfig,
    limits: HandshakeLimits,
    connections: Arc<ConnectionLimits>,
    metrics: Metrics,
) -> (TlsIncoming, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(limits.max_pending);
    let awaiting = Slots::new(limits.max_awaiting_hello);
    let pending = Slots::new(limits.max_pending);
    let per_address = PerAddress::new(limits.max_per_address);
    let accept_loop = tokio::spawn(async move {
        loop {
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
            let ip = remote_addr.ip().to_canonical();
            let ticket = per_address.ticket(ip);
            let hello_slot = awaiting.take(ip);
            let _ = tcp.set_nodelay(true);
            let handshake = Handshake {
                config: config.clone(),
                limits,
                pending: pending.clone(),
                connections: connections.clone(),
                remote_addr,
            };
            let tx = tx.clone();
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let (outcome, stream) = handshake.run(tcp, hello_slot, ticket).await;
                metrics.handshake(outcome);
                if let Some(stream) = stream {
                    let _ = tx.send(Ok(stream)).await;
                }
            });
        }
        tracing::debug!("listener closed");
    });
    (ReceiverStream::new(rx), accept_loop)
}

/// One connection's way through the handshake.
struct Handshake {
    config: SharedServerConfig,
    limits: HandshakeLimits,
    pending: Arc<Slots>,
    connections: Arc<ConnectionLimits>,
    remote_addr: SocketAddr,
}

impl Handshake {
    async fn run(
        self,
        tcp: TcpStream,
        mut hello_slot: Slot,
        mut ticket: AddressTicket,
    ) -> (HandshakeOutcome, Option<PeerStream>) {
        let remote_addr = self.remote_addr;
        let deadline = Instant::now() + self.limits.handshake_timeout;
        let hello_deadline = deadline.min(Instant::now() + self.limits.client_hello_timeout);
        // Its turn among its address's handshakes, held until it returns.
        tokio::select! {
            () = ticket.claimed() => {}
            () = tokio::time::sleep_until(hello_deadline) => {
                tracing::debug!(%remote_addr, "no turn among this address's handshakes in time: closed");
                return (HandshakeOutcome::AddressLimit, None);
            }
            _ = &mut hello_slot.evicted => return evicted(remote_addr),
        }
        let hello = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let start = tokio::select! {
            hello = tokio::time::timeout_at(hello_deadline, hello) => match hello {
                Ok(Ok(start)) => start,
                Ok(Err(error)) => return refused(remote_addr, &error),
                Err(_) => {
                    tracing::info!(%remote_addr, "no ClientHello in time: closed");
                    return (HandshakeOutcome::HelloTimeout, None);
                }
            },
            _ = &mut hello_slot.evicted => return evicted(remote_addr),
        };
        drop(hello_slot);
        let mut slot = self.pending.take(remote_addr.ip().to_canonical());
        // The configuration in use now: a reload applies from the next connection.
        let tls = self.config.current();
        let mut revocations = self.config.revocations();
        revocations.mark_unchanged();
        let finished = tokio::select! {
            finished = tokio::time::timeout_at(deadline, start.into_stream(tls)) => finished,
            _ = &mut slot.evicted => return evicted(remote_addr),
        };
        match finished {
            Ok(Ok(stream)) => {
                let connection = Connection {
                    remote_addr,
                    connections: &self.connections,
                    idle_timeout: self.limits.idle_timeout,
                };
                match peer_stream(stream, revocations, connection) {
                    Some(stream) => (HandshakeOutcome::Established, Some(stream)),
                    None => (HandshakeOutcome::ConnectionLimit, None),
                }
            }
            Ok(Err(error)) => refused(remote_addr, &error),
            Err(_) => {
                let timeout = self.limits.handshake_timeout;
                tracing::info!(%remote_addr, ?timeout, "TLS handshake timed out");
                (HandshakeOutcome::Timeout, None)
            }
        }
    }
}

fn evicted(remote_addr: SocketAddr) -> (HandshakeOutcome, Option<PeerStream>) {
    tracing::debug!(%remote_addr, "closed during its handshake to make room for a newer one");
    (HandshakeOutcome::Evicted, None)
}

fn refused(remote_addr: SocketAddr, error: &io::Error) -> (HandshakeOutcome, Option<PeerStream>) {
    use io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
    if matches!(
        error.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted
    ) {
        tracing::debug!(%remote_addr, %error, "closed by the client during its TLS handshake");
        return (HandshakeOutcome::Closed, None);
    }
    tracing::info!(%remote_addr, %error, "TLS handshake refused");
    (HandshakeOutcome::Refused, None)
}

/// What a finished handshake's connection is placed under.
struct Connection<'a> {
    remote_addr: SocketAddr,
    connections: &'a Arc<ConnectionLimits>,
    idle_timeout: Duration,
}

/// The connection handed to tonic, with the identity its certificate gives
/// and its place under the caps; `None` if it is to be closed at once.
fn peer_stream(
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    revocations: tokio::sync::watch::Receiver<Revoked>,
    connection: Connection<'_>,
) -> Option<PeerStream> {
    let remote_addr = connection.remote_addr;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first());
    let identity: Option<Arc<str>> = leaf
        .and_then(|cert| identity_from_certificate(cert))
        .map(Arc::from);
    let key = leaf.and_then(|cert| certificate_key(cert));
    let shown = identity.as_deref().unwrap_or("-");
    let (place, refusal, idle_timeout) = match connection.connections.admit(identity.as_ref()) {
        Admission::Admitted(place) => (
            Place::Admitted { _place: place },
            None,
            connection.idle_timeout,
        ),
        Admission::Refused(refusal, place) => {
            tracing::info!(%remote_addr, identity = shown, %refusal, "connection past a cap: its calls are refused");
            let grace = REFUSED_CONNECTION_GRACE.min(connection.idle_timeout);
            (Place::Refused { _place: place }, Some(refusal), grace)
        }
        Admission::Closed(refusal) => {
            tracing::info!(%remote_addr, identity = shown, %refusal, "connection past a cap: closed");
            return None;
        }
    };
    tracing::debug!(%remote_addr, identity = shown, "TLS connection established");
    let activity = ConnectionActivity::new();
    Some(PeerStream {
        inner: stream,
        idle_check: Box::pin(tokio::time::sleep(idle_timeout)),
        idle_check_registered: false,
        idle_timeout,
        info: PeerInfo {
            remote_addr,
            identity,
            refusal,
            activity,
        },
        revoked: revoked_later(key, revocations, remote_addr),
        _place: place,
    })
}
