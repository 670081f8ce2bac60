//! The contexts a server holds, found by the kid (the client's Sender ID, our Recipient ID)
//! and kid context of a request (§8.2 step 2). Several contexts may share a kid when their
//! ID Contexts differ. A request without kid context matches a context without one, or else
//! the only context with its kid (whose ID Context both sides then know; decryption still
//! proves it).
//!
//! Generic over what is stored with each context, so that a runtime can keep its storage
//! (where sequence-number marks go) beside it: anything that lends out its
//! [`SecurityContext`].

use std::borrow::BorrowMut;
use std::collections::HashMap;

use tern_proto::Message;

use crate::context::SecurityContext;
use crate::protect::{request_option, unprotect_request, OscoreError, RequestBinding};

/// The key a context is found by: (Recipient ID, ID Context).
pub type ContextKey = (Vec<u8>, Option<Vec<u8>>);

/// Contexts by Recipient ID, then ID Context: a lookup is two hash probes whatever the number
/// of contexts, including the fallback for a request without kid context.
#[derive(Debug)]
pub struct ContextStore<C = SecurityContext> {
    by_kid: HashMap<Vec<u8>, HashMap<Option<Vec<u8>>, C>>,
    len: usize,
}

impl<C> Default for ContextStore<C> {
    fn default() -> Self {
        ContextStore {
            by_kid: HashMap::new(),
            len: 0,
        }
    }
}

/// Why a context could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Another context already has this Recipient ID and ID Context.
    #[error("a context with this recipient ID and ID context is already held")]
    Duplicate,
}

impl<C: BorrowMut<SecurityContext>> ContextStore<C> {
    /// No contexts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a context; refuses one whose (Recipient ID, ID Context) is taken, as the server
    /// could not tell their requests apart.
    pub fn insert(&mut self, context: C) -> Result<(), StoreError> {
        let security: &SecurityContext = context.borrow();
        let kid = security.recipient_id().to_vec();
        let id_context = security.id_context().map(<[u8]>::to_vec);
        let contexts = self.by_kid.entry(kid).or_default();
        if contexts.contains_key(&id_context) {
            return Err(StoreError::Duplicate);
        }
        contexts.insert(id_context, context);
        self.len += 1;
        Ok(())
    }

    /// Removes a context.
    pub fn remove(&mut self, recipient_id: &[u8], id_context: Option<&[u8]>) -> Option<C> {
        let contexts = self.by_kid.get_mut(recipient_id)?;
        let removed = contexts.remove(&id_context.map(<[u8]>::to_vec))?;
        if contexts.is_empty() {
            self.by_kid.remove(recipient_id);
        }
        self.len -= 1;
        Some(removed)
    }

    /// The context for exactly `kid` and `kid_context`.
    pub fn get_mut(&mut self, kid: &[u8], kid_context: Option<&[u8]>) -> Option<&mut C> {
        self.by_kid
            .get_mut(kid)?
            .get_mut(&kid_context.map(<[u8]>::to_vec))
    }

    /// The context a request with `kid` and `kid_context` is for, with its key: the exact
    /// match, or, when no kid context was sent, the only context with that kid.
    pub fn find_mut(
        &mut self,
        kid: &[u8],
        kid_context: Option<&[u8]>,
    ) -> Option<(ContextKey, &mut C)> {
        let contexts = self.by_kid.get_mut(kid)?;
        let id_context = match kid_context {
            Some(given) => Some(given.to_vec()),
            None if contexts.contains_key(&None) => None,
            None if contexts.len() == 1 => contexts.keys().next()?.clone(),
            None => return None,
        };
        let context = contexts.get_mut(&id_context)?;
        Some(((kid.to_vec(), id_context), context))
    }

    /// How many contexts are held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every context with its key.
    pub fn iter(&self) -> impl Iterator<Item = (ContextKey, &C)> {
        self.by_kid.iter().flat_map(|(kid, contexts)| {
            contexts
                .iter()
                .map(move |(id_context, c)| ((kid.clone(), id_context.clone()), c))
        })
    }

    /// Unprotects a request with the context its kid and kid context name; returns that
    /// context's key with the inner request and the binding for the response.
    pub fn unprotect_request(
        &mut self,
        request: &Message,
    ) -> Result<(ContextKey, Message, RequestBinding), OscoreError> {
        let option = request_option(request)?;
        let kid = option.kid.unwrap_or_default();
        let (key, context) = self
            .find_mut(&kid, option.kid_context.as_deref())
            .ok_or(OscoreError::UnknownContext)?;
        let (inner, binding) = unprotect_request(context.borrow_mut(), request)?;
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

    #[test]
    fn a_missing_kid_context_finds_the_only_context_with_that_kid() {
        let mut store = ContextStore::new();
        let (_, group) = pair(b"a", Some(b"g1"), b"secret-g-0123456");
        store.insert(group).unwrap();
        let (key, _) = store.find_mut(b"a", None).unwrap();
        assert_eq!(key, (b"a".to_vec(), Some(b"g1".to_vec())));
        assert!(store.find_mut(b"a", Some(b"g2")).is_none());
        let (_, other) = pair(b"a", Some(b"g2"), b"secret-g-0123456");
        store.insert(other).unwrap();
        assert!(
            store.find_mut(b"a", None).is_none(),
            "two candidates: ambiguous"
        );
        assert_eq!(store.len(), 2);
        assert!(store.remove(b"a", Some(b"g1")).is_some());
        assert!(store.remove(b"a", Some(b"g1")).is_none());
        assert_eq!(store.len(), 1);
        assert_eq!(store.iter().count(), 1);
    }
}
