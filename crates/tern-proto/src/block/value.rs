//! The Block1/Block2 option value (RFC 7959 §2.2): NUM, M and SZX packed into an unsigned
//! integer of 0–3 bytes, and the BERT size exponent of RFC 8323 §6.

use std::fmt;

use crate::message::Options;
use crate::option::{encode_uint, OptionNumber, UintBytes};

/// The largest block number a 3-byte option value can carry (2^20 − 1).
pub const MAX_NUM: u32 = (1 << 20) - 1;

/// The largest size exponent of a real block size (6: 1024 bytes).
pub const MAX_SZX: u8 = 6;

/// The size exponent reserved for BERT (RFC 8323 §6): valid only over reliable transports.
pub const BERT_SZX: u8 = 7;

/// Why a block option value cannot be decoded or built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BlockValueError {
    /// The option value is longer than 3 bytes.
    #[error("a block option value has at most 3 bytes, not {0}")]
    TooLong(usize),
    /// A block number above 2^20 − 1.
    #[error("block number {0} exceeds 2^20 - 1")]
    NumTooLarge(u64),
    /// A size exponent above 7.
    #[error("SZX {0} is out of range 0..=7")]
    Szx(u8),
}

/// One Block1 or Block2 option value: block number, more flag and size exponent.
///
/// Built only through checked constructors, so that [`encode`](Self::encode) cannot fail.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockValue {
    num: u32,
    more: bool,
    szx: u8,
}

impl fmt::Debug for BlockValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for BlockValue {
    /// The RFC's notation `NUM/M/size`, e.g. `3/1/1024` (`BERT` for SZX 7).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/", self.num, u8::from(self.more))?;
        if self.is_bert() {
            f.write_str("BERT")
        } else {
            write!(f, "{}", self.size())
        }
    }
}

impl BlockValue {
    /// A value from its fields; NUM must be at most [`MAX_NUM`] and SZX at most 7.
    pub fn new(num: u32, more: bool, szx: u8) -> Result<Self, BlockValueError> {
        if num > MAX_NUM {
            return Err(BlockValueError::NumTooLarge(u64::from(num)));
        }
        if szx > BERT_SZX {
            return Err(BlockValueError::Szx(szx));
        }
        Ok(BlockValue { num, more, szx })
    }

    /// Block 0 with M=0 and size exponent `szx` (at most 6): what a client puts in its first
    /// request to ask for a response block size, or a Block1 of a body that fits one block.
    pub fn initial(szx: u8) -> Self {
        BlockValue {
            num: 0,
            more: false,
            szx: szx.min(MAX_SZX),
        }
    }

    /// Block `num` of the largest power-of-two size in 16..=1024 not above `size` (a preferred
    /// size such as an MTU budget: 1000 gives 512).
    pub fn with_size(num: u32, more: bool, size: usize) -> Result<Self, BlockValueError> {
        Self::new(num, more, szx_for_size(size))
    }

    /// The block of `size` bytes (rounded down to a power of two in 16..=1024) that starts at
    /// byte `offset`, rounded down to a block boundary; fails when its number exceeds
    /// [`MAX_NUM`].
    pub fn at_offset(offset: u64, more: bool, size: usize) -> Result<Self, BlockValueError> {
        let szx = szx_for_size(size);
        let num = offset / size_of_szx(szx) as u64;
        let num = u32::try_from(num)
            .ok()
            .filter(|n| *n <= MAX_NUM)
            .ok_or(BlockValueError::NumTooLarge(num))?;
        Ok(BlockValue { num, more, szx })
    }

    /// Decodes an option value (an unsigned integer of 0–3 bytes; leading zeros accepted).
    pub fn decode(value: &[u8]) -> Result<Self, BlockValueError> {
        if value.len() > 3 {
            return Err(BlockValueError::TooLong(value.len()));
        }
        let v = value.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
        Ok(BlockValue {
            num: v >> 4,
            more: v & 0x8 != 0,
            szx: (v & 0x7) as u8,
        })
    }

    /// The option value in minimal form (0–3 bytes).
    pub fn encode(&self) -> UintBytes {
        encode_uint(self.to_uint())
    }

    /// The value as the integer the option carries.
    pub fn to_uint(&self) -> u32 {
        (self.num << 4) | (u32::from(self.more) << 3) | u32::from(self.szx)
    }

    /// The block number.
    pub fn num(&self) -> u32 {
        self.num
    }

    /// Whether more blocks follow (descriptive use) or the server waits for more (Block1 in a
    /// 2.31 response).
    pub fn more(&self) -> bool {
        self.more
    }

    /// The size exponent: 0–6 for 16–1024 bytes, 7 for BERT.
    pub fn szx(&self) -> u8 {
        self.szx
    }

    /// SZX 7: BERT (RFC 8323 §6), only valid over reliable transports. NUM then counts units
    /// of 1024 bytes and a block's payload may be any multiple of 1024; what that means for a
    /// transfer is the caller's business.
    pub fn is_bert(&self) -> bool {
        self.szx == BERT_SZX
    }

    /// The block size in bytes, 2^(SZX+4); for BERT, the 1024-byte unit NUM counts in.
    pub fn size(&self) -> usize {
        size_of_szx(self.szx)
    }

    /// The byte offset of the block's first byte: NUM × size.
    pub fn offset(&self) -> u64 {
        u64::from(self.num) * self.size() as u64
    }

