//! The domain ↔ contract mapping of every enum, in one place. Each direction
//! is an exhaustive `match`: a value added on either side does not compile
//! until it is mapped here, and nothing becomes `*_UNSPECIFIED` silently. From
//! the wire, `*_UNSPECIFIED` is `None` (no value given); a number the
//! contract does not know is an error the caller reports with its field.

use crate::{
    domain::{
        filing::{ActivityKind, DocumentKind, FilingKind},
        obligation::{ObligationKind, ObligationStatus},
        register::{FindingKind, RegisterStatus},
    },
    proto::v1 as pb,
};

/// A number that is not a value of the contract's enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownValue(pub i32);

/// Reads an enum off the wire: `Ok(None)` for `*_UNSPECIFIED`.
pub fn from_wire<P, D>(value: i32, map: fn(P) -> Option<D>) -> Result<Option<D>, UnknownValue>
where
    P: TryFrom<i32>,
{
    P::try_from(value).map(map).map_err(|_| UnknownValue(value))
}

pub fn filing_kind(kind: FilingKind) -> pb::FilingKind {
    match kind {
        FilingKind::StartNotification => pb::FilingKind::StartNotification,
        FilingKind::QuarterlyReport => pb::FilingKind::QuarterlyReport,
        FilingKind::TerminationNotice => pb::FilingKind::TerminationNotice,
    }
}

pub fn finding_kind(kind: FindingKind) -> pb::FindingKind {
    match kind {
        FindingKind::LateStartNotification => pb::FindingKind::LateStartNotification,
        FindingKind::LateQuarterlyReport => pb::FindingKind::LateQuarterlyReport,
        FindingKind::LateTerminationNotice => pb::FindingKind::LateTerminationNotice,
        FindingKind::UnregisteredFiler => pb::FindingKind::UnregisteredFiler,
        FindingKind::IpPoolConflict => pb::FindingKind::IpPoolConflict,
        FindingKind::DuplicateStart => pb::FindingKind::DuplicateStart,
        FindingKind::MissingQuarterlyReport => pb::FindingKind::MissingQuarterlyReport,
        FindingKind::FilingAfterTermination => pb::FindingKind::FilingAfterTermination,
    }
}

pub fn finding_kind_from(kind: pb::FindingKind) -> Option<FindingKind> {
    match kind {
        pb::FindingKind::Unspecified => None,
        pb::FindingKind::LateStartNotification => Some(FindingKind::LateStartNotification),
        pb::FindingKind::LateQuarterlyReport => Some(FindingKind::LateQuarterlyReport),
        pb::FindingKind::LateTerminationNotice => Some(FindingKind::LateTerminationNotice),
        pb::FindingKind::UnregisteredFiler => Some(FindingKind::UnregisteredFiler),
        pb::FindingKind::IpPoolConflict => Some(FindingKind::IpPoolConflict),
        pb::FindingKind::DuplicateStart => Some(FindingKind::DuplicateStart),
        pb::FindingKind::MissingQuarterlyReport => Some(FindingKind::MissingQuarterlyReport),
        pb::FindingKind::FilingAfterTermination => Some(FindingKind::FilingAfterTermination),
    }
}

pub fn obligation_kind(kind: ObligationKind) -> pb::ObligationKind {
    match kind {
        ObligationKind::EnergyExtract => pb::ObligationKind::EnergyExtract,
        ObligationKind::FinanceForm => pb::ObligationKind::FinanceForm,
    }
}

pub fn obligation_kind_from(kind: pb::ObligationKind) -> Option<ObligationKind> {
    match kind {
        pb::ObligationKind::Unspecified => None,
        pb::ObligationKind::EnergyExtract => Some(ObligationKind::EnergyExtract),
        pb::ObligationKind::FinanceForm => Some(ObligationKind::FinanceForm),
    }
}

pub fn obligation_status(status: ObligationStatus) -> pb::ObligationStatus {
    match status {
        ObligationStatus::Pending => pb::ObligationStatus::Pending,
        ObligationStatus::Fulfilled => pb::ObligationStatus::Fulfilled,
        ObligationStatus::Overdue => pb::ObligationStatus::Overdue,
        ObligationStatus::FulfilledLate => pb::ObligationStatus::FulfilledLate,
    }
}

pub fn obligation_status_from(status: pb::ObligationStatus) -> Option<ObligationStatus> {
    match status {
        pb::ObligationStatus::Unspecified => None,
        pb::ObligationStatus::Pending => Some(ObligationStatus::Pending),
        pb::ObligationStatus::Fulfilled => Some(ObligationStatus::Fulfilled),
        pb::ObligationStatus::Overdue => Some(ObligationStatus::Overdue),
        pb::ObligationStatus::FulfilledLate => Some(ObligationStatus::FulfilledLate),
    }
}

pub fn register_status(status: RegisterStatus) -> pb::RegisterStatus {
    match status {
        RegisterStatus::Planned => pb::RegisterStatus::Planned,
        RegisterStatus::Operating => pb::RegisterStatus::Operating,
        RegisterStatus::Terminated => pb::RegisterStatus::Terminated,
    }
}

