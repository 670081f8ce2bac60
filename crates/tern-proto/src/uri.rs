//! CoAP URIs (RFC 7252 §6; RFC 8323 §8 for `coap+tcp` and `coaps+tcp`).
//!
//! [`CoapUri::parse`] decomposes a URI the way §6.4 turns one into request options, and
//! [`CoapUri::from_options`] composes one from the options of a request (§6.5). A [`CoapUri`]
//! holds the *decoded* components, so two URIs that §6.3 calls equivalent parse to equal values:
//!
//! ```
//! use tern_proto::uri::CoapUri;
//! let a = CoapUri::parse("coap://example.com:5683/~sensors/temp.xml").unwrap();
//! let b = CoapUri::parse("coap://EXAMPLE.com/%7Esensors/temp.xml").unwrap();
//! let c = CoapUri::parse("coap://EXAMPLE.com:/%7esensors/temp.xml").unwrap();
//! assert!(a == b && b == c);
//! assert_eq!(a.to_string(), "coap://example.com/~sensors/temp.xml");
//! ```
//!
//! The canonical form that parsing and composing produce, and that `Display` relies on for
//! `parse(display(u)) == u`:
//! - `port` is `None` when the port is the scheme's default;
//! - a [`Host::Name`] is lowercased (ASCII) and is never text that reads as an IP address;
//! - `path` is never exactly one empty segment (`coap://h/` has no Uri-Path, §6.4 step 8).
//!
//! Choices where the RFCs leave room:
//! - Dot segments (`.` and `..`) are removed from the path as RFC 3986 §5.2.4 reference
//!   resolution (§6.4 step 2) requires. A Uri-Path option whose value is `.` or `..` is written
//!   as `%2E` or `%2E%2E`, which survives parsing.
//! - Non-ASCII characters are accepted where a URI would need them percent-encoded (as an IRI
//!   would be mapped, RFC 3987 §3.1); `Display` always writes ASCII.
//! - Reg-names are percent-decoded and then lowercased, so `%41` and `a` name the same host.
//! - User information (`user@host`) is refused: CoAP has no use for it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::option::{decode_uint, OptionNumber};

/// The longest Uri-Host, Uri-Path or Uri-Query value (RFC 7252 §5.10).
pub const MAX_COMPONENT_LEN: usize = 255;

/// The URI schemes CoAP defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `coap`: CoAP over UDP (RFC 7252).
    Coap,
    /// `coaps`: CoAP over DTLS (RFC 7252).
    Coaps,
    /// `coap+tcp`: CoAP over TCP (RFC 8323).
    CoapTcp,
    /// `coaps+tcp`: CoAP over TLS (RFC 8323).
    CoapsTcp,
}

impl Scheme {
    /// The scheme as written in a URI.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Coap => "coap",
            Scheme::Coaps => "coaps",
            Scheme::CoapTcp => "coap+tcp",
            Scheme::CoapsTcp => "coaps+tcp",
        }
    }

    /// The port used when a URI names none: 5683 without security, 5684 with.
    pub fn default_port(self) -> u16 {
        if self.is_secure() {
            5684
        } else {
            5683
        }
    }

    /// Whether the transport is secured (DTLS or TLS).
    pub fn is_secure(self) -> bool {
        matches!(self, Scheme::Coaps | Scheme::CoapsTcp)
    }

    /// Whether the transport is reliable (TCP or TLS, RFC 8323).
    pub fn is_reliable(self) -> bool {
        matches!(self, Scheme::CoapTcp | Scheme::CoapsTcp)
    }

    /// Reads a scheme name, ignoring ASCII case.
    pub fn parse(text: &str) -> Result<Self, UriError> {
        [
            Scheme::Coap,
            Scheme::Coaps,
            Scheme::CoapTcp,
            Scheme::CoapsTcp,
        ]
        .into_iter()
        .find(|s| s.as_str().eq_ignore_ascii_case(text))
        .ok_or_else(|| UriError::UnknownScheme(excerpt(text)))
    }
}

impl FromStr for Scheme {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        Scheme::parse(text)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The host of a CoAP URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 address (`192.0.2.1`).
    Ipv4(Ipv4Addr),
    /// An IPv6 address, written in brackets in a URI (`[2001:db8::1]`).
    Ipv6(Ipv6Addr),
    /// A registered name, percent-decoded and lowercased (`example.com`).
    Name(String),
}

