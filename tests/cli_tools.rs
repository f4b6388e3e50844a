//! The three agencies' command-line clients, as child processes over mutual
//! TLS against a real gateway (SQLite, a fixed clock), and `minegate demo`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use common::{Backend, TestApp, TestClock, as_role, spawn_on, spawn_on_with};
use minegate::proto::v1::{
    FilingReceipt, ListObligationsRequest, ObligationKind, ObligationStatus,
    compliance_service_client::ComplianceServiceClient,
};

const BIN: &str = env!("CARGO_BIN_EXE_minegate");

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn document_args() -> Vec<String> {
    let docs = examples().join("documents");
    vec![
        "--document".into(),
        format!("customs={}", docs.join("customs-declaration.pdf").display()),
        "--document".into(),
        format!(
            "residency={}",
            docs.join("residency-certificate.pdf").display()
        ),
        "--document".into(),
        format!(
            "grid={}",
            docs.join("grid-connection-conditions.xml").display()
        ),
    ]
}

async fn submit(app: &TestApp, kind: &str, file: &str, with_documents: bool, json: bool) -> Output {
    let path = examples().join(file);
    let mut args: Vec<String> = vec!["submit".into(), kind.into(), path.display().to_string()];
    if with_documents {
        args.extend(document_args());
    }
    if json {
        args.push("--json".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    as_role(app, "authority", &args).await
}

async fn obligations(app: &TestApp, kind: ObligationKind) -> Vec<ObligationStatus> {
    ComplianceServiceClient::new(app.channel("operator").await)
        .list_obligations(ListObligationsRequest {
            kind: kind as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .obligations
        .iter()
        .map(|o| o.status())
        .collect()
}

#[tokio::test]
async fn each_agency_works_through_its_command_line_client() {
    let clock = TestClock::at("2026-10-05T06:00:00Z");
    // A second energy subscriber, which never connects: `status` shows
    // each subscriber's backlog.
    let app = spawn_on_with(Backend::Sqlite, clock.clone(), |config| {
        config.roles.insert(
            "urn:kz:gov:energy:standby".to_owned(),
            minegate::tls::Role::Energy,
        );
    })
    .await
    .unwrap();

    // The authority submits each example.
    let start = submit(&app, "start", "start-notification.json", true, false).await;
    assert!(start.status.success(), "{}", text(&start.stderr));
    let table = text(&start.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("accepted: start notification fil-"),
        "{table}"
    );
    assert_eq!(lines[1], "  BIN/IIN           210240001236");
    assert_eq!(lines[2], "  register number   KZ-DM-000001");
    assert_eq!(lines[3], "  received          2026-10-05T06:00:00Z");
    assert_eq!(lines[4], "  statutory due     2027-01-30 (met)");
    assert_eq!(lines[5], "  findings          none");
    assert_eq!(
        lines[6],
        "  obligation        ENERGY_EXTRACT due 2026-10-15"
    );
    // Three documents, the filing's extract, then the filing: the commit's
    // checkpoint covers all five entries.
    assert_eq!(
        lines[7], "  in the ledger     leaf 4 of the signed tree of 5, verified",
        "{table}"
    );

    // The same submission again (a retry): the same receipt, said to be a replay.
    let again = submit(&app, "start", "start-notification.json", true, false).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    let replayed = text(&again.stdout);
    let filing_id = lines[0].trim_start_matches("accepted: start notification ");
    assert_eq!(
        replayed.lines().next().unwrap(),
        format!(
            "replayed: start notification {filing_id} (accepted before with this idempotency \
             key and payload; nothing new was stored)"
        )
    );
    assert_eq!(
        replayed.lines().skip(1).collect::<Vec<_>>(),
        lines[1..].to_vec()
    );

    let quarterly = submit(&app, "quarterly", "quarterly-report.json", true, true).await;
    assert!(quarterly.status.success(), "{}", text(&quarterly.stderr));
    let receipt: FilingReceipt =
        serde_json::from_slice(&quarterly.stdout).expect("the receipt as proto3 JSON");
    assert_eq!(receipt.revision, 1);
    assert_eq!(receipt.register_number, "KZ-DM-000001");
    assert!(receipt.deadline_met);
    assert_eq!(receipt.obligations.len(), 2);

    let end = submit(&app, "termination", "termination-notice.json", false, false).await;
    assert!(end.status.success(), "{}", text(&end.stderr));
    assert!(
        text(&end.stdout).contains("  statutory due     2026-10-11 (met)\n"),
        "{}",
        text(&end.stdout)
    );

    let register = as_role(&app, "authority", &["register", "list"]).await;
    assert_eq!(
        text(&register.stdout).lines().nth(1),
        Some("KZ-DM-000001   210240001236  TERMINATED     3600 kW  TOO «Qazaq Hash»")
    );

    // Two extracts wait for each energy subscriber.
    let status = as_role(&app, "operator", &["status"]).await;
    assert_eq!(
        text(&status.stdout),
        "gateway            SERVING\n\
         pending extracts   not acknowledged, by subscriber\n\
         \x20        2  urn:kz:gov:energy:standby\n\
         \x20        2  urn:minegate:energy\n\
         overdue            0\n"
    );

    // The energy ministry catches up: two extracts, three distinct documents.
    let out = tempfile::tempdir().unwrap();
    let energy = as_role(
        &app,
        "energy",
        &[
            "energy",
            "subscribe",
            "--once",
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(energy.status.success(), "{}", text(&energy.stderr));
    let printed = text(&energy.stdout);
    assert_eq!(printed.lines().count(), 3, "{printed}");
    assert!(
        printed.ends_with(&format!(
            "2 extracts written to {} and acknowledged\n",
            out.path().display()
        )),
        "{printed}"
    );
    let mut extracts: Vec<String> = std::fs::read_dir(out.path().join("extracts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    extracts.sort();
    assert_eq!(extracts.len(), 2);
    assert!(
        extracts
            .iter()
            .all(|name| name.starts_with("ext-") && name.ends_with(".json"))
    );
    let mut documents: Vec<String> = std::fs::read_dir(out.path().join("documents"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    documents.sort();
    let digest = |name: &str| {
        minegate::domain::Sha256Hex::of(
            &std::fs::read(examples().join("documents").join(name)).unwrap(),
        )
        .to_string()
    };
    let mut expected = vec![
        format!("{}.pdf", digest("customs-declaration.pdf")),
        format!("{}.pdf", digest("residency-certificate.pdf")),
        format!("{}.xml", digest("grid-connection-conditions.xml")),
    ];
    expected.sort();
    assert_eq!(documents, expected);
    assert_eq!(
        std::fs::read(
            out.path()
                .join("documents")
                .join(format!("{}.xml", digest("grid-connection-conditions.xml")))
        )
        .unwrap(),
        std::fs::read(examples().join("documents/grid-connection-conditions.xml")).unwrap()
    );
    assert_eq!(
        obligations(&app, ObligationKind::EnergyExtract).await,
        vec![ObligationStatus::Fulfilled, ObligationStatus::Fulfilled]
    );
    // Run again: nothing pending, nothing written, and it still exits.
    let again = as_role(
        &app,
        "energy",
        &[
            "energy",
            "subscribe",
            "--once",
            "--out",
            out.path().to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        text(&again.stdout).starts_with("0 extracts written"),
        "{}",
        text(&again.stdout)
    );

    // The finance ministry pulls form 402 for 2026 Q3 as CSV.
    clock.set("2026-11-02T06:00:00Z");
    let csv = out.path().join("form402.csv");
    let finance = as_role(
        &app,
        "finance",
        &[
            "finance",
            "pull",
            "--year",
            "2026",
            "--quarter",
            "3",
            "--format",
            "csv",
            "--out",
            csv.to_str().unwrap(),
        ],
    )
    .await;
    assert!(finance.status.success(), "{}", text(&finance.stderr));
    assert_eq!(
        text(&finance.stdout).lines().next(),
        Some(format!(
            "form 402 for 2026 Q3: revision 1, 1 rows, total 5443200 kWh (5443200000 Wh); written to {} and acknowledged",
            csv.display()
        ).as_str())
    );
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        format!(
            "bin_or_iin,payer_name,legal_address,data_centres,kato_codes,electricity_kwh,electricity_wh,source_report_id,source_report_revision\n\
             210240001236,TOO «Qazaq Hash»,\"Ekibastuz, Mashkhur Zhusup street 118, Pavlodar region\",\"Ekibastuz, industrial zone 3, building 7\",552210000,5443200,5443200000,{},1\n",
            receipt.filing_id
        )
    );
    assert_eq!(
        obligations(&app, ObligationKind::FinanceForm).await,
        vec![ObligationStatus::Fulfilled]
    );
    // Everything the clients wrote names filers: every file 0600, every
    // folder they made 0700, whatever the umask (found from outside: 0666).
    let mut modes = Vec::new();
    let mut folders = vec![out.path().to_owned()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).unwrap().permissions(),
            ) & 0o777;
            let name = path.strip_prefix(out.path()).unwrap().display().to_string();
            let name = if name.starts_with("extracts/ext-") {
                "extracts/ext-….json".to_owned()
            } else if name.starts_with("documents/") {
                "documents/….".to_owned()
            } else {
                name
            };
            modes.push(format!("{name} {mode:o}"));
            if path.is_dir() {
                folders.push(path);
            }
        }
    }
    modes.sort();
    modes.dedup();
    assert_eq!(
        modes,
        [
            "documents 700",
            "documents/…. 600",
            "extracts 700",
            "extracts/ext-….json 600",
            "form402.csv 600",
            "minegate-checkpoint.note 600",
        ]
    );

    // The operators see it all.
    let status = as_role(&app, "operator", &["status"]).await;
    assert_eq!(
        text(&status.stdout),
        "gateway            SERVING\n\
         pending extracts   not acknowledged, by subscriber\n\
         \x20        2  urn:kz:gov:energy:standby\n\
         \x20        0  urn:minegate:energy\n\
         overdue            0\n"
    );
    assert!(status.status.success());
    let listed = as_role(
        &app,
        "operator",
        &["compliance", "obligations", "--status", "fulfilled"],
    )
    .await;
    assert!(
        text(&listed.stdout).ends_with("3 obligations\n"),
        "{}",
        text(&listed.stdout)
    );
    app.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_filing_with_three_errors_prints_three_violations_and_exits_non_zero() {
    let app = spawn_on(Backend::Sqlite, TestClock::at("2026-10-05T06:00:00Z"))
        .await
        .unwrap();
    let mut filing: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(examples().join("start-notification.json")).unwrap(),
    )
    .unwrap();
    filing["person"]["binOrIin"] = "210240001237".into();
    filing["bank"]["iban"] = "KZ00125KZT1001300335".into();
    filing["ipPool"] = serde_json::json!(["95.56.234.0/24", "192.168.10.0/24"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, filing.to_string()).unwrap();
    let mut args = vec![
        "submit".to_owned(),
        "start".into(),
        path.display().to_string(),
    ];
    args.extend(document_args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = as_role(&app, "authority", &args).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        text(&output.stderr),
        format!(
            "error: {} rejected (3 problems):\n  \
             person.bin_or_iin: check digit (12th) is 7, but the first 11 digits give 6\n  \
             bank.iban: check digits 00 do not match the account (mod-97 gives 23, expected 1)\n  \
             ip_pool[1]: 192.168.10.0/24 is not public address space: it overlaps 192.168.0.0/16, private (RFC 1918)\n",
            path.display()
        )
    );
    app.gateway.shutdown().await.unwrap();
}

#[test]
fn the_demo_with_the_same_seed_gives_the_same_summary() {
    let run = || {
        let output = Command::new(BIN)
            .args(["demo", "--seed", "7", "--clean"])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        text(&output.stdout)
            .lines()
            .filter(|l| !l.starts_with("delivery latency") && !l.starts_with("took"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    assert_eq!(first.len(), 7, "{first:?}");
    assert_eq!(
        first[0],
        "register           25 entries: 23 OPERATING, 1 PLANNED, 1 TERMINATED"
    );
    assert_eq!(
        first[2],
        "extracts           50 written to energy/ with their documents, verified and acknowledged"
    );
    assert!(first[6].ends_with("verified intact"), "{}", first[6]);
}
