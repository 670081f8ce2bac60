//! Stream framing (RFC 8323 §3.2): the message format of CoAP over TCP and TLS, and an
//! incremental decoder that reads a byte stream into messages.
//!
//! A frame is a header of one byte (Len nibble, TKL nibble), an extended length of 0, 1, 2
//! or 4 bytes (Len 13, 14, 15: plus 13, 269, 65805), the code, the token, then the options
//! and the payload exactly as in a datagram (RFC 7252 §3.1; the option parsing is
//! [`crate::wire`]'s). Len counts only the options, the payload marker and the
//! payload. There is no version, type or message ID: reliability is the transport's.
//!
//! "Message size" here, for Max-Message-Size (§5.3.1) and [`encoded_len`], is the whole
//! frame: header, extended length, code, token, options, marker and payload. Counting the
//! header too is the conservative reading: what we send never exceeds the peer's limit
//! however it counts, and what we accept is checked against our own limit the same way.
//!
//! [`FrameDecoder`] owns one input buffer that a socket reads straight into
//! ([`FrameDecoder::input_buffer`], [`FrameDecoder::commit`]) or that is fed slices
//! ([`FrameDecoder::extend`]). It knows a frame's length from its first bytes and refuses a
//! frame over its maximum before buffering it, so it never holds more than one maximal
//! frame plus a header ([`FrameDecoder::capacity`]). Each frame's bytes are copied once,
//! into the [`Message`]; the buffer is compacted only when room is needed, moving at most
//! the partial frame at its end.

use crate::code::{Code, MessageType};
use crate::message::{CoapOption, EncodeError, Message, Options, Token};
use crate::option::OptionNumber;
use crate::wire::{self, FormatError, OptionIter, MAX_OPTION_VALUE_LEN, MAX_TOKEN_LEN};

/// The longest frame header: first byte, 4-byte extended length, code, 8-byte token.
pub const MAX_HEADER_LEN: usize = 1 + 4 + 1 + MAX_TOKEN_LEN;

/// The largest Len value the format can carry (Len 15: 4 bytes plus 65805).
pub const MAX_BODY_LEN: u64 = u32::MAX as u64 + 65805;

/// A buffer that grew past this for a large frame is freed once it is empty again, so an
/// idle connection does not keep a megabyte of input buffer.
const RETAINED_BUFFER: usize = 64 * 1024;

/// What makes a frame malformed or unacceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Token length 9–15 (reserved).
    #[error("reserved token length {0}")]
    TokenLength(u8),
    /// The frame is larger than the decoder accepts (our Max-Message-Size).
    #[error("message of {size} bytes exceeds Max-Message-Size {max}")]
    TooLarge {
        /// The frame's whole length, from its header.
        size: u64,
        /// The decoder's maximum.
        max: usize,
    },
    /// A code of the reserved classes 1, 3 or 6.
    #[error("reserved code class {0}")]
    ReservedClass(u8),
    /// The options or the payload marker are malformed (RFC 7252 §3.1).
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// The number of extended-length bytes and the Len nibble for a body length.
fn length_field(body_len: u64) -> (u8, usize) {
    match body_len {
        0..=12 => (body_len as u8, 0),
        13..=268 => (13, 1),
        269..=65804 => (14, 2),
        _ => (15, 4),
    }
}

/// The length of the options, marker and payload: Len.
fn body_len(message: &Message) -> u64 {
    let payload = if message.payload.is_empty() {
        0
    } else {
        1 + message.payload.len()
    };
    (message.options.encoded_len() + payload) as u64
}

/// The encoded frame length of a message (header, token, options, marker, payload).
pub fn encoded_len(message: &Message) -> usize {
    let body = body_len(message);
    let (_, ext) = length_field(body);
    1 + ext + 1 + message.token.len() + body as usize
}

