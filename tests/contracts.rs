//! The contracts as docs/architecture.md §2 sets them out: every field commented (with its
//! paragraph), no floating point for legal quantities, every field of the
//! rules present, enums starting with *_UNSPECIFIED, and proto3 JSON.

use std::{fs, path::Path};

use minegate::proto::v1::{ActivityKind, DocumentKind, Person, StartNotification, TaxDataFormBody};

fn proto_files() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/kz/digitalmining/v1");
    let mut files: Vec<(String, String)> = fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Lines that declare a message field: `[repeated|optional] TYPE name = N;`.
fn is_field(line: &str) -> bool {
    let line = line.trim();
    line.ends_with(';')
        && line.contains(" = ")
        && !line.starts_with("//")
        && !line.starts_with("option")
        && !line.starts_with("syntax")
        && !line.starts_with("package")
        && !line.starts_with("import")
        && line.split_whitespace().count() >= 4
}

#[test]
fn there_are_the_five_contract_files() {
    let names: Vec<String> = proto_files().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "common.proto",
            "compliance.proto",
            "energy.proto",
            "filing.proto",
            "finance.proto"
        ]
    );
}

#[test]
fn every_message_field_has_a_comment_and_no_field_is_floating_point() {
    let mut uncommented = Vec::new();
    for (name, text) in proto_files() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(
                !words.contains(&"float") && !words.contains(&"double"),
                "{name}:{}: floating point in a contract: {line}",
                i + 1
            );
            // Fields inside a oneof are documented by the comment above them too.
            if is_field(line) && !lines[i - 1].trim().starts_with("//") {
                uncommented.push(format!("{name}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    assert_eq!(uncommented, Vec::<String>::new());
}

#[test]
fn every_paragraph_of_the_rules_is_named_in_the_contracts() {
    let all: String = proto_files().into_iter().map(|(_, t)| t).collect();
    let mut missing = Vec::new();
    let paragraphs = (1..=13)
        .map(|n| format!("3.{n}"))
        .chain((1..=15).map(|n| format!("4.{n}")))
        .chain((1..=4).map(|n| format!("6.{n}")))
        .chain(["§5".to_owned(), "§6-1".to_owned()]);
    for paragraph in paragraphs {
        // "3.1" must not be satisfied by "3.10".
        let found = all.match_indices(&paragraph).any(|(at, _)| {
            !all[at + paragraph.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        });
        if !found {
            missing.push(paragraph);
        }
    }
    assert_eq!(missing, Vec::<String>::new());
}

#[test]
fn every_enum_starts_with_unspecified_zero() {
    for (name, text) in proto_files() {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            if let Some(rest) = line.strip_prefix("enum ") {
                let enum_name = rest.trim_end_matches(" {");
                let first = lines[i + 1..]
                    .iter()
                    .find(|l| !l.starts_with("//"))
                    .unwrap();
                assert!(
                    first.ends_with("_UNSPECIFIED = 0;"),
                    "{name}: enum {enum_name} starts with {first}"
                );
            }
        }
    }
}

#[test]
fn filings_read_and_write_proto3_json() {
    let json = r#"{
        "person": {
            "name": "TOO Qazaq Hash",
            "binOrIin": "210240012345",
            "activityKind": "ACTIVITY_KIND_MINING"
        },
        "requiredPowerKw": "3600",
        "plannedInvestmentTiyn": "150000000000",
        "ipPool": ["203.0.113.0/28"],
        "documents": [{"kind": "DOCUMENT_KIND_RESIDENCY", "sha256": "ab", "sizeBytes": "10"}],
        "plannedStartDate": {"year": 2026, "month": 3, "day": 1}
    }"#;
    let filing: StartNotification = serde_json::from_str(json).unwrap();
    assert_eq!(
        filing.person,
        Some(Person {
            name: "TOO Qazaq Hash".into(),
            bin_or_iin: "210240012345".into(),
            activity_kind: ActivityKind::Mining as i32,
            ..Person::default()
        })
    );
    assert_eq!(filing.required_power_kw, 3600);
    assert_eq!(filing.planned_investment_tiyn, 150_000_000_000);
    assert_eq!(filing.documents[0].kind(), DocumentKind::Residency);
    assert_eq!(filing.documents[0].size_bytes, 10);
    let back = serde_json::to_value(&filing).unwrap();
    assert_eq!(back["requiredPowerKw"], "3600");
    assert_eq!(back["plannedStartDate"]["month"], 3);

    let body: TaxDataFormBody = serde_json::from_str(
        r#"{"year": 2026, "quarter": 1, "compiledAt": "2026-05-01T06:00:00Z"}"#,
    )
    .unwrap();
    assert_eq!(body.compiled_at.unwrap().seconds, 1_777_615_200);
}
