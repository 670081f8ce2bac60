// The checks of the `stream_frame` fuzz target (RFC 8323 framing and the stream connection),
// shared by `fuzz/fuzz_targets/stream_frame.rs` (through `include!`) and the stable replay
// `crates/tern-proto/tests/stream_fuzz_regressions.rs`.
//
// Input: byte 0 holds flags (bit 0: a valid CSM is put in front of the stream, so the
// connection gets past its first-message check), bytes 0–1 seed the chunk sizes the
// stream is cut into; the rest is the stream. Checks:
// - the decoder never panics, never buffers or allocates more than its capacity, and
//   yields the same frames and the same error however the stream is cut;
// - a decoded frame re-encodes (unless it is an Empty message with content, which the
//   decoder tolerates for the connection to ignore) to bytes that decode to the same
//   message, of the length `encoded_len` says;
// - a server connection fed the same chunks (answering every request, running its timers)
//   never panics, keeps its input buffer within one frame, writes only whole frames, and
//   once closed stays closed and quiet.

use std::time::{Duration, Instant};

use tern_proto::stream::frame::{self, FrameDecoder, FrameError};
use tern_proto::stream::signal::Csm;
use tern_proto::stream::{StreamConfig, StreamConnection, StreamEvent, StreamRole, StreamState};
use tern_proto::{Code, Message, MessageType};

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// No frame decoded.
    Rejected,
    /// At least one frame decoded and every check held.
    Checked,
}

const MAX_FRAME: usize = 4096;

/// Cuts `len` bytes into pieces of 1–`max` bytes from a seed (a small LCG, so that the
/// fuzzer controls the cuts with two bytes).
fn cuts(seed: u16, len: usize, max: usize) -> Vec<usize> {
    let mut state = u32::from(seed) | 1;
    let mut out = Vec::new();
    let mut at = 0;
    while at < len {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (1 + (state >> 16) as usize % max).min(len - at);
        out.push(n);
        at += n;
    }
    out
}

/// Decodes `stream` cut as `pieces`, alternating the two input paths.
fn decode_all(stream: &[u8], pieces: &[usize]) -> (Vec<Message>, Option<FrameError>) {
    let mut d = FrameDecoder::new(MAX_FRAME);
    let mut frames = Vec::new();
    let mut at = 0;
    for (i, &n) in pieces.iter().enumerate() {
        let mut rest = &stream[at..at + n];
        at += n;
        while !rest.is_empty() {
            let taken = if i % 2 == 0 {
                d.extend(rest)
            } else {
                let buf = d.input_buffer(rest.len());
                assert!(
                    !buf.is_empty(),
                    "an empty input buffer reads as end of stream"
                );
                let k = buf.len().min(rest.len());
                buf[..k].copy_from_slice(&rest[..k]);
                d.commit(k);
                k
            };
            assert!(taken > 0, "the decoder took nothing");
            rest = &rest[taken..];
            assert!(
                d.allocated() <= d.capacity(),
                "buffer grew past its capacity"
            );
            assert!(d.buffered() <= d.capacity());
            loop {
                match d.next_frame() {
                    Ok(Some(m)) => frames.push(m),
                    Ok(None) => break,
                    Err(e) => return (frames, Some(e)),
                }
            }
        }
    }
    (frames, None)
}

fn check_reencode(m: &Message) {
    match frame::to_bytes(m) {
        Ok(bytes) => {
            assert_eq!(bytes.len(), frame::encoded_len(m));
            assert_eq!(
                frame::decode(&bytes).as_ref(),
                Ok(m),
                "re-encoding changed it"
            );
        }
        Err(e) => assert!(
            m.code == Code::EMPTY,
            "a decoded frame does not encode: {e} ({m:?})"
        ),
    }
}

fn check_connection(stream: &[u8], pieces: &[usize]) {
    let t0 = Instant::now();
    let config = StreamConfig {
        max_message_size: MAX_FRAME as u32,
        max_unanswered_requests: 8,
        max_queued_output: 1 << 16,
        ..StreamConfig::default()
    };
    let mut c = StreamConnection::new(StreamRole::Server, config, t0, [3; 32]);
    let mut out = FrameDecoder::new(usize::MAX / 2);
    let mut now = t0;
    let mut at = 0;
    let mut closed = false;
    for (i, &n) in pieces.iter().enumerate() {
        let bytes = &stream[at..at + n];
        at += n;
        now += Duration::from_millis(u64::from(bytes[0]) * 50);
        if i % 2 == 0 {
            c.handle_input(now, bytes);
        } else {
            let mut rest = bytes;
            while !rest.is_empty() {
                let buf = c.input_buffer(rest.len());
                assert!(!buf.is_empty());
                let k = buf.len().min(rest.len());
                buf[..k].copy_from_slice(&rest[..k]);
                c.commit_input(now, k);
                rest = &rest[k..];
            }
        }
        assert!(c.buffered_input() <= MAX_FRAME + frame::MAX_HEADER_LEN);
        if let Some(at) = c.poll_timeout() {
            if at <= now {
                c.handle_timeout(now);
            }
        }
        while let Some(event) = c.poll_event() {
            assert!(!closed, "an event after Closed: {event:?}");
            match event {
                StreamEvent::Request { id, request } => {
                    let mut r = Message::new(MessageType::Con, Code::CONTENT);
                    r.payload = request.payload.iter().take(100).copied().collect();
                    // Refused when the peer announced a tiny Max-Message-Size: fine.
                    let _ = c.respond(now, id, r);
                }
                StreamEvent::Closed { .. } => closed = true,
                _ => {}
            }
        }
        assert_eq!(closed, c.state() == StreamState::Closed);
        while let Some(bytes) = c.poll_output() {
            assert!(
                out.extend(&bytes) == bytes.len(),
                "output frame over the cap"
            );
            while let Some(m) = out.next_frame().expect("the connection wrote a bad frame") {
                check_reencode(&m);
            }
        }
    }
    c.handle_eof(now);
    assert_eq!(c.state(), StreamState::Closed);
}

/// The whole check.
pub fn check(data: &[u8]) -> Outcome {
    if data.len() < 2 {
        return Outcome::Rejected;
    }
    let seed = u16::from_be_bytes([data[0], data[1]]);
    let mut stream = Vec::new();
    if data[0] & 1 == 1 {
        let csm = Csm {
            max_message_size: Some(2048),
            block_wise_transfer: true,
        };
        frame::encode(&csm.to_message(), &mut stream).unwrap();
    }
    stream.extend_from_slice(&data[2..]);
    if stream.is_empty() {
        return Outcome::Rejected;
    }
    let pieces = cuts(seed, stream.len(), 1 + usize::from(data[1] % 64) * 8);
    let (frames, error) = decode_all(&stream, &pieces);
    // However the stream is cut, the same frames and the same error.
    let whole = decode_all(&stream, &[stream.len()]);
    assert_eq!(
        (&frames, &error),
        (&whole.0, &whole.1),
        "the cuts changed the result"
    );
    for m in &frames {
        check_reencode(m);
    }
    check_connection(&stream, &pieces);
    if frames.is_empty() {
        Outcome::Rejected
    } else {
        Outcome::Checked
    }
}
