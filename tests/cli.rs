//! The `minegate` binary as a newcomer runs it: `serve` with no configuration
//! in an empty folder, `health`, `certs`, and clear errors.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_minegate");

fn minegate(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("run minegate")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_for_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `minegate health` against `server` until it succeeds (its output), while
/// the gateway keeps running; at most 30 s.
fn until_healthy(dir: &Path, server: &str, serving: &mut Serving) -> Output {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = minegate(dir, &["health", "--server", server]);
        if output.status.success() {
            return output;
        }
        assert!(
            Instant::now() < deadline,
            "no healthy gateway: {}",
            stderr(&output)
        );
        assert!(serving.0.try_wait().unwrap().is_none(), "gateway exited");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_with_no_config_makes_dev_certs_and_a_database_and_answers_health() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("https://127.0.0.1:{port}");
    let mut serving = Serving(
        Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env("MINEGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("MINEGATE_METRICS_LISTEN", "127.0.0.1:0")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let health = until_healthy(dir.path(), &server, &mut serving);
    assert_eq!(
        stdout(&health),
        "(gateway)                                     SERVING\n\
         kz.digitalmining.v1.FilingService             SERVING\n\
         kz.digitalmining.v1.EnergyExtractService      SERVING\n\
         kz.digitalmining.v1.FinanceService            SERVING\n\
         kz.digitalmining.v1.ComplianceService         SERVING\n\
         minegate.certificates                         SERVING\n"
    );
    for file in [
        "certs/dev/ca.pem",
        "certs/dev/crl.pem",
        "certs/dev/server.pem",
        "certs/dev/authority.key",
        "certs/dev/operator.pem",
        "data/minegate.db",
    ] {
        assert!(dir.path().join(file).exists(), "{file} missing");
    }
    // The PKI's folders are the owner's alone: a CA bundle or CRL others
    // could replace would be reloaded (found from outside: 0777 under umask 000).
    for folder in ["certs", "certs/dev"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(folder))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o700, "{folder}");
    }

    // From another folder, with the gateway and this agency's certificate
    // in a configuration's [client] section: --config is what it reads.
    let elsewhere = tempfile::tempdir().unwrap();
    let pki = dir.path().join("certs/dev");
    std::fs::write(
        elsewhere.path().join("client.toml"),
        format!(
            "[client]\nserver = \"{server}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            pki.join("ca.pem").display(),
            pki.join("operator.pem").display(),
            pki.join("operator.key").display()
        ),
    )
    .unwrap();
    let from_file = minegate(elsewhere.path(), &["--config", "client.toml", "health"]);
    assert_eq!(from_file.status.code(), Some(0), "{}", stderr(&from_file));
    assert_eq!(stdout(&from_file), stdout(&health));
    // Its variable wins over the file, and the flag over both.
    let wrong = "https://127.0.0.1:1";
    let env_wins = Command::new(BIN)
        .args(["--config", "client.toml", "health"])
        .current_dir(elsewhere.path())
        .env("MINEGATE_CLIENT_SERVER", wrong)
        .output()
        .unwrap();
    assert_eq!(env_wins.status.code(), Some(3));
    assert!(stderr(&env_wins).contains(wrong), "{}", stderr(&env_wins));
    let flag_wins = Command::new(BIN)
        .args(["--config", "client.toml", "health", "--server", &server])
        .current_dir(elsewhere.path())
        .env("MINEGATE_CLIENT_SERVER", wrong)
        .output()
        .unwrap();
    assert_eq!(flag_wins.status.code(), Some(0), "{}", stderr(&flag_wins));

    // A certificate the gateway refuses (the CA's own, not a client's):
    // exit 3 with the reason, every time (found from outside: now and then
    // it died of SIGPIPE, silently, writing to the socket the gateway had
    // closed).
    for _ in 0..10 {
        let refused = minegate(
            dir.path(),
            &[
                "health",
                "--server",
                &server,
                "--cert",
                "certs/dev/ca.pem",
                "--key",
                "certs/dev/ca.key",
            ],
        );
        assert_eq!(refused.status.code(), Some(3), "{}", stderr(&refused));
        assert!(
            stderr(&refused).starts_with("error: "),
            "{}",
            stderr(&refused)
        );
    }

    // Its output into a pipe closed at once (`minegate health | head -0`):
    // it ends of SIGPIPE, as Unix tools do, with no panic.
    let mut piped = Command::new(BIN)
        .args(["health", "--server", &server])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(piped.stdout.take());
    let ended = piped.wait_with_output().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&ended.status),
        Some(13)
    );
    assert_eq!(stderr(&ended), "");

    signal(&serving.0, "TERM");
    let status = wait_for_exit(&mut serving.0);
    assert_eq!(status.code(), Some(0));

    // No gateway there: exit 3, and each cause of the error said once.
    let unreachable = minegate(dir.path(), &["health", "--server", &server]);
    assert_eq!(unreachable.status.code(), Some(3));
    assert_eq!(
        stderr(&unreachable),
        format!(
            "error: cannot connect to {server}: transport error: tcp connect error: \
             Connection refused (os error 111)\n"
        )
    );

    // This side's own faults, found before anything is asked: exit 4, so a
    // monitor tells them from a gateway down (3) or not serving (1).
    let health = |dir: &Path, args: &[&str]| {
        let output = minegate(dir, &[args, &["health", "--server", &server]].concat());
        (output.status.code(), stderr(&output))
    };
    assert_eq!(
        health(elsewhere.path(), &["--config", "missing.toml"]),
        (
            Some(4),
            "error: cannot read config file missing.toml: No such file or directory (os error 2)\n"
                .to_owned()
        )
    );
    std::fs::write(
        elsewhere.path().join("typo.toml"),
        "[client]\nservr = \"x\"\n",
    )
    .unwrap();
    assert_eq!(
        health(elsewhere.path(), &["--config", "typo.toml"]),
        (
            Some(4),
            "error: config: [client]: unknown field `servr`; did you mean `server`?\n".to_owned()
        )
    );
    // A CA file with no certificate, and addresses that are no gateway's.
    std::fs::write(elsewhere.path().join("garbage.pem"), "not a certificate").unwrap();
    let garbage = elsewhere.path().join("garbage.pem");
    let output = minegate(
        dir.path(),
        &[
            "health",
            "--server",
            &server,
            "--ca",
            garbage.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(
        stderr(&output),
        format!("error: {}: no PEM certificate in it\n", garbage.display())
    );
    for (address, reason) in [
        ("notaurl", "not a URL; expected https://HOST:PORT"),
        (
            "http://127.0.0.1:50051",
            "the gateway speaks only TLS; expected https://HOST:PORT",
        ),
        (
            "https://127.0.0.1:99999",
            "the port is not a number from 1 to 65535",
        ),
        (
            "https://127.0.0.1:0",
            "the port is not a number from 1 to 65535",
        ),
    ] {
        let output = minegate(dir.path(), &["health", "--server", address]);
        assert_eq!(output.status.code(), Some(4), "{address}");
        assert_eq!(
            stderr(&output),
            format!("error: the server address {address:?}: {reason}\n")
        );
    }
    // A listener that never speaks: exit 3 once --timeout has passed.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_server = format!("https://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let output = minegate(
        dir.path(),
        &["health", "--server", &silent_server, "--timeout", "1"],
    );
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(
        stderr(&output),
        format!("error: {silent_server} did not answer within 1 s\n")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let output = minegate(
        dir.path(),
        &["status", "--server", &silent_server, "--timeout", "1"],
    );
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        format!("error: {silent_server} did not answer within 1 s\n")
    );
    drop(silent);

    let output = minegate(
        dir.path(),
        &["health", "--server", &server, "--cert", "nothere.pem"],
    );
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(
        stderr(&output),
        "error: cannot read nothere.pem: No such file or directory (os error 2)\n"
    );
    let output = minegate(
        dir.path(),
        &[
            "health",
            "--server",
            &server,
            "--cert",
            "certs/dev/energy.pem",
            "--key",
            "certs/dev/operator.key",
        ],
    );
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(
        stderr(&output),
        format!(
            "error: cannot set up a connection to {server}: transport error: keys may not be \
             consistent: KeyMismatch\n"
        )
    );
}

