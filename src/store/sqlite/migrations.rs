//! The SQLite schema, `migrations/sqlite/`, applied in order at start. The
//! version applied last is kept in `PRAGMA user_version`. A database made by
//! a release that migrated through sqlx has a `_sqlx_migrations` table
//! instead: its versions are taken over, so it is migrated in place from
//! where it stands.
//!
//! `_sqlx_migrations` is kept true as well, listing every version applied as
//! sqlx would have (description, SHA-384 checksum of the SQL): the previous
//! release migrated through sqlx, whose migrator refuses a database listing
//! a version it does not have (`VersionMissing`) before it changes anything.
//! That is how an older release refuses a database this one migrated.

use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};

use crate::store::StoreError;

/// A migration: its version, its description as sqlx derives it from the
/// file's name, and its SQL.
struct Migration {
    version: i64,
    description: &'static str,
    sql: &'static str,
}

/// In order. A new migration is added here and as a file.
const MIGRATIONS: [Migration; 6] = [
    Migration {
        version: 1,
        description: "filings",
        sql: include_str!("../../../migrations/sqlite/0001_filings.sql"),
    },
    Migration {
        version: 2,
        description: "deliveries",
        sql: include_str!("../../../migrations/sqlite/0002_deliveries.sql"),
    },
    Migration {
        version: 3,
        description: "obligation indexes",
        sql: include_str!("../../../migrations/sqlite/0003_obligation_indexes.sql"),
    },
    Migration {
        version: 4,
        description: "ip prefix lengths",
        sql: include_str!("../../../migrations/sqlite/0004_ip_prefix_lengths.sql"),
    },
    Migration {
        version: 5,
        description: "merkle log",
        sql: include_str!("../../../migrations/sqlite/0005_merkle_log.sql"),
    },
    Migration {
        version: 6,
        description: "document chunks",
        sql: include_str!("../../../migrations/sqlite/0006_document_chunks.sql"),
    },
];

/// The version a database holding every migration has.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// sqlx 0.8's table, exactly as its SQLite migrator creates it.
const SQLX_TABLE: &str = "CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);";

/// Brings the database up to [`LATEST`], each migration in its own
/// transaction with the version it reaches, in `user_version` and in
/// `_sqlx_migrations`. A database newer than this release is refused
/// before anything is written.
pub fn run(conn: &mut Connection) -> Result<(), StoreError> {
    let failed = |version: i64| {
        move |error: rusqlite::Error| StoreError::Migrate(format!("migration {version}: {error}"))
    };
    let recorded: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed(0))?;
    let mut applied = refuse_newer(conn)?;
    if applied != recorded {
        // Taken over from sqlx's record: kept from now on in user_version.
        conn.pragma_update(None, "user_version", applied)
            .map_err(failed(applied))?;
    }
    list_in_sqlx_table(conn, applied).map_err(failed(applied))?;
    let pending = MIGRATIONS.iter().filter(|m| m.version > applied).count();
    crate::store::schema::log_start(applied, LATEST, pending);
    for migration in &MIGRATIONS {
        let version = migration.version;
        if version <= applied {
            continue;
        }
        let started = Instant::now();
        let tx = conn.transaction().map_err(failed(version))?;
        tx.execute_batch(migration.sql).map_err(failed(version))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed(version))?;
        let took = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        record(&tx, migration, took).map_err(failed(version))?;
        tx.commit().map_err(failed(version))?;
        crate::store::schema::log_step(version, migration.description, started.elapsed());
        applied = version;
    }
    Ok(())
}

