//! The datagram wire format (RFC 7252 §3): a checked, zero-copy view over the bytes of one
//! message, and the option encoding (§3.1) shared with the stream framing of RFC 8323.
//!
//! [`Datagram::new_checked`] validates the whole message once; afterwards no accessor can fail or
//! panic and no byte is copied. Parsing says what the bytes mean; what to do about them (RST, 4.02,
//! ignore) is decided by the message layer.

use crate::code::{Code, MessageType};
use crate::option::OptionNumber;

/// Byte offsets of the fixed header fields.
mod field {
    pub const VER_T_TKL: usize = 0;
    pub const CODE: usize = 1;
    pub const MID: core::ops::Range<usize> = 2..4;
    pub const TOKEN: usize = 4;
}

/// The smallest datagram: the 4-byte header.
pub const HEADER_LEN: usize = 4;
/// The payload marker byte.
pub const PAYLOAD_MARKER: u8 = 0xff;
/// The largest token length (RFC 7252 §3; 9–15 are reserved).
pub const MAX_TOKEN_LEN: usize = 8;

/// What makes a datagram malformed (RFC 7252 §3, §4.2 "message format error").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Shorter than the 4-byte header.
    #[error("datagram of {0} bytes is shorter than the 4-byte header")]
    TruncatedHeader(usize),
    /// Version field other than 1.
    #[error("unsupported version {0}")]
    Version(u8),
    /// Token length 9–15.
    #[error("reserved token length {0}")]
    TokenLength(u8),
    /// The token runs past the end.
    #[error("token runs past the end of the message")]
    TruncatedToken,
    /// An option header or value runs past the end.
    #[error("option runs past the end of the message")]
    TruncatedOption,
    /// Delta or length nibble 15 outside the payload marker.
    #[error("reserved option nibble 15")]
    ReservedNibble,
    /// Option numbers above 65535.
    #[error("option number exceeds 65535")]
    OptionNumberOverflow,
    /// A payload marker followed by nothing.
    #[error("payload marker with an empty payload")]
    EmptyPayload,
    /// Code 0.00 with a token, options or payload (§4.1).
    #[error("empty message (0.00) carries a token, options or payload")]
    NonEmptyEmptyMessage,
    /// A code of the reserved classes 1, 3, 6 or 7 in a datagram (signaling is stream-only).
    #[error("reserved code class {0}")]
    ReservedClass(u8),
}

/// The first fields of a datagram, readable even when the rest is malformed, so that a CON
/// with a format error can still be answered with a RST (§4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderPeek {
    /// The message type.
    pub ty: MessageType,
    /// The code.
    pub code: Code,
    /// The message ID.
    pub mid: u16,
}

/// Reads type, code and message ID, if at least a header is present (whatever the version).
pub fn peek_header(bytes: &[u8]) -> Option<HeaderPeek> {
    let header = bytes.get(..HEADER_LEN)?;
    Some(HeaderPeek {
        ty: MessageType::from_bits(header[field::VER_T_TKL] >> 4),
        code: Code(header[field::CODE]),
        mid: u16::from_be_bytes([header[2], header[3]]),
    })
}

/// A validated, zero-copy view of one datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<T: AsRef<[u8]>> {
    buffer: T,
    options_start: usize,
    /// Where the payload starts (after the marker); equals the length when there is none.
    payload_start: usize,
}

