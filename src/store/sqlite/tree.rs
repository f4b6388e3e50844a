//! The Merkle tree log on SQLite: sealing a commit (the writer, inside the
//! batch's transaction) and the reads proofs and evidence need.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use std::{collections::HashMap, sync::Arc};

use super::{facts, reads};
use crate::{
    domain::Sha256Hex,
    evidence::{
        merkle::{Hash, leaf_hash},
        note::Checkpoint,
        tree::{self, Frontier, NodeId},
    },
    signing::{self, KeyRecord, Signer, Standing},
    store::{
        LeafEvidence, Sealed, StoreError, StoredCheckpoint, from_micros, key_from_row, micros,
        missing_node, proof_from, recording, standing_from_row,
    },
};

/// Entries read at a time when the tree catches up with a long ledger.
const PAGE: u32 = 10_000;

/// Extends the tree over the entries appended since the last checkpoint and
/// stores a checkpoint of it signed by `signer`: at the end of every batch
/// that appended entries, and once at start over a ledger kept before the
/// tree was (its entries become the first leaves), or of the empty tree
/// on a new database (so there is always a checkpoint to witness). How it
/// was sealed, if a checkpoint was signed (with the nodes to prove what it
/// appended, unless that was more than a page: a whole ledger caught up).
/// `signer` is replaced by its successor if a rotation retired it
/// ([`current_key`]).
pub fn seal(
    conn: &Connection,
    signer: &mut Arc<Signer>,
    now: DateTime<Utc>,
) -> Result<Option<Sealed>, StoreError> {
    let latest = latest(conn)?;
    let size = latest.as_ref().map_or(0, |c| c.size);
    let head = facts::ledger_head(conn)?.seq as u64;
    if head <= size && latest.is_some() {
        return Ok(None);
    }
    current_key(conn, signer)?;
    let ids = Frontier::ids(size);
    let hashes = nodes(conn, &ids)?
        .into_iter()
        .zip(&ids)
        .map(|(hash, id)| hash.ok_or_else(|| missing_node(*id)))
        .collect::<Result<Vec<_>, _>>()?;
    let keep = head - size <= u64::from(PAGE);
    let mut kept: HashMap<NodeId, Hash> = if keep {
        ids.iter().copied().zip(hashes.iter().copied()).collect()
    } else {
        HashMap::new()
    };
    let mut frontier = Frontier::new(size, hashes).expect("one hash per id");
    let mut insert =
        conn.prepare_cached("INSERT INTO merkle_nodes (level, idx, hash) VALUES (?1, ?2, ?3)")?;
    loop {
        let page = leaves_after(conn, frontier.size())?;
        for &(seq, leaf) in &page {
            if seq as u64 != frontier.size() + 1 {
                return Err(StoreError::Corrupt(format!(
                    "ledger entry {seq} follows leaf {}: the ledger has a gap",
                    frontier.size()
                )));
            }
            for (id, hash) in frontier.append(leaf) {
                // Leaves are kept in their entries' rows.
                if id.level > 0 {
                    insert.execute(params![id.level, id.index as i64, &hash[..]])?;
                }
                if keep {
                    kept.insert(id, hash);
                }
            }
        }
        if page.len() < PAGE as usize {
            break;
        }
    }
    let checkpoint = Checkpoint {
        origin: signer.origin().to_owned(),
        size: frontier.size(),
        root: frontier.root(),
    };
    let note = signer.sign_checkpoint(&checkpoint);
    conn.prepare_cached(
        "INSERT INTO checkpoints (size, root, note, key_id, signed_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        checkpoint.size as i64,
        &checkpoint.root[..],
        note,
        signer.key_id(),
        micros(now)
    ])?;
    Ok(Some(Sealed {
        checkpoint: StoredCheckpoint {
            size: checkpoint.size,
            note,
            signed_at: now,
        },
        nodes: kept,
    }))
}

/// Keeps `signer` a key the history has valid: read in the commit's
/// transaction, which holds the write lock a rotation's transaction takes
/// too, so no checkpoint is signed by a key after its retirement. Retired
/// (by `minegate signing rotate`, from any process), the key at its file
/// takes over if the history has it valid; else the commit fails, and the
/// next one tries again.
fn current_key(conn: &Connection, signer: &mut Arc<Signer>) -> Result<(), StoreError> {
    let Standing::Retired(retired_at) = standing(conn, signer.key_id())? else {
        return Ok(());
    };
    let found = signer.reload()?;
    let found_standing = standing(conn, found.key_id())?;
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
fn standing(conn: &Connection, key_id: &str) -> Result<Standing, StoreError> {
    let row: Option<Option<i64>> = conn
        .prepare_cached("SELECT retired_at FROM signing_keys WHERE key_id = ?1")?
        .query_row([key_id], |row| row.get(0))
        .optional()?;
    standing_from_row(row)
}

/// The next page of (seq, leaf hash) after `size` leaves. Entries written
/// before the tree was have no leaf hash yet: it is computed from the
/// entry and written into its row.
fn leaves_after(conn: &Connection, size: u64) -> Result<Vec<(i64, Hash)>, StoreError> {
    let rows: Vec<(i64, Option<Vec<u8>>)> = conn
        .prepare_cached("SELECT seq, leaf FROM ledger WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
        .query_map(params![size as i64, PAGE], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })?
        .collect::<Result<_, _>>()?;
    if rows.iter().all(|(_, leaf)| leaf.is_some()) {
        return rows
            .into_iter()
            .map(|(seq, leaf)| Ok((seq, hash32(leaf.unwrap_or_default())?)))
            .collect();
    }
    let mut update = conn.prepare_cached("UPDATE ledger SET leaf = ?1 WHERE seq = ?2")?;
    reads::ledger_page(conn, size as i64, PAGE)?
        .into_iter()
        .map(|entry| {
            let leaf = leaf_hash(entry.leaf().1.as_bytes());
            update.execute(params![&leaf[..], entry.seq])?;
            Ok((entry.seq, leaf))
        })
        .collect()
}

fn hash32(bytes: Vec<u8>) -> Result<Hash, StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a Merkle hash is not 32 bytes".into()))
}

