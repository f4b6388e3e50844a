//! The `minegate` command line: one file per subcommand.

mod backup;
pub mod bench;
mod certs;
mod check_config;
pub mod compliance;
pub mod demo;
pub mod energy;
pub mod finance;
mod health;
mod ledger;
mod serve;
mod signing;
pub mod submit;
pub mod witness;

use std::{io::IsTerminal, path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::{
    client::ClientTls,
    config::{ClientConfig, Config, LogFormat},
    tls::Role,
};

#[derive(Debug, Parser)]
#[command(
    name = "minegate",
    version,
    about = "gRPC gateway for the digital mining notification regime (order No. 146/НҚ)",
    long_about = "minegate carries the digital mining notification regime between the \
authorized body, the energy ministry and the finance ministry over mutual TLS. \
`minegate serve` with no configuration runs a development gateway on 127.0.0.1:50051 \
with SQLite at data/minegate.db and a development PKI in certs/dev/."
)]
pub struct Cli {
    /// Configuration file (TOML). Without it, ./minegate.toml is read if present,
    /// else the built-in development defaults. Every key can be overridden by a
    /// MINEGATE_* environment variable (see minegate.example.toml).
    #[arg(long, global = true, env = "MINEGATE_CONFIG")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

impl Command {
    /// A command that calls a gateway as one of its clients.
    fn is_client(&self) -> bool {
        matches!(
            self,
            Command::Health(_)
                | Command::Submit(_)
                | Command::Register(_)
                | Command::Filing(_)
                | Command::Energy(_)
                | Command::Finance(_)
                | Command::Compliance(_)
                | Command::Status(_)
        )
    }

