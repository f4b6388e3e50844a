//! The Merkle tree log on PostgreSQL: sealing a commit (the writer, inside
//! the batch's transaction and under its write lock) and the reads proofs
//! and evidence need. Node look-ups are one statement for all of a proof's
//! nodes, whatever their number.

use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use crate::{
    domain::Sha256Hex,
    domain::ledger::LedgerEntry,
    evidence::{
        merkle::{Hash, leaf_hash},
        note::Checkpoint,
        tree::{self, Frontier, NodeId},
    },
    signing::{self, KeyRecord, Signer, Standing},
    store::{
        KeyRow, LeafEvidence, Sealed, StoreError, StoredCheckpoint, from_micros, key_from_row,
        micros, missing_node, proof_from, recording, standing_from_row,
    },
};

/// Entries read at a time when the tree catches up with a long ledger.
const PAGE: i64 = 10_000;

/// A ledger row's columns, as selected everywhere.
pub type EntryRow = (i64, String, String, i64, String, String, String);

pub fn entry((seq, kind, subject, recorded_at, payload, prev_hash, hash): EntryRow) -> LedgerEntry {
    LedgerEntry {
        seq,
        kind,
        subject,
        recorded_at,
        payload,
        prev_hash,
        hash,
    }
}

/// Extends the tree over the entries appended since the last checkpoint and
/// stores a checkpoint of it signed by `signer` (see the SQLite twin,
/// `store::sqlite::tree::seal`). The caller holds the write lock.
pub async fn seal(
    conn: &mut PgConnection,
    signer: &mut Arc<Signer>,
    now: DateTime<Utc>,
) -> Result<Option<Sealed>, StoreError> {
    let size: Option<i64> = sqlx::query_scalar("SELECT max(size) FROM checkpoints")
        .fetch_one(&mut *conn)
        .await?;
    let (signed_before, size) = (size.is_some(), size.unwrap_or(0) as u64);
    let head: Option<i64> = sqlx::query_scalar("SELECT max(seq) FROM ledger")
        .fetch_one(&mut *conn)
        .await?;
    if head.unwrap_or(0) as u64 <= size && signed_before {
        return Ok(None);
    }
    current_key(&mut *conn, signer).await?;
    let ids = Frontier::ids(size);
    let hashes = nodes(&mut *conn, &ids)
        .await?
        .into_iter()
        .zip(&ids)
        .map(|(hash, id)| hash.ok_or_else(|| missing_node(*id)))
        .collect::<Result<Vec<_>, _>>()?;
    let keep = head.unwrap_or(0) as u64 - size <= PAGE as u64;
    let mut kept: HashMap<NodeId, Hash> = if keep {
        ids.iter().copied().zip(hashes.iter().copied()).collect()
    } else {
        HashMap::new()
    };
    let mut frontier = Frontier::new(size, hashes).expect("one hash per id");
    loop {
        let page: Vec<EntryRow> = sqlx::query_as(
            "SELECT seq, kind, subject, recorded_at, payload, prev_hash, hash FROM ledger \
             WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(frontier.size() as i64)
        .bind(PAGE)
        .fetch_all(&mut *conn)
        .await?;
        let read = page.len();
        let (mut levels, mut indexes, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        for row in page {
            let entry = entry(row);
            let (index, data) = entry.leaf();
            if index != frontier.size() {
                return Err(StoreError::Corrupt(format!(
                    "ledger entry {} follows leaf {}: the ledger has a gap",
                    entry.seq,
                    frontier.size()
                )));
            }
            for (id, hash) in frontier.append(leaf_hash(data.as_bytes())) {
                if keep {
                    kept.insert(id, hash);
                }
                levels.push(i16::from(id.level));
                indexes.push(id.index as i64);
                hashes.push(hash.to_vec());
            }
        }
        sqlx::query(
            "INSERT INTO merkle_nodes (level, idx, hash) \
             SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::bytea[])",
        )
        .bind(levels)
        .bind(indexes)
        .bind(hashes)
        .execute(&mut *conn)
        .await?;
        if read < PAGE as usize {
            break;
        }
    }
    let checkpoint = Checkpoint {
        origin: signer.origin().to_owned(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = signer.sign_checkpoint(&checkpoint);
    sqlx::query(
        "INSERT INTO checkpoints (size, root, note, key_id, signed_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(checkpoint.size as i64)
    .bind(checkpoint.root.to_vec())
    .bind(&note)
    .bind(signer.key_id())
    .bind(micros(now))
    .execute(&mut *conn)
    .await?;
    Ok(Some(Sealed {
        checkpoint: StoredCheckpoint {
            size: checkpoint.size,
            note,
            signed_at: now,
        },
        nodes: kept,
    }))
}

/// Keeps `signer` a key the history has valid, under the write lock a
/// rotation's transaction takes too (see the SQLite twin,
/// `store::sqlite::tree::current_key`). The key file is read here, on the
/// runtime: a few hundred bytes, once per rotation (or per commit while a
/// replica waits for its copy).
async fn current_key(conn: &mut PgConnection, signer: &mut Arc<Signer>) -> Result<(), StoreError> {
    let Standing::Retired(retired_at) = standing(&mut *conn, signer.key_id()).await? else {
        return Ok(());
    };
    let found = signer.reload()?;
    let found_standing = standing(&mut *conn, found.key_id()).await?;
    let next = signing::successor(signer, retired_at, found, found_standing)?;
    tracing::warn!(
        retired = signer.key_id(),
        key = next.key_id(),
        "the signing key was retired by a rotation; signing with the key that replaced it"
    );
    *signer = Arc::new(next);
    Ok(())
}

/// What the history says of `key_id`: one look-up by its primary key.
async fn standing(conn: &mut PgConnection, key_id: &str) -> Result<Standing, StoreError> {
    let row: Option<Option<i64>> =
        sqlx::query_scalar("SELECT retired_at FROM signing_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(conn)
            .await?;
    standing_from_row(row)
}

/// The stored hashes of `ids`, in order, in one statement.
pub async fn nodes<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    ids: &[NodeId],
) -> Result<Vec<Option<Hash>>, StoreError> {
    let levels: Vec<i16> = ids.iter().map(|id| i16::from(id.level)).collect();
    let indexes: Vec<i64> = ids.iter().map(|id| id.index as i64).collect();
    let rows: Vec<(i16, i64, Vec<u8>)> = sqlx::query_as(
        "SELECT n.level, n.idx, n.hash FROM merkle_nodes n \
         JOIN UNNEST($1::smallint[], $2::bigint[]) AS w(level, idx) \
         ON n.level = w.level AND n.idx = w.idx",
    )
    .bind(levels)
    .bind(indexes)
    .fetch_all(conn)
    .await?;
    let mut found = HashMap::with_capacity(rows.len());
    for (level, index, hash) in rows {
        let hash: Hash = hash
            .try_into()
            .map_err(|_| StoreError::Corrupt("a Merkle node is not 32 bytes".into()))?;
        found.insert((level, index), hash);
    }
    Ok(ids
        .iter()
        .map(|id| found.get(&(i16::from(id.level), id.index as i64)).copied())
        .collect())
}

pub async fn latest(pool: &PgPool) -> Result<Option<StoredCheckpoint>, StoreError> {
    let row: Option<(i64, String, i64)> =
        sqlx::query_as("SELECT size, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    row.map(checkpoint).transpose()
}

fn checkpoint((size, note, signed_at): (i64, String, i64)) -> Result<StoredCheckpoint, StoreError> {
    Ok(StoredCheckpoint {
        size: size as u64,
        note,
        signed_at: from_micros(signed_at)?,
    })
}

pub async fn checkpoints(
    pool: &PgPool,
    after_size: u64,
    limit: u32,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT size, note, signed_at FROM checkpoints WHERE size > $1 ORDER BY size LIMIT $2",
    )
    .bind(after_size as i64)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(checkpoint).collect()
}

async fn entries_about(
    pool: &PgPool,
    kind: &str,
    subject: &str,
) -> Result<Vec<LedgerEntry>, StoreError> {
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT seq, kind, subject, recorded_at, payload, prev_hash, hash FROM ledger \
         WHERE subject = $1 AND kind = $2 ORDER BY seq",
    )
    .bind(subject)
    .bind(kind)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(entry).collect())
}

/// See [`crate::store::Store::evidence`]: three statements.
pub async fn evidence(
    pool: &PgPool,
    kind: &str,
    subject: &str,
    digest: &Sha256Hex,
) -> Result<Option<LeafEvidence>, StoreError> {
    let entries = entries_about(pool, kind, subject).await?;
    let (Some(entry), Some(checkpoint)) = (recording(&entries, digest), latest(pool).await?) else {
        return Ok(None);
    };
    let Some(plan) = tree::inclusion_plan((entry.seq - 1) as u64, checkpoint.size) else {
        return Ok(None);
    };
    let ids = tree::nodes_of(&plan);
    let proof = proof_from(&plan, &ids, &nodes(pool, &ids).await?)?;
    Ok(Some(LeafEvidence::of(entry, checkpoint, proof)))
}

pub async fn signing_keys<'c>(
    conn: impl sqlx::PgExecutor<'c>,
) -> Result<Vec<KeyRecord>, StoreError> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT key_id, name, public_key, created_at, retired_at FROM signing_keys \
         ORDER BY created_at, key_id",
    )
    .fetch_all(conn)
    .await?;
    rows.into_iter().map(key_from_row).collect()
}

/// See the SQLite twin, `store::sqlite::tree::add_signing_key`: a key is
/// never retired before a checkpoint it signed.
pub async fn add_signing_key(
    conn: &mut PgConnection,
    key: &KeyRecord,
    retire_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    if let Some(at) = retire_at {
        sqlx::query(
            "UPDATE signing_keys \
             SET retired_at = greatest($1, (SELECT coalesce(max(signed_at), 0) FROM checkpoints)) \
             WHERE retired_at IS NULL AND key_id <> $2",
        )
        .bind(micros(at))
        .bind(&key.key_id)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query(
        "INSERT INTO signing_keys (key_id, name, public_key, created_at, retired_at) \
         VALUES ($1, $2, $3, $4, NULL) ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(&key.key_id)
    .bind(&key.name)
    .bind(&key.public_key)
    .bind(micros(key.created_at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}
