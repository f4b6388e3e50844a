//! Who reads what through the proofs (issue 23, item 4), on both backends
//! with real clients: GetInclusionProof gives the energy and finance roles
//! a ledger entry only where it records what was delivered to them, and
//! the leaf hash alone otherwise (a FILING_ACCEPTED entry names its filer's
//! BIN or IIN); what they are given still verifies, by the same code the
//! ministries' clients use.

#[macro_use]
mod common;

use common::{Backend, TestApp, TestClock, fixtures::*, spawn_on_with};
use minegate::{
    evidence::{
        merkle,
        verify::{ArtifactKind, Verified, open_checkpoint, verify, verify_inclusion_proof},
    },
    proto::v1::{
        AcknowledgeExtractRequest, AcknowledgeFormRequest, Evidence, GetCheckpointRequest,
        GetInclusionProofRequest, GetSigningKeysRequest, InclusionProof, PullQuarterlyFormRequest,
        SigningKey, SubscribeRequest, compliance_service_client::ComplianceServiceClient,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
    },
    tls::{Role, pki, pki::LeafOptions},
};

on_both_backends!(the_ministries_get_the_entries_of_their_own_deliveries_and_hashes_of_the_rest,);

/// What a caller holds of one artifact: its leaf and its evidence as handed out.
struct Delivered {
    leaf: u64,
    evidence: Evidence,
}

impl Delivered {
    fn of(evidence: Option<Evidence>) -> Delivered {
        let evidence = evidence.expect("evidence");
        Delivered {
            leaf: evidence.leaf_index,
            evidence,
        }
    }
}

async fn proof(app: &TestApp, name: &str, leaf_index: u64, tree_size: u64) -> InclusionProof {
    ComplianceServiceClient::new(app.channel(name).await)
        .get_inclusion_proof(GetInclusionProofRequest {
            leaf_index,
            tree_size,
        })
        .await
        .unwrap()
        .into_inner()
}

