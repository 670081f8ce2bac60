//! Protecting and unprotecting messages (RFC 8613 §5, §8): the inner message (code, Class E
//! options, payload) is encrypted into the payload of an outer message that keeps only the
//! Class U options, the OSCORE option and a neutral code.

use tern_proto::uri::{CoapUri, Host};
use tern_proto::{Code, Message, MessageType, OptionNumber, Options};

use crate::cbor;
use crate::context::{nonce, partial_iv, sequence_of, SecurityContext};
use crate::option::{OptionError, OscoreOption};
use crate::replay::Replay;
use subtle::ConstantTimeEq;

/// What binds a response to its request (§5.4: the request's kid and Partial IV are in every
/// response's AAD, and a response without a Partial IV reuses the request's nonce).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBinding {
    /// The request's kid (the client's Sender ID).
    pub kid: Vec<u8>,
    /// The request's Partial IV.
    pub partial_iv: Vec<u8>,
    /// The request's AEAD nonce.
    pub nonce: Vec<u8>,
}

/// Why a message could not be protected or unprotected. [`OscoreError::response_code`] gives
/// the error response §8.2 prescribes to a request that fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OscoreError {
    /// The message carries no OSCORE option.
    #[error("the message is not OSCORE-protected")]
    NotProtected,
    /// The OSCORE option is malformed.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// A request without kid or Partial IV, or a notification without Partial IV.
    #[error("the OSCORE option lacks its {0}")]
    Missing(&'static str),
    /// No security context for the kid (and kid context).
    #[error("no security context for this kid")]
    UnknownContext,
    /// A replayed or too old sequence number.
    #[error(transparent)]
    Replay(#[from] Replay),
    /// The AEAD refused the message: wrong key, tampered, or truncated.
    #[error("the message did not decrypt")]
    Decrypt,
    /// The decrypted inner message is not well-formed.
    #[error("the decrypted message is malformed")]
    InnerFormat,
    /// The request decrypted, but the replay state is lost and the request did not echo the
    /// current challenge: it may be a replay. Answer it with [`echo_challenge`] (Appendix B.1.2)
    /// and do not act on it.
    #[error("the request's freshness is unknown: challenge it with Echo")]
    FreshnessUnknown(RequestBinding),
    /// The sender's sequence numbers are used up; the context must be re-derived.
    #[error("the sender sequence numbers are exhausted")]
    SequenceExhausted,
    /// Sequence numbers are persisted and this mark must be stored before the next is used
    /// ([`SecurityContext::mark_to_store`]).
    #[error("sequence number mark {0} must be stored first")]
    StoreMark(u64),
    /// The message cannot be protected as given (a Proxy-Uri that is not a CoAP URI, say,
    /// which could not be decomposed into its outer and inner parts).
    #[error("cannot protect this message: {0}")]
    Unprotectable(&'static str),
}

impl OscoreError {
    /// The error response code for a request that failed this way (§8.2), with its
    /// deliberately generic diagnostic payload.
    pub fn response_code(&self) -> (Code, &'static str) {
        match self {
            OscoreError::Option(_) | OscoreError::Missing(_) => (Code::BAD_OPTION, ""),
            OscoreError::UnknownContext => (Code::UNAUTHORIZED, "Security context not found"),
            OscoreError::Replay(_) | OscoreError::FreshnessUnknown(_) => {
                (Code::UNAUTHORIZED, "Replay detected")
            }
            OscoreError::Decrypt | OscoreError::InnerFormat => {
                (Code::BAD_REQUEST, "Decryption failed")
            }
            OscoreError::NotProtected
            | OscoreError::SequenceExhausted
            | OscoreError::StoreMark(_)
            | OscoreError::Unprotectable(_) => (Code::INTERNAL_SERVER_ERROR, ""),
        }
    }
}

fn sequence_error(mark: Option<u64>) -> OscoreError {
    match mark {
        Some(mark) => OscoreError::StoreMark(mark),
        None => OscoreError::SequenceExhausted,
    }
}

/// Options that stay outside (Class U, §4.1): the rest are encrypted. Observe goes both ways
/// (inner and outer), as §4.1.3.5 asks.
fn is_outer_only(number: OptionNumber) -> bool {
    matches!(
        number,
        OptionNumber::URI_HOST
            | OptionNumber::URI_PORT
            | OptionNumber::PROXY_SCHEME
            | OptionNumber::OSCORE
            | OptionNumber::HOP_LIMIT
    )
}

/// Decomposes a Proxy-Uri (RFC 8613 §4.1.3.3): the scheme, host and port stay outside for
/// the proxy (Proxy-Scheme, Uri-Host, Uri-Port when not the scheme's default), the path and
/// query go inside with the rest of the request.
fn decompose_proxy_uri(
    value: &[u8],
    inner: &mut Options,
    outer: &mut Options,
) -> Result<(), OscoreError> {
    const NOT_COAP: OscoreError = OscoreError::Unprotectable(
        "a Proxy-Uri under OSCORE must be a coap, coaps, coap+tcp or coaps+tcp URI",
    );
    let text = std::str::from_utf8(value).map_err(|_| NOT_COAP)?;
    let uri = CoapUri::parse(text).map_err(|_| NOT_COAP)?;
    outer.push(
        OptionNumber::PROXY_SCHEME,
        uri.scheme.as_str().as_bytes().to_vec(),
    );
    let host = match &uri.host {
        Host::Name(name) => name.clone(),
        Host::Ipv4(ip) => ip.to_string(),
        Host::Ipv6(ip) => ip.to_string(),
    };
    outer.push(OptionNumber::URI_HOST, host.into_bytes());
    if let Some(port) = uri.port {
        outer.set_uint(OptionNumber::URI_PORT, u32::from(port));
    }
    for segment in &uri.path {
        inner.push(OptionNumber::URI_PATH, segment.as_bytes().to_vec());
    }
    for item in &uri.query {
        inner.push(OptionNumber::URI_QUERY, item.as_bytes().to_vec());
    }
    Ok(())
}

/// Splits a message's options into (inner, outer).
fn split_options(message: &Message) -> Result<(Options, Options), OscoreError> {
    let mut inner = Options::new();
    let mut outer = Options::new();
    for option in message.options.iter() {
        if option.number == OptionNumber::PROXY_URI {
            let has_target = message.options.iter().any(|o| {
                matches!(
                    o.number,
                    OptionNumber::URI_HOST
                        | OptionNumber::URI_PORT
                        | OptionNumber::URI_PATH
                        | OptionNumber::URI_QUERY
                        | OptionNumber::PROXY_SCHEME
                )
            });
            if has_target {
                // RFC 7252 §5.10.2: Proxy-Uri excludes the Uri-* options.
                return Err(OscoreError::Unprotectable(
                    "a request with Proxy-Uri cannot also carry Uri-* or Proxy-Scheme options",
                ));
            }
            decompose_proxy_uri(&option.value, &mut inner, &mut outer)?;
            continue;
        }
        if option.number == OptionNumber::OBSERVE {
            inner.push(option.number, option.value.clone());
            outer.push(option.number, option.value.clone());
        } else if is_outer_only(option.number) {
            outer.push(option.number, option.value.clone());
        } else {
            inner.push(option.number, option.value.clone());
        }
    }
    Ok((inner, outer))
}

/// The plaintext of §5.3: inner code, inner options, payload marker and payload.
fn plaintext(code: Code, inner: &Options, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![code.0];
    inner.encode(&mut out);
    if !payload.is_empty() {
        out.push(0xff);
        out.extend_from_slice(payload);
    }
    out
}

/// Parses a plaintext back into (code, options, payload), with the same rules as a CoAP
/// message after its header (a 4-byte header with no token is put in front for the codec).
fn parse_plaintext(plaintext: &[u8]) -> Result<(Code, Options, Vec<u8>), OscoreError> {
    let (&code, rest) = plaintext.split_first().ok_or(OscoreError::InnerFormat)?;
    let mut bytes = Vec::with_capacity(plaintext.len() + 3);
    bytes.extend_from_slice(&[0x40, code, 0, 0]);
    bytes.extend_from_slice(rest);
    let message = Message::decode(&bytes).map_err(|_| OscoreError::InnerFormat)?;
    let mut options = message.options;
    // Outer-only options found inside are not honoured (§8.2 step 6).
    options.retain(|o| !is_outer_only(o.number));
    Ok((Code(code), options, message.payload))
}

/// The outer message: header and token of `message`, `outer` options with the OSCORE option,
/// the ciphertext as payload.
fn outer_message(
    message: &Message,
    code: Code,
    mut outer: Options,
    option: &OscoreOption,
    ciphertext: Vec<u8>,
) -> Result<Message, OscoreError> {
    outer.set(OptionNumber::OSCORE, option.encode()?);
    let mut m = Message::new(message.ty, code);
    m.mid = message.mid;
    m.token = message.token;
    m.options = outer;
    m.payload = ciphertext;
    Ok(m)
}

/// Protects a request with the context's Sender Key and next sequence number; the binding is
/// kept to unprotect the response. The kid context is sent when the context has an ID Context
/// and `send_kid_context` is set, or always while a re-derivation awaits confirmation
/// ([`SecurityContext::wire_kid_context`]).
pub fn protect_request(
    context: &mut SecurityContext,
    request: &Message,
    send_kid_context: bool,
) -> Result<(Message, RequestBinding), OscoreError> {
    // While a re-derived context is unconfirmed its requests must carry the wire form of its
    // ID Context, which is how the server recognises them (Appendix B.2).
    let kid_context = match context.wire_kid_context() {
        Some(wire) => Some(wire.to_vec()),
        None => context
            .id_context()
            .filter(|_| send_kid_context)
            .map(<[u8]>::to_vec),
    };
    protect_request_with_kid_context(context, request, kid_context)
}

/// [`protect_request`] with the OSCORE option's kid context given: during a re-derivation
/// (Appendix B.2) it is the wire form of the new ID Context rather than the ID Context itself.
pub fn protect_request_with_kid_context(
    context: &mut SecurityContext,
    request: &Message,
    kid_context: Option<Vec<u8>>,
) -> Result<(Message, RequestBinding), OscoreError> {
    let (inner, outer) = split_options(request)?;
    let sequence = context.take_sequence().map_err(sequence_error)?;
    let piv = partial_iv(sequence);
    let kid = context.sender_id().to_vec();
    let nonce = nonce(context.common_iv(), &kid, &piv);
    let aad = cbor::aad(context.aead(), &kid, &piv);
    let ciphertext = encrypt(
        context,
        &nonce,
        &aad,
        request.code,
        &inner,
        &request.payload,
    )?;
    let option = OscoreOption {
        partial_iv: Some(piv.clone()),
        kid_context,
        kid: Some(kid.clone()),
    };
    // FETCH keeps Observe meaningful to proxies (§4.2); POST otherwise.
    let code = if request.options.contains(OptionNumber::OBSERVE) {
        Code::FETCH
    } else {
        Code::POST
    };
    let outer = outer_message(request, code, outer, &option, ciphertext)?;
    Ok((
        outer,
        RequestBinding {
            kid,
            partial_iv: piv,
            nonce,
        },
    ))
}

/// Reads the OSCORE option of a request: its kid, kid context and Partial IV, for finding the
/// context before [`unprotect_request`].
pub fn request_option(request: &Message) -> Result<OscoreOption, OscoreError> {
    let value = request
        .options
        .get(OptionNumber::OSCORE)
        .ok_or(OscoreError::NotProtected)?;
    let option = OscoreOption::decode(value)?;
    if option.kid.is_none() {
        return Err(OscoreError::Missing("kid"));
    }
    if option.partial_iv.is_none() {
        return Err(OscoreError::Missing("Partial IV"));
    }
    Ok(option)
}

/// Unprotects a request with the context its kid names: replay check, decryption, then the
/// replay window moves. Returns the inner request (outer Class U options kept) and the binding
/// for the response.
pub fn unprotect_request(
    context: &mut SecurityContext,
    request: &Message,
) -> Result<(Message, RequestBinding), OscoreError> {
    let option = request_option(request)?;
    let (Some(kid), Some(piv)) = (option.kid, option.partial_iv) else {
        return Err(OscoreError::Missing("kid"));
    };
    if kid != context.recipient_id() {
        return Err(OscoreError::UnknownContext);
    }
    let sequence = sequence_of(&piv).ok_or(OptionError::TooLong)?;
    if context.replay_state_known() {
        context.replay_window().check(sequence)?;
    }
    let nonce = nonce(context.common_iv(), &kid, &piv);
    let aad = cbor::aad(context.aead(), &kid, &piv);
    let (code, inner, payload) = decrypt(context, &nonce, &aad, &request.payload)?;
    if !code.is_request() {
        return Err(OscoreError::InnerFormat);
    }
    if !context.replay_state_known() {
        let echoed = inner.get(OptionNumber::ECHO);
        let fresh = match (echoed, context.echo_challenge()) {
            (Some(echoed), Some(challenge)) => bool::from(echoed.ct_eq(challenge)),
            _ => false,
        };
        if !fresh {
            return Err(OscoreError::FreshnessUnknown(RequestBinding {
                kid,
                partial_iv: piv,
                nonce,
            }));
        }
        // Everything up to this request is now suspect; later ones are accepted (§B.1.2).
        context.replay_state_recovered(sequence);
    } else {
        context.replay_window_mut().accept(sequence)?;
    }
    let message = inner_message(request, code, inner, payload);
    Ok((
        message,
        RequestBinding {
            kid,
            partial_iv: piv,
            nonce,
        },
    ))
}

/// Encrypts the plaintext of (code, inner options, payload) with the Sender Key.
fn encrypt(
    context: &SecurityContext,
    nonce: &[u8],
    aad: &[u8],
    code: Code,
    inner: &Options,
    payload: &[u8],
) -> Result<Vec<u8>, OscoreError> {
    context
        .aead()
        .seal(
            context.sender_key().as_bytes(),
            nonce,
            aad,
            &plaintext(code, inner, payload),
        )
        // Only a key or nonce of the wrong size is refused, which derived contexts never have.
        .map_err(|_| OscoreError::Unprotectable("the AEAD refused the key or nonce"))
}

/// Opens the ciphertext with the Recipient Key and parses the plaintext.
fn decrypt(
    context: &SecurityContext,
    nonce: &[u8],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<(Code, Options, Vec<u8>), OscoreError> {
    let plaintext = context
        .aead()
        .open(context.recipient_key().as_bytes(), nonce, aad, ciphertext)
        .map_err(|_| OscoreError::Decrypt)?;
    parse_plaintext(&plaintext)
}

/// The unprotected message: the outer header and token, the inner code, options and payload,
/// and the outer Class U options.
fn inner_message(outer: &Message, code: Code, inner: Options, payload: Vec<u8>) -> Message {
    let mut message = Message::new(outer.ty, code);
    message.mid = outer.mid;
    message.token = outer.token;
    message.options = merge_outer(inner, &outer.options);
    message.payload = payload;
    message
}

/// The inner options plus the outer Class U ones (not the OSCORE option; Observe from inside).
fn merge_outer(mut inner: Options, outer: &Options) -> Options {
    for o in outer.iter() {
        if is_outer_only(o.number) && o.number != OptionNumber::OSCORE {
            inner.push(o.number, o.value.clone());
        }
    }
    inner
}

/// Protects a response to the request `binding` describes. With `fresh_nonce` (always for
/// notifications, which carry Observe) the response takes the next sequence number as its
/// own Partial IV; otherwise it reuses the request's nonce (§5.2).
pub fn protect_response(
    context: &mut SecurityContext,
    binding: &RequestBinding,
    response: &Message,
    fresh_nonce: bool,
) -> Result<Message, OscoreError> {
    protect_response_with_kid_context(context, binding, response, fresh_nonce, None)
}

/// [`protect_response`] with a kid context in the OSCORE option, as the first response of a
/// re-derivation carries the server's nonce R2 there (Appendix B.2).
pub(crate) fn protect_response_with_kid_context(
    context: &mut SecurityContext,
    binding: &RequestBinding,
    response: &Message,
    fresh_nonce: bool,
    kid_context: Option<Vec<u8>>,
) -> Result<Message, OscoreError> {
    let (inner, outer) = split_options(response)?;
    let observe = response.options.contains(OptionNumber::OBSERVE);
    let (piv, nonce) = if fresh_nonce || observe {
        let sequence = context.take_sequence().map_err(sequence_error)?;
        let piv = partial_iv(sequence);
        let nonce = nonce(context.common_iv(), context.sender_id(), &piv);
        (Some(piv), nonce)
    } else {
        (None, binding.nonce.clone())
    };
    let aad = cbor::aad(context.aead(), &binding.kid, &binding.partial_iv);
    let ciphertext = encrypt(
        context,
        &nonce,
        &aad,
        response.code,
        &inner,
        &response.payload,
    )?;
    let option = OscoreOption {
        partial_iv: piv,
        kid_context,
        kid: None,
    };
    let code = if observe {
        Code::CONTENT
    } else {
        Code::CHANGED
    };
    outer_message(response, code, outer, &option, ciphertext)
}

/// Unprotects a response to the request `binding` describes. A response with its own Partial
/// IV (a notification, say) is checked against and recorded in the replay window. The first
/// response to an Observe registration may come without a Partial IV (§4.1.3.5.2); later
/// notifications go through [`unprotect_notification`], which insists on one.
pub fn unprotect_response(
    context: &mut SecurityContext,
    binding: &RequestBinding,
    response: &Message,
) -> Result<Message, OscoreError> {
    unprotect_any_response(context, binding, response, false)
}

/// Unprotects a notification after the first response of an observation: it must carry a
/// Partial IV of its own (§4.1.3.5.2), which the replay window checks, so that the first
/// response cannot be replayed as a later notification.
pub fn unprotect_notification(
    context: &mut SecurityContext,
    binding: &RequestBinding,
    response: &Message,
) -> Result<Message, OscoreError> {
    unprotect_any_response(context, binding, response, true)
}

fn unprotect_any_response(
    context: &mut SecurityContext,
    binding: &RequestBinding,
    response: &Message,
    notification: bool,
) -> Result<Message, OscoreError> {
    let value = response
        .options
        .get(OptionNumber::OSCORE)
        .ok_or(OscoreError::NotProtected)?;
    let option = OscoreOption::decode(value)?;
    let sequence = match &option.partial_iv {
        Some(piv) => {
            let sequence = sequence_of(piv).ok_or(OptionError::TooLong)?;
            context.replay_window().check(sequence)?;
            Some(sequence)
        }
        None => None,
    };
    if notification && sequence.is_none() {
        return Err(OscoreError::Missing("Partial IV"));
    }
    let nonce = match &option.partial_iv {
        Some(piv) => nonce(context.common_iv(), context.recipient_id(), piv),
        None => binding.nonce.clone(),
    };
    let aad = cbor::aad(context.aead(), &binding.kid, &binding.partial_iv);
    let (code, inner, payload) = decrypt(context, &nonce, &aad, &response.payload)?;
    if !code.is_response() {
        return Err(OscoreError::InnerFormat);
    }
    if let Some(sequence) = sequence {
        context.replay_window_mut().accept(sequence)?;
    }
    let message = inner_message(response, code, inner, payload);
    Ok(message)
}

/// The protected 4.01 Unauthorized with an Echo option that challenges a request whose
/// freshness is unknown (Appendix B.1.2, RFC 9175 §2.4). `challenge` must be unpredictable (at
/// least 8 random bytes); the context remembers it, and the client's repeat of the request
/// carrying it restores the replay window. The response takes a fresh Partial IV, as the
/// request's nonce may be a replayed one.
pub fn echo_challenge(
    context: &mut SecurityContext,
    binding: &RequestBinding,
    request: &Message,
    challenge: Vec<u8>,
) -> Result<Message, OscoreError> {
    if !(1..=40).contains(&challenge.len()) {
        return Err(OscoreError::Unprotectable("an Echo value is 1 to 40 bytes"));
    }
    let ty = match request.ty {
        MessageType::Con => MessageType::Ack,
        _ => MessageType::Non,
    };
    let mut response = Message::new(ty, Code::UNAUTHORIZED);
    response.mid = request.mid;
    response.token = request.token;
    response.options.set(OptionNumber::ECHO, challenge.clone());
    let protected = protect_response(context, binding, &response, true)?;
    context.set_echo_challenge(challenge);
    Ok(protected)
}

/// An unprotected error response to a request that failed OSCORE processing (§8.2): the code
/// of [`OscoreError::response_code`], Max-Age 0 so that proxies do not cache it, and a generic
/// diagnostic.
pub fn error_response(request: &Message, error: &OscoreError) -> Message {
    let (code, diagnostic) = error.response_code();
    let ty = match request.ty {
        MessageType::Con => MessageType::Ack,
        _ => MessageType::Non,
    };
    let mut m = Message::new(ty, code);
    m.mid = request.mid;
    m.token = request.token;
    m.options.set_uint(OptionNumber::MAX_AGE, 0);
    m.payload = diagnostic.as_bytes().to_vec();
    m
}
