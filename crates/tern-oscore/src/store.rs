//! The contexts a server holds, found by the kid (the client's Sender ID, our Recipient ID)
//! and kid context of a request (§8.2 step 2). Several contexts may share a kid when their
//! ID Contexts differ; a request without kid context then matches only a context without one.

use std::collections::HashMap;

use tern_proto::Message;

use crate::context::SecurityContext;
use crate::protect::{request_option, unprotect_request, OscoreError, RequestBinding};

/// The key a context is found by: (Recipient ID, ID Context).
pub type ContextKey = (Vec<u8>, Option<Vec<u8>>);

/// Contexts by (Recipient ID, ID Context).
#[derive(Debug, Default)]
pub struct ContextStore {
    contexts: HashMap<ContextKey, SecurityContext>,
}

/// Why a context could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another context already has this Recipient ID and ID Context.
    #[error("a context with this recipient ID and ID context is already held")]
    Duplicate,
}

impl ContextStore {
    /// No contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a context; refuses one whose (Recipient ID, ID Context) is taken, as the server
    /// could not tell their requests apart.
    pub fn insert(&mut self, context: SecurityContext) -> Result<(), StoreError> {
        let key = (
            context.recipient_id().to_vec(),
            context.id_context().map(<[u8]>::to_vec),
        );
        if self.contexts.contains_key(&key) {
            return Err(StoreError::Duplicate);
        }
        self.contexts.insert(key, context);
        Ok(())
    }

    /// Removes a context.
    pub fn remove(
        &mut self,
        recipient_id: &[u8],
        id_context: Option<&[u8]>,
    ) -> Option<SecurityContext> {
        self.contexts
            .remove(&(recipient_id.to_vec(), id_context.map(<[u8]>::to_vec)))
    }

    /// The context for `kid` and `kid_context`.
    pub fn get_mut(
        &mut self,
        kid: &[u8],
        kid_context: Option<&[u8]>,
    ) -> Option<&mut SecurityContext> {
        self.contexts
            .get_mut(&(kid.to_vec(), kid_context.map(<[u8]>::to_vec)))
    }

    /// How many contexts are held.
    pub fn len(&self) -> usize {
        self.contexts.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.contexts.is_empty()
    }

    /// Unprotects a request with the context its kid and kid context name; returns that
    /// context's key with the inner request and the binding for the response.
    pub fn unprotect_request(
        &mut self,
        request: &Message,
    ) -> Result<(ContextKey, Message, RequestBinding), OscoreError> {
        let option = request_option(request)?;
        let kid = option.kid.unwrap_or_default();
        let key = (kid, option.kid_context);
        let context = self
            .contexts
            .get_mut(&key)
            .ok_or(OscoreError::UnknownContext)?;
        let (inner, binding) = unprotect_request(context, request)?;
        Ok((key, inner, binding))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::ContextParams;
    use crate::protect::protect_request;
    use tern_proto::{Code, MessageType};

    fn pair(
        client: &[u8],
        context: Option<&[u8]>,
        secret: &[u8],
    ) -> (SecurityContext, SecurityContext) {
        let mut c = ContextParams::new(secret, client, b"srv");
        let mut s = ContextParams::new(secret, b"srv", client);
        c.id_context = context.map(<[u8]>::to_vec);
        s.id_context = context.map(<[u8]>::to_vec);
        (
            SecurityContext::derive(&c).unwrap(),
            SecurityContext::derive(&s).unwrap(),
        )
    }

    #[test]
    fn finds_contexts_by_kid_and_kid_context() {
        let mut store = ContextStore::new();
        let (mut a, sa) = pair(b"a", None, b"secret-a-0123456");
        let (mut b, sb) = pair(b"b", None, b"secret-b-0123456");
        let (mut g, sg) = pair(b"a", Some(b"group"), b"secret-g-0123456");
        store.insert(sa).unwrap();
        store.insert(sb).unwrap();
        store.insert(sg).unwrap();
        let (_, again) = pair(b"a", None, b"other");
        assert_eq!(store.insert(again), Err(StoreError::Duplicate));
        assert_eq!(store.len(), 3);
        let mut request = Message::new(MessageType::Con, Code::GET);
        request.set_path("/r");
        for (client, send_context, key) in [
            (&mut a, false, (b"a".to_vec(), None)),
            (&mut b, false, (b"b".to_vec(), None)),
            (&mut g, true, (b"a".to_vec(), Some(b"group".to_vec()))),
        ] {
            let (outer, _) = protect_request(client, &request, send_context).unwrap();
            let (found, inner, _) = store.unprotect_request(&outer).unwrap();
            assert_eq!(found, key);
            assert_eq!(inner.path(), "r");
        }
        // The group client leaving its kid context out finds the plain context of kid "a",
        // whose keys differ: the request does not decrypt.
        let (outer, _) = protect_request(&mut g, &request, false).unwrap();
        assert_eq!(
            store.unprotect_request(&outer).unwrap_err(),
            OscoreError::Decrypt
        );
        let (mut stranger, _) = pair(b"zz", None, b"secret-z-0123456");
        let (outer, _) = protect_request(&mut stranger, &request, false).unwrap();
        assert_eq!(
            store.unprotect_request(&outer).unwrap_err(),
            OscoreError::UnknownContext
        );
        assert!(store.remove(b"b", None).is_some());
        assert!(store.get_mut(b"b", None).is_none());
    }
}
