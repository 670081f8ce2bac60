//! Owned CoAP messages: what the message layer queues, retransmits and hands to applications.
//!
//! [`Message::decode`] copies a validated [`Datagram`](crate::wire::Datagram) into owned form;
//! [`Message::encode`] writes it back. Options are kept sorted by number and, within a number, in
//! the order they were added, so that parse∘emit is the identity and unknown options survive.

use std::fmt;

use crate::code::{Code, MessageType};
use crate::option::{decode_uint, encode_uint, ContentFormat, OptionNumber};
use crate::wire::{self, Datagram, FormatError, MAX_TOKEN_LEN};

/// A token of 0–8 bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Token {
    len: u8,
    bytes: [u8; MAX_TOKEN_LEN],
}

impl Token {
    /// The empty token.
    pub const EMPTY: Token = Token {
        len: 0,
        bytes: [0; MAX_TOKEN_LEN],
    };

    /// Copies a token; `None` when longer than 8 bytes.
    pub fn new(bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut t = Token {
            len: bytes.len() as u8,
            bytes: [0; MAX_TOKEN_LEN],
        };
        t.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(t)
    }

    /// The token bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Token length.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the token is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("0x")?;
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One option instance.
#[derive(Clone, PartialEq, Eq)]
pub struct CoapOption {
    /// The option number.
    pub number: OptionNumber,
    /// The raw value.
    pub value: Vec<u8>,
}

impl fmt::Debug for CoapOption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.number)?;
        match std::str::from_utf8(&self.value) {
            Ok(s) if !s.is_empty() && s.chars().all(|c| !c.is_control()) => write!(f, "{s:?}"),
            _ => write!(f, "{:02x?}", self.value),
        }
    }
}

/// The options of a message, sorted by number (stable within a number).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Options(Vec<CoapOption>);

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Options {
    /// No options.
    pub fn new() -> Self {
        Options(Vec::new())
    }

    /// Takes options already in wire order (non-decreasing numbers), as a parser yields them.
    pub(crate) fn from_sorted(options: Vec<CoapOption>) -> Self {
        debug_assert!(options.windows(2).all(|w| w[0].number <= w[1].number));
        Options(options)
    }

    /// Appends an instance after any others of the same number.
    pub fn push(&mut self, number: OptionNumber, value: impl Into<Vec<u8>>) {
        let at = self.0.partition_point(|o| o.number <= number);
        self.0.insert(
            at,
            CoapOption {
                number,
                value: value.into(),
            },
        );
    }

    /// Replaces every instance of `number` by one with `value`.
    pub fn set(&mut self, number: OptionNumber, value: impl Into<Vec<u8>>) {
        self.remove(number);
        self.push(number, value);
    }

    /// Sets an unsigned integer option in minimal form.
    pub fn set_uint(&mut self, number: OptionNumber, value: u32) {
        self.set(number, encode_uint(value).as_ref());
    }

    /// Removes every instance of `number`.
    pub fn remove(&mut self, number: OptionNumber) {
        self.0.retain(|o| o.number != number);
    }

    /// The first value of `number`.
    pub fn get(&self, number: OptionNumber) -> Option<&[u8]> {
        self.get_all(number).next()
    }

    /// Every value of `number`, in order.
    pub fn get_all(&self, number: OptionNumber) -> impl Iterator<Item = &[u8]> + '_ {
        let start = self.0.partition_point(|o| o.number < number);
        self.0[start..]
            .iter()
            .take_while(move |o| o.number == number)
            .map(|o| o.value.as_slice())
    }

    /// The first value of `number` read as an unsigned integer.
    pub fn get_uint(&self, number: OptionNumber) -> Option<u32> {
        self.get(number).and_then(decode_uint)
    }

    /// Whether `number` is present.
    pub fn contains(&self, number: OptionNumber) -> bool {
        self.get(number).is_some()
    }

    /// Every option in order.
    pub fn iter(&self) -> std::slice::Iter<'_, CoapOption> {
        self.0.iter()
    }

    /// Number of option instances.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Keeps only the options for which `keep` returns true.
    pub fn retain(&mut self, keep: impl FnMut(&CoapOption) -> bool) {
        self.0.retain(keep)
    }

    /// Encoded size of the options area.
    pub fn encoded_len(&self) -> usize {
        let mut prev = 0;
        self.0
            .iter()
            .map(|o| {
                let n = wire::option_len(prev, o.number.0, o.value.len());
                prev = o.number.0;
                n
            })
            .sum()
    }

    /// Appends the encoded options area.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut prev = 0;
        for o in &self.0 {
            wire::write_option(out, prev, o.number.0, &o.value);
            prev = o.number.0;
        }
    }
}

