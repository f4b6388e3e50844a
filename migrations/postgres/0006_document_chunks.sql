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
    idx        BIGINT NOT NULL,
    data       BYTEA NOT NULL,
    PRIMARY KEY (upload_id, idx)
);

CREATE TABLE uploads (
    upload_id   TEXT PRIMARY KEY,
    started_at  BIGINT NOT NULL
);
CREATE INDEX uploads_by_start ON uploads (started_at);

-- A document's chunks. `content` is kept for the schema's sake and is
-- empty from now on.
ALTER TABLE documents ADD COLUMN upload_id TEXT;

-- Documents stored whole by earlier releases become chunks of 256 KiB
-- (262144 bytes, the size the gateway writes), under their digest.
INSERT INTO document_chunks (upload_id, idx, data)
SELECT d.sha256, i, substring(d.content FROM (i * 262144 + 1)::int FOR 262144)
FROM documents d, generate_series(0, GREATEST(d.size_bytes - 1, 0) / 262144) AS i;
UPDATE documents SET upload_id = sha256, content = '\x'::bytea;
