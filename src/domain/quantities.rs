//! Legal quantities as types: a reporting quarter, money in tiyn, energy in
//! watt-hours, power in kilowatts, equipment lines. No floats anywhere.

use std::fmt;

/// The first year the regime could be reported under (order No. 384/НҚ, 2020).
pub const FIRST_YEAR: i32 = 2020;
/// A year beyond any plausible filing; guards against typos like 20266.
pub const LAST_YEAR: i32 = 2100;

/// A calendar quarter: §4 reporting period, §6-1 tax period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Quarter {
    year: i32,
    quarter: u32,
}

impl Quarter {
    pub fn new(year: i32, quarter: u32) -> Result<Quarter, String> {
        if !(1..=4).contains(&quarter) {
            return Err(format!("quarter must be 1 to 4, got {quarter}"));
        }
        if !(FIRST_YEAR..=LAST_YEAR).contains(&year) {
            return Err(format!(
                "year must be {FIRST_YEAR} to {LAST_YEAR}, got {year}"
            ));
        }
        Ok(Quarter { year, quarter })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn quarter(self) -> u32 {
        self.quarter
    }

    /// The quarter a civil date falls in.
    pub fn containing(date: chrono::NaiveDate) -> Quarter {
        use chrono::Datelike;
        Quarter {
            year: date.year(),
            quarter: (date.month() - 1) / 3 + 1,
        }
    }

    /// The first day of the quarter.
    pub fn first_day(self) -> chrono::NaiveDate {
        chrono::NaiveDate::from_ymd_opt(self.year, (self.quarter - 1) * 3 + 1, 1)
            .expect("a valid date")
    }
}

impl fmt::Display for Quarter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Q{}", self.year, self.quarter)
    }
}

/// Money in tiyn (1 tenge = 100 tiyn), never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tiyn(i64);

impl Tiyn {
    pub fn new(value: i64) -> Result<Tiyn, String> {
        if value < 0 {
            Err(format!("money cannot be negative, got {value} tiyn"))
        } else {
            Ok(Tiyn(value))
        }
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// Electricity in watt-hours (1 kWh = 1000 Wh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WattHours(pub u64);

impl WattHours {
    /// Exact decimal kWh, e.g. 1234567 Wh → "1234.567".
    pub fn kwh_text(self) -> String {
        let (whole, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            whole.to_string()
        } else {
            format!("{whole}.{frac:03}")
                .trim_end_matches('0')
                .to_owned()
        }
    }
}

/// Electric power in kilowatts (3.6 MW = 3600 kW); a capacity request is never 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kilowatts(u64);

impl Kilowatts {
    pub fn new(value: u64) -> Result<Kilowatts, String> {
        if value == 0 {
            Err("the required capacity must be more than 0 kW".into())
        } else {
            Ok(Kilowatts(value))
        }
    }

    pub fn value(self) -> u64 {
        self.0
    }
}

/// 4.6 / 4.7 a model of mining equipment and how many units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquipmentLine {
    pub model: String,
    pub count: u32,
}

impl EquipmentLine {
    pub fn new(model: &str, count: u32) -> Result<EquipmentLine, (&'static str, String)> {
        let model = model.trim();
        if model.is_empty() {
            return Err(("model", "the equipment model name is empty".into()));
        }
        if model.chars().count() > 200 {
            return Err((
                "model",
                "the equipment model name is longer than 200 characters".into(),
            ));
        }
        if count == 0 {
            return Err(("count", "the number of units must be at least 1".into()));
        }
        Ok(EquipmentLine {
            model: model.to_owned(),
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarters() {
        assert_eq!(Quarter::new(2026, 4).unwrap().to_string(), "2026 Q4");
        assert_eq!(
            Quarter::new(2026, 5),
            Err("quarter must be 1 to 4, got 5".into())
        );
        assert_eq!(
            Quarter::new(2026, 0),
            Err("quarter must be 1 to 4, got 0".into())
        );
        assert_eq!(
            Quarter::new(2019, 1),
            Err("year must be 2020 to 2100, got 2019".into())
        );
        assert_eq!(
            Quarter::containing("2026-11-23".parse().unwrap()),
            Quarter::new(2026, 4).unwrap()
        );
        assert_eq!(
            Quarter::new(2026, 3).unwrap().first_day(),
            "2026-07-01".parse::<chrono::NaiveDate>().unwrap()
        );
    }

    #[test]
    fn money_energy_power_equipment() {
        assert_eq!(Tiyn::new(0).unwrap().value(), 0);
        assert_eq!(
            Tiyn::new(-1),
            Err("money cannot be negative, got -1 tiyn".into())
        );
        assert_eq!(WattHours(1_234_567).kwh_text(), "1234.567");
        assert_eq!(WattHours(1_234_500).kwh_text(), "1234.5");
        assert_eq!(WattHours(5_000).kwh_text(), "5");
        assert_eq!(WattHours(7).kwh_text(), "0.007");
        assert_eq!(
            Kilowatts::new(0),
            Err("the required capacity must be more than 0 kW".into())
        );
        assert_eq!(
            EquipmentLine::new(" Antminer S21 ", 120).unwrap(),
            EquipmentLine {
                model: "Antminer S21".into(),
                count: 120
            }
        );
        assert_eq!(
            EquipmentLine::new("Antminer S21", 0),
            Err(("count", "the number of units must be at least 1".into()))
        );
    }
}
