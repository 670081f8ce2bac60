// The checks of the `options` fuzz target (CoAP options: RFC 7252 §3.1, §5.4, §5.10, §12.3;
// Block1/Block2 values, RFC 7959 §2.2), shared by `fuzz/fuzz_targets/options.rs` (through
// `include!`) and the stable replay `crates/tern-proto/tests/fuzz_regressions.rs`.
//
// Input: read twice. As the options area of a message (options, then perhaps a payload marker
// and payload) it goes to the decoder; read as records `[number: u16][length: u16][value]`
// (big-endian, the value cut to what is left) it builds options, in any order, for the encoder.
// Checks:
// - `OptionIter` never panics, yields values that lie in the input in wire order, ends for good
//   at its first error, and agrees with a reading of §3.1 written here independently (numbers,
//   values, where the options end, which error), with `scan_options`, and with
//   `Datagram::new_checked` and `Message::decode` of a message carrying these options;
// - decode → encode gives the input's bytes (a delta or length has exactly one encoding),
//   `option_len` and `Options::encoded_len` add up to what was read, and decode → encode →
//   decode gives the same options;
// - per option: critical/elective/unsafe/NoCacheKey from the number (§5.4.6), the registry
//   entry and its value check, uint decoding and the minimal re-encoding, Block1/Block2 NUM/M/SZX
//   decoding and re-encoding, Content-Format and Accept values and their media types, string
//   values looked up as option and Content-Format names;
// - options pushed in any order come out sorted (stable within a number), encode to bytes that
//   decode back to them, and `get`, `get_all`, `get_uint`, `contains`, `set_uint`, `remove`
//   agree with the list.

use tern_proto::block::{BlockValue, BlockValueError};
use tern_proto::option::{decode_uint, encode_uint, ValueError, ValueFormat, REGISTRY};
use tern_proto::wire::{
    option_len, scan_options, write_option, Datagram, FormatError, OptionIter,
    MAX_OPTION_VALUE_LEN, PAYLOAD_MARKER,
};
use tern_proto::{ContentFormat, Message, OptionNumber, Options};

/// What a check did with an input.
#[derive(Debug, PartialEq, Eq)]
#[allow(dead_code)]
pub enum Outcome {
    /// The options area is malformed or holds no option (fine for a fuzz input, not a seed).
    Rejected,
    /// At least one option decoded, the area is well formed, and every check held.
    Checked,
}

/// Records of the encoder pass at most (each costs an insertion into a sorted list).
const MAX_BUILT: usize = 64;

/// The options area read by RFC 7252 §3.1 alone, independently of `OptionIter`: each option's
/// number and value range, and how the area ends: `Ok(n)` when the options take the first `n`
/// bytes (the rest is empty or starts with the payload marker), or the first option's error.
#[allow(clippy::type_complexity)]
fn reference(bytes: &[u8]) -> (Vec<(u16, usize, usize)>, Result<usize, FormatError>) {
    // A delta or length from its nibble and the bytes that follow at `*at`.
    fn field(bytes: &[u8], nibble: u8, at: &mut usize) -> Result<u32, FormatError> {
        let extension = match nibble {
            13 => 1,
            14 => 2,
            15 => return Err(FormatError::ReservedNibble),
            _ => return Ok(u32::from(nibble)),
        };
        let ext = bytes
            .get(*at..*at + extension)
            .ok_or(FormatError::TruncatedOption)?;
        *at += extension;
        Ok(match *ext {
            [b] => 13 + u32::from(b),
            [hi, lo] => 269 + (u32::from(hi) << 8 | u32::from(lo)),
            _ => unreachable!("one or two extension bytes"),
        })
    }
    let mut options = Vec::new();
    let (mut at, mut number) = (0usize, 0u32);
    loop {
        let Some(&first) = bytes.get(at) else {
            return (options, Ok(at));
        };
        if first == PAYLOAD_MARKER {
            return (options, Ok(at));
        }
        at += 1;
        let delta = match field(bytes, first >> 4, &mut at) {
            Ok(d) => d,
            Err(e) => return (options, Err(e)),
        };
        let len = match field(bytes, first & 0x0f, &mut at) {
            Ok(l) => l as usize,
            Err(e) => return (options, Err(e)),
        };
        number += delta;
        if number > 65535 {
            return (options, Err(FormatError::OptionNumberOverflow));
        }
        if bytes.len() - at < len {
            return (options, Err(FormatError::TruncatedOption));
        }
        options.push((number as u16, at, at + len));
        at += len;
    }
}

