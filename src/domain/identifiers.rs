//! Identifiers of the rules, as types that cannot hold an invalid value:
//! BIN / IIN (docs/rules.md, "Identifiers"), IBAN, BIC, phone, e-mail, KATO code.
//! Each `parse` says exactly which part is wrong.

use std::fmt;

use chrono::NaiveDate;

/// A 12-digit business (BIN) or individual (IIN) identification number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BinOrIin {
    /// A legal entity's business identification number.
    Bin(String),
    /// An individual's (so an individual entrepreneur's) identification number.
    Iin(String),
}

impl BinOrIin {
    /// Parses a BIN or IIN: 12 digits, the structure of one or the other (the
    /// 5th digit tells them apart: 4-6 is a BIN's entity type, 0-3 the first
    /// digit of an IIN's birth day), and the check digit.
    pub fn parse(s: &str) -> Result<BinOrIin, String> {
        // Characters, not bytes: twelve full-width or Arabic-Indic digits
        // are twelve characters, and the one that is not 0-9 is named.
        if s.chars().count() != 12 {
            return Err(format!(
                "must be 12 digits, got {} characters",
                s.chars().count()
            ));
        }
        let mut d = [0u8; 12];
        for (i, c) in s.chars().enumerate() {
            d[i] = c
                .to_digit(10)
                .ok_or_else(|| format!("must be 12 digits; character {} is {c:?}", i + 1))?
                as u8;
        }
        let two = |i: usize| u32::from(d[i]) * 10 + u32::from(d[i + 1]);
        let kind = match d[4] {
            4..=6 => {
                let month = two(2);
                if !(1..=12).contains(&month) {
                    return Err(format!("BIN registration month {month:02} is not 01-12"));
                }
                if d[5] > 3 {
                    return Err(format!(
                        "BIN unit digit (6th) is {}; expected 0 head office, 1 branch, 2 representative office or 3 peasant farm",
                        d[5]
                    ));
                }
                BinOrIin::Bin(s.to_owned())
            }
            0..=3 => {
                let century = match d[6] {
                    1 | 2 => 1800,
                    3 | 4 => 1900,
                    5 | 6 => 2000,
                    other => {
                        return Err(format!(
                            "IIN century/sex digit (7th) is {other}; expected 1-6"
                        ));
                    }
                };
                let year = century + two(0) as i32;
                if NaiveDate::from_ymd_opt(year, two(2), two(4)).is_none() {
                    return Err(format!(
                        "IIN birth date {year}-{:02}-{:02} (digits 1-6) is not a calendar date",
                        two(2),
                        two(4)
                    ));
                }
                BinOrIin::Iin(s.to_owned())
            }
            other => {
                return Err(format!(
                    "5th digit is {other}: neither a BIN entity type (4, 5, 6) nor the first digit of an IIN birth day (0-3)"
                ));
            }
        };
        match check_digit(&d) {
            None => Err(
                "can never be issued: the check digit computes to 10 under both weight sets".into(),
            ),
            Some(expected) if expected != d[11] => Err(format!(
                "check digit (12th) is {}, but the first 11 digits give {expected}",
                d[11]
            )),
            Some(_) => Ok(kind),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BinOrIin::Bin(s) | BinOrIin::Iin(s) => s,
        }
    }
}

impl fmt::Display for BinOrIin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `d12 = Σ d_i·w_i mod 11` with weights 1..11; if 10, again with weights
/// 3..11,1,2; if 10 again, no such number is issued (`None`).
pub fn check_digit(d: &[u8; 12]) -> Option<u8> {
    const FIRST: [u32; 11] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
    const SECOND: [u32; 11] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2];
    for weights in [FIRST, SECOND] {
        let sum: u32 = d[..11]
            .iter()
            .zip(weights)
            .map(|(digit, w)| u32::from(*digit) * w)
            .sum();
        if sum % 11 != 10 {
            return Some((sum % 11) as u8);
        }
    }
    None
}

/// A Kazakh IBAN (ISO 13616): `KZ`, 2 check digits, 3-character bank code,
/// 13-character account; 20 characters; mod-97 = 1. Spaces are dropped and
/// letters upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iban(String);