/// Appends a message as one frame. The message type and ID are ignored (streams have
/// neither); signaling codes (class 7) are allowed, the reserved classes 1, 3 and 6 are not.
/// A body over [`MAX_BODY_LEN`] (4 GiB) cannot be framed: it is refused as
/// `EncodeError::OptionTooLong(OptionNumber(0))`, since `EncodeError` has no better variant.
pub fn encode(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if let Some(o) = message
        .options
        .iter()
        .find(|o| o.value.len() > MAX_OPTION_VALUE_LEN)
    {
        return Err(EncodeError::OptionTooLong(o.number));
    }
    if matches!(message.code.class(), 1 | 3 | 6) {
        return Err(EncodeError::ReservedClass(message.code));
    }
    if message.code.is_empty()
        && (!message.token.is_empty() || !message.options.is_empty() || !message.payload.is_empty())
    {
        return Err(EncodeError::NonEmptyEmptyMessage);
    }
    let body = body_len(message);
    if body > MAX_BODY_LEN {
        return Err(EncodeError::OptionTooLong(OptionNumber(0)));
    }
    let (nibble, ext) = length_field(body);
    let token = message.token.as_bytes();
    out.reserve(encoded_len(message));
    out.push((nibble << 4) | token.len() as u8);
    match ext {
        1 => out.push((body - 13) as u8),
        2 => out.extend_from_slice(&((body - 269) as u16).to_be_bytes()),
        4 => out.extend_from_slice(&((body - 65805) as u32).to_be_bytes()),
        _ => {}
    }
    out.push(message.code.0);
    out.extend_from_slice(token);
    message.options.encode(out);
    if !message.payload.is_empty() {
        out.push(wire::PAYLOAD_MARKER);
        out.extend_from_slice(&message.payload);
    }
    Ok(())
}

/// Encodes a message into a new buffer.
pub fn to_bytes(message: &Message) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(encoded_len(message));
    encode(message, &mut out)?;
    Ok(out)
}

/// What the first bytes of a frame say: where the code is and how long the frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Offset of the code byte (after the first byte and the extended length).
    pub code_offset: usize,
    /// Token length.
    pub token_len: usize,
    /// Len: options, marker and payload.
    pub body_len: u64,
}

impl FrameHeader {
    /// Header bytes before the options: first byte, extended length, code, token.
    pub fn header_len(&self) -> usize {
        self.code_offset + 1 + self.token_len
    }

    /// The whole frame's length.
    pub fn frame_len(&self) -> u64 {
        self.header_len() as u64 + self.body_len
    }
}

/// Reads a frame's header from the start of `bytes`: `Ok(None)` while the length field is
/// incomplete. The code and token need not be present yet.
pub fn parse_header(bytes: &[u8]) -> Result<Option<FrameHeader>, FrameError> {
    let Some(&first) = bytes.first() else {
        return Ok(None);
    };
    let tkl = first & 0x0f;
    if usize::from(tkl) > MAX_TOKEN_LEN {
        return Err(FrameError::TokenLength(tkl));
    }
    let ext = match first >> 4 {
        13 => 1,
        14 => 2,
        15 => 4,
        _ => 0,
    };
    let Some(field) = bytes.get(1..1 + ext) else {
        return Ok(None);
    };
    let body_len = match ext {
        0 => u64::from(first >> 4),
        1 => u64::from(field[0]) + 13,
        2 => u64::from(u16::from_be_bytes([field[0], field[1]])) + 269,
        _ => u64::from(u32::from_be_bytes([field[0], field[1], field[2], field[3]])) + 65805,
    };
    Ok(Some(FrameHeader {
        code_offset: 1 + ext,
        token_len: usize::from(tkl),
        body_len,
    }))
}

/// Decodes one complete frame (exactly `bytes`, as measured by its header).
fn decode_frame(header: &FrameHeader, bytes: &[u8]) -> Result<Message, FrameError> {
    let code = Code(bytes[header.code_offset]);
    if matches!(code.class(), 1 | 3 | 6) {
        return Err(FrameError::ReservedClass(code.class()));
    }
    let token_start = header.code_offset + 1;
    let body_start = token_start + header.token_len;
    let token = Token::new(&bytes[token_start..body_start]).unwrap_or_default();
    let body = &bytes[body_start..];
    let payload_start = wire::scan_options(body)?;
    let options_end = if payload_start == body.len() {
        payload_start
    } else {
        payload_start - 1
    };
    let options = OptionIter::new(&body[..options_end])
        .flatten()
        .map(|(number, value)| CoapOption {
            number,
            value: value.to_vec(),
        })
        .collect();
    Ok(Message {
        ty: MessageType::Con,
        code,
        mid: 0,
        token,
        // The wire order is sorted by number already.
        options: Options::from_sorted(options),
        payload: body[payload_start..].to_vec(),
    })
}