/// An unsigned integer value without its leading zero bytes.
fn minimal(value: &[u8]) -> &[u8] {
    let zeros = value.iter().take_while(|&&b| b == 0).count();
    &value[zeros..]
}

/// Where `part` starts in `whole`; panics when it does not lie inside it.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    let start = (part.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
    assert!(
        start <= whole.len() && part.len() <= whole.len() - start,
        "a value outside the input"
    );
    start
}

/// The checks of an option number: classification, registry entry, name.
fn check_number(number: OptionNumber) {
    // RFC 7252 §5.4.6: Critical = (onum & 1), UnSafe = (onum & 2),
    // NoCacheKey = ((onum & 0x1e) == 0x1c).
    let n = number.0;
    assert_eq!(number.is_critical(), n & 1 == 1, "{number:?}");
    assert_eq!(number.is_elective(), !number.is_critical(), "{number:?}");
    assert_eq!(number.is_unsafe(), n & 2 == 2, "{number:?}");
    assert_eq!(number.is_no_cache_key(), n & 0x1e == 0x1c, "{number:?}");

    match number.def() {
        Some(def) => {
            assert_eq!(def.number, number);
            assert_eq!(number.to_string(), def.name);
            assert_eq!(OptionNumber::from_name(def.name), Some(number));
            assert!(def.min_len <= def.max_len && def.max_len <= MAX_OPTION_VALUE_LEN);
        }
        None => {
            assert!(REGISTRY.iter().all(|d| d.number != number));
            assert_eq!(number.to_string(), format!("Option{n}"));
        }
    }
    let _ = format!("{number:?}");
}

/// The checks of one option's value: against its registry entry, and as each typed value.
fn check_value(number: OptionNumber, value: &[u8]) {
    if let Some(def) = number.def() {
        let in_range = (def.min_len..=def.max_len).contains(&value.len());
        match def.check(value) {
            Ok(()) => {
                assert!(in_range, "{number:?}: {} bytes accepted", value.len());
                if def.format == ValueFormat::String {
                    assert!(std::str::from_utf8(value).is_ok());
                }
                if def.format == ValueFormat::Empty {
                    assert!(value.is_empty());
                }
                if def.format == ValueFormat::Uint {
                    assert!(decode_uint(value).is_some(), "{number:?}: a long uint");
                }
            }
            Err(ValueError::Length {
                option,
                len,
                min,
                max,
            }) => {
                assert_eq!((option, len), (number, value.len()));
                assert_eq!((min, max), (def.min_len, def.max_len));
                assert!(!in_range, "{number:?}: {len} bytes refused");
            }
            Err(ValueError::NotUtf8 { option }) => {
                assert_eq!(option, number);
                assert!(in_range && def.format == ValueFormat::String);
                assert!(std::str::from_utf8(value).is_err());
            }
        }
        // String values read as names: an option or Content-Format found by name is registered.
        // (No name is longer than 64 bytes.)
        if def.format == ValueFormat::String && value.len() <= 64 {
            if let Ok(text) = std::str::from_utf8(value) {
                if let Some(found) = OptionNumber::from_name(text) {
                    let def = found
                        .def()
                        .expect("a name lookup gives a registered option");
                    assert!(def.name.eq_ignore_ascii_case(text));
                }
                match (text.parse::<u16>(), ContentFormat::parse(text)) {
                    (Ok(n), parsed) => assert_eq!(parsed, Some(ContentFormat(n))),
                    (Err(_), Some(cf)) => assert!(cf.media_type().is_some(), "{text:?}"),
                    (Err(_), None) => {}
                }
            }
        }
    }

    // Unsigned integers (§3.2): at most four bytes, leading zeros accepted, minimal re-encoding.
    match decode_uint(value) {
        Some(v) => {
            assert!(value.len() <= 4);
            assert_eq!(encode_uint(v).as_ref(), minimal(value));
            assert_eq!(decode_uint(encode_uint(v).as_ref()), Some(v));
        }
        None => assert!(value.len() > 4),
    }

    // Block1/Block2 (RFC 7959 §2.2): NUM, M and SZX in 0–3 bytes.
    match BlockValue::decode(value) {
        Ok(b) => {
            assert!(value.len() <= 3);
            assert_eq!(BlockValue::new(b.num(), b.more(), b.szx()), Ok(b));
            assert_eq!(Some(b.to_uint()), decode_uint(value));
            assert_eq!(b.encode().as_ref(), minimal(value));
            assert_eq!(BlockValue::decode(b.encode().as_ref()), Ok(b));
            assert_eq!(b.with_more(!b.more()).with_more(b.more()), b);
            assert_eq!(b.is_bert(), b.szx() == 7);
            assert!(b.size().is_power_of_two() && (16..=1024).contains(&b.size()));
            assert_eq!(b.offset(), u64::from(b.num()) * b.size() as u64);
            if number == OptionNumber::BLOCK1 || number == OptionNumber::BLOCK2 {
                let _ = b.to_string();
            }
        }
        Err(e) => {
            assert!(value.len() > 3);
            assert_eq!(e, BlockValueError::TooLong(value.len()));
        }
    }

    // Content-Format and Accept (§12.3): a uint of at most 16 bits.
    if number == OptionNumber::CONTENT_FORMAT || number == OptionNumber::ACCEPT {
        if let Some(cf) = decode_uint(value).and_then(|v| u16::try_from(v).ok()) {
            let cf = ContentFormat(cf);
            assert_eq!(ContentFormat::parse(&cf.0.to_string()), Some(cf));
            match cf.media_type() {
                Some(media) => {
                    assert_eq!(ContentFormat::parse(media), Some(cf));
                    assert_eq!(cf.to_string(), media);
                }
                None => assert_eq!(cf.to_string(), cf.0.to_string()),
            }
            let _ = (cf.is_text(), format!("{cf:?}"));
        }
    }
}