impl Host {
    /// The canonical host for a decoded name: an IP address when the text reads as one
    /// (`192.0.2.1`, `::1`, `[::1]`), otherwise the name lowercased (ASCII only, RFC 3986 §6.2.2.1).
    pub fn from_name(name: &str) -> Host {
        if let Ok(v4) = name.parse::<Ipv4Addr>() {
            return Host::Ipv4(v4);
        }
        let inner = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if let Ok(v6) = inner.parse::<Ipv6Addr>() {
            return Host::Ipv6(v6);
        }
        Host::Name(name.to_ascii_lowercase())
    }

    /// Whether this is an IP address rather than a name.
    pub fn is_ip(&self) -> bool {
        !matches!(self, Host::Name(_))
    }
}

/// Writes the host as it appears in a URI: IPv6 in brackets, names percent-encoded.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
            Host::Name(n) => write_encoded(f, n, is_reg_name_char),
        }
    }
}

/// Why a URI or a set of URI options is not a usable CoAP URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// No scheme: a relative reference or not a URI at all.
    #[error("not an absolute URI (expected scheme://host/path, e.g. coap://example.com/)")]
    NotAbsolute,
    /// A scheme other than the four CoAP ones.
    #[error("unknown scheme {0:?} (expected coap, coaps, coap+tcp or coaps+tcp)")]
    UnknownScheme(String),
    /// A `#fragment` (§6.4 step 4).
    #[error("fragment not allowed in a CoAP URI")]
    Fragment,
    /// No authority, or an empty host.
    #[error("missing host")]
    MissingHost,
    /// `user@host`.
    #[error("user information (user@host) not allowed in a CoAP URI")]
    UserInfo,
    /// A port that is not a decimal number in 0..=65535.
    #[error("invalid port {0:?}")]
    InvalidPort(String),
    /// Bracketed text that is not an IPv6 address.
    #[error("invalid IPv6 address {0:?}")]
    InvalidIpv6(String),
    /// An IPv6 zone identifier (`[fe80::1%25eth0]`), which has no meaning beyond one host.
    #[error("IPv6 zone identifiers are not allowed in a CoAP URI")]
    Ipv6Zone,
    /// A `%` not followed by two hexadecimal digits.
    #[error("invalid percent-encoding at byte {at}")]
    InvalidPercentEncoding {
        /// Byte offset of the `%` in the input.
        at: usize,
    },
    /// A character that may not appear unencoded where it stands.
    #[error("invalid character {ch:?} at byte {at} (percent-encode it)")]
    InvalidCharacter {
        /// The character.
        ch: char,
        /// Byte offset in the input.
        at: usize,
    },
    /// Percent-decoding produced bytes that are not UTF-8.
    #[error("{component} is not valid UTF-8 after percent-decoding")]
    NotUtf8 {
        /// `host`, `path segment` or `query item`.
        component: &'static str,
    },
    /// A component longer than its option allows.
    #[error("{component} of {len} bytes is longer than 255 bytes")]
    TooLong {
        /// `host`, `path segment` or `query item`.
        component: &'static str,
        /// The decoded length.
        len: usize,
    },
    /// A URI option whose value cannot be used.
    #[error("invalid {option} option: {reason}")]
    InvalidOption {
        /// The option.
        option: OptionNumber,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A decoded CoAP URI (see the module documentation for its canonical form).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CoapUri {
    /// The scheme.
    pub scheme: Scheme,
    /// The host.
    pub host: Host,
    /// The port, `None` when it is the scheme's default.
    pub port: Option<u16>,
    /// The decoded path segments, one per Uri-Path option.
    pub path: Vec<String>,
    /// The decoded query items, one per Uri-Query option.
    pub query: Vec<String>,
}

impl CoapUri {
    /// Parses and decomposes an absolute CoAP URI (RFC 7252 §6.4).
    pub fn parse(input: &str) -> Result<Self, UriError> {
        let (scheme_text, rest) = input.split_once(':').ok_or(UriError::NotAbsolute)?;
        if !is_scheme_syntax(scheme_text) {
            return Err(UriError::NotAbsolute);
        }
        let scheme = Scheme::parse(scheme_text)?;
        if rest.contains('#') {
            return Err(UriError::Fragment);
        }
        let (hier, query_text) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let authority_at = scheme_text.len() + 3;
        let after = hier.strip_prefix("//").ok_or(UriError::MissingHost)?;
        let (authority, path_text) = match after.find('/') {
            Some(i) => after.split_at_checked(i).unwrap_or((after, "")),
            None => (after, ""),
        };
        let (host, port) = parse_authority(authority, authority_at)?;
        let port = port.filter(|&p| p != scheme.default_port());
        let path = parse_path(path_text, authority_at + authority.len())?;
        let query = match query_text {
            Some(q) => parse_query(q, scheme_text.len() + 1 + hier.len() + 1)?,
            None => Vec::new(),
        };
        Ok(CoapUri {
            scheme,
            host,
            port,
            path,
            query,
        })
    }

    /// The port to use: the explicit one or the scheme's default.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.scheme.default_port())
    }

    /// The request options for this URI when the request goes to this URI's host and port
    /// (RFC 7252 §6.4 steps 5–9), in option-number order.
    ///
    /// Uri-Host is included only for a name: an IP literal is the destination address itself.
    /// Uri-Port is never included: the destination port is this URI's port, so step 7 never
    /// asks for it. A request sent elsewhere (to a proxy) should carry Proxy-Uri instead.
    pub fn request_options(&self) -> Vec<(OptionNumber, Vec<u8>)> {
        let mut out = Vec::with_capacity(1 + self.path.len() + self.query.len());
        if let Host::Name(name) = &self.host {
            out.push((OptionNumber::URI_HOST, name.as_bytes().to_vec()));
        }
        for seg in &self.path {
            out.push((OptionNumber::URI_PATH, seg.as_bytes().to_vec()));
        }
        for item in &self.query {
            out.push((OptionNumber::URI_QUERY, item.as_bytes().to_vec()));
        }
        out
    }

    /// Composes the URI of a request from its options (RFC 7252 §6.5). `host_default` and
    /// `port_default` stand for the destination address and port the request arrived on;
    /// options other than Uri-Host, Uri-Port, Uri-Path and Uri-Query are ignored.
    pub fn from_options<'a>(
        scheme: Scheme,
        host_default: &Host,
        port_default: u16,
        options: impl IntoIterator<Item = (OptionNumber, &'a [u8])>,
    ) -> Result<Self, UriError> {
        let mut host = None;
        let mut port = None;
        let mut path = Vec::new();
        let mut query = Vec::new();
        for (number, value) in options {
            match number {
                OptionNumber::URI_HOST => {
                    if host.is_some() {
                        return Err(invalid_option(number, "repeated"));
                    }
                    if value.is_empty() {
                        return Err(invalid_option(number, "empty"));
                    }
                    host = Some(Host::from_name(option_str(number, value)?));
                }
                OptionNumber::URI_PORT => {
                    if port.is_some() {
                        return Err(invalid_option(number, "repeated"));
                    }
                    let p = decode_uint(value)
                        .and_then(|v| u16::try_from(v).ok())
                        .ok_or_else(|| invalid_option(number, "not a port number"))?;
                    port = Some(p);
                }
                OptionNumber::URI_PATH => path.push(option_str(number, value)?.to_owned()),
                OptionNumber::URI_QUERY => query.push(option_str(number, value)?.to_owned()),
                _ => {}
            }
        }
        if path.len() == 1 && path.first().is_some_and(String::is_empty) {
            path.clear();
        }
        let port = port.unwrap_or(port_default);
        Ok(CoapUri {
            scheme,
            host: host.unwrap_or_else(|| host_default.clone()),
            port: (port != scheme.default_port()).then_some(port),
            path,
            query,
        })
    }

    /// The percent-encoded path as it appears in the URI, `/` when there are no segments
    /// (`/sensors/temp`).
    pub fn path_string(&self) -> String {
        let mut out = String::new();
        if self.path.is_empty() {
            out.push('/');
        }
        for seg in &self.path {
            out.push('/');
            push_segment(&mut out, seg);
        }
        out
    }

    /// The percent-encoded query without the `?`, empty when there are no items (`a=1&b`).
    pub fn query_string(&self) -> String {
        let mut out = String::new();
        for (i, item) in self.query.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            push_encoded(&mut out, item, is_query_char);
        }
        out
    }
}

