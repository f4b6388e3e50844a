//! Legal quantities as types: a reporting quarter, money in tiyn, energy in
//! watt-hours, power in kilowatts, equipment lines. No floats anywhere.

use std::fmt;

/// The first year the regime could be reported under (order No. 384/НҚ, 2020).
pub const FIRST_YEAR: i32 = 2020;
/// A year beyond any plausible filing; guards against typos like 20266.
pub const LAST_YEAR: i32 = 2100;

/// §6-1 the first quarter that can have form 402: the first tax period of
/// the digital mining fee (Tax Code, from 1 January 2022). Form 402 was
/// approved on 13 April 2022 and §6-1 added by order No. 146/НҚ of 29 April
/// 2022; quarters before it have no form.
pub const FIRST_FORM_QUARTER: Quarter = Quarter {
    year: 2022,
    quarter: 1,
};

/// 4.5 the most electricity one report may state for its quarter: 10 TWh,
/// a 4.6 GW load running the whole quarter, more than the country's largest
/// power plant makes. It keeps a quarter's total in 64 bits until more than
/// 1,844,674 payers report for it.
pub const MAX_QUARTER_WH: u64 = 10_000_000_000_000;

/// 3.6 the most capacity a start notification may ask: 10 GW, about half
/// the country's installed capacity (it is stored as a signed 64-bit number).
pub const MAX_POWER_KW: u64 = 10_000_000;

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

    /// The quarter after this one (past [`LAST_YEAR`] too).
    pub fn next(self) -> Quarter {
        match self.quarter {
            4 => Quarter {
                year: self.year + 1,
                quarter: 1,
            },
            q => Quarter {
                year: self.year,
                quarter: q + 1,
            },
        }
    }

    /// Whether the quarter is over on `today` (a civil date in Almaty).
    pub fn has_ended(self, today: chrono::NaiveDate) -> bool {
        today >= self.next().first_day()
    }

    /// §6-1 whether form 402 can exist for the quarter on `today`: from
    /// [`FIRST_FORM_QUARTER`], once the quarter has ended.
    pub fn can_have_form(self, today: chrono::NaiveDate) -> Result<Quarter, String> {
        if self < FIRST_FORM_QUARTER {
            return Err(format!(
                "{self} is before {FIRST_FORM_QUARTER}, the first quarter of form 402 (§6-1)"
            ));
        }
        if !self.has_ended(today) {
            return Err(format!(
                "{self} has not ended; its form 402 can be pulled from {}",
                self.next().first_day()
            ));
        }
        Ok(self)
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
    /// 4.5 a quarter's consumption, at most [`MAX_QUARTER_WH`].
    pub fn in_a_quarter(wh: u64) -> Result<WattHours, String> {
        if wh > MAX_QUARTER_WH {
            return Err(format!(
                "{wh} Wh is more than {MAX_QUARTER_WH} Wh (10 TWh), the most one report may state for a quarter (4.5)"
            ));
        }
        Ok(WattHours(wh))
    }

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
        } else if value > MAX_POWER_KW {
            Err(format!(
                "{value} kW is more than {MAX_POWER_KW} kW (10 GW), the most a capacity request may ask (3.6)"
            ))
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
    fn form_402_exists_from_2022_q1_once_the_quarter_has_ended() {
        let day = |s: &str| s.parse::<chrono::NaiveDate>().unwrap();
        let q = |y, q| Quarter::new(y, q).unwrap();
        assert_eq!(
            q(2021, 4).can_have_form(day("2026-05-02")),
            Err("2021 Q4 is before 2022 Q1, the first quarter of form 402 (§6-1)".into())
        );
        assert_eq!(q(2022, 1).can_have_form(day("2022-04-01")), Ok(q(2022, 1)));
        assert_eq!(
            q(2026, 4).can_have_form(day("2026-12-31")),
            Err("2026 Q4 has not ended; its form 402 can be pulled from 2027-01-01".into())
        );
        assert_eq!(q(2026, 4).can_have_form(day("2027-01-01")), Ok(q(2026, 4)));
        assert_eq!(
            q(2100, 4).next(),
            Quarter {
                year: 2101,
                quarter: 1
            }
        );
    }

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