/// Lists every version up to `applied` in `_sqlx_migrations` (made if
/// missing) that is not there yet: a database this release made or
/// migrated before it kept the table true. Their time is unknown: -1, as
/// sqlx writes before it has measured. Nothing is written if all are there.
fn list_in_sqlx_table(conn: &mut Connection, applied: i64) -> Result<(), rusqlite::Error> {
    let listed: Vec<i64> = if has_sqlx_table(conn)? {
        conn.prepare("SELECT version FROM _sqlx_migrations")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?
    } else {
        Vec::new()
    };
    let missing: Vec<&Migration> = MIGRATIONS
        .iter()
        .filter(|m| m.version <= applied && !listed.contains(&m.version))
        .collect();
    if missing.is_empty() && has_sqlx_table(conn)? {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute_batch(SQLX_TABLE)?;
    for migration in missing {
        record(&tx, migration, -1)?;
    }
    tx.commit()
}

/// `migration`'s row in `_sqlx_migrations`, as sqlx writes it: the SHA-384
/// of its SQL, and how long it took in nanoseconds.
fn record(conn: &Connection, migration: &Migration, nanos: i64) -> Result<(), rusqlite::Error> {
    let checksum = ring::digest::digest(&ring::digest::SHA384, migration.sql.as_bytes());
    conn.execute(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (?1, ?2, TRUE, ?3, ?4)",
        params![
            migration.version,
            migration.description,
            checksum.as_ref(),
            nanos
        ],
    )?;
    Ok(())
}

fn has_sqlx_table(conn: &Connection) -> Result<bool, rusqlite::Error> {
    let found: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    Ok(found.is_some())
}

/// The version applied last, refused if newer than this release: read
/// only, so a refused database is left as it was.
pub(super) fn refuse_newer(conn: &Connection) -> Result<i64, StoreError> {
    let applied = applied_version(conn)
        .map_err(|error| StoreError::Migrate(format!("migration 0: {error}")))?;
    if applied > LATEST {
        return Err(StoreError::Migrate(format!(
            "the database is at schema version {applied}, newer than this release knows \
             ({LATEST}): run the release that wrote it"
        )));
    }
    Ok(applied)
}

/// The version applied last: `user_version`, or what sqlx recorded.
pub(super) fn applied_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > 0 {
        return Ok(version);
    }
    if !has_sqlx_table(conn)? {
        return Ok(0);
    }
    let sqlx_version: Option<i64> = conn.query_row(
        "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
        [],
        |row| row.get(0),
    )?;
    Ok(sqlx_version.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap()
    }

    #[test]
    fn a_new_database_gets_every_migration_and_a_second_run_changes_nothing() {
        let mut conn = Connection::open_in_memory().unwrap();
        run(&mut conn).unwrap();
        assert_eq!(version(&conn), 6);
        run(&mut conn).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 21);
        assert_eq!(sqlx_rows(&conn), every_version());
        // No ranges were stored before migration 4: no prefix length listed.
        let listed: i64 = conn
            .query_row("SELECT COUNT(*) FROM ip_prefix_lengths", [], |row| {
                row.get(0)
            })
            .unwrap();
        assert_eq!(listed, 0);
    }

    #[test]
    fn a_database_migrated_by_sqlx_continues_from_its_last_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..3] {
            conn.execute_batch(migration.sql).unwrap();
        }
        sqlx_migrated(&conn, 3);
        conn.execute_batch(
            "INSERT INTO ip_ranges (bin_or_iin, cidr, range_start, range_end, filing_id)
             VALUES ('990240000013', '95.56.0.0/16', x'00', x'01', 'fil-1');",
        )
        .unwrap();
        run(&mut conn).unwrap();
        assert_eq!(version(&conn), 6);
        // Migration 4 listed every prefix length for the range stored before it.
        let listed: (i64, i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), MIN(prefix), MAX(prefix) FROM ip_prefix_lengths",
                [],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .unwrap();
        assert_eq!(listed, (129, 0, 128));
        assert_eq!(sqlx_rows(&conn), every_version());
    }

    #[test]
    fn a_database_sqlx_fully_migrated_keeps_its_version_in_user_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..4] {
            conn.execute_batch(migration.sql).unwrap();
        }
        sqlx_migrated(&conn, 4);
        run(&mut conn).unwrap();
        assert_eq!(
            version(&conn),
            6,
            "the release's last version taken over, then 6"
        );
        assert_eq!(sqlx_rows(&conn), every_version());
    }

    #[test]
    fn a_database_migrated_before_the_sqlx_table_was_kept_gets_every_version_listed() {
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS {
            conn.execute_batch(migration.sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        run(&mut conn).unwrap();
        assert_eq!(sqlx_rows(&conn), every_version());
        let unmeasured: i64 = conn
            .query_row(
                "SELECT count(*) FROM _sqlx_migrations WHERE execution_time = -1",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(unmeasured, 6);
    }

    #[test]
    fn documents_stored_whole_become_chunks_of_256_kib_byte_for_byte() {
        let mut conn = Connection::open_in_memory().unwrap();
        for migration in &MIGRATIONS[..5] {
            conn.execute_batch(migration.sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 5).unwrap();
        // 600 KiB: two whole chunks and one of 88 KiB; and one of 1 byte.
        let big: Vec<u8> = (0..600 * 1024).map(|i| (i % 251) as u8).collect();
        let insert = "INSERT INTO documents (sha256, media_type, size_bytes, content, stored_at) \
                      VALUES (?1, 'application/pdf', ?2, ?3, 0)";
        conn.execute(insert, rusqlite::params!["big", big.len(), big])
            .unwrap();
        conn.execute(insert, rusqlite::params!["one", 1, vec![7u8]])
            .unwrap();
        run(&mut conn).unwrap();
        let chunks = |id: &str| -> Vec<Vec<u8>> {
            conn.prepare("SELECT data FROM document_chunks WHERE upload_id = ?1 ORDER BY idx")
                .unwrap()
                .query_map([id], |row| row.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        let pieces = chunks("big");
        assert_eq!(
            pieces.iter().map(Vec::len).collect::<Vec<_>>(),
            [262144, 262144, 90112]
        );
        assert!(pieces.concat() == big);
        assert_eq!(chunks("one"), [vec![7u8]]);
        let rows: Vec<(String, String, i64)> = conn
            .prepare("SELECT sha256, upload_id, length(content) FROM documents ORDER BY sha256")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("big".to_owned(), "big".to_owned(), 0),
                ("one".to_owned(), "one".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let error = run(&mut conn).unwrap_err().to_string();
        assert_eq!(
            error,
            "database migration: the database is at schema version 99, newer than this \
             release knows (6): run the release that wrote it"
        );
        // Known only by sqlx's record: refused before it is taken over.
        let mut conn = Connection::open_in_memory().unwrap();
        sqlx_migrated(&conn, 0);
        conn.execute(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, \
             execution_time) VALUES (7, 'later', TRUE, x'00', 1)",
            [],
        )
        .unwrap();
        let error = run(&mut conn).unwrap_err().to_string();
        assert!(error.contains("schema version 7, newer"), "{error}");
        assert_eq!(version(&conn), 0, "untouched");
    }

    /// `_sqlx_migrations` as sqlx left it after migrations 1..=`upto`.
    fn sqlx_migrated(conn: &Connection, upto: usize) {
        conn.execute_batch(SQLX_TABLE).unwrap();
        for migration in &MIGRATIONS[..upto] {
            record(conn, migration, 1_000).unwrap();
        }
    }

    /// (version, description, success, checksum) of every listed version.
    fn sqlx_rows(conn: &Connection) -> Vec<(i64, String, bool, Vec<u8>)> {
        conn.prepare(
            "SELECT version, description, success, checksum FROM _sqlx_migrations \
             ORDER BY version",
        )
        .unwrap()
        .query_map([], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// What sqlx would list after every migration (that sqlx's own
    /// migrator agrees is `tests/downgrade.rs`).
    fn every_version() -> Vec<(i64, String, bool, Vec<u8>)> {
        MIGRATIONS
            .iter()
            .map(|m| {
                let sum = ring::digest::digest(&ring::digest::SHA384, m.sql.as_bytes());
                (
                    m.version,
                    m.description.to_owned(),
                    true,
                    sum.as_ref().to_vec(),
                )
            })
            .collect()
    }
}