impl FromStr for CoapUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        CoapUri::parse(text)
    }
}

/// Writes the URI with every component percent-encoded as §6.5 composes it.
impl fmt::Display for CoapUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme, self.host)?;
        if let Some(port) = self.port.filter(|&p| p != self.scheme.default_port()) {
            write!(f, ":{port}")?;
        }
        f.write_str(&self.path_string())?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query_string())?;
        }
        Ok(())
    }
}

/// Decodes every `%XX` escape of `text`; any other character is taken as it is.
pub fn percent_decode(text: &str) -> Result<Vec<u8>, UriError> {
    decode(text, 0, |_| true)
}

fn invalid_option(option: OptionNumber, reason: &'static str) -> UriError {
    UriError::InvalidOption { option, reason }
}

fn option_str(number: OptionNumber, value: &[u8]) -> Result<&str, UriError> {
    if value.len() > MAX_COMPONENT_LEN {
        return Err(invalid_option(number, "longer than 255 bytes"));
    }
    std::str::from_utf8(value).map_err(|_| invalid_option(number, "not valid UTF-8"))
}

/// At most 64 characters of a piece of hostile input, for an error message.
fn excerpt(text: &str) -> String {
    text.chars().take(64).collect()
}

/// `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` (RFC 3986 §3.1).
fn is_scheme_syntax(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

fn is_reg_name_char(b: u8) -> bool {
    is_unreserved(b) || is_sub_delim(b)
}

/// `pchar` without `pct-encoded` (RFC 3986 §3.3).
fn is_segment_char(b: u8) -> bool {
    is_reg_name_char(b) || matches!(b, b':' | b'@')
}

/// What a query item may hold unencoded: `pchar / "/" / "?"`, except the `&` that separates
/// items (RFC 7252 §6.5 step 9).
fn is_query_char(b: u8) -> bool {
    b != b'&' && (is_segment_char(b) || matches!(b, b'/' | b'?'))
}

fn hex_value(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Percent-decodes one component. `base` is its byte offset in the whole input, for errors.
/// ASCII characters must satisfy `allowed`; non-ASCII characters are taken as their UTF-8 bytes.
fn decode(text: &str, base: usize, allowed: fn(u8) -> bool) -> Result<Vec<u8>, UriError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex_value);
            let lo = bytes.get(i + 2).copied().and_then(hex_value);
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err(UriError::InvalidPercentEncoding { at: base + i }),
            }
            i += 3;
        } else if !b.is_ascii() || allowed(b) {
            out.push(b);
            i += 1;
        } else {
            return Err(UriError::InvalidCharacter {
                ch: char::from(b),
                at: base + i,
            });
        }
    }
    Ok(out)
}

