//! `minegate check-config` as an operator runs it before an upgrade: what
//! it says of each file and of the database, its exit codes, and that it
//! changes nothing. And the migration log lines a start then writes, with
//! each step's version, description and time, on both backends.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_minegate");

/// `minegate ARGS` in `dir` with `env` (and RUST_LOG unset).
fn minegate(dir: &Path, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run minegate")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The environment pointing a configuration at `dir`'s PKI and key, and
/// at `database_url`.
fn environment(dir: &Path, database_url: &str) -> Vec<(&'static str, String)> {
    let pki = dir.join("pki");
    let path = |p: PathBuf| p.display().to_string();
    vec![
        ("MINEGATE_TLS_CA_BUNDLE", path(pki.join("ca.pem"))),
        ("MINEGATE_TLS_CRLS", path(pki.join("crl.pem"))),
        ("MINEGATE_TLS_CERT", path(pki.join("server.pem"))),
        ("MINEGATE_TLS_KEY", path(pki.join("server.key"))),
        ("MINEGATE_TLS_DEV_PKI_DIR", String::new()),
        ("MINEGATE_SIGNING_KEY", path(dir.join("signing.key"))),
        ("MINEGATE_DATABASE_URL", database_url.to_owned()),
    ]
}

/// What check-config prints of `dir`'s files before the database line.
fn files_report(dir: &Path) -> String {
    let pki = dir.join("pki");
    format!(
        "configuration: the built-in defaults, then the environment\n\
         tls.ca_bundle: {pki}/ca.pem: readable\n\
         tls.crls: {pki}/crl.pem: readable\n\
         tls.cert: {pki}/server.pem: readable\n\
         tls.key: {pki}/server.key: readable\n\
         tls: the certificate, its key, the CA bundle and the CRLs load\n\
         signing.origin: \"minegate\" (the ledger's name, fixed when the database is made)\n\
         signing.key: {dir}/signing.key: missing: the first start makes it\n",
        pki = pki.display(),
        dir = dir.display()
    )
}

/// check-config's whole output and exit code.
fn check(dir: &Path, url: &str) -> (String, Option<i32>) {
    let output = minegate(dir, &["check-config"], &environment(dir, url));
    assert_eq!(text(&output.stderr), "");
    (text(&output.stdout), output.status.code())
}

const OK: &str = "ok: minegate 0.4.0 can start with this configuration\n";

#[test]
fn in_an_empty_folder_it_says_what_the_first_start_makes_and_makes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = minegate(dir.path(), &["check-config"], &[]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        text(&output.stdout),
        "configuration: the built-in defaults, then the environment\n\
         warning: tls.dev_pki_dir: no ca.pem in certs/dev: the first start makes a \
         development PKI there (not for production)\n\
         tls.ca_bundle: certs/dev/ca.pem: made with the PKI\n\
         tls.crls: certs/dev/crl.pem: made with the PKI\n\
         tls.cert: certs/dev/server.pem: made with the PKI\n\
         tls.key: certs/dev/server.key: made with the PKI\n\
         signing.origin: \"minegate\" (the ledger's name, fixed when the database is made)\n\
         signing.key: data/signing.key: missing: the first start makes it\n\
         database: sqlite://data/minegate.db: no database yet: the first start makes it at \
         schema version 6\n\
         ok: minegate 0.4.0 can start with this configuration\n"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn an_unknown_key_a_missing_file_or_a_bad_key_exits_1() {
    let dir = fresh_folder();
    let url = format!("sqlite://{}/minegate.db", dir.path().display());
    std::fs::write(
        dir.path().join("minegate.toml"),
        "[limits]\nmax_in_flght = 4\n",
    )
    .unwrap();
    let output = minegate(
        dir.path(),
        &["check-config"],
        &environment(dir.path(), &url),
    );
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stdout);
    assert!(
        said.starts_with(
            "configuration: minegate.toml, then the environment\n\
             error: config: [limits]: unknown field `max_in_flght`; did you mean `max_in_flight`?\n"
        ),
        "{said}"
    );
    assert!(said.ends_with("\nnot ok: the configuration does not load (exit 1)\n"));

    std::fs::remove_file(dir.path().join("minegate.toml")).unwrap();
    std::fs::remove_file(dir.path().join("pki/server.key")).unwrap();
    std::fs::write(dir.path().join("signing.key"), "not a key").unwrap();
    let (said, code) = check(dir.path(), &url);
    assert_eq!(code, Some(1));
    let pki = dir.path().join("pki");
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[4],
        format!(
            "error: tls.key: {}/server.key: No such file or directory (os error 2)",
            pki.display()
        )
    );
    // The path once, then the reason.
    assert_eq!(
        lines[6],
        format!(
            "error: signing.key: {}/signing.key: not an Ed25519 PKCS#8 key: InvalidEncoding",
            dir.path().display()
        )
    );
    assert_eq!(
        lines[7],
        format!("database: {url}: no database yet: the first start makes it at schema version 6")
    );
    assert_eq!(lines[8..], ["not ok (exit 1)"]);

    // A database URL this binary cannot take is the configuration's
    // fault, said once.
    std::fs::remove_file(dir.path().join("signing.key")).unwrap();
    let (said, code) = check(dir.path(), "mysql://root:pw@db/minegate");
    assert_eq!(code, Some(1));
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[7..],
        [
            "error: database_url \"mysql://root:***@db/minegate\": expected sqlite://PATH or postgres://…",
            "not ok (exit 1)"
        ]
    );
    // So is one the PostgreSQL driver cannot read, or whose root
    // certificate is not there: found before any connection is tried.
    for (url, reason) in [
        ("postgres://u:pw@127.0.0.1:99999/x", "invalid port number"),
        (
            "postgres://h/x?sslmode=bogus",
            "unknown value \"bogus\" for `ssl_mode`",
        ),
        (
            "postgres://h/x?sslmode=verify-full&sslrootcert=/nope.pem",
            "sslrootcert /nope.pem: no such file",
        ),
        (
            "postgres://h/x?sslmode=require&sslcert=/nope.crt&sslkey=/nope.key",
            "sslcert /nope.crt: no such file",
        ),
    ] {
        let (said, code) = check(dir.path(), url);
        assert_eq!(code, Some(1), "{said}");
        let shown = url.replace(":pw@", ":***@");
        assert_eq!(
            said.lines().rev().take(2).collect::<Vec<_>>(),
            [
                "not ok (exit 1)",
                &format!("error: database: {shown}: {reason}")
            ]
        );
    }
}