/// Decodes a buffer holding exactly one frame. Decoded messages have type CON and message
/// ID 0: streams carry neither.
pub fn decode(bytes: &[u8]) -> Result<Message, FrameError> {
    let header = parse_header(bytes)?.ok_or(FormatError::TruncatedHeader(bytes.len()))?;
    if header.frame_len() != bytes.len() as u64 {
        return Err(FormatError::TruncatedOption.into());
    }
    if bytes.len() < header.header_len() {
        return Err(FormatError::TruncatedToken.into());
    }
    decode_frame(&header, bytes)
}

/// Reads frames out of a byte stream split anyhow.
#[derive(Debug)]
pub struct FrameDecoder {
    /// `buffer[start..end]` is unread input; the rest is room to read into.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    max_frame_len: usize,
    /// The first error; the stream cannot be resynchronised after it.
    failed: Option<FrameError>,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_len` bytes (whole frames, see
    /// the module documentation).
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            buffer: Vec::new(),
            start: 0,
            end: 0,
            max_frame_len,
            failed: None,
        }
    }

    /// The largest frame accepted.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The most the buffer ever holds: one maximal frame plus a header.
    pub fn capacity(&self) -> usize {
        self.max_frame_len.saturating_add(MAX_HEADER_LEN)
    }

    /// Bytes received and not yet decoded (a partial frame, or frames not yet taken).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The size of the buffer allocated now (for memory accounting).
    pub fn allocated(&self) -> usize {
        self.buffer.len()
    }

    /// The error that stopped the decoder, if any: input after it is ignored.
    pub fn error(&self) -> Option<FrameError> {
        self.failed
    }

    /// Forgets every buffered byte and frees the buffer.
    pub fn clear(&mut self) {
        self.buffer = Vec::new();
        self.start = 0;
        self.end = 0;
    }

    /// Frees the buffer if it holds nothing, so that an idle connection keeps no read buffer;
    /// returns whether it did. The next read allocates again.
    pub fn release_if_empty(&mut self) -> bool {
        if self.start != self.end || self.buffer.is_empty() {
            return false;
        }
        self.clear();
        true
    }

    /// Makes room after `end` for up to `want` bytes, within [`capacity`](Self::capacity);
    /// returns the room there is.
    fn make_room(&mut self, want: usize) -> usize {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let cap = self.capacity();
        let want = want.max(1);
        if self.buffer.len() - self.end < want && self.start > 0 {
            // Move the partial frame to the front: at most one frame, once per frame.
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let needed = self.end.saturating_add(want).min(cap);
        if self.buffer.len() < needed {
            let doubled = self.buffer.len().saturating_mul(2).min(cap);
            self.buffer.resize(needed.max(doubled), 0);
        }
        self.buffer.len() - self.end
    }

    /// Room to read into: at least `min` bytes unless that would take the buffer past its
    /// [`capacity`](Self::capacity). Never empty once the complete frames are taken out with
    /// [`next_frame`](Self::next_frame) (what remains is less than one frame). Follow with
    /// [`commit`](Self::commit).
    pub fn input_buffer(&mut self, min: usize) -> &mut [u8] {
        if self.failed.is_some() {
            // Nothing is decoded any more: whatever is read here is dropped by `commit`.
            self.clear();
        }
        self.make_room(min);
        let end = self.end;
        &mut self.buffer[end..]
    }

    /// `n` bytes were written into [`input_buffer`](Self::input_buffer).
    pub fn commit(&mut self, n: usize) {
        if self.failed.is_some() {
            self.clear();
            return;
        }
        self.end = (self.end + n).min(self.buffer.len());
    }

    /// Copies as much of `bytes` as fits within [`capacity`](Self::capacity); returns how
    /// many were taken. Take the frames out with [`next_frame`](Self::next_frame) and offer
    /// the rest again: after the complete frames are out, room for more is always free.
    pub fn extend(&mut self, bytes: &[u8]) -> usize {
        if self.failed.is_some() {
            return bytes.len();
        }
        let room = self.make_room(bytes.len());
        let n = room.min(bytes.len());
        self.buffer[self.end..self.end + n].copy_from_slice(&bytes[..n]);
        self.end += n;
        n
    }

    fn fail(&mut self, error: FrameError) -> Result<Option<Message>, FrameError> {
        self.failed = Some(error);
        self.clear();
        Err(error)
    }

    /// The next complete frame: `Ok(None)` until one is complete. A frame longer than the
    /// maximum is refused as soon as its length field has arrived. After an error the
    /// decoder stays failed (the stream cannot be resynchronised) and returns it again.
    pub fn next_frame(&mut self) -> Result<Option<Message>, FrameError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let available = &self.buffer[self.start..self.end];
        let header = match parse_header(available) {
            Ok(Some(header)) => header,
            Ok(None) => return Ok(None),
            Err(e) => return self.fail(e),
        };
        let frame_len = header.frame_len();
        if frame_len > self.max_frame_len as u64 {
            return self.fail(FrameError::TooLarge {
                size: frame_len,
                max: self.max_frame_len,
            });
        }
        let frame_len = frame_len as usize;
        if available.len() < frame_len {
            return Ok(None);
        }
        let result = decode_frame(&header, &available[..frame_len]);
        self.start += frame_len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buffer.len() > RETAINED_BUFFER {
                self.buffer = Vec::new();
            }
        }
        match result {
            Ok(message) => Ok(Some(message)),
            Err(e) => self.fail(e),
        }
    }

    /// The length of the frame begun in the buffer, once its length field is there.
    pub fn pending_frame_len(&self) -> Option<u64> {
        parse_header(&self.buffer[self.start..self.end])
            .ok()
            .flatten()
            .map(|h| h.frame_len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(token: &[u8]) -> Message {
        let mut m = Message::new(MessageType::Con, Code::GET);
        m.token = Token::new(token).unwrap();
        m.set_path("/a");
        m
    }

    #[test]
    fn an_empty_decoder_gives_its_buffer_back_but_not_a_partial_frame() {
        let bytes = to_bytes(&get(&[1])).unwrap();
        let mut d = FrameDecoder::new(1 << 16);
        d.extend(&bytes[..2]);
        assert!(!d.release_if_empty(), "a partial frame stays");
        assert!(d.allocated() > 0);
        d.extend(&bytes[2..]);
        assert_eq!(d.next_frame().unwrap(), Some(get(&[1])));
        assert!(d.release_if_empty());
        assert_eq!(d.allocated(), 0);
        // And it reads again afterwards.
        d.extend(&bytes);
        assert_eq!(d.next_frame().unwrap(), Some(get(&[1])));
    }

    #[test]
    fn literal_frames() {
        // RFC 8323 §3.2, Figure 4: Len 2 (Uri-Path "a" is 2 bytes), TKL 1, GET, token 0x42.
        let bytes = to_bytes(&get(&[0x42])).unwrap();
        assert_eq!(bytes, [0x21, 0x01, 0x42, 0xb1, b'a']);
        assert_eq!(decode(&bytes).unwrap(), get(&[0x42]));
        // A CSM with Max-Message-Size 1152 (0x0480) and Block-Wise-Transfer.
        let csm = [0x40, 0xe1, 0x22, 0x04, 0x80, 0x20];
        let m = decode(&csm).unwrap();
        assert_eq!(m.code, Code::CSM);
        assert_eq!(m.options.get_uint(OptionNumber(2)), Some(1152));
        assert_eq!(m.options.get(OptionNumber(4)), Some(&[][..]));
        assert_eq!(to_bytes(&m).unwrap(), csm);
        // An empty message: one zero byte for Len/TKL and one for the code.
        let empty = Message::new(MessageType::Con, Code::EMPTY);
        assert_eq!(to_bytes(&empty).unwrap(), [0, 0]);
    }

    #[test]
    fn extended_lengths() {
        for (payload, nibble, ext) in [
            (11usize, 12u8, 0usize),
            (12, 13, 1),
            (267, 13, 1),
            (268, 14, 2),
            (65803, 14, 2),
            (65804, 15, 4),
            (200_000, 15, 4),
        ] {
            let mut m = Message::new(MessageType::Con, Code::CONTENT);
            m.payload = vec![7; payload];
            let bytes = to_bytes(&m).unwrap();
            assert_eq!(bytes[0] >> 4, nibble, "payload {payload}");
            assert_eq!(bytes.len(), encoded_len(&m));
            assert_eq!(bytes.len(), 1 + ext + 1 + 1 + payload);
            assert_eq!(decode(&bytes).unwrap(), m);
        }
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], FrameError)] = &[
            (&[0x09, 0x01], FrameError::TokenLength(9)),
            (&[0x0f], FrameError::TokenLength(15)),
            (&[0x00, 0x20], FrameError::ReservedClass(1)),
            (&[0x00, 0xc0], FrameError::ReservedClass(6)),
            (&[0x10, 0x45, 0xff], FormatError::EmptyPayload.into()),
            (&[0x10, 0x45, 0xf0], FormatError::ReservedNibble.into()),
            (
                &[0x20, 0x01, 0xb5, b'a'],
                FormatError::TruncatedOption.into(),
            ),
        ];
        for (bytes, want) in cases {
            let mut d = FrameDecoder::new(1000);
            assert_eq!(d.extend(bytes), bytes.len());
            assert_eq!(d.next_frame(), Err(*want), "{bytes:02x?}");
            // Sticky: the stream cannot be resynchronised.
            assert_eq!(d.next_frame(), Err(*want));
            assert_eq!(d.buffered(), 0);
        }
        let mut m = Message::new(MessageType::Con, Code::EMPTY);
        m.payload = b"x".to_vec();
        assert_eq!(to_bytes(&m), Err(EncodeError::NonEmptyEmptyMessage));
        let m = Message::new(MessageType::Con, Code(0x60));
        assert_eq!(to_bytes(&m), Err(EncodeError::ReservedClass(Code(0x60))));
    }

    #[test]
    fn split_and_batched_frames() {
        let frames: Vec<Message> = (0..20u8)
            .map(|i| {
                let mut m = get(&[i, i]);
                m.payload = vec![i; usize::from(i) * 30];
                m
            })
            .collect();
        let mut stream = Vec::new();
        for f in &frames {
            encode(f, &mut stream).unwrap();
        }
        for chunk in [1, 2, 3, 7, 64, 1000, stream.len()] {
            let mut d = FrameDecoder::new(4096);
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                let mut rest = piece;
                while !rest.is_empty() {
                    let n = d.extend(rest);
                    rest = &rest[n..];
                    while let Some(m) = d.next_frame().unwrap() {
                        got.push(m);
                    }
                }
                assert!(d.allocated() <= d.capacity());
            }
            assert_eq!(got, frames, "chunk {chunk}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn reads_into_its_own_buffer() {
        let mut stream = Vec::new();
        for i in 0..50u8 {
            encode(&get(&[i]), &mut stream).unwrap();
        }
        let mut d = FrameDecoder::new(64);
        let mut rest = &stream[..];
        let mut count = 0;
        while !rest.is_empty() {
            let buf = d.input_buffer(16);
            assert!(!buf.is_empty());
            let n = buf.len().min(rest.len()).min(13);
            buf[..n].copy_from_slice(&rest[..n]);
            d.commit(n);
            rest = &rest[n..];
            while let Some(m) = d.next_frame().unwrap() {
                assert_eq!(m.token.as_bytes(), [count]);
                count += 1;
            }
            assert!(d.allocated() <= d.capacity());
        }
        assert_eq!(count, 50);
    }

    #[test]
    fn refuses_a_large_frame_from_its_header() {
        let mut d = FrameDecoder::new(1152);
        // Len 15 with a 4-byte length: 100 MB announced, only 5 bytes sent.
        assert_eq!(d.extend(&[0xf0, 0x05, 0xf5, 0xe1, 0x00]), 5);
        match d.next_frame() {
            Err(FrameError::TooLarge { size, max: 1152 }) => {
                assert_eq!(size, 0x05f5_e100 + 65805 + 6)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            FrameError::TooLarge {
                size: 2000,
                max: 1152
            }
            .to_string(),
            "message of 2000 bytes exceeds Max-Message-Size 1152"
        );
        // Exactly the maximum is fine.
        let mut m = Message::new(MessageType::Con, Code::CONTENT);
        m.payload = vec![1; 1152 - 5];
        let bytes = to_bytes(&m).unwrap();
        assert_eq!(bytes.len(), 1152);
        let mut d = FrameDecoder::new(1152);
        assert_eq!(d.extend(&bytes), bytes.len());
        assert_eq!(d.next_frame().unwrap(), Some(m));
    }

    #[test]
    fn large_buffer_is_freed_when_empty() {
        let mut m = Message::new(MessageType::Con, Code::CONTENT);
        m.payload = vec![1; 200_000];
        let bytes = to_bytes(&m).unwrap();
        let mut d = FrameDecoder::new(1 << 20);
        let mut rest = &bytes[..];
        let mut got = None;
        while !rest.is_empty() {
            let n = d.extend(&rest[..rest.len().min(16 * 1024)]);
            rest = &rest[n..];
            if let Some(f) = d.next_frame().unwrap() {
                got = Some(f);
            }
        }
        assert_eq!(got, Some(m));
        assert_eq!(d.allocated(), 0);
    }
}
