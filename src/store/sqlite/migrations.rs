//! The SQLite schema, `migrations/sqlite/`, applied in order at start. The
//! version applied last is kept in `PRAGMA user_version`. A database made by
//! a release that migrated through sqlx has a `_sqlx_migrations` table
//! instead: its versions are taken over, so it is migrated in place from
//! where it stands.

use rusqlite::{Connection, OptionalExtension};

use crate::store::StoreError;

/// (version, SQL), in order. A new migration is added here and as a file.
const MIGRATIONS: [(i64, &str); 6] = [
    (
        1,
        include_str!("../../../migrations/sqlite/0001_filings.sql"),
    ),
    (
        2,
        include_str!("../../../migrations/sqlite/0002_deliveries.sql"),
    ),
    (
        3,
        include_str!("../../../migrations/sqlite/0003_obligation_indexes.sql"),
    ),
    (
        4,
        include_str!("../../../migrations/sqlite/0004_ip_prefix_lengths.sql"),
    ),
    (
        5,
        include_str!("../../../migrations/sqlite/0005_merkle_log.sql"),
    ),
    (
        6,
        include_str!("../../../migrations/sqlite/0006_document_chunks.sql"),
    ),
];

/// The version a database holding every migration has.
pub const LATEST: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the database up to [`LATEST`], each migration in its own
/// transaction with the version it reaches.
pub fn run(conn: &mut Connection) -> Result<(), StoreError> {
    let failed = |version: i64| {
        move |error: rusqlite::Error| StoreError::Migrate(format!("migration {version}: {error}"))
    };
    let recorded: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(failed(0))?;
    let mut applied = applied_version(conn).map_err(failed(0))?;
    if applied != recorded {
        // Taken over from sqlx's record: kept from now on in user_version.
        conn.pragma_update(None, "user_version", applied)
            .map_err(failed(applied))?;
    }
    if applied > LATEST {
        return Err(StoreError::Migrate(format!(
            "the database is at schema version {applied}, newer than this release knows \
             ({LATEST}): run the release that wrote it"
        )));
    }
    for (version, sql) in MIGRATIONS {
        if version <= applied {
            continue;
        }
        let tx = conn.transaction().map_err(failed(version))?;
        tx.execute_batch(sql).map_err(failed(version))?;
        tx.pragma_update(None, "user_version", version)
            .map_err(failed(version))?;
        tx.commit().map_err(failed(version))?;
        applied = version;
    }
    Ok(())
}

/// The version applied last: `user_version`, or what sqlx recorded.
fn applied_version(conn: &Connection) -> Result<i64, rusqlite::Error> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if version > 0 {
        return Ok(version);
    }
    let sqlx_table: Option<String> = conn
        .query_row(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
            [],
            |row| row.get(0),
        )
        .optional()?;
    if sqlx_table.is_none() {
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
        assert_eq!(tables, 20);
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
        for (_, sql) in &MIGRATIONS[..3] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, 1), (2, 1), (3, 1);
             INSERT INTO ip_ranges (bin_or_iin, cidr, range_start, range_end, filing_id)
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
    }

    #[test]
    fn a_database_sqlx_fully_migrated_keeps_its_version_in_user_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (_, sql) in &MIGRATIONS[..4] {
            conn.execute_batch(sql).unwrap();
        }
        conn.execute_batch(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, success BOOLEAN NOT NULL);
             INSERT INTO _sqlx_migrations VALUES (1, 1), (2, 1), (3, 1), (4, 1);",
        )
        .unwrap();
        run(&mut conn).unwrap();
        assert_eq!(
            version(&conn),
            6,
            "the release's last version taken over, then 6"
        );
    }

    #[test]
    fn documents_stored_whole_become_chunks_of_256_kib_byte_for_byte() {
        let mut conn = Connection::open_in_memory().unwrap();
        for (_, sql) in &MIGRATIONS[..5] {
            conn.execute_batch(sql).unwrap();
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
    }
}
