//! The test vectors of docs/evidence.md (`tests/vectors/evidence.json`):
//! made here from a fixed key and a fixed seven-entry log, checked against
//! the file byte for byte (so neither the file nor this code can drift from
//! the other), and the artifact's evidence verified by the verifier the
//! ministries' clients run. `MINEGATE_WRITE_VECTORS=1 cargo test --test
//! evidence_vectors` writes the file anew after a deliberate change.

use std::path::Path;

use minegate::{
    domain::{Sha256Hex, hex, ledger},
    evidence::{
        merkle::{self, Hash},
        note::{self, Checkpoint},
        verify::{ArtifactKind, verify},
    },
    proto::v1::{Evidence, FilingReceipt, SignatureAlgorithm, SigningKey},
};
use prost::Message;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::json;

const NAME: &str = "minegate.test/vectors";

fn hexes(hashes: &[Hash]) -> Vec<String> {
    hashes.iter().map(|h| hex(h)).collect()
}

#[test]
fn the_published_test_vectors_are_what_the_code_computes() {
    let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).unwrap();
    let public_key = key.public_key().as_ref().to_vec();

    // The artifact: a receipt, recorded by the seventh entry.
    let artifact = FilingReceipt {
        filing_id: "fil-0000000000000000000000000000007".into(),
        filing_kind: 1,
        bin_or_iin: "210240001236".into(),
        register_number: "KZ-DM-000001".into(),
        idempotency_key: "vectors".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let documents: Vec<String> = (1..=6)
        .map(|i| {
            ledger::canonical(
                i,
                "DOCUMENT_STORED",
                &Sha256Hex::of(&[i as u8]).to_string(),
                1_775_000_000_000_000 + i,
                &json!({
                    "media_type": "application/pdf",
                    "sha256": Sha256Hex::of(&[i as u8]).as_str(),
                    "size_bytes": 1000 + i,
                })
                .to_string(),
            )
        })
        .collect();
    let accepted = ledger::canonical(
        7,
        "FILING_ACCEPTED",
        "fil-0000000000000000000000000000007",
        1_775_000_000_000_007,
        &json!({
            "bin_or_iin": "210240001236",
            "caller": "urn:minegate:authority",
            "filing_id": "fil-0000000000000000000000000000007",
            "findings": [],
            "kind": "START_NOTIFICATION",
            "receipt_sha256": Sha256Hex::of(&artifact).as_str(),
            "register_number": "KZ-DM-000001",
            "request_sha256": Sha256Hex::of(b"request").as_str(),
            "revision": 0,
        })
        .to_string(),
    );
    let entries: Vec<String> = documents.into_iter().chain([accepted]).collect();
    let leaves: Vec<Hash> = entries
        .iter()
        .map(|e| merkle::leaf_hash(e.as_bytes()))
        .collect();
    let n = leaves.len();
    let roots: Vec<String> = (0..=n)
        .map(|size| hex(&merkle::root(&leaves[..size])))
        .collect();
    let inclusion: Vec<_> = (1..=n)
        .flat_map(|size| {
            let leaves = &leaves[..size];
            (0..size).map(move |index| {
                json!({
                    "size": size,
                    "index": index,
                    "proof": hexes(&merkle::inclusion_proof(index, leaves).unwrap()),
                })
            })
        })
        .collect();
    let consistency: Vec<_> = (1..=n)
        .flat_map(|new| {
            let leaves = &leaves[..new];
            (0..=new).map(move |old| {
                json!({
                    "old_size": old,
                    "new_size": new,
                    "proof": hexes(&merkle::consistency_proof(old, leaves).unwrap()),
                })
            })
        })
        .collect();
    let checkpoint = Checkpoint {
        origin: NAME.into(),
        size: n as u64,
        root: merkle::root(&leaves),
    };
    let signed = note::sign(&checkpoint.text(), NAME, &key).unwrap();
    let verifier_key = note::verifier_key(NAME, &public_key);
    let evidence = Evidence {
        artifact: artifact.clone(),
        entry: entries[n - 1].clone().into_bytes(),
        leaf_index: (n - 1) as u64,
        inclusion_proof: merkle::inclusion_proof(n - 1, &leaves)
            .unwrap()
            .iter()
            .map(|h| h.to_vec())
            .collect(),
        checkpoint: signed.clone(),
    };

    // What the ministries' clients run accepts it.
    let keys = [SigningKey {
        key_id: hex(ring::digest::digest(&ring::digest::SHA256, &public_key).as_ref())[..16]
            .to_owned(),
        algorithm: SignatureAlgorithm::Ed25519 as i32,
        public_key: public_key.clone(),
        note_verifier_key: verifier_key.clone(),
        ..Default::default()
    }];
    let verified = verify(ArtifactKind::Receipt, Some(&evidence), &keys).unwrap();
    assert_eq!(verified.checkpoint, checkpoint);

    let vectors = json!({
        "description": "minegate evidence test vectors: see docs/evidence.md",
        "key_name": NAME,
        "public_key": hex(&public_key),
        "verifier_key": verifier_key,
        "entries": entries,
        "leaf_hashes": hexes(&leaves),
        "roots": roots,
        "inclusion": inclusion,
        "consistency": consistency,
        "checkpoint": signed,
        "artifact": hex(&artifact),
        "evidence": {
            "artifact": hex(&evidence.artifact),
            "entry": hex(&evidence.entry),
            "leaf_index": evidence.leaf_index,
            "inclusion_proof": evidence.inclusion_proof.iter().map(|h| hex(h)).collect::<Vec<_>>(),
            "checkpoint": evidence.checkpoint,
        },
    });
    let text = serde_json::to_string_pretty(&vectors).unwrap() + "\n";
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/evidence.json");
    if std::env::var("MINEGATE_WRITE_VECTORS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let published = std::fs::read_to_string(&path).expect("tests/vectors/evidence.json");
    assert!(
        published == text,
        "tests/vectors/evidence.json differs from what the code computes"
    );
    // Spot values, so a change to both at once is still seen here.
    assert_eq!(
        vectors["roots"][0], "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "the empty tree's root is SHA-256 of nothing"
    );
    assert_eq!(vectors["inclusion"].as_array().unwrap().len(), 28);
    assert_eq!(vectors["consistency"].as_array().unwrap().len(), 35);
}

/// The verifier in docs/verify-evidence.py, written from the docs alone in
/// another language, accepts the vectors. It needs Python 3 with the
/// `cryptography` package (`.ci/run` installs it); under CI=true it must run.
#[test]
fn an_independent_verifier_written_from_the_docs_accepts_the_vectors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let available = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .status()
        .is_ok_and(|s| s.success());
    if !available {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI=true but python3 with `cryptography` is missing"
        );
        eprintln!("python3 with `cryptography` not found: skipping the independent verifier");
        return;
    }
    let output = std::process::Command::new("python3")
        .arg(root.join("docs/verify-evidence.py"))
        .arg(root.join("tests/vectors/evidence.json"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "all vectors verify independently\n"
    );
}
