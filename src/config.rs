//! The gateway's configuration: `minegate.toml`, every key overridable by a
//! `MINEGATE_*` environment variable, and built-in defaults that run a
//! development gateway with no file at all.
//!
//! Precedence: defaults < file < environment. A file's `[roles]` table
//! replaces the default (development) identities instead of merging with
//! them, so a production configuration never inherits dev identities.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::tls::Role;

/// Environment variables with the `MINEGATE_` prefix that are not config keys.
const NON_CONFIG_VARIABLES: &[&str] = &["MINEGATE_CONFIG"];
/// Prefix of environment variables read by tests, never by the gateway.
const TEST_VARIABLE_PREFIX: &str = "MINEGATE_TEST_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the gRPC server listens on.
    pub listen: SocketAddr,
    /// `sqlite://PATH` (embedded default) or `postgres://…`.
    pub database_url: String,
    pub tls: TlsConfig,
    /// Certificate identity (URI SAN, else subject CN) → role.
    pub roles: BTreeMap<String, Role>,
    pub limits: Limits,
    pub log: LogConfig,
    pub signing: SigningConfig,
    pub metrics: MetricsConfig,
    /// How the client commands reach a gateway (not read by `serve`).
    pub client: ClientConfig,
    /// What loading found worth a warning but not a refusal (environment
    /// variables named like the gateway's that are none of its keys, as
    /// Kubernetes sets for a Service named `minegate`); logged once logging
    /// has started.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// How the client commands (`health`, `submit`, `energy`, `finance`,
/// `compliance`, `status`, …) reach a gateway. Their flags (`--server`, …)
/// win over it; its variables are `MINEGATE_CLIENT_SERVER` and so on, as for
/// every key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The gateway, `https://HOST:PORT`.
    pub server: String,
    /// The CA bundle that issued the gateway's certificate.
    pub ca: PathBuf,
    /// This agency's client certificate; "": `certs/dev/ROLE.pem` for the
    /// command's role.
    pub cert: PathBuf,
    /// Its private key; "": `certs/dev/ROLE.key`.
    pub key: PathBuf,
    /// The name to check the gateway's certificate against; "": the
    /// server's host.
    pub tls_domain: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            server: "https://127.0.0.1:50051".to_owned(),
            ca: PathBuf::from("certs/dev/ca.pem"),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            tls_domain: String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the Prometheus endpoint (plain HTTP, `GET /metrics`), apart
    /// from the gRPC listener; "" turns it off.
    pub listen: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// The gateway's Ed25519 signing key (PKCS#8); made here on first start.
    pub key: PathBuf,
    /// The ledger's name (C2SP checkpoint origin), the first line of every
    /// checkpoint and the name in its signature: one per database, never
    /// changed.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Add the key to the database's key history if the history does not
    /// know it (`serve --add-signing-key`); otherwise such a key is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub add_unknown_key: bool,
}

fn default_origin() -> String {
    "minegate".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM bundle of the CAs whose client certificates are accepted.
    pub ca_bundle: PathBuf,
    /// PEM or DER CRL files checked for every client certificate.
    pub crls: Vec<PathBuf>,
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// When not empty: if `DIR/ca.pem` is missing at start-up, make a
    /// development PKI there (as `minegate certs init --dir DIR` does).
    pub dev_pki_dir: PathBuf,
    /// Accept a client certificate whose revocation status no configured
    /// CRL covers. Off: such certificates are refused.
    pub allow_unknown_revocation: bool,
    /// A connection must send its TLS ClientHello within this time of
    /// connecting (a client sends it at once).
    pub client_hello_timeout_ms: u64,
    /// A connection must finish its TLS handshake within this time.
    pub handshake_timeout_ms: u64,
    /// Handshakes past their ClientHello at once; a newer one closes the
    /// oldest of the source address holding the most (no one waits).
    pub max_pending_handshakes: usize,
    /// Handshakes under way from one source address; more from it wait their
    /// turn, until their ClientHello deadline.
    pub max_pending_handshakes_per_address: usize,
    /// Connections accepted and still awaiting their ClientHello; a newer
    /// one closes the oldest of the source address holding the most.
    pub max_awaiting_client_hello: usize,
    /// How often the CA bundle, CRLs and server certificate files are checked
    /// for changes and reloaded (SIGHUP reloads at once); 0: only on SIGHUP.
    pub reload_check_ms: u64,
    /// Below this many days before the server's or a CA's certificate
    /// expires, the `minegate.certificates` health status is NOT_SERVING and
    /// a warning is logged.
    pub expiry_warning_days: u32,
}

