//! The option registry (RFC 7252 §5.4, §5.10, §12.2) and the Content-Format registry (§12.3).
//!
//! Covers RFC 7252 plus Observe (RFC 7641), Block1/Block2/Size2 (RFC 7959), Echo and Request-Tag
//! (RFC 9175), No-Response (RFC 7967), OSCORE (RFC 8613) and Hop-Limit (RFC 8768). Options that are
//! not in the registry are still carried: the codec keeps them and re-emits them unchanged, and the
//! message layer decides from the number alone whether they are critical (§5.4.1).

use std::fmt;

/// An option number. The low bits encode its properties (RFC 7252 §5.4.6).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OptionNumber(pub u16);

/// The format of an option value (RFC 7252 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    /// Zero-length value.
    Empty,
    /// An opaque byte sequence.
    Opaque,
    /// A non-negative integer in network byte order, without leading zero bytes.
    Uint,
    /// A UTF-8 string (Net-Unicode form).
    String,
}

/// The registry entry of a known option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDef {
    /// The option number.
    pub number: OptionNumber,
    /// The registered name, e.g. `Uri-Path`.
    pub name: &'static str,
    /// The value format.
    pub format: ValueFormat,
    /// Minimum value length in bytes.
    pub min_len: usize,
    /// Maximum value length in bytes.
    pub max_len: usize,
    /// Whether the option may occur more than once.
    pub repeatable: bool,
}

macro_rules! options {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $text:literal, $format:ident, $min:literal..=$max:literal, $rep:literal;)*) => {
        impl OptionNumber {
            $($(#[$doc])* pub const $name: OptionNumber = OptionNumber($num);)*
        }

        /// Every option in the registry, in number order.
        pub const REGISTRY: &[OptionDef] = &[
            $(OptionDef {
                number: OptionNumber($num),
                name: $text,
                format: ValueFormat::$format,
                min_len: $min,
                max_len: $max,
                repeatable: $rep,
            },)*
        ];
    };
}

options! {
    /// If-Match (RFC 7252 §5.10.8.1).
    IF_MATCH = 1, "If-Match", Opaque, 0..=8, true;
    /// Uri-Host (RFC 7252 §5.10.1).
    URI_HOST = 3, "Uri-Host", String, 1..=255, false;
    /// ETag (RFC 7252 §5.10.6).
    ETAG = 4, "ETag", Opaque, 1..=8, true;
    /// If-None-Match (RFC 7252 §5.10.8.2).
    IF_NONE_MATCH = 5, "If-None-Match", Empty, 0..=0, false;
    /// Observe (RFC 7641).
    OBSERVE = 6, "Observe", Uint, 0..=3, false;
    /// Uri-Port (RFC 7252 §5.10.1).
    URI_PORT = 7, "Uri-Port", Uint, 0..=2, false;
    /// Location-Path (RFC 7252 §5.10.7).
    LOCATION_PATH = 8, "Location-Path", String, 0..=255, true;
    /// OSCORE (RFC 8613).
    OSCORE = 9, "OSCORE", Opaque, 0..=255, false;
    /// Uri-Path (RFC 7252 §5.10.1).
    URI_PATH = 11, "Uri-Path", String, 0..=255, true;
    /// Content-Format (RFC 7252 §5.10.3).
    CONTENT_FORMAT = 12, "Content-Format", Uint, 0..=2, false;
    /// Max-Age (RFC 7252 §5.10.5).
    MAX_AGE = 14, "Max-Age", Uint, 0..=4, false;
    /// Uri-Query (RFC 7252 §5.10.1).
    URI_QUERY = 15, "Uri-Query", String, 0..=255, true;
    /// Hop-Limit (RFC 8768).
    HOP_LIMIT = 16, "Hop-Limit", Uint, 1..=1, false;
    /// Accept (RFC 7252 §5.10.4).
    ACCEPT = 17, "Accept", Uint, 0..=2, false;
    /// Location-Query (RFC 7252 §5.10.7).
    LOCATION_QUERY = 20, "Location-Query", String, 0..=255, true;
    /// Block2 (RFC 7959).
    BLOCK2 = 23, "Block2", Uint, 0..=3, false;
    /// Block1 (RFC 7959).
    BLOCK1 = 27, "Block1", Uint, 0..=3, false;
    /// Size2 (RFC 7959).
    SIZE2 = 28, "Size2", Uint, 0..=4, false;
    /// Proxy-Uri (RFC 7252 §5.10.2).
    PROXY_URI = 35, "Proxy-Uri", String, 1..=1034, false;
    /// Proxy-Scheme (RFC 7252 §5.10.2).
    PROXY_SCHEME = 39, "Proxy-Scheme", String, 1..=255, false;
    /// Size1 (RFC 7252 §5.10.9).
    SIZE1 = 60, "Size1", Uint, 0..=4, false;
    /// Echo (RFC 9175).
    ECHO = 252, "Echo", Opaque, 1..=40, false;
    /// No-Response (RFC 7967).
    NO_RESPONSE = 258, "No-Response", Uint, 0..=1, false;
    /// Request-Tag (RFC 9175).
    REQUEST_TAG = 292, "Request-Tag", Opaque, 0..=8, true;
}

impl OptionNumber {
    /// Critical options must be understood by the receiver (odd numbers, §5.4.1).
    pub fn is_critical(self) -> bool {
        self.0 & 1 == 1
    }

    /// Elective options may be ignored by a receiver that does not know them.
    pub fn is_elective(self) -> bool {
        !self.is_critical()
    }

    /// Unsafe-to-forward options must be understood by a proxy (§5.4.2).
    pub fn is_unsafe(self) -> bool {
        self.0 & 2 == 2
    }

    /// NoCacheKey options are not part of the cache key (§5.4.6); only meaningful when safe.
    pub fn is_no_cache_key(self) -> bool {
        self.0 & 0x1e == 0x1c
    }

    /// The registry entry, if this option is known.
    pub fn def(self) -> Option<&'static OptionDef> {
        REGISTRY
            .binary_search_by_key(&self, |d| d.number)
            .ok()
            .map(|i| &REGISTRY[i])
    }

    /// Looks an option up by its registered name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        REGISTRY
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(name))
            .map(|d| d.number)
    }
}

