//! The gateway as a child process (`minegate serve`), for the tests that
//! signal or kill it. Its PKI, signing key and log are in the test's folder;
//! it listens on a port chosen once, so a restart keeps the address.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use minegate::client::ClientTls;
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

pub struct ChildGateway {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub database_url: String,
    pub env: Vec<(String, String)>,
    /// Each start writes its log to `dir/gateway-N.log`.
    pub starts: u32,
    /// The umask it runs under (`022`), when not the test's own.
    pub umask: Option<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl ChildGateway {
    /// Starts `minegate serve` on `database_url` with the PKI in `dir/pki`,
    /// extra `MINEGATE_*` variables in `env`, and waits until it serves.
    pub async fn start(dir: &Path, database_url: &str, env: &[(&str, &str)]) -> ChildGateway {
        Self::start_under_umask(dir, database_url, env, None).await
    }

    /// [`ChildGateway::start`] with the process's umask set to `umask`
    /// (octal, as sh's `umask` takes it) before it starts.
    pub async fn start_under_umask(
        dir: &Path,
        database_url: &str,
        env: &[(&str, &str)],
        umask: Option<&str>,
    ) -> ChildGateway {
        let port = free_port();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let umask = umask.map(str::to_owned);
        let child = launch(dir, port, database_url, &env, umask.as_deref(), 1);
        let mut gateway = ChildGateway {
            child,
            port,
            dir: dir.to_owned(),
            database_url: database_url.to_owned(),
            env,
            starts: 1,
            umask,
        };
        gateway.wait_serving().await;
        gateway
    }

    /// The log of the `n`-th start (1-based).
    pub fn log(&self, n: u32) -> PathBuf {
        log_path(&self.dir, n)
    }

    pub fn tls(&self, name: &str) -> ClientTls {
        let pki = self.dir.join("pki");
        ClientTls {
            server: format!("https://127.0.0.1:{}", self.port),
            ca: pki.join("ca.pem"),
            cert: pki.join(format!("{name}.pem")),
            key: pki.join(format!("{name}.key")),
            domain: Some("localhost".into()),
        }
    }

    pub async fn channel(&self, name: &str) -> Channel {
        self.tls(name).connect().await.unwrap()
    }

    async fn wait_serving(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the gateway exited with {status}: {}",
                    std::fs::read_to_string(self.log(self.starts)).unwrap_or_default()
                );
            }
            if let Ok(channel) = self.tls("operator").connect().await
                && let Ok(answer) = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                && answer.into_inner().status() == ServingStatus::Serving
            {
                return;
            }
            assert!(Instant::now() < deadline, "the gateway never came up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Sends `signal` (`TERM`, `HUP`, …) with kill(1).
    pub async fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGKILL: no drain, no clean-up; then waits for the process to go.
    pub async fn kill9(&mut self) {
        self.signal("KILL").await;
        let _ = self.child.wait().await;
    }

    /// Waits (up to 30 s) for the process to exit; its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the gateway exits")
            .unwrap()
            .code()
    }

    /// Starts the gateway again on the same folder, database and port.
    pub async fn restart(&mut self) {
        self.starts += 1;
        self.child = launch(
            &self.dir,
            self.port,
            &self.database_url,
            &self.env,
            self.umask.as_deref(),
            self.starts,
        );
        self.wait_serving().await;
    }
}

/// A command running the gateway's binary, through `sh -c 'umask U; exec …'`
/// when a umask is asked for (the process's umask is inherited by what it
/// runs, and the tests' own is whatever the machine's is).
pub fn under_umask(umask: Option<&str>) -> Command {
    let binary = env!("CARGO_BIN_EXE_minegate");
    match umask {
        None => Command::new(binary),
        Some(umask) => {
            let mut command = Command::new("sh");
            command
                .arg("-c")
                .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
                .arg(binary);
            command
        }
    }
}

fn log_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("gateway-{n}.log"))
}

fn launch(
    dir: &Path,
    port: u16,
    database_url: &str,
    env: &[(String, String)],
    umask: Option<&str>,
    n: u32,
) -> Child {
    let pki = dir.join("pki");
    let log = std::fs::File::create(log_path(dir, n)).unwrap();
    let mut command = under_umask(umask);
    command
        .arg("serve")
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(minegate::config::child_gateway_environment(
            port,
            database_url,
            &pki,
            &dir.join("signing.key"),
        ));
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// The folder of replica `k` of gateways sharing one database, made:
/// `dir/rK` (its logs go there) with `dir/pki`, and replica 0's signing key
/// (so start replica 0 first).
pub fn replica_home(dir: &Path, k: usize) -> PathBuf {
    let home = dir.join(format!("r{k}"));
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::symlink(dir.join("pki"), home.join("pki")).unwrap();
    if k > 0 {
        std::fs::copy(dir.join("r0/signing.key"), home.join("signing.key")).unwrap();
    }
    home
}
