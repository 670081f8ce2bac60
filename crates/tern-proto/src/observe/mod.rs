//! Observing resources (RFC 7641), the parts that are not the message layer's: the client's
//! notification ordering (§3.4) and the server's list of observers (§4.1, §4.4, §4.5).
//!
//! The message layer itself keeps observations open and sends notifications: see
//! [`Endpoint::request`](crate::Endpoint::request) with an Observe option of 0,
//! [`Event::Notification`](crate::Event::Notification), [`Endpoint::deregister`](crate::Endpoint::deregister)
//! and [`Endpoint::notify`](crate::Endpoint::notify).
//!
//! - [`NotificationOrder`] decides whether a notification is newer than the freshest one seen
//!   (§3.4), with the 24-bit wrap-around and the 128-second rule.
//! - [`ObserverRegistry`] is the server's list of observers per resource (§4.1), with caps,
//!   re-registration, a 24-bit sequence number per resource (§4.4) and the rule that an observer
//!   gets a confirmable notification at least every 24 hours (§4.5).

mod order;
mod registry;

pub use order::{is_newer, NotificationOrder, FRESHNESS_WINDOW, OBSERVE_MODULUS};
pub use registry::{ObserveError, Observer, ObserverRegistry, Registered, RegistryConfig};

use crate::code::Code;
use crate::message::Message;
use crate::option::OptionNumber;

/// The Observe value of a GET or FETCH that registers an observation (§2).
pub const REGISTER: u32 = 0;
/// The Observe value of a GET or FETCH that cancels an observation (§2, §3.6).
pub const DEREGISTER: u32 = 1;

/// The Observe option's value, if the message carries one that decodes (0–3 bytes, §2).
pub fn observe_value(message: &Message) -> Option<u32> {
    message.options.get_uint(OptionNumber::OBSERVE)
}

/// The deregistration of an observation registered with `registration` (RFC 7641 §3.6): the
/// registration with Observe 1, or `given` (an OSCORE deregistration, protected anew) on the
/// registration's token.
pub fn deregistration(registration: &Message, given: Option<Message>) -> Message {
    match given {
        Some(mut message) => {
            message.token = registration.token;
            message
        }
        None => {
            let mut message = registration.clone();
            message
                .options
                .set_uint(crate::option::OptionNumber::OBSERVE, DEREGISTER);
            message
        }
    }
}

/// Whether a request asks to register an observation: GET or FETCH with Observe 0 (§2, §3.1;
/// FETCH per RFC 8132 §2.4).
pub fn is_registration(request: &Message) -> bool {
    matches!(request.code, Code::GET | Code::FETCH) && observe_value(request) == Some(REGISTER)
}

/// Whether a response keeps an observation going: a success (2.xx) that carries an Observe
/// option (§3.2, §4.2). Any other response to an observation is its last.
pub fn continues_observation(response: &Message) -> bool {
    response.code.class() == 2 && observe_value(response).is_some()
}
