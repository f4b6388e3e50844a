-- Documents are stored in chunks, written as an upload's bytes arrive, so no
-- document is ever held whole in memory (docs/architecture.md §4).
-- An upload writes its chunks under its own id; `uploads` lists those not
-- finished, with when they started. A finished, verified upload becomes a
-- `documents` row naming its chunks by `upload_id`, in the same transaction
-- that removes it from `uploads`: until then no document is visible. An
-- upload that fails or is abandoned has its chunks removed, at once or by
-- the sweep of uploads older than `limits.abandoned_upload_ms`.
CREATE TABLE document_chunks (
    upload_id  TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (upload_id, idx)
) WITHOUT ROWID;

CREATE TABLE uploads (
    upload_id   TEXT PRIMARY KEY,
    started_at  INTEGER NOT NULL
);
CREATE INDEX uploads_by_start ON uploads (started_at);

-- A document's chunks. `content` is kept for the schema's sake and is
-- empty from now on.
ALTER TABLE documents ADD COLUMN upload_id TEXT;

-- Documents stored whole by earlier releases become chunks of 256 KiB
-- (262144 bytes, the size the gateway writes), under their digest.
INSERT INTO document_chunks (upload_id, idx, data)
WITH RECURSIVE pieces (sha256, idx) AS (
    SELECT sha256, 0 FROM documents
    UNION ALL
    SELECT p.sha256, p.idx + 1 FROM pieces p JOIN documents d ON d.sha256 = p.sha256
    WHERE (p.idx + 1) * 262144 < d.size_bytes
)
SELECT p.sha256, p.idx, substr(d.content, p.idx * 262144 + 1, 262144)
FROM pieces p JOIN documents d ON d.sha256 = p.sha256;
UPDATE documents SET upload_id = sha256, content = X'';
