// The checks of the `dtls_record` fuzz target (DTLS 1.2 record headers, RFC 6347 §4.1), shared
// by `fuzz/fuzz_targets/dtls_record.rs` (through `include!`) and the stable replay
// `crates/tern-tls/tests/record_fuzz_regressions.rs`.
//
// Input: one datagram. Checks:
// - `RecordHeader::parse` never panics, parses exactly when the 13-byte header and the fragment
//   it announces are in the datagram, and the header it gives, written back by hand in the
//   layout of RFC 6347 §4.1, is the datagram's first 13 bytes;
// - `is_client_hello` holds only for an epoch-0 handshake record whose non-empty fragment starts
//   with msg_type 1 (client_hello), and for every such record;
// - `records` ends, yields records that follow one another from the datagram's start, each its
//   header and fragment, inside the datagram and parsing on its own to the header it came with,
//   never more bytes in all than the datagram; it stops exactly where no whole record is left
//   (cutting the last record's last byte loses that record and only it), and stays ended.

use tern_tls::record::{self, ContentType, RecordHeader, HEADER_LEN};

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// No whole record (fine for a fuzz input, not for a seed).
    Rejected,
    /// At least one record parsed and every check held.
    Checked,
}

/// The 13 bytes of a header, laid out by hand (RFC 6347 §4.1): type, version, epoch, 48-bit
/// sequence number, length.
fn header_bytes(h: &RecordHeader) -> [u8; HEADER_LEN] {
    let content_type = match h.content_type {
        ContentType::ChangeCipherSpec => 20,
        ContentType::Alert => 21,
        ContentType::Handshake => 22,
        ContentType::ApplicationData => 23,
        ContentType::Other(b) => {
            assert!(!(20..=23).contains(&b), "type {b} parsed as Other");
            b
        }
    };
    assert!(
        h.sequence < 1 << 48,
        "a sequence number of more than 48 bits"
    );
    let mut out = [0u8; HEADER_LEN];
    out[0] = content_type;
    out[1..3].copy_from_slice(&h.version.to_be_bytes());
    out[3..5].copy_from_slice(&h.epoch.to_be_bytes());
    out[5..11].copy_from_slice(&h.sequence.to_be_bytes()[2..]);
    out[11..13].copy_from_slice(&h.length.to_be_bytes());
    out
}

/// The records of `datagram` with each one's offset, checked as they come.
fn walk(datagram: &[u8]) -> Vec<(usize, RecordHeader)> {
    let base = datagram.as_ptr() as usize;
    let mut seen = Vec::new();
    let mut at = 0;
    let mut iter = record::records(datagram);
    for (h, r) in iter.by_ref() {
        assert!(
            seen.len() < datagram.len() / HEADER_LEN,
            "more records than 13-byte headers fit in {} bytes",
            datagram.len()
        );
        let start = (r.as_ptr() as usize).wrapping_sub(base);
        assert_eq!(start, at, "a record that does not follow the one before");
        assert!(
            r.len() <= datagram.len() - at,
            "a record past the datagram's end"
        );
        assert_eq!(r.len(), HEADER_LEN + usize::from(h.length));
        assert_eq!(
            RecordHeader::parse(r),
            Some(h),
            "a record alone parses otherwise"
        );
        assert_eq!(RecordHeader::parse(&datagram[at..]), Some(h));
        assert_eq!(
            header_bytes(&h),
            r[..HEADER_LEN],
            "re-serialising changed it"
        );
        seen.push((at, h));
        at += r.len();
    }
    assert!(at <= datagram.len());
    assert_eq!(
        RecordHeader::parse(&datagram[at..]),
        None,
        "the records stopped before a whole record"
    );
    assert!(iter.next().is_none(), "the iterator went on after ending");
    seen
}

/// Runs the checks; panics when an invariant breaks.
pub fn check(data: &[u8]) -> Outcome {
    let first = RecordHeader::parse(data);
    let whole = data.len() >= HEADER_LEN
        && data.len() - HEADER_LEN >= usize::from(u16::from_be_bytes([data[11], data[12]]));
    assert_eq!(
        first.is_some(),
        whole,
        "parse and the announced length disagree"
    );
    if let Some(h) = first {
        assert_eq!(
            header_bytes(&h),
            data[..HEADER_LEN],
            "re-serialising changed it"
        );
    }

    // ClientHello: an epoch-0 handshake record whose non-empty fragment starts with msg_type 1.
    let hello = record::is_client_hello(data);
    if hello {
        let h = first.expect("a ClientHello without a whole record");
        assert_eq!((h.content_type, h.epoch), (ContentType::Handshake, 0));
        assert!(h.length > 0, "an empty fragment has no handshake type");
        assert_eq!(data.get(HEADER_LEN), Some(&1));
    }
    if let Some(h) = first {
        if h.content_type == ContentType::Handshake && h.epoch == 0 && h.length > 0 {
            assert_eq!(hello, data[HEADER_LEN] == 1, "a ClientHello missed");
        }
    }

    let seen = walk(data);
    assert_eq!(seen.first().map(|&(_, h)| h), first);
    let Some(&(last_at, last)) = seen.last() else {
        return Outcome::Rejected;
    };
    // Without its last byte the last record is incomplete: it and only it is lost.
    let end = last_at + HEADER_LEN + usize::from(last.length);
    let shorter = walk(&data[..end - 1]);
    assert_eq!(shorter.len(), seen.len() - 1);
    assert!(shorter.iter().zip(&seen).all(|(a, b)| a == b));
    Outcome::Checked
}
