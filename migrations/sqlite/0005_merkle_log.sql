-- The ledger as an RFC 9162 Merkle tree log (docs/evidence.md). Leaf i is
-- ledger entry seq = i + 1; its hash is kept in the entry's row (`leaf`,
-- written with it). `merkle_nodes` holds the hash of every larger perfect
-- subtree (2^level leaves from idx * 2^level, level >= 1), each written
-- once in the commit that completes it; proofs are folds of these.
-- `checkpoints` holds the signed checkpoint (C2SP signed note) each commit
-- that appended entries ends with. `signing_keys` is every key that ever
-- signed a checkpoint here, with its validity. Existing entries become the
-- first leaves when the gateway next starts (the tree is built from them).
ALTER TABLE ledger ADD COLUMN leaf BLOB;

CREATE TABLE merkle_nodes (
    level  INTEGER NOT NULL,
    idx    INTEGER NOT NULL,
    hash   BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    size       INTEGER PRIMARY KEY,
    root       BLOB NOT NULL,
    note       TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    signed_at  INTEGER NOT NULL
);

CREATE TABLE signing_keys (
    key_id      TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    public_key  BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

-- An artifact's entry is found by what it is about.
CREATE INDEX ledger_subject ON ledger (subject, kind);
