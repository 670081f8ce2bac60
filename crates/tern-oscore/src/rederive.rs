//! Security context re-derivation (RFC 8613 Appendix B.2): two endpoints that share a Master
//! Secret but can no longer trust their mutable state (a client that lost its sequence number
//! or used them up, a server that lost its replay window) derive a new context with a fresh ID
//! Context made of nonces from both sides, in two request/response exchanges:
//!
//! ```text
//! client                                            server
//!   Request #1, protected with ID Context ID1  ──▶   verified with ID1 (a fresh context:
//!     (kid context: ID1)                              not acted on, as it could be a replay)
//!   Response #1 verified with R2 | ID1         ◀──   4.01 protected with R2 | ID1
//!                                                     (kid context: R2, a server nonce)
//!   Request #2, protected with R2 | R3         ──▶   R2 is one it issued: verified with
//!     (kid context: R2 | R3, R3 a client nonce)       R2 | R3, which replaces the old context
//!   Response #2 verified with R2 | R3          ◀──   protected with R2 | R3
//! ```
//!
//! The client starts with a random ID1 when it lost its own state; the server starts by
//! answering an ordinary request (ID1 is then the current ID Context, empty if none) when it
//! lost its replay window. Both sides derive every context from the unchanged Master Secret,
//! so each new key is unrelated to the old one and no nonce can repeat.
//!
//! On the wire the kid context values of the procedure are CBOR byte strings wrapping the ID
//! Context (as Californium, the other implementation of this appendix, sends them); the ID
//! Context used for derivation is the unwrapped value. Once Response #2 has arrived the client
//! sends the plain ID Context as kid context, like any other.
//!
//! The server keeps the R2 values it issued (a bounded set) instead of making them verifiable
//! without state: each R2 then admits exactly one new context, so a replayed Request #2 cannot
//! bring back a context that has since been replaced.

use std::collections::{HashSet, VecDeque};

use tern_proto::{Code, Message, MessageType, OptionNumber};

use crate::context::SecurityContext;
use crate::option::OscoreOption;
use crate::protect::{
    protect_request_with_kid_context, protect_response_with_kid_context, unprotect_request,
    unprotect_response, OscoreError, RequestBinding,
};

/// Bytes of each nonce this side generates (ID1, R2, R3): the appendix asks for at least 8
/// random bytes.
pub const NONCE_LEN: usize = 8;

/// The longest R2 a client accepts from a server: longer ones would only grow kid contexts.
const MAX_R2_LEN: usize = 64;

/// How many issued R2 values a server keeps for one kid; older ones are forgotten first. A
/// client whose R2 was forgotten is not stranded: its Request #2 is then taken as a new
/// Request #1 and answered with a new R2.
const PENDING_PER_KID: usize = 4;

/// A kid context value as sent during re-derivation: the ID Context as a CBOR byte string.
pub fn wire_id_context(id_context: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(id_context.len() + 3);
    let mut encoder = minicbor::Encoder::new(&mut out);
    // Writing into a Vec cannot fail.
    if encoder.bytes(id_context).is_err() {
        out.clear();
    }
    out
}

/// The ID Context inside a kid context sent during re-derivation: `None` unless the value is
/// exactly one definite-length CBOR byte string.
pub fn parse_wire_id_context(value: &[u8]) -> Option<Vec<u8>> {
    let mut decoder = minicbor::Decoder::new(value);
    if decoder.datatype().ok()? != minicbor::data::Type::Bytes {
        return None;
    }
    let bytes = decoder.bytes().ok()?.to_vec();
    (decoder.position() == value.len()).then_some(bytes)
}

fn concat(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    out.extend_from_slice(a);
    out.extend_from_slice(b);
    out
}

fn kid_context_of(message: &Message) -> Result<Option<Vec<u8>>, OscoreError> {
    let value = message
        .options
        .get(OptionNumber::OSCORE)
        .ok_or(OscoreError::NotProtected)?;
    Ok(OscoreOption::decode(value)?.kid_context)
}

/// A client's Request #1 in flight: the temporary context it was protected with and what its
/// response is checked against.
#[derive(Debug)]
pub struct FirstExchange {
    context: SecurityContext,
    id1: Vec<u8>,
    binding: RequestBinding,
}