/// The largest `limits.max_in_flight`.
pub const MAX_IN_FLIGHT: u32 = 1024;

/// The smallest `limits.max_message_bytes` allowed. Every string and list
/// of a filing is bounded (`service::validate`), so the largest filing, and
/// each artifact made of one with its evidence (receipt, GetFiling's answer,
/// extract delivery, acknowledgement), has a known largest size: about
/// 1.4 MB, a quarterly report at every limit in four-byte characters,
/// answered by GetFiling (`tests/budget.rs` sends such filings through a
/// gateway configured at this limit). Form 402 is sent in pages cut to the
/// limit.
pub const MIN_MESSAGE_BYTES: usize = 2 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// Largest document accepted by UploadDocument, in bytes.
    pub max_document_bytes: u64,
    /// Concurrent HTTP/2 streams (calls) per connection.
    pub max_concurrent_streams_per_connection: u32,
    /// Calls taking longer are ended; for a document upload, the longest
    /// wait for its next message.
    pub request_timeout_ms: u64,
    /// A document upload taking longer in all is ended.
    pub max_upload_ms: u64,
    /// On SIGINT/SIGTERM, in-flight calls get this long to finish.
    pub shutdown_grace_ms: u64,
    /// An extract not acknowledged this long after sending is sent again.
    pub ack_deadline_ms: u64,
    /// The most unacknowledged extracts on one Subscribe stream: a
    /// subscriber may ask for fewer, not more. At most [`MAX_IN_FLIGHT`].
    pub max_in_flight: u32,
    /// Subscribe streams open at once for one energy identity; past it a
    /// new one is RESOURCE_EXHAUSTED. With `max_in_flight`, it bounds what
    /// the gateway holds for subscribers that do not read.
    pub max_subscribe_streams_per_identity: u32,
    /// How often obligations past their due date are marked OVERDUE.
    pub obligation_scan_ms: u64,
    /// Calls in progress at once from one certificate identity, over all its
    /// connections; more get RESOURCE_EXHAUSTED with a retry hint.
    pub max_concurrent_calls_per_peer: u32,
    /// How often the database is checked; while it cannot be reached, health
    /// is NOT_SERVING.
    pub database_check_ms: u64,
    /// How often the ledger is verified in the background (hash chain,
    /// Merkle tree, signed checkpoints; `minegate_ledger_verification_ok`):
    /// the whole ledger at start, then the entries added since the last
    /// intact pass; 0: never.
    pub ledger_verify_ms: u64,
    /// An upload unfinished this long after it started is taken as
    /// abandoned (its client or gateway gone) and its chunks removed; more
    /// than `max_upload_ms`, which ends every upload.
    pub abandoned_upload_ms: u64,
    /// HTTP/2 flow-control window of each call (stream), in bytes: the most
    /// a client may send on one call before the gateway reads it.
    pub http2_stream_window_bytes: u32,
    /// HTTP/2 flow-control window of each connection, in bytes: the most a
    /// client may send on all calls of one connection before the gateway
    /// reads it.
    pub http2_connection_window_bytes: u32,
    /// Largest HTTP/2 frame the gateway accepts, in bytes (16384 to 16777215).
    pub http2_max_frame_bytes: u32,
    /// An HTTP/2 ping is sent on a connection after this long without a
    /// frame from the client, to find peers that went away.
    pub http2_keepalive_interval_ms: u64,
    /// A ping unanswered this long closes its connection.
    pub http2_keepalive_timeout_ms: u64,
    /// Connections through their handshake at once, from all clients; past
    /// it, a new connection's calls are refused with RESOURCE_EXHAUSTED.
    pub max_connections: u32,
    /// Connections at once from one certificate identity; past it, as above.
    pub max_connections_per_identity: u32,
    /// A connection with no call in progress for this long is closed.
    pub idle_connection_timeout_ms: u64,
    /// Bytes that uploads in progress may hold at once, over all calls:
    /// each reserves its HTTP/2 stream window and the messages and chunks
    /// it holds; one that would go past it is refused with
    /// RESOURCE_EXHAUSTED and a retry hint.
    pub upload_bytes_in_flight: u64,
}

/// HTTP/2's bounds on a frame's size (RFC 9113 §6.5.2).
const HTTP2_FRAME_BYTES: std::ops::RangeInclusive<u32> = 16_384..=16_777_215;

