//! The ledger's rows on PostgreSQL: the head a run chains on, and a run's
//! entries written as one `INSERT … SELECT FROM UNNEST` (one array per
//! column, so the statement's text never changes and stays prepared).

use sqlx::{PgConnection, Postgres, postgres::PgArguments, query::Query};

use crate::{
    domain::ledger::{Head, LedgerEntry},
    store::StoreError,
};

/// A query being bound.
pub type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// The ledger's last entry (the empty ledger's head if none). The caller
/// holds the write lock, so nobody appends after it meanwhile.
pub async fn head(conn: &mut PgConnection) -> Result<Head, StoreError> {
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM ledger ORDER BY seq DESC LIMIT 1")
            .fetch_optional(conn)
            .await?;
    Ok(head.map_or_else(Head::default, |(seq, hash)| Head { seq, hash }))
}

/// Entries to insert, column by column.
#[derive(Debug, Default)]
pub struct LedgerRows {
    seq: Vec<i64>,
    kind: Vec<String>,
    subject: Vec<String>,
    recorded_at: Vec<i64>,
    payload: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

/// Inserts [`LedgerRows`] bound as parameters `$1`…`$7`.
pub const INSERT: &str = "INSERT INTO ledger (seq, kind, subject, recorded_at, payload, \
    prev_hash, hash) SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], \
    $4::bigint[], $5::text[], $6::text[], $7::text[])";

impl LedgerRows {
    pub fn push(&mut self, entry: LedgerEntry) {
        self.seq.push(entry.seq);
        self.kind.push(entry.kind);
        self.subject.push(entry.subject);
        self.recorded_at.push(entry.recorded_at);
        self.payload.push(entry.payload);
        self.prev_hash.push(entry.prev_hash);
        self.hash.push(entry.hash);
    }

    /// Binds the seven columns, in order, as the next parameters of `query`.
    pub fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.seq)
            .bind(self.kind)
            .bind(self.subject)
            .bind(self.recorded_at)
            .bind(self.payload)
            .bind(self.prev_hash)
            .bind(self.hash)
    }

    /// Inserts the entries on their own.
    pub async fn insert(self, conn: &mut PgConnection) -> Result<(), StoreError> {
        if self.seq.is_empty() {
            return Ok(());
        }
        self.bind(sqlx::query(INSERT)).execute(conn).await?;
        Ok(())
    }
}