impl fmt::Display for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.def() {
            Some(def) => f.write_str(def.name),
            None => write!(f, "Option{}", self.0),
        }
    }
}

impl fmt::Debug for OptionNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self, self.0)
    }
}

/// Why an option value does not fit its definition (RFC 7252 §5.4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The value is shorter or longer than the registry allows.
    #[error("{option} value of {len} bytes is outside {min}..={max}")]
    Length {
        /// The option.
        option: OptionNumber,
        /// The length found.
        len: usize,
        /// The allowed minimum.
        min: usize,
        /// The allowed maximum.
        max: usize,
    },
    /// A string option that is not valid UTF-8.
    #[error("{option} value is not valid UTF-8")]
    NotUtf8 {
        /// The option.
        option: OptionNumber,
    },
}

impl OptionDef {
    /// Checks a value against this definition. Integers with leading zero bytes are accepted
    /// (the RFC asks senders to use the minimal form, receivers to cope).
    pub fn check(&self, value: &[u8]) -> Result<(), ValueError> {
        if value.len() < self.min_len || value.len() > self.max_len {
            return Err(ValueError::Length {
                option: self.number,
                len: value.len(),
                min: self.min_len,
                max: self.max_len,
            });
        }
        if self.format == ValueFormat::String && std::str::from_utf8(value).is_err() {
            return Err(ValueError::NotUtf8 {
                option: self.number,
            });
        }
        Ok(())
    }
}

/// Encodes an unsigned integer option value in its minimal form (no leading zero bytes).
pub fn encode_uint(value: u32) -> UintBytes {
    let bytes = value.to_be_bytes();
    let skip = bytes.iter().take_while(|&&b| b == 0).count();
    UintBytes { bytes, start: skip }
}

/// A minimal-length big-endian integer, borrowed as a slice with `as_ref()`.
#[derive(Debug, Clone, Copy)]
pub struct UintBytes {
    bytes: [u8; 4],
    start: usize,
}

impl AsRef<[u8]> for UintBytes {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

/// Decodes an unsigned integer option value; `None` when longer than four bytes.
pub fn decode_uint(value: &[u8]) -> Option<u32> {
    if value.len() > 4 {
        return None;
    }
    Some(value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)))
}

/// A Content-Format number (RFC 7252 §12.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentFormat(pub u16);

