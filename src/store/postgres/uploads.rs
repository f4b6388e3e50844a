//! Documents in chunks (migration 0006): an upload's chunks, written as its
//! bytes arrive; the document made of them once they are checked; uploads
//! that never finished removed. Chunks are written straight through the
//! pool, each replica's uploads in parallel; completing and removing go
//! through the writer, in a run's transaction like every ledger write.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::runs;
use crate::{
    domain::ledger::LedgerEvent,
    store::{DocumentRecord, NewDocument, StoreError, UploadsToDrop, from_micros, micros},
};

/// Chunk `index` of `upload_id`; the first also records the upload's start.
pub async fn write_chunk(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    upload_id: &str,
    index: u64,
    data: &[u8],
) -> Result<(), StoreError> {
    if index == 0 {
        sqlx::query("INSERT INTO uploads (upload_id, started_at) VALUES ($1, $2)")
            .bind(upload_id)
            .bind(micros(now))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("INSERT INTO document_chunks (upload_id, idx, data) VALUES ($1, $2, $3)")
        .bind(upload_id)
        .bind(index as i64)
        .bind(data)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Removes uploads still in progress, with their chunks. Only the ids the
/// statement itself took out of `uploads` lose their chunks: an upload that
/// completed meanwhile (its call dropped while the writer made it a
/// document) is no longer there, and its chunks are the document's. A
/// sweep also removes chunks no upload or document names: written through
/// the pool by a call dropped after its upload was already removed.
pub async fn drop_uploads(
    conn: &mut PgConnection,
    which: &UploadsToDrop,
) -> Result<u64, StoreError> {
    let ids: Vec<String> = match which {
        UploadsToDrop::One(id) => {
            sqlx::query_scalar("DELETE FROM uploads WHERE upload_id = $1 RETURNING upload_id")
                .bind(id)
                .fetch_all(&mut *conn)
                .await?
        }
        UploadsToDrop::StartedBefore(at) => {
            sqlx::query_scalar("DELETE FROM uploads WHERE started_at < $1 RETURNING upload_id")
                .bind(micros(*at))
                .fetch_all(&mut *conn)
                .await?
        }
    };
    sqlx::query("DELETE FROM document_chunks WHERE upload_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    if let UploadsToDrop::StartedBefore(_) = which {
        // A chunk is written only after its upload's row committed, so one
        // whose upload is gone and which no document names is garbage.
        sqlx::query(
            "DELETE FROM document_chunks WHERE upload_id IN ( \
                 SELECT upload_id FROM document_chunks \
                 EXCEPT SELECT upload_id FROM uploads \
                 EXCEPT SELECT upload_id FROM documents WHERE upload_id IS NOT NULL)",
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(ids.len() as u64)
}

/// Makes a document of a finished upload, unless the same bytes are stored
/// already: then the upload's chunks go, and the stored document answers.
/// Two replicas finishing the same bytes at once are ordered by the run's
/// lock: the second sees the first's document.
pub async fn complete_upload(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    document: NewDocument,
) -> Result<DocumentRecord, StoreError> {
    let finished = sqlx::query("DELETE FROM uploads WHERE upload_id = $1")
        .bind(&document.upload_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if finished != 1 {
        return Err(StoreError::Database(format!(
            "upload {} is not in progress (abandoned or swept?)",
            document.upload_id
        )));
    }
    let existing: Option<(String, i64, i64)> =
        sqlx::query_as("SELECT media_type, size_bytes, stored_at FROM documents WHERE sha256 = $1")
            .bind(document.sha256.as_str())
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((media_type, size, stored_at)) = existing {
        sqlx::query("DELETE FROM document_chunks WHERE upload_id = $1")
            .bind(&document.upload_id)
            .execute(&mut *conn)
            .await?;
        return Ok(DocumentRecord {
            sha256: document.sha256,
            media_type,
            size_bytes: size as u64,
            stored_at: from_micros(stored_at)?,
            newly_stored: false,
        });
    }
    sqlx::query(
        "INSERT INTO documents (sha256, media_type, size_bytes, content, stored_at, upload_id) \
         VALUES ($1, $2, $3, '\\x'::bytea, $4, $5)",
    )
    .bind(document.sha256.as_str())
    .bind(&document.media_type)
    .bind(document.size_bytes as i64)
    .bind(micros(now))
    .bind(&document.upload_id)
    .execute(&mut *conn)
    .await?;
    let event = LedgerEvent::DocumentStored {
        sha256: document.sha256.clone(),
        media_type: document.media_type.clone(),
        size_bytes: document.size_bytes,
    };
    runs::append(conn, &[event], now).await?;
    Ok(DocumentRecord {
        sha256: document.sha256,
        media_type: document.media_type,
        size_bytes: document.size_bytes,
        stored_at: now,
        newly_stored: true,
    })
}