/// Decodes a component into a string of at most 255 bytes.
fn decode_str(
    text: &str,
    base: usize,
    allowed: fn(u8) -> bool,
    component: &'static str,
) -> Result<String, UriError> {
    let bytes = decode(text, base, allowed)?;
    if bytes.len() > MAX_COMPONENT_LEN {
        return Err(UriError::TooLong {
            component,
            len: bytes.len(),
        });
    }
    String::from_utf8(bytes).map_err(|_| UriError::NotUtf8 { component })
}

/// Splits `host[:port]` (user information refused), starting at byte `base` of the input.
fn parse_authority(authority: &str, base: usize) -> Result<(Host, Option<u16>), UriError> {
    if authority.contains('@') {
        return Err(UriError::UserInfo);
    }
    let (host, port_text) = if let Some(rest) = authority.strip_prefix('[') {
        let (literal, after) = rest
            .split_once(']')
            .ok_or_else(|| UriError::InvalidIpv6(excerpt(authority)))?;
        if literal.contains('%') {
            return Err(UriError::Ipv6Zone);
        }
        let addr = literal
            .parse::<Ipv6Addr>()
            .map_err(|_| UriError::InvalidIpv6(excerpt(literal)))?;
        let port_text = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UriError::InvalidIpv6(excerpt(authority))),
        };
        (Host::Ipv6(addr), port_text)
    } else {
        let (name, port_text) = match authority.split_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (authority, None),
        };
        if name.is_empty() {
            return Err(UriError::MissingHost);
        }
        let name = decode_str(name, base, is_reg_name_char, "host")?;
        (Host::from_name(&name), port_text)
    };
    let port = match port_text {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => Some(
            p.parse::<u16>()
                .map_err(|_| UriError::InvalidPort(excerpt(p)))?,
        ),
        Some(p) => return Err(UriError::InvalidPort(excerpt(p))),
    };
    Ok((host, port))
}