/// `Options`' accessors against the plain list (in wire order) it should hold.
fn check_accessors(options: &Options, list: &[(OptionNumber, &[u8])]) {
    assert_eq!(options.len(), list.len());
    assert_eq!(options.is_empty(), list.is_empty());
    let held: Vec<(OptionNumber, &[u8])> = options
        .iter()
        .map(|o| (o.number, o.value.as_slice()))
        .collect();
    assert_eq!(held, list, "the options differ from the list");
    // `list` is in wire order, so each number's instances are one run of it.
    for run in list.chunk_by(|a, b| a.0 == b.0) {
        let number = run[0].0;
        let values: Vec<&[u8]> = run.iter().map(|&(_, v)| v).collect();
        assert_eq!(options.get_all(number).collect::<Vec<_>>(), values);
        assert_eq!(options.get(number), values.first().copied());
        assert!(options.contains(number));
        assert_eq!(options.get_uint(number), decode_uint(values[0]));
    }
    for number in [OptionNumber::BLOCK1, OptionNumber::BLOCK2] {
        let want = options.get(number).map(BlockValue::decode).transpose();
        assert_eq!(BlockValue::read(options, number), want);
    }
}

/// The encoder pass: options built from records, in the order given.
fn check_built(data: &[u8]) {
    let mut built: Vec<(OptionNumber, &[u8])> = Vec::new();
    let mut rest = data;
    while rest.len() >= 4 && built.len() < MAX_BUILT {
        let number = OptionNumber(u16::from_be_bytes([rest[0], rest[1]]));
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]])).min(rest.len() - 4);
        let (value, tail) = rest[4..].split_at(len);
        built.push((number, value));
        rest = tail;
    }
    let mut options = Options::new();
    for &(number, value) in &built {
        options.push(number, value);
    }
    // Sorted by number, and stable: instances of a number keep the order they were pushed in.
    let mut sorted = built.clone();
    sorted.sort_by_key(|&(number, _)| number);
    check_accessors(&options, &sorted);

    let mut encoded = Vec::new();
    options.encode(&mut encoded);
    assert_eq!(encoded.len(), options.encoded_len());
    let mut by_hand = Vec::new();
    let mut previous = 0;
    for &(number, value) in &sorted {
        write_option(&mut by_hand, previous, number.0, value);
        previous = number.0;
    }
    assert_eq!(encoded, by_hand);
    assert_eq!(scan_options(&encoded), Ok(encoded.len()));
    let decoded: Vec<(OptionNumber, &[u8])> = OptionIter::new(&encoded)
        .map(|o| o.expect("encoded options decode"))
        .collect();
    assert_eq!(decoded, sorted, "encode → decode changed the options");

    // set_uint replaces every instance by one minimal uint; remove takes them all.
    if let Some(&(number, value)) = built.first() {
        let v = decode_uint(&value[..value.len().min(4)]).expect("at most four bytes");
        let mut changed = options.clone();
        changed.set_uint(number, v);
        assert_eq!(changed.get_uint(number), Some(v));
        assert_eq!(changed.get_all(number).count(), 1);
        assert_eq!(changed.get(number), Some(encode_uint(v).as_ref()));
        let others = sorted.iter().filter(|(n, _)| *n != number).count();
        assert_eq!(changed.len(), others + 1);
        changed.remove(number);
        assert!(!changed.contains(number));
        assert_eq!(changed.len(), others);
    }
}