/// HTTP/2's largest flow-control window (RFC 9113 §6.9.1).
const HTTP2_MAX_WINDOW_BYTES: u32 = (1 << 31) - 1;

impl Limits {
    /// The connection and memory limits: none may be 0, and the windows and
    /// frame size must be ones HTTP/2 allows.
    fn check_connections(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            (
                "http2_stream_window_bytes",
                self.http2_stream_window_bytes as u64,
            ),
            (
                "http2_connection_window_bytes",
                self.http2_connection_window_bytes as u64,
            ),
            (
                "http2_keepalive_interval_ms",
                self.http2_keepalive_interval_ms,
            ),
            (
                "http2_keepalive_timeout_ms",
                self.http2_keepalive_timeout_ms,
            ),
            ("max_connections", self.max_connections as u64),
            (
                "max_connections_per_identity",
                self.max_connections_per_identity as u64,
            ),
            (
                "idle_connection_timeout_ms",
                self.idle_connection_timeout_ms,
            ),
            ("upload_bytes_in_flight", self.upload_bytes_in_flight),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "limits.{key} must be greater than 0"
                )));
            }
        }
        if !HTTP2_FRAME_BYTES.contains(&self.http2_max_frame_bytes) {
            return Err(ConfigError::Invalid(format!(
                "limits.http2_max_frame_bytes must be from {} to {} (HTTP/2), got {}",
                HTTP2_FRAME_BYTES.start(),
                HTTP2_FRAME_BYTES.end(),
                self.http2_max_frame_bytes
            )));
        }
        for (key, value) in [
            ("http2_stream_window_bytes", self.http2_stream_window_bytes),
            (
                "http2_connection_window_bytes",
                self.http2_connection_window_bytes,
            ),
        ] {
            if value > HTTP2_MAX_WINDOW_BYTES {
                return Err(ConfigError::Invalid(format!(
                    "limits.{key} must be at most {HTTP2_MAX_WINDOW_BYTES} (HTTP/2), got {value}"
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `minegate=debug,info`. `RUST_LOG` wins.
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        let dev = PathBuf::from("certs/dev");
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            database_url: "sqlite://data/minegate.db".to_owned(),
            tls: TlsConfig {
                ca_bundle: dev.join("ca.pem"),
                crls: vec![dev.join("crl.pem")],
                cert: dev.join("server.pem"),
                key: dev.join("server.key"),
                dev_pki_dir: dev,
                allow_unknown_revocation: false,
                client_hello_timeout_ms: 2_000,
                handshake_timeout_ms: 10_000,
                max_pending_handshakes: 256,
                max_pending_handshakes_per_address: 8,
                max_awaiting_client_hello: 4096,
                reload_check_ms: 5_000,
                expiry_warning_days: 30,
            },
            roles: Role::ALL
                .iter()
                .map(|role| (role.dev_identity(), *role))
                .collect(),
            limits: Limits {
                max_message_bytes: 4 * 1024 * 1024,
                max_document_bytes: 20 * 1024 * 1024,
                max_concurrent_streams_per_connection: 64,
                request_timeout_ms: 30_000,
                max_upload_ms: 600_000,
                shutdown_grace_ms: 10_000,
                ack_deadline_ms: 30_000,
                max_in_flight: 16,
                max_subscribe_streams_per_identity: 4,
                obligation_scan_ms: 60_000,
                max_concurrent_calls_per_peer: 128,
                database_check_ms: 1_000,
                ledger_verify_ms: 3_600_000,
                abandoned_upload_ms: 1_800_000,
                http2_stream_window_bytes: 256 * 1024,
                http2_connection_window_bytes: 512 * 1024,
                http2_max_frame_bytes: 16 * 1024,
                http2_keepalive_interval_ms: 60_000,
                http2_keepalive_timeout_ms: 20_000,
                max_connections: 512,
                max_connections_per_identity: 128,
                idle_connection_timeout_ms: 120_000,
                upload_bytes_in_flight: 64 * 1024 * 1024,
            },
            log: LogConfig {
                format: LogFormat::Text,
                filter: "info".to_owned(),
            },
            signing: SigningConfig {
                key: PathBuf::from("data/signing.key"),
                origin: default_origin(),
                add_unknown_key: false,
            },
            metrics: MetricsConfig {
                listen: "127.0.0.1:9464".to_owned(),
            },
            client: ClientConfig::default(),
            warnings: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("config: {0}")]
    Invalid(String),
    #[error("environment variable {variable}: {reason}")]
    Environment { variable: String, reason: String },
}

impl Config {
    /// Loads the configuration: defaults, then the file (if any), then the
    /// `MINEGATE_*` variables of `environment`.
    pub fn load(
        file: Option<&Path>,
        environment: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let defaults = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut merged = defaults.clone();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let from_file: toml::Value =
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
            merge(&mut merged, from_file, "");
        }
        let (warnings, set_by) = apply_environment(&defaults, &mut merged, environment)?;
        let mut config = decode(merged, &defaults, &set_by)?;
        config.check()?;
        config.warnings = warnings;
        Ok(config)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.roles.is_empty() {
            return Err(ConfigError::Invalid(
                "roles: no identity is mapped to a role, so every call would be refused".into(),
            ));
        }
        let tls = &self.tls;
        for (key, value) in [
            ("tls.client_hello_timeout_ms", tls.client_hello_timeout_ms),
            ("tls.handshake_timeout_ms", tls.handshake_timeout_ms),
            (
                "tls.max_pending_handshakes",
                tls.max_pending_handshakes as u64,
            ),
            (
                "tls.max_pending_handshakes_per_address",
                tls.max_pending_handshakes_per_address as u64,
            ),
            (
                "tls.max_awaiting_client_hello",
                tls.max_awaiting_client_hello as u64,
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be greater than 0"
                )));
            }
        }
        if self.limits.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(ConfigError::Invalid(format!(
                "limits.max_message_bytes must be at least {MIN_MESSAGE_BYTES}: the largest \
                 filing the rules allow, and every artifact made of one, must fit, got {}",
                self.limits.max_message_bytes
            )));
        }
        if self.limits.max_in_flight == 0
            || self.limits.max_subscribe_streams_per_identity == 0
            || self.limits.ack_deadline_ms == 0
            || self.limits.obligation_scan_ms == 0
        {
            return Err(ConfigError::Invalid(
                "limits.max_in_flight, limits.max_subscribe_streams_per_identity, limits.ack_deadline_ms and limits.obligation_scan_ms must be greater than 0".into(),
            ));
        }
        if self.limits.max_in_flight > MAX_IN_FLIGHT {
            return Err(ConfigError::Invalid(format!(
                "limits.max_in_flight must be at most {MAX_IN_FLIGHT}"
            )));
        }
        if self.limits.max_concurrent_calls_per_peer == 0 || self.limits.database_check_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_concurrent_calls_per_peer and limits.database_check_ms must be greater than 0".into(),
            ));
        }
        if !self.metrics.listen.is_empty() && self.metrics.listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::Invalid(format!(
                "metrics.listen: {:?} is not an address such as 127.0.0.1:9464 (\"\" turns the endpoint off)",
                self.metrics.listen
            )));
        }
        if self.limits.max_upload_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_upload_ms must be greater than 0".into(),
            ));
        }
        if self.limits.abandoned_upload_ms <= self.limits.max_upload_ms {
            return Err(ConfigError::Invalid(format!(
                "limits.abandoned_upload_ms ({}) must be more than limits.max_upload_ms ({}): \
                 an upload still in its call would be removed",
                self.limits.abandoned_upload_ms, self.limits.max_upload_ms
            )));
        }
        if self.limits.max_concurrent_streams_per_connection == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_concurrent_streams_per_connection must be greater than 0".into(),
            ));
        }
        self.limits.check_connections()
    }

    /// The environment variable that overrides a key path such as `tls.ca_bundle`.
    pub fn variable_for(key_path: &str) -> String {
        format!("MINEGATE_{}", key_path.replace('.', "_").to_uppercase())
    }
}