/// Decodes the path into Uri-Path values (§6.4 step 8), removing dot segments (RFC 3986
/// §5.2.4). `path` is empty or starts with `/`; `base` is its offset in the input.
fn parse_path(path: &str, base: usize) -> Result<Vec<String>, UriError> {
    let Some(rest) = path.strip_prefix('/') else {
        return Ok(Vec::new());
    };
    let mut at = base + 1;
    let mut raw = Vec::new();
    for seg in rest.split('/') {
        raw.push((seg, decode_str(seg, at, is_segment_char, "path segment")?));
        at += seg.len() + 1;
    }
    let count = raw.len();
    let mut out: Vec<String> = Vec::with_capacity(count);
    for (i, (text, decoded)) in raw.into_iter().enumerate() {
        let last = i + 1 == count;
        match text {
            "." => {}
            ".." => {
                out.pop();
            }
            _ => {
                out.push(decoded);
                continue;
            }
        }
        if last {
            out.push(String::new());
        }
    }
    if out.len() == 1 && out.first().is_some_and(String::is_empty) {
        out.clear();
    }
    Ok(out)
}

/// Splits the query on `&` into Uri-Query values (§6.4 step 9).
fn parse_query(query: &str, base: usize) -> Result<Vec<String>, UriError> {
    let mut at = base;
    let mut out = Vec::new();
    for item in query.split('&') {
        out.push(decode_str(item, at, is_query_pchar, "query item")?);
        at += item.len() + 1;
    }
    Ok(out)
}

