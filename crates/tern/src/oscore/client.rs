//! A client's OSCORE context: requests protected with it, responses and notifications
//! unprotected, and the stored sequence-number mark kept ahead of use.

use std::sync::{Arc, Mutex};

use tern_oscore::context::MAX_SEQUENCE_NUMBER;
use tern_oscore::rederive::{self, FirstExchange};
use tern_oscore::{
    protect_request, unprotect_notification, unprotect_response, OscoreError, RequestBinding,
};
use tern_proto::{Code, Message, MessageType, OptionNumber};

use super::OscoreContext;
use crate::error::Error;

/// A client's security context, for [`RequestBuilder::oscore`](crate::RequestBuilder::oscore).
/// Cheap to clone: clones share the context, so concurrent requests take distinct sequence
/// numbers.
#[derive(Clone)]
pub struct OscoreClient {
    context: Arc<Mutex<OscoreContext>>,
    send_kid_context: bool,
}

impl std::fmt::Debug for OscoreClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscoreClient")
            .field("context", &*self.lock())
            .finish()
    }
}

impl OscoreClient {
    /// A client using `context`. Requests carry its ID Context as kid context (when it has
    /// one), so that the server can find the context.
    pub fn new(context: OscoreContext) -> Self {
        OscoreClient {
            context: Arc::new(Mutex::new(context)),
            send_kid_context: true,
        }
    }

    /// Leaves the kid context out of requests (for servers that know the ID Context already).
    pub fn without_kid_context(mut self) -> Self {
        self.send_kid_context = false;
        self
    }