/// The variables that point a `minegate serve` child process at
/// `127.0.0.1:port`, `database_url`, the PKI in `pki` (as `minegate certs
/// init` lays it out: `ca.pem`, `crl.pem`, `server.pem`, `server.key`) and
/// `signing_key`, with no development PKI made and no metrics listener. The
/// benchmark and the tests start their gateways with them.
pub fn child_gateway_environment(
    port: u16,
    database_url: &str,
    pki: &Path,
    signing_key: &Path,
) -> Vec<(&'static str, std::ffi::OsString)> {
    vec![
        ("MINEGATE_LISTEN", format!("127.0.0.1:{port}").into()),
        ("MINEGATE_METRICS_LISTEN", "".into()),
        ("MINEGATE_DATABASE_URL", database_url.into()),
        ("MINEGATE_TLS_CA_BUNDLE", pki.join("ca.pem").into()),
        ("MINEGATE_TLS_CRLS", pki.join("crl.pem").into()),
        ("MINEGATE_TLS_CERT", pki.join("server.pem").into()),
        ("MINEGATE_TLS_KEY", pki.join("server.key").into()),
        ("MINEGATE_TLS_DEV_PKI_DIR", "".into()),
        ("MINEGATE_SIGNING_KEY", signing_key.into()),
    ]
}