#[test]
fn sigint_also_stops_the_gateway_with_exit_code_0() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut serving = Serving(
        Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env("MINEGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("MINEGATE_METRICS_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gateway never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(&serving.0, "INT");
    assert_eq!(wait_for_exit(&mut serving.0).code(), Some(0));
}

#[test]
fn certs_init_revoke_and_issue_say_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let init = minegate(dir.path(), &["certs", "init", "--dir", "pki"]);
    assert!(init.status.success(), "{}", stderr(&init));
    let lines: Vec<String> = stdout(&init).lines().map(str::to_owned).collect();
    assert_eq!(lines[0], "development PKI written to pki:");
    assert_eq!(lines.len(), 15);

    let again = minegate(dir.path(), &["certs", "init", "--dir", "pki"]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again),
        "error: pki/ca.pem already exists; pass --force to replace the whole PKI\n"
    );

    let revoke = minegate(dir.path(), &["certs", "revoke", "finance", "--dir", "pki"]);
    assert!(revoke.status.success(), "{}", stderr(&revoke));
    let text = stdout(&revoke);
    assert!(text.starts_with("revoked finance (serial "), "{text}");
    assert!(
        text.ends_with(
            "); pki/crl.pem is now CRL number 2; a running gateway reloads it by itself (at once on SIGHUP)\n"
        ),
        "{text}"
    );
    let twice = minegate(dir.path(), &["certs", "revoke", "finance", "--dir", "pki"]);
    assert!(
        stdout(&twice).ends_with("was already revoked; CRL number 2 unchanged\n"),
        "{}",
        stdout(&twice)
    );

    let issue = minegate(
        dir.path(),
        &[
            "certs",
            "issue",
            "energy-backup",
            "--identity",
            "urn:kz:energy:backup",
            "--dir",
            "pki",
        ],
    );
    assert!(issue.status.success(), "{}", stderr(&issue));
    assert_eq!(
        stdout(&issue),
        "wrote pki/energy-backup.key\nwrote pki/energy-backup.pem\n\
         map the identity to a role in the config: [roles] \"urn:kz:energy:backup\" = \"ROLE\"\n"
    );
}

