//! Property tests for the datagram codec (RFC 7252 §3): the checked view and the owned message
//! never panic on hostile bytes, and encode∘decode is the identity on valid messages.

use proptest::prelude::*;
use tern_proto::wire::{peek_header, Datagram};
use tern_proto::{Code, Message, MessageType, OptionNumber, Options, Token};

/// Exercises every accessor of the view and the owned decoder; checks that whatever decodes
/// re-encodes to exactly the same bytes (the option encoding has one form per value).
fn check_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    let _ = peek_header(bytes);
    let view = Datagram::new_checked(bytes);
    let owned = Message::decode(bytes);
    prop_assert_eq!(view.is_ok(), owned.is_ok());
    if let (Ok(d), Ok(m)) = (view, owned) {
        let _ = (d.ty(), d.code(), d.mid(), d.token(), d.payload());
        let mut count = 0;
        for item in d.options() {
            prop_assert!(item.is_ok());
            count += 1;
        }
        prop_assert_eq!(count, m.options.len());
        let again = m
            .to_bytes()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&again[..], bytes);
        prop_assert_eq!(m.encoded_len(), bytes.len());
        prop_assert_eq!(Message::decode(&again), Ok(m));
    }
    Ok(())
}

fn arb_type() -> impl Strategy<Value = MessageType> {
    (0u8..4).prop_map(MessageType::from_bits)
}

/// Any code a datagram may carry except 0.00: requests 0.01–0.31 and classes 2, 4 and 5
/// (classes 1, 3, 6 and 7 are reserved in datagrams).
fn arb_code() -> impl Strategy<Value = Code> {
    prop_oneof![
        (1u8..32).prop_map(Code),
        (prop::sample::select(vec![2u8, 4, 5]), 0u8..32).prop_map(|(c, d)| Code((c << 5) | d)),
    ]
}

fn arb_number() -> impl Strategy<Value = u16> {
    prop_oneof![
        0u16..20,
        prop::sample::select(vec![
            11u16, 12, 13, 14, 25, 26, 268, 269, 270, 281, 282, 538, 539
        ]),
        any::<u16>(),
        Just(u16::MAX),
    ]
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    let len = prop_oneof![
        0usize..16,
        prop::sample::select(vec![12usize, 13, 14, 267, 268, 269, 270, 1034]),
    ];
    (len, any::<u8>())
        .prop_map(|(len, fill)| (0..len).map(|i| fill.wrapping_add(i as u8)).collect())
}

prop_compose! {
    fn arb_message()(
        ty in arb_type(),
        code in arb_code(),
        mid in any::<u16>(),
        token in prop::collection::vec(any::<u8>(), 0..=8),
        options in prop::collection::vec((arb_number(), arb_value()), 0..8),
        payload in prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 1..64)],
    ) -> Message {
        let mut opts = Options::new();
        for (number, value) in options {
            opts.push(OptionNumber(number), value);
        }
        Message {
            ty,
            code,
            mid,
            token: Token::new(&token).unwrap_or_default(),
            options: opts,
            payload,
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
    Remove(usize),
    Set(usize, u8),
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Remove),
        (
            any::<usize>(),
            prop::sample::select(vec![0x00u8, 0x0d, 0x0e, 0x0f, 0xd0, 0xe0, 0xf0, 0xff])
        )
            .prop_map(|(i, b)| Mutation::Set(i, b)),
    ]
}

fn mutate(bytes: &mut Vec<u8>, mutation: &Mutation) {
    let len = bytes.len();
    match *mutation {
        Mutation::FlipBit(i, bit) => {
            if let Some(b) = bytes.get_mut(i % len.max(1)) {
                *b ^= 1 << bit;
            }
        }
        Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
        Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
        Mutation::Remove(i) => {
            if len > 0 {
                bytes.remove(i % len);
            }
        }
        Mutation::Set(i, v) => {
            if let Some(b) = bytes.get_mut(i % len.max(1)) {
                *b = v;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        check_bytes(&bytes)?;
    }

    #[test]
    fn header_like_bytes_never_panic(
        first in prop::sample::select(vec![0x40u8, 0x44, 0x48, 0x50, 0x60, 0x70, 0x4f]),
        code in any::<u8>(),
        rest in prop::collection::vec(
            prop_oneof![any::<u8>(), Just(0xffu8), Just(0xd0), Just(0xe0), Just(0x0d), Just(0xdd)],
            0..300,
        ),
    ) {
        let mut bytes = vec![first, code, 0x12, 0x34];
        bytes.extend(rest);
        check_bytes(&bytes)?;
    }

    #[test]
    fn mutated_messages_never_panic(
        m in arb_message(),
        mutations in prop::collection::vec(arb_mutation(), 1..6),
    ) {
        let mut bytes = m.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        for mutation in &mutations {
            mutate(&mut bytes, mutation);
            check_bytes(&bytes)?;
        }
    }

    #[test]
    fn encode_decode_round_trip(m in arb_message()) {
        let bytes = m.to_bytes().map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(bytes.len(), m.encoded_len());
        let back = Message::decode(&bytes);
        prop_assert_eq!(back.as_ref(), Ok(&m));
        let view = Datagram::new_checked(&bytes[..]).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let wire: Vec<(OptionNumber, Vec<u8>)> = view
            .options()
            .map(|o| o.map(|(n, v)| (n, v.to_vec())))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let owned: Vec<(OptionNumber, Vec<u8>)> =
            m.options.iter().map(|o| (o.number, o.value.clone())).collect();
        prop_assert_eq!(wire, owned);
        prop_assert_eq!(view.payload(), &m.payload[..]);
        prop_assert_eq!(view.token(), m.token.as_bytes());
        let again = back.map_err(|e| TestCaseError::fail(e.to_string()))?.to_bytes();
        prop_assert_eq!(again, Ok(bytes));
    }
}

#[test]
fn largest_option_value_round_trips() {
    let mut m = Message::new(MessageType::Non, Code::POST);
    m.options.push(OptionNumber(65535), vec![7u8; 65535 + 269]);
    let bytes = m.to_bytes().unwrap();
    assert_eq!(bytes.len(), m.encoded_len());
    assert_eq!(Message::decode(&bytes), Ok(m.clone()));
    m.options.push(OptionNumber(65535), vec![7u8; 65535 + 270]);
    assert!(m.to_bytes().is_err());
}

#[test]
fn empty_messages_round_trip() {
    for bits in 0..4 {
        let m = Message::new(MessageType::from_bits(bits), Code::EMPTY);
        let bytes = m.to_bytes().unwrap();
        assert_eq!(bytes.len(), 4);
        assert_eq!(Message::decode(&bytes), Ok(m));
    }
}