macro_rules! content_formats {
    ($($(#[$doc:meta])* $name:ident = $num:literal, $media:literal, $short:literal;)*) => {
        impl ContentFormat {
            $($(#[$doc])* pub const $name: ContentFormat = ContentFormat($num);)*

            /// Every Content-Format this crate knows the media type of.
            pub const KNOWN: &'static [ContentFormat] = &[$(ContentFormat($num)),*];

            /// The media type (with parameters) registered for this number.
            pub fn media_type(self) -> Option<&'static str> {
                match self.0 {
                    $($num => Some($media),)*
                    _ => None,
                }
            }

            /// Parses a number, a media type (`application/json`) or a short name (`json`, `text`).
            pub fn parse(text: &str) -> Option<Self> {
                if let Ok(n) = text.parse::<u16>() {
                    return Some(ContentFormat(n));
                }
                match text.to_ascii_lowercase().as_str() {
                    $($media | $short => Some(ContentFormat($num)),)*
                    _ => None,
                }
            }
        }
    };
}

content_formats! {
    /// text/plain; charset=utf-8.
    TEXT_PLAIN = 0, "text/plain;charset=utf-8", "text";
    /// application/cose; cose-type="cose-encrypt0".
    COSE_ENCRYPT0 = 16, "application/cose;cose-type=\"cose-encrypt0\"", "cose-encrypt0";
    /// application/link-format.
    LINK_FORMAT = 40, "application/link-format", "link";
    /// application/xml.
    XML = 41, "application/xml", "xml";
    /// application/octet-stream.
    OCTET_STREAM = 42, "application/octet-stream", "octet";
    /// application/exi.
    EXI = 47, "application/exi", "exi";
    /// application/json.
    JSON = 50, "application/json", "json";
    /// application/json-patch+json.
    JSON_PATCH = 51, "application/json-patch+json", "json-patch";
    /// application/merge-patch+json.
    MERGE_PATCH = 52, "application/merge-patch+json", "merge-patch";
    /// application/cbor.
    CBOR = 60, "application/cbor", "cbor";
    /// application/cwt.
    CWT = 61, "application/cwt", "cwt";
    /// application/senml+json.
    SENML_JSON = 110, "application/senml+json", "senml+json";
    /// application/senml+cbor.
    SENML_CBOR = 112, "application/senml+cbor", "senml+cbor";
    /// application/coap-group+json.
    COAP_GROUP_JSON = 256, "application/coap-group+json", "coap-group+json";
    /// application/vnd.ocf+cbor.
    OCF_CBOR = 10000, "application/vnd.ocf+cbor", "ocf+cbor";
    /// application/oscore (RFC 8613).
    OSCORE = 10001, "application/oscore", "oscore";
    /// application/vnd.oma.lwm2m+tlv.
    LWM2M_TLV = 11542, "application/vnd.oma.lwm2m+tlv", "lwm2m+tlv";
    /// application/vnd.oma.lwm2m+json.
    LWM2M_JSON = 11543, "application/vnd.oma.lwm2m+json", "lwm2m+json";
}

impl ContentFormat {
    /// Whether payloads of this format are text a person can read.
    pub fn is_text(self) -> bool {
        matches!(self.0, 0 | 40 | 41 | 50 | 51 | 52 | 110 | 256 | 11543)
    }
}

impl fmt::Display for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.media_type() {
            Some(media) => f.write_str(media),
            None => write!(f, "{}", self.0),
        }
    }
}

impl fmt::Debug for ContentFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentFormat({}, {self})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_sorted_and_unique() {
        assert!(REGISTRY.windows(2).all(|w| w[0].number < w[1].number));
        assert_eq!(OptionNumber::BLOCK2.def().unwrap().name, "Block2");
        assert_eq!(
            OptionNumber::from_name("uri-path"),
            Some(OptionNumber::URI_PATH)
        );
        assert!(OptionNumber(2048).def().is_none());
    }

    #[test]
    fn property_bits_follow_rfc_7252_table_4() {
        // (number, critical, unsafe, nocachekey) from RFC 7252 §5.10 Table 4.
        let table = [
            (1, true, false, false),
            (3, true, true, false),
            (4, false, false, false),
            (5, true, false, false),
            (7, true, true, false),
            (8, false, false, false),
            (11, true, true, false),
            (12, false, false, false),
            (14, false, true, false),
            (15, true, true, false),
            (17, true, false, false),
            (20, false, false, false),
            (35, true, true, false),
            (39, true, true, false),
            (60, false, false, true),
        ];
        for (n, crit, unsafe_, nck) in table {
            let o = OptionNumber(n);
            assert_eq!(o.is_critical(), crit, "{n}");
            assert_eq!(o.is_unsafe(), unsafe_, "{n}");
            if !unsafe_ {
                assert_eq!(o.is_no_cache_key(), nck, "{n}");
            }
        }
    }

    #[test]
    fn uint_is_minimal() {
        assert_eq!(encode_uint(0).as_ref(), &[] as &[u8]);
        assert_eq!(encode_uint(0x100).as_ref(), &[1, 0]);
        assert_eq!(encode_uint(u32::MAX).as_ref(), &[0xff; 4]);
        assert_eq!(decode_uint(&[1, 0]), Some(256));
        assert_eq!(decode_uint(&[0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn value_checks() {
        let def = OptionNumber::URI_HOST.def().unwrap();
        assert!(def.check(b"").is_err());
        assert!(def.check(b"example").is_ok());
        assert!(def.check(&[0xff, 0xfe]).is_err());
        assert!(OptionNumber::IF_NONE_MATCH
            .def()
            .unwrap()
            .check(b"x")
            .is_err());
    }

    #[test]
    fn content_formats() {
        assert_eq!(ContentFormat::parse("json"), Some(ContentFormat::JSON));
        assert_eq!(
            ContentFormat::parse("application/cbor"),
            Some(ContentFormat::CBOR)
        );
        assert_eq!(ContentFormat::parse("60"), Some(ContentFormat::CBOR));
        assert_eq!(ContentFormat::parse("nope"), None);
        assert_eq!(
            ContentFormat::LINK_FORMAT.to_string(),
            "application/link-format"
        );
    }
}