pub fn register_status_from(status: pb::RegisterStatus) -> Option<RegisterStatus> {
    match status {
        pb::RegisterStatus::Unspecified => None,
        pb::RegisterStatus::Planned => Some(RegisterStatus::Planned),
        pb::RegisterStatus::Operating => Some(RegisterStatus::Operating),
        pb::RegisterStatus::Terminated => Some(RegisterStatus::Terminated),
    }
}

pub fn activity_kind(kind: ActivityKind) -> pb::ActivityKind {
    match kind {
        ActivityKind::Mining => pb::ActivityKind::Mining,
        ActivityKind::InfrastructureServices => pb::ActivityKind::InfrastructureServices,
        ActivityKind::MiningAndInfrastructureServices => {
            pb::ActivityKind::MiningAndInfrastructureServices
        }
    }
}

pub fn activity_kind_from(kind: pb::ActivityKind) -> Option<ActivityKind> {
    match kind {
        pb::ActivityKind::Unspecified => None,
        pb::ActivityKind::Mining => Some(ActivityKind::Mining),
        pb::ActivityKind::InfrastructureServices => Some(ActivityKind::InfrastructureServices),
        pb::ActivityKind::MiningAndInfrastructureServices => {
            Some(ActivityKind::MiningAndInfrastructureServices)
        }
    }
}

pub fn document_kind(kind: DocumentKind) -> pb::DocumentKind {
    match kind {
        DocumentKind::CustomsDeclarationOrTitle => pb::DocumentKind::CustomsDeclarationOrTitle,
        DocumentKind::Residency => pb::DocumentKind::Residency,
        DocumentKind::GridConnectionConditions => pb::DocumentKind::GridConnectionConditions,
    }
}

pub fn document_kind_from(kind: pb::DocumentKind) -> Option<DocumentKind> {
    match kind {
        pb::DocumentKind::Unspecified => None,
        pb::DocumentKind::CustomsDeclarationOrTitle => {
            Some(DocumentKind::CustomsDeclarationOrTitle)
        }
        pb::DocumentKind::Residency => Some(DocumentKind::Residency),
        pb::DocumentKind::GridConnectionConditions => Some(DocumentKind::GridConnectionConditions),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every domain value goes to the wire and back as itself, under the
    /// contract's name for it (the domain's name with the enum's prefix).
    #[test]
    fn every_value_round_trips_under_the_contracts_name() {
        for kind in FindingKind::ALL {
            let wire = finding_kind(kind);
            assert_eq!(finding_kind_from(wire), Some(kind));
            assert_eq!(
                wire.as_str_name(),
                format!("FINDING_KIND_{}", kind.as_str())
            );
        }
        for kind in [ObligationKind::EnergyExtract, ObligationKind::FinanceForm] {
            let wire = obligation_kind(kind);
            assert_eq!(obligation_kind_from(wire), Some(kind));
            assert_eq!(
                wire.as_str_name(),
                format!("OBLIGATION_KIND_{}", kind.as_str())
            );
        }
        for status in [
            ObligationStatus::Pending,
            ObligationStatus::Fulfilled,
            ObligationStatus::Overdue,
            ObligationStatus::FulfilledLate,
        ] {
            let wire = obligation_status(status);
            assert_eq!(obligation_status_from(wire), Some(status));
            assert_eq!(
                wire.as_str_name(),
                format!("OBLIGATION_STATUS_{}", status.as_str())
            );
        }
        for status in [
            RegisterStatus::Planned,
            RegisterStatus::Operating,
            RegisterStatus::Terminated,
        ] {
            let wire = register_status(status);
            assert_eq!(register_status_from(wire), Some(status));
            assert_eq!(
                wire.as_str_name(),
                format!("REGISTER_STATUS_{}", status.as_str())
            );
        }
        for kind in [
            ActivityKind::Mining,
            ActivityKind::InfrastructureServices,
            ActivityKind::MiningAndInfrastructureServices,
        ] {
            let wire = activity_kind(kind);
            assert_eq!(activity_kind_from(wire), Some(kind));
            assert_eq!(
                wire.as_str_name(),
                format!("ACTIVITY_KIND_{}", kind.as_str())
            );
        }
        for kind in DocumentKind::ALL {
            let wire = document_kind(kind);
            assert_eq!(document_kind_from(wire), Some(kind));
            assert_eq!(
                wire.as_str_name(),
                format!("DOCUMENT_KIND_{}", kind.as_str())
            );
        }
        for kind in [
            FilingKind::StartNotification,
            FilingKind::QuarterlyReport,
            FilingKind::TerminationNotice,
        ] {
            assert_eq!(
                filing_kind(kind).as_str_name(),
                format!("FILING_KIND_{}", kind.as_str())
            );
        }
    }

    #[test]
    fn unspecified_is_no_value_and_an_unknown_number_is_refused() {
        assert_eq!(from_wire(0, finding_kind_from), Ok(None));
        assert_eq!(
            from_wire(2, obligation_status_from),
            Ok(Some(ObligationStatus::Fulfilled))
        );
        assert_eq!(from_wire(99, register_status_from), Err(UnknownValue(99)));
    }
}