    /// A command that makes what it needs itself (a PKI, a gateway of its own).
    fn reads_no_config(&self) -> bool {
        matches!(
            self,
            Command::Certs(_) | Command::Demo(_) | Command::Bench(_)
        )
    }
}

impl Cli {
    /// Whether the process should die quietly of SIGPIPE, as Unix tools do,
    /// when its output goes to a pipe closed early (`minegate health | head
    /// -1`), rather than panic in `println!`: the commands that print what
    /// they read, and `backup` and `restore` (which print last, once the copy
    /// has its name). Not `serve`, nor `demo` and `bench`, which run
    /// processes of their own.
    pub fn ends_on_a_closed_pipe(&self) -> bool {
        self.command.is_client()
            || matches!(
                self.command,
                Command::Certs(_)
                    | Command::Ledger(_)
                    | Command::Signing(_)
                    | Command::CheckConfig
                    | Command::Backup(_)
                    | Command::Restore(_)
            )
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway until SIGINT or SIGTERM, then drain and exit 0.
    Serve(serve::ServeArgs),
    /// Development PKI: make it, issue more client certificates, revoke.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Ask a gateway's health service over mutual TLS. Exit 0: serving; 1: a
    /// service is not; 2: serving, but a certificate expires soon; 3: the
    /// gateway could not be reached or did not answer within --timeout; 4:
    /// the fault is this side's (configuration, own certificate, key, CA
    /// file or server address).
    Health(health::HealthArgs),
    /// Authority: submit a filing (proto3 JSON) with its documents.
    Submit(submit::SubmitArgs),
    /// Authority: the register of notified organisations.
    #[command(subcommand)]
    Register(submit::RegisterCommand),
    /// Authority: one filing with its receipt.
    #[command(subcommand)]
    Filing(submit::FilingCommand),
    /// Energy ministry: receive the §6 extracts.
    #[command(subcommand)]
    Energy(energy::EnergyCommand),
    /// Finance ministry: pull form 402.
    #[command(subcommand)]
    Finance(finance::FinanceCommand),
    /// Operators: obligations and findings.
    #[command(subcommand)]
    Compliance(compliance::ComplianceCommand),
    /// Operators: health, extracts not yet delivered, overdue obligations.
    Status(compliance::StatusArgs),
    /// Play one quarter of the regime end to end in a temporary folder.
    Demo(demo::DemoArgs),
    /// Measure durable submission, fan-out and form 402 against a baseline (BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// The tamper-evident ledger, read straight from the configured database.
    #[command(subcommand)]
    Ledger(ledger::LedgerCommand),
    /// The gateway's signing keys: rotate, list the key history.
    #[command(subcommand)]
    Signing(signing::SigningCommand),
    /// Copy the SQLite database while the gateway serves, verify the copy's
    /// ledger, and say what it holds. PostgreSQL: pg_dump (docs/operations.md).
    Backup(backup::BackupArgs),
    /// Put a backup in place of the configured SQLite database, which must
    /// not exist, after verifying its ledger.
    Restore(backup::RestoreArgs),
    /// Check the configuration against this binary without starting: it
    /// loads, the files it names are readable, the database is reachable and
    /// its schema is this binary's, older (it will be migrated) or newer (it
    /// would be refused). Exit 0: it can start; 1: the configuration or a
    /// file is wrong; 2: the database cannot be read; 3: the database is
    /// newer than this binary.
    CheckConfig,
}

/// How a client command reaches a gateway: each flag over the
/// configuration's `[client]` section (`--config`, else ./minegate.toml;
/// its variables `MINEGATE_CLIENT_*`), over the built-in defaults.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The gateway, https://HOST:PORT [default: client.server, https://127.0.0.1:50051].
    #[arg(long)]
    pub server: Option<String>,
    /// CA bundle that issued the gateway's certificate [default: client.ca, certs/dev/ca.pem].
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// This agency's client certificate [default: client.cert, else certs/dev/ROLE.pem for the command's role].
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// This agency's private key [default: client.key, else certs/dev/ROLE.key].
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Name to check the gateway's certificate against, if not the server's host [default: client.tls_domain].
    #[arg(long)]
    pub tls_domain: Option<String>,
}

/// The `[client]` section of the configuration this process loaded, for
/// [`ClientArgs::tls`]; set once in [`run`] before a client command starts.
static CLIENT_CONFIG: std::sync::OnceLock<ClientConfig> = std::sync::OnceLock::new();

impl ClientArgs {
    /// The connection settings: the flags, else the configuration's
    /// `[client]` section, with the dev certificate of `role` by default.
    pub fn tls(&self, role: Role) -> ClientTls {
        let file = CLIENT_CONFIG.get().cloned().unwrap_or_default();
        let dev = PathBuf::from("certs/dev");
        let or_dev = |path: PathBuf, ext: &str| {
            if path.as_os_str().is_empty() {
                dev.join(format!("{role}.{ext}"))
            } else {
                path
            }
        };
        ClientTls {
            server: self.server.clone().unwrap_or(file.server),
            ca: self.ca.clone().unwrap_or(file.ca),
            cert: self
                .cert
                .clone()
                .unwrap_or_else(|| or_dev(file.cert, "pem")),
            key: self.key.clone().unwrap_or_else(|| or_dev(file.key, "key")),
            domain: self
                .tls_domain
                .clone()
                .or((!file.tls_domain.is_empty()).then_some(file.tls_domain)),
        }
    }
}

/// A call the gateway refused: its code and its message.
#[derive(Debug, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct CallError {
    pub code: tonic::Code,
    pub message: String,
}