impl<'a> IntoIterator for &'a Options {
    type Item = &'a CoapOption;
    type IntoIter = std::slice::Iter<'a, CoapOption>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// An option value longer than the encoding allows.
    #[error("{0} value is longer than 65804 bytes")]
    OptionTooLong(OptionNumber),
    /// An empty message (0.00) with a token, options or payload.
    #[error("an empty message (0.00) cannot carry a token, options or payload")]
    NonEmptyEmptyMessage,
    /// A code of a class that datagrams cannot carry (1, 3, 6, or 7: signaling is stream-only).
    #[error("code {0} cannot be sent in a datagram")]
    ReservedClass(Code),
}

/// An owned CoAP message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// CON, NON, ACK or RST.
    pub ty: MessageType,
    /// Method or response code.
    pub code: Code,
    /// Message ID (datagram transports only).
    pub mid: u16,
    /// Token.
    pub token: Token,
    /// Options.
    pub options: Options,
    /// Payload.
    pub payload: Vec<u8>,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} mid={} token={} {:?}",
            self.ty, self.code, self.mid, self.token, self.options
        )?;
        if !self.payload.is_empty() {
            write!(f, " payload={}B", self.payload.len())?;
        }
        Ok(())
    }
}

impl Message {
    /// A message with no options and no payload.
    pub fn new(ty: MessageType, code: Code) -> Self {
        Message {
            ty,
            code,
            mid: 0,
            token: Token::EMPTY,
            options: Options::new(),
            payload: Vec::new(),
        }
    }

    /// Validates and copies a datagram.
    pub fn decode(bytes: &[u8]) -> Result<Self, FormatError> {
        Ok(Self::from_datagram(&Datagram::new_checked(bytes)?))
    }

    /// Copies a validated datagram view.
    pub fn from_datagram<T: AsRef<[u8]>>(d: &Datagram<T>) -> Self {
        let mut options = Vec::new();
        for (number, value) in d.options().flatten() {
            options.push(CoapOption {
                number,
                value: value.to_vec(),
            });
        }
        Message {
            ty: d.ty(),
            code: d.code(),
            mid: d.mid(),
            token: Token::new(d.token()).unwrap_or_default(),
            // The wire order is already sorted by number; keep it as is.
            options: Options(options),
            payload: d.payload().to_vec(),
        }
    }

    /// The encoded datagram length.
    pub fn encoded_len(&self) -> usize {
        wire::HEADER_LEN
            + self.token.len()
            + self.options.encoded_len()
            + if self.payload.is_empty() {
                0
            } else {
                1 + self.payload.len()
            }
    }

