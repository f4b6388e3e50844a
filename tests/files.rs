//! Files and logs (issue 23, item 5), from outside, with the real binary:
//! under umask 022 the gateway makes its data folder 0700 and the database,
//! its `-wal` and `-shm`, its signing key, a backup and a restored database
//! 0600, and takes other users' access off a database an earlier release
//! left readable; a PostgreSQL password reaches no log line (at debug
//! level), no error and no metric.

mod common;

use std::{os::unix::fs::PermissionsExt, path::Path, process::Output};

use common::{
    child::{ChildGateway, free_port, under_umask},
    execute,
    fixtures::*,
    fresh_folder, http_get, postgres_url,
};
use minegate::proto::v1::filing_service_client::FilingServiceClient;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn suffixed(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

/// A start notification for `bin`, filed as the authority.
async fn file_start(gateway: &ChildGateway, bin: &str, octet: u32) {
    let authority = gateway.channel("authority").await;
    let documents = upload_documents(authority.clone(), bin).await;
    FilingServiceClient::new(authority)
        .submit_start_notification(start_notification(
            bin,
            bin,
            date(2026, 6, 1),
            &[&format!("37.{octet}.0.0/16")],
            &documents,
        ))
        .await
        .unwrap();
}

/// `minegate ARGS` under umask 022 with the environment `env`.
async fn minegate_under_022(args: &[&str], env: &[(&str, &str)]) -> Output {
    under_umask(Some("022"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn under_umask_022_the_data_folder_is_0700_and_every_database_file_0600() {
    let dir = fresh_folder();
    let data = dir.path().join("data");
    let db = data.join("minegate.db");
    let url = format!("sqlite://{}", db.display());
    let key = data.join("signing.key");
    let key_env = ("MINEGATE_SIGNING_KEY", key.to_str().unwrap());
    let mut gateway =
        ChildGateway::start_under_umask(dir.path(), &url, &[key_env], Some("022")).await;
    file_start(&gateway, BIN_A, 1).await;
    let (wal, shm) = (suffixed(&db, "-wal"), suffixed(&db, "-shm"));
    assert_eq!(
        [&data, &db, &wal, &shm, &key].map(|p| mode(p)),
        [0o700, 0o600, 0o600, 0o600, 0o600]
    );

    // A backup taken beside it, and restored into a place with no folder yet.
    let backup = dir.path().join("backup.db");
    let url_env = ("MINEGATE_DATABASE_URL", url.as_str());
    let taken = minegate_under_022(&["backup", "--to", backup.to_str().unwrap()], &[url_env]).await;
    assert_eq!(taken.status.code(), Some(0), "{taken:?}");
    let restored = dir.path().join("restored/data/minegate.db");
    let restored_url = format!("sqlite://{}", restored.display());
    let restore = minegate_under_022(
        &["restore", "--from", backup.to_str().unwrap()],
        &[("MINEGATE_DATABASE_URL", restored_url.as_str())],
    )
    .await;
    assert_eq!(restore.status.code(), Some(0), "{restore:?}");
    assert_eq!(
        [
            &backup,
            &dir.path().join("restored"),
            &dir.path().join("restored/data"),
            &restored
        ]
        .map(|p| mode(p)),
        [0o600, 0o700, 0o700, 0o600]
    );

    // A database an earlier release left 0644 is its owner's only again
    // once the gateway starts on it, and it says so.
    gateway.signal("TERM").await;
    assert_eq!(gateway.exit_code().await, Some(0));
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    gateway.restart().await;
    file_start(&gateway, BIN_B, 2).await;
    assert_eq!([&db, &wal, &shm].map(|p| mode(p)), [0o600, 0o600, 0o600]);
    let log = std::fs::read_to_string(gateway.log(2)).unwrap();
    let warned = "the database file was readable by other users; it is now its owner's only";
    assert_eq!(log.matches(warned).count(), 1, "{log}");

    // No key material in either log.
    let server_key = std::fs::read_to_string(dir.path().join("pki/server.key")).unwrap();
    let signing_key = std::fs::read(&key).unwrap();
    let secrets = [
        server_key.lines().nth(1).unwrap().to_owned(),
        base64_of(&signing_key),
        minegate::domain::hex(&signing_key),
    ];
    for n in [1, 2] {
        let log = std::fs::read_to_string(gateway.log(n)).unwrap();
        for secret in &secrets {
            assert!(!log.contains(secret.as_str()), "log {n} holds key material");
        }
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn a_postgresql_password_reaches_no_log_line_error_or_metric() {
    let Some(server) = postgres_url() else {
        return;
    };
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let (role, password) = (format!("minegate_pw_{unique}"), format!("Pw{unique}"));
    execute(
        &server,
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    )
    .await;
    execute(&server, &format!("CREATE DATABASE {role} OWNER {role}")).await;
    let (base, _) = server.rsplit_once('/').unwrap();
    let host = base.rsplit_once('@').map_or(base, |(_, host)| host);
    let host = host.trim_start_matches("postgres://");
    let url = format!("postgres://{role}:{password}@{host}/{role}");
    let shown = format!("postgres://{role}:***@{host}/{role}");

    let dir = fresh_folder();
    let metrics = format!("127.0.0.1:{}", free_port());
    let env = [
        ("MINEGATE_METRICS_LISTEN", metrics.as_str()),
        ("MINEGATE_LOG_FILTER", "debug"),
    ];
    let mut gateway = ChildGateway::start(dir.path(), &url, &env).await;
    file_start(&gateway, BIN_A, 1).await;
    let (_, exported) = http_get(metrics.parse().unwrap(), "/metrics").await;
    gateway.signal("TERM").await;
    let exit = gateway.exit_code().await;
    let log = std::fs::read_to_string(gateway.log(1)).unwrap();

    // The errors of a server that cannot be reached, of a mistyped scheme
    // and of none (found from outside: printed whole).
    let signing_key = dir.path().join("signing.key");
    let common_env = child_env(dir.path(), &signing_key);
    let unreachable = format!("postgres://{role}:{password}@127.0.0.1:1/{role}");
    let mistyped = format!("postgresx://{role}:{password}@{host}/{role}");
    let schemeless = format!("{role}:{password}@{host}/{role}");
    // Found from outside: a keyword connection string, and the parameter in
    // capitals (which the driver logged, value and all, and ignored).
    let keyword = format!("host=127.0.0.1 user={role} password={password} dbname={role}");
    let capitals = format!("postgres://{role}@{host}/{role}?PASSWORD={password}");
    let mut failures = Vec::new();
    for bad in [&unreachable, &mistyped, &schemeless, &keyword, &capitals] {
        let mut env: Vec<(&str, &str)> = common_env
            .iter()
            .map(|(k, v)| (*k, v.to_str().unwrap()))
            .collect();
        env.push(("MINEGATE_DATABASE_URL", bad.as_str()));
        failures.push(minegate_under_022(&["serve"], &env).await);
    }

    execute(&server, &format!("DROP DATABASE {role} WITH (FORCE)")).await;
    execute(&server, &format!("DROP ROLE {role}")).await;

    assert_eq!(exit, Some(0));
    assert!(log.contains(&shown), "the startup line names the database");
    assert!(!log.contains(&password), "the log holds the password");
    assert!(exported.contains("minegate_filings_total"), "{exported}");
    assert!(!exported.contains(&password), "/metrics holds the password");
    for failed in &failures {
        let output = format!(
            "{}{}",
            String::from_utf8_lossy(&failed.stdout),
            String::from_utf8_lossy(&failed.stderr)
        );
        assert_eq!(failed.status.code(), Some(1), "{output}");
        assert!(!output.contains(&password), "{output}");
    }
    let mistyped_error = String::from_utf8_lossy(&failures[1].stderr).into_owned();
    assert!(
        mistyped_error.contains(&format!("postgresx://{role}:***@{host}/{role}")),
        "{mistyped_error}"
    );
    let schemeless_error = String::from_utf8_lossy(&failures[2].stderr).into_owned();
    assert!(
        schemeless_error.contains(&format!("\"{role}:***@{host}/{role}\"")),
        "{schemeless_error}"
    );
    let keyword_error = String::from_utf8_lossy(&failures[3].stderr).into_owned();
    assert!(
        keyword_error.contains(&format!(
            "\"host=127.0.0.1 user={role} password=*** dbname={role}\""
        )),
        "{keyword_error}"
    );
    let capitals_error = String::from_utf8_lossy(&failures[4].stderr).into_owned();
    assert!(
        capitals_error.contains(&format!(
            "postgres://{role}@{host}/{role}?PASSWORD=***: unknown parameter \"PASSWORD\""
        )),
        "{capitals_error}"
    );
}

/// The environment of a `minegate serve` on `dir`'s PKI, with no listener
/// anyone else uses (it is expected to fail before it serves).
fn child_env(dir: &Path, signing_key: &Path) -> Vec<(&'static str, std::ffi::OsString)> {
    minegate::config::child_gateway_environment(free_port(), "", &dir.join("pki"), signing_key)
        .into_iter()
        .filter(|(k, _)| *k != "MINEGATE_DATABASE_URL")
        .collect()
}

#[tokio::test]
async fn a_sqlite_url_with_a_user_and_password_is_refused_and_makes_no_folder() {
    let dir = fresh_folder();
    let signing_key = dir.path().join("signing.key");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .arg("serve")
        .current_dir(dir.path())
        .envs(child_env(dir.path(), &signing_key))
        .env("MINEGATE_DATABASE_URL", "sqlite://alice:Secret1@/x.db")
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "sqlite://alice:***@/x.db: a SQLite database has no user or password (sqlite://PATH)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("Secret1"), "{stderr}");
    assert!(!dir.path().join("alice:Secret1@").exists());
    // It failed before writing anything: no signing key either.
    assert!(!signing_key.exists());
}
