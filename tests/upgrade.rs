//! Upgrades lose nothing. `tests/fixtures/release-0.1-demo.db` was written
//! by release 0.1.0, before the store was rebuilt (see the README there). On
//! SQLite a copy of it is opened as it is; on PostgreSQL its rows are loaded
//! into a database made by that release's migrations. Either is migrated in
//! place by today's code and then serves: every stored receipt (filings,
//! energy and finance acknowledgements) replays byte for byte, the ledger
//! verifies whole, and new filings chain on after it.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::{
    fixtures::{date, generated_bin, start_notification, upload_documents},
    *,
};
use minegate::evidence::verify::{self as evidence, ArtifactKind, EvidenceError};
use minegate::proto::v1::{
    AcknowledgeExtractRequest, AcknowledgeFormRequest, GetCheckpointRequest, GetSigningKeysRequest,
    QuarterlyReport, StartNotification, TerminationNotice, VerifyLedgerRequest,
    compliance_service_client::ComplianceServiceClient,
    energy_extract_service_client::EnergyExtractServiceClient,
    filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
};
use prost::Message;

on_both_backends!(a_database_of_the_previous_release_is_migrated_in_place_and_serves);

/// Entries in the fixture's ledger.
const FIXTURE_LEDGER: u64 = 88;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/release-0.1-demo.db")
}