    /// Appends the encoded datagram.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        if let Some(o) = self
            .options
            .iter()
            .find(|o| o.value.len() > wire::MAX_OPTION_VALUE_LEN)
        {
            return Err(EncodeError::OptionTooLong(o.number));
        }
        if matches!(self.code.class(), 1 | 3 | 6 | 7) {
            return Err(EncodeError::ReservedClass(self.code));
        }
        if self.code.is_empty()
            && (!self.token.is_empty() || !self.options.is_empty() || !self.payload.is_empty())
        {
            return Err(EncodeError::NonEmptyEmptyMessage);
        }
        out.reserve(self.encoded_len());
        wire::write_header(out, self.ty, self.code, self.mid, self.token.as_bytes());
        self.options.encode(out);
        if !self.payload.is_empty() {
            out.push(wire::PAYLOAD_MARKER);
            out.extend_from_slice(&self.payload);
        }
        Ok(())
    }

    /// Encodes into a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }

    /// The Uri-Path segments.
    pub fn path_segments(&self) -> impl Iterator<Item = &str> + '_ {
        self.options
            .get_all(OptionNumber::URI_PATH)
            .map(|v| std::str::from_utf8(v).unwrap_or(""))
    }

    /// The Uri-Path joined with `/`, without a leading slash (`sensors/temp`).
    pub fn path(&self) -> String {
        let mut out = String::new();
        for (i, seg) in self.path_segments().enumerate() {
            if i > 0 {
                out.push('/');
            }
            out.push_str(seg);
        }
        out
    }

    /// Sets Uri-Path from a `/`-separated string (a leading slash is ignored).
    pub fn set_path(&mut self, path: &str) {
        self.options.remove(OptionNumber::URI_PATH);
        for seg in path
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
        {
            self.options.push(OptionNumber::URI_PATH, seg.as_bytes());
        }
    }

    /// The Uri-Query items.
    pub fn queries(&self) -> impl Iterator<Item = &str> + '_ {
        self.options
            .get_all(OptionNumber::URI_QUERY)
            .map(|v| std::str::from_utf8(v).unwrap_or(""))
    }

    /// The Content-Format, if present.
    pub fn content_format(&self) -> Option<ContentFormat> {
        self.options
            .get_uint(OptionNumber::CONTENT_FORMAT)
            .and_then(|v| u16::try_from(v).ok())
            .map(ContentFormat)
    }

    /// Sets the Content-Format.
    pub fn set_content_format(&mut self, cf: ContentFormat) {
        self.options
            .set_uint(OptionNumber::CONTENT_FORMAT, u32::from(cf.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_unknown_options() {
        let mut m = Message::new(MessageType::Con, Code::PUT);
        m.mid = 7;
        m.token = Token::new(&[1, 2, 3]).unwrap();
        m.set_path("/a/b");
        m.options.push(OptionNumber(2049), vec![9; 300]);
        m.options.push(OptionNumber(65000), Vec::new());
        m.set_content_format(ContentFormat::JSON);
        m.payload = b"{}".to_vec();
        let bytes = m.to_bytes().unwrap();
        assert_eq!(bytes.len(), m.encoded_len());
        let back = Message::decode(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.path(), "a/b");
        assert_eq!(back.content_format(), Some(ContentFormat::JSON));
    }

    #[test]
    fn options_keep_insertion_order_within_a_number() {
        let mut o = Options::new();
        o.push(OptionNumber::URI_QUERY, b"b=2".to_vec());
        o.push(OptionNumber::URI_PATH, b"x".to_vec());
        o.push(OptionNumber::URI_QUERY, b"a=1".to_vec());
        let q: Vec<_> = o.get_all(OptionNumber::URI_QUERY).collect();
        assert_eq!(q, vec![&b"b=2"[..], &b"a=1"[..]]);
        assert_eq!(o.iter().next().unwrap().number, OptionNumber::URI_PATH);
    }

    #[test]
    fn empty_message_must_be_empty() {
        let mut m = Message::new(MessageType::Ack, Code::EMPTY);
        assert_eq!(m.to_bytes().unwrap().len(), 4);
        m.token = Token::new(&[1]).unwrap();
        assert_eq!(m.to_bytes(), Err(EncodeError::NonEmptyEmptyMessage));
        let csm = Message::new(MessageType::Con, Code::CSM);
        assert_eq!(csm.to_bytes(), Err(EncodeError::ReservedClass(Code::CSM)));
    }
}