/// The latest checkpoint, opened with the published keys as a ministry
/// does, and those keys.
async fn checkpoint(app: &TestApp, name: &str) -> (Verified, Vec<SigningKey>) {
    let mut compliance = ComplianceServiceClient::new(app.channel(name).await);
    let keys = compliance
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys;
    let note = compliance
        .get_checkpoint(GetCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .note;
    (open_checkpoint(&note, &keys).unwrap(), keys)
}

/// The artifact's evidence brought up to today's checkpoint with the proof
/// the caller was given, verified as the ministries' clients verify.
fn verifies_today(
    kind: ArtifactKind,
    delivered: &Delivered,
    answer: &InclusionProof,
    today: &Verified,
    keys: &[SigningKey],
) {
    let evidence = Evidence {
        entry: answer.entry.clone(),
        inclusion_proof: answer.hashes.clone(),
        checkpoint: today.note.clone(),
        ..delivered.evidence.clone()
    };
    verify(kind, Some(&evidence), keys).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
}

/// The kind of an entry's bytes (its second line).
fn kind_of(entry: &[u8]) -> String {
    String::from_utf8_lossy(entry)
        .split('\n')
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

async fn the_ministries_get_the_entries_of_their_own_deliveries_and_hashes_of_the_rest(
    backend: Backend,
) {
    let clock = TestClock::at("2026-05-02T06:00:00Z");
    let second_energy_system = |config: &mut minegate::config::Config| {
        config
            .roles
            .insert("urn:minegate:energy-backup".into(), Role::Energy);
    };
    let Some(app) = spawn_on_with(backend, clock, second_energy_system).await else {
        return;
    };
    pki::issue(
        &app.pki_dir(),
        "energy-backup",
        &LeafOptions::client("backup", Some("urn:minegate:energy-backup")),
    )
    .unwrap();

    // An individual's quarterly report (its IIN gives birth date and sex).
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "d").await;
    let receipt = FilingServiceClient::new(authority)
        .submit_quarterly_report(quarterly_report(
            IIN_D,
            "d-q1",
            2026,
            1,
            1_234_567,
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap()
        .into_inner();
    let accepted = Delivered::of(receipt.evidence);

    let mut energy = EnergyExtractServiceClient::new(app.channel("energy").await);
    let mut stream = energy
        .subscribe(SubscribeRequest {
            max_in_flight: 1,
            until_caught_up: false,
        })
        .await
        .unwrap()
        .into_inner();
    let extract = stream.message().await.unwrap().unwrap().extract.unwrap();
    let extract_id = extract.extract_id.clone();
    let sent = Delivered::of(extract.evidence);
    let ack = energy
        .acknowledge(AcknowledgeExtractRequest { extract_id })
        .await
        .unwrap()
        .into_inner();
    let extract_ack = Delivered::of(ack.evidence);
    drop(stream);

    let mut finance = FinanceServiceClient::new(app.channel("finance").await);
    let form = finance
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            revision: 0,
            page: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let form_ack = finance
        .acknowledge(AcknowledgeFormRequest {
            year: 2026,
            quarter: 1,
            revision: 1,
            body_sha256: form.body_sha256.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let published = Delivered::of(form.evidence);
    let form_ack = Delivered::of(form_ack.evidence);

    let (today, keys) = checkpoint(&app, "energy").await;
    let size = today.checkpoint.size;

    // The filing's entry: hashes only to the ministries, in full to the
    // authority and the operators; the proof verifies from the hash alone.
    let filing_leaf = merkle::leaf_hash(&accepted.evidence.entry).to_vec();
    for name in ["energy", "energy-backup", "finance"] {
        let answer = proof(&app, name, accepted.leaf, size).await;
        assert_eq!(
            (answer.entry.as_slice(), &answer.leaf_hash, answer.tree_size),
            (&b""[..], &filing_leaf, size),
            "{name}"
        );
        verify_inclusion_proof(&answer, &today).unwrap();
    }
    for name in ["authority", "operator"] {
        let answer = proof(&app, name, accepted.leaf, size).await;
        assert_eq!(answer.entry, accepted.evidence.entry, "{name}");
        verifies_today(ArtifactKind::Receipt, &accepted, &answer, &today, &keys);
    }

    // Each ministry's own deliveries: the entry, and the artifact verifies
    // against today's checkpoint through it.
    let own: [(&str, ArtifactKind, &Delivered); 4] = [
        ("energy", ArtifactKind::Extract, &sent),
        ("energy", ArtifactKind::ExtractAck, &extract_ack),
        ("finance", ArtifactKind::FormBody, &published),
        ("finance", ArtifactKind::FormAck, &form_ack),
    ];
    for (name, kind, delivered) in own {
        let answer = proof(&app, name, delivered.leaf, size).await;
        assert_eq!(answer.entry, delivered.evidence.entry, "{name} {kind:?}");
        verifies_today(kind, delivered, &answer, &today, &keys);
    }
    // Not theirs: another energy system's extract and acknowledgement, the
    // other ministry's artifacts.
    let not_theirs: [(&str, &Delivered); 6] = [
        ("energy-backup", &sent),
        ("energy-backup", &extract_ack),
        ("finance", &sent),
        ("finance", &extract_ack),
        ("energy", &published),
        ("energy", &form_ack),
    ];
    for (name, delivered) in not_theirs {
        let answer = proof(&app, name, delivered.leaf, size).await;
        assert_eq!(
            (answer.entry.as_slice(), answer.leaf_hash.clone()),
            (
                &b""[..],
                merkle::leaf_hash(&delivered.evidence.entry).to_vec()
            ),
            "{name} leaf {}",
            delivered.leaf
        );
        verify_inclusion_proof(&answer, &today).unwrap();
    }

    // Every leaf of the log, as each ministry reads it: exactly the kinds
    // of its own deliveries, and never the filer's IIN.
    for (name, readable) in [
        (
            "energy",
            vec!["EXTRACT_CREATED", "EXTRACT_SENT", "EXTRACT_ACKNOWLEDGED"],
        ),
        ("energy-backup", vec![]),
        (
            "finance",
            vec!["FORM_REVISION_PUBLISHED", "FORM_ACKNOWLEDGED"],
        ),
    ] {
        let mut kinds = Vec::new();
        for leaf in 0..size {
            let answer = proof(&app, name, leaf, size).await;
            verify_inclusion_proof(&answer, &today).unwrap();
            let text = String::from_utf8_lossy(&answer.entry).into_owned();
            assert!(!text.contains(IIN_D), "{name} read leaf {leaf}: {text}");
            if !answer.entry.is_empty() {
                kinds.push(kind_of(&answer.entry));
            }
        }
        assert_eq!(kinds, readable, "{name}");
    }
}
