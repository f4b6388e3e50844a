//! Form 402 from outside (issue 22, items 4 and 7): a quarter too large for
//! one message comes in pages that each fit and join to the digest and the
//! evidence; pulls of an unchanged form append nothing; quarters outside the
//! regime and impossible consumption are refused with the field and reason.

#[macro_use]
mod common;

use prost::Message as _;

use common::{Backend, TestApp, TestClock, fixtures::*, scalar, spawn_on, violations};
use minegate::{
    cli::finance::{FormFormat, pull},
    domain::Sha256Hex,
    evidence::verify::{ArtifactKind, verify},
    proto::v1::{
        DataCentre, GetSigningKeysRequest, PullQuarterlyFormRequest, QuarterlyReport, SigningKey,
        TaxDataForm, TaxDataFormBody, compliance_service_client::ComplianceServiceClient,
        filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
    },
};
use tonic::Code;

on_both_backends!(
    a_large_quarters_form_comes_in_pages_under_the_limit_that_join_to_its_digest_and_evidence,
    pulls_of_an_unchanged_form_append_nothing_and_quarters_outside_the_regime_are_refused,
    consumption_past_the_plausible_maximum_is_refused_and_nothing_is_stored,
);

const LIMIT: usize = 4 * 1024 * 1024;

async fn keys(app: &TestApp) -> Vec<SigningKey> {
    ComplianceServiceClient::new(app.channel("operator").await)
        .get_signing_keys(GetSigningKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
}

/// Ledger entries and checkpoints, by kind, as the database holds them.
async fn ledger_counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let url = &app.config.database_url;
    let mut counts = Vec::new();
    for kind in [
        "FILING_ACCEPTED",
        "FORM_REVISION_PUBLISHED",
        "FORM_PULLED",
        "FORM_ACKNOWLEDGED",
    ] {
        let sql = format!("SELECT COUNT(*) FROM ledger WHERE kind = '{kind}'");
        counts.push((kind, scalar(url, &sql).await));
    }
    counts.push(("ledger", scalar(url, "SELECT COUNT(*) FROM ledger").await));
    let checkpoints = scalar(url, "SELECT COUNT(*) FROM checkpoints").await;
    counts.push(("checkpoints", checkpoints));
    counts
}

fn pull_request(year: i32, quarter: i32, revision: u32, page: u32) -> PullQuarterlyFormRequest {
    PullQuarterlyFormRequest {
        year,
        quarter,
        revision,
        page,
    }
}

/// A 2026 Q1 report of the `n`-th generated payer with `sites` data centres
/// whose addresses are 500 Cyrillic characters (1,000 bytes) each.
fn large_report(
    n: u32,
    sites: usize,
    documents: &[minegate::proto::v1::DocumentRef],
) -> QuarterlyReport {
    let bin = generated_bin(n);
    let address: String = format!("{n:03} Экибастуз ")
        .chars()
        .cycle()
        .take(500)
        .collect();
    QuarterlyReport {
        data_centres: vec![
            DataCentre {
                address,
                kato_code: Some("552210000".into()),
                consumption_wh: None,
            };
            sites
        ],
        ..quarterly_report(
            &bin,
            &format!("large-{n}"),
            2026,
            1,
            1_000_000 + u64::from(n),
            &[&format!("95.{}.0.0/16", 56 + n)],
            documents,
        )
    }
}

