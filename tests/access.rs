//! Every RPC checks the caller's role (docs/architecture.md §1), over real mutual TLS.

mod common;

use common::spawn_app;
use minegate::{
    proto::v1::{
        AcknowledgeExtractRequest, AcknowledgeFormRequest, GetSigningKeysRequest,
        ListObligationsRequest, ListRegisterRequest, PullQuarterlyFormRequest, StartNotification,
        SubscribeRequest, VerifyLedgerRequest, compliance_service_client::ComplianceServiceClient,
        energy_extract_service_client::EnergyExtractServiceClient,
        filing_service_client::FilingServiceClient, finance_service_client::FinanceServiceClient,
    },
    tls::pki::{self, LeafOptions},
};
use tonic::{Code, Status};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn code_and_message<T: std::fmt::Debug>(result: Result<T, Status>) -> (Code, String) {
    let status = result.expect_err("the call must fail");
    (status.code(), status.message().to_owned())
}

#[tokio::test]
async fn each_role_gets_past_authorization_on_its_own_services() {
    let app = spawn_app().await;

    let authority = app.channel("authority").await;
    let register = FilingServiceClient::new(authority.clone())
        .list_register(ListRegisterRequest::default())
        .await
        .expect("authority may list the register")
        .into_inner();
    assert_eq!(register.entries.len(), 0);
    let obligations = ComplianceServiceClient::new(authority)
        .list_obligations(ListObligationsRequest::default())
        .await
        .expect("authority may list obligations")
        .into_inner();
    assert_eq!(obligations.obligations.len(), 0);

    let energy = app.channel("energy").await;
    // Nothing is pending, so a caught-up stream ends at once with no extract.
    let mut stream = EnergyExtractServiceClient::new(energy.clone())
        .subscribe(SubscribeRequest {
            max_in_flight: 0,
            until_caught_up: true,
        })
        .await
        .expect("energy may subscribe")
        .into_inner();
    assert_eq!(stream.message().await.unwrap(), None);
    assert_eq!(
        code_and_message(
            EnergyExtractServiceClient::new(energy)
                .acknowledge(AcknowledgeExtractRequest::default())
                .await
        ),
        (Code::InvalidArgument, "extract_id: is required".to_owned())
    );

    let finance = app.channel("finance").await;
    assert_eq!(
        code_and_message(
            FinanceServiceClient::new(finance)
                .pull_quarterly_form(PullQuarterlyFormRequest::default())
                .await
        ),
        (
            Code::InvalidArgument,
            "quarter: quarter must be 1 to 4, got 0".to_owned()
        )
    );

    let operator = app.channel("operator").await;
    let ledger = ComplianceServiceClient::new(operator)
        .verify_ledger(VerifyLedgerRequest::default())
        .await
        .expect("operator may verify the ledger")
        .into_inner();
    assert!(ledger.intact);
    assert_eq!(ledger.entries_checked, 0);

    // Every role may read the public signing keys, to verify signatures offline.
    let mut published = Vec::new();
    for name in ["authority", "energy", "finance", "operator"] {
        let keys = ComplianceServiceClient::new(app.channel(name).await)
            .get_signing_keys(GetSigningKeysRequest::default())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_inner();
        assert_eq!(keys.keys.len(), 1, "{name}");
        published.push(keys.keys[0].clone());
    }
    assert!(published.iter().all(|k| *k == published[0]));
    assert_eq!(published[0].public_key.len(), 32);
    assert_eq!(published[0].key_id.len(), 16);
    app.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn each_role_calling_a_forbidden_service_is_denied_by_role_and_method() {
    let app = spawn_app().await;
    let denied = |role: &str, method: &str| {
        (
            Code::PermissionDenied,
            format!("role {role} (urn:minegate:{role}) may not call kz.digitalmining.v1.{method}"),
        )
    };

    let energy = app.channel("energy").await;
    assert_eq!(
        code_and_message(
            FilingServiceClient::new(energy.clone())
                .submit_start_notification(StartNotification::default())
                .await
        ),
        denied("energy", "FilingService/SubmitStartNotification")
    );
    assert_eq!(
        code_and_message(
            ComplianceServiceClient::new(energy)
                .list_obligations(ListObligationsRequest::default())
                .await
        ),
        denied("energy", "ComplianceService/ListObligations")
    );

    let finance = app.channel("finance").await;
    assert_eq!(
        code_and_message(
            EnergyExtractServiceClient::new(finance.clone())
                .subscribe(SubscribeRequest::default())
                .await
        ),
        denied("finance", "EnergyExtractService/Subscribe")
    );
    assert_eq!(
        code_and_message(
            FilingServiceClient::new(finance)
                .upload_document(tokio_stream::iter(Vec::new()))
                .await
        ),
        denied("finance", "FilingService/UploadDocument")
    );

    let authority = app.channel("authority").await;
    assert_eq!(
        code_and_message(
            EnergyExtractServiceClient::new(authority.clone())
                .acknowledge(AcknowledgeExtractRequest::default())
                .await
        ),
        denied("authority", "EnergyExtractService/Acknowledge")
    );
    assert_eq!(
        code_and_message(
            FinanceServiceClient::new(authority)
                .acknowledge(AcknowledgeFormRequest::default())
                .await
        ),
        denied("authority", "FinanceService/Acknowledge")
    );

    let operator = app.channel("operator").await;
    assert_eq!(
        code_and_message(
            FilingServiceClient::new(operator)
                .submit_start_notification(StartNotification::default())
                .await
        ),
        denied("operator", "FilingService/SubmitStartNotification")
    );
    app.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_identity_not_in_the_config_is_unauthenticated_but_may_check_health() {
    let app = spawn_app().await;
    pki::issue(
        &app.pki_dir(),
        "stranger",
        &LeafOptions::client("stranger", Some("urn:example:stranger")),
    )
    .unwrap();
    let stranger = app.channel("stranger").await;
    assert_eq!(
        code_and_message(
            FinanceServiceClient::new(stranger.clone())
                .pull_quarterly_form(PullQuarterlyFormRequest::default())
                .await
        ),
        (
            Code::Unauthenticated,
            "identity \"urn:example:stranger\" is not known to this gateway".to_owned()
        )
    );
    let health = HealthClient::new(stranger)
        .check(HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status(), ServingStatus::Serving);
    app.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn identity_falls_back_to_the_subject_common_name() {
    let dir = common::fresh_folder();
    pki::issue(
        &common::pki_dir(&dir),
        "cn-only",
        &LeafOptions::client("kz-finance-gateway", None),
    )
    .unwrap();
    let mut config = common::test_config(&dir);
    config
        .roles
        .insert("kz-finance-gateway".into(), minegate::tls::Role::Finance);
    let app = common::start(config, dir).await;

    let channel = app.channel("cn-only").await;
    let form = FinanceServiceClient::new(channel.clone())
        .pull_quarterly_form(PullQuarterlyFormRequest {
            year: 2026,
            quarter: 1,
            ..Default::default()
        })
        .await
        .expect("a CN-only identity mapped to finance may pull")
        .into_inner();
    assert_eq!(form.body.unwrap().revision, 1);
    assert_eq!(
        code_and_message(
            FilingServiceClient::new(channel)
                .submit_start_notification(StartNotification::default())
                .await
        ),
        (
            Code::PermissionDenied,
            "role finance (kz-finance-gateway) may not call kz.digitalmining.v1.FilingService/SubmitStartNotification".to_owned()
        )
    );
    app.gateway.shutdown().await.unwrap();
}