/// What a raw query item may hold: `pchar / "/" / "?"` (the `&`s are already split off).
fn is_query_pchar(b: u8) -> bool {
    is_segment_char(b) || matches!(b, b'/' | b'?')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn push_encoded(out: &mut String, text: &str, keep: fn(u8) -> bool) {
    for b in text.bytes() {
        if b.is_ascii() && keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

/// Encodes one path segment; `.` and `..` are encoded so that they are not dot segments.
fn push_segment(out: &mut String, seg: &str) {
    match seg {
        "." => out.push_str("%2E"),
        ".." => out.push_str("%2E%2E"),
        _ => push_encoded(out, seg, is_segment_char),
    }
}

fn write_encoded(f: &mut fmt::Formatter<'_>, text: &str, keep: fn(u8) -> bool) -> fmt::Result {
    let mut out = String::with_capacity(text.len());
    push_encoded(&mut out, text, keep);
    f.write_str(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn uri(text: &str) -> CoapUri {
        CoapUri::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn rfc_7252_6_3_equivalent_uris() {
        let a = uri("coap://example.com:5683/~sensors/temp.xml");
        let b = uri("coap://EXAMPLE.com/%7Esensors/temp.xml");
        let c = uri("coap://EXAMPLE.com:/%7esensors/temp.xml");
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.host, name("example.com"));
        assert_eq!(a.port, None);
        assert_eq!(a.path, strings(&["~sensors", "temp.xml"]));
        assert_eq!(a.to_string(), "coap://example.com/~sensors/temp.xml");
    }

    #[test]
    fn rfc_7252_6_4_decomposition() {
        // Step 8: an empty path or "/" gives no Uri-Path.
        assert!(uri("coap://h").path.is_empty());
        assert!(uri("coap://h/").path.is_empty());
        // Otherwise every segment is one Uri-Path, empty ones included.
        assert_eq!(uri("coap://h/a//b").path, strings(&["a", "", "b"]));
        assert_eq!(uri("coap://h/a/").path, strings(&["a", ""]));
        assert_eq!(uri("coap://h//").path, strings(&["", ""]));
        // Step 9: the query splits on '&', after which percent-encodings are decoded.
        let u = uri("coap://h/p?a=1&b%26c=2&&x/y?z");
        assert_eq!(u.query, strings(&["a=1", "b&c=2", "", "x/y?z"]));
        assert_eq!(uri("coap://h/?").query, strings(&[""]));
        // Scheme case-insensitive; ports.
        let u = uri("CoAPs+TCP://[2001:DB8::1]:5684/x");
        assert_eq!(u.scheme, Scheme::CoapsTcp);
        assert_eq!(u.host, Host::Ipv6("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, None);
        assert_eq!(u.effective_port(), 5684);
        assert_eq!(uri("coap://192.0.2.1:61616").port, Some(61616));
        assert_eq!(uri("coap://h:0").port, Some(0));
        assert_eq!(uri("coap://h:00065535").port, Some(65535));
        assert_eq!(uri("coaps://h:5683").port, Some(5683));
        assert_eq!(
            uri("coap://192.0.2.1/").host,
            Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1))
        );
        // Percent-decoding of the host, then lowercasing.
        assert_eq!(uri("coap://%45xample.COM").host, name("example.com"));
        assert_eq!(
            uri("coap://1%2E2.3.4").host,
            Host::Ipv4(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(uri("coap://1.2.3.4.").host, name("1.2.3.4."));
        // UTF-8 in percent-encodings and as IRI characters.
        assert_eq!(
            uri("coap://h/temp%C3%A9rature").path,
            strings(&["température"])
        );
        assert_eq!(uri("coap://h/é?ü").query, strings(&["ü"]));
    }

    #[test]
    fn dot_segments_are_removed() {
        assert_eq!(uri("coap://h/a/../b").path, strings(&["b"]));
        assert_eq!(uri("coap://h/./a/./b").path, strings(&["a", "b"]));
        assert_eq!(uri("coap://h/a/b/..").path, strings(&["a", ""]));
        assert_eq!(uri("coap://h/a/..").path, Vec::<String>::new());
        assert_eq!(uri("coap://h/../../a").path, strings(&["a"]));
        assert_eq!(uri("coap://h/a/.").path, strings(&["a", ""]));
        // Encoded dots are data, not dot segments.
        assert_eq!(uri("coap://h/%2E/%2e%2E").path, strings(&[".", ".."]));
        let u = CoapUri {
            path: strings(&[".", "..", "a"]),
            ..uri("coap://h")
        };
        assert_eq!(u.to_string(), "coap://h/%2E/%2E%2E/a");
        assert_eq!(uri(&u.to_string()), u);
    }

    #[test]
    fn rfc_7252_6_5_composition() {
        let opts: Vec<(OptionNumber, &[u8])> = vec![
            (OptionNumber::URI_HOST, b"Example.NET"),
            (OptionNumber::URI_PORT, &[0x16, 0x34]),
            (OptionNumber::URI_PATH, b".well-known"),
            (OptionNumber::URI_PATH, b"a b/c"),
            (OptionNumber::CONTENT_FORMAT, &[]),
            (OptionNumber::URI_QUERY, b"rt=x&y"),
            (OptionNumber::URI_QUERY, b"q=/?:@"),
        ];
        let u = CoapUri::from_options(Scheme::Coap, &name("ignored"), 9, opts).unwrap();
        assert_eq!(u.host, name("example.net"));
        assert_eq!(u.port, Some(5684)); // 0x1634: coaps' default, not coap's
        assert_eq!(
            u.to_string(),
            "coap://example.net:5684/.well-known/a%20b%2Fc?rt=x%26y&q=/?:@"
        );
        let u = CoapUri {
            scheme: Scheme::Coaps,
            ..u
        };
        assert_eq!(
            u.to_string(),
            "coaps://example.net/.well-known/a%20b%2Fc?rt=x%26y&q=/?:@"
        );
        assert_eq!(uri(&u.to_string()).port, None);

        // Defaults: destination address and port; a single empty Uri-Path is the root.
        let dest = Host::Ipv6(Ipv6Addr::LOCALHOST);
        let u = CoapUri::from_options(
            Scheme::Coap,
            &dest,
            61616,
            [(OptionNumber::URI_PATH, &b""[..])],
        )
        .unwrap();
        assert_eq!(u.to_string(), "coap://[::1]:61616/");
        assert!(u.path.is_empty());
    }

    #[test]
    fn request_options_round_trip_through_from_options() {
        for text in [
            "coap://example.com/a/b?x=1&y",
            "coaps://[::1]:1234/",
            "coap+tcp://192.0.2.7/a//b/",
            "coap://h/%2E?%26",
        ] {
            let u = uri(text);
            let opts = u.request_options();
            let back = CoapUri::from_options(
                u.scheme,
                &u.host,
                u.effective_port(),
                opts.iter().map(|(n, v)| (*n, v.as_slice())),
            )
            .unwrap();
            assert_eq!(back, u, "{text}");
        }
        let opts = uri("coap://192.0.2.1:7/a?b").request_options();
        assert_eq!(
            opts,
            vec![
                (OptionNumber::URI_PATH, b"a".to_vec()),
                (OptionNumber::URI_QUERY, b"b".to_vec())
            ]
        );
        let opts = uri("coap://Example.com").request_options();
        assert_eq!(
            opts,
            vec![(OptionNumber::URI_HOST, b"example.com".to_vec())]
        );
    }

    #[test]
    fn from_options_errors() {
        let h = name("h");
        let bad: &[&[(OptionNumber, &[u8])]] = &[
            &[(OptionNumber::URI_HOST, b"")],
            &[
                (OptionNumber::URI_HOST, b"a"),
                (OptionNumber::URI_HOST, b"b"),
            ],
            &[(OptionNumber::URI_PORT, &[1, 0, 0])],
            &[
                (OptionNumber::URI_PORT, &[1]),
                (OptionNumber::URI_PORT, &[2]),
            ],
            &[(OptionNumber::URI_PATH, &[0xff])],
            &[(OptionNumber::URI_QUERY, &[0xc3])],
            &[(OptionNumber::URI_PATH, &[b'a'; 256])],
        ];
        for opts in bad {
            let r = CoapUri::from_options(Scheme::Coap, &h, 5683, opts.iter().copied());
            assert!(matches!(r, Err(UriError::InvalidOption { .. })), "{opts:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases: &[(&str, UriError)] = &[
            ("", UriError::NotAbsolute),
            ("/a/b", UriError::NotAbsolute),
            ("example.com/a", UriError::NotAbsolute),
            ("1coap://h", UriError::NotAbsolute),
            ("http://h/", UriError::UnknownScheme("http".into())),
            ("coap://h/#frag", UriError::Fragment),
            ("coap://h/a?b#", UriError::Fragment),
            ("coap:/a", UriError::MissingHost),
            ("coap:", UriError::MissingHost),
            ("coap:///a", UriError::MissingHost),
            ("coap://:5683/", UriError::MissingHost),
            ("coap://user@h/", UriError::UserInfo),
            ("coap://h:99999/", UriError::InvalidPort("99999".into())),
            ("coap://h:+80/", UriError::InvalidPort("+80".into())),
            ("coap://h:1:2/", UriError::InvalidPort("1:2".into())),
            ("coap://h:x/", UriError::InvalidPort("x".into())),
            ("coap://[::1/", UriError::InvalidIpv6("[::1".into())),
            ("coap://[::g]/", UriError::InvalidIpv6("::g".into())),
            ("coap://[::1]x/", UriError::InvalidIpv6("[::1]x".into())),
            ("coap://[v1.x]/", UriError::InvalidIpv6("v1.x".into())),
            ("coap://[fe80::1%25eth0]/", UriError::Ipv6Zone),
            (
                "coap://h/abc%2",
                UriError::InvalidPercentEncoding { at: 12 },
            ),
            (
                "coap://h/a?b=%zz",
                UriError::InvalidPercentEncoding { at: 13 },
            ),
            ("coap://h%/", UriError::InvalidPercentEncoding { at: 8 }),
            (
                "coap://h/a b",
                UriError::InvalidCharacter { ch: ' ', at: 10 },
            ),
            (
                "coap://h/a?x=<",
                UriError::InvalidCharacter { ch: '<', at: 13 },
            ),
            (
                "coap://h_/a/[",
                UriError::InvalidCharacter { ch: '[', at: 12 },
            ),
            (
                "coap://h/%ff",
                UriError::NotUtf8 {
                    component: "path segment",
                },
            ),
            (
                "coap://h?%c3",
                UriError::NotUtf8 {
                    component: "query item",
                },
            ),
            ("coap://%c3%28/", UriError::NotUtf8 { component: "host" }),
        ];
        for (text, want) in cases {
            assert_eq!(CoapUri::parse(text).as_ref(), Err(want), "{text}");
        }
        let long = format!("coap://{}/", "a".repeat(256));
        assert_eq!(
            CoapUri::parse(&long),
            Err(UriError::TooLong {
                component: "host",
                len: 256
            })
        );
        let long = format!("coap://h/{}", "%41".repeat(256));
        assert_eq!(
            CoapUri::parse(&long),
            Err(UriError::TooLong {
                component: "path segment",
                len: 256
            })
        );
        assert!(CoapUri::parse(&format!("coap://{}/", "a".repeat(255))).is_ok());
        assert_eq!(
            UriError::UnknownScheme("http".into()).to_string(),
            "unknown scheme \"http\" (expected coap, coaps, coap+tcp or coaps+tcp)"
        );
        assert_eq!(
            UriError::InvalidPort("99999".into()).to_string(),
            "invalid port \"99999\""
        );
        assert_eq!(
            UriError::InvalidPercentEncoding { at: 12 }.to_string(),
            "invalid percent-encoding at byte 12"
        );
        let huge = format!("coap://h:{}/", "9".repeat(10_000));
        match CoapUri::parse(&huge) {
            Err(UriError::InvalidPort(p)) => assert_eq!(p.len(), 64),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn schemes() {
        for (text, s, port, secure, reliable) in [
            ("coap", Scheme::Coap, 5683, false, false),
            ("coaps", Scheme::Coaps, 5684, true, false),
            ("coap+tcp", Scheme::CoapTcp, 5683, false, true),
            ("coaps+tcp", Scheme::CoapsTcp, 5684, true, true),
        ] {
            assert_eq!(text.parse::<Scheme>(), Ok(s));
            assert_eq!(s.as_str(), text);
            assert_eq!(s.default_port(), port);
            assert_eq!(s.is_secure(), secure);
            assert_eq!(s.is_reliable(), reliable);
        }
    }

    #[test]
    fn display_and_helpers() {
        let u = uri("coap://h:1234/a%20b/c?x=%26&y");
        assert_eq!(u.path_string(), "/a%20b/c");
        assert_eq!(u.query_string(), "x=%26&y");
        assert_eq!(u.to_string(), "coap://h:1234/a%20b/c?x=%26&y");
        assert_eq!(uri("coap://h").path_string(), "/");
        assert_eq!(name("a:b@c[d]").to_string(), "a%3Ab%40c%5Bd%5D");
        assert_eq!(
            percent_decode("a%20b%zz").unwrap_err(),
            UriError::InvalidPercentEncoding { at: 5 }
        );
        assert_eq!(percent_decode("100%25 ü").unwrap(), "100% ü".as_bytes());
        assert_eq!(Host::from_name("[::1]"), Host::Ipv6(Ipv6Addr::LOCALHOST));
        assert!(Host::from_name("::1").is_ip());
        assert_eq!(Host::from_name("HoSt"), name("host"));
    }

    fn arb_host() -> impl Strategy<Value = Host> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|b| Host::Ipv4(b.into())),
            any::<[u8; 16]>().prop_map(|b| Host::Ipv6(b.into())),
            "[a-z0-9.-]{1,30}".prop_map(|n| Host::from_name(&n)),
            "\\PC{1,20}".prop_map(|n| Host::from_name(&n)),
        ]
    }

    fn arb_uri() -> impl Strategy<Value = CoapUri> {
        let scheme = prop_oneof![
            Just(Scheme::Coap),
            Just(Scheme::Coaps),
            Just(Scheme::CoapTcp),
            Just(Scheme::CoapsTcp)
        ];
        let text = prop_oneof!["[a-z0-9._~=&/?%:@-]{0,12}", "\\PC{0,12}", "\\.{1,3}"];
        (
            scheme,
            arb_host(),
            proptest::option::of(any::<u16>()),
            proptest::collection::vec(text.clone(), 0..5),
            proptest::collection::vec(text, 0..4),
        )
            .prop_map(|(scheme, host, port, mut path, query)| {
                if path.len() == 1 && path[0].is_empty() {
                    path.clear();
                }
                CoapUri {
                    scheme,
                    host,
                    port: port.filter(|&p| p != scheme.default_port()),
                    path,
                    query,
                }
            })
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,64}") {
            let _ = CoapUri::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_uri_like_text(
            text in "(coaps?(\\+tcp)?|http|Coap)://[\\[\\]a-zA-Z0-9%:@./?&#=~é-]{0,40}"
        ) {
            if let Ok(u) = CoapUri::parse(&text) {
                prop_assert_eq!(CoapUri::parse(&u.to_string()), Ok(u));
            }
        }

        #[test]
        fn display_then_parse_is_identity(u in arb_uri()) {
            let text = u.to_string();
            prop_assert!(text.is_ascii());
            prop_assert_eq!(CoapUri::parse(&text), Ok(u.clone()), "{}", text);
            let opts = u.request_options();
            let back = CoapUri::from_options(
                u.scheme,
                &u.host,
                u.effective_port(),
                opts.iter().map(|(n, v)| (*n, v.as_slice())),
            );
            prop_assert_eq!(back, Ok(u));
        }
    }
}