/// How many wrong keys one load reports.
const PROBLEMS_SAID: usize = 20;

/// The configuration of the merged tables, or every key in them that is
/// unknown or of the wrong type (up to [`PROBLEMS_SAID`]), each by its path:
/// each one found is set aside (an unknown key taken out, a wrong value
/// given its default) and the rest decoded again.
fn decode(
    mut merged: toml::Value,
    defaults: &toml::Value,
    set_by: &BTreeMap<String, String>,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    while problems.len() < PROBLEMS_SAID {
        let error = match serde_path_to_error::deserialize::<_, Config>(merged.clone()) {
            Ok(config) if problems.is_empty() => return Ok(config),
            Ok(_) => break,
            Err(error) => error,
        };
        let path = error.path().to_string();
        let message = error.inner().message().to_owned();
        let unknown = unknown_field(&message);
        problems.push(match unknown {
            Some(key) => unknown_key(&path, key, &message, defaults),
            None => match set_by.get(path.split('[').next().unwrap_or(&path)) {
                Some(variable) => format!("{path} (from {variable}): {message}"),
                None => format!("{path}: {message}"),
            },
        });
        let aside = match unknown {
            Some(key) => remove_path(&mut merged, &within(&path, key)),
            None => reset_path(&mut merged, defaults, &path),
        };
        if !aside {
            break;
        }
    }
    Err(ConfigError::Invalid(match &problems[..] {
        [one] => one.clone(),
        all => format!("{} keys are wrong:\n  {}", all.len(), all.join("\n  ")),
    }))
}

/// The key an "unknown field `KEY`, expected …" message names.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")?
        .split_once('`')
        .map(|(key, _)| key)
}

/// The path of the unknown `key` that `path` (its table's, or its own)
/// leads to.
fn within(path: &str, key: &str) -> String {
    match path {
        "." | "" => key.to_owned(),
        path if path.rsplit('.').next() == Some(key) => path.to_owned(),
        path => format!("{path}.{key}"),
    }
}

/// "[table]: unknown field …", and where the key belongs if another table
/// of the defaults has it (a key put in the wrong table).
fn unknown_key(path: &str, key: &str, message: &str, defaults: &toml::Value) -> String {
    let full = within(path, key);
    let table = match full.rsplit_once('.') {
        Some((table, _)) => format!("[{table}]"),
        None => "the top level".to_owned(),
    };
    let mut leaves = Vec::new();
    collect_leaves(defaults, String::new(), &mut leaves);
    let elsewhere = leaves
        .iter()
        .map(|(leaf, _)| leaf)
        .find(|leaf| leaf.rsplit('.').next() == Some(key) && **leaf != full);
    let parent = match full.rsplit_once('.') {
        Some((table, _)) => table.split('.').try_fold(defaults, |t, k| t.get(k)),
        None => Some(defaults),
    };
    let siblings = parent.and_then(toml::Value::as_table);
    let nearest = siblings
        .into_iter()
        .flat_map(|table| table.keys())
        .map(|sibling| (strsim::levenshtein(key, sibling), sibling))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    match (elsewhere.and_then(|leaf| leaf.rsplit_once('.')), nearest) {
        (_, Some((_, sibling))) => {
            format!("{table}: unknown field `{key}`; did you mean `{sibling}`?")
        }
        (Some((belongs, _)), None) => format!("{table}: {message}; {key} belongs in [{belongs}]"),
        (None, None) => format!("{table}: {message}"),
    }
}

/// Takes the key at `path` out of `value`; whether it was there.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let (parent, key) = match path.rsplit_once('.') {
        Some((parent, key)) => (get_path_mut(value, parent), key),
        None => (Some(value), path),
    };
    parent
        .and_then(toml::Value::as_table_mut)
        .is_some_and(|table| table.remove(key).is_some())
}

/// Gives the key at `path` (up to any `[index]`) its default, or takes it
/// out if it has none; whether anything changed.
fn reset_path(value: &mut toml::Value, defaults: &toml::Value, path: &str) -> bool {
    let path = path.split('[').next().unwrap_or(path);
    let default = path
        .split('.')
        .try_fold(defaults, |table, key| table.get(key))
        .cloned();
    match (default, get_path_mut(value, path)) {
        (Some(default), Some(slot)) if *slot != default => {
            *slot = default;
            true
        }
        (None, Some(_)) => remove_path(value, path),
        _ => false,
    }
}

