//! OSCORE (RFC 8613) in the runtime: security contexts with their storage, a server's
//! contexts ([`OscoreServer`], applied by every endpoint and connection serving its router)
//! and a client's ([`OscoreClient`], applied per request). Protection itself is the sans-IO
//! [`tern_oscore`]'s; this module decides when it happens and keeps sequence numbers stored
//! ahead of use.
//!
//! Where it sits in a request's path (server):
//!
//! ```text
//! message layer → outer block-wise (only when the outer message carries Block options, that
//! is when a proxy fragmented it, §4.1.3.4.2) → unprotect → inner block-wise → router
//! ```
//!
//! and the response goes back through the same layers in reverse. Block-wise between the
//! endpoints is inner (§4.1.3.4.1): each block is its own OSCORE exchange, so a block is never
//! sent twice under one nonce and the replay window sees every block.

mod client;
mod server;

use std::path::PathBuf;

use tern_oscore::{ContextFolder, FolderError, SecurityContext};

pub use client::OscoreClient;
pub use server::OscoreServer;
pub(crate) use server::{not_supported as server_not_supported, Protection};

/// How many sequence numbers a stored mark reserves by default: storage is written (and
/// synced) once per this many messages; a crash skips at most this many numbers.
pub const DEFAULT_MARK_STEP: u64 = 256;

/// Bytes OSCORE adds to a response, at most in practice: the OSCORE option with a Partial
/// IV, the inner code and options (which move into the ciphertext), a 16-byte tag.
pub(crate) const OSCORE_OVERHEAD: usize = 64;

/// Who a request was protected by, as a handler sees it: the client's Sender ID (the kid) and
/// the ID Context of the security context it used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OscoreIdentity {
    /// The kid: the client's Sender ID (our Recipient ID).
    pub kid: Vec<u8>,
    /// The context's ID Context, if it has one.
    pub kid_context: Option<Vec<u8>>,
}

/// Why an OSCORE context could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum OscoreConfigError {
    /// The context folder could not be read, or a mark not stored.
    #[error(transparent)]
    Folder(#[from] FolderError),
    /// Two contexts a server holds have the same Recipient ID and ID Context.
    #[error("{0}: another context already has this recipient ID and ID context")]
    Duplicate(String),
}

/// A security context and where its sequence-number marks are stored (Appendix B.1.1).
pub struct OscoreContext {
    pub(crate) context: SecurityContext,
    /// The folder it came from: marks go to its `sequence.json`. `None`: kept in memory only.
    pub(crate) folder: Option<ContextFolder>,
    /// How many numbers each stored mark reserves (for contexts re-derived from this one).
    pub(crate) mark_step: u64,
    /// Whether context re-derivation (Appendix B.2) may be used with this peer.
    pub(crate) rederivation: bool,
    /// A client asked for a re-derivation before its next request.
    pub(crate) rederivation_due: bool,
}

impl std::fmt::Debug for OscoreContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OscoreContext")
            .field("sender_id", &self.context.sender_id())
            .field("recipient_id", &self.context.recipient_id())
            .field("folder", &self.folder.as_ref().map(ContextFolder::path))
            .finish_non_exhaustive()
    }
}

impl std::borrow::Borrow<SecurityContext> for OscoreContext {
    fn borrow(&self) -> &SecurityContext {
        &self.context
    }
}

impl std::borrow::BorrowMut<SecurityContext> for OscoreContext {
    fn borrow_mut(&mut self) -> &mut SecurityContext {
        &mut self.context
    }
}

impl OscoreContext {
    /// A context kept in memory only: its sequence numbers start where it stands and are not
    /// stored, so it must not outlive the process (tests, or keys used once).
    pub fn in_memory(context: SecurityContext) -> Self {
        OscoreContext {
            context,
            folder: None,
            mark_step: DEFAULT_MARK_STEP,
            rederivation: false,
            rederivation_due: false,
        }
    }

    /// Allows context re-derivation (RFC 8613 Appendix B.2) with this peer, in both roles:
    /// a server accepts a client's re-derivation, and answers a request it cannot prove fresh
    /// (its replay window lost) by starting one rather than with an Echo challenge; a client
    /// follows a re-derivation the server starts, and starts one itself when its sequence
    /// numbers run out or [`OscoreClient::rederive`] asks. Both ends must allow it: a peer
    /// without it answers a re-derivation's requests with errors.
    pub fn with_rederivation(mut self, allowed: bool) -> Self {
        self.rederivation = allowed;
        self
    }

    /// Whether re-derivation is allowed.
    pub fn rederivation(&self) -> bool {
        self.rederivation
    }

    /// Replaces the context with one re-derived from it, storing it first (with a folder, in
    /// `rederived.json`, before any of its numbers is used).
    pub(crate) fn adopt(&mut self, mut context: SecurityContext) -> Result<(), FolderError> {
        if let Some(folder) = &self.folder {
            folder.adopt(&mut context, self.mark_step)?;
        }
        self.context = context;
        Ok(())
    }

    /// A context for `context`, re-derived from this one: the same folder and settings, stored
    /// before it is used.
    pub(crate) fn successor(&self, mut context: SecurityContext) -> Result<Self, FolderError> {
        if let Some(folder) = &self.folder {
            folder.adopt(&mut context, self.mark_step)?;
        }
        Ok(OscoreContext {
            context,
            folder: self.folder.clone(),
            mark_step: self.mark_step,
            rederivation: self.rederivation,
            rederivation_due: false,
        })
    }

    /// The context of an aiocoap-format folder (`settings.json`, `secret.json`,
    /// `sequence.json`): sequence numbers continue beyond the stored mark, and marks are stored
    /// in the folder `step` numbers ahead of use. A folder whose replay window was not stored
    /// (Tern never stores it) starts with the replay state lost, so requests are challenged
    /// with Echo until one proves fresh (Appendix B.1.2).
    pub fn from_folder(dir: impl Into<PathBuf>, step: u64) -> Result<Self, OscoreConfigError> {
        let folder = ContextFolder::new(dir.into());
        let loaded = folder.load()?;
        let mut context = loaded.context;
        context.persist_sequence_numbers(loaded.stored_mark, step);
        Ok(OscoreContext {
            context,
            folder: Some(folder),
            mark_step: step,
            rederivation: false,
            rederivation_due: false,
        })
    }

    /// The security context.
    pub fn context(&self) -> &SecurityContext {
        &self.context
    }

    /// Where it is stored, if anywhere.
    pub fn folder(&self) -> Option<&std::path::Path> {
        self.folder.as_ref().map(ContextFolder::path)
    }

    /// Stores the next mark if one is due, so that the next sequence number may be used.
    pub(crate) fn reserve(&mut self) -> Result<(), FolderError> {
        match &self.folder {
            Some(folder) => folder.reserve(&mut self.context),
            None => Ok(()),
        }
    }

    /// A name for messages: the folder, or the IDs.
    pub(crate) fn describe(&self) -> String {
        match &self.folder {
            Some(folder) => folder.path().display().to_string(),
            None => format!(
                "context with recipient ID {:02x?}",
                self.context.recipient_id()
            ),
        }
    }
}
