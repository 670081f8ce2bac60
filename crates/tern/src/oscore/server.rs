//! A server's OSCORE contexts: requests unprotected with the context their kid and kid
//! context name, responses and notifications protected with it, §8.2 errors answered.

use std::sync::{Arc, Mutex};

use tern_oscore::rederive::{self, Incoming, IssuedNonces};
use tern_oscore::{
    echo_challenge, error_response, protect_response, request_option, unprotect_request,
    ContextKey, ContextStore, OscoreError, OscoreOption, RequestBinding,
};
use tern_proto::{Code, Message, MessageType, OptionNumber};

use super::{OscoreConfigError, OscoreContext, OscoreIdentity};

/// Bytes of an Echo challenge (RFC 9175 §2.2: unpredictable, at least 8 bytes).
const ECHO_LEN: usize = 8;

/// What a protected request's response is protected with: the context and the request it
/// answers.
#[derive(Debug, Clone)]
pub(crate) struct Protection {
    key: ContextKey,
    binding: RequestBinding,
}

impl Protection {
    /// Who protected the request.
    pub(crate) fn identity(&self) -> OscoreIdentity {
        OscoreIdentity {
            kid: self.key.0.clone(),
            kid_context: self.key.1.clone(),
        }
    }
}

/// The OSCORE contexts a server holds, found by kid and kid context (§8.2). Cheap to clone:
/// clones share the contexts, so every endpoint and connection serving one router uses the
/// same sequence numbers and replay windows.
///
/// ```
/// use tern::oscore::{OscoreContext, OscoreServer};
/// use tern_oscore::{ContextParams, SecurityContext};
///
/// let params = ContextParams::new(&[7u8; 16], b"server", b"client");
/// let server = OscoreServer::new();
/// server.add(OscoreContext::in_memory(SecurityContext::derive(&params).unwrap())).unwrap();
/// assert_eq!(server.len(), 1);
/// ```
#[derive(Clone, Default)]
pub struct OscoreServer {
    contexts: Arc<Mutex<ContextStore<OscoreContext>>>,
    /// The R2 values of re-derivations under way (Appendix B.2).
    issued: Arc<Mutex<IssuedNonces>>,
}

impl std::fmt::Debug for OscoreServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscoreServer")
            .field("contexts", &self.len())
            .finish()
    }
}

impl OscoreServer {
    /// No contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a context; refuses one whose Recipient ID and ID Context another already has, as
    /// their requests could not be told apart.
    pub fn add(&self, context: OscoreContext) -> Result<(), OscoreConfigError> {
        let describe = context.describe();
        self.lock()
            .insert(context)
            .map_err(|_| OscoreConfigError::Duplicate(describe))
    }

    /// Removes the context for a kid (the client's Sender ID) and ID Context; later requests
    /// protected with it get 4.01.
    pub fn remove(&self, kid: &[u8], kid_context: Option<&[u8]>) -> bool {
        self.lock().remove(kid, kid_context).is_some()
    }

