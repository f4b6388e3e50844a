//! How an accepted filing changes the list of organisations that notified
//! the start of activity (the register), and which compliance findings it
//! raises. The gateway records; people decide: nothing here rejects a filing.

use chrono::NaiveDate;

use super::{
    deadlines,
    filing::{Filing, FilingKind, QuarterlyReport, StartNotification, TerminationNotice},
    quantities::Quarter,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterStatus {
    Planned,
    Operating,
    Terminated,
}

impl RegisterStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterStatus::Planned => "PLANNED",
            RegisterStatus::Operating => "OPERATING",
            RegisterStatus::Terminated => "TERMINATED",
        }
    }

    pub fn parse(s: &str) -> Option<RegisterStatus> {
        [
            RegisterStatus::Planned,
            RegisterStatus::Operating,
            RegisterStatus::Terminated,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    LateStartNotification,
    LateQuarterlyReport,
    LateTerminationNotice,
    UnregisteredFiler,
    IpPoolConflict,
    DuplicateStart,
    MissingQuarterlyReport,
    FilingAfterTermination,
}

impl FindingKind {
    pub const ALL: [FindingKind; 8] = [
        FindingKind::LateStartNotification,
        FindingKind::LateQuarterlyReport,
        FindingKind::LateTerminationNotice,
        FindingKind::UnregisteredFiler,
        FindingKind::IpPoolConflict,
        FindingKind::DuplicateStart,
        FindingKind::MissingQuarterlyReport,
        FindingKind::FilingAfterTermination,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::LateStartNotification => "LATE_START_NOTIFICATION",
            FindingKind::LateQuarterlyReport => "LATE_QUARTERLY_REPORT",
            FindingKind::LateTerminationNotice => "LATE_TERMINATION_NOTICE",
            FindingKind::UnregisteredFiler => "UNREGISTERED_FILER",
            FindingKind::IpPoolConflict => "IP_POOL_CONFLICT",
            FindingKind::DuplicateStart => "DUPLICATE_START",
            FindingKind::MissingQuarterlyReport => "MISSING_QUARTERLY_REPORT",
            FindingKind::FilingAfterTermination => "FILING_AFTER_TERMINATION",
        }
    }

    pub fn parse(s: &str) -> Option<FindingKind> {
        FindingKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A finding before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingDraft {
    pub kind: FindingKind,
    /// Days late, or days short of 30 for a late start notification; else 0.
    pub days: i32,
    pub quarter: Option<Quarter>,
    pub detail: String,
}

/// What the register says of a BIN/IIN now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterState {
    pub status: RegisterStatus,
    pub activity_end: Option<NaiveDate>,
}

/// A block of the filing's pool that overlaps one registered to someone else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConflict {
    pub cidr: String,
    pub other_cidr: String,
    pub other_bin_or_iin: String,
}

/// Most IP_POOL_CONFLICT findings a receipt names one by one; the rest are
/// counted in one more finding, so a receipt stays within its budget however
/// many others hold the same addresses.
pub const MAX_NAMED_CONFLICTS: usize = 20;

/// The overlaps of a filing's pool with ranges registered to others: the
/// first [`MAX_NAMED_CONFLICTS`] in full, and how many more there are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpConflicts {
    pub named: Vec<IpConflict>,
    pub more: u64,
}