/// The migration log lines of a start on `url` (`ledger verify` opens the
/// database as `serve` does): (version, description) of each step.
fn migration_steps(dir: &Path, url: &str) -> Vec<(String, String)> {
    let mut env = environment(dir, url);
    env.push(("RUST_LOG", "minegate::store::schema=info".to_owned()));
    let output = minegate(dir, &["ledger", "verify"], &env);
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stderr)
        .lines()
        .filter_map(|line| {
            line.split_once("applied database migration version=")
                .map(|p| p.1)
        })
        .map(|rest| {
            let (version, rest) = rest.split_once(" description=").unwrap();
            let (description, took) = rest.rsplit_once(" took=").unwrap();
            assert!(took.ends_with('s'), "a duration: {took}");
            (version.to_owned(), description.trim_matches('"').to_owned())
        })
        .collect()
}

fn steps(expected: &[(u32, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(v, d)| (v.to_string(), (*d).to_owned()))
        .collect()
}

#[test]
fn a_database_of_release_0_1_will_be_migrated_and_is_left_as_it_was() {
    let dir = fresh_folder();
    let file = dir.path().join("old.db");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1-demo.db");
    std::fs::copy(&fixture, &file).unwrap();
    let url = format!("sqlite://{}", file.display());
    let (said, code) = check(dir.path(), &url);
    assert_eq!(code, Some(0));
    let database = format!("database: {url}: schema version 4: will migrate from 4 to 6\n");
    assert_eq!(said, files_report(dir.path()) + &database + OK);
    assert!(std::fs::read(&file).unwrap() == std::fs::read(&fixture).unwrap());
    assert!(!dir.path().join("old.db-wal").exists() && !dir.path().join("old.db-shm").exists());

    assert_eq!(
        migration_steps(dir.path(), &url),
        steps(&[(5, "merkle log"), (6, "document chunks")])
    );
    let (said, code) = check(dir.path(), &url);
    assert_eq!(code, Some(0));
    let database = format!("database: {url}: schema version 6, up to date\n");
    assert_eq!(said, files_report(dir.path()) + &database + OK);

    // A newer release's migration 7: refused, exit 3.
    let conn = rusqlite::Connection::open(&file).unwrap();
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let (said, code) = check(dir.path(), &url);
    assert_eq!(code, Some(3));
    let database = format!(
        "database: {url}: schema version 7, newer than this binary (6): it would refuse to \
         start; run the release that wrote it\n"
    );
    assert_eq!(
        said,
        files_report(dir.path()) + &database + "not ok (exit 3)\n"
    );
}

const EVERY_STEP: [(u32, &str); 6] = [
    (1, "filings"),
    (2, "deliveries"),
    (3, "obligation indexes"),
    (4, "ip range blocks"),
    (5, "merkle log"),
    (6, "document chunks"),
];

#[tokio::test]
async fn on_postgresql_every_step_is_logged_and_a_newer_or_unreachable_database_is_refused() {
    let Some(server) = postgres_url() else {
        return;
    };
    let dir = fresh_folder();
    let database = fresh_postgres_database(&server).await;
    let url = database.url.clone();
    let (said, code) = check(dir.path(), &url);
    assert_eq!(code, Some(0));
    let line = format!("database: {url}: schema version 0: will migrate from 0 to 6\n");
    assert_eq!(said, files_report(dir.path()) + &line + OK);

    assert_eq!(migration_steps(dir.path(), &url), steps(&EVERY_STEP));
    let (said, _) = check(dir.path(), &url);
    let line = format!("database: {url}: schema version 6, up to date\n");
    assert_eq!(said, files_report(dir.path()) + &line + OK);

    let newer = "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
                 execution_time) VALUES (7, 'later', TRUE, '\\x00'::bytea, 1)";
    assert_eq!(execute(&url, newer).await, 1);
    let (said, code) = check(dir.path(), &url);
    assert_eq!(code, Some(3));
    assert!(
        said.contains("schema version 7, newer than this binary (6)"),
        "{said}"
    );

    // Nothing listens on the port: exit 2, naming the database.
    let closed = format!("postgres://postgres@127.0.0.1:{}/x", free_port());
    let (said, code) = check(dir.path(), &closed);
    assert_eq!(code, Some(2));
    // Why, not only that a pool timed out.
    assert!(
        said.ends_with(&format!(
            "\nerror: {closed}: database unavailable: error communicating with database: \
             Connection refused (os error 111)\nnot ok (exit 2)\n"
        )),
        "{said}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS to PostgreSQL as the runbook sets it up: `sslmode=verify-full` with
/// `sslrootcert` in the URL (and a password, never shown) is accepted,
/// connects over TLS checking the server's certificate and name, and a
/// server certificate the root does not sign is refused. The server here
/// must serve TLS with a self-signed certificate for `localhost` (Debian's
/// snakeoil one): its own certificate is the root.
#[tokio::test]
async fn on_postgresql_verify_full_with_sslrootcert_in_the_url_connects_over_tls() {
    let Some(server) = postgres_url() else {
        return;
    };
    let settings = texts(
        &server,
        "SELECT setting FROM pg_settings WHERE name IN ('ssl', 'ssl_cert_file') ORDER BY name",
    )
    .await;
    let cert = PathBuf::from(&settings[1]);
    if settings[0] != "on" || std::fs::read(&cert).is_err() {
        assert!(
            std::env::var("MINEGATE_TEST_TOOLS").as_deref() != Ok("required"),
            "PostgreSQL does not serve TLS with a readable certificate: {settings:?}"
        );
        eprintln!("skipped: PostgreSQL does not serve TLS with a readable certificate");
        return;
    }
    let dir = fresh_folder();
    let database = fresh_postgres_database(&server).await;
    let name = database.url.rsplit('/').next().unwrap().to_owned();
    let url = |password: &str, root: &Path| {
        format!(
            "postgres://postgres:{password}@localhost:5432/{name}?sslmode=verify-full&sslrootcert={}",
            root.display()
        )
    };
    let (said, code) = check(dir.path(), &url("s3cret", &cert));
    let line = format!(
        "database: {}: schema version 0: will migrate from 0 to 6\n",
        url("***", &cert)
    );
    assert_eq!(said, files_report(dir.path()) + &line + OK);
    assert_eq!(code, Some(0));
    // The connection is TLS, as the server sees it.
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url("s3cret", &cert))
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert!(ssl);
    sqlx::Connection::close(connection).await.unwrap();

    // A root that did not sign the server's certificate: refused, exit 2.
    let other_root = dir.path().join("pki/ca.pem");
    let (said, code) = check(dir.path(), &url("s3cret", &other_root));
    assert_eq!(code, Some(2));
    assert!(
        said.contains(&format!(
            "\nerror: {}: database unavailable: ",
            url("***", &other_root)
        )),
        "{said}"
    );
    assert!(said.contains("UnknownIssuer"), "{said}");
    assert!(!said.contains("s3cret"), "{said}");
}

/// A database whose ledger is named: `signing.origin` must be that name,
/// or check-config says serve would refuse, and what to set (exit 1).
#[tokio::test]
async fn a_signing_origin_other_than_the_ledgers_name_exits_1_saying_what_to_set() {
    let app = spawn_app().await;
    let dir = app.dir.path();
    let url = app.config.database_url.clone();
    let (said, code) = check(dir, &url);
    assert_eq!(code, Some(0), "{said}");
    let mut env = environment(dir, &url);
    env.push(("MINEGATE_SIGNING_ORIGIN", "gateway.example.kz".to_owned()));
    let output = minegate(dir, &["check-config"], &env);
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[6..],
        [
            "signing.origin: \"gateway.example.kz\" (the ledger's name, fixed when the database is made)",
            &format!("signing.key: {}/signing.key: readable", dir.display()),
            &format!("database: {url}: schema version 6, up to date"),
            "error: signing: this database's ledger is named \"minegate\" in its key history, \
             but signing.origin is \"gateway.example.kz\": serve would refuse to start; set \
             signing.origin = \"minegate\"",
            "not ok (exit 1)",
        ]
    );
    // Another gateway's key: one this database's history does not know.
    let other = dir.join("other.key");
    let signer = minegate::signing::Signer::load_or_create(&other, "minegate").unwrap();
    let mut env = environment(dir, &url);
    env.push(("MINEGATE_SIGNING_KEY", other.display().to_string()));
    let output = minegate(dir, &["check-config"], &env);
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stdout);
    let known = app_key_id(&app);
    assert_eq!(
        said.lines().rev().nth(1).unwrap(),
        format!(
            "error: signing: the signing key {} is not in this database's key history (it knows \
             {known}); start once with --add-signing-key to add it, or configure a key the \
             history has: serve would refuse to start",
            signer.key_id()
        )
    );
}

