//! The alert rules operators load into Prometheus
//! (`deploy/prometheus/minegate-rules.yml`): promtool checks them and runs
//! their unit tests, and every metric they use is one the gateway exports.

mod common;

use std::{collections::BTreeSet, net::SocketAddr, path::Path, time::Duration};

use common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const RULES: &str = "deploy/prometheus/minegate-rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/minegate-rules.test.yml";

fn promtool(args: &[&str]) -> Option<String> {
    let promtool = outside_tool("promtool")?;
    let output = std::process::Command::new(promtool)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("promtool runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "promtool {args:?}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(stdout)
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let Some(checked) = promtool(&["check", "rules", RULES]) else {
        return;
    };
    assert!(checked.contains("SUCCESS: 14 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", RULE_TESTS]).expect("promtool was found");
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Every alert in the rules has a unit test, and a section in the runbook.
#[test]
fn every_alert_is_unit_tested_and_has_a_runbook_section() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = std::fs::read_to_string(root.join(RULES)).unwrap();
    let tests = std::fs::read_to_string(root.join(RULE_TESTS)).unwrap();
    let runbook = std::fs::read_to_string(root.join("docs/operations.md")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("- alert: "))
        .collect();
    assert_eq!(alerts.len(), 14, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "{alert} has no unit test"
        );
        assert!(
            runbook.contains(&format!("### {alert}\n")),
            "{alert} has no section in docs/operations.md"
        );
        assert!(
            rules.contains(&format!("runbook: \"{RUNBOOK}#{}\"", alert.to_lowercase())),
            "{alert} does not link its runbook section"
        );
    }
}

/// Where the package installs the runbook: the alerts link it there.
const RUNBOOK: &str = "file:///usr/share/doc/minegate/operations.md";

/// The runbook the alerts link is where the package puts
/// docs/operations.md (tests/packaging.rs lists the package's files).
#[test]
fn the_alerts_link_the_runbook_where_the_package_installs_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let build = std::fs::read_to_string(root.join("deploy/debian/build-deb")).unwrap();
    assert!(
        build.contains(" docs/operations.md ")
            && build.contains("\"$stage/usr/share/doc/minegate/$name\""),
        "build-deb no longer installs docs/operations.md as {RUNBOOK}"
    );
    let rules = std::fs::read_to_string(root.join(RULES)).unwrap();
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|line| line.trim().strip_prefix("runbook: \""))
        .collect();
    assert_eq!(links.len(), 14);
    assert!(
        links
            .iter()
            .all(|link| link.starts_with(&format!("{RUNBOOK}#"))),
        "{links:?}"
    );
}

async fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[tokio::test]
async fn every_metric_the_rules_use_is_exported_by_the_gateway() {
    let rules = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(RULES)).unwrap();
    let used: BTreeSet<String> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("minegate_"))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        used.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "minegate_calls_refused_total",
            "minegate_certificate_days_left",
            "minegate_database_up",
            "minegate_extract_send_failures_total",
            "minegate_filings_total",
            "minegate_ledger_verification_ok",
            "minegate_ledger_verification_timestamp_seconds",
            "minegate_obligation_oldest_pending_timestamp_seconds",
            "minegate_obligations",
            "minegate_tls_handshakes_total",
            "minegate_tls_reloads_total",
        ]
    );

    let app = spawn_app_with(|config| config.limits.ledger_verify_ms = 100).await;
    let metrics = app.gateway.metrics_addr().expect("metrics listener");
    // The database check and the ledger verification report after their first pass.
    let mut exported = BTreeSet::new();
    for _ in 0..100 {
        let body = scrape(metrics).await;
        exported = body
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .map(str::to_owned)
            .collect();
        if used.is_subset(&exported) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing: Vec<_> = used.difference(&exported).collect();
    assert!(missing.is_empty(), "not exported: {missing:?}");
}