    /// The next sequence number requests will use.
    pub fn sender_sequence(&self) -> u64 {
        self.lock().context.sender_sequence()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OscoreContext> {
        self.context
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Protects a request, storing the next sequence-number mark first when one is due; the
    /// binding unprotects its response. [`RequestBuilder::oscore`](crate::RequestBuilder::oscore)
    /// does this (and Echo, block-wise, Observe) by itself; this is for messages sent with
    /// [`Context::send`](crate::Context::send) and its kin.
    pub fn protect(&self, request: &Message) -> Result<(Message, RequestBinding), Error> {
        let mut context = self.lock();
        context
            .reserve()
            .map_err(|e| Error::OscoreConfig(super::OscoreConfigError::Folder(e)))?;
        Ok(protect_request(
            &mut context.context,
            request,
            self.send_kid_context,
        )?)
    }

    /// Asks for a re-derivation of the context (RFC 8613 Appendix B.2) before the next
    /// request, as a client does that lost its sequence-number state: the next request made
    /// through [`RequestBuilder::oscore`](crate::RequestBuilder::oscore) first runs the
    /// procedure's first exchange. Turns re-derivation on for this context.
    pub fn rederive(&self) {
        let mut context = self.lock();
        context.rederivation = true;
        context.rederivation_due = true;
    }

    /// The context's ID Context (it changes with each re-derivation).
    pub fn id_context(&self) -> Option<Vec<u8>> {
        self.lock().context.id_context().map(<[u8]>::to_vec)
    }

    /// Request #1 of a re-derivation when one is due (asked for, or the sequence numbers are
    /// used up and re-derivation is allowed): a GET of the server's root, protected with a
    /// fresh random ID Context. The server does not act on it.
    pub(crate) fn first_exchange(&self) -> Result<Option<(Message, FirstExchange)>, Error> {
        let context = self.lock();
        let exhausted = context.context.sender_sequence() > MAX_SEQUENCE_NUMBER;
        if !(context.rederivation_due || context.rederivation && exhausted) {
            return Ok(None);
        }
        let id1 = random_nonce()?;
        let probe = Message::new(MessageType::Con, Code::GET);
        Ok(Some(FirstExchange::start(&context.context, id1, &probe)?))
    }

    /// Checks Response #1 and moves to the re-derived context, stored before use; its
    /// requests carry the wire form of its ID Context until a response confirms it.
    pub(crate) fn finish_first_exchange(
        &self,
        first: &FirstExchange,
        response: &Message,
    ) -> Result<(), Error> {
        refused_unless_protected(response)?;
        let r3 = random_nonce()?;
        let mut context = self.lock();
        let next = first.finish(&context.context, response, r3)?;
        adopt_unconfirmed(&mut context, next)?;
        context.rederivation_due = false;
        tracing::debug!("OSCORE re-derivation: Response #1 verified");
        Ok(())
    }

    /// Unprotects the response to the request `binding` describes (a notification's Partial
    /// IV moves the replay window). An unprotected answer is [`Error::OscoreRefused`]. When
    /// the server started a re-derivation and this context allows it, the client follows
    /// and the answer is [`Error::OscoreRederived`]: send the request again.
    pub fn unprotect(
        &self,
        binding: &RequestBinding,
        response: &Message,
    ) -> Result<Message, Error> {
        refused_unless_protected(response)?;
        let mut context = self.lock();
        if context.rederivation && rederive::is_server_initiated(response) {
            let r3 = random_nonce()?;
            let next = rederive::answer_server_initiated(&context.context, binding, response, r3)?;
            adopt_unconfirmed(&mut context, next)?;
            tracing::debug!("OSCORE re-derivation started by the server: followed");
            return Err(Error::OscoreRederived);
        }
        let message = match unprotect_response(&mut context.context, binding, response) {
            Ok(message) => message,
            // A response #1 is protected with a context this one does not derive.
            Err(_) if rederive::is_server_initiated(response) => {
                return Err(Error::OscoreRederivationNotAllowed)
            }
            Err(e) => return Err(e.into()),
        };
        confirm(&mut context)?;
        Ok(message)
    }

    /// Unprotects a notification after an observation's first response: it must have a
    /// Partial IV of its own, fresh in the replay window.
    pub(crate) fn unprotect_notification(
        &self,
        binding: &RequestBinding,
        response: &Message,
    ) -> Result<Message, Error> {
        refused_unless_protected(response)?;
        let mut context = self.lock();
        Ok(unprotect_notification(
            &mut context.context,
            binding,
            response,
        )?)
    }
}

/// Moves to a re-derived context, marked unconfirmed: requests carry the wire form of its ID
/// Context, by which the server recognises Request #2.
fn adopt_unconfirmed(
    context: &mut OscoreContext,
    mut next: tern_oscore::SecurityContext,
) -> Result<(), Error> {
    let wire = rederive::wire_id_context(next.id_context().unwrap_or_default());
    next.set_wire_kid_context(Some(wire));
    context
        .adopt(next)
        .map_err(|e| Error::OscoreConfig(super::OscoreConfigError::Folder(e)))
}

/// A response verified under a re-derived context confirms it: from now on its requests
/// carry the plain ID Context.
fn confirm(context: &mut OscoreContext) -> Result<(), Error> {
    if context.context.wire_kid_context().is_none() {
        return Ok(());
    }
    context.context.set_wire_kid_context(None);
    if let Some(folder) = &context.folder {
        folder
            .record_confirmed(&context.context)
            .map_err(|e| Error::OscoreConfig(super::OscoreConfigError::Folder(e)))?;
    }
    tracing::info!("OSCORE context re-derived (Appendix B.2)");
    Ok(())
}

fn random_nonce() -> Result<[u8; rederive::NONCE_LEN], Error> {
    let mut nonce = [0u8; rederive::NONCE_LEN];
    getrandom::getrandom(&mut nonce)
        .map_err(|_| Error::Oscore(OscoreError::Unprotectable("no randomness for a nonce")))?;
    Ok(nonce)
}

/// An answer without the OSCORE option: the server could not process the request as OSCORE
/// (§8.2), and only its code says why.
fn refused_unless_protected(response: &Message) -> Result<(), Error> {
    if response.options.contains(OptionNumber::OSCORE) {
        return Ok(());
    }
    Err(Error::OscoreRefused {
        code: response.code,
        diagnostic: String::from_utf8_lossy(&response.payload).into_owned(),
    })
}
