//! The OSCORE option value (RFC 8613 §6.1): flag byte, Partial IV, kid context, kid.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+---------------------+------------------+---------+
//! |0 0 0|h|k|  n  | Partial IV (n bytes) | s (1 byte) | kid context (s bytes) | kid (rest) |
//! +-+-+-+-+-+-+-+-+---------------------+------------------+---------+
//! ```

/// The decoded OSCORE option.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OscoreOption {
    /// Partial IV (1–5 bytes) if present.
    pub partial_iv: Option<Vec<u8>>,
    /// kid context if present (the h flag).
    pub kid_context: Option<Vec<u8>>,
    /// kid if present (the k flag; may be empty, which is not the same as absent).
    pub kid: Option<Vec<u8>>,
}

/// Why an OSCORE option value is malformed (answered 4.02 Bad Option, §8.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    /// Reserved flag bits set, or n = 6 or 7.
    #[error("reserved bits set in the OSCORE option's flag byte {0:#04x}")]
    Reserved(u8),
    /// The value ends before the Partial IV or the kid context it announces.
    #[error("the OSCORE option is truncated")]
    Truncated,
    /// A Partial IV longer than 5 bytes, or a kid context longer than 255.
    #[error("a field of the OSCORE option is too long")]
    TooLong,
}

const FLAG_H: u8 = 0x10;
const FLAG_K: u8 = 0x08;
const MASK_N: u8 = 0x07;
const RESERVED: u8 = 0xe0;

impl OscoreOption {
    /// Parses an option value.
    pub fn decode(value: &[u8]) -> Result<Self, OptionError> {
        let Some((&flags, mut rest)) = value.split_first() else {
            return Ok(OscoreOption::default());
        };
        if flags & RESERVED != 0 || flags & MASK_N > 5 {
            return Err(OptionError::Reserved(flags));
        }
        let n = usize::from(flags & MASK_N);
        let mut option = OscoreOption::default();
        if n > 0 {
            let (piv, after) = rest.split_at_checked(n).ok_or(OptionError::Truncated)?;
            option.partial_iv = Some(piv.to_vec());
            rest = after;
        }
        if flags & FLAG_H != 0 {
            let (&s, after) = rest.split_first().ok_or(OptionError::Truncated)?;
            let (context, after) = after
                .split_at_checked(usize::from(s))
                .ok_or(OptionError::Truncated)?;
            option.kid_context = Some(context.to_vec());
            rest = after;
        }
        if flags & FLAG_K != 0 {
            option.kid = Some(rest.to_vec());
        } else if !rest.is_empty() {
            // Bytes that no flag accounts for.
            return Err(OptionError::Truncated);
        }
        Ok(option)
    }

    /// The option value; empty when no field is present (§6.1).
    pub fn encode(&self) -> Result<Vec<u8>, OptionError> {
        let piv = self.partial_iv.as_deref().unwrap_or_default();
        if piv.len() > 5 || self.kid_context.as_ref().is_some_and(|c| c.len() > 255) {
            return Err(OptionError::TooLong);
        }
        let mut flags = piv.len() as u8;
        if self.kid_context.is_some() {
            flags |= FLAG_H;
        }
        if self.kid.is_some() {
            flags |= FLAG_K;
        }
        if flags == 0 {
            return Ok(Vec::new());
        }
        let mut out = vec![flags];
        out.extend_from_slice(piv);
        if let Some(context) = &self.kid_context {
            out.push(context.len() as u8);
            out.extend_from_slice(context);
        }
        if let Some(kid) = &self.kid {
            out.extend_from_slice(kid);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn appendix_c_values() {
        let c4 = OscoreOption {
            partial_iv: Some(vec![0x14]),
            kid: Some(vec![]),
            kid_context: None,
        };
        assert_eq!(c4.encode().unwrap(), vec![0x09, 0x14]);
        assert_eq!(OscoreOption::decode(&[0x09, 0x14]).unwrap(), c4);
        let c6 = OscoreOption::decode(&[
            0x19, 0x14, 0x08, 0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3,
        ])
        .unwrap();
        assert_eq!(
            c6.kid_context.as_deref(),
            Some(&[0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3][..])
        );
        assert_eq!(c6.kid.as_deref(), Some(&[][..]));
        assert_eq!(OscoreOption::default().encode().unwrap(), Vec::<u8>::new());
        assert_eq!(
            OscoreOption::decode(&[0x01, 0x00]).unwrap().partial_iv,
            Some(vec![0])
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        assert_eq!(
            OscoreOption::decode(&[0x06, 1, 2, 3, 4, 5, 6]),
            Err(OptionError::Reserved(0x06))
        );
        assert_eq!(
            OscoreOption::decode(&[0x80]),
            Err(OptionError::Reserved(0x80))
        );
        assert_eq!(
            OscoreOption::decode(&[0x03, 1]),
            Err(OptionError::Truncated)
        );
        assert_eq!(OscoreOption::decode(&[0x10]), Err(OptionError::Truncated));
        assert_eq!(
            OscoreOption::decode(&[0x10, 4, 1]),
            Err(OptionError::Truncated)
        );
        assert_eq!(
            OscoreOption::decode(&[0x01, 1, 2]),
            Err(OptionError::Truncated)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(value in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = OscoreOption::decode(&value);
        }

        #[test]
        fn encode_then_decode_is_identity(
            piv in proptest::option::of(proptest::collection::vec(any::<u8>(), 1..=5)),
            context in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=255)),
            kid in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..=7)),
        ) {
            let o = OscoreOption { partial_iv: piv, kid_context: context, kid };
            prop_assert_eq!(OscoreOption::decode(&o.encode().unwrap()).unwrap(), o);
        }
    }
}
