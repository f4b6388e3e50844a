//! The machine's PostgreSQL cluster, stopped and started by the tests that
//! take the database away (`pg_ctlcluster`): the cluster from
//! MINEGATE_TEST_PG_CLUSTER ("VERSION NAME"), by default "<the newest in
//! /etc/postgresql> main", on the port of MINEGATE_TEST_POSTGRES_URL.
//! Such a test must be the only one in its binary: cargo runs test binaries
//! one after another.

use std::{
    process::Command,
    time::{Duration, Instant},
};

/// `pg_ctlcluster VERSION NAME ACTION`; the cluster is started again when
/// this is dropped, whatever happened in the test.
pub struct Cluster {
    version: String,
    name: String,
    port: String,
}

impl Cluster {
    pub fn from_environment() -> Cluster {
        let spec = std::env::var("MINEGATE_TEST_PG_CLUSTER").unwrap_or_else(|_| {
            let version = std::fs::read_dir("/etc/postgresql")
                .expect("/etc/postgresql (set MINEGATE_TEST_PG_CLUSTER=\"VERSION NAME\")")
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .max()
                .expect("a PostgreSQL version folder");
            format!("{version} main")
        });
        let (version, name) = spec.split_once(' ').expect("\"VERSION NAME\"");
        let url = std::env::var("MINEGATE_TEST_POSTGRES_URL").unwrap_or_default();
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .filter(|port| port.parse::<u16>().is_ok())
            .unwrap_or("5432");
        Cluster {
            version: version.to_owned(),
            name: name.to_owned(),
            port: port.to_owned(),
        }
    }

    pub fn run(&self, action: &str) {
        let mut command = Command::new("pg_ctlcluster");
        command.args([
            "--skip-systemctl-redirect",
            &self.version,
            &self.name,
            action,
        ]);
        if matches!(action, "stop" | "restart") {
            command.args(["-m", "fast"]);
        }
        let status = command.status().expect("pg_ctlcluster");
        assert!(status.success(), "pg_ctlcluster {action}: {status}");
    }

    pub fn ready(&self) -> bool {
        Command::new("pg_isready")
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port])
            .status()
            .is_ok_and(|s| s.success())
    }

    pub fn start_and_wait(&self) {
        if !self.ready() {
            let _ = Command::new("pg_ctlcluster")
                .args([
                    "--skip-systemctl-redirect",
                    &self.version,
                    &self.name,
                    "start",
                ])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.ready() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come back");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.start_and_wait();
    }
}