fn get_path_mut<'a>(value: &'a mut toml::Value, path: &str) -> Option<&'a mut toml::Value> {
    path.split('.')
        .try_fold(value, |table, key| table.get_mut(key))
}

/// Deep merge of tables; `roles` (at the top) is replaced whole.
fn merge(base: &mut toml::Value, overlay: toml::Value, path: &str) {
    match (base, overlay) {
        (toml::Value::Table(base), toml::Value::Table(overlay)) if path != "roles" => {
            for (key, value) in overlay {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value, &child),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Every leaf key of the defaults has a variable; `roles` takes
/// `identity=role,identity=role`; lists take comma-separated values.
/// Sets the keys the environment names over `merged`. A `MINEGATE_*`
/// variable that is no key is a warning (returned), not an error: an
/// orchestrator may set such variables (Kubernetes' service links:
/// `MINEGATE_PORT`, `MINEGATE_SERVICE_HOST`, …). A known key's value that
/// does not parse is an error.
fn apply_environment(
    defaults: &toml::Value,
    merged: &mut toml::Value,
    environment: impl IntoIterator<Item = (String, String)>,
) -> Result<(Vec<String>, BTreeMap<String, String>), ConfigError> {
    let mut leaves = Vec::new();
    collect_leaves(defaults, String::new(), &mut leaves);
    let known: BTreeMap<String, (String, toml::Value)> = leaves
        .into_iter()
        .map(|(path, value)| (Config::variable_for(&path), (path, value)))
        .collect();

    let mut warnings = Vec::new();
    let mut set_by = BTreeMap::new();
    for (variable, raw) in environment {
        if !variable.starts_with("MINEGATE_")
            || variable.starts_with(TEST_VARIABLE_PREFIX)
            || NON_CONFIG_VARIABLES.contains(&variable.as_str())
        {
            continue;
        }
        let Some((path, default)) = known.get(&variable) else {
            warnings.push(unknown_variable(&variable, known.keys()));
            continue;
        };
        let value = parse_like(default, path, &raw).map_err(|reason| ConfigError::Environment {
            variable: variable.clone(),
            reason,
        })?;
        let shown = crate::files::redacted_url(&raw);
        set_by.insert(path.clone(), format!("{variable}={shown:?}"));
        set_path(merged, path, value);
    }
    Ok((warnings, set_by))
}

/// The warning for a `MINEGATE_*` variable that is no key, naming the
/// nearest key's variable when it is a likely typo (at most 2 edits).
fn unknown_variable<'a>(variable: &str, known: impl Iterator<Item = &'a String>) -> String {
    let nearest = known
        .map(|key| (strsim::levenshtein(variable, key), key))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    let hint = match nearest {
        Some((_, key)) => format!("; did you mean {key}?"),
        None => String::new(),
    };
    format!(
        "environment variable {variable} is not a configuration key and is ignored \
         (see minegate.example.toml){hint}"
    )
}

fn collect_leaves(value: &toml::Value, path: String, out: &mut Vec<(String, toml::Value)>) {
    match value {
        toml::Value::Table(table) if path != "roles" => {
            for (key, child) in table {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_leaves(child, child_path, out);
            }
        }
        other => out.push((path, other.clone())),
    }
}

fn parse_like(default: &toml::Value, path: &str, raw: &str) -> Result<toml::Value, String> {
    let raw = raw.trim();
    Ok(match default {
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.parse()
                .map_err(|_| format!("{raw:?} is not a whole number"))?,
        ),
        toml::Value::Boolean(_) => match raw {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(format!("{raw:?} is not true or false")),
        },
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_owned()))
                .collect(),
        ),
        toml::Value::Table(_) if path == "roles" => {
            let mut table = toml::map::Map::new();
            for pair in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (identity, role) = pair
                    .rsplit_once('=')
                    .ok_or_else(|| format!("{pair:?} is not identity=role"))?;
                table.insert(
                    identity.trim().to_owned(),
                    toml::Value::String(role.trim().to_owned()),
                );
            }
            toml::Value::Table(table)
        }
        _ => toml::Value::String(raw.to_owned()),
    })
}

