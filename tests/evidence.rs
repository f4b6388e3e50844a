//! Evidence anyone can check, end to end on both backends: every artifact
//! kind verifies through the ministries' command-line clients, which keep
//! the last checkpoint they saw; tampering of each kind is detected and
//! named; a key rotation leaves earlier evidence verifiable; a replica
//! with a key the history does not know refuses to start; a rotation
//! while the gateway runs takes effect at its next commit, and a
//! checkpoint signed by a key after its retirement is named.

#[macro_use]
mod common;

use common::{fixtures::*, *};
use minegate::{
    evidence::{
        merkle::ProofError,
        note::{self, Checkpoint},
        verify::{ArtifactKind, EvidenceError, open_checkpoint, verify},
    },
    proto::v1::{
        EnergyExtract, FilingReceipt, GetCheckpointRequest, GetFilingRequest,
        GetSigningKeysRequest, SigningKey, VerifyLedgerRequest,
        compliance_service_client::ComplianceServiceClient,
        filing_service_client::FilingServiceClient,
    },
    server,
    signing::Signer,
    store::{self, StoredCheckpoint},
};

on_both_backends!(
    every_artifact_verifies_through_the_clis_and_tampering_is_named,
    after_a_rotation_earlier_evidence_verifies_and_unknown_keys_are_refused,
    a_rotation_while_the_gateway_runs_takes_effect_at_its_next_commit,
    a_gateway_whose_key_file_still_holds_the_retired_key_signs_nothing_until_it_has_the_new_one,
);

