//! `spawn_app()` for the integration tests: a fresh development PKI and SQLite
//! file in a temporary folder, a real gateway on 127.0.0.1:0, and real tonic
//! clients over mutual TLS.
#![allow(dead_code)]

pub mod child;
pub mod cluster;
pub mod fixtures;

/// Runs each named `async fn case(backend: Backend)` as two tests,
/// `sqlite::case` and `postgres::case`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Postgres).await })*
        }
    };
}

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use minegate::{
    client::ClientTls,
    config::Config,
    server::{self, Gateway},
    tls::pki,
};
use rustls::{
    AlertDescription, ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use tempfile::TempDir;
use tokio::{io::AsyncReadExt, net::TcpStream};
use tokio_rustls::TlsConnector;
use tonic::transport::Channel;

pub struct TestApp {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub config: Config,
    /// The folder holding the PKI (`pki/`) and the database (`minegate.db`).
    pub dir: Arc<TempDir>,
    /// The PostgreSQL database made for this gateway, dropped with it.
    pub database: Option<Arc<TestDatabase>>,
}

impl TestApp {
    pub fn pki_dir(&self) -> PathBuf {
        pki_dir(&self.dir)
    }

    /// A channel authenticated with `pki/NAME.pem`.
    pub async fn channel(&self, name: &str) -> Channel {
        self.client_tls(name)
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connect as {name}: {e}"))
    }

    pub fn client_tls(&self, name: &str) -> ClientTls {
        let dir = self.pki_dir();
        ClientTls {
            server: format!("https://{}", self.addr),
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            domain: Some("localhost".into()),
        }
    }

    /// Stops the gateway and starts it again on the same folder (PKI and database).
    pub async fn restart(self) -> TestApp {
        let TestApp {
            gateway,
            config,
            dir,
            database,
            ..
        } = self;
        gateway.shutdown().await.expect("clean shutdown");
        TestApp {
            database,
            ..start(config, dir).await
        }
    }
}

pub fn pki_dir(dir: &TempDir) -> PathBuf {
    dir.path().join("pki")
}

/// A folder with a fresh development PKI.
pub fn fresh_folder() -> Arc<TempDir> {
    let dir = tempfile::tempdir().expect("temp dir");
    pki::init(&pki_dir(&dir), false).expect("certs init");
    Arc::new(dir)
}

/// The configuration of a test gateway in `dir`.
pub fn test_config(dir: &TempDir) -> Config {
    let pki = pki_dir(dir);
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: format!("sqlite://{}", dir.path().join("minegate.db").display()),
        ..Config::default()
    };
    config.tls.ca_bundle = pki.join("ca.pem");
    config.tls.crls = vec![pki.join("crl.pem")];
    config.tls.cert = pki.join("server.pem");
    config.tls.key = pki.join("server.key");
    config.tls.dev_pki_dir = PathBuf::new();
    config.signing.key = dir.path().join("signing.key");
    config.limits.shutdown_grace_ms = 2_000;
    config.metrics.listen = "127.0.0.1:0".to_owned();
    config
}

pub async fn spawn_app() -> TestApp {
    let dir = fresh_folder();
    let config = test_config(&dir);
    start(config, dir).await
}

pub async fn spawn_app_with(edit: impl FnOnce(&mut Config)) -> TestApp {
    let dir = fresh_folder();
    let mut config = test_config(&dir);
    edit(&mut config);
    start(config, dir).await
}

pub async fn start(config: Config, dir: Arc<TempDir>) -> TestApp {
    let gateway = server::start(&config).await.expect("gateway starts");
    let addr = gateway.local_addr();
    let mut config = config;
    // A restart binds the same port, so clients keep their address.
    config.listen = addr;
    TestApp {
        gateway,
        addr,
        config,
        dir,
        database: None,
    }
}