impl FirstExchange {
    /// Protects `request` as Request #1 with a context derived from `base` with ID Context
    /// `id1` (a fresh random value). `request` should be safe (a GET): a server may act on it.
    pub fn start(
        base: &SecurityContext,
        id1: [u8; NONCE_LEN],
        request: &Message,
    ) -> Result<(Message, FirstExchange), OscoreError> {
        let mut context = base
            .rederive(Some(id1.to_vec()))
            .map_err(|_| OscoreError::Unprotectable("the context cannot be derived again"))?;
        let (outer, binding) =
            protect_request_with_kid_context(&mut context, request, Some(wire_id_context(&id1)))?;
        Ok((
            outer,
            FirstExchange {
                context,
                id1: id1.to_vec(),
                binding,
            },
        ))
    }

    /// Checks Response #1 (its kid context carries R2, and it is protected with R2 | ID1) and
    /// returns the context for Request #2 on: `base` derived with R2 | R3.
    pub fn finish(
        &self,
        base: &SecurityContext,
        response: &Message,
        r3: [u8; NONCE_LEN],
    ) -> Result<SecurityContext, OscoreError> {
        let r2 = verify_first_response(&self.context, &self.id1, &self.binding, response)?;
        second_context(base, &r2, r3)
    }
}

/// Verifies a Response #1 to a request protected with `context` (ID Context `id1`); returns R2.
fn verify_first_response(
    context: &SecurityContext,
    id1: &[u8],
    binding: &RequestBinding,
    response: &Message,
) -> Result<Vec<u8>, OscoreError> {
    let wire = kid_context_of(response)?.ok_or(OscoreError::Missing("kid context"))?;
    let r2 = parse_wire_id_context(&wire)
        .filter(|r2| (1..=MAX_R2_LEN).contains(&r2.len()))
        .ok_or(OscoreError::InnerFormat)?;
    let mut verifier = context
        .rederive(Some(concat(&r2, id1)))
        .map_err(|_| OscoreError::Unprotectable("the context cannot be derived again"))?;
    unprotect_response(&mut verifier, binding, response)?;
    Ok(r2)
}

/// The context a client sends Request #2 with: `base` derived with R2 | R3.
fn second_context(
    base: &SecurityContext,
    r2: &[u8],
    r3: [u8; NONCE_LEN],
) -> Result<SecurityContext, OscoreError> {
    base.rederive(Some(concat(r2, &r3)))
        .map_err(|_| OscoreError::Unprotectable("the context cannot be derived again"))
}

/// Whether a response starts a re-derivation the server initiated: it carries a kid context,
/// which no ordinary response does.
pub fn is_server_initiated(response: &Message) -> bool {
    matches!(kid_context_of(response), Ok(Some(_)))
}

/// A client's answer to a server-initiated re-derivation: `response` answered a request
/// protected with `context` (`binding`) and is protected with R2 | ID1, ID1 being the
/// context's ID Context (empty if none). Returns the context to repeat the request with.
pub fn answer_server_initiated(
    context: &SecurityContext,
    binding: &RequestBinding,
    response: &Message,
    r3: [u8; NONCE_LEN],
) -> Result<SecurityContext, OscoreError> {
    let id1 = context.id_context().unwrap_or_default().to_vec();
    let r2 = verify_first_response(context, &id1, binding, response)?;
    second_context(context, &r2, r3)
}

/// What a request whose kid context names no held context is, for a server that re-derives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Request #1: verify with ID Context `id1` and answer with [`first_response`].
    First {
        /// The client's ID1.
        id1: Vec<u8>,
    },
    /// Request #2: its ID Context starts with an R2 this server issued; verify with
    /// [`accept_second_request`].
    Second {
        /// The new ID Context, R2 | R3.
        id_context: Vec<u8>,
    },
}

/// The R2 values a server issued and not yet seen come back, by kid: bounded, oldest
/// forgotten first.
#[derive(Debug, Default)]
pub struct IssuedNonces {
    issued: HashSet<(Vec<u8>, [u8; NONCE_LEN])>,
    order: VecDeque<(Vec<u8>, [u8; NONCE_LEN])>,
}

impl IssuedNonces {
    /// None issued.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an R2 issued to `kid`, forgetting that kid's oldest beyond the bound.
    pub fn issue(&mut self, kid: &[u8], r2: [u8; NONCE_LEN]) {
        let key = (kid.to_vec(), r2);
        if !self.issued.insert(key.clone()) {
            return;
        }
        self.order.push_back(key);
        let held = self.order.iter().filter(|(k, _)| k == kid).count();
        if held > PENDING_PER_KID {
            if let Some(at) = self.order.iter().position(|(k, _)| k == kid) {
                if let Some(oldest) = self.order.remove(at) {
                    self.issued.remove(&oldest);
                }
            }
        }
    }

