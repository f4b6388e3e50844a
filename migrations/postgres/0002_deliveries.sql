-- §6 extracts and their deliveries, §6-1 form 402 revisions, and the
-- obligations (deadlines) the gateway watches.

CREATE TABLE extracts (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    extract_id   TEXT NOT NULL UNIQUE,
    filing_id    TEXT NOT NULL,
    bin_or_iin   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    due_date     TEXT NOT NULL,
    body         BYTEA NOT NULL
);
CREATE INDEX extracts_by_filing ON extracts (filing_id);

-- Which documents an extract references (FetchDocument checks this).
CREATE TABLE extract_documents (
    extract_id  TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    kind        TEXT NOT NULL
);
CREATE INDEX extract_documents_by_digest ON extract_documents (sha256);

CREATE TABLE extract_attempts (
    extract_id  TEXT NOT NULL,
    subscriber  TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    sent_at     BIGINT NOT NULL,
    PRIMARY KEY (extract_id, subscriber, attempt)
);

CREATE TABLE extract_acks (
    extract_id       TEXT NOT NULL,
    subscriber       TEXT NOT NULL,
    acknowledged_at  BIGINT NOT NULL,
    receipt          BYTEA NOT NULL,
    PRIMARY KEY (extract_id, subscriber)
);

CREATE TABLE obligations (
    seq            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    obligation_id  TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    due_date       TEXT NOT NULL,
    status         TEXT NOT NULL,
    filing_id      TEXT,
    extract_id     TEXT,
    year           BIGINT,
    quarter        BIGINT,
    fulfilled_at   BIGINT,
    created_at     BIGINT NOT NULL
);
CREATE INDEX obligations_by_status ON obligations (status, due_date);

CREATE TABLE form_revisions (
    year            BIGINT NOT NULL,
    quarter         BIGINT NOT NULL,
    revision        BIGINT NOT NULL,
    content_sha256  TEXT NOT NULL,
    body_sha256     TEXT NOT NULL,
    compiled_at     BIGINT NOT NULL,
    form            BYTEA NOT NULL,
    PRIMARY KEY (year, quarter, revision)
);

-- The reports each revision was compiled from.
CREATE TABLE form_revision_reports (
    year       BIGINT NOT NULL,
    quarter    BIGINT NOT NULL,
    revision   BIGINT NOT NULL,
    filing_id  TEXT NOT NULL
);
CREATE INDEX form_revision_reports_by_filing ON form_revision_reports (filing_id);

CREATE TABLE form_acks (
    year             BIGINT NOT NULL,
    quarter          BIGINT NOT NULL,
    revision         BIGINT NOT NULL,
    acknowledged_at  BIGINT NOT NULL,
    receipt          BYTEA NOT NULL,
    PRIMARY KEY (year, quarter, revision)
);
