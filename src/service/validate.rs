//! Wire messages into domain filings. Every problem is collected, each with
//! the field path exactly as in the proto (`person.bin_or_iin`, `ip_pool[2]`,
//! `documents[1].sha256`) and a plain, specific description.

use chrono::NaiveDate;

use crate::{
    domain::{
        Sha256Hex,
        document::ACCEPTED_MEDIA_TYPES,
        filing::{
            ActivityKind, BankDetails, DataCentre, DocumentKind, DocumentRef, Filing,
            IdempotencyKey, Person, QuarterlyReport, StartNotification, TerminationNotice,
        },
        identifiers::{Bic, BinOrIin, Email, Iban, KatoCode, Phone},
        ip::IpPool,
        quantities::{EquipmentLine, Kilowatts, Quarter, Tiyn, WattHours},
    },
    proto::v1 as pb,
};

/// The problems found in one message, in field order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Violations(pub Vec<(String, String)>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// Keeps the value, or records the problem under `field`.
    fn check<T>(&mut self, field: impl Into<String>, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(reason) => {
                self.add(field, reason);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// Every string and list of a filing is bounded, so that every artifact made
// from it (receipt, extract, form 402 page, each with its evidence) fits in
// the smallest message the gateway may be configured for: see
// `crate::service::budget` and its test of filings at every limit.
pub const MAX_NAME: usize = 300;
pub const MAX_ADDRESS: usize = 500;
/// Phone numbers, e-mail addresses (3.4).
pub const MAX_CONTACTS: usize = 10;
/// Document references (3.10, 3.12, 3.13 / 4.12, 4.14, 4.15).
pub const MAX_DOCUMENTS: usize = 100;
/// Data processing centres (3.11 / 4.13).
pub const MAX_DATA_CENTRES: usize = 200;
/// IP pool entries (3.9 / 4.11) and equipment lines (4.6, 4.7).
pub const MAX_LIST: usize = 1000;
/// A document's file name, as UploadDocument holds it.
pub const MAX_FILE_NAME: usize = 255;
/// One IP pool entry, spaces around it included: the longest range written
/// out (`"<IPv6>-<IPv6>"`) is 79 characters.
pub const MAX_IP_ENTRY: usize = 100;

/// Characters that reorder the text around them when shown (U+202E turns
/// "a\u{202E}fdp.exe" into "aexe.pdf"): refused in text and file names,
/// as control characters are.
pub fn bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A file name fit to show: at most [`MAX_FILE_NAME`] characters, none of
/// them control or bidirectional formatting characters.
pub fn file_name_ok(name: &str) -> bool {
    name.chars().count() <= MAX_FILE_NAME
        && !name.chars().any(|c| c.is_control() || bidi_control(c))
}

/// Why a file name is refused.
pub const FILE_NAME_RULE: &str =
    "must be at most 255 characters, without control or bidirectional formatting characters";

/// The most a filing may take encoded, whatever pads its values: its
/// receipt and evidence fit beside it in GetFiling's answer at the smallest
/// message limit the gateway allows.
pub const MAX_FILING_BYTES: usize = crate::config::MIN_MESSAGE_BYTES - 256 * 1024;

/// Refuses a filing larger, encoded, than [`MAX_FILING_BYTES`]: the fields
/// are each bounded, but spaces around values are not counted in them.
pub fn filing_size(encoded: usize) -> Result<(), Violations> {
    if encoded <= MAX_FILING_BYTES {
        return Ok(());
    }
    let mut v = Violations::default();
    v.add(
        "",
        format!(
            "the filing is {encoded} bytes encoded; a filing may be at most {MAX_FILING_BYTES}"
        ),
    );
    Err(v)
}

fn text(value: &str, max: usize, what: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        Err(format!("{what} is required"))
    } else if value.chars().count() > max {
        Err(format!("{what} is longer than {max} characters"))
    } else if trimmed.chars().any(char::is_control) {
        Err(format!("{what} contains control characters"))
    } else if trimmed.chars().any(bidi_control) {
        Err(format!(
            "{what} contains bidirectional formatting characters (U+202E and the like)"
        ))
    } else {
        Ok(trimmed.to_owned())
    }
}

fn date(value: Option<&pb::Date>, what: &str) -> Result<NaiveDate, String> {
    use crate::domain::quantities::{FIRST_YEAR, LAST_YEAR};
    let d = value.ok_or_else(|| format!("{what} is required"))?;
    // The regime's years, as for quarters: a date outside is a typing error.
    if !(FIRST_YEAR..=LAST_YEAR).contains(&d.year) {
        return Err(format!(
            "{what} must be in the years {FIRST_YEAR} to {LAST_YEAR}, got {:04}-{:02}-{:02}",
            d.year, d.month, d.day
        ));
    }
    u32::try_from(d.month)
        .ok()
        .zip(u32::try_from(d.day).ok())
        .and_then(|(m, day)| NaiveDate::from_ymd_opt(d.year, m, day))
        .ok_or_else(|| {
            format!(
                "{:04}-{:02}-{:02} is not a calendar date",
                d.year, d.month, d.day
            )
        })
}

fn activity(value: i32) -> Result<ActivityKind, String> {
    match super::mapping::from_wire(value, super::mapping::activity_kind_from) {
        Ok(Some(kind)) => Ok(kind),
        _ => Err("must be ACTIVITY_KIND_MINING, ACTIVITY_KIND_INFRASTRUCTURE_SERVICES or ACTIVITY_KIND_MINING_AND_INFRASTRUCTURE_SERVICES (2.4)".into()),
    }
}

fn too_many<T>(list: &[T], max: usize, field: &str, v: &mut Violations) -> bool {
    if list.len() > max {
        v.add(field, format!("at most {max} entries, got {}", list.len()));
        true
    } else {
        false
    }
}

fn person(value: Option<&pb::Person>, v: &mut Violations) -> Option<Person> {
    let Some(p) = value else {
        v.add("person", "is required (3.1-3.4 / 4.1-4.4)");
        return None;
    };
    let name = v.check("person.name", text(&p.name, MAX_NAME, "the name (3.1)"));
    let id = v.check("person.bin_or_iin", BinOrIin::parse(p.bin_or_iin.trim()));
    let legal_address = v.check(
        "person.legal_address",
        text(&p.legal_address, MAX_ADDRESS, "the legal address (3.3)"),
    );
    let contacts = p.contacts.clone().unwrap_or_default();
    let mut phones = Vec::new();
    let mut emails = Vec::new();
    if contacts.phones.is_empty() {
        v.add(
            "person.contacts.phones",
            "at least one phone number is required (3.4)",
        );
    } else if !too_many(&contacts.phones, MAX_CONTACTS, "person.contacts.phones", v) {
        for (i, phone) in contacts.phones.iter().enumerate() {
            phones.extend(v.check(format!("person.contacts.phones[{i}]"), Phone::parse(phone)));
        }
    }
    if contacts.emails.is_empty() {
        v.add(
            "person.contacts.emails",
            "at least one e-mail address is required (3.4)",
        );
    } else if !too_many(&contacts.emails, MAX_CONTACTS, "person.contacts.emails", v) {
        for (i, email) in contacts.emails.iter().enumerate() {
            emails.extend(v.check(format!("person.contacts.emails[{i}]"), Email::parse(email)));
        }
    }
    let activity = v.check("person.activity_kind", activity(p.activity_kind));
    Some(Person {
        name: name?,
        id: id?,
        legal_address: legal_address?,
        phones,
        emails,
        activity: activity?,
    })
}

fn bank(value: Option<&pb::BankDetails>, v: &mut Violations) -> Option<BankDetails> {
    let Some(b) = value else {
        v.add("bank", "is required (3.5)");
        return None;
    };
    let iban = v.check("bank.iban", Iban::parse(&b.iban));
    let bic = v.check("bank.bic", Bic::parse(&b.bic));
    let bank_name = v.check(
        "bank.bank_name",
        text(&b.bank_name, MAX_NAME, "the bank's name (3.5)"),
    );
    Some(BankDetails {
        iban: iban?,
        bic: bic?,
        bank_name: bank_name?,
    })
}

fn ip_pool(entries: &[String], paragraph: &str, v: &mut Violations) -> Option<IpPool> {
    if entries.is_empty() {
        v.add(
            "ip_pool",
            format!("at least one IP address or range is required ({paragraph})"),
        );
        return None;
    }
    if too_many(entries, MAX_LIST, "ip_pool", v) {
        return None;
    }
    let mut fit = true;
    for (i, entry) in entries.iter().enumerate() {
        if entry.chars().count() > MAX_IP_ENTRY {
            let reason = format!("is longer than {MAX_IP_ENTRY} characters (spaces included)");
            v.add(format!("ip_pool[{i}]"), reason);
            fit = false;
        }
    }
    if !fit {
        return None;
    }
    match IpPool::parse(entries) {
        Ok(pool) => Some(pool),
        Err(problems) => {
            for (i, reason) in problems {
                v.add(format!("ip_pool[{i}]"), reason);
            }
            None
        }
    }
}

fn documents(refs: &[pb::DocumentRef], v: &mut Violations) -> Option<Vec<DocumentRef>> {
    if too_many(refs, MAX_DOCUMENTS, "documents", v) {
        return None;
    }
    let mut out = Vec::new();
    let mut complete = true;
    for (i, r) in refs.iter().enumerate() {
        let kind = match super::mapping::from_wire(r.kind, super::mapping::document_kind_from) {
            Ok(Some(kind)) => Some(kind),
            _ => {
                v.add(
                    format!("documents[{i}].kind"),
                    "must be DOCUMENT_KIND_CUSTOMS_DECLARATION_OR_TITLE, DOCUMENT_KIND_RESIDENCY or DOCUMENT_KIND_GRID_CONNECTION_CONDITIONS",
                );
                None
            }
        };
        let sha256 = v.check(
            format!("documents[{i}].sha256"),
            Sha256Hex::parse(&r.sha256),
        );
        // Said by the filer, carried to the extract: held to UploadDocument's rules.
        if !r.media_type.is_empty() && !ACCEPTED_MEDIA_TYPES.contains(&r.media_type.as_str()) {
            v.add(
                format!("documents[{i}].media_type"),
                format!(
                    "must be empty or one of {}",
                    ACCEPTED_MEDIA_TYPES.join(", ")
                ),
            );
            complete = false;
        }
        if !file_name_ok(&r.file_name) {
            v.add(format!("documents[{i}].file_name"), FILE_NAME_RULE);
            complete = false;
        }
        match (kind, sha256) {
            (Some(kind), Some(sha256)) => out.push(DocumentRef { kind, sha256 }),
            _ => complete = false,
        }
    }
    for kind in DocumentKind::ALL {
        if !refs.iter().any(|r| {
            pb::DocumentKind::try_from(r.kind)
                .is_ok_and(|k| k.as_str_name().ends_with(kind.as_str()))
        }) {
            v.add(
                "documents",
                format!(
                    "no {} document ({}); at least one is required",
                    kind.as_str(),
                    kind.paragraphs()
                ),
            );
            complete = false;
        }
    }
    complete.then_some(out)
}

fn data_centres(
    sites: &[pb::DataCentre],
    total: Option<u64>,
    v: &mut Violations,
) -> Option<Vec<DataCentre>> {
    if sites.is_empty() {
        v.add(
            "data_centres",
            "at least one data processing centre is required (3.11 / 4.13)",
        );
        return None;
    }
    if too_many(sites, MAX_DATA_CENTRES, "data_centres", v) {
        return None;
    }
    let mut out = Vec::new();
    let mut complete = true;
    for (i, site) in sites.iter().enumerate() {
        let address = v.check(
            format!("data_centres[{i}].address"),
            text(&site.address, MAX_ADDRESS, "the address (3.11 / 4.13)"),
        );
        let kato = match &site.kato_code {
            Some(code) => match KatoCode::parse(code) {
                Ok(kato) => Some(Some(kato)),
                Err(reason) => {
                    v.add(format!("data_centres[{i}].kato_code"), reason);
                    None
                }
            },
            None => Some(None),
        };
        if total.is_none() && site.consumption_wh.is_some() {
            v.add(
                format!("data_centres[{i}].consumption_wh"),
                "only a quarterly report carries consumption (4.5)",
            );
            complete = false;
        }
        match (address, kato) {
            (Some(address), Some(kato)) => out.push(DataCentre {
                address,
                kato,
                consumption: site.consumption_wh.map(WattHours),
            }),
            _ => complete = false,
        }
    }
    if let Some(total) = total {
        let given: Vec<u64> = sites.iter().filter_map(|s| s.consumption_wh).collect();
        let sum = given.iter().try_fold(0u64, |acc, wh| acc.checked_add(*wh));
        match sum {
            None => v.add(
                "data_centres",
                "the sites' consumption_wh overflow when added",
            ),
            Some(sum) if given.len() == sites.len() && sum != total => v.add(
                "data_centres",
                format!(
                    "the sites' consumption_wh sum to {sum} Wh, but consumption_wh is {total} Wh"
                ),
            ),
            Some(sum) if sum > total => v.add(
                "data_centres",
                format!(
                    "the sites' consumption_wh sum to {sum} Wh, more than consumption_wh {total} Wh"
                ),
            ),
            _ => {}
        }
    }
    complete.then_some(out)
}

/// §3 start notification.
pub fn start_notification(m: &pb::StartNotification) -> Result<Filing, Violations> {
    let mut v = Violations::default();
    let person = person(m.person.as_ref(), &mut v);
    let bank = bank(m.bank.as_ref(), &mut v);
    let required_power = v.check("required_power_kw", Kilowatts::new(m.required_power_kw));
    let planned_investment = v.check(
        "planned_investment_tiyn",
        Tiyn::new(m.planned_investment_tiyn),
    );
    let ip_pool = ip_pool(&m.ip_pool, "3.9", &mut v);
    let documents = documents(&m.documents, &mut v);
    let data_centres = data_centres(&m.data_centres, None, &mut v);
    let planned_start = v.check(
        "planned_start_date",
        date(m.planned_start_date.as_ref(), "the planned start date"),
    );
    let key = v.check("idempotency_key", IdempotencyKey::parse(&m.idempotency_key));
    let filing = (|| {
        Some(Filing::Start(StartNotification {
            person: person?,
            bank: bank?,
            required_power: required_power?,
            planned_jobs: m.planned_jobs,
            planned_investment: planned_investment?,
            ip_pool: ip_pool?,
            documents: documents?,
            data_centres: data_centres?,
            planned_start: planned_start?,
            idempotency_key: key?,
        }))
    })();
    finish(filing, v)
}

/// §4 quarterly report; `today` (civil date in Almaty) refuses unfinished quarters.
pub fn quarterly_report(m: &pb::QuarterlyReport, today: NaiveDate) -> Result<Filing, Violations> {
    let mut v = Violations::default();
    let person = person(m.person.as_ref(), &mut v);
    let quarter = match u32::try_from(m.quarter)
        .map_err(|_| format!("quarter must be 1 to 4, got {}", m.quarter))
    {
        Ok(q) => match Quarter::new(m.year, q) {
            Ok(quarter) => {
                let next = if quarter.quarter() == 4 {
                    Quarter::new(quarter.year() + 1, 1).ok()
                } else {
                    Quarter::new(quarter.year(), quarter.quarter() + 1).ok()
                };
                // The last quarter of the range has no next one: it ends with its year.
                let ends = next
                    .map(Quarter::first_day)
                    .or_else(|| NaiveDate::from_ymd_opt(quarter.year() + 1, 1, 1));
                match ends {
                    Some(ends) if today < ends => {
                        v.add(
                            "quarter",
                            format!("{quarter} has not ended; it can be reported from {ends}"),
                        );
                        None
                    }
                    _ => Some(quarter),
                }
            }
            Err(reason) if reason.starts_with("year") => {
                v.add("year", reason);
                None
            }
            Err(reason) => {
                v.add("quarter", reason);
                None
            }
        },
        Err(reason) => {
            v.add("quarter", reason);
            None
        }
    };
    let consumption = v.check("consumption_wh", WattHours::in_a_quarter(m.consumption_wh));
    let mut equipment = Vec::new();
    if m.equipment.is_empty() {
        v.add(
            "equipment",
            "at least one line of equipment is required (4.6, 4.7)",
        );
    } else if !too_many(&m.equipment, MAX_LIST, "equipment", &mut v) {
        for (i, line) in m.equipment.iter().enumerate() {
            match EquipmentLine::new(&line.model, line.count) {
                Ok(line) => equipment.push(line),
                Err((field, reason)) => v.add(format!("equipment[{i}].{field}"), reason),
            }
        }
    }
    let rest_of_year = v.check(
        "investment_rest_of_year_tiyn",
        Tiyn::new(m.investment_rest_of_year_tiyn),
    );
    let next_12 = v.check(
        "investment_next_12_months_tiyn",
        Tiyn::new(m.investment_next_12_months_tiyn),
    );
    let ip_pool = ip_pool(&m.ip_pool, "4.11", &mut v);
    let documents = documents(&m.documents, &mut v);
    let data_centres = data_centres(&m.data_centres, Some(m.consumption_wh), &mut v);
    let key = v.check("idempotency_key", IdempotencyKey::parse(&m.idempotency_key));
    let filing = (|| {
        Some(Filing::Quarterly(QuarterlyReport {
            person: person?,
            quarter: quarter?,
            consumption: consumption?,
            equipment,
            jobs: m.jobs,
            investment_rest_of_year: rest_of_year?,
            investment_next_12_months: next_12?,
            ip_pool: ip_pool?,
            documents: documents?,
            data_centres: data_centres?,
            idempotency_key: key?,
        }))
    })();
    finish(filing, v)
}

/// §5 termination notice; `today` refuses end dates in the future.
pub fn termination_notice(
    m: &pb::TerminationNotice,
    today: NaiveDate,
) -> Result<Filing, Violations> {
    let mut v = Violations::default();
    let name = v.check("name", text(&m.name, MAX_NAME, "the name (3.1)"));
    let id = v.check("bin_or_iin", BinOrIin::parse(m.bin_or_iin.trim()));
    let end = v.check(
        "activity_end_date",
        date(m.activity_end_date.as_ref(), "the date the activity ended").and_then(|end| {
            if end > today {
                Err(format!(
                    "{end} is in the future; notify once the activity has ended (§5)"
                ))
            } else {
                Ok(end)
            }
        }),
    );
    let key = v.check("idempotency_key", IdempotencyKey::parse(&m.idempotency_key));
    let filing = (|| {
        Some(Filing::Termination(TerminationNotice {
            name: name?,
            id: id?,
            activity_end: end?,
            idempotency_key: key?,
        }))
    })();
    finish(filing, v)
}

fn finish(filing: Option<Filing>, v: Violations) -> Result<Filing, Violations> {
    match filing {
        Some(filing) if v.is_empty() => Ok(filing),
        _ => Err(v),
    }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    /// No filing within every field's limit reaches it (the largest, a
    /// quarterly report, is 1.38 MB): it holds whatever a later field adds.
    #[test]
    fn a_filing_may_be_at_most_1835008_bytes_encoded() {
        assert_eq!(MAX_FILING_BYTES, 1_835_008);
        assert!(filing_size(1_835_008).is_ok());
        let refused = filing_size(1_835_009).unwrap_err();
        assert_eq!(
            refused.0,
            [(
                String::new(),
                "the filing is 1835009 bytes encoded; a filing may be at most 1835008".to_owned()
            )]
        );
    }

    #[test]
    fn file_names_refuse_control_and_reordering_characters() {
        assert!(file_name_ok(&"𝔸".repeat(255)));
        assert!(!file_name_ok(&"a".repeat(256)));
        assert!(file_name_ok("отчёт 2026.pdf"));
        for c in [
            '\u{7}', '\u{85}', '\u{202E}', '\u{2066}', '\u{200F}', '\u{061C}',
        ] {
            assert!(!file_name_ok(&format!("a{c}b.pdf")), "{c:?}");
        }
    }
}