    /// Whether `r2` was issued to `kid` and not yet used.
    pub fn contains(&self, kid: &[u8], r2: &[u8]) -> bool {
        let Ok(r2) = <[u8; NONCE_LEN]>::try_from(r2) else {
            return false;
        };
        self.issued.contains(&(kid.to_vec(), r2))
    }

    /// Uses up `r2`: it admits one new context only.
    pub fn take(&mut self, kid: &[u8], r2: &[u8]) -> bool {
        let Ok(r2) = <[u8; NONCE_LEN]>::try_from(r2) else {
            return false;
        };
        let key = (kid.to_vec(), r2);
        if !self.issued.remove(&key) {
            return false;
        }
        self.order.retain(|k| k != &key);
        true
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.issued.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.issued.is_empty()
    }

    /// Classifies a request from `kid` whose kid context `wire` matched no held context:
    /// `None` when it is not part of a re-derivation (not a CBOR byte string).
    pub fn classify(&self, kid: &[u8], wire: &[u8]) -> Option<Incoming> {
        let id_context = parse_wire_id_context(wire)?;
        if id_context.len() > NONCE_LEN && self.contains(kid, &id_context[..NONCE_LEN]) {
            Some(Incoming::Second { id_context })
        } else {
            Some(Incoming::First { id1: id_context })
        }
    }
}

/// The server's answer to a Request #1: the request is verified with `base` derived with
/// `id1` (proving the client holds the Master Secret) but not acted on, since a fresh context
/// has no replay window to show it is not a replay; the answer is a 4.01 protected with
/// R2 | ID1 that carries R2. The caller records R2 in its [`IssuedNonces`].
pub fn first_response(
    base: &SecurityContext,
    id1: &[u8],
    request: &Message,
    r2: [u8; NONCE_LEN],
) -> Result<Message, OscoreError> {
    let mut verifier = base
        .rederive(Some(id1.to_vec()))
        .map_err(|_| OscoreError::Unprotectable("the context cannot be derived again"))?;
    let (_, binding) = unprotect_request(&mut verifier, request)?;
    protect_first_response(base, id1, &binding, request, r2)
}

/// The server's Response #1 to a request that decrypted under `context` but whose freshness
/// is unknown (its replay state was lost): a re-derivation started by the server, with ID1 the
/// context's ID Context (empty if none).
pub fn server_initiated_response(
    context: &SecurityContext,
    binding: &RequestBinding,
    request: &Message,
    r2: [u8; NONCE_LEN],
) -> Result<Message, OscoreError> {
    let id1 = context.id_context().unwrap_or_default().to_vec();
    protect_first_response(context, &id1, binding, request, r2)
}

fn protect_first_response(
    base: &SecurityContext,
    id1: &[u8],
    binding: &RequestBinding,
    request: &Message,
    r2: [u8; NONCE_LEN],
) -> Result<Message, OscoreError> {
    let mut context = base
        .rederive(Some(concat(&r2, id1)))
        .map_err(|_| OscoreError::Unprotectable("the context cannot be derived again"))?;
    let ty = match request.ty {
        MessageType::Con => MessageType::Ack,
        _ => MessageType::Non,
    };
    let mut response = Message::new(ty, Code::UNAUTHORIZED);
    response.mid = request.mid;
    response.token = request.token;
    // A fresh Partial IV: the request's nonce was made under another key, and a nonce of its
    // own keeps this response from depending on the request being new.
    protect_response_with_kid_context(
        &mut context,
        binding,
        &response,
        true,
        Some(wire_id_context(&r2)),
    )
}