/// The key id of the key `app` signs with.
fn app_key_id(app: &TestApp) -> String {
    minegate::signing::Signer::load(&app.config.signing.key, &app.config.signing.origin)
        .unwrap()
        .key_id()
        .to_owned()
}

/// An expired server certificate loads (TLS does not look at dates until a
/// handshake) but every client would refuse it: exit 1, naming it.
#[test]
fn an_expired_server_certificate_exits_1() {
    let dir = fresh_folder();
    let url = format!("sqlite://{}/minegate.db", dir.path().display());
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 2, 1);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("expired.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("expired.key"), key.serialize_pem()).unwrap();
    let mut env = environment(dir.path(), &url);
    let path = |name: &str| dir.path().join(name).display().to_string();
    env.push(("MINEGATE_TLS_CERT", path("expired.pem")));
    env.push(("MINEGATE_TLS_KEY", path("expired.key")));
    let output = minegate(dir.path(), &["check-config"], &env);
    assert_eq!(output.status.code(), Some(1));
    let said = text(&output.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(
        lines[5..7],
        [
            "tls: the certificate, its key, the CA bundle and the CRLs load",
            "error: tls: the server certificate has expired: clients refuse it",
        ]
    );
    assert_eq!(lines.last(), Some(&"not ok (exit 1)"));
}