/// Runs the checks; panics when an invariant breaks.
pub fn check(data: &[u8]) -> Outcome {
    check_built(data);

    // The decoder, item by item.
    let (want, end) = reference(data);
    let mut iter = OptionIter::new(data);
    let mut seen: Vec<(OptionNumber, &[u8])> = Vec::new();
    let mut error = None;
    for item in iter.by_ref() {
        assert!(
            error.is_none(),
            "an item after the error {error:?}: {item:?}"
        );
        match item {
            Ok(option) => seen.push(option),
            Err(e) => error = Some(e),
        }
        assert!(seen.len() <= data.len(), "more options than bytes");
    }
    assert!(iter.next().is_none(), "the iterator went on after ending");
    assert_eq!(
        error,
        end.err(),
        "the iterator and §3.1 disagree on the error"
    );
    assert_eq!(seen.len(), want.len(), "the iterator and §3.1 disagree");
    let mut previous = None;
    for (&(number, value), &(n, start, stop)) in seen.iter().zip(&want) {
        assert_eq!(number.0, n, "the iterator and §3.1 disagree on a number");
        assert!(Some(number) >= previous, "option numbers went down");
        if previous != Some(number) {
            check_number(number);
        }
        previous = Some(number);
        assert_eq!(offset_in(data, value), start, "a value from elsewhere");
        assert_eq!(value.len(), stop - start);
        check_value(number, value);
    }

    // Where the options end: scan_options says where the payload starts.
    let scanned = scan_options(data);
    match end {
        Err(e) => assert_eq!(scanned, Err(e)),
        Ok(n) if n == data.len() => assert_eq!(scanned, Ok(n)),
        Ok(n) => {
            assert_eq!(data[n], PAYLOAD_MARKER);
            let want = if n + 1 == data.len() {
                Err(FormatError::EmptyPayload)
            } else {
                Ok(n + 1)
            };
            assert_eq!(scanned, want);
        }
    }

    // decode → encode: the bytes of the options read, exactly; option_len adds up to them.
    let read = want.last().map_or(0, |&(_, _, stop)| stop);
    let mut encoded = Vec::new();
    let (mut previous, mut total) = (0, 0);
    for &(number, value) in &seen {
        write_option(&mut encoded, previous, number.0, value);
        total += option_len(previous, number.0, value.len());
        previous = number.0;
    }
    assert_eq!(encoded, &data[..read], "re-encoding changed the bytes");
    assert_eq!(total, read);
    let mut options = Options::new();
    for &(number, value) in &seen {
        options.push(number, value);
    }
    check_accessors(&options, &seen);
    let mut again = Vec::new();
    options.encode(&mut again);
    assert_eq!(again, encoded);
    assert_eq!(options.encoded_len(), read);
    // … → decode: the same options.
    let decoded: Vec<(OptionNumber, &[u8])> = OptionIter::new(&again)
        .map(|o| o.expect("re-encoded options decode"))
        .collect();
    assert_eq!(
        decoded, seen,
        "decode → encode → decode changed the options"
    );

    // The same options in a message (CON GET, MID 0, no token): both message decoders agree.
    let mut datagram = vec![0x40, 0x01, 0x00, 0x00];
    datagram.extend_from_slice(data);
    let view = Datagram::new_checked(&datagram[..]);
    let owned = Message::decode(&datagram);
    let payload_start = match scanned {
        Ok(start) => start,
        Err(e) => {
            assert_eq!(view.err(), Some(e));
            assert_eq!(owned.err(), Some(e));
            return Outcome::Rejected;
        }
    };
    let view = view.expect("a GET with well-formed options is a valid datagram");
    let message = owned.expect("a GET with well-formed options decodes");
    let in_view: Vec<(OptionNumber, &[u8])> = view
        .options()
        .map(|o| o.expect("options of a checked datagram"))
        .collect();
    assert_eq!(in_view, seen);
    assert_eq!(view.payload(), &data[payload_start..]);
    assert_eq!(message.payload, &data[payload_start..]);
    check_accessors(&message.options, &seen);
    let content_format = message
        .options
        .get(OptionNumber::CONTENT_FORMAT)
        .and_then(decode_uint)
        .and_then(|v| u16::try_from(v).ok())
        .map(ContentFormat);
    assert_eq!(message.content_format(), content_format);
    let _ = (message.path(), message.queries().count());
    assert_eq!(message.to_bytes().as_deref(), Ok(&datagram[..]));

    if seen.is_empty() {
        Outcome::Rejected
    } else {
        Outcome::Checked
    }
}
