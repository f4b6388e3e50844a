//! Supporting documents: the media types accepted, told from the bytes
//! themselves rather than from what the sender declares.

/// The media types a document may have.
pub const ACCEPTED_MEDIA_TYPES: [&str; 4] = [
    "application/pdf",
    "image/png",
    "image/jpeg",
    "application/xml",
];

/// The media type the bytes show, if it is one of the accepted ones.
pub fn sniff_media_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"%PDF-") {
        return Some("application/pdf");
    }
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Some("image/png");
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return Some("image/jpeg");
    }
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = text.iter().position(|b| !b.is_ascii_whitespace())?;
    if text[start..].starts_with(b"<?xml")
        || text[start..].starts_with(b"<")
            && text[start..].len() > 1
            && text[start + 1].is_ascii_alphabetic()
    {
        return Some("application/xml");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_come_from_the_bytes() {
        assert_eq!(sniff_media_type(b"%PDF-1.7\n..."), Some("application/pdf"));
        assert_eq!(
            sniff_media_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"),
            Some("image/png")
        );
        assert_eq!(
            sniff_media_type(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10]),
            Some("image/jpeg")
        );
        assert_eq!(
            sniff_media_type(b"\xEF\xBB\xBF<?xml version=\"1.0\"?><a/>"),
            Some("application/xml")
        );
        assert_eq!(
            sniff_media_type(b"  \n<declaration/>"),
            Some("application/xml")
        );
        assert_eq!(sniff_media_type(b"PK\x03\x04 a zip"), None);
        assert_eq!(sniff_media_type(b"MZ\x90\0 an executable"), None);
        assert_eq!(sniff_media_type(b"< not xml"), None);
        assert_eq!(sniff_media_type(b""), None);
    }
}
