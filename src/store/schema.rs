//! The schema version a database holds, against this release's migrations:
//! what a start will do to it, logged as it goes, and what `minegate
//! check-config` reports before anything starts.

use std::time::Duration;

use super::{StoreError, check_url, postgres, sqlite};

/// A database's schema against this release's migrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// No database yet (a SQLite file that does not exist): the first start
    /// makes it at `latest`.
    Absent { latest: i64 },
    /// Every migration of this release applied.
    UpToDate { version: i64 },
    /// A start will migrate it from `from` to `to`.
    WillMigrate { from: i64, to: i64 },
    /// Migrated by a newer release: this one refuses to start on it.
    Newer { version: i64, latest: i64 },
}

impl Schema {
    fn of(version: i64, latest: i64) -> Schema {
        match version {
            v if v == latest => Schema::UpToDate { version },
            v if v < latest => Schema::WillMigrate {
                from: version,
                to: latest,
            },
            _ => Schema::Newer { version, latest },
        }
    }
}

impl std::fmt::Display for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schema::Absent { latest } => write!(
                f,
                "no database yet: the first start makes it at schema version {latest}"
            ),
            Schema::UpToDate { version } => write!(f, "schema version {version}, up to date"),
            Schema::WillMigrate { from, to } => {
                write!(f, "schema version {from}: will migrate from {from} to {to}")
            }
            Schema::Newer { version, latest } => write!(
                f,
                "schema version {version}, newer than this binary ({latest}): it would refuse \
                 to start; run the release that wrote it"
            ),
        }
    }
}

/// The schema of the database at `url`, read without changing anything:
/// a SQLite file is opened read-only (and not made if missing), a
/// PostgreSQL database is only queried.
pub async fn inspect(url: &str) -> Result<Schema, StoreError> {
    check_url(url)?;
    if url.starts_with("sqlite:") {
        let path = sqlite::database_path(url)?;
        let latest = sqlite::LATEST_SCHEMA;
        if !is_there(&path)? {
            return Ok(Schema::Absent { latest });
        }
        let version = tokio::task::spawn_blocking(move || sqlite::schema_version(&path))
            .await
            .map_err(|error| StoreError::Database(error.to_string()))??;
        Ok(Schema::of(version, latest))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let options: sqlx::postgres::PgConnectOptions = url.parse()?;
        postgres::reach(&options).await?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        let version = postgres::migrations::schema_version(&pool).await;
        pool.close().await;
        Ok(Schema::of(version?, postgres::migrations::latest()))
    } else {
        Err(StoreError::UnknownScheme(crate::files::redacted_url(url)))
    }
}

/// The key history of the database at `url`, oldest first (its first
/// key's name is the ledger's), read without changing anything; empty
/// before the database has a key (a new database, or one before schema
/// version 5).
pub async fn key_history(url: &str) -> Result<Vec<crate::signing::KeyRecord>, StoreError> {
    check_url(url)?;
    if url.starts_with("sqlite:") {
        let path = sqlite::database_path(url)?;
        if !is_there(&path)? {
            return Ok(Vec::new());
        }
        return tokio::task::spawn_blocking(move || sqlite::key_history(&path))
            .await
            .map_err(|error| StoreError::Database(error.to_string()))?;
    }
    postgres::key_history(url).await
}

/// Refuses a SQLite database that does not exist, for the commands that
/// only read one (`ledger`, `signing`): opening it would make a new, empty
/// database at a mistyped path and report on it. (A PostgreSQL database
/// must have been created; an empty one is migrated as a start would.)
pub fn refuse_absent(url: &str) -> Result<(), StoreError> {
    if !url.starts_with("sqlite:") {
        return Ok(());
    }
    let path = sqlite::database_path(url)?;
    if !is_there(&path)? {
        return Err(StoreError::Database(format!(
            "there is no database at {}: nothing to read (check database_url); none was made",
            path.display()
        )));
    }
    if sqlite::schema_version(&path)? == 0 {
        return Err(StoreError::Database(format!(
            "{} holds no minegate database (no schema in it): nothing to read",
            path.display()
        )));
    }
    Ok(())
}

/// Whether the file at `path` exists; a folder on the way this user may not
/// enter is an error, not "no database yet".
fn is_there(path: &std::path::Path) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(StoreError::Database(format!("{}: {error}", path.display()))),
    }
}

/// Logs what a start is about to do to the schema: nothing, or `steps`
/// migrations from `from` to `to`.
pub(crate) fn log_start(from: i64, to: i64, steps: usize) {
    if steps == 0 {
        tracing::info!(version = to, "database schema up to date");
    } else {
        tracing::info!(from, to, steps, "migrating the database schema");
    }
}

/// Logs one migration step once it committed.
pub(crate) fn log_step(version: i64, description: &str, took: Duration) {
    tracing::info!(version, description, ?took, "applied database migration");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_up_to_date_to_migrate_or_newer() {
        assert_eq!(Schema::of(6, 6), Schema::UpToDate { version: 6 });
        assert_eq!(Schema::of(4, 6), Schema::WillMigrate { from: 4, to: 6 });
        assert_eq!(
            Schema::of(7, 6),
            Schema::Newer {
                version: 7,
                latest: 6
            }
        );
        assert_eq!(
            Schema::of(4, 6).to_string(),
            "schema version 4: will migrate from 4 to 6"
        );
    }
}