/// The latest checkpoint, if any.
pub fn latest(conn: &Connection) -> Result<Option<StoredCheckpoint>, StoreError> {
    Ok(conn
        .prepare_cached("SELECT size, note, signed_at FROM checkpoints ORDER BY size DESC LIMIT 1")?
        .query_row([], checkpoint_row)
        .optional()?)
}

/// Checkpoints after `after_size`, smallest first.
pub fn checkpoints(
    conn: &Connection,
    after_size: u64,
    limit: u32,
) -> Result<Vec<StoredCheckpoint>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT size, note, signed_at FROM checkpoints WHERE size > ?1 ORDER BY size LIMIT ?2",
        )?
        .query_map(params![after_size as i64, limit], checkpoint_row)?
        .collect::<Result<_, _>>()?)
}

fn checkpoint_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredCheckpoint> {
    let signed_at = row.get::<_, i64>(2)?;
    Ok(StoredCheckpoint {
        size: row.get::<_, i64>(0)? as u64,
        note: row.get(1)?,
        signed_at: from_micros(signed_at).map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Integer,
                error.into(),
            )
        })?,
    })
}

/// The stored hashes of `ids`, in order (`None` where there is none).
/// Leaves (level 0) are read from their entries' rows.
pub fn nodes(conn: &Connection, ids: &[NodeId]) -> Result<Vec<Option<Hash>>, StoreError> {
    let mut node =
        conn.prepare_cached("SELECT hash FROM merkle_nodes WHERE level = ?1 AND idx = ?2")?;
    let mut leaf = conn.prepare_cached("SELECT leaf FROM ledger WHERE seq = ?1")?;
    ids.iter()
        .map(|id| {
            let hash: Option<Option<Vec<u8>>> = if id.level == 0 {
                leaf.query_row([id.index as i64 + 1], |row| row.get(0))
                    .optional()?
            } else {
                node.query_row(params![id.level, id.index as i64], |row| row.get(0))
                    .optional()?
                    .map(Some)
            };
            hash.flatten().map(hash32).transpose()
        })
        .collect()
}

/// The ledger entry of `kind` about `subject` (each artifact has one).
fn entries_about(
    conn: &Connection,
    kind: &str,
    subject: &str,
) -> Result<Vec<crate::domain::ledger::LedgerEntry>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT seq, kind, subject, recorded_at, payload, prev_hash, hash FROM ledger \
             WHERE subject = ?1 AND kind = ?2 ORDER BY seq",
        )?
        .query_map(params![subject, kind], reads::ledger_row)?
        .collect::<Result<_, _>>()?)
}

/// See [`crate::store::Store::evidence`]: on one connection, in one go.
pub fn evidence(
    conn: &Connection,
    kind: &str,
    subject: &str,
    digest: &Sha256Hex,
) -> Result<Option<LeafEvidence>, StoreError> {
    let entries = entries_about(conn, kind, subject)?;
    let (Some(entry), Some(checkpoint)) = (recording(&entries, digest), latest(conn)?) else {
        return Ok(None);
    };
    let Some(plan) = tree::inclusion_plan((entry.seq - 1) as u64, checkpoint.size) else {
        return Ok(None);
    };
    let ids = tree::nodes_of(&plan);
    let proof = proof_from(&plan, &ids, &nodes(conn, &ids)?)?;
    Ok(Some(LeafEvidence::of(entry, checkpoint, proof)))
}

/// The key history, oldest first.
pub fn signing_keys(conn: &Connection) -> Result<Vec<KeyRecord>, StoreError> {
    let rows = conn
        .prepare_cached(
            "SELECT key_id, name, public_key, created_at, retired_at FROM signing_keys \
             ORDER BY created_at, key_id",
        )?
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Vec<u8>>(2)?,
                row.get::<_, i64>(3)?,
                row.get::<_, Option<i64>>(4)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(key_from_row).collect()
}

/// Adds `key` to the history; with `retire_at` (a rotation, its instant
/// taken in this transaction), every other key still valid is retired
/// then, or at the latest checkpoint's time if that is later (another
/// process's clock ahead): never before a checkpoint it signed. Reading
/// every checkpoint's time is a scan, once per rotation.
pub fn add_signing_key(
    conn: &Connection,
    key: &KeyRecord,
    retire_at: Option<DateTime<Utc>>,
) -> Result<(), StoreError> {
    if let Some(at) = retire_at {
        conn.prepare_cached(
            "UPDATE signing_keys \
             SET retired_at = max(?1, (SELECT coalesce(max(signed_at), 0) FROM checkpoints)) \
             WHERE retired_at IS NULL AND key_id <> ?2",
        )?
        .execute(params![micros(at), key.key_id])?;
    }
    conn.prepare_cached(
        "INSERT INTO signing_keys (key_id, name, public_key, created_at, retired_at) \
         VALUES (?1, ?2, ?3, ?4, NULL) ON CONFLICT (key_id) DO NOTHING",
    )?
    .execute(params![
        key.key_id,
        key.name,
        key.public_key,
        micros(key.created_at)
    ])?;
    Ok(())
}
