//! A client's OSCORE context: requests protected with it, responses and notifications
//! unprotected, and the stored sequence-number mark kept ahead of use.

use std::sync::{Arc, Mutex};

use tern_oscore::{protect_request, unprotect_notification, unprotect_response, RequestBinding};
use tern_proto::{Message, OptionNumber};

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

    /// Unprotects the response to the request `binding` describes (a notification's Partial
    /// IV moves the replay window). An unprotected answer is [`Error::OscoreRefused`].
    pub fn unprotect(
        &self,
        binding: &RequestBinding,
        response: &Message,
    ) -> Result<Message, Error> {
        refused_unless_protected(response)?;
        let mut context = self.lock();
        Ok(unprotect_response(&mut context.context, binding, response)?)
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