impl From<tonic::Status> for CallError {
    fn from(status: tonic::Status) -> CallError {
        CallError {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// Every item of a paged listing: `fetch(page_token)` answers one page's
/// items and the next token (empty on the last page).
pub async fn all_pages<T, F, Fut>(mut fetch: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let (mut all, mut token) = (Vec::new(), String::new());
    loop {
        let (items, next) = fetch(token).await.map_err(CallError::from)?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
}

/// Parses the command line, runs the command, and turns any error into a
/// message on stderr and exit code 1.
pub fn main() -> ExitCode {
    run_main(Cli::parse())
}

/// As [`main`], with the command line parsed.
pub fn run_main(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", causes_once(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each said once: a cause whose text the error
/// before it already shows (many errors print their source) is left out.
pub fn causes_once(error: &anyhow::Error) -> String {
    let mut said = String::new();
    let mut previous = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !previous.contains(&text) {
            if !said.is_empty() {
                said.push_str(": ");
            }
            said.push_str(&text);
        }
        previous = text;
    }
    said
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.command.is_client() {
        let config = match load_config(cli.config.as_deref()) {
            Ok(config) => config,
            // health's exit code tells this side's fault from the gateway's.
            Err(error) if matches!(cli.command, Command::Health(_)) => {
                eprintln!("error: {}", causes_once(&error));
                return Ok(ExitCode::from(health::LOCAL_FAULT));
            }
            Err(error) => return Err(error),
        };
        init_tracing(LogFormat::Text, "warn");
        log_config_warnings(&config);
        let _ = CLIENT_CONFIG.set(config.client);
    } else if cli.config.is_some() && cli.command.reads_no_config() {
        eprintln!("warning: this command reads no configuration; --config is not used");
    }
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(cli.config.as_deref())?;
            init_tracing(config.log.format, &config.log.filter);
            log_config_warnings(&config);
            serve::run(config, args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            init_tracing(LogFormat::Text, "error");
            bench::run(args).await
        }
        Command::Certs(command) => {
            init_tracing(LogFormat::Text, "warn");
            certs::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => {
            init_tracing(LogFormat::Text, "warn");
            health::run(args).await
        }
        Command::Submit(args) => {
            init_tracing(LogFormat::Text, "warn");
            submit::run(args).await
        }
        Command::Register(command) => {
            init_tracing(LogFormat::Text, "warn");
            submit::run_register(command).await
        }
        Command::Filing(command) => {
            init_tracing(LogFormat::Text, "warn");
            submit::run_filing(command).await
        }
        Command::Energy(command) => {
            init_tracing(LogFormat::Text, "warn");
            energy::run(command).await
        }
        Command::Finance(command) => {
            init_tracing(LogFormat::Text, "warn");
            finance::run(command).await
        }
        Command::Compliance(command) => {
            init_tracing(LogFormat::Text, "warn");
            compliance::run(command).await
        }
        Command::Status(args) => {
            init_tracing(LogFormat::Text, "warn");
            compliance::status(args).await
        }
        Command::Demo(args) => {
            init_tracing(LogFormat::Text, "error");
            demo::run(args).await
        }
        Command::Ledger(command) => {
            let config = load_config(cli.config.as_deref())?;
            init_tracing(LogFormat::Text, "warn");
            log_config_warnings(&config);
            ledger::run(command, &config).await
        }
        Command::Signing(command) => {
            let config = load_config(cli.config.as_deref())?;
            init_tracing(LogFormat::Text, "warn");
            log_config_warnings(&config);
            signing::run(command, &config).await
        }
        Command::Backup(args) => {
            let config = load_config(cli.config.as_deref())?;
            init_tracing(LogFormat::Text, "warn");
            log_config_warnings(&config);
            backup::backup(args, &config).await
        }
        Command::Restore(args) => {
            let config = load_config(cli.config.as_deref())?;
            init_tracing(LogFormat::Text, "warn");
            log_config_warnings(&config);
            backup::restore(args, &config).await
        }
        Command::CheckConfig => {
            init_tracing(LogFormat::Text, "error");
            Ok(check_config::run(cli.config.as_deref()).await)
        }
    }
}

/// The configuration from `--config`, else ./minegate.toml if present, else
/// defaults; then the environment.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(Config::load(config_file(path), std::env::vars())?)
}

/// The configuration file read: `path`, else ./minegate.toml if present.
fn config_file(path: Option<&std::path::Path>) -> Option<&std::path::Path> {
    let local = std::path::Path::new("minegate.toml");
    path.or_else(|| local.exists().then_some(local))
}

/// Logs what loading the configuration warned about; logging has started.
fn log_config_warnings(config: &Config) {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
}

fn init_tracing(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
