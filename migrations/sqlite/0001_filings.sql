-- Documents, filings, the register, findings, IP ranges and the ledger.
-- Instants are microseconds since the Unix epoch (UTC); civil dates are
-- 'YYYY-MM-DD' text (dates in Asia/Almaty).

CREATE TABLE documents (
    sha256      TEXT PRIMARY KEY,
    media_type  TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    content     BLOB NOT NULL,
    stored_at   INTEGER NOT NULL
);

CREATE TABLE filings (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    filing_id       TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    bin_or_iin      TEXT NOT NULL,
    caller          TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_sha256  TEXT NOT NULL,
    year            INTEGER,
    quarter         INTEGER,
    revision        INTEGER NOT NULL,
    superseded_by   TEXT,
    received_at     INTEGER NOT NULL,
    body            BLOB NOT NULL,
    receipt         BLOB NOT NULL,
    UNIQUE (caller, idempotency_key)
);
CREATE INDEX filings_by_quarter ON filings (bin_or_iin, kind, year, quarter);

CREATE TABLE register (
    seq                 INTEGER PRIMARY KEY,
    register_number     TEXT NOT NULL UNIQUE,
    bin_or_iin          TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    legal_address       TEXT NOT NULL,
    activity_kind       TEXT NOT NULL,
    status              TEXT NOT NULL,
    registered_at       INTEGER NOT NULL,
    start_filing_id     TEXT NOT NULL,
    planned_start_date  TEXT NOT NULL,
    required_power_kw   INTEGER NOT NULL,
    last_year           INTEGER,
    last_quarter        INTEGER,
    activity_end_date   TEXT,
    updated_at          INTEGER NOT NULL
);

CREATE TABLE ip_ranges (
    bin_or_iin   TEXT NOT NULL,
    cidr         TEXT NOT NULL,
    range_start  BLOB NOT NULL,
    range_end    BLOB NOT NULL,
    filing_id    TEXT NOT NULL
);
CREATE INDEX ip_ranges_by_start ON ip_ranges (range_start);
CREATE INDEX ip_ranges_by_owner ON ip_ranges (bin_or_iin);

CREATE TABLE findings (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    finding_id   TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    bin_or_iin   TEXT NOT NULL,
    filing_id    TEXT NOT NULL,
    days         INTEGER NOT NULL,
    year         INTEGER,
    quarter      INTEGER,
    detail       TEXT NOT NULL,
    detected_at  INTEGER NOT NULL
);
CREATE INDEX findings_by_filing ON findings (filing_id);

CREATE TABLE ledger (
    seq          INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL,
    subject      TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL,
    payload      TEXT NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