async fn keys(app: &TestApp, role: &str) -> Vec<SigningKey> {
    ComplianceServiceClient::new(app.channel(role).await)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// `minegate energy subscribe --once --out OUT`, as the energy ministry.
async fn subscribe_once(app: &TestApp, out: &std::path::Path) -> std::process::Output {
    let out = out.to_str().unwrap();
    as_role(
        app,
        "energy",
        &["energy", "subscribe", "--once", "--out", out],
    )
    .await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn every_artifact_verifies_through_the_clis_and_tampering_is_named(backend: Backend) {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "evidence").await;
    let mut filings = FilingServiceClient::new(authority);
    let pool = ["37.101.0.0/16"];
    let start = filings
        .submit_start_notification(start_notification(
            BIN_A,
            "start",
            date(2026, 2, 10),
            &pool,
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    clock.set("2026-04-06T06:00:00Z");
    let report = filings
        .submit_quarterly_report(quarterly_report(
            BIN_A, "q1", 2026, 1, 1_234_567, &pool, &documents,
        ))
        .await
        .unwrap()
        .into_inner();

    // The receipts: the ministries' role may read the keys too.
    let keys = keys(&app, "energy").await;
    assert_eq!(keys.len(), 1);
    for receipt in [&start, &report] {
        verify(ArtifactKind::Receipt, receipt.evidence.as_ref(), &keys).unwrap();
    }

    // The energy ministry: two extracts and their acknowledgements, each
    // verified by the client before it writes or acknowledges.
    let energy_out = tempfile::tempdir().unwrap();
    let energy = subscribe_once(&app, energy_out.path()).await;
    assert!(energy.status.success(), "{}", text(&energy.stderr));
    assert!(text(&energy.stdout).contains("2 extracts written to"));
    // Each extract as written carries its evidence: checked from the file alone.
    let mut written = 0;
    for file in std::fs::read_dir(energy_out.path().join("extracts")).unwrap() {
        let extract: EnergyExtract =
            serde_json::from_slice(&std::fs::read(file.unwrap().path()).unwrap()).unwrap();
        verify(ArtifactKind::Extract, extract.evidence.as_ref(), &keys).unwrap();
        written += 1;
    }
    assert_eq!(written, 2);
    // The client kept the last checkpoint it verified.
    let kept = std::fs::read_to_string(energy_out.path().join("minegate-checkpoint.note")).unwrap();
    let kept = open_checkpoint(&kept, &keys).unwrap();
    let mut compliance = ComplianceServiceClient::new(app.channel("operator").await);
    let latest = compliance
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner();
    // The last thing it verified was the last acknowledgement's evidence,
    // under the checkpoint of that acknowledgement's commit: the latest.
    assert_eq!(kept.checkpoint.size, latest.size);
    assert_eq!(kept.note, latest.note);

    // The finance ministry: the form's body and the acknowledgement,
    // written to a bare file name's folder as given.
    let finance_out = tempfile::tempdir().unwrap();
    let form = finance_out.path().join("form-402.csv");
    let finance = as_role(
        &app,
        "finance",
        &[
            "finance",
            "pull",
            "--year",
            "2026",
            "--quarter",
            "1",
            "--out",
            form.to_str().unwrap(),
        ],
    )
    .await;
    assert!(finance.status.success(), "{}", text(&finance.stderr));
    assert!(finance_out.path().join("minegate-checkpoint.note").exists());

    // Tampering, each named.
    let evidence = report.evidence.clone().unwrap();
    let mut changed = evidence.clone();
    changed.artifact[3] ^= 1;
    assert!(matches!(
        verify(ArtifactKind::Receipt, Some(&changed), &keys),
        Err(EvidenceError::ArtifactChanged { .. })
    ));
    let mut other_leaf = evidence.clone();
    other_leaf.leaf_index += 1;
    assert_eq!(
        verify(ArtifactKind::Receipt, Some(&other_leaf), &keys),
        Err(EvidenceError::WrongLeaf {
            entry: evidence.leaf_index,
            claimed: evidence.leaf_index + 1
        })
    );
    let mut other_proof = evidence.clone();
    other_proof.inclusion_proof = start.evidence.clone().unwrap().inclusion_proof;
    assert!(matches!(
        verify(ArtifactKind::Receipt, Some(&other_proof), &keys),
        Err(EvidenceError::Inclusion { index, .. }) if index == evidence.leaf_index
    ));
    assert!(matches!(
        verify(ArtifactKind::Extract, Some(&evidence), &keys),
        Err(EvidenceError::WrongEntryKind {
            expected: "EXTRACT_CREATED",
            ..
        })
    ));
    let stranger = Signer::load_or_create(
        &finance_out.path().join("stranger.key"),
        &app.config.signing.origin,
    )
    .unwrap();
    let text_of = note::open(&evidence.checkpoint, &keys[0].note_verifier_key).unwrap();
    let mut foreign = evidence.clone();
    foreign.checkpoint = stranger.sign_checkpoint(&Checkpoint::parse(&text_of).unwrap());
    assert_eq!(
        verify(ArtifactKind::Receipt, Some(&foreign), &keys),
        Err(EvidenceError::UnknownKey {
            known: keys[0].key_id.clone()
        })
    );

    // A stored node of the tree edited underneath: the ledger's
    // verification names it, and the entry that completed it.
    let url = &app.config.database_url;
    let other_hash = match backend {
        Backend::Sqlite => "zeroblob(32)",
        Backend::Postgres => "decode(repeat('00', 32), 'hex')",
    };
    let node = format!("UPDATE merkle_nodes SET hash = {other_hash} WHERE level = 1 AND idx = 0");
    assert_eq!(execute(url, &node).await, 1);
    let verification = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (verification.intact, verification.first_broken_entry),
        (false, Some(2))
    );
    assert_eq!(
        verification.reason,
        "the stored Merkle node at level 1 index 0 does not match the entries up to entry 2"
    );

    // A stored entry edited underneath: the ledger's verification names
    // it, and the receipt's evidence no longer holds.
    let seq = start.evidence.as_ref().unwrap().leaf_index + 1;
    let edited = execute(
        url,
        &format!(
            "UPDATE ledger SET payload = replace(payload, 'urn:minegate:authority', \
             'urn:minegate:someone') WHERE seq = {seq}"
        ),
    )
    .await;
    assert_eq!(edited, 1);
    let verification = compliance
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!verification.intact);
    assert_eq!(verification.first_broken_entry, Some(seq));
    let again = FilingServiceClient::new(app.channel("authority").await)
        .get_filing(GetFilingRequest {
            filing_id: start.filing_id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .receipt
        .unwrap();
    assert!(matches!(
        verify(ArtifactKind::Receipt, again.evidence.as_ref(), &keys),
        Err(EvidenceError::Inclusion {
            error: ProofError::RootMismatch,
            ..
        })
    ));

    // A shorter tree served after a longer one was seen: the gateway's
    // later checkpoints are gone; the energy ministry's client reports the
    // rewrite with both checkpoints and acknowledges nothing.
    let removed = execute(
        url,
        &format!(
            "DELETE FROM checkpoints WHERE size >= {}",
            kept.checkpoint.size
        ),
    )
    .await;
    // The one the energy ministry kept, and those of the two commits of
    // the form's pull since: its publication, its acknowledgement.
    assert_eq!(removed, 3);
    let energy = subscribe_once(&app, energy_out.path()).await;
    assert!(!energy.status.success());
    let complaint = text(&energy.stderr);
    assert!(
        complaint.contains("the log was rewritten: the checkpoint of "),
        "{complaint}"
    );
    assert!(complaint.contains(&kept.note), "{complaint}");
    app.gateway.shutdown().await.unwrap();
}

async fn after_a_rotation_earlier_evidence_verifies_and_unknown_keys_are_refused(backend: Backend) {
    let clock = TestClock::at("2026-01-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let before = file_start(&app, BIN_A, "before", 101, date(2026, 2, 10)).await;
    let TestApp {
        gateway,
        mut config,
        dir,
        ..
    } = app;
    gateway.shutdown().await.unwrap();

    let rotate = tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .args(["signing", "rotate"])
        .env("MINEGATE_DATABASE_URL", &config.database_url)
        .env("MINEGATE_SIGNING_KEY", &config.signing.key)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    assert!(rotate.status.success(), "{}", text(&rotate.stderr));
    assert!(text(&rotate.stdout).contains("retired"));

    config.listen = "127.0.0.1:0".parse().unwrap();
    let app = restart(&config, &dir, clock.clone()).await;
    let after = file_start(&app, BIN_B, "after", 102, date(2026, 2, 10)).await;
    let keys = keys(&app, "finance").await;
    assert_eq!(keys.len(), 2);
    assert!(keys[0].retired_at.is_some() && keys[1].retired_at.is_none());
    // Signed before the rotation, by the retired key: still verifies.
    let old = verify(ArtifactKind::Receipt, before.evidence.as_ref(), &keys).unwrap();
    assert_eq!(old.key_id, keys[0].key_id);
    let new = verify(ArtifactKind::Receipt, after.evidence.as_ref(), &keys).unwrap();
    assert_eq!(new.key_id, keys[1].key_id);
    app.gateway.shutdown().await.unwrap();

    // A replica with a key the history does not know refuses to start,
    // unless told to add it; the retired key is refused outright.
    let mut stranger = config.clone();
    stranger.signing.key = dir.path().join("replica.key");
    let refused = server::start_with_clock(&stranger, clock.clone())
        .await
        .err()
        .expect("an unknown key is refused")
        .to_string();
    assert!(
        refused.contains("is not in this database's key history"),
        "{refused}"
    );
    let mut retired = config.clone();
    retired.signing.key = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains(".retired-"))
        .expect("the retired key kept beside the new one");
    let refused = server::start_with_clock(&retired, clock.clone())
        .await
        .err()
        .expect("a retired key is refused")
        .to_string();
    assert!(refused.contains("was retired at"), "{refused}");
    stranger.signing.add_unknown_key = true;
    let app = restart(&stranger, &dir, clock).await;
    assert_eq!(keys_len(&app).await, 3);
    app.gateway.shutdown().await.unwrap();
}

async fn keys_len(app: &TestApp) -> usize {
    keys(app, "operator").await.len()
}

async fn restart(
    config: &minegate::config::Config,
    dir: &std::sync::Arc<tempfile::TempDir>,
    clock: std::sync::Arc<TestClock>,
) -> TestApp {
    let gateway = server::start_with_clock(config, clock)
        .await
        .expect("gateway starts");
    let addr = gateway.local_addr();
    let mut config = config.clone();
    config.listen = addr;
    // The database stays the first gateway's, dropped with it.
    TestApp {
        gateway,
        addr,
        config,
        dir: dir.clone(),
        database: None,
    }
}

/// A start notification for `bin` (pool 37.OCTET.0.0/16, planned to start
/// on `planned_start`) with its documents, as the authority files it.
async fn file_start(
    app: &TestApp,
    bin: &str,
    key: &str,
    octet: u32,
    planned_start: Option<minegate::proto::v1::Date>,
) -> FilingReceipt {
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), key).await;
    FilingServiceClient::new(authority)
        .submit_start_notification(start_notification(
            bin,
            key,
            planned_start,
            &[&format!("37.{octet}.0.0/16")],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner()
}

/// `minegate signing rotate` for the gateway configured by `config`, as
/// its operator runs it beside the gateway (the system's clock).
async fn rotate(config: &minegate::config::Config) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .args(["signing", "rotate"])
        .env("MINEGATE_DATABASE_URL", &config.database_url)
        .env("MINEGATE_SIGNING_KEY", &config.signing.key)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap()
}

/// `minegate ledger verify` on the gateway's database: (exit code, stdout).
async fn ledger_verify(config: &minegate::config::Config) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_minegate"))
        .args(["ledger", "verify"])
        .env("MINEGATE_DATABASE_URL", &config.database_url)
        .env_remove("RUST_LOG")
        .output()
        .await
        .unwrap();
    (output.status.code(), text(&output.stdout))
}

/// Every stored checkpoint, read as the verifier reads them.
async fn stored_checkpoints(config: &minegate::config::Config) -> Vec<StoredCheckpoint> {
    let clock = TestClock::at("2030-01-01T00:00:00Z");
    let store = store::open(&config.database_url, clock, store::Signing::ReadOnly)
        .await
        .unwrap();
    let checkpoints = store.checkpoints(0, 1_000).await.unwrap();
    store.close().await;
    checkpoints
}

/// The key id whose verifier key opens `note`, of `keys`.
fn signed_by(note: &str, keys: &[SigningKey]) -> String {
    keys.iter()
        .find(|key| note::open(note, &key.note_verifier_key).is_ok())
        .map(|key| key.key_id.clone())
        .unwrap_or_default()
}

fn time(at: &pbjson_types::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(at.seconds, at.nanos as u32).unwrap()
}

async fn a_rotation_while_the_gateway_runs_takes_effect_at_its_next_commit(backend: Backend) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Ahead of the system's clock, which the rotation reads: the key is
    // retired at the latest checkpoint's time instead, never before it.
    let clock = TestClock::at("2030-01-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let before = file_start(&app, BIN_A, "before", 101, date(2030, 2, 10)).await;
    let old_id = keys(&app, "operator").await[0].key_id.clone();

    // The key file belongs to the service's user; the rotation runs as
    // root (where the tests run as root; else as that same user).
    let path = app.config.signing.key.clone();
    let owner = match std::os::unix::fs::chown(&path, Some(65534), Some(65534)) {
        Ok(()) => (65534, 65534),
        Err(_) => {
            let metadata = std::fs::metadata(&path).unwrap();
            (metadata.uid(), metadata.gid())
        }
    };
    let rotated = rotate(&app.config).await;
    assert_eq!(rotated.status.code(), Some(0), "{}", text(&rotated.stderr));
    let keys = keys(&app, "operator").await;
    let new_id = keys[1].key_id.clone();
    let shown = path.display();
    assert_eq!(
        text(&rotated.stdout),
        format!(
            "signing key {old_id} retired (kept at {shown}.retired-{old_id}); key {new_id} now \
             at {shown}\ngateways using {shown} sign with it from their next commit; copy it to \
             every replica on another machine (each fails its writes until it has it)\n"
        )
    );
    let metadata = std::fs::metadata(&path).unwrap();
    assert_eq!(
        (
            metadata.uid(),
            metadata.gid(),
            metadata.permissions().mode() & 0o7777
        ),
        (owner.0, owner.1, 0o600)
    );
    assert_eq!(
        keys.iter()
            .map(|k| (k.key_id.clone(), k.retired_at.as_ref().map(time)))
            .collect::<Vec<_>>(),
        [
            (
                old_id.clone(),
                Some("2030-01-05T06:00:00Z".parse().unwrap())
            ),
            (new_id.clone(), None)
        ]
    );

    // The running gateway signs its next commits with the new key.
    clock.set("2030-01-05T06:05:00Z");
    let after = file_start(&app, BIN_B, "after", 102, date(2030, 2, 10)).await;
    let old = verify(ArtifactKind::Receipt, before.evidence.as_ref(), &keys).unwrap();
    assert_eq!(old.key_id, old_id);
    let new = verify(ArtifactKind::Receipt, after.evidence.as_ref(), &keys).unwrap();
    assert_eq!(new.key_id, new_id);
    let checkpoints = stored_checkpoints(&app.config).await;
    let retired_at: chrono::DateTime<chrono::Utc> = "2030-01-05T06:00:00Z".parse().unwrap();
    let by_key = |id: &str, after_retirement: bool| {
        checkpoints
            .iter()
            .filter(|c| (c.signed_at > retired_at) == after_retirement)
            .filter(|c| signed_by(&c.note, &keys) == id)
            .count()
    };
    // Upload: two documents (one commit each, at most), then the filing.
    let (after_rotation, total) = (
        checkpoints
            .iter()
            .filter(|c| c.signed_at > retired_at)
            .count(),
        checkpoints.len(),
    );
    assert!(after_rotation >= 2, "{after_rotation} checkpoints after");
    assert_eq!(by_key(&new_id, true), after_rotation);
    assert_eq!(by_key(&old_id, true), 0);
    assert_eq!(by_key(&old_id, false), total - after_rotation);
    let entries = scalar(&app.config.database_url, "SELECT count(*) FROM ledger").await;
    let (code, report) = ledger_verify(&app.config).await;
    assert_eq!(code, Some(0), "{report}");
    assert!(
        report.starts_with(&format!("ledger intact: {entries} entries, head ")),
        "{report}"
    );
    assert!(
        report.ends_with(&format!(
            "; Merkle tree recomputed, {total} signed checkpoints verified\n"
        )),
        "{report}"
    );

    // Forged: the latest checkpoint signed again by the retired key, kept
    // beside the new one. Named by the command line and the RPC.
    let latest = checkpoints.last().unwrap();
    let retired_key = Signer::load(
        &std::path::PathBuf::from(format!("{shown}.retired-{old_id}")),
        &app.config.signing.origin,
    )
    .unwrap();
    let body = note::open(&latest.note, &keys[1].note_verifier_key).unwrap();
    let forged = retired_key.sign_checkpoint(&Checkpoint::parse(&body).unwrap());
    let edited = execute(
        &app.config.database_url,
        &format!(
            "UPDATE checkpoints SET note = '{forged}' WHERE size = {}",
            latest.size
        ),
    )
    .await;
    assert_eq!(edited, 1);
    let named = format!(
        "the checkpoint of {} entries was signed at 2030-01-05T06:05:00.000000Z by key \
         {old_id}, retired at 2030-01-05T06:00:00.000000Z",
        latest.size
    );
    let (code, report) = ledger_verify(&app.config).await;
    assert_eq!(
        (code, report),
        (
            Some(1),
            format!("ledger BROKEN at entry {}: {named}\n", latest.size)
        )
    );
    let verification = ComplianceServiceClient::new(app.channel("operator").await)
        .verify_ledger(VerifyLedgerRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (
            verification.intact,
            verification.first_broken_entry,
            verification.reason
        ),
        (false, Some(latest.size), named)
    );
    app.gateway.shutdown().await.unwrap();
}

async fn a_gateway_whose_key_file_still_holds_the_retired_key_signs_nothing_until_it_has_the_new_one(
    backend: Backend,
) {
    let clock = TestClock::at("2030-01-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    file_start(&app, BIN_A, "before", 101, date(2030, 2, 10)).await;
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "retried").await;
    let path = app.config.signing.key.clone();
    let old_key = std::fs::read(&path).unwrap();
    let rotated = rotate(&app.config).await;
    assert_eq!(rotated.status.code(), Some(0), "{}", text(&rotated.stderr));
    let keys = keys(&app, "operator").await;
    let (old_id, new_id) = (keys[0].key_id.clone(), keys[1].key_id.clone());

    // As on a replica on another machine the new key was not copied to.
    let new_key = std::fs::read(&path).unwrap();
    std::fs::write(&path, &old_key).unwrap();
    let checkpoints = stored_checkpoints(&app.config).await.len();
    clock.set("2030-01-05T06:05:00Z");
    let filing = start_notification(
        BIN_B,
        "retried",
        date(2030, 2, 10),
        &["37.102.0.0/16"],
        &documents,
    );
    let mut filings = FilingServiceClient::new(authority);
    let refused = filings
        .submit_start_notification(filing.clone())
        .await
        .unwrap_err();
    assert_eq!(
        (refused.code(), refused.message()),
        (
            tonic::Code::Unavailable,
            "the database is unavailable; retry later"
        )
    );
    assert_eq!(stored_checkpoints(&app.config).await.len(), checkpoints);
    let registered = "SELECT count(*) FROM filings";
    assert_eq!(scalar(&app.config.database_url, registered).await, 1);

    // Once the new key is there, the retried filing is signed with it.
    std::fs::write(&path, &new_key).unwrap();
    let after = filings
        .submit_start_notification(filing)
        .await
        .unwrap()
        .into_inner();
    let new = verify(ArtifactKind::Receipt, after.evidence.as_ref(), &keys).unwrap();
    assert_eq!(new.key_id, new_id);
    assert_ne!(new.key_id, old_id);
    assert_eq!(scalar(&app.config.database_url, registered).await, 2);
    let (code, report) = ledger_verify(&app.config).await;
    assert_eq!(code, Some(0), "{report}");
    app.gateway.shutdown().await.unwrap();
}