async fn a_large_quarters_form_comes_in_pages_under_the_limit_that_join_to_its_digest_and_evidence(
    backend: Backend,
) {
    let clock = TestClock::at("2026-04-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "large").await;
    let mut filings = FilingServiceClient::new(authority);
    // 25 payers of 200 data centres (the most a report may list): ~5 MB.
    for n in 0..25 {
        filings
            .submit_quarterly_report(large_report(n, 200, &documents))
            .await
            .unwrap();
    }
    // A client with tonic's default limit (4 MiB) takes every page.
    let mut finance = FinanceServiceClient::new(app.channel("finance").await);
    let first = finance
        .pull_quarterly_form(pull_request(2026, 1, 0, 1))
        .await
        .unwrap()
        .into_inner();
    let header = first
        .page
        .clone()
        .expect("a form this large comes in pages");
    let body_bytes = header.body_bytes as usize;
    let per_page = LIMIT - 16 * 1024;
    assert_eq!((header.index, header.count, header.revision), (1, 2, 1));
    assert_eq!((header.offset, header.body_part.len()), (0, per_page));
    let after_first = ledger_counts(&app).await;
    let second = finance
        .pull_quarterly_form(pull_request(2026, 1, 1, 2))
        .await
        .unwrap()
        .into_inner();
    let tail = second.page.clone().unwrap();
    assert_eq!(
        (tail.index, tail.count, tail.offset),
        (2, 2, per_page as u64)
    );
    assert_eq!(tail.body_part.len(), body_bytes - per_page);
    for page in [&first, &second] {
        assert!(page.encoded_len() <= LIMIT, "{} bytes", page.encoded_len());
        assert_eq!(
            (
                page.body.as_ref(),
                page.evidence.as_ref().unwrap().artifact.len()
            ),
            (None, 0)
        );
    }
    // Joined, the pages are the body the digest and the evidence are of.
    let body = [header.body_part, tail.body_part].concat();
    assert_eq!(Sha256Hex::of(&body).as_str(), first.body_sha256);
    let mut evidence = second.evidence.clone().unwrap();
    evidence.artifact = body.clone();
    verify(ArtifactKind::FormBody, Some(&evidence), &keys(&app).await)
        .expect("the joined body's evidence holds");
    let decoded = TaxDataFormBody::decode(body.as_slice()).unwrap();
    assert_eq!((decoded.revision, decoded.rows.len()), (1, 25));
    assert!(decoded.rows.iter().all(|r| r.locations.len() == 200));
    let totals = decoded.totals.clone().unwrap();
    assert_eq!((totals.payers, totals.electricity_wh), (25, 25_000_300));

    // Asked whole, as a client of before pages would, it names its pages.
    let whole = TaxDataForm {
        body: Some(decoded),
        body_sha256: first.body_sha256.clone(),
        evidence: Some(evidence),
        ..Default::default()
    };
    let refused = finance
        .pull_quarterly_form(pull_request(2026, 1, 0, 0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(
        refused.message(),
        format!(
            "revision 1 of form 402 for 2026 Q1 is {} bytes with its evidence, more than one message holds ({LIMIT}): pull its pages 1 to 2 with revision 1",
            whole.encoded_len()
        )
    );
    let past = finance
        .pull_quarterly_form(pull_request(2026, 1, 1, 3))
        .await
        .unwrap_err();
    assert_eq!(
        (past.code(), past.message()),
        (
            Code::OutOfRange,
            "revision 1 of form 402 for 2026 Q1 has 2 pages, not 3"
        )
    );
    let unpinned = finance
        .pull_quarterly_form(pull_request(2026, 1, 0, 2))
        .await
        .unwrap_err();
    assert_eq!(
        violations(&unpinned),
        [(
            "revision".to_owned(),
            "page 2 needs the revision page 1 gave, so that the pages are of one body".to_owned()
        )]
    );
    // Only the first pull published (one entry); no page after it wrote.
    assert_eq!(ledger_counts(&app).await, after_first);
    assert_eq!(after_first[1], ("FORM_REVISION_PUBLISHED", 1));
    assert_eq!(after_first[2], ("FORM_PULLED", 0));

    // The finance client joins the pages, checks them and writes the form.
    let out = app.dir.path().join("form402.csv");
    let pulled = pull(&app.client_tls("finance"), 2026, 1, FormFormat::Csv, &out)
        .await
        .unwrap();
    assert_eq!((pulled.revision, pulled.rows), (1, 25));
    assert_eq!(
        (pulled.total_wh, pulled.body_sha256.as_str()),
        (25_000_300, first.body_sha256.as_str())
    );
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 26);
    app.gateway.shutdown().await.unwrap();
}

async fn pulls_of_an_unchanged_form_append_nothing_and_quarters_outside_the_regime_are_refused(
    backend: Backend,
) {
    let clock = TestClock::at("2026-05-02T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "small").await;
    FilingServiceClient::new(authority)
        .submit_quarterly_report(quarterly_report(
            BIN_A,
            "a-q1",
            2026,
            1,
            1_234_567,
            &["95.56.0.0/16"],
            &documents,
        ))
        .await
        .unwrap();
    let mut finance = FinanceServiceClient::new(app.channel("finance").await);
    let before = ledger_counts(&app).await;
    let form = finance
        .pull_quarterly_form(pull_request(2026, 1, 0, 0))
        .await
        .unwrap()
        .into_inner();
    // A small form stays one message, with its body in it.
    assert_eq!(
        (&form.page, form.body.as_ref().unwrap().revision),
        (&None, 1)
    );
    let published = ledger_counts(&app).await;
    let grew = |kind: &str, by: i64| {
        let at = |counts: &[(&str, i64)]| counts.iter().find(|(k, _)| *k == kind).unwrap().1;
        assert_eq!(at(&published) - at(&before), by, "{kind}");
    };
    grew("FORM_REVISION_PUBLISHED", 1);
    grew("FORM_PULLED", 0);
    grew("ledger", 1);
    grew("checkpoints", 1);
    for page in [0, 1, 0, 1, 0] {
        for revision in [0, 1] {
            let again = finance
                .pull_quarterly_form(pull_request(2026, 1, revision, page))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(again, form);
        }
    }
    assert_eq!(
        ledger_counts(&app).await,
        published,
        "ten pulls wrote nothing"
    );

    let refusal = |year, quarter| {
        let mut finance = finance.clone();
        async move {
            let status = finance
                .pull_quarterly_form(pull_request(year, quarter, 0, 0))
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            violations(&status)
        }
    };
    let one = |field: &str, reason: &str| vec![(field.to_owned(), reason.to_owned())];
    assert_eq!(
        refusal(2019, 4).await,
        one("year", "year must be 2020 to 2100, got 2019")
    );
    assert_eq!(
        refusal(2021, 4).await,
        one(
            "quarter",
            "2021 Q4 is before 2022 Q1, the first quarter of form 402 (§6-1)"
        )
    );
    assert_eq!(
        refusal(2101, 1).await,
        one("year", "year must be 2020 to 2100, got 2101")
    );
    assert_eq!(
        refusal(2026, 2).await,
        one(
            "quarter",
            "2026 Q2 has not ended; its form 402 can be pulled from 2026-07-01"
        )
    );
    assert_eq!(
        refusal(2100, 4).await,
        one(
            "quarter",
            "2100 Q4 has not ended; its form 402 can be pulled from 2101-01-01"
        )
    );
    // 2022 Q1, the first quarter of form 402, has one (empty) revision.
    let first = finance
        .pull_quarterly_form(pull_request(2022, 1, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.body.unwrap().rows, vec![]);
    let missing = finance
        .pull_quarterly_form(pull_request(2026, 1, 2, 0))
        .await
        .unwrap_err();
    assert_eq!(
        (missing.code(), missing.message()),
        (Code::NotFound, "form 402 for 2026 Q1 has no revision 2")
    );
    let mut after = published.clone();
    after[1].1 += 1;
    after[4].1 += 1;
    after[5].1 += 1;
    assert_eq!(ledger_counts(&app).await, after, "only 2022 Q1's revision");
    app.gateway.shutdown().await.unwrap();
}

async fn consumption_past_the_plausible_maximum_is_refused_and_nothing_is_stored(backend: Backend) {
    let clock = TestClock::at("2026-04-05T06:00:00Z");
    let Some(app) = spawn_on(backend, clock.clone()).await else {
        return;
    };
    let authority = app.channel("authority").await;
    let documents = upload_documents(authority.clone(), "max").await;
    let mut filings = FilingServiceClient::new(authority);
    let report = |wh: u64, key: &str| QuarterlyReport {
        data_centres: vec![data_centre(None)],
        ..quarterly_report(BIN_A, key, 2026, 1, wh, &["95.56.0.0/16"], &documents)
    };
    let before = ledger_counts(&app).await;
    let refused = filings
        .submit_quarterly_report(report(u64::MAX, "max"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        violations(&refused),
        [(
            "consumption_wh".to_owned(),
            "18446744073709551615 Wh is more than 10000000000000 Wh (10 TWh), the most one report may state for a quarter (4.5)".to_owned()
        )]
    );
    let over = filings
        .submit_quarterly_report(report(10_000_000_000_001, "over"))
        .await
        .unwrap_err();
    assert_eq!(violations(&over)[0].0, "consumption_wh");
    let url = &app.config.database_url;
    assert_eq!(scalar(url, "SELECT COUNT(*) FROM filings").await, 0);
    assert_eq!(ledger_counts(&app).await, before);
    // At the maximum it is accepted, and the form adds it up.
    filings
        .submit_quarterly_report(report(10_000_000_000_000, "at"))
        .await
        .unwrap();
    let form = FinanceServiceClient::new(app.channel("finance").await)
        .pull_quarterly_form(pull_request(2026, 1, 0, 0))
        .await
        .unwrap()
        .into_inner();
    let totals = form.body.unwrap().totals.unwrap();
    assert_eq!(
        (totals.electricity_wh, totals.electricity_kwh.as_str()),
        (10_000_000_000_000, "10000000000")
    );
    app.gateway.shutdown().await.unwrap();
}
