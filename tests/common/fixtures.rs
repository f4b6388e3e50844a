//! Realistic filings and documents for the tests.

use minegate::{
    domain::identifiers::check_digit,
    proto::v1::{
        ActivityKind, BankDetails, Contacts, DataCentre, Date, DocumentKind, DocumentMetadata,
        DocumentRef, EquipmentLine, Person, QuarterlyReport, StartNotification, TerminationNotice,
        UploadDocumentRequest, filing_service_client::FilingServiceClient,
        upload_document_request::Part,
    },
};
use tonic::{Status, transport::Channel};

/// Valid BINs (legal entities) and an IIN (individual entrepreneur).
pub const BIN_A: &str = "210240001236";
pub const BIN_B: &str = "190540005677";
pub const BIN_C: &str = "220650012341";
pub const IIN_D: &str = "850315301235";

/// The `n`-th valid BIN of a generated series (for load tests).
pub fn generated_bin(n: u32) -> String {
    let mut serial = n;
    loop {
        // YY=23, MM=01, entity type 4, unit 0, a 5-digit serial: 11 digits.
        let prefix = format!("230140{serial:05}");
        let mut digits = [0u8; 12];
        for (i, c) in prefix.chars().enumerate() {
            digits[i] = c.to_digit(10).unwrap() as u8;
        }
        if let Some(check) = check_digit(&digits) {
            return format!("{prefix}{check}");
        }
        serial += 50_000; // never-issued number: take one from another range
    }
}

pub fn pdf(text: &str) -> Vec<u8> {
    format!("%PDF-1.4\n% {text}\n%%EOF\n").into_bytes()
}

pub fn png() -> Vec<u8> {
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec()
}

pub fn xml(text: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\"?><conditions>{text}</conditions>").into_bytes()
}

/// Uploads one document in chunks of `chunk` bytes.
pub async fn upload(
    channel: Channel,
    kind: DocumentKind,
    media_type: &str,
    file_name: &str,
    bytes: &[u8],
    chunk: usize,
) -> Result<DocumentRef, Status> {
    let mut messages = vec![UploadDocumentRequest {
        part: Some(Part::Metadata(DocumentMetadata {
            kind: kind as i32,
            media_type: media_type.into(),
            file_name: file_name.into(),
            size_bytes: Some(bytes.len() as u64),
            sha256: None,
        })),
    }];
    messages.extend(bytes.chunks(chunk.max(1)).map(|c| UploadDocumentRequest {
        part: Some(Part::Chunk(c.to_vec())),
    }));
    FilingServiceClient::new(channel)
        .upload_document(tokio_stream::iter(messages))
        .await
        .map(|r| r.into_inner())
}

/// The three documents every filing needs (3.10, 3.12, 3.13).
pub async fn upload_documents(channel: Channel, tag: &str) -> Vec<DocumentRef> {
    vec![
        upload(
            channel.clone(),
            DocumentKind::CustomsDeclarationOrTitle,
            "application/pdf",
            "customs-declaration.pdf",
            &pdf(&format!("customs declaration {tag}")),
            16,
        )
        .await
        .unwrap(),
        upload(
            channel.clone(),
            DocumentKind::Residency,
            "image/png",
            "residency.png",
            &[png(), tag.as_bytes().to_vec()].concat(),
            1024,
        )
        .await
        .unwrap(),
        upload(
            channel,
            DocumentKind::GridConnectionConditions,
            "application/xml",
            "grid-conditions.xml",
            &xml(tag),
            1024,
        )
        .await
        .unwrap(),
    ]
}

pub fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

pub fn person(bin: &str) -> Option<Person> {
    Some(Person {
        name: format!("TOO Qazaq Hash {bin}"),
        bin_or_iin: bin.into(),
        legal_address: "Ekibastuz, Mashkhur Zhusup 118, Pavlodar region".into(),
        contacts: Some(Contacts {
            phones: vec!["+77012345678".into()],
            emails: vec!["compliance@qazaqhash.kz".into()],
        }),
        activity_kind: ActivityKind::Mining as i32,
    })
}

pub fn data_centre(consumption_wh: Option<u64>) -> DataCentre {
    DataCentre {
        address: "Ekibastuz, industrial zone 3, building 7".into(),
        kato_code: Some("552210000".into()),
        consumption_wh,
    }
}

pub fn start_notification(
    bin: &str,
    key: &str,
    planned_start: Option<Date>,
    ip_pool: &[&str],
    documents: &[DocumentRef],
) -> StartNotification {
    StartNotification {
        person: person(bin),
        bank: Some(BankDetails {
            iban: "KZ75125KZT1001300335".into(),
            bic: "HSBKKZKX".into(),
            bank_name: "Halyk Bank of Kazakhstan".into(),
        }),
        required_power_kw: 3600,
        planned_jobs: 40,
        planned_investment_tiyn: 150_000_000_000,
        ip_pool: ip_pool.iter().map(|s| s.to_string()).collect(),
        documents: documents.to_vec(),
        data_centres: vec![data_centre(None)],
        planned_start_date: planned_start,
        idempotency_key: key.into(),
    }
}

pub fn quarterly_report(
    bin: &str,
    key: &str,
    year: i32,
    quarter: i32,
    consumption_wh: u64,
    ip_pool: &[&str],
    documents: &[DocumentRef],
) -> QuarterlyReport {
    QuarterlyReport {
        person: person(bin),
        year,
        quarter,
        consumption_wh,
        equipment: vec![EquipmentLine {
            model: "Antminer S21 Pro".into(),
            count: 1200,
        }],
        jobs: 38,
        investment_rest_of_year_tiyn: 20_000_000_000,
        investment_next_12_months_tiyn: 35_000_000_000,
        ip_pool: ip_pool.iter().map(|s| s.to_string()).collect(),
        documents: documents.to_vec(),
        data_centres: vec![data_centre(Some(consumption_wh))],
        idempotency_key: key.into(),
    }
}

pub fn termination(bin: &str, key: &str, end: Option<Date>) -> TerminationNotice {
    TerminationNotice {
        name: format!("TOO Qazaq Hash {bin}"),
        bin_or_iin: bin.into(),
        activity_end_date: end,
        idempotency_key: key.into(),
    }
}
