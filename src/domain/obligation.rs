//! The duties the authorized body owes the other two bodies — §6 the energy
//! extract within 10 days of receipt, §6-1 form 402 by the 15th of the second
//! month after the quarter — and how an act on a given civil date settles one.

use chrono::{DateTime, NaiveDate, Utc};

use super::quantities::Quarter;

/// An obligation the gateway watches: what is owed, by when, and how it
/// stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obligation {
    /// Order of creation (0 until stored: receipts do not carry it).
    pub seq: i64,
    pub obligation_id: String,
    pub kind: ObligationKind,
    pub due_date: NaiveDate,
    pub status: ObligationStatus,
    /// §6 the filing whose extract is owed.
    pub filing_id: Option<String>,
    pub extract_id: Option<String>,
    /// §6-1 the quarter whose form is owed.
    pub quarter: Option<Quarter>,
    pub fulfilled_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl Obligation {
    /// A new obligation, PENDING.
    pub fn new(
        obligation_id: String,
        kind: ObligationKind,
        due_date: NaiveDate,
        filing_id: Option<String>,
        extract_id: Option<String>,
        quarter: Option<Quarter>,
        created_at: DateTime<Utc>,
    ) -> Obligation {
        // One that arises already past its due date (a form obligation for
        // an old quarter, filed late) is OVERDUE from the start.
        let status =
            if ObligationStatus::is_overdue(super::deadlines::local_date(created_at), due_date) {
                ObligationStatus::Overdue
            } else {
                ObligationStatus::Pending
            };
        Obligation {
            seq: 0,
            obligation_id,
            kind,
            due_date,
            status,
            filing_id,
            extract_id,
            quarter,
            fulfilled_at: None,
            created_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObligationKind {
    EnergyExtract,
    FinanceForm,
}

impl ObligationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationKind::EnergyExtract => "ENERGY_EXTRACT",
            ObligationKind::FinanceForm => "FINANCE_FORM",
        }
    }

    pub fn parse(s: &str) -> Option<ObligationKind> {
        [ObligationKind::EnergyExtract, ObligationKind::FinanceForm]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObligationStatus {
    Pending,
    Fulfilled,
    Overdue,
    FulfilledLate,
}

impl ObligationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ObligationStatus::Pending => "PENDING",
            ObligationStatus::Fulfilled => "FULFILLED",
            ObligationStatus::Overdue => "OVERDUE",
            ObligationStatus::FulfilledLate => "FULFILLED_LATE",
        }
    }

    pub fn parse(s: &str) -> Option<ObligationStatus> {
        [
            ObligationStatus::Pending,
            ObligationStatus::Fulfilled,
            ObligationStatus::Overdue,
            ObligationStatus::FulfilledLate,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// The status once the obligation is fulfilled by an act on `act`.
    pub fn fulfilled_on(act: NaiveDate, due: NaiveDate) -> ObligationStatus {
        if act <= due {
            ObligationStatus::Fulfilled
        } else {
            ObligationStatus::FulfilledLate
        }
    }

    /// Whether an unfulfilled obligation is overdue on `today`.
    pub fn is_overdue(today: NaiveDate, due: NaiveDate) -> bool {
        today > due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_act_on_the_due_date_fulfils_and_a_day_later_is_late() {
        let due: NaiveDate = "2026-04-10".parse().unwrap();
        let day = |s: &str| s.parse::<NaiveDate>().unwrap();
        assert_eq!(
            ObligationStatus::fulfilled_on(day("2026-04-10"), due),
            ObligationStatus::Fulfilled
        );
        assert_eq!(
            ObligationStatus::fulfilled_on(day("2026-04-11"), due),
            ObligationStatus::FulfilledLate
        );
        assert!(!ObligationStatus::is_overdue(day("2026-04-10"), due));
        assert!(ObligationStatus::is_overdue(day("2026-04-11"), due));
        for status in ["PENDING", "FULFILLED", "OVERDUE", "FULFILLED_LATE"] {
            assert_eq!(ObligationStatus::parse(status).unwrap().as_str(), status);
        }
    }
}