    /// How many contexts are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The next sequence number each context will send, by kid and ID Context (for
    /// monitoring and tests).
    pub fn sender_sequences(&self) -> Vec<(OscoreIdentity, u64)> {
        self.lock()
            .iter()
            .map(|((kid, kid_context), c)| {
                let identity = OscoreIdentity {
                    kid: kid.clone(),
                    kid_context: kid_context.clone(),
                };
                (identity, c.context.sender_sequence())
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ContextStore<OscoreContext>> {
        // A panic elsewhere cannot leave a context half-updated in a way that reuses a nonce
        // (numbers are taken before use), so a poisoned lock is used as it stands.
        self.contexts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Unprotects a request: `Ok` is the inner request and what its response is protected
    /// with; `Err` is the answer to send instead (the unprotected §8.2 error, a protected Echo
    /// challenge when the context lost its replay state (Appendix B.1.2), or a step of a
    /// context re-derivation (Appendix B.2)).
    pub(crate) fn unprotect(&self, request: &Message) -> Result<(Message, Protection), Message> {
        let option = match request_option(request) {
            Ok(option) => option,
            Err(e) => return Err(refuse(request, &e)),
        };
        let kid = option.kid.unwrap_or_default();
        let mut contexts = self.lock();
        let found = contexts
            .find_mut(&kid, option.kid_context.as_deref())
            .map(|(key, _)| key);
        if let Some(key) = found {
            return self.unprotect_with(&mut contexts, key, request);
        }
        if let Some(wire) = &option.kid_context {
            if let Some(answer) = self.rederivation_step(&mut contexts, &kid, wire, request) {
                return answer;
            }
        }
        Err(refuse(request, &OscoreError::UnknownContext))
    }

    /// Unprotects a request with the held context `key`.
    fn unprotect_with(
        &self,
        contexts: &mut ContextStore<OscoreContext>,
        key: ContextKey,
        request: &Message,
    ) -> Result<(Message, Protection), Message> {
        let Some(entry) = contexts.get_mut(&key.0, key.1.as_deref()) else {
            return Err(refuse(request, &OscoreError::UnknownContext));
        };
        match unprotect_request(&mut entry.context, request) {
            Ok((inner, binding)) => accepted(request, inner, key, binding),
            Err(OscoreError::FreshnessUnknown(binding)) if entry.rederivation => {
                // The replay window is lost and the client can re-derive: start a
                // re-derivation (Appendix B.2) rather than challenge with Echo.
                let r2 = random_nonce().ok_or_else(|| internal_error(request))?;
                match rederive::server_initiated_response(&entry.context, &binding, request, r2) {
                    Ok(reply) => {
                        self.issued().issue(&key.0, r2);
                        tracing::debug!("OSCORE replay state unknown: re-derivation started");
                        Err(reply)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "re-derivation response not protected");
                        Err(internal_error(request))
                    }
                }
            }
            Err(OscoreError::FreshnessUnknown(binding)) => {
                let mut challenge = vec![0u8; ECHO_LEN];
                if getrandom::getrandom(&mut challenge).is_err() {
                    return Err(internal_error(request));
                }
                if let Err(e) = entry.reserve() {
                    tracing::error!(error = %e, "OSCORE sequence number mark not stored");
                    return Err(internal_error(request));
                }
                tracing::debug!("OSCORE replay state unknown: request challenged with Echo");
                match echo_challenge(&mut entry.context, &binding, request, challenge) {
                    Ok(reply) => Err(reply),
                    Err(e) => {
                        tracing::error!(error = %e, "Echo challenge not protected");
                        Err(internal_error(request))
                    }
                }
            }
            Err(e) => Err(refuse(request, &e)),
        }
    }

    /// A request from `kid` whose kid context `wire` names no held context, taken as a step
    /// of a re-derivation (Appendix B.2) with one of the kid's contexts that allow it; `None`
    /// when it is not one.
    fn rederivation_step(
        &self,
        contexts: &mut ContextStore<OscoreContext>,
        kid: &[u8],
        wire: &[u8],
        request: &Message,
    ) -> Option<Result<(Message, Protection), Message>> {
        let id_context = rederive::parse_wire_id_context(wire)?;
        // A request of a re-derived context the client has not yet seen confirmed still
        // carries the wire form.
        if contexts.get_mut(kid, Some(&id_context)).is_some() {
            let key = (kid.to_vec(), Some(id_context));
            return Some(self.unprotect_with(contexts, key, request));
        }
        let bases: Vec<ContextKey> = contexts
            .iter()
            .filter(|((k, _), c)| k == kid && c.rederivation)
            .map(|(key, _)| key)
            .collect();
        if bases.is_empty() {
            return None;
        }
        let incoming = self.issued().classify(kid, wire)?;
        let mut failure = OscoreError::Decrypt;
        for base_key in bases {
            let base = contexts.get_mut(&base_key.0, base_key.1.as_deref())?;
            match &incoming {
                Incoming::First { id1 } => {
                    let r2 = match random_nonce() {
                        Some(r2) => r2,
                        None => return Some(Err(internal_error(request))),
                    };
                    match rederive::first_response(&base.context, id1, request, r2) {
                        Ok(reply) => {
                            self.issued().issue(kid, r2);
                            tracing::debug!("OSCORE re-derivation: Request #1 answered");
                            return Some(Err(reply));
                        }
                        Err(e) => failure = e,
                    }
                }
                Incoming::Second { id_context } => {
                    match rederive::accept_second_request(&base.context, id_context, request) {
                        Ok((context, inner, binding)) => {
                            if !self.issued().take(kid, &id_context[..rederive::NONCE_LEN]) {
                                return Some(Err(refuse(request, &OscoreError::UnknownContext)));
                            }
                            let successor = match base.successor(context) {
                                Ok(successor) => successor,
                                Err(e) => {
                                    tracing::error!(error = %e, "re-derived context not stored");
                                    return Some(Err(internal_error(request)));
                                }
                            };
                            contexts.remove(&base_key.0, base_key.1.as_deref());
                            let key = (kid.to_vec(), Some(id_context.clone()));
                            if contexts.insert(successor).is_err() {
                                return Some(Err(internal_error(request)));
                            }
                            tracing::info!(
                                kid = ?kid,
                                "OSCORE context re-derived (Appendix B.2)"
                            );
                            return Some(accepted(request, inner, key, binding));
                        }
                        Err(e) => failure = e,
                    }
                }
            }
        }
        Some(Err(refuse(request, &failure)))
    }

    fn issued(&self) -> std::sync::MutexGuard<'_, IssuedNonces> {
        self.issued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Protects a response to a request [`unprotect`](Self::unprotect)ed with `protection`.
    /// A notification (`fresh_nonce`, or a response with Observe) takes its own Partial IV.
    /// If the context is gone or cannot protect, the response is an unprotected 5.00 (never
    /// the plain response).
    pub(crate) fn protect(
        &self,
        protection: &Protection,
        response: &Message,
        fresh_nonce: bool,
    ) -> Message {
        let mut contexts = self.lock();
        let (kid, kid_context) = &protection.key;
        let Some(entry) = contexts.get_mut(kid, kid_context.as_deref()) else {
            tracing::info!("OSCORE context removed before its response: 5.00 sent instead");
            return plain_error(response, Code::INTERNAL_SERVER_ERROR);
        };
        let needs_number = fresh_nonce || response.options.contains(OptionNumber::OBSERVE);
        if needs_number {
            if let Err(e) = entry.reserve() {
                tracing::error!(error = %e, "OSCORE sequence number mark not stored");
                return plain_error(response, Code::INTERNAL_SERVER_ERROR);
            }
        }
        match protect_response(
            &mut entry.context,
            &protection.binding,
            response,
            fresh_nonce,
        ) {
            Ok(protected) => protected,
            Err(e) => {
                tracing::error!(error = %e, "OSCORE response not protected");
                plain_error(response, Code::INTERNAL_SERVER_ERROR)
            }
        }
    }
}

/// The inner request of an accepted protected request, with what its response needs. The
/// inner request keeps the OSCORE option without its Partial IV: it names the context, so
/// that block-wise transfers of different contexts (whose keys include it) stay apart even
/// from one address.
fn accepted(
    request: &Message,
    mut inner: Message,
    key: ContextKey,
    binding: RequestBinding,
) -> Result<(Message, Protection), Message> {
    let marker = OscoreOption {
        partial_iv: None,
        kid_context: key.1.clone(),
        kid: Some(key.0.clone()),
    };
    match marker.encode() {
        Ok(value) => inner.options.set(OptionNumber::OSCORE, value),
        Err(_) => return Err(internal_error(request)),
    }
    Ok((inner, Protection { key, binding }))
}

/// A fresh random nonce for a re-derivation; `None` if the system has no randomness.
fn random_nonce() -> Option<[u8; rederive::NONCE_LEN]> {
    let mut nonce = [0u8; rederive::NONCE_LEN];
    getrandom::getrandom(&mut nonce).ok()?;
    Some(nonce)
}

/// The unprotected §8.2 answer to a request that failed OSCORE processing.
fn refuse(request: &Message, error: &OscoreError) -> Message {
    tracing::debug!(%error, "OSCORE request refused");
    error_response(request, error)
}

fn internal_error(request: &Message) -> Message {
    refuse(request, &OscoreError::SequenceExhausted)
}

/// An unprotected error in place of `response` (same type, ID and token).
fn plain_error(response: &Message, code: Code) -> Message {
    let mut m = Message::new(response.ty, code);
    m.mid = response.mid;
    m.token = response.token;
    m.options.set_uint(OptionNumber::MAX_AGE, 0);
    m
}

/// The answer to a request with an OSCORE option when the server holds no contexts: the
/// option is critical and not understood here (RFC 7252 §5.4.1, RFC 8613 §8.2).
pub(crate) fn not_supported(request: &Message) -> Message {
    let ty = match request.ty {
        MessageType::Con => MessageType::Ack,
        _ => MessageType::Non,
    };
    let mut m = Message::new(ty, Code::BAD_OPTION);
    m.mid = request.mid;
    m.token = request.token;
    m.payload = b"OSCORE is not supported here".to_vec();
    m
}