/// What Kubernetes puts in every pod's environment for a Service named
/// `minegate` in the namespace (service links), with a named port `grpc`.
const KUBERNETES_SERVICE_LINKS: [(&str, &str); 8] = [
    ("MINEGATE_PORT", "tcp://10.96.0.12:50051"),
    ("MINEGATE_PORT_50051_TCP", "tcp://10.96.0.12:50051"),
    ("MINEGATE_PORT_50051_TCP_ADDR", "10.96.0.12"),
    ("MINEGATE_PORT_50051_TCP_PORT", "50051"),
    ("MINEGATE_PORT_50051_TCP_PROTO", "tcp"),
    ("MINEGATE_SERVICE_HOST", "10.96.0.12"),
    ("MINEGATE_SERVICE_PORT", "50051"),
    ("MINEGATE_SERVICE_PORT_GRPC", "50051"),
];

#[test]
fn kubernetes_service_variables_are_warned_about_and_serve_starts() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = format!("https://127.0.0.1:{port}");
    let mut serving = Serving(
        Command::new(BIN)
            .arg("serve")
            .current_dir(dir.path())
            .env("MINEGATE_LISTEN", format!("127.0.0.1:{port}"))
            .env("MINEGATE_METRICS_LISTEN", "")
            .envs(KUBERNETES_SERVICE_LINKS)
            .env("MINEGATE_LISTN", "127.0.0.1:1")
            .env("MINEGATE_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    until_healthy(dir.path(), &server, &mut serving);
    signal(&serving.0, "TERM");
    assert_eq!(wait_for_exit(&mut serving.0).code(), Some(0));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut serving.0.stderr.take().unwrap(), &mut log).unwrap();

    // One warning a variable, in the order the environment lists them (not
    // fixed); each a JSON line at WARN.
    let mut warned: Vec<String> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|line| line["level"] == "WARN")
        .map(|line| line["fields"]["message"].as_str().unwrap().to_owned())
        .filter(|message| message.starts_with("environment variable"))
        .collect();
    warned.sort();
    let mut expected: Vec<String> = KUBERNETES_SERVICE_LINKS
        .iter()
        .map(|(variable, _)| {
            format!(
                "environment variable {variable} is not a configuration key and is ignored \
                 (see minegate.example.toml)"
            )
        })
        .collect();
    expected.push(
        "environment variable MINEGATE_LISTN is not a configuration key and is ignored \
         (see minegate.example.toml); did you mean MINEGATE_LISTEN?"
            .to_owned(),
    );
    expected.sort();
    assert_eq!(warned, expected);
}

#[test]
fn a_bad_value_for_a_known_key_stops_serve_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env("MINEGATE_LIMITS_MAX_IN_FLIGHT", "sixteen")
        .envs(KUBERNETES_SERVICE_LINKS)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: environment variable MINEGATE_LIMITS_MAX_IN_FLIGHT: \"sixteen\" is not a whole number\n"
    );
    // Nothing was made.
    assert!(!dir.path().join("certs").exists());
}

#[test]
fn a_config_file_in_the_working_folder_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("minegate.toml"),
        "database_url = \"mysql://db/minegate\"\n",
    )
    .unwrap();
    let output = minegate(dir.path(), &["serve"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).ends_with(
            "error: database_url \"mysql://db/minegate\": expected sqlite://PATH or postgres://…\n"
        ),
        "{}",
        stderr(&output)
    );
}

/// The commands that only read a database refuse one that is not there
/// (found from outside: `ledger verify` at a mistyped path made a new,
/// empty database and said "ledger intact").
#[test]
fn reading_commands_make_no_database_at_a_mistyped_path() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["ledger", "verify"][..],
        &["ledger", "checkpoint"],
        &["signing", "keys"],
    ] {
        let output = Command::new(BIN)
            .args(args)
            .current_dir(dir.path())
            .env("MINEGATE_DATABASE_URL", "sqlite://data/typo.db")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&output),
            "error: database: there is no database at data/typo.db: nothing to read (check \
             database_url); none was made\n",
            "{args:?}"
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
