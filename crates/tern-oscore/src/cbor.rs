//! The few CBOR structures OSCORE builds (RFC 8613 §3.2.1 `info`, §5.4 AAD), with `minicbor`.

use minicbor::Encoder;

use crate::algorithm::Aead;

type EncodeResult = Result<(), minicbor::encode::Error<std::convert::Infallible>>;

/// Runs `build` over a fresh buffer. Writes into a `Vec` cannot fail (their error type is
/// `Infallible`) and the items written here raise no other errors, so the error arm is never
/// taken; it yields an empty buffer rather than a panic.
fn encode(build: impl FnOnce(&mut Encoder<&mut Vec<u8>>) -> EncodeResult) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Encoder::new(&mut out);
    match build(&mut e) {
        Ok(()) => out,
        Err(_) => Vec::new(),
    }
}

/// What a derived value is for (§3.2.1 `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Derived {
    Key,
    Iv,
}

/// `info = [id, id_context / nil, alg_aead, type, L]`.
pub(crate) fn info(
    id: &[u8],
    id_context: Option<&[u8]>,
    aead: Aead,
    what: Derived,
    len: usize,
) -> Vec<u8> {
    encode(|e| {
        e.array(5)?.bytes(id)?;
        match id_context {
            Some(c) => e.bytes(c)?,
            None => e.null()?,
        };
        e.i64(aead.cose())?
            .str(match what {
                Derived::Key => "Key",
                Derived::Iv => "IV",
            })?
            .u64(len as u64)?;
        Ok(())
    })
}

/// `Enc_structure = ["Encrypt0", h'', external_aad]` with
/// `external_aad = bstr .cbor [oscore_version: 1, algorithms: [alg_aead], request_kid, request_piv, options: h'']`
/// (no Class I options are defined).
pub(crate) fn aad(aead: Aead, request_kid: &[u8], request_piv: &[u8]) -> Vec<u8> {
    let external = encode(|e| {
        e.array(5)?
            .u8(1)?
            .array(1)?
            .i64(aead.cose())?
            .bytes(request_kid)?
            .bytes(request_piv)?
            .bytes(&[])?;
        Ok(())
    });
    encode(|e| {
        e.array(3)?.str("Encrypt0")?.bytes(&[])?.bytes(&external)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn info_and_aad_match_appendix_c() {
        let a = Aead::AesCcm16_64_128;
        assert_eq!(
            info(&[], None, a, Derived::Key, 16),
            hex("8540f60a634b657910")
        );
        assert_eq!(
            info(&[0], None, a, Derived::Key, 16),
            hex("854100f60a634b657910")
        );
        assert_eq!(info(&[], None, a, Derived::Iv, 13), hex("8540f60a6249560d"));
        assert_eq!(
            info(&[1], Some(&hex("37cbf3210017a2d3")), a, Derived::Key, 16),
            hex("8541014837cbf3210017a2d30a634b657910")
        );
        assert_eq!(
            aad(a, &[], &[0x14]),
            hex("8368456e63727970743040488501810a40411440")
        );
        assert_eq!(
            aad(a, &[0], &[0x14]),
            hex("8368456e63727970743040498501810a4100411440")
        );
    }
}
