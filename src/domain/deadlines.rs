//! Every statutory deadline of the rules, as civil dates in Kazakhstan
//! (Asia/Almaty). A deadline is met when the act happens on or before that
//! date, local time. Pure: no clock, no I/O.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use chrono_tz::Asia::Almaty;

use super::quantities::Quarter;

/// The civil date in Kazakhstan of an instant.
pub fn local_date(instant: DateTime<Utc>) -> NaiveDate {
    instant.with_timezone(&Almaty).date_naive()
}

/// §3: the start notification is due 30 calendar days before the planned start.
pub fn start_notification_due(planned_start: NaiveDate) -> NaiveDate {
    planned_start - Days::new(30)
}

/// §4: the quarterly report is due the 10th of the month after the quarter.
pub fn quarterly_report_due(quarter: Quarter) -> NaiveDate {
    first_day_after(quarter, 1)
        .with_day(10)
        .expect("every month has a 10th")
}

/// §5: the termination notice is due 10 calendar days after the activity ended.
pub fn termination_notice_due(activity_end: NaiveDate) -> NaiveDate {
    activity_end + Days::new(10)
}

/// §6: the energy extract is due 10 calendar days after the filing's receipt.
pub fn energy_extract_due(receipt: NaiveDate) -> NaiveDate {
    receipt + Days::new(10)
}

/// §6-1: form 402 is due the 15th of the second month after the quarter.
pub fn finance_form_due(quarter: Quarter) -> NaiveDate {
    first_day_after(quarter, 2)
        .with_day(15)
        .expect("every month has a 15th")
}

/// Whole days an act on `act` comes after `due`; 0 when on time.
pub fn days_late(act: NaiveDate, due: NaiveDate) -> i32 {
    (act - due).num_days().max(0) as i32
}

/// The first day of the `months_after`-th month after the quarter ends (1 =
/// the month right after it).
fn first_day_after(quarter: Quarter, months_after: u32) -> NaiveDate {
    let last_month = quarter.quarter() * 3; // 3, 6, 9, 12
    let month0 = last_month - 1 + months_after; // zero-based, may pass December
    NaiveDate::from_ymd_opt(quarter.year() + (month0 / 12) as i32, month0 % 12 + 1, 1)
        .expect("a valid month")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn q(year: i32, quarter: u32) -> Quarter {
        Quarter::new(year, quarter).unwrap()
    }

    #[test]
    fn the_deadline_table() {
        // §3 start notification: 30 days before the planned start.
        assert_eq!(start_notification_due(d("2026-05-01")), d("2026-04-01"));
        assert_eq!(start_notification_due(d("2026-01-15")), d("2025-12-16"));
        assert_eq!(start_notification_due(d("2024-03-30")), d("2024-02-29")); // leap
        assert_eq!(start_notification_due(d("2023-03-30")), d("2023-02-28"));

        // §4 quarterly report: the 10th of the next month.
        assert_eq!(quarterly_report_due(q(2026, 1)), d("2026-04-10"));
        assert_eq!(quarterly_report_due(q(2026, 2)), d("2026-07-10"));
        assert_eq!(quarterly_report_due(q(2026, 3)), d("2026-10-10"));
        assert_eq!(quarterly_report_due(q(2026, 4)), d("2027-01-10")); // year boundary

        // §5 termination: 10 days after the end.
        assert_eq!(termination_notice_due(d("2026-06-25")), d("2026-07-05"));
        assert_eq!(termination_notice_due(d("2025-12-28")), d("2026-01-07"));
        assert_eq!(termination_notice_due(d("2024-02-20")), d("2024-03-01")); // leap
        assert_eq!(termination_notice_due(d("2023-02-20")), d("2023-03-02"));

        // §6 energy extract: 10 days after receipt.
        assert_eq!(energy_extract_due(d("2026-11-23")), d("2026-12-03"));
        assert_eq!(energy_extract_due(d("2026-12-25")), d("2027-01-04"));
        assert_eq!(energy_extract_due(d("2028-02-25")), d("2028-03-06")); // leap

        // §6-1 form 402: the 15th of the second month after the quarter.
        assert_eq!(finance_form_due(q(2026, 1)), d("2026-05-15"));
        assert_eq!(finance_form_due(q(2026, 2)), d("2026-08-15"));
        assert_eq!(finance_form_due(q(2026, 3)), d("2026-11-15"));
        assert_eq!(finance_form_due(q(2026, 4)), d("2027-02-15")); // year boundary
    }

    #[test]
    fn receipt_dates_are_civil_dates_in_almaty() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        // 23:30 UTC is already the next day in Almaty (UTC+5 since 1 March 2024).
        assert_eq!(local_date(at("2026-04-09T23:30:00Z")), d("2026-04-10"));
        // ... and was under UTC+6 before that.
        assert_eq!(local_date(at("2023-04-09T23:30:00Z")), d("2023-04-10"));
        // 18:30 UTC: still the same day under UTC+5, the next one under UTC+6.
        assert_eq!(local_date(at("2026-04-10T18:30:00Z")), d("2026-04-10"));
        assert_eq!(local_date(at("2023-04-10T18:30:00Z")), d("2023-04-11"));
        // So a Q1 report sent at 23:30 UTC on 10 April is already late in Almaty.
        let received = local_date(at("2026-04-10T23:30:00Z"));
        assert_eq!(days_late(received, quarterly_report_due(q(2026, 1))), 1);
    }

    #[test]
    fn a_deadline_is_met_on_its_own_day() {
        let due = quarterly_report_due(q(2026, 1));
        assert_eq!(days_late(d("2026-04-09"), due), 0);
        assert_eq!(days_late(d("2026-04-10"), due), 0);
        assert_eq!(days_late(d("2026-04-11"), due), 1);
        assert_eq!(days_late(d("2026-05-10"), due), 30);
    }
}
