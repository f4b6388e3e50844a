//! Hostile input never panics: every parser, and every request type decoded
//! from arbitrary bytes and validated, answers with a value or a reason.

use minegate::{
    domain::{
        Sha256Hex,
        identifiers::{Bic, BinOrIin, Email, Iban, KatoCode, Phone},
        ip::{IpBlock, IpPool},
    },
    proto::v1::{QuarterlyReport, StartNotification, TerminationNotice},
    service::validate,
};
use proptest::prelude::*;
use prost::Message;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn identifier_parsers_never_panic(s in "\\PC{0,40}") {
        let _ = BinOrIin::parse(&s);
        let _ = Iban::parse(&s);
        let _ = Bic::parse(&s);
        let _ = Phone::parse(&s);
        let _ = Email::parse(&s);
        let _ = KatoCode::parse(&s);
        let _ = IpBlock::parse(&s);
        let _ = Sha256Hex::parse(&s);
    }

    #[test]
    fn parsers_never_panic_on_long_multibyte_text(s in "[ÄЖқ€😀a-z0-9/.:]{60,120}") {
        let _ = Bic::parse(&s);
        let _ = Sha256Hex::parse(&s);
        let _ = Iban::parse(&s);
        let _ = IpPool::parse(&[s.clone(), s]);
    }

    #[test]
    fn arbitrary_bytes_decoded_and_validated_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let today = "2026-11-23".parse().unwrap();
        if let Ok(m) = StartNotification::decode(bytes.as_slice()) {
            let _ = validate::start_notification(&m);
        }
        if let Ok(m) = QuarterlyReport::decode(bytes.as_slice()) {
            let _ = validate::quarterly_report(&m, today);
        }
        if let Ok(m) = TerminationNotice::decode(bytes.as_slice()) {
            let _ = validate::termination_notice(&m, today);
        }
    }
}

#[test]
fn eight_bytes_of_multibyte_text_is_not_a_bic() {
    assert_eq!(
        Bic::parse("ÄÄÄÄ"),
        Err("a BIC is 6 letters (bank, country) then letters or digits".into())
    );
}