fn set_path(root: &mut toml::Value, path: &str, value: toml::Value) {
    let mut node = root;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let toml::Value::Table(table) = node else {
            return;
        };
        if parts.peek().is_none() {
            table.insert(part.to_owned(), value);
            return;
        }
        node = table
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_file_and_no_environment_gives_the_development_defaults() {
        let config = Config::load(None, env(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.database_url, "sqlite://data/minegate.db");
        assert_eq!(config.roles.get("urn:minegate:energy"), Some(&Role::Energy));
        assert_eq!(config.roles.len(), 4);
    }

    #[test]
    fn every_key_has_an_environment_variable() {
        let config = Config::load(
            None,
            env(&[
                ("MINEGATE_LISTEN", "0.0.0.0:6000"),
                ("MINEGATE_DATABASE_URL", "postgres://localhost/minegate"),
                ("MINEGATE_TLS_CRLS", "a.pem, b.pem"),
                ("MINEGATE_TLS_ALLOW_UNKNOWN_REVOCATION", "true"),
                ("MINEGATE_TLS_HANDSHAKE_TIMEOUT_MS", "2500"),
                ("MINEGATE_LIMITS_MAX_DOCUMENT_BYTES", "1048576"),
                ("MINEGATE_LOG_FORMAT", "json"),
                (
                    "MINEGATE_ROLES",
                    "urn:x:registry=authority,CN-only=operator",
                ),
                ("MINEGATE_TEST_POSTGRES_URL", "ignored"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(config.database_url, "postgres://localhost/minegate");
        assert_eq!(
            config.tls.crls,
            vec![PathBuf::from("a.pem"), PathBuf::from("b.pem")]
        );
        assert!(config.tls.allow_unknown_revocation);
        assert_eq!(config.tls.handshake_timeout_ms, 2500);
        assert_eq!(config.limits.max_document_bytes, 1_048_576);
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(
            config.roles,
            BTreeMap::from([
                ("CN-only".to_owned(), Role::Operator),
                ("urn:x:registry".to_owned(), Role::Authority),
            ])
        );
    }

    #[test]
    fn a_file_roles_table_replaces_the_development_identities() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minegate.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\n[tls]\nhandshake_timeout_ms = 500\n[roles]\n\"urn:kz:energy\" = \"energy\"\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7000");
        assert_eq!(config.tls.handshake_timeout_ms, 500);
        // Untouched keys keep their defaults.
        assert_eq!(config.tls.ca_bundle, PathBuf::from("certs/dev/ca.pem"));
        assert_eq!(
            config.roles,
            BTreeMap::from([("urn:kz:energy".to_owned(), Role::Energy)])
        );
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minegate.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:7000\"\n").unwrap();
        let config =
            Config::load(Some(&path), env(&[("MINEGATE_LISTEN", "127.0.0.1:7001")])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:7001");
    }

    #[test]
    fn a_variable_that_is_no_key_is_a_warning_naming_the_nearest() {
        let config = Config::load(
            None,
            env(&[
                ("MINEGATE_LISTN", "127.0.0.1:1"),
                ("MINEGATE_PORT", "tcp://10.96.0.12:50051"),
            ]),
        )
        .unwrap();
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(
            config.warnings,
            [
                "environment variable MINEGATE_LISTN is not a configuration key and is ignored \
                 (see minegate.example.toml); did you mean MINEGATE_LISTEN?",
                "environment variable MINEGATE_PORT is not a configuration key and is ignored \
                 (see minegate.example.toml)",
            ]
        );
    }

    #[test]
    fn mistakes_are_named() {
        let err =
            Config::load(None, env(&[("MINEGATE_TLS_HANDSHAKE_TIMEOUT_MS", "soon")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable MINEGATE_TLS_HANDSHAKE_TIMEOUT_MS: \"soon\" is not a whole number"
        );
        let err = Config::load(None, env(&[("MINEGATE_ROLES", "urn:a=janitor")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: roles.urn:a: unknown variant `janitor`, expected one of `authority`, \
             `energy`, `finance`, `operator`"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minegate.toml");
        std::fs::write(&path, "[limits]\nmax_mesage_bytes = 10\n").unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: [limits]: unknown field `max_mesage_bytes`; did you mean `max_message_bytes`?"
        );
    }

    #[test]
    fn a_wrong_value_from_the_environment_names_its_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minegate.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:50051\"\n").unwrap();
        let err = Config::load(Some(&path), env(&[("MINEGATE_LISTEN", "bad")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: listen (from MINEGATE_LISTEN=\"bad\"): invalid socket address syntax"
        );
    }

    #[test]
    fn every_wrong_key_is_named_with_its_table_not_only_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("minegate.toml");
        let text = "listen = 5\nmax_in_flight = 8\n\
                    [tls]\ncrls = [1]\n\
                    [client]\nservr = \"https://gw:50051\"\nzzz = 1\n\
                    [limits]\nrequest_timeout_ms = \"soon\"\n";
        std::fs::write(&path, text).unwrap();
        let err = Config::load(Some(&path), env(&[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: 6 keys are wrong:\n  \
             [client]: unknown field `servr`; did you mean `server`?\n  \
             [client]: unknown field `zzz`, expected one of `server`, `ca`, `cert`, `key`, \
             `tls_domain`\n  \
             limits.request_timeout_ms: invalid type: string \"soon\", expected u64\n  \
             listen: invalid type: integer `5`, expected socket address\n  \
             the top level: unknown field `max_in_flight`, expected one of `listen`, \
             `database_url`, `tls`, `roles`, `limits`, `log`, `signing`, `metrics`, `client`; \
             max_in_flight belongs in [limits]\n  \
             tls.crls[0]: invalid type: integer `1`, expected path string"
        );
    }

    #[test]
    fn the_connection_and_memory_limits_parse_and_refuse_what_cannot_work() {
        let config = Config::load(
            None,
            env(&[
                ("MINEGATE_LIMITS_HTTP2_STREAM_WINDOW_BYTES", "65536"),
                ("MINEGATE_LIMITS_HTTP2_CONNECTION_WINDOW_BYTES", "131072"),
                ("MINEGATE_LIMITS_HTTP2_MAX_FRAME_BYTES", "32768"),
                ("MINEGATE_LIMITS_HTTP2_KEEPALIVE_INTERVAL_MS", "5000"),
                ("MINEGATE_LIMITS_HTTP2_KEEPALIVE_TIMEOUT_MS", "1000"),
                ("MINEGATE_LIMITS_MAX_CONNECTIONS", "100"),
                ("MINEGATE_LIMITS_MAX_CONNECTIONS_PER_IDENTITY", "10"),
                ("MINEGATE_LIMITS_IDLE_CONNECTION_TIMEOUT_MS", "7000"),
                ("MINEGATE_LIMITS_UPLOAD_BYTES_IN_FLIGHT", "1048576"),
            ]),
        )
        .unwrap();
        let limits = &config.limits;
        assert_eq!(
            (
                limits.http2_stream_window_bytes,
                limits.http2_connection_window_bytes,
                limits.http2_max_frame_bytes
            ),
            (65_536, 131_072, 32_768)
        );
        assert_eq!(
            (
                limits.http2_keepalive_interval_ms,
                limits.http2_keepalive_timeout_ms
            ),
            (5_000, 1_000)
        );
        assert_eq!(
            (limits.max_connections, limits.max_connections_per_identity),
            (100, 10)
        );
        assert_eq!(limits.idle_connection_timeout_ms, 7_000);
        assert_eq!(limits.upload_bytes_in_flight, 1_048_576);

        let refused = |variable: &str, value: &str| {
            Config::load(None, env(&[(variable, value)]))
                .unwrap_err()
                .to_string()
        };
        for key in [
            "http2_stream_window_bytes",
            "http2_connection_window_bytes",
            "http2_keepalive_interval_ms",
            "http2_keepalive_timeout_ms",
            "max_connections",
            "max_connections_per_identity",
            "idle_connection_timeout_ms",
            "upload_bytes_in_flight",
        ] {
            assert_eq!(
                refused(&Config::variable_for(&format!("limits.{key}")), "0"),
                format!("config: limits.{key} must be greater than 0")
            );
        }
        assert_eq!(
            refused("MINEGATE_LIMITS_HTTP2_MAX_FRAME_BYTES", "16383"),
            "config: limits.http2_max_frame_bytes must be from 16384 to 16777215 (HTTP/2), got 16383"
        );
        assert_eq!(
            refused("MINEGATE_LIMITS_HTTP2_STREAM_WINDOW_BYTES", "2147483648"),
            "config: limits.http2_stream_window_bytes must be at most 2147483647 (HTTP/2), got 2147483648"
        );
    }

    #[test]
    fn the_example_file_in_the_repository_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("minegate.example.toml");
        let config = Config::load(Some(&path), env(&[])).unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:50051");
        assert_eq!(config.tls.dev_pki_dir, PathBuf::new());
        assert_eq!(config.roles.len(), 4);
    }
}