/// A raw rustls client (not tonic), to see exactly how a handshake ends.
pub fn rustls_client(ca: &Path, identity: Option<(&Path, &Path)>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Connects with `config` and returns the alert the server refused the
/// handshake with. Panics if the server accepts the connection.
pub async fn refusal(addr: SocketAddr, config: ClientConfig) -> AlertDescription {
    probe(addr, config)
        .await
        .expect("the server accepted the connection")
}

/// A TLS connection with `config`: `None` if the server accepts it (sends
/// its HTTP/2 settings), else the alert it refused the handshake with.
///
/// A connection accepted and then closed without an alert is tried again
/// (up to 5 times): that is how an accepted connection ends when a CRL
/// revoking its certificate is loaded just after its handshake.
pub async fn probe(addr: SocketAddr, config: ClientConfig) -> Option<AlertDescription> {
    let config = Arc::new(config);
    for _ in 0..5 {
        if let Some(answer) = probe_once(addr, config.clone()).await {
            return answer;
        }
    }
    panic!("the server closed 5 accepted connections in a row without an alert")
}

/// One connection: `Some(answer)` as for [`probe`], `None` if it was closed
/// after its handshake with no alert and no data.
async fn probe_once(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Option<Option<AlertDescription>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(config);
    let name = ServerName::try_from("localhost").unwrap();
    let error = match connector.connect(name, tcp).await {
        // TLS 1.2: the server refuses during the handshake.
        Err(error) => error,
        // TLS 1.3: the client finishes first; the refusal arrives on the first read.
        Ok(mut stream) => {
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => return Some(None),
                Ok(Ok(_)) => return None,
                Ok(Err(error)) => error,
                Err(_) => panic!("neither accepted nor refused within 10 s"),
            }
        }
    };
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => Some(Some(*alert)),
        _ if matches!(
            error.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
        ) =>
        {
            None
        }
        other => panic!("expected a TLS alert, got {error} ({other:?})"),
    }
}

/// Asserts that each receipt a client received is the stored one, byte for
/// byte, and that its evidence holds: as handed out, and as the gateway
/// gives it now, under a checkpoint of which the one handed out is a prefix.
pub async fn assert_receipts_stored<'a>(
    channel: Channel,
    receipts: impl IntoIterator<Item = &'a [u8]>,
) {
    use minegate::{
        evidence::verify::{ArtifactKind, verify, verify_consistency},
        proto::v1::{
            FilingReceipt, GetConsistencyProofRequest, GetFilingRequest, GetSigningKeysRequest,
            compliance_service_client::ComplianceServiceClient,
            filing_service_client::FilingServiceClient,
        },
    };
    use prost::Message;
    let mut compliance = ComplianceServiceClient::new(channel.clone());
    let keys = compliance
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let mut filings = FilingServiceClient::new(channel);
    for bytes in receipts {
        let receipt = FilingReceipt::decode(bytes).unwrap();
        let id = &receipt.filing_id;
        let stored = filings
            .get_filing(GetFilingRequest {
                filing_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .receipt
            .unwrap();
        let (then, now) = (receipt.evidence.as_ref(), stored.evidence.as_ref());
        assert_eq!(
            now.unwrap().artifact,
            then.unwrap().artifact,
            "filing {id}: the stored receipt differs from the one handed out"
        );
        let then = verify(ArtifactKind::Receipt, then, &keys)
            .unwrap_or_else(|e| panic!("filing {id}: the receipt handed out: {e}"));
        let now = verify(ArtifactKind::Receipt, now, &keys)
            .unwrap_or_else(|e| panic!("filing {id}: the receipt as stored: {e}"));
        let proof = compliance
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: then.checkpoint.size,
                new_size: now.checkpoint.size,
            })
            .await
            .unwrap()
            .into_inner();
        verify_consistency(&then, &now, &proof.hashes)
            .unwrap_or_else(|e| panic!("filing {id}: {e}"));
    }
}

/// The PostgreSQL server for the tests, from MINEGATE_TEST_POSTGRES_URL. Under
/// CI=true it must be set: the PostgreSQL half is never silently skipped.
pub fn postgres_url() -> Option<String> {
    match std::env::var("MINEGATE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").as_deref() == Ok("true") => {
            panic!(
                "CI=true but MINEGATE_TEST_POSTGRES_URL is not set: the PostgreSQL half must run"
            )
        }
        _ => {
            eprintln!("MINEGATE_TEST_POSTGRES_URL not set: skipping the PostgreSQL half");
            None
        }
    }
}