impl<T: AsRef<[u8]>> Datagram<T> {
    /// Validates the whole message: header, token, every option, payload marker.
    pub fn new_checked(buffer: T) -> Result<Self, FormatError> {
        let bytes = buffer.as_ref();
        if bytes.len() < HEADER_LEN {
            return Err(FormatError::TruncatedHeader(bytes.len()));
        }
        let first = bytes[field::VER_T_TKL];
        let version = first >> 6;
        if version != 1 {
            return Err(FormatError::Version(version));
        }
        let tkl = first & 0x0f;
        if usize::from(tkl) > MAX_TOKEN_LEN {
            return Err(FormatError::TokenLength(tkl));
        }
        let options_start = field::TOKEN + usize::from(tkl);
        if bytes.len() < options_start {
            return Err(FormatError::TruncatedToken);
        }
        let code = Code(bytes[field::CODE]);
        if matches!(code.class(), 1 | 3 | 6 | 7) {
            return Err(FormatError::ReservedClass(code.class()));
        }
        let payload_start = scan_options(&bytes[options_start..])? + options_start;
        if code.is_empty() && bytes.len() != HEADER_LEN {
            return Err(FormatError::NonEmptyEmptyMessage);
        }
        Ok(Datagram {
            buffer,
            options_start,
            payload_start,
        })
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// The message type.
    pub fn ty(&self) -> MessageType {
        MessageType::from_bits(self.bytes()[field::VER_T_TKL] >> 4)
    }

    /// The code.
    pub fn code(&self) -> Code {
        Code(self.bytes()[field::CODE])
    }

    /// The message ID.
    pub fn mid(&self) -> u16 {
        let b = &self.bytes()[field::MID];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The token (0–8 bytes).
    pub fn token(&self) -> &[u8] {
        &self.bytes()[field::TOKEN..self.options_start]
    }

    /// The options in wire order (non-decreasing numbers).
    pub fn options(&self) -> OptionIter<'_> {
        let end = if self.payload_start == self.bytes().len() {
            self.payload_start
        } else {
            self.payload_start - 1
        };
        OptionIter::new(&self.bytes()[self.options_start..end])
    }

    /// The payload (empty when there is none).
    pub fn payload(&self) -> &[u8] {
        &self.bytes()[self.payload_start..]
    }

    /// The underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// Walks the options area of a message, validating it; returns the offset where the payload
/// starts (after the marker) or the length when there is none.
pub fn scan_options(bytes: &[u8]) -> Result<usize, FormatError> {
    let mut iter = OptionIter::new(bytes);
    for item in iter.by_ref() {
        item?;
    }
    match iter.rest {
        [] => Ok(bytes.len()),
        [PAYLOAD_MARKER] => Err(FormatError::EmptyPayload),
        _ => Ok(bytes.len() - iter.rest.len() + 1),
    }
}

/// Iterates over `(number, value)` pairs of an encoded options area. Stops at the payload marker.
/// On a validated message every item is `Ok`; on raw bytes the first error ends the iteration.
#[derive(Debug, Clone)]
pub struct OptionIter<'a> {
    rest: &'a [u8],
    number: u32,
    failed: bool,
}

impl<'a> OptionIter<'a> {
    /// Iterates over raw option bytes (which may continue with a payload marker and payload).
    pub fn new(bytes: &'a [u8]) -> Self {
        OptionIter {
            rest: bytes,
            number: 0,
            failed: false,
        }
    }

