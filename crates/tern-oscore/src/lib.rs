//! Sans-IO OSCORE (RFC 8613): security contexts derived as §3.2 says, protection and
//! unprotection of requests and responses (§5, §8), the recipient's replay window (§7.4),
//! Echo recovery (Appendix B.1.2) and context re-derivation (Appendix B.2).
//! Messages in, messages out: no sockets, no clocks.
//!
//! ```
//! use tern_oscore::{protect_request, unprotect_request, ContextParams, SecurityContext};
//! use tern_proto::{Code, Message, MessageType};
//!
//! let secret = [7u8; 16];
//! let mut client = SecurityContext::derive(&ContextParams::new(&secret, b"c", b"s")).unwrap();
//! let mut server = SecurityContext::derive(&ContextParams::new(&secret, b"s", b"c")).unwrap();
//! let mut request = Message::new(MessageType::Con, Code::GET);
//! request.set_path("/temperature");
//! let (protected, _) = protect_request(&mut client, &request, false).unwrap();
//! assert_eq!(protected.code, Code::POST);
//! let (inner, _) = unprotect_request(&mut server, &protected).unwrap();
//! assert_eq!(inner.path(), "temperature");
//! // The same message again is a replay.
//! assert!(unprotect_request(&mut server, &protected).is_err());
//! ```
#![warn(missing_docs)]

pub mod algorithm;
mod cbor;
pub mod context;
pub mod credentials;
pub mod folder;
pub mod option;
pub mod persist;
pub mod protect;
pub mod rederive;
pub mod replay;
pub mod store;

pub use algorithm::{Aead, AeadError};
pub use context::{ContextError, ContextParams, Key, SecurityContext};
pub use folder::{ContextFolder, FolderError, LoadedContext};
pub use option::{OptionError, OscoreOption};
pub use persist::SequenceFile;
pub use protect::{
    echo_challenge, error_response, protect_request, protect_request_with_kid_context,
    protect_response, request_option, unprotect_notification, unprotect_request,
    unprotect_response, OscoreError, RequestBinding,
};
pub use replay::{Replay, ReplayWindow};
pub use store::{ContextKey, ContextStore, StoreError};