/// Rows of the fixture, read with SQLite directly.
fn fixture_rows<T>(sql: &str, row: impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<T>) -> Vec<T> {
    // Immutable: read as it is, no WAL or shared-memory file made beside it.
    let conn = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", fixture().display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let mut statement = conn.prepare(sql).unwrap();
    statement
        .query_map([], row)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

async fn a_database_of_the_previous_release_is_migrated_in_place_and_serves(backend: Backend) {
    // The old release's data where a gateway's database goes, then the
    // gateway started on it.
    let dir = fresh_folder();
    let mut config = test_config(&dir);
    // The PostgreSQL database made for the test, dropped at its end.
    let _database = match backend {
        Backend::Sqlite => {
            std::fs::copy(fixture(), sqlite_path(&config.database_url).unwrap()).unwrap();
            None
        }
        Backend::Postgres => {
            let Some(server) = postgres_url() else {
                return;
            };
            let made = fresh_postgres_database(&server).await;
            config.database_url = made.url.clone();
            load_fixture_into_postgres(&config.database_url).await;
            Some(made)
        }
    };
    let url = config.database_url.clone();
    // A document of 600 KiB stored whole, as that release stored them (its
    // own are all under a chunk): it must become three chunks.
    let big: Vec<u8> = (0..600 * 1024).map(|i| (i % 251) as u8).collect();
    let hex: String = big.iter().map(|b| format!("{b:02x}")).collect();
    let literal = match backend {
        Backend::Sqlite => format!("X'{hex}'"),
        Backend::Postgres => format!("decode('{hex}', 'hex')"),
    };
    let inserted = execute(
        &url,
        &format!(
            "INSERT INTO documents (sha256, media_type, size_bytes, content, stored_at) \
             VALUES ('big', 'application/pdf', {}, {literal}, 0)",
            big.len()
        ),
    )
    .await;
    assert_eq!(inserted, 1);
    let app = start(config, dir).await;

    // Migrated in place, past the versions the old release recorded.
    match backend {
        Backend::Sqlite => {
            assert_eq!(scalar(&url, "PRAGMA user_version").await, 6);
        }
        Backend::Postgres => {
            assert_eq!(
                scalar(&url, "SELECT COUNT(*) FROM _sqlx_migrations").await,
                6
            );
            assert_eq!(
                scalar(
                    &url,
                    "SELECT COUNT(*) FROM ip_ranges WHERE block IS NOT NULL"
                )
                .await,
                6
            );
        }
    }

    // Documents stored whole are chunks now, byte for byte.
    let pieces = chunks(&url, "big").await;
    assert_eq!(
        pieces.iter().map(Vec::len).collect::<Vec<_>>(),
        [262144, 262144, 90112]
    );
    assert!(pieces.concat() == big);
    assert_eq!(
        scalar(
            &url,
            "SELECT COUNT(*) FROM documents WHERE upload_id = sha256"
        )
        .await,
        24
    );
    // And the energy ministry fetches one it was sent, as it was stored.
    let (sha256, content) = fixture_rows(
        "SELECT doc.sha256, doc.content FROM documents doc WHERE doc.sha256 IN \
         (SELECT d.sha256 FROM extract_documents d JOIN extract_attempts a USING (extract_id)) \
         ORDER BY doc.size_bytes DESC LIMIT 1",
        |row| Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?)),
    )
    .remove(0);
    let mut fetched = Vec::new();
    let mut stream = EnergyExtractServiceClient::new(app.channel("energy").await)
        .fetch_document(minegate::proto::v1::FetchDocumentRequest { sha256 })
        .await
        .unwrap()
        .into_inner();
    while let Some(message) = stream.message().await.unwrap() {
        if let Some(minegate::proto::v1::document_chunk::Part::Data(data)) = message.part {
            fetched.extend(data);
        }
    }
    assert_eq!(fetched, content);

    // The old ledger's entries are the Merkle tree's first leaves, under
    // one signed checkpoint, by the key now in the key history.
    // (SQLite keeps each leaf's hash in its entry's row, PostgreSQL at level 0.)
    let leaves = match backend {
        Backend::Sqlite => "SELECT COUNT(*) FROM ledger WHERE leaf IS NOT NULL",
        Backend::Postgres => "SELECT COUNT(*) FROM merkle_nodes WHERE level = 0",
    };
    assert_eq!(scalar(&url, leaves).await, FIXTURE_LEDGER as i64);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM checkpoints").await, 1);
    assert_eq!(scalar(&url, "SELECT COUNT(*) FROM signing_keys").await, 1);

    // Every filing replays: same caller, same key, same payload.
    let authority = app.channel("authority").await;
    let mut filings = FilingServiceClient::new(authority.clone());
    let keys = ComplianceServiceClient::new(app.channel("finance").await)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert_eq!(
        keys.len(),
        1,
        "the key in use, added to the new key history"
    );
    let stored = fixture_rows(
        "SELECT kind, body, receipt FROM filings ORDER BY seq",
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, Vec<u8>>(1)?,
                row.get::<_, Vec<u8>>(2)?,
            ))
        },
    );
    assert_eq!(stored.len(), 13);
    for (kind, body, receipt) in &stored {
        let replayed = match kind.as_str() {
            "START_NOTIFICATION" => {
                filings
                    .submit_start_notification(StartNotification::decode(body.as_slice()).unwrap())
                    .await
            }
            "QUARTERLY_REPORT" => {
                filings
                    .submit_quarterly_report(QuarterlyReport::decode(body.as_slice()).unwrap())
                    .await
            }
            "TERMINATION_NOTICE" => {
                filings
                    .submit_termination_notice(TerminationNotice::decode(body.as_slice()).unwrap())
                    .await
            }
            other => panic!("a filing kind {other:?}"),
        }
        .unwrap()
        .into_inner();
        // The old receipt, as the old release signed it, and the ledger it
        // was recorded in proves it: its entries are the tree's first leaves.
        assert_eq!(
            &replayed.evidence.as_ref().unwrap().artifact,
            receipt,
            "{kind} receipt"
        );
        #[allow(deprecated)]
        let signed = replayed.signature.is_some();
        assert!(signed, "an old receipt keeps its old signature");
        evidence::verify(ArtifactKind::Receipt, replayed.evidence.as_ref(), &keys).unwrap();
    }

    // Every acknowledgement repeats its first receipt.
    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    let acks = fixture_rows("SELECT extract_id, receipt FROM extract_acks", |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Vec<u8>>(1)?))
    });
    assert_eq!(acks.len(), 12);
    for (extract_id, receipt) in &acks {
        let repeated = energy
            .acknowledge(AcknowledgeExtractRequest {
                extract_id: extract_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(&repeated.evidence.as_ref().unwrap().artifact, receipt);
        evidence::verify(ArtifactKind::ExtractAck, repeated.evidence.as_ref(), &keys).unwrap();
    }
    let mut finance = FinanceServiceClient::new(app.channel("finance").await);
    let forms = fixture_rows(
        "SELECT r.year, r.quarter, r.revision, r.body_sha256, a.receipt \
         FROM form_revisions r JOIN form_acks a USING (year, quarter, revision)",
        |row| {
            Ok((
                row.get::<_, i32>(0)?,
                row.get::<_, i32>(1)?,
                row.get::<_, u32>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Vec<u8>>(4)?,
            ))
        },
    );
    assert_eq!(forms.len(), 1);
    for (year, quarter, revision, body_sha256, receipt) in forms {
        let repeated = finance
            .acknowledge(AcknowledgeFormRequest {
                year,
                quarter,
                revision,
                body_sha256,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(repeated.evidence.as_ref().unwrap().artifact, receipt);
        // The old release's FORM_ACKNOWLEDGED entries name no receipt digest:
        // such an acknowledgement is in the log, but not tied to its bytes.
        assert_eq!(
            evidence::verify(ArtifactKind::FormAck, repeated.evidence.as_ref(), &keys),
            Err(EvidenceError::BadEntry(
                "the payload does not record the artifact's digest"
            ))
        );
    }

    // The old ledger verifies whole; replays and repeats added nothing: the
    // tree built over it at the first start is under its one checkpoint.
    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    assert_eq!(verify(&mut compliance).await, (true, FIXTURE_LEDGER));
    let checkpoint = compliance
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(checkpoint.size, FIXTURE_LEDGER);

    // New filings chain on: the next register number, the ledger intact.
    let documents = upload_documents(authority.clone(), "after the upgrade").await;
    let receipt = filings
        .submit_start_notification(start_notification(
            &generated_bin(500),
            "after-upgrade",
            date(2026, 9, 1),
            &["37.9.200.0/24"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(receipt.register_number, "KZ-DM-000007");
    // Three documents, then the extract and the acceptance.
    assert_eq!(
        verify(&mut compliance).await,
        (true, FIXTURE_LEDGER + 3 + 2)
    );
    app.gateway.shutdown().await.unwrap();
}

/// The chunks of the document stored from `upload_id`, in order.
async fn chunks(url: &str, upload_id: &str) -> Vec<Vec<u8>> {
    let sql = "SELECT data FROM document_chunks WHERE upload_id = $1 ORDER BY idx";
    if let Some(path) = sqlite_path(url) {
        let conn = rusqlite::Connection::open(path).unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        statement
            .query_map([upload_id], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let rows = sqlx::query_scalar(sql)
            .bind(upload_id)
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        rows
    }
}

/// The ledger's verification: (intact, entries checked).
async fn verify(
    compliance: &mut ComplianceServiceClient<tonic::transport::Channel>,
) -> (bool, u64) {
    let verification = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    (verification.intact, verification.entries_checked)
}

/// Makes the PostgreSQL schema of the old release (its migrations 1–3, as
/// sqlx records them) in `url` and copies the fixture's rows into it, as
/// that release would have written them there (the same tables and
/// encodings on both backends).
async fn load_fixture_into_postgres(url: &str) {
    use sqlx::Connection as _;
    let mut old = sqlx::migrate!("migrations/postgres");
    old.migrations = old
        .migrations
        .iter()
        .filter(|m| m.version <= 3)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    old.run(&mut conn).await.unwrap();
    let tables = fixture_rows(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name NOT IN ('_sqlx_migrations', 'ip_prefix_lengths')",
        |row| row.get::<_, String>(0),
    );
    assert_eq!(tables.len(), 14);
    for table in &tables {
        copy_table(&mut conn, table).await;
    }
    // Identity columns go on after the copied rows.
    for table in ["filings", "findings", "extracts", "obligations"] {
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'seq'), \
             (SELECT MAX(seq) FROM {table}))"
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
    conn.close().await.unwrap();
}

/// Copies one table's rows from the fixture, each value bound as the
/// PostgreSQL column's type (bigint, text or bytea).
async fn copy_table(conn: &mut sqlx::PgConnection, table: &str) {
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_name = $1 ORDER BY ordinal_position",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    let columns: Vec<&str> = types.iter().map(|(c, _)| c.as_str()).collect();
    let rows = fixture_rows(
        &format!("SELECT {} FROM {table}", columns.join(", ")),
        |row| {
            (0..columns.len())
                .map(|i| row.get::<_, rusqlite::types::Value>(i))
                .collect::<rusqlite::Result<Vec<_>>>()
        },
    );
    let placeholders: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({})",
        columns.join(", "),
        placeholders.join(", ")
    );
    for row in rows {
        let mut query = sqlx::query(&sql);
        for ((_, data_type), value) in types.iter().zip(row) {
            use rusqlite::types::Value;
            query = match (data_type.as_str(), value) {
                ("bigint", Value::Integer(n)) => query.bind(Some(n)),
                ("bigint", Value::Null) => query.bind(None::<i64>),
                ("text", Value::Text(s)) => query.bind(Some(s)),
                ("text", Value::Null) => query.bind(None::<String>),
                ("bytea", Value::Blob(b)) => query.bind(Some(b)),
                (data_type, value) => panic!("{table}: {value:?} into {data_type}"),
            };
        }
        query.execute(&mut *conn).await.unwrap();
    }
}