impl IpConflicts {
    pub fn add(&mut self, conflict: IpConflict) {
        if self.named.len() < MAX_NAMED_CONFLICTS {
            self.named.push(conflict);
        } else {
            self.more += 1;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterChange {
    /// No change to the entry (or no entry).
    Unchanged,
    /// A new entry, PLANNED.
    Create,
    /// The entry moves to this status.
    SetStatus(RegisterStatus),
}

/// The gateway's judgement of one valid filing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub due_date: NaiveDate,
    pub days_late: i32,
    pub findings: Vec<FindingDraft>,
    pub register: RegisterChange,
}

impl Assessment {
    pub fn deadline_met(&self) -> bool {
        self.days_late == 0
    }
}

/// Judges `filing`, received on the civil date `received`, against the
/// register entry of its BIN/IIN (if any) and the IP conflicts found.
pub fn assess(
    filing: &Filing,
    received: NaiveDate,
    entry: Option<&RegisterState>,
    conflicts: &IpConflicts,
) -> Assessment {
    let mut findings = Vec::new();
    let (due_date, register) = match filing {
        Filing::Start(start) => assess_start(start, received, entry, &mut findings),
        Filing::Quarterly(report) => {
            assess_quarterly(filing, report, received, entry, &mut findings)
        }
        Filing::Termination(notice) => {
            assess_termination(filing, notice, received, entry, &mut findings)
        }
    };
    findings.extend(conflict_findings(filing, conflicts));
    Assessment {
        due_date,
        days_late: deadlines::days_late(received, due_date),
        findings,
        register,
    }
}

/// §3 a start notification: due 30 days before the planned start; it makes
/// the register entry (again, after a termination), and a second one while
/// the entry stands is a DUPLICATE_START finding and changes nothing.
/// Returns the due date and the change.
fn assess_start(
    start: &StartNotification,
    received: NaiveDate,
    entry: Option<&RegisterState>,
    findings: &mut Vec<FindingDraft>,
) -> (NaiveDate, RegisterChange) {
    let due = deadlines::start_notification_due(start.planned_start);
    let days_short = deadlines::days_late(received, due);
    if days_short > 0 {
        let ahead = (start.planned_start - received).num_days();
        findings.push(FindingDraft {
            kind: FindingKind::LateStartNotification,
            days: days_short,
            quarter: None,
            detail: format!(
                "filed {received}, {ahead} days before the planned start {}; the rules require at least 30 (due {due}), {days_short} days short",
                start.planned_start
            ),
        });
    }
    let register = match entry.map(|e| e.status) {
        None => RegisterChange::Create,
        Some(RegisterStatus::Terminated) => RegisterChange::SetStatus(RegisterStatus::Planned),
        Some(status) => {
            findings.push(FindingDraft {
                kind: FindingKind::DuplicateStart,
                days: 0,
                quarter: None,
                detail: format!(
                    "{} is already in the register ({}); the entry is unchanged",
                    start.person.id,
                    status.as_str()
                ),
            });
            RegisterChange::Unchanged
        }
    };
    (due, register)
}

/// §4 a quarterly report: due the 10th of the month after its quarter;
/// it moves a PLANNED entry to OPERATING. One from a person not in the
/// register, or for a quarter after their activity ended, is a finding.
fn assess_quarterly(
    filing: &Filing,
    report: &QuarterlyReport,
    received: NaiveDate,
    entry: Option<&RegisterState>,
    findings: &mut Vec<FindingDraft>,
) -> (NaiveDate, RegisterChange) {
    let due = deadlines::quarterly_report_due(report.quarter);
    let late = deadlines::days_late(received, due);
    if late > 0 {
        findings.push(FindingDraft {
            kind: FindingKind::LateQuarterlyReport,
            days: late,
            quarter: Some(report.quarter),
            detail: format!(
                "report for {} filed {received}, due {due}: {late} days late",
                report.quarter
            ),
        });
    }
    let register = match entry {
        None => {
            findings.push(unregistered(filing, Some(report.quarter)));
            RegisterChange::Unchanged
        }
        Some(RegisterState {
            status: RegisterStatus::Planned,
            ..
        }) => RegisterChange::SetStatus(RegisterStatus::Operating),
        Some(RegisterState {
            status: RegisterStatus::Terminated,
            activity_end,
        }) => {
            if activity_end.is_none_or(|end| report.quarter.first_day() > end) {
                findings.push(FindingDraft {
                    kind: FindingKind::FilingAfterTermination,
                    days: 0,
                    quarter: Some(report.quarter),
                    detail: format!(
                        "report for {} from a person whose activity ended {}",
                        report.quarter,
                        activity_end.map_or("(date unknown)".to_owned(), |d| d.to_string())
                    ),
                });
            }
            RegisterChange::Unchanged
        }
        Some(_) => RegisterChange::Unchanged,
    };
    (due, register)
}

/// §5 a termination notice: due 10 days after the activity ended; it
/// marks the entry TERMINATED (one from a person not in the register is a
/// finding).
fn assess_termination(
    filing: &Filing,
    notice: &TerminationNotice,
    received: NaiveDate,
    entry: Option<&RegisterState>,
    findings: &mut Vec<FindingDraft>,
) -> (NaiveDate, RegisterChange) {
    let due = deadlines::termination_notice_due(notice.activity_end);
    let late = deadlines::days_late(received, due);
    if late > 0 {
        findings.push(FindingDraft {
            kind: FindingKind::LateTerminationNotice,
            days: late,
            quarter: None,
            detail: format!(
                "activity ended {}, notice filed {received}, due {due}: {late} days late",
                notice.activity_end
            ),
        });
    }
    let register = match entry {
        None => {
            findings.push(unregistered(filing, None));
            RegisterChange::Unchanged
        }
        Some(_) => RegisterChange::SetStatus(RegisterStatus::Terminated),
    };
    (due, register)
}

/// 3.9 / 4.11 one IP_POOL_CONFLICT finding per overlap named, and one that
/// counts the rest.
fn conflict_findings(filing: &Filing, conflicts: &IpConflicts) -> Vec<FindingDraft> {
    let finding = |detail| FindingDraft {
        kind: FindingKind::IpPoolConflict,
        days: 0,
        quarter: filing.quarter(),
        detail,
    };
    let mut findings: Vec<FindingDraft> = conflicts
        .named
        .iter()
        .map(|c| {
            finding(format!(
                "{} overlaps {} registered to {}",
                c.cidr, c.other_cidr, c.other_bin_or_iin
            ))
        })
        .collect();
    if conflicts.more > 0 {
        findings.push(finding(format!(
            "and {} more overlaps with ranges registered to others (the first {MAX_NAMED_CONFLICTS} are named)",
            conflicts.more
        )));
    }
    findings
}

/// §4 the quarters an OPERATING or PLANNED entry should have reported by
/// `today` and has not: every quarter from the one its activity starts in
/// whose report deadline has passed. Each with its due date and days late.
pub fn missing_quarterly_reports(
    status: RegisterStatus,
    activity_start: NaiveDate,
    reported: &[Quarter],
    today: NaiveDate,
) -> Vec<(Quarter, NaiveDate, i32)> {
    if status == RegisterStatus::Terminated {
        return Vec::new();
    }
    let mut missing = Vec::new();
    let mut quarter = Quarter::containing(activity_start);
    loop {
        let due = deadlines::quarterly_report_due(quarter);
        if due >= today {
            break;
        }
        if !reported.contains(&quarter) {
            missing.push((quarter, due, deadlines::days_late(today, due)));
        }
        quarter = match Quarter::new(
            quarter.year() + i32::from(quarter.quarter() == 4),
            quarter.quarter() % 4 + 1,
        ) {
            Ok(next) => next,
            Err(_) => break,
        };
    }
    missing
}

fn unregistered(filing: &Filing, quarter: Option<Quarter>) -> FindingDraft {
    let what = match filing.kind() {
        FilingKind::QuarterlyReport => "quarterly report",
        FilingKind::TerminationNotice => "termination notice",
        FilingKind::StartNotification => "start notification",
    };
    FindingDraft {
        kind: FindingKind::UnregisteredFiler,
        days: 0,
        quarter,
        detail: format!(
            "{what} from {}, who has no entry in the register (no start notification)",
            filing.id()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        filing::{IdempotencyKey, TerminationNotice},
        identifiers::BinOrIin,
    };

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn termination(end: &str) -> Filing {
        Filing::Termination(TerminationNotice {
            name: "TOO Qazaq Hash".into(),
            id: BinOrIin::parse("210240001236").unwrap(),
            activity_end: d(end),
            idempotency_key: IdempotencyKey::parse("t-1").unwrap(),
        })
    }

    #[test]
    fn termination_on_time_terminates_the_entry() {
        let planned = RegisterState {
            status: RegisterStatus::Operating,
            activity_end: None,
        };
        let a = assess(
            &termination("2026-06-25"),
            d("2026-07-05"),
            Some(&planned),
            &IpConflicts::default(),
        );
        assert_eq!(
            a,
            Assessment {
                due_date: d("2026-07-05"),
                days_late: 0,
                findings: vec![],
                register: RegisterChange::SetStatus(RegisterStatus::Terminated),
            }
        );
    }

    #[test]
    fn late_termination_from_an_unregistered_filer_raises_both_findings() {
        let a = assess(
            &termination("2026-06-25"),
            d("2026-07-08"),
            None,
            &IpConflicts::default(),
        );
        assert_eq!(a.days_late, 3);
        assert_eq!(a.register, RegisterChange::Unchanged);
        assert_eq!(
            a.findings,
            vec![
                FindingDraft {
                    kind: FindingKind::LateTerminationNotice,
                    days: 3,
                    quarter: None,
                    detail: "activity ended 2026-06-25, notice filed 2026-07-08, due 2026-07-05: 3 days late".into(),
                },
                FindingDraft {
                    kind: FindingKind::UnregisteredFiler,
                    days: 0,
                    quarter: None,
                    detail: "termination notice from 210240001236, who has no entry in the register (no start notification)".into(),
                },
            ]
        );
    }

    #[test]
    fn a_missing_report_is_found_on_the_11th() {
        let q1 = Quarter::new(2026, 1).unwrap();
        let start = d("2026-02-15");
        let on_the_10th =
            missing_quarterly_reports(RegisterStatus::Operating, start, &[], d("2026-04-10"));
        assert_eq!(on_the_10th, vec![]);
        let on_the_11th =
            missing_quarterly_reports(RegisterStatus::Operating, start, &[], d("2026-04-11"));
        assert_eq!(on_the_11th, vec![(q1, d("2026-04-10"), 1)]);
        let reported =
            missing_quarterly_reports(RegisterStatus::Planned, start, &[q1], d("2026-07-20"));
        assert_eq!(
            reported,
            vec![(Quarter::new(2026, 2).unwrap(), d("2026-07-10"), 10)]
        );
        let ended =
            missing_quarterly_reports(RegisterStatus::Terminated, start, &[], d("2026-07-20"));
        assert_eq!(ended, vec![]);
        // Across a year boundary.
        let q4 = missing_quarterly_reports(
            RegisterStatus::Operating,
            d("2025-11-01"),
            &[],
            d("2026-01-11"),
        );
        assert_eq!(
            q4,
            vec![(Quarter::new(2025, 4).unwrap(), d("2026-01-10"), 1)]
        );
    }

    #[test]
    fn finding_kind_names_match_the_contract() {
        for kind in FindingKind::ALL {
            assert_eq!(FindingKind::parse(kind.as_str()), Some(kind));
        }
    }
}