    fn fail(
        &mut self,
        error: FormatError,
    ) -> Option<Result<(OptionNumber, &'a [u8]), FormatError>> {
        self.failed = true;
        Some(Err(error))
    }
}

/// Reads the extended delta or length of a nibble (§3.1); `None` for nibble 15.
fn extended(nibble: u8, rest: &mut &[u8]) -> Result<u32, FormatError> {
    match nibble {
        0..=12 => Ok(u32::from(nibble)),
        13 => {
            let (&b, tail) = rest.split_first().ok_or(FormatError::TruncatedOption)?;
            *rest = tail;
            Ok(u32::from(b) + 13)
        }
        14 => {
            if rest.len() < 2 {
                return Err(FormatError::TruncatedOption);
            }
            let v = u32::from(u16::from_be_bytes([rest[0], rest[1]])) + 269;
            *rest = &rest[2..];
            Ok(v)
        }
        _ => Err(FormatError::ReservedNibble),
    }
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<(OptionNumber, &'a [u8]), FormatError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let (&first, mut rest) = self.rest.split_first()?;
        if first == PAYLOAD_MARKER {
            return None;
        }
        let delta = match extended(first >> 4, &mut rest) {
            Ok(d) => d,
            Err(e) => return self.fail(e),
        };
        let len = match extended(first & 0x0f, &mut rest) {
            Ok(l) => l as usize,
            Err(e) => return self.fail(e),
        };
        let number = self.number + delta;
        if number > u32::from(u16::MAX) {
            return self.fail(FormatError::OptionNumberOverflow);
        }
        if rest.len() < len {
            return self.fail(FormatError::TruncatedOption);
        }
        let (value, tail) = rest.split_at(len);
        self.rest = tail;
        self.number = number;
        Some(Ok((OptionNumber(number as u16), value)))
    }
}

/// Splits a delta or length into its nibble and extension bytes.
fn nibble(value: usize) -> (u8, [u8; 2], usize) {
    match value {
        0..=12 => (value as u8, [0, 0], 0),
        13..=268 => (13, [(value - 13) as u8, 0], 1),
        _ => {
            let ext = ((value - 269) as u16).to_be_bytes();
            (14, ext, 2)
        }
    }
}

/// Appends one option given the previous option number. Numbers must not decrease and values
/// must be at most 65804 bytes (the largest encodable length).
pub fn write_option(out: &mut Vec<u8>, previous: u16, number: u16, value: &[u8]) {
    debug_assert!(number >= previous);
    let (dn, dext, dlen) = nibble(usize::from(number - previous));
    let (ln, lext, llen) = nibble(value.len());
    out.push((dn << 4) | ln);
    out.extend_from_slice(&dext[..dlen]);
    out.extend_from_slice(&lext[..llen]);
    out.extend_from_slice(value);
}

/// The encoded size of one option.
pub fn option_len(previous: u16, number: u16, value_len: usize) -> usize {
    let ext = |v: usize| match v {
        0..=12 => 0,
        13..=268 => 1,
        _ => 2,
    };
    1 + ext(usize::from(number - previous)) + ext(value_len) + value_len
}

/// The largest option value the encoding can carry.
pub const MAX_OPTION_VALUE_LEN: usize = 65535 + 269;

/// Writes the 4-byte header plus token.
pub fn write_header(out: &mut Vec<u8>, ty: MessageType, code: Code, mid: u16, token: &[u8]) {
    debug_assert!(token.len() <= MAX_TOKEN_LEN);
    out.push((1 << 6) | (ty.bits() << 4) | token.len() as u8);
    out.push(code.0);
    out.extend_from_slice(&mid.to_be_bytes());
    out.extend_from_slice(token);
}

/// Builds an empty message (empty ACK, RST or CON ping) for a message ID.
pub fn empty_message(ty: MessageType, mid: u16) -> [u8; 4] {
    let [hi, lo] = mid.to_be_bytes();
    [(1 << 6) | (ty.bits() << 4), 0, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 8613 C.4: a CON GET with token 0x39 0x74, Uri-Host "localhost", Uri-Path "tv1".
    const GET_TV1: &[u8] = &[
        0x44, 0x01, 0x5d, 0x1f, 0x00, 0x00, 0x39, 0x74, 0x39, 0x6c, 0x6f, 0x63, 0x61, 0x6c, 0x68,
        0x6f, 0x73, 0x74, 0x83, 0x74, 0x76, 0x31,
    ];

    #[test]
    fn parses_literal_request() {
        let d = Datagram::new_checked(GET_TV1).unwrap();
        assert_eq!(d.ty(), MessageType::Con);
        assert_eq!(d.code(), Code::GET);
        assert_eq!(d.mid(), 0x5d1f);
        assert_eq!(d.token(), &[0, 0, 0x39, 0x74]);
        let opts: Vec<_> = d.options().map(Result::unwrap).collect();
        assert_eq!(
            opts,
            vec![
                (OptionNumber::URI_HOST, &b"localhost"[..]),
                (OptionNumber::URI_PATH, &b"tv1"[..])
            ]
        );
        assert!(d.payload().is_empty());
    }

    #[test]
    fn builds_the_same_literal_bytes() {
        let mut out = Vec::new();
        write_header(
            &mut out,
            MessageType::Con,
            Code::GET,
            0x5d1f,
            &[0, 0, 0x39, 0x74],
        );
        write_option(&mut out, 0, 3, b"localhost");
        write_option(&mut out, 3, 11, b"tv1");
        assert_eq!(out, GET_TV1);
    }

    #[test]
    fn payload_and_marker() {
        let bytes = [
            0x64, 0x45, 0x5d, 0x1f, 0x00, 0x00, 0x39, 0x74, 0xff, b'H', b'i',
        ];
        let d = Datagram::new_checked(&bytes[..]).unwrap();
        assert_eq!(d.payload(), b"Hi");
        assert_eq!(d.options().count(), 0);
        let bad = [0x60, 0x45, 0x00, 0x01, 0xff];
        assert_eq!(
            Datagram::new_checked(&bad[..]).unwrap_err(),
            FormatError::EmptyPayload
        );
    }

    #[test]
    fn extended_deltas_and_lengths() {
        for (number, len) in [
            (12u16, 12usize),
            (13, 13),
            (268, 268),
            (269, 269),
            (2048, 1000),
            (65535, 70000 - 269),
        ] {
            let mut out = Vec::new();
            write_header(&mut out, MessageType::Non, Code::POST, 1, &[]);
            let value = vec![0xab; len.min(MAX_OPTION_VALUE_LEN)];
            write_option(&mut out, 0, number, &value);
            assert_eq!(out.len() - 4, option_len(0, number, value.len()));
            let d = Datagram::new_checked(&out[..]).unwrap();
            let (n, v) = d.options().next().unwrap().unwrap();
            assert_eq!(n.0, number);
            assert_eq!(v.len(), value.len());
        }
    }

    #[test]
    fn format_errors() {
        let cases: &[(&[u8], FormatError)] = &[
            (&[0x40, 0x01, 0x00], FormatError::TruncatedHeader(3)),
            (&[0x80, 0x01, 0x00, 0x00], FormatError::Version(2)),
            (&[0x49, 0x01, 0x00, 0x00], FormatError::TokenLength(9)),
            (&[0x42, 0x01, 0x00, 0x00, 0x01], FormatError::TruncatedToken),
            (
                &[0x40, 0x01, 0x00, 0x00, 0xb5, b'a'],
                FormatError::TruncatedOption,
            ),
            (&[0x40, 0x01, 0x00, 0x00, 0xf0], FormatError::ReservedNibble),
            (&[0x40, 0x01, 0x00, 0x00, 0x1f], FormatError::ReservedNibble),
            (
                &[0x40, 0x01, 0x00, 0x00, 0xd0],
                FormatError::TruncatedOption,
            ),
            (
                &[0x40, 0x01, 0x00, 0x00, 0xe0, 0xff, 0xff, 0xe0, 0xff, 0xff],
                FormatError::OptionNumberOverflow,
            ),
            (
                &[0x41, 0x00, 0x00, 0x00, 0x01],
                FormatError::NonEmptyEmptyMessage,
            ),
            (&[0x40, 0x20, 0x00, 0x00], FormatError::ReservedClass(1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                Datagram::new_checked(*bytes).unwrap_err(),
                *want,
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn peek_reads_broken_messages() {
        let p = peek_header(&[0x80, 0x01, 0x12, 0x34, 0xff]).unwrap();
        assert_eq!((p.ty, p.mid), (MessageType::Con, 0x1234));
        assert!(peek_header(&[0x40]).is_none());
        assert_eq!(
            empty_message(MessageType::Rst, 0x1234),
            [0x70, 0, 0x12, 0x34]
        );
    }
}
