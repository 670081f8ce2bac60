//! Properties of the DTLS record header parser (RFC 6347 §4.1): arbitrary bytes never make it
//! panic, and well-formed records built from arbitrary fields parse back to those fields, one
//! after another in a datagram.

use proptest::prelude::*;
use tern_tls::record::{self, ContentType, RecordHeader, HEADER_LEN};

/// One record's fields, with its fragment.
#[derive(Debug, Clone)]
struct Fields {
    content_type: u8,
    version: u16,
    epoch: u16,
    sequence: u64,
    fragment: Vec<u8>,
}

impl Fields {
    /// The record as it goes on the wire.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![self.content_type];
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes()[2..]);
        out.extend_from_slice(&(self.fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.fragment);
        out
    }

    /// The header the parser should give for it.
    fn header(&self) -> RecordHeader {
        RecordHeader {
            content_type: match self.content_type {
                20 => ContentType::ChangeCipherSpec,
                21 => ContentType::Alert,
                22 => ContentType::Handshake,
                23 => ContentType::ApplicationData,
                other => ContentType::Other(other),
            },
            version: self.version,
            epoch: self.epoch,
            sequence: self.sequence,
            length: self.fragment.len() as u16,
        }
    }
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        prop_oneof![20u8..=23, any::<u8>()],
        prop_oneof![Just(record::DTLS1_2), Just(0xfeff), any::<u16>()],
        any::<u16>(),
        0u64..1 << 48,
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(
            |(content_type, version, epoch, sequence, fragment)| Fields {
                content_type,
                version,
                epoch,
                sequence,
                fragment,
            },
        )
}

proptest! {
    /// Arbitrary bytes: no panic, and whatever is found lies inside the datagram.
    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let first = RecordHeader::parse(&data);
        if let Some(h) = first {
            prop_assert!(HEADER_LEN + usize::from(h.length) <= data.len());
            prop_assert!(h.sequence < 1 << 48);
        }
        let hello = record::is_client_hello(&data);
        prop_assert!(!hello || first.is_some());
        let mut total = 0;
        let mut count = 0;
        for (h, r) in record::records(&data) {
            prop_assert_eq!(r.len(), HEADER_LEN + usize::from(h.length));
            prop_assert_eq!(&data[total..total + r.len()], r);
            total += r.len();
            count += 1;
        }
        prop_assert!(total <= data.len());
        prop_assert!(count <= data.len() / HEADER_LEN);
        prop_assert_eq!(count == 0, first.is_none());
    }

    /// A record built from arbitrary fields parses back to them, whatever follows it.
    #[test]
    fn a_built_header_parses_back(
        f in fields(),
        trailing in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let mut bytes = f.to_bytes();
        let len = bytes.len();
        bytes.extend_from_slice(&trailing);
        prop_assert_eq!(RecordHeader::parse(&bytes), Some(f.header()));
        // One byte short of its fragment, it does not parse.
        prop_assert_eq!(RecordHeader::parse(&bytes[..len - 1]), None);
        let hello = f.content_type == 22 && f.epoch == 0 && f.fragment.first() == Some(&1);
        if !f.fragment.is_empty() {
            prop_assert_eq!(record::is_client_hello(&bytes), hello);
        }
    }

    /// Several records in one datagram come back in order, each with its own bytes; a
    /// truncated one at the end is left out.
    #[test]
    fn records_come_back_in_order(
        list in proptest::collection::vec(fields(), 0..5),
        cut in 1usize..HEADER_LEN + 80,
        truncated in fields(),
    ) {
        let mut datagram = Vec::new();
        let mut want = Vec::new();
        for f in &list {
            let bytes = f.to_bytes();
            want.push((f.header(), bytes.clone()));
            datagram.extend_from_slice(&bytes);
        }
        let tail = truncated.to_bytes();
        datagram.extend_from_slice(&tail[..cut.min(tail.len() - 1)]);
        let got: Vec<(RecordHeader, Vec<u8>)> =
            record::records(&datagram).map(|(h, r)| (h, r.to_vec())).collect();
        prop_assert_eq!(got, want);
    }
}
