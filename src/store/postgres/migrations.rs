//! The PostgreSQL schema, `migrations/postgres/`, applied at start as sqlx's
//! migrator applies it (its advisory lock, its `_sqlx_migrations` record,
//! its refusals), one step at a time, each logged with its version,
//! description and the time it took.

use sqlx::{
    PgConnection, PgPool,
    migrate::{Migrate, MigrateError, Migration, Migrator},
};

static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// The version a database holding every migration has.
pub fn latest() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Brings the database up to [`latest`] under sqlx's migration lock. A
/// database that lists a version this release does not have (a newer
/// release migrated it), a step that failed half way (dirty) or a changed
/// migration is refused before any step runs.
pub async fn run(pool: &PgPool) -> Result<(), MigrateError> {
    let mut conn = pool.acquire().await?;
    conn.lock().await?;
    let outcome = apply_pending(&mut conn).await;
    let unlocked = conn.unlock().await;
    outcome.and(unlocked)
}

async fn apply_pending(conn: &mut PgConnection) -> Result<(), MigrateError> {
    conn.ensure_migrations_table().await?;
    if let Some(version) = conn.dirty_version().await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied = conn.list_applied_migrations().await?;
    if let Some(unknown) = applied.iter().find(|a| !MIGRATOR.version_exists(a.version)) {
        return Err(MigrateError::VersionMissing(unknown.version));
    }
    let mut pending: Vec<&Migration> = Vec::new();
    for migration in MIGRATOR.iter() {
        match applied.iter().find(|a| a.version == migration.version) {
            Some(a) if a.checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => pending.push(migration),
        }
    }
    let from = applied.iter().map(|a| a.version).max().unwrap_or(0);
    crate::store::schema::log_start(from, latest(), pending.len());
    for migration in pending {
        let took = conn.apply(migration).await?;
        crate::store::schema::log_step(migration.version, &migration.description, took);
    }
    Ok(())
}

/// The schema version the database at `pool` holds, read without changing
/// anything: the highest version sqlx recorded, 0 for a database no
/// release has migrated.
pub async fn schema_version(pool: &PgPool) -> Result<i64, sqlx::Error> {
    let recorded: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(pool)
            .await?;
    if recorded.is_none() {
        return Ok(0);
    }
    let version: Option<i64> =
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await?;
    Ok(version.unwrap_or(0))
}
