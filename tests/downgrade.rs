//! Downgrades are refused, untouched. Release 0.1.0 (commit
//! `cabca77`) migrated both backends at start with sqlx's migrator over its
//! own migration set, kept in `tests/fixtures/release-0.1-migrations/`:
//! sqlx's own `Migrator`, run as that release ran it, refuses a database
//! this release made or migrated (a version it does not have,
//! `VersionMissing`) and changes nothing. Today's release refuses a
//! database a newer release migrated, and changes nothing either.

#[macro_use]
mod common;

use std::{
    path::{Path, PathBuf},
    str::FromStr,
    time::Duration,
};

use common::*;
use sqlx::{
    migrate::{MigrateError, Migrator},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous},
};

on_both_backends!(
    the_previous_releases_migrator_refuses_a_database_this_release_made,
    this_release_refuses_a_database_a_newer_release_migrated,
);

/// Release 0.1.0's migrations for `backend`.
fn previous_release(backend: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/release-0.1-migrations")
        .join(backend)
}

/// Today's migrations for `backend`.
fn this_release(backend: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(backend)
}

/// Runs sqlx's migrator over the migrations in `folder` against the
/// database at `url`, connected as release 0.1.0 connected.
async fn sqlx_migrate(folder: &Path, url: &str) -> Result<(), MigrateError> {
    let migrator = Migrator::new(folder).await.unwrap();
    match sqlite_path(url) {
        Some(path) => {
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                .unwrap()
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            let pool = SqlitePool::connect_with(options).await.unwrap();
            let result = migrator.run(&pool).await;
            pool.close().await;
            result
        }
        None => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let result = migrator.run(&pool).await;
            pool.close().await;
            result
        }
    }
}

/// Everything a release could have changed: on SQLite the file's bytes
/// (its WAL checkpointed in first, so nothing waits outside it) and
/// whether a WAL with frames is beside it; on PostgreSQL every table's
/// row count and sqlx's record, row by row.
async fn state(url: &str) -> Vec<String> {
    match sqlite_path(url) {
        Some(path) => {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .unwrap();
            drop(conn);
            let wal = PathBuf::from(format!("{}-wal", path.display()));
            let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
            let digest =
                ring::digest::digest(&ring::digest::SHA256, &std::fs::read(&path).unwrap());
            vec![format!("{digest:?}"), format!("wal {wal_bytes} bytes")]
        }
        None => {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            let mut state = Vec::new();
            for table in tables {
                let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                state.push(format!("{table}: {count}"));
            }
            let record: Vec<(i64, String, bool, Vec<u8>, i64)> = sqlx::query_as(
                "SELECT version, description, success, checksum, execution_time \
                 FROM _sqlx_migrations ORDER BY version",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            state.extend(record.into_iter().map(|row| format!("{row:?}")));
            pool.close().await;
            state
        }
    }
}

/// Starts today's gateway on `config`'s database (making or migrating it)
/// and stops it.
async fn migrate_with_this_release(config: &minegate::config::Config) {
    let gateway = minegate::server::start(config)
        .await
        .expect("gateway starts");
    gateway.shutdown().await.unwrap();
}

/// A database today's gateway made, for `backend`, the folder holding its
/// configuration's files, and the database (dropped with it); `None`
/// without PostgreSQL.
async fn made_by_this_release(
    backend: Backend,
) -> Option<(
    minegate::config::Config,
    std::sync::Arc<tempfile::TempDir>,
    TestDatabase,
)> {
    let dir = fresh_folder();
    let mut config = test_config(&dir);
    let database = database_for(backend, &dir).await?;
    config.database_url = database.url.clone();
    migrate_with_this_release(&config).await;
    Some((config, dir, database))
}

async fn the_previous_releases_migrator_refuses_a_database_this_release_made(backend: Backend) {
    let Some((config, _dir, _database)) = made_by_this_release(backend).await else {
        return;
    };
    let url = &config.database_url;
    let (name, missing) = match backend {
        // Release 0.1.0 knew SQLite migrations 1-4, PostgreSQL 1-3.
        Backend::Sqlite => ("sqlite", 5),
        Backend::Postgres => ("postgres", 4),
    };
    let before = state(url).await;
    let refused = sqlx_migrate(&previous_release(name), url).await;
    assert!(
        matches!(refused, Err(MigrateError::VersionMissing(v)) if v == missing),
        "{refused:?}"
    );
    assert_eq!(state(url).await, before, "the database is untouched");
    // sqlx finds every migration of today's set applied, each with the
    // checksum it computes: it applies nothing and changes nothing.
    sqlx_migrate(&this_release(name), url).await.unwrap();
    assert_eq!(state(url).await, before);
}

#[tokio::test]
async fn the_previous_releases_migrator_refuses_its_own_database_once_this_release_migrated_it() {
    let dir = fresh_folder();
    let config = test_config(&dir);
    let url = &config.database_url;
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1-demo.db");
    std::fs::copy(fixture, sqlite_path(url).unwrap()).unwrap();
    // Before: that release's own migrator finds everything it knows applied.
    sqlx_migrate(&previous_release("sqlite"), url)
        .await
        .unwrap();
    migrate_with_this_release(&config).await;
    assert_eq!(scalar(url, "PRAGMA user_version").await, 6);
    let listed: Vec<i64> = rusqlite::Connection::open(sqlite_path(url).unwrap())
        .unwrap()
        .prepare("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(listed, [1, 2, 3, 4, 5, 6]);
    let before = state(url).await;
    let refused = sqlx_migrate(&previous_release("sqlite"), url).await;
    assert!(
        matches!(refused, Err(MigrateError::VersionMissing(5))),
        "{refused:?}"
    );
    assert_eq!(state(url).await, before, "the database is untouched");
    sqlx_migrate(&this_release("sqlite"), url).await.unwrap();
    assert_eq!(state(url).await, before);
}

async fn this_release_refuses_a_database_a_newer_release_migrated(backend: Backend) {
    let Some((config, _dir, _database)) = made_by_this_release(backend).await else {
        return;
    };
    let url = &config.database_url;
    // What a newer release's migration 7 leaves in the record.
    let newer = "INSERT INTO _sqlx_migrations \
                 (version, description, success, checksum, execution_time) \
                 VALUES (7, 'later', TRUE, x'00', 1)";
    let newer = match backend {
        Backend::Sqlite => {
            execute(url, "PRAGMA user_version = 7").await;
            newer.to_owned()
        }
        Backend::Postgres => newer.replace("x'00'", "'\\x00'::bytea"),
    };
    assert_eq!(execute(url, &newer).await, 1);
    let before = state(url).await;
    let refused = minegate::server::start(&config)
        .await
        .err()
        .expect("a newer database is refused")
        .to_string();
    let expected = match backend {
        Backend::Sqlite => {
            "database migration: the database is at schema version 7, newer than this \
             release knows (6): run the release that wrote it"
        }
        Backend::Postgres => {
            "database migration: migration 7 was previously applied but is missing in the \
             resolved migrations"
        }
    };
    assert_eq!(refused, expected);
    assert_eq!(state(url).await, before, "the database is untouched");
}