    /// The same block with another more flag.
    pub fn with_more(self, more: bool) -> Self {
        BlockValue { more, ..self }
    }

    /// The same NUM and more flag with another size exponent (at most 7).
    pub(crate) fn with_szx(self, szx: u8) -> Self {
        BlockValue {
            szx: szx.min(BERT_SZX),
            ..self
        }
    }

    /// Reads option `number` (Block1 or Block2): `Ok(None)` when absent.
    pub fn read(options: &Options, number: OptionNumber) -> Result<Option<Self>, BlockValueError> {
        options.get(number).map(Self::decode).transpose()
    }

    /// Sets option `number` (Block1 or Block2) to this value, replacing any other.
    pub fn write(&self, options: &mut Options, number: OptionNumber) {
        options.set(number, self.encode().as_ref());
    }
}

/// The block size of a size exponent: 2^(SZX+4) for 0..=6; 1024 (BERT's unit) for 7 and above.
pub fn size_of_szx(szx: u8) -> usize {
    16usize << szx.min(MAX_SZX)
}

/// The exponent of the largest power-of-two block size in 16..=1024 not above `size`
/// (sizes below 16 give 0, above 1024 give 6).
pub fn szx_for_size(size: usize) -> u8 {
    let mut szx = 0;
    while szx < MAX_SZX && size_of_szx(szx + 1) <= size {
        szx += 1;
    }
    szx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_7959_examples() {
        // §2.2: a zero-length value is NUM 0, M 0, SZX 0.
        let zero = BlockValue::decode(&[]).unwrap();
        assert_eq!(
            (zero.num(), zero.more(), zero.szx(), zero.size()),
            (0, false, 0, 16)
        );
        assert_eq!(zero.encode().as_ref(), &[] as &[u8]);
        // 2:0/1/128 is 0x0b; 2:1/0/128 is 0x13.
        let b = BlockValue::new(0, true, 3).unwrap();
        assert_eq!(b.encode().as_ref(), &[0x0b]);
        assert_eq!(b.to_string(), "0/1/128");
        let b = BlockValue::new(1, false, 3).unwrap();
        assert_eq!(b.encode().as_ref(), &[0x13]);
        assert_eq!(b.offset(), 128);
        // The largest value takes three bytes.
        let b = BlockValue::new(MAX_NUM, true, 6).unwrap();
        assert_eq!(b.encode().as_ref(), &[0xff, 0xff, 0xfe]);
        assert_eq!(BlockValue::decode(&[0xff, 0xff, 0xfe]), Ok(b));
        assert_eq!(b.offset(), u64::from(MAX_NUM) * 1024);
    }

    #[test]
    fn hostile_values_are_errors() {
        assert_eq!(
            BlockValue::decode(&[0, 0, 0, 1]),
            Err(BlockValueError::TooLong(4))
        );
        assert_eq!(
            BlockValue::new(MAX_NUM + 1, false, 0),
            Err(BlockValueError::NumTooLarge(u64::from(MAX_NUM) + 1))
        );
        assert_eq!(BlockValue::new(0, false, 8), Err(BlockValueError::Szx(8)));
        // Leading zero bytes are tolerated.
        assert_eq!(
            BlockValue::decode(&[0, 0, 0x13]),
            BlockValue::new(1, false, 3)
        );
    }

    #[test]
    fn bert_is_accepted_and_flagged() {
        let b = BlockValue::decode(&[0x2f]).unwrap();
        assert!(b.is_bert() && b.more());
        assert_eq!((b.num(), b.size(), b.offset()), (2, 1024, 2048));
        assert_eq!(b.to_string(), "2/1/BERT");
        assert!(!BlockValue::new(0, false, 6).unwrap().is_bert());
    }

    #[test]
    fn sizes_round_down_to_a_power_of_two() {
        assert_eq!(szx_for_size(0), 0);
        assert_eq!(szx_for_size(16), 0);
        assert_eq!(szx_for_size(31), 0);
        assert_eq!(szx_for_size(32), 1);
        assert_eq!(szx_for_size(1000), 5);
        assert_eq!(szx_for_size(1024), 6);
        assert_eq!(szx_for_size(usize::MAX), 6);
        assert_eq!(
            BlockValue::with_size(3, true, 1000),
            BlockValue::new(3, true, 5)
        );
        assert_eq!(BlockValue::with_size(0, false, 5000).unwrap().size(), 1024);
        let b = BlockValue::at_offset(4096, true, 1000).unwrap();
        assert_eq!((b.num(), b.szx(), b.offset()), (8, 5, 4096));
        // An offset that is not on a boundary rounds down.
        assert_eq!(BlockValue::at_offset(100, false, 64).unwrap().offset(), 64);
        assert!(BlockValue::at_offset(u64::from(MAX_NUM + 1) * 16, false, 16).is_err());
    }

    #[test]
    fn read_and_write_options() {
        let mut o = Options::new();
        assert_eq!(BlockValue::read(&o, OptionNumber::BLOCK2), Ok(None));
        let b = BlockValue::new(5, true, 2).unwrap();
        b.write(&mut o, OptionNumber::BLOCK2);
        assert_eq!(BlockValue::read(&o, OptionNumber::BLOCK2), Ok(Some(b)));
        assert_eq!(BlockValue::read(&o, OptionNumber::BLOCK1), Ok(None));
        o.set(OptionNumber::BLOCK1, vec![1, 2, 3, 4]);
        assert!(BlockValue::read(&o, OptionNumber::BLOCK1).is_err());
    }
}