impl Iban {
    pub fn parse(s: &str) -> Result<Iban, String> {
        let compact: String = s
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if !compact.starts_with("KZ") {
            return Err("a Kazakh IBAN starts with KZ".into());
        }
        if compact.len() != 20 {
            return Err(format!(
                "a Kazakh IBAN has 20 characters, got {}",
                compact.chars().count()
            ));
        }
        if let Some(c) = compact.chars().find(|c| !c.is_ascii_alphanumeric()) {
            return Err(format!("{c:?} is not a letter or digit"));
        }
        if !compact[2..4].chars().all(|c| c.is_ascii_digit()) {
            return Err("characters 3-4 (the check digits) must be digits".into());
        }
        let rearranged = compact[4..].chars().chain(compact[..4].chars());
        let remainder = rearranged.fold(0u32, |acc, c| {
            let value = c.to_digit(36).expect("alphanumeric");
            if value < 10 {
                (acc * 10 + value) % 97
            } else {
                (acc * 100 + value) % 97
            }
        });
        if remainder != 1 {
            return Err(format!(
                "check digits {} do not match the account (mod-97 gives {remainder}, expected 1)",
                &compact[2..4]
            ));
        }
        Ok(Iban(compact))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A bank's BIC (SWIFT code): 4-letter bank, 2-letter country, 2-character
/// location, optional 3-character branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bic(String);

impl Bic {
    pub fn parse(s: &str) -> Result<Bic, String> {
        let s = s.trim().to_ascii_uppercase();
        // Checked first: the slicing below counts bytes.
        if !s.is_ascii() {
            return Err("a BIC is 6 letters (bank, country) then letters or digits".into());
        }
        if s.len() != 8 && s.len() != 11 {
            return Err(format!(
                "a BIC has 8 or 11 characters, got {}",
                s.chars().count()
            ));
        }
        let ok = s[..6].chars().all(|c| c.is_ascii_uppercase())
            && s[6..].chars().all(|c| c.is_ascii_alphanumeric());
        if !ok {
            return Err("a BIC is 6 letters (bank, country) then letters or digits".into());
        }
        Ok(Bic(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone number in E.164 form. Kazakh numbers (+7 then 10 digits starting
/// with 7) are checked as such; other numbers must be well-formed E.164.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phone(String);

impl Phone {
    pub fn parse(s: &str) -> Result<Phone, String> {
        let Some(digits) = s.strip_prefix('+') else {
            return Err("must be in E.164 form, starting with + and the country code".into());
        };
        if !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err("after + only digits are allowed (no spaces or dashes)".into());
        }
        if digits.starts_with('0') {
            return Err("a country code never starts with 0".into());
        }
        // +7 then a national number starting with 7 is Kazakh (Russia's start 3-9).
        if let Some(national) = digits.strip_prefix('7').filter(|n| n.starts_with('7')) {
            if national.len() != 10 {
                return Err(format!(
                    "a Kazakh number is +7 and 10 digits starting with 7; got {} digits after +7",
                    digits.len() - 1
                ));
            }
        } else if !(8..=15).contains(&digits.len()) {
            return Err(format!(
                "E.164 numbers have 8 to 15 digits, got {}",
                digits.len()
            ));
        }
        Ok(Phone(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-mail address: one `@`, a local part, and a domain with a dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Email, String> {
        if s.len() > 254 {
            return Err("longer than 254 characters".into());
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err("has no @".into());
        };
        if local.is_empty() || local.len() > 64 {
            return Err("the part before @ must have 1 to 64 characters".into());
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) || domain.contains('@') {
            return Err("contains a space, control character or second @".into());
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let label_ok = |l: &&str| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        };
        if labels.len() < 2 || !labels.iter().all(label_ok) {
            return Err(format!("{domain:?} is not a domain name"));
        }
        Ok(Email(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A 9-digit KATO code (classifier of administrative-territorial objects).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KatoCode(String);

impl KatoCode {
    pub fn parse(s: &str) -> Result<KatoCode, String> {
        if s.len() != 9 || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("a KATO code is 9 digits, got {s:?}"));
        }
        Ok(KatoCode(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_bins_and_iins() {
        for bin in [
            "210240001236",
            "190540005677",
            "220650012341",
            "231041000450",
            "150360009994",
            // first weight pass gives 10; the second gives 0
            "210240100700",
        ] {
            assert_eq!(BinOrIin::parse(bin), Ok(BinOrIin::Bin(bin.into())), "{bin}");
        }
        for iin in [
            "850315301235",
            "901229405678",
            "000229500117", // 29 Feb 2000
            "040229600120", // 29 Feb 2004
            "750701100013",
        ] {
            assert_eq!(BinOrIin::parse(iin), Ok(BinOrIin::Iin(iin.into())), "{iin}");
        }
    }

    #[test]
    fn each_kind_of_invalid_bin_or_iin_is_named() {
        let table: &[(&str, &str)] = &[
            ("21024000123", "must be 12 digits, got 11 characters"),
            ("2102400012367", "must be 12 digits, got 13 characters"),
            ("21024000123A", "must be 12 digits; character 12 is 'A'"),
            (
                "９４０１４００００３８５",
                "must be 12 digits; character 1 is '９'",
            ),
            ("٩٤٠١٤٠٠٠٠٣٨٥", "must be 12 digits; character 1 is '٩'"),
            ("94014000038５", "must be 12 digits; character 12 is '５'"),
            ("211340001236", "BIN registration month 13 is not 01-12"),
            (
                "210244001236",
                "BIN unit digit (6th) is 4; expected 0 head office, 1 branch, 2 representative office or 3 peasant farm",
            ),
            (
                "850315701235",
                "IIN century/sex digit (7th) is 7; expected 1-6",
            ),
            (
                "010229500117",
                "IIN birth date 2001-02-29 (digits 1-6) is not a calendar date",
            ),
            (
                "850371301235",
                "5th digit is 7: neither a BIN entity type (4, 5, 6) nor the first digit of an IIN birth day (0-3)",
            ),
            (
                "210240001237",
                "check digit (12th) is 7, but the first 11 digits give 6",
            ),
            (
                "210240100750",
                "can never be issued: the check digit computes to 10 under both weight sets",
            ),
        ];
        for (input, reason) in table {
            assert_eq!(BinOrIin::parse(input), Err((*reason).to_owned()), "{input}");
        }
    }

    #[test]
    fn ibans() {
        assert_eq!(
            Iban::parse("KZ75 125K ZT10 0130 0335").unwrap().as_str(),
            "KZ75125KZT1001300335"
        );
        assert!(Iban::parse("kz18722s000012345678").is_ok());
        let table: &[(&str, &str)] = &[
            ("DE89370400440532013000", "a Kazakh IBAN starts with KZ"),
            (
                "KZ75125KZT100130033",
                "a Kazakh IBAN has 20 characters, got 19",
            ),
            ("KZ75125KZT10013003-5", "'-' is not a letter or digit"),
            (
                "KZX5125KZT1001300335",
                "characters 3-4 (the check digits) must be digits",
            ),
            (
                "KZ76125KZT1001300335",
                "check digits 76 do not match the account (mod-97 gives 2, expected 1)",
            ),
        ];
        for (input, reason) in table {
            assert_eq!(Iban::parse(input), Err((*reason).to_owned()), "{input}");
        }
    }

    #[test]
    fn bics_phones_emails_kato() {
        assert_eq!(Bic::parse("HSBKKZKX").unwrap().as_str(), "HSBKKZKX");
        assert!(Bic::parse("CASPKZKAXXX").is_ok());
        assert_eq!(
            Bic::parse("HSBK"),
            Err("a BIC has 8 or 11 characters, got 4".into())
        );
        assert_eq!(
            Bic::parse("HSB1KZKX"),
            Err("a BIC is 6 letters (bank, country) then letters or digits".into())
        );

        assert!(Phone::parse("+77012345678").is_ok());
        assert!(Phone::parse("+77172123456").is_ok());
        assert!(
            Phone::parse("+74951234567").is_ok(),
            "a Russian number is E.164"
        );
        assert!(Phone::parse("+4915112345678").is_ok());
        let phones: &[(&str, &str)] = &[
            (
                "87012345678",
                "must be in E.164 form, starting with + and the country code",
            ),
            (
                "+7 701 234 5678",
                "after + only digits are allowed (no spaces or dashes)",
            ),
            ("+0123456789", "a country code never starts with 0"),
            (
                "+7701234567",
                "a Kazakh number is +7 and 10 digits starting with 7; got 9 digits after +7",
            ),
            ("+1234567", "E.164 numbers have 8 to 15 digits, got 7"),
        ];
        for (input, reason) in phones {
            assert_eq!(Phone::parse(input), Err((*reason).to_owned()), "{input}");
        }

        assert!(Email::parse("info@qazaqhash.kz").is_ok());
        assert_eq!(Email::parse("info.qazaqhash.kz"), Err("has no @".into()));
        assert_eq!(
            Email::parse("info@localhost"),
            Err("\"localhost\" is not a domain name".into())
        );
        assert_eq!(
            Email::parse("in fo@x.kz"),
            Err("contains a space, control character or second @".into())
        );

        assert!(KatoCode::parse("751110000").is_ok());
        assert_eq!(
            KatoCode::parse("75111"),
            Err("a KATO code is 9 digits, got \"75111\"".into())
        );
    }
}
