//! Message types and codes (RFC 7252 §3, §5.8, §5.9, §12.1; RFC 8132 for FETCH/PATCH/iPATCH).

use std::fmt;

/// The two-bit message type of a datagram header (RFC 7252 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Confirmable: retransmitted until acknowledged.
    Con,
    /// Non-confirmable: sent once.
    Non,
    /// Acknowledgement of a confirmable message.
    Ack,
    /// Reset: the receiver could not process a message.
    Rst,
}

impl MessageType {
    /// Decodes the two-bit field.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 0b11 {
            0 => Self::Con,
            1 => Self::Non,
            2 => Self::Ack,
            _ => Self::Rst,
        }
    }

    /// Encodes as the two-bit field.
    pub fn bits(self) -> u8 {
        match self {
            Self::Con => 0,
            Self::Non => 1,
            Self::Ack => 2,
            Self::Rst => 3,
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Con => "CON",
            Self::Non => "NON",
            Self::Ack => "ACK",
            Self::Rst => "RST",
        })
    }
}

/// A CoAP code: 3-bit class and 5-bit detail, written `c.dd` (RFC 7252 §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(pub u8);

macro_rules! codes {
    ($($(#[$doc:meta])* $name:ident = ($class:literal, $detail:literal), $text:literal;)*) => {
        impl Code {
            $($(#[$doc])* pub const $name: Code = Code(($class << 5) | $detail);)*

            /// The registered name of this code, if any.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Code::$name => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    /// 0.00: an empty message (ping, empty ACK, RST).
    EMPTY = (0, 0), "Empty";
    /// 0.01 GET.
    GET = (0, 1), "GET";
    /// 0.02 POST.
    POST = (0, 2), "POST";
    /// 0.03 PUT.
    PUT = (0, 3), "PUT";
    /// 0.04 DELETE.
    DELETE = (0, 4), "DELETE";
    /// 0.05 FETCH (RFC 8132).
    FETCH = (0, 5), "FETCH";
    /// 0.06 PATCH (RFC 8132).
    PATCH = (0, 6), "PATCH";
    /// 0.07 iPATCH (RFC 8132).
    IPATCH = (0, 7), "iPATCH";
    /// 2.01 Created.
    CREATED = (2, 1), "Created";
    /// 2.02 Deleted.
    DELETED = (2, 2), "Deleted";
    /// 2.03 Valid.
    VALID = (2, 3), "Valid";
    /// 2.04 Changed.
    CHANGED = (2, 4), "Changed";
    /// 2.05 Content.
    CONTENT = (2, 5), "Content";
    /// 2.31 Continue (RFC 7959).
    CONTINUE = (2, 31), "Continue";
    /// 4.00 Bad Request.
    BAD_REQUEST = (4, 0), "Bad Request";
    /// 4.01 Unauthorized.
    UNAUTHORIZED = (4, 1), "Unauthorized";
    /// 4.02 Bad Option.
    BAD_OPTION = (4, 2), "Bad Option";
    /// 4.03 Forbidden.
    FORBIDDEN = (4, 3), "Forbidden";
    /// 4.04 Not Found.
    NOT_FOUND = (4, 4), "Not Found";
    /// 4.05 Method Not Allowed.
    METHOD_NOT_ALLOWED = (4, 5), "Method Not Allowed";
    /// 4.06 Not Acceptable.
    NOT_ACCEPTABLE = (4, 6), "Not Acceptable";
    /// 4.08 Request Entity Incomplete (RFC 7959).
    REQUEST_ENTITY_INCOMPLETE = (4, 8), "Request Entity Incomplete";
    /// 4.09 Conflict (RFC 8132).
    CONFLICT = (4, 9), "Conflict";
    /// 4.12 Precondition Failed.
    PRECONDITION_FAILED = (4, 12), "Precondition Failed";
    /// 4.13 Request Entity Too Large.
    REQUEST_ENTITY_TOO_LARGE = (4, 13), "Request Entity Too Large";
    /// 4.15 Unsupported Content-Format.
    UNSUPPORTED_CONTENT_FORMAT = (4, 15), "Unsupported Content-Format";
    /// 4.22 Unprocessable Entity (RFC 8132).
    UNPROCESSABLE_ENTITY = (4, 22), "Unprocessable Entity";
    /// 4.29 Too Many Requests (RFC 8516).
    TOO_MANY_REQUESTS = (4, 29), "Too Many Requests";
    /// 5.00 Internal Server Error.
    INTERNAL_SERVER_ERROR = (5, 0), "Internal Server Error";
    /// 5.01 Not Implemented.
    NOT_IMPLEMENTED = (5, 1), "Not Implemented";
    /// 5.02 Bad Gateway.
    BAD_GATEWAY = (5, 2), "Bad Gateway";
    /// 5.03 Service Unavailable.
    SERVICE_UNAVAILABLE = (5, 3), "Service Unavailable";
    /// 5.04 Gateway Timeout.
    GATEWAY_TIMEOUT = (5, 4), "Gateway Timeout";
    /// 5.05 Proxying Not Supported.
    PROXYING_NOT_SUPPORTED = (5, 5), "Proxying Not Supported";
    /// 5.08 Hop Limit Reached (RFC 8768).
    HOP_LIMIT_REACHED = (5, 8), "Hop Limit Reached";
    /// 7.01 CSM (RFC 8323).
    CSM = (7, 1), "CSM";
    /// 7.02 Ping (RFC 8323).
    PING = (7, 2), "Ping";
    /// 7.03 Pong (RFC 8323).
    PONG = (7, 3), "Pong";
    /// 7.04 Release (RFC 8323).
    RELEASE = (7, 4), "Release";
    /// 7.05 Abort (RFC 8323).
    ABORT = (7, 5), "Abort";
}

impl Code {
    /// Builds a code from class and detail; `None` when out of range.
    pub fn new(class: u8, detail: u8) -> Option<Self> {
        (class < 8 && detail < 32).then_some(Code((class << 5) | detail))
    }

    /// The class (0 request, 2 success, 4 client error, 5 server error, 7 signaling).
    pub fn class(self) -> u8 {
        self.0 >> 5
    }

    /// The detail (0..=31).
    pub fn detail(self) -> u8 {
        self.0 & 0x1f
    }

    /// 0.00.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A method code (0.01–0.31).
    pub fn is_request(self) -> bool {
        self.class() == 0 && self.detail() != 0
    }

    /// A response code (classes 2–5).
    pub fn is_response(self) -> bool {
        (2..=5).contains(&self.class())
    }

    /// Classes 2.xx.
    pub fn is_success(self) -> bool {
        self.class() == 2
    }

    /// Classes 4.xx and 5.xx.
    pub fn is_error(self) -> bool {
        matches!(self.class(), 4 | 5)
    }

    /// Signaling codes of RFC 8323 (7.xx).
    pub fn is_signaling(self) -> bool {
        self.class() == 7
    }

    /// Parses `GET`, `post`, … (case-insensitive) or a dotted `c.dd` code.
    pub fn parse(text: &str) -> Option<Self> {
        let methods = [
            Code::GET,
            Code::POST,
            Code::PUT,
            Code::DELETE,
            Code::FETCH,
            Code::PATCH,
            Code::IPATCH,
        ];
        if let Some(code) = methods
            .into_iter()
            .find(|c| c.name().is_some_and(|n| n.eq_ignore_ascii_case(text)))
        {
            return Some(code);
        }
        let (class, detail) = text.split_once('.')?;
        if detail.len() != 2 {
            return None;
        }
        Code::new(class.parse().ok()?, detail.parse().ok()?)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.class(), self.detail())
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{self} {name}"),
            None => write!(f, "{self}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        assert_eq!(Code::CONTENT.to_string(), "2.05");
        assert_eq!(Code::parse("2.05"), Some(Code::CONTENT));
        assert_eq!(Code::parse("ipatch"), Some(Code::IPATCH));
        assert_eq!(Code::parse("4.4"), None);
        assert_eq!(Code::parse("8.00"), None);
        assert_eq!(format!("{:?}", Code::NOT_FOUND), "4.04 Not Found");
    }

    #[test]
    fn classes() {
        assert!(Code::GET.is_request());
        assert!(!Code::EMPTY.is_request());
        assert!(Code::BAD_OPTION.is_error());
        assert!(Code::CSM.is_signaling());
        for bits in 0..4 {
            assert_eq!(MessageType::from_bits(bits).bits(), bits);
        }
    }
}
