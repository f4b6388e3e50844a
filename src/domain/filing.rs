//! The three filings of the rules (§3, §4, §5) as validated domain values.
//! The service layer builds them from the wire messages, collecting every
//! problem with its field path; once built, no code re-checks them.

use chrono::NaiveDate;

use super::{
    Sha256Hex,
    identifiers::{Bic, BinOrIin, Email, Iban, KatoCode, Phone},
    ip::IpPool,
    quantities::{EquipmentLine, Kilowatts, Quarter, Tiyn, WattHours},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilingKind {
    StartNotification,
    QuarterlyReport,
    TerminationNotice,
}

impl FilingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FilingKind::StartNotification => "START_NOTIFICATION",
            FilingKind::QuarterlyReport => "QUARTERLY_REPORT",
            FilingKind::TerminationNotice => "TERMINATION_NOTICE",
        }
    }

    pub fn parse(s: &str) -> Option<FilingKind> {
        [
            FilingKind::StartNotification,
            FilingKind::QuarterlyReport,
            FilingKind::TerminationNotice,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// 2.4 what the person does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityKind {
    Mining,
    InfrastructureServices,
    MiningAndInfrastructureServices,
}

impl ActivityKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityKind::Mining => "MINING",
            ActivityKind::InfrastructureServices => "INFRASTRUCTURE_SERVICES",
            ActivityKind::MiningAndInfrastructureServices => "MINING_AND_INFRASTRUCTURE_SERVICES",
        }
    }

    pub fn parse(s: &str) -> Option<ActivityKind> {
        [
            ActivityKind::Mining,
            ActivityKind::InfrastructureServices,
            ActivityKind::MiningAndInfrastructureServices,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// 3.1-3.4 / 4.1-4.4 the person who files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub name: String,
    pub id: BinOrIin,
    pub legal_address: String,
    pub phones: Vec<Phone>,
    pub emails: Vec<Email>,
    pub activity: ActivityKind,
}

/// 3.5 bank details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankDetails {
    pub iban: Iban,
    pub bic: Bic,
    pub bank_name: String,
}

/// The supporting documents of 3.10, 3.12, 3.13 / 4.12, 4.14, 4.15.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    CustomsDeclarationOrTitle,
    Residency,
    GridConnectionConditions,
}

impl DocumentKind {
    pub const ALL: [DocumentKind; 3] = [
        DocumentKind::CustomsDeclarationOrTitle,
        DocumentKind::Residency,
        DocumentKind::GridConnectionConditions,
    ];

    /// The paragraphs requiring it, for messages.
    pub fn paragraphs(self) -> &'static str {
        match self {
            DocumentKind::CustomsDeclarationOrTitle => "3.10 / 4.12",
            DocumentKind::Residency => "3.12 / 4.14",
            DocumentKind::GridConnectionConditions => "3.13 / 4.15",
        }
    }

    pub fn parse(s: &str) -> Option<DocumentKind> {
        DocumentKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::CustomsDeclarationOrTitle => "CUSTOMS_DECLARATION_OR_TITLE",
            DocumentKind::Residency => "RESIDENCY",
            DocumentKind::GridConnectionConditions => "GRID_CONNECTION_CONDITIONS",
        }
    }
}

/// A document a filing references by digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRef {
    pub kind: DocumentKind,
    pub sha256: Sha256Hex,
}

/// 3.11 / 4.13 a data processing centre.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataCentre {
    pub address: String,
    pub kato: Option<KatoCode>,
    pub consumption: Option<WattHours>,
}

/// An idempotency key: 1-128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(s: &str) -> Result<IdempotencyKey, String> {
        if s.is_empty() {
            return Err(
                "is required: a retry with the same key returns the original receipt".into(),
            );
        }
        if s.len() > 128 || !s.chars().all(|c| c.is_ascii_graphic()) {
            return Err("must be 1 to 128 printable ASCII characters without spaces".into());
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// §3 start notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartNotification {
    pub person: Person,
    pub bank: BankDetails,
    pub required_power: Kilowatts,
    pub planned_jobs: u32,
    pub planned_investment: Tiyn,
    pub ip_pool: IpPool,
    pub documents: Vec<DocumentRef>,
    pub data_centres: Vec<DataCentre>,
    pub planned_start: NaiveDate,
    pub idempotency_key: IdempotencyKey,
}

/// §4 quarterly report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarterlyReport {
    pub person: Person,
    pub quarter: Quarter,
    pub consumption: WattHours,
    pub equipment: Vec<EquipmentLine>,
    pub jobs: u32,
    pub investment_rest_of_year: Tiyn,
    pub investment_next_12_months: Tiyn,
    pub ip_pool: IpPool,
    pub documents: Vec<DocumentRef>,
    pub data_centres: Vec<DataCentre>,
    pub idempotency_key: IdempotencyKey,
}

/// §5 termination notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminationNotice {
    pub name: String,
    pub id: BinOrIin,
    pub activity_end: NaiveDate,
    pub idempotency_key: IdempotencyKey,
}

/// Any of the three.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filing {
    Start(StartNotification),
    Quarterly(QuarterlyReport),
    Termination(TerminationNotice),
}

impl Filing {
    pub fn kind(&self) -> FilingKind {
        match self {
            Filing::Start(_) => FilingKind::StartNotification,
            Filing::Quarterly(_) => FilingKind::QuarterlyReport,
            Filing::Termination(_) => FilingKind::TerminationNotice,
        }
    }

    pub fn id(&self) -> &BinOrIin {
        match self {
            Filing::Start(f) => &f.person.id,
            Filing::Quarterly(f) => &f.person.id,
            Filing::Termination(f) => &f.id,
        }
    }

    pub fn idempotency_key(&self) -> &IdempotencyKey {
        match self {
            Filing::Start(f) => &f.idempotency_key,
            Filing::Quarterly(f) => &f.idempotency_key,
            Filing::Termination(f) => &f.idempotency_key,
        }
    }

    pub fn ip_pool(&self) -> Option<&IpPool> {
        match self {
            Filing::Start(f) => Some(&f.ip_pool),
            Filing::Quarterly(f) => Some(&f.ip_pool),
            Filing::Termination(_) => None,
        }
    }

    pub fn quarter(&self) -> Option<Quarter> {
        match self {
            Filing::Quarterly(f) => Some(f.quarter),
            _ => None,
        }
    }

    /// The documents a start notification or quarterly report references.
    pub fn documents(&self) -> &[DocumentRef] {
        match self {
            Filing::Start(f) => &f.documents,
            Filing::Quarterly(f) => &f.documents,
            Filing::Termination(_) => &[],
        }
    }

    pub fn document_digests(&self) -> Vec<&Sha256Hex> {
        match self {
            Filing::Start(f) => f.documents.iter().map(|d| &d.sha256).collect(),
            Filing::Quarterly(f) => f.documents.iter().map(|d| &d.sha256).collect(),
            Filing::Termination(_) => Vec::new(),
        }
    }
}