/// A new, empty database for `backend`: a SQLite file in `dir`, or a new
/// database on the PostgreSQL test server (`None` when none is configured).
pub async fn database_for(backend: Backend, dir: &TempDir) -> Option<TestDatabase> {
    match backend {
        Backend::Sqlite => Some(TestDatabase {
            url: format!("sqlite://{}", dir.path().join("minegate.db").display()),
            made: None,
        }),
        Backend::Postgres => Some(fresh_postgres_database(&postgres_url()?).await),
    }
}

/// A database a test made. One on the PostgreSQL test server is dropped
/// when this is (at the end of the test, or as its panic unwinds), so a run
/// leaves no `minegate_test_*` database behind; a SQLite file goes with its
/// temporary folder.
pub struct TestDatabase {
    pub url: String,
    /// (the server's URL, the database's name) of one made on PostgreSQL.
    made: Option<(String, String)>,
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((server, name)) = self.made.take() else {
            return;
        };
        // Drop runs inside the test's runtime: the database is dropped on a
        // thread of its own, with a runtime of its own.
        let dropped = std::thread::spawn(move || drop_postgres_database(&server, &name)).join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("the test database {} was not dropped: {e}", self.url),
            Err(_) => eprintln!("dropping the test database {} panicked", self.url),
        }
    }
}

/// A new, empty database on the test server, named `minegate_test_<uuid>`:
/// dropped with the value returned.
pub async fn fresh_postgres_database(server_url: &str) -> TestDatabase {
    use sqlx::Connection;
    let name = format!("minegate_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(server_url)
        .await
        .expect("connect to the PostgreSQL test server");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    admin.close().await.ok();
    let (base, _) = server_url.rsplit_once('/').expect("a URL with a database");
    TestDatabase {
        url: format!("{base}/{name}"),
        made: Some((server_url.to_owned(), name)),
    }
}

/// Drops `name` on `server`, closing the connections a gateway may still
/// hold (WITH (FORCE), PostgreSQL 13 and later). Tried three times: a pool
/// may connect again between the closing and the drop.
fn drop_postgres_database(server: &str, name: &str) -> Result<(), String> {
    use sqlx::Connection;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut admin = sqlx::PgConnection::connect(server)
            .await
            .map_err(|e| e.to_string())?;
        let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        let mut outcome = Ok(());
        for _ in 0..3 {
            outcome = sqlx::query(&statement).execute(&mut admin).await.map(drop);
            if outcome.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        admin.close().await.ok();
        outcome.map_err(|e| e.to_string())
    })
}

/// A clock the tests set.
pub struct TestClock(std::sync::Mutex<chrono::DateTime<chrono::Utc>>);

impl TestClock {
    pub fn at(rfc3339: &str) -> Arc<TestClock> {
        Arc::new(TestClock(std::sync::Mutex::new(rfc3339.parse().unwrap())))
    }

    pub fn set(&self, rfc3339: &str) {
        *self.0.lock().unwrap() = rfc3339.parse().unwrap();
    }
}

impl minegate::store::Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        *self.0.lock().unwrap()
    }
}

/// Which database a conformance test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A gateway on `backend` with `clock`; `None` when PostgreSQL is not configured.
pub async fn spawn_on(backend: Backend, clock: Arc<TestClock>) -> Option<TestApp> {
    spawn_on_with(backend, clock, |_| {}).await
}

pub async fn spawn_on_with(
    backend: Backend,
    clock: Arc<TestClock>,
    edit: impl FnOnce(&mut Config),
) -> Option<TestApp> {
    let dir = fresh_folder();
    let mut config = test_config(&dir);
    edit(&mut config);
    let mut database = None;
    if backend == Backend::Postgres {
        let made = fresh_postgres_database(&postgres_url()?).await;
        config.database_url = made.url.clone();
        database = Some(Arc::new(made));
    }
    let gateway = server::start_with_clock(&config, clock)
        .await
        .expect("gateway starts");
    let addr = gateway.local_addr();
    config.listen = addr;
    Some(TestApp {
        gateway,
        addr,
        config,
        dir,
        database,
    })
}

/// One integer from the gateway's own database, looked at underneath.
pub async fn scalar(database_url: &str, sql: &str) -> i64 {
    if let Some(path) = sqlite_path(database_url) {
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || {
            rusqlite::Connection::open(path)
                .unwrap()
                .query_row(&sql, [], |row| row.get(0))
                .unwrap()
        })
        .await
        .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        let value = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
        pool.close().await;
        value
    }
}