/// The server's check of a Request #2 with ID Context R2 | R3 (R2 found in its
/// [`IssuedNonces`]): `base` derived with that ID Context must verify it. Returns the new
/// context (which replaces `base` once the caller has used up R2), the inner request and its
/// binding.
pub fn accept_second_request(
    base: &SecurityContext,
    id_context: &[u8],
    request: &Message,
) -> Result<(SecurityContext, Message, RequestBinding), OscoreError> {
    let mut context = base
        .rederive(Some(id_context.to_vec()))
        .map_err(|_| OscoreError::Unprotectable("the context cannot be derived again"))?;
    let (inner, binding) = unprotect_request(&mut context, request)?;
    Ok((context, inner, binding))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextParams;
    use crate::protect::{protect_request, protect_response, unprotect_request};
    use proptest::prelude::*;

    fn pair(id_context: Option<&[u8]>) -> (SecurityContext, SecurityContext) {
        let mut c = ContextParams::new(b"0123456789abcdef", b"\x01", b"");
        let mut s = ContextParams::new(b"0123456789abcdef", b"", b"\x01");
        c.master_salt = b"salt".to_vec();
        s.master_salt = b"salt".to_vec();
        c.id_context = id_context.map(<[u8]>::to_vec);
        s.id_context = id_context.map(<[u8]>::to_vec);
        (
            SecurityContext::derive(&c).unwrap(),
            SecurityContext::derive(&s).unwrap(),
        )
    }

    fn get(path: &str) -> Message {
        let mut m = Message::new(MessageType::Con, Code::GET);
        m.mid = 7;
        m.set_path(path);
        m
    }

    /// The server's side of an incoming request whose kid context matched nothing.
    fn server_step(
        issued: &mut IssuedNonces,
        base: &SecurityContext,
        request: &Message,
        r2: [u8; NONCE_LEN],
    ) -> Result<Result<(SecurityContext, Message, RequestBinding), Message>, OscoreError> {
        let wire = kid_context_of(request)?.unwrap();
        match issued.classify(base.recipient_id(), &wire).unwrap() {
            Incoming::First { id1 } => {
                let reply = first_response(base, &id1, request, r2)?;
                issued.issue(base.recipient_id(), r2);
                Ok(Err(reply))
            }
            Incoming::Second { id_context } => {
                let accepted = accept_second_request(base, &id_context, request)?;
                assert!(issued.take(base.recipient_id(), &id_context[..NONCE_LEN]));
                Ok(Ok(accepted))
            }
        }
    }

    #[test]
    fn wire_form_is_a_cbor_byte_string() {
        assert_eq!(wire_id_context(&[0xaa, 0xbb]), vec![0x42, 0xaa, 0xbb]);
        assert_eq!(wire_id_context(&[]), vec![0x40]);
        assert_eq!(
            parse_wire_id_context(&[0x42, 0xaa, 0xbb]),
            Some(vec![0xaa, 0xbb])
        );
        // Trailing bytes, another type, truncation, indefinite length: not a wire value.
        assert_eq!(parse_wire_id_context(&[0x42, 0xaa, 0xbb, 0x00]), None);
        assert_eq!(parse_wire_id_context(&[0x62, b'a', b'b']), None);
        assert_eq!(parse_wire_id_context(&[0x43, 0xaa]), None);
        assert_eq!(parse_wire_id_context(&[0x5f, 0x41, 0x00, 0xff]), None);
        assert_eq!(parse_wire_id_context(&[]), None);
    }

    #[test]
    fn client_initiated_rederivation_ends_with_both_on_one_new_context() {
        let (client, server) = pair(None);
        let mut issued = IssuedNonces::new();
        let (request1, first) = FirstExchange::start(&client, [1; 8], &get("")).unwrap();
        let reply1 = match server_step(&mut issued, &server, &request1, [2; 8]).unwrap() {
            Err(reply) => reply,
            Ok(_) => panic!("Request #1 must not be accepted"),
        };
        assert!(is_server_initiated(&reply1));
        let mut client3 = first.finish(&client, &reply1, [3; 8]).unwrap();
        let expected = [[2u8; 8], [3u8; 8]].concat();
        assert_eq!(client3.id_context(), Some(&expected[..]));
        let wire = wire_id_context(client3.id_context().unwrap());
        let (request2, binding) =
            protect_request_with_kid_context(&mut client3, &get("temp"), Some(wire)).unwrap();
        let (mut server3, inner, server_binding) =
            server_step(&mut issued, &server, &request2, [9; 8])
                .unwrap()
                .unwrap();
        assert_eq!(inner.path(), "temp");
        assert_eq!(server3.id_context(), Some(&expected[..]));
        assert!(issued.is_empty(), "R2 is used up");
        let mut answer = Message::new(MessageType::Ack, Code::CONTENT);
        answer.payload = b"21.5".to_vec();
        let protected = protect_response(&mut server3, &server_binding, &answer, false).unwrap();
        let plain = unprotect_response(&mut client3, &binding, &protected).unwrap();
        assert_eq!(plain.payload, b"21.5");
        // From now on, ordinary requests with the plain ID Context as kid context.
        let (request3, _) = protect_request(&mut client3, &get("temp"), true).unwrap();
        assert!(unprotect_request(&mut server3, &request3).is_ok());
        // A replay of Request #2 finds R2 used up: it is taken as a new Request #1, answered
        // with a 4.01 and never acted on.
        match server_step(&mut issued, &server, &request2, [4; 8]).unwrap() {
            Err(reply) => assert_eq!(reply.code, Code::CHANGED, "outer code of a 4.01"),
            Ok(_) => panic!("a replayed Request #2 was accepted"),
        }
    }

    #[test]
    fn server_initiated_rederivation_after_a_lost_replay_window() {
        let (mut client, mut server) = pair(Some(b"ctx"));
        server.forget_replay_state();
        let (request, binding) = protect_request(&mut client, &get("temp"), true).unwrap();
        let Err(OscoreError::FreshnessUnknown(server_binding)) =
            unprotect_request(&mut server, &request)
        else {
            panic!("freshness should be unknown");
        };
        let reply = server_initiated_response(&server, &server_binding, &request, [5; 8]).unwrap();
        let mut issued = IssuedNonces::new();
        issued.issue(server.recipient_id(), [5; 8]);
        assert!(is_server_initiated(&reply));
        // The reply is not an ordinary response under the old context.
        assert!(unprotect_response(&mut client, &binding, &reply).is_err());
        let mut client3 = answer_server_initiated(&client, &binding, &reply, [6; 8]).unwrap();
        let wire = wire_id_context(client3.id_context().unwrap());
        let (request2, _) =
            protect_request_with_kid_context(&mut client3, &get("temp"), Some(wire)).unwrap();
        let (server3, inner, _) = server_step(&mut issued, &server, &request2, [0; 8])
            .unwrap()
            .unwrap();
        assert_eq!(inner.path(), "temp");
        assert_eq!(server3.id_context(), client3.id_context());
        assert!(server3.replay_state_known());
    }

    #[test]
    fn a_forged_or_foreign_first_response_is_refused() {
        let (client, server) = pair(None);
        let (request1, first) = FirstExchange::start(&client, [1; 8], &get("")).unwrap();
        let mut reply = first_response(&server, &[1; 8], &request1, [2; 8]).unwrap();
        let last = reply.payload.len() - 1;
        reply.payload[last] ^= 1;
        assert_eq!(
            first.finish(&client, &reply, [3; 8]).unwrap_err(),
            OscoreError::Decrypt
        );
        // Another Master Secret: Request #1 does not verify at the server.
        let mut other = ContextParams::new(b"another secret!!", b"\x01", b"");
        other.master_salt = b"salt".to_vec();
        let stranger = SecurityContext::derive(&other).unwrap();
        let (request1, _) = FirstExchange::start(&stranger, [1; 8], &get("")).unwrap();
        assert_eq!(
            first_response(&server, &[1; 8], &request1, [2; 8]).unwrap_err(),
            OscoreError::Decrypt
        );
    }

    #[test]
    fn issued_nonces_are_bounded_per_kid_and_used_once() {
        let mut issued = IssuedNonces::new();
        for n in 0..10u8 {
            issued.issue(b"a", [n; 8]);
        }
        issued.issue(b"b", [0; 8]);
        assert_eq!(issued.len(), PENDING_PER_KID + 1);
        assert!(!issued.contains(b"a", &[0; 8]), "oldest forgotten");
        assert!(issued.contains(b"a", &[9; 8]));
        assert!(issued.contains(b"b", &[0; 8]), "another kid keeps its own");
        assert!(issued.take(b"a", &[9; 8]));
        assert!(!issued.take(b"a", &[9; 8]));
        assert!(!issued.contains(b"a", &[9; 8][..4]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn wire_values_round_trip_and_garbage_never_panics(
            id in proptest::collection::vec(any::<u8>(), 0..64),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            prop_assert_eq!(parse_wire_id_context(&wire_id_context(&id)), Some(id));
            let _ = parse_wire_id_context(&junk);
            let _ = IssuedNonces::new().classify(b"k", &junk);
        }
    }
}
