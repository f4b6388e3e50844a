//! Durable storage. The backend is chosen by the database URL's scheme:
//! `sqlite://PATH` (the embedded default: WAL, synchronous=FULL) or
//! `postgres://…` (the scale-out path). Tables, migrations and the Store
//! interface arrive with the filings work; this opens and checks the database.

use std::{str::FromStr, time::Duration};

use sqlx::{
    postgres::{PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database_url {0:?}: expected sqlite://PATH or postgres://…")]
    UnknownScheme(String),
    #[error("cannot create the folder for {path}: {source}")]
    Folder {
        path: String,
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
}

/// An open database of either backend.
#[derive(Debug, Clone)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// Opens (creating an SQLite file and its folder if needed) and checks the database.
    pub async fn connect(url: &str) -> Result<Database, StoreError> {
        let database = if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A filing that got a receipt must survive power loss.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(5));
            if let Some(folder) = options.get_filename().parent()
                && !folder.as_os_str().is_empty()
            {
                std::fs::create_dir_all(folder).map_err(|source| StoreError::Folder {
                    path: options.get_filename().display().to_string(),
                    source,
                })?;
            }
            Database::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(options)
                    .await?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Database::Postgres(
                PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(5))
                    .connect(url)
                    .await?,
            )
        } else {
            return Err(StoreError::UnknownScheme(url.to_owned()));
        };
        database.ping().await?;
        Ok(database)
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await?,
            Database::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
                return Ok(());
            }
        };
        Ok(())
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_file_is_created_in_wal_mode_with_full_sync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/minegate.db");
        let database = Database::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(path.exists());
        let Database::Sqlite(pool) = &database else {
            panic!("expected sqlite")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(sync, 2, "2 is FULL");
        assert_eq!(database.backend(), "sqlite");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_by_name() {
        let err = Database::connect("mysql://localhost/x").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "database_url \"mysql://localhost/x\": expected sqlite://PATH or postgres://…"
        );
    }
}
