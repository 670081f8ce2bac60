//! DTLS record headers (RFC 6347 §4.1), read by us rather than by OpenSSL so that datagrams can
//! be classified (handshake, application data, ClientHello) before any state is allocated, and
//! so that routing by Connection ID (RFC 9146) can come later.

/// The 13-byte DTLS 1.2 record header.
pub const HEADER_LEN: usize = 13;

/// Record content types (RFC 5246 §6.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// change_cipher_spec (20).
    ChangeCipherSpec,
    /// alert (21).
    Alert,
    /// handshake (22).
    Handshake,
    /// application_data (23).
    ApplicationData,
    /// Anything else.
    Other(u8),
}

impl ContentType {
    fn from_byte(b: u8) -> Self {
        match b {
            20 => Self::ChangeCipherSpec,
            21 => Self::Alert,
            22 => Self::Handshake,
            23 => Self::ApplicationData,
            other => Self::Other(other),
        }
    }
}

/// The fields of one record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Content type.
    pub content_type: ContentType,
    /// Protocol version, e.g. 0xfefd for DTLS 1.2.
    pub version: u16,
    /// Epoch.
    pub epoch: u16,
    /// 48-bit sequence number.
    pub sequence: u64,
    /// Length of the fragment that follows.
    pub length: u16,
}

impl RecordHeader {
    /// Parses the first record header of a datagram; `None` if too short or if the fragment
    /// runs past the datagram.
    pub fn parse(datagram: &[u8]) -> Option<Self> {
        let h = datagram.get(..HEADER_LEN)?;
        let length = u16::from_be_bytes([h[11], h[12]]);
        if datagram.len() < HEADER_LEN + usize::from(length) {
            return None;
        }
        let mut seq = [0u8; 8];
        seq[2..].copy_from_slice(&h[5..11]);
        Some(RecordHeader {
            content_type: ContentType::from_byte(h[0]),
            version: u16::from_be_bytes([h[1], h[2]]),
            epoch: u16::from_be_bytes([h[3], h[4]]),
            sequence: u64::from_be_bytes(seq),
            length,
        })
    }
}

/// Whether a datagram starts with an epoch-0 handshake record holding a ClientHello (type 1):
/// the only thing that may open a new server-side channel.
pub fn is_client_hello(datagram: &[u8]) -> bool {
    match RecordHeader::parse(datagram) {
        Some(h) => {
            h.content_type == ContentType::Handshake
                && h.epoch == 0
                && datagram.get(HEADER_LEN) == Some(&1)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_classifies() {
        // Handshake, DTLS 1.0 version on ClientHello, epoch 0, seq 0, length 2, msg type 1.
        let hello = [22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0];
        let h = RecordHeader::parse(&hello).unwrap();
        assert_eq!(
            (h.content_type, h.version, h.epoch, h.length),
            (ContentType::Handshake, 0xfeff, 0, 2)
        );
        assert!(is_client_hello(&hello));
        let mut app = hello;
        app[0] = 23;
        assert!(!is_client_hello(&app));
        assert!(RecordHeader::parse(&hello[..12]).is_none());
        assert!(
            RecordHeader::parse(&hello[..14]).is_none(),
            "fragment runs past the end"
        );
        let mut seq = hello;
        seq[5..11].copy_from_slice(&[0, 0, 0, 0, 1, 2]);
        assert_eq!(RecordHeader::parse(&seq).unwrap().sequence, 0x102);
    }
}