/// The text values of a column, read underneath the gateway.
pub async fn texts(url: &str, sql: &str) -> Vec<String> {
    if let Some(path) = sqlite_path(url) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let values = sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        values
    }
}

/// Runs one statement against the gateway's own database, underneath it.
pub async fn execute(database_url: &str, sql: &str) -> u64 {
    if let Some(path) = sqlite_path(database_url) {
        let sql = sql.to_owned();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(path).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            conn.execute(&sql, []).unwrap() as u64
        })
        .await
        .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(database_url).await.unwrap();
        let done = sqlx::query(sql)
            .execute(&pool)
            .await
            .unwrap()
            .rows_affected();
        pool.close().await;
        done
    }
}

/// The file of a `sqlite://PATH` URL.
pub fn sqlite_path(database_url: &str) -> Option<PathBuf> {
    database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(PathBuf::from)
}

/// Signing as a gateway started with `config` signs: with its key.
#[allow(dead_code)]
pub fn signing(config: &Config) -> minegate::store::Signing {
    let signer =
        minegate::signing::Signer::load_or_create(&config.signing.key, &config.signing.origin)
            .expect("the signing key");
    minegate::store::Signing::with(Arc::new(signer))
}

/// Runs `minegate ARGS` as `role`, pointed at the test gateway (without
/// blocking the runtime the gateway runs on).
#[allow(dead_code)]
pub async fn as_role(app: &TestApp, role: &str, args: &[&str]) -> std::process::Output {
    as_role_in(app, role, Path::new("."), args).await
}

/// [`as_role`], run in the folder `cwd`.
#[allow(dead_code)]
pub async fn as_role_in(
    app: &TestApp,
    role: &str,
    cwd: &Path,
    args: &[&str],
) -> std::process::Output {
    let pki = app.pki_dir();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .current_dir(cwd)
        .args(args)
        .args(["--server", &format!("https://{}", app.addr)])
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .arg("--cert")
        .arg(pki.join(format!("{role}.pem")))
        .arg("--key")
        .arg(pki.join(format!("{role}.key")))
        .args(["--tls-domain", "localhost"])
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("run minegate")
}

/// The program `name` on the PATH, for the tests that run an outside tool
/// (promtool, dpkg, systemd-analyze). Missing, the test is skipped with a
/// note, unless CI=true or MINEGATE_TEST_TOOLS=required (as `.ci/run` sets):
/// then it fails, so CI never skips it silently.
pub fn outside_tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let required = std::env::var("CI").as_deref() == Ok("true")
            || std::env::var("MINEGATE_TEST_TOOLS").as_deref() == Ok("required");
        assert!(
            !required,
            "{name} is not installed, and this run requires it"
        );
        eprintln!("{name} is not installed: skipping");
    }
    found
}

/// `GET path` on the metrics listener: (status line, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: metrics\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The field violations of an INVALID_ARGUMENT answer: (field, reason).
pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    status
        .get_details_bad_request()
        .expect("a google.rpc.BadRequest")
        .field_violations
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect()
}

/// A gRPC codec that sends and receives the message bytes as they are, so a
/// test can call any path with any body (a method no client stub has, or
/// bytes that are no protobuf message).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawBytes;

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawBytes;
    type Decoder = RawBytes;

    fn encoder(&mut self) -> RawBytes {
        RawBytes
    }

    fn decoder(&mut self) -> RawBytes {
        RawBytes
    }
}

impl tonic::codec::Encoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawBytes {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        let remaining = bytes::Buf::remaining(buf);
        Ok(Some(bytes::Buf::copy_to_bytes(buf, remaining).to_vec()))
    }
}

/// One unary call of `path` (`/package.Service/Method`) with `body` as the
/// request message's bytes, over a real channel.
pub async fn raw_call(
    channel: Channel,
    path: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path: http::uri::PathAndQuery = path.parse().expect("a path");
    grpc.unary(tonic::Request::new(body), path, RawBytes)
        .await
        .map(tonic::Response::into_inner)
}

/// The series a `/metrics` body exports: each sample's name and labels,
/// without its value, in the order written.
pub fn metric_series(body: &str) -> Vec<String> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.rsplit_once(' ').map_or(line, |(series, _)| series))
        .map(str::to_owned)
        .collect()
}
