//! One CoAP request as an HTTP request, and the HTTP response as a CoAP response (RFC 8075
//! §6–7 read from the CoAP side; RFC 7252 §10.2).
//!
//! Requests: the method (FETCH goes as the extension method `FETCH`; PATCH and iPATCH both as
//! PATCH), the target from Proxy-Uri or from Proxy-Scheme with the Uri-* options,
//! Content-Format → Content-Type, Accept, If-Match, If-None-Match, and the request's ETags (a
//! client revalidating) → If-None-Match. Responses: the status (see [`crate::status`]),
//! Content-Type → Content-Format, ETag, Cache-Control → Max-Age, Location → Location-Path and
//! Location-Query. HTTP entity tags are quoted strings, CoAP ones 1–8 opaque bytes: a tag
//! written `"<hex>"` maps to its bytes, any other tag of at most 7 characters to a marker byte
//! and its characters, both back to the same HTTP tag; longer ones are dropped, so such
//! responses cannot be revalidated through the proxy.

use http::header::{
    HeaderMap, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MATCH, IF_NONE_MATCH,
    LOCATION,
};
use http::{Method, Uri};
use tern_proto::uri::{CoapUri, Host, Scheme};
use tern_proto::{Code, ContentFormat, Message, OptionNumber};

use crate::media;
use crate::policy::Refusal;
use crate::status;

/// The parts of an HTTP request made from a CoAP one.
#[derive(Debug, Clone)]
pub struct HttpRequestParts {
    /// The method.
    pub method: Method,
    /// The absolute target URL (without userinfo: see `authorization`).
    pub uri: Uri,
    /// The headers mapped from options.
    pub headers: HeaderMap,
    /// The body (the whole CoAP payload, after block-wise).
    pub body: Vec<u8>,
}

fn refuse(code: Code, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// The HTTP method for a CoAP request code.
pub fn http_method(code: Code) -> Result<Method, Refusal> {
    Ok(match code {
        Code::GET => Method::GET,
        Code::POST => Method::POST,
        Code::PUT => Method::PUT,
        Code::DELETE => Method::DELETE,
        Code::PATCH | Code::IPATCH => Method::PATCH,
        Code::FETCH => Method::from_bytes(b"FETCH").expect("a valid token"),
        _ => return Err(refuse(Code::METHOD_NOT_ALLOWED, "method not forwarded")),
    })
}

/// The target of a request meant for a forward proxy: its Proxy-Uri, or the URI composed
/// from Proxy-Scheme and the Uri-* options (RFC 7252 §6.5; Uri-Host is required then).
pub fn target_uri(request: &Message) -> Result<Uri, Refusal> {
    let text = match request.options.get(OptionNumber::PROXY_URI) {
        Some(proxy_uri) => std::str::from_utf8(proxy_uri)
            .map_err(|_| refuse(Code::BAD_OPTION, "Proxy-Uri is not UTF-8"))?
            .to_string(),
        None => {
            let scheme = request
                .options
                .get(OptionNumber::PROXY_SCHEME)
                .and_then(|s| std::str::from_utf8(s).ok())
                .ok_or_else(|| refuse(Code::BAD_REQUEST, "neither Proxy-Uri nor Proxy-Scheme"))?
                .to_ascii_lowercase();
            if !request.options.contains(OptionNumber::URI_HOST) {
                return Err(refuse(Code::BAD_REQUEST, "Proxy-Scheme needs a Uri-Host"));
            }
            // Compose with the CoAP URI rules (percent-encoding every component), then swap
            // the scheme: path and query encode the same way in http URIs.
            let options = request
                .options
                .iter()
                .map(|o| (o.number, o.value.as_slice()));
            let composed =
                CoapUri::from_options(Scheme::Coap, &Host::from_name("invalid"), 5683, options)
                    .map_err(|e| refuse(Code::BAD_OPTION, e.to_string()))?;
            let host = composed.host.to_string();
            let port = request
                .options
                .get_uint(OptionNumber::URI_PORT)
                .map(|p| format!(":{p}"))
                .unwrap_or_default();
            let query = if composed.query.is_empty() {
                String::new()
            } else {
                format!("?{}", composed.query_string())
            };
            format!("{scheme}://{host}{port}{}{query}", composed.path_string())
        }
    };
    let uri: Uri = text
        .parse()
        .map_err(|_| refuse(Code::BAD_OPTION, "the target is not a valid URI"))?;
    if uri.scheme().is_none() || uri.host().is_none() {
        return Err(refuse(
            Code::BAD_OPTION,
            "the target is not an absolute URI",
        ));
    }
    Ok(uri)
}

/// A CoAP entity tag as an HTTP one: `"<hex>"`, except a tag [`coap_etag`] made from an HTTP
/// tag that is not hex, which goes back as that tag.
pub fn http_etag(tag: &[u8]) -> String {
    if let Some(raw) = tag.strip_prefix(&[RAW_TAG]) {
        if !raw.is_empty() && raw.iter().all(|&b| is_etag_char(b)) {
            return format!("\"{}\"", String::from_utf8_lossy(raw));
        }
    }
    let mut s = String::with_capacity(tag.len() * 2 + 2);
    s.push('"');
    for b in tag {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('"');
    s
}

/// Marks a CoAP entity tag that holds an HTTP tag's own characters (which are never 0x00).
const RAW_TAG: u8 = 0;

/// `etagc` of RFC 7232 §2.3, ASCII part.
fn is_etag_char(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b)
}

/// An HTTP entity tag as a CoAP one, when it fits in 8 bytes: lower-case hex of 1–8 bytes (as
/// [`http_etag`] writes them) as those bytes, any other tag of at most 7 characters as a
/// marker byte and its characters, so that both map back to the same HTTP tag. A weak tag
/// loses its `W/`: CoAP has no weak tags, and its validators compare bytes. Longer tags give
/// `None`.
pub fn coap_etag(tag: &str) -> Option<Vec<u8>> {
    let tag = tag.trim().trim_start_matches("W/");
    let inner = tag.strip_prefix('"')?.strip_suffix('"')?;
    let hex = inner.len() % 2 == 0
        && (2..=16).contains(&inner.len())
        && !inner.starts_with("00")
        && inner
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    if hex {
        return (0..inner.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&inner[i..i + 2], 16).ok())
            .collect();
    }
    if inner.is_empty() || inner.len() > 7 || !inner.bytes().all(is_etag_char) {
        return None;
    }
    let mut out = vec![RAW_TAG];
    out.extend_from_slice(inner.as_bytes());
    Some(out)
}

fn header(value: &str) -> Result<HeaderValue, Refusal> {
    HeaderValue::from_str(value)
        .map_err(|_| refuse(Code::BAD_OPTION, "an option cannot be a header"))
}

/// The HTTP request for a CoAP request to `target`.
pub fn http_request(request: &Message, target: Uri) -> Result<HttpRequestParts, Refusal> {
    let method = http_method(request.code)?;
    let mut headers = HeaderMap::new();
    let options = &request.options;
    if let Some(cf) = options.get_uint(OptionNumber::CONTENT_FORMAT) {
        let ct = media::content_type_for(ContentFormat(cf as u16))
            .unwrap_or_else(|| "application/octet-stream".into());
        headers.insert(CONTENT_TYPE, header(&ct)?);
    }
    if let Some(accept) = options.get_uint(OptionNumber::ACCEPT) {
        let ct = media::content_type_for(ContentFormat(accept as u16)).ok_or_else(|| {
            refuse(
                Code::NOT_ACCEPTABLE,
                "the Accept format has no media type the HTTP server would know",
            )
        })?;
        headers.insert(ACCEPT, header(&ct)?);
    }
    let if_match: Vec<String> = options
        .get_all(OptionNumber::IF_MATCH)
        .map(|tag| {
            if tag.is_empty() {
                "*".to_string()
            } else {
                http_etag(tag)
            }
        })
        .collect();
    if !if_match.is_empty() {
        headers.insert(IF_MATCH, header(&if_match.join(", "))?);
    }
    // If-None-Match (create only) and ETags the client holds (revalidation) both become
    // If-None-Match: "*" for the first, the tags for the second.
    if options.contains(OptionNumber::IF_NONE_MATCH) {
        headers.insert(IF_NONE_MATCH, HeaderValue::from_static("*"));
    } else {
        let tags: Vec<String> = options.get_all(OptionNumber::ETAG).map(http_etag).collect();
        if !tags.is_empty() {
            headers.insert(IF_NONE_MATCH, header(&tags.join(", "))?);
        }
    }
    Ok(HttpRequestParts {
        method,
        uri: target,
        headers,
        body: request.payload.clone(),
    })
}

/// The Max-Age an HTTP response's Cache-Control gives (`s-maxage` first, the proxy being a
/// shared cache, then `max-age`), less its `Age`; 0 for `no-store`, `no-cache` or `private`,
/// and when the response says nothing (an HTTP response without freshness information must not
/// be taken as fresh for CoAP's default 60 s).
pub fn max_age(headers: &HeaderMap) -> u32 {
    let mut max_age = None;
    let mut s_maxage = None;
    for (name, arg) in cache_directives(headers) {
        let seconds = arg
            .and_then(|a| a.parse::<u64>().ok())
            .map(|s| s.min(u64::from(u32::MAX)) as u32);
        match name.as_str() {
            "no-store" | "no-cache" | "private" => return 0,
            "max-age" => max_age = max_age.or(seconds),
            "s-maxage" => s_maxage = s_maxage.or(seconds),
            _ => {}
        }
    }
    let age = headers
        .get(http::header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |a| a.min(u64::from(u32::MAX)) as u32);
    s_maxage.or(max_age).unwrap_or(0).saturating_sub(age)
}

/// Whether a shared cache may keep the response at all (RFC 7234 §3: not `no-store`, not
/// `private`).
pub fn storable(headers: &HeaderMap) -> bool {
    !cache_directives(headers).any(|(name, _)| name == "no-store" || name == "private")
}

/// The Cache-Control directives, lower case, each with its argument unquoted.
fn cache_directives(headers: &HeaderMap) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|text| text.split(','))
        .map(|directive| {
            let directive = directive.trim().to_ascii_lowercase();
            match directive.split_once('=') {
                Some((n, a)) => (
                    n.trim().to_string(),
                    Some(a.trim().trim_matches('"').to_string()),
                ),
                None => (directive, None),
            }
        })
}

/// Location-Path and Location-Query for an HTTP Location relative to `target` (only a
/// location on the target's own origin can be said in CoAP options).
pub fn location_options(location: &str, target: &Uri) -> Option<(Vec<String>, Vec<String>)> {
    let uri: Uri = location.parse().ok()?;
    if let Some(authority) = uri.authority() {
        let same = target
            .authority()
            .is_some_and(|a| a.as_str().eq_ignore_ascii_case(authority.as_str()))
            && uri.scheme() == target.scheme();
        if !same {
            return None;
        }
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return None;
    }
    let decode = |s: &str| {
        tern_proto::uri::percent_decode(s)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let segments: Option<Vec<String>> = path[1..]
        .split('/')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    let query: Option<Vec<String>> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|s| !s.is_empty())
        .map(decode)
        .collect();
    Some((segments?, query?))
}

/// The CoAP response for an HTTP response to a request with `method` sent to `target`.
pub fn coap_response(
    method: Code,
    target: &Uri,
    status: u16,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Message {
    let code = status::coap_code_for_http(status, method);
    let mut response = Message::new(tern_proto::MessageType::Ack, code);
    let options = &mut response.options;
    if let Some(cf) = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(media::content_format_for)
    {
        options.set_uint(OptionNumber::CONTENT_FORMAT, u32::from(cf.0));
    }
    if let Some(tag) = headers
        .get(ETAG)
        .and_then(|v| v.to_str().ok())
        .and_then(coap_etag)
    {
        options.set(OptionNumber::ETAG, tag);
    }
    options.set_uint(OptionNumber::MAX_AGE, max_age(headers));
    if let Some((path, query)) = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| location_options(l, target))
    {
        for segment in path {
            options.push(OptionNumber::LOCATION_PATH, segment.into_bytes());
        }
        for item in query {
            options.push(OptionNumber::LOCATION_QUERY, item.into_bytes());
        }
    }
    // 2.03 Valid carries no body; neither does a response to a request that asked for none.
    if code != Code::VALID {
        response.payload = body;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::MessageType;

    fn request(code: Code) -> Message {
        Message::new(MessageType::Con, code)
    }

    #[test]
    fn methods() {
        let rows = [
            (Code::GET, "GET"),
            (Code::POST, "POST"),
            (Code::PUT, "PUT"),
            (Code::DELETE, "DELETE"),
            (Code::FETCH, "FETCH"),
            (Code::PATCH, "PATCH"),
            (Code::IPATCH, "PATCH"),
        ];
        for (code, method) in rows {
            assert_eq!(http_method(code).unwrap().as_str(), method);
        }
        assert_eq!(
            http_method(Code::CONTENT).unwrap_err().code,
            Code::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn targets_from_proxy_uri_and_from_proxy_scheme() {
        let mut m = request(Code::GET);
        m.options.set(
            OptionNumber::PROXY_URI,
            &b"http://example.com:8080/a/b?x=1"[..],
        );
        assert_eq!(
            target_uri(&m).unwrap().to_string(),
            "http://example.com:8080/a/b?x=1"
        );

        let mut m = request(Code::GET);
        m.options.set(OptionNumber::PROXY_SCHEME, &b"https"[..]);
        m.options
            .set(OptionNumber::URI_HOST, &b"api.example.com"[..]);
        m.options.set_uint(OptionNumber::URI_PORT, 8443);
        m.set_path("v1/a b");
        m.options.push(OptionNumber::URI_QUERY, &b"q=1&2"[..]);
        assert_eq!(
            target_uri(&m).unwrap().to_string(),
            "https://api.example.com:8443/v1/a%20b?q=1%262"
        );

        let mut m = request(Code::GET);
        m.options.set(OptionNumber::PROXY_SCHEME, &b"http"[..]);
        assert_eq!(target_uri(&m).unwrap_err().code, Code::BAD_REQUEST);
        let mut m = request(Code::GET);
        m.options.set(OptionNumber::PROXY_URI, &b"/relative"[..]);
        assert_eq!(target_uri(&m).unwrap_err().code, Code::BAD_OPTION);
        let mut m = request(Code::GET);
        m.options
            .set(OptionNumber::PROXY_URI, &b"http://exa mple.com/"[..]);
        assert_eq!(target_uri(&m).unwrap_err().code, Code::BAD_OPTION);
    }

    #[test]
    fn request_options_become_headers() {
        let mut m = request(Code::PUT);
        m.options.set_uint(OptionNumber::CONTENT_FORMAT, 50);
        m.options.set_uint(OptionNumber::ACCEPT, 60);
        m.options.push(OptionNumber::IF_MATCH, vec![0xab, 0x01]);
        m.options.push(OptionNumber::IF_MATCH, Vec::new());
        m.payload = b"{}".to_vec();
        let uri: Uri = "http://h/x".parse().unwrap();
        let parts = http_request(&m, uri).unwrap();
        assert_eq!(parts.headers[CONTENT_TYPE], "application/json");
        assert_eq!(parts.headers[ACCEPT], "application/cbor");
        assert_eq!(parts.headers[IF_MATCH], "\"ab01\", *");
        assert_eq!(parts.body, b"{}");

        let mut m = request(Code::PUT);
        m.options.set(OptionNumber::IF_NONE_MATCH, Vec::new());
        let parts = http_request(&m, "http://h/x".parse().unwrap()).unwrap();
        assert_eq!(parts.headers[IF_NONE_MATCH], "*");

        let mut m = request(Code::GET);
        m.options.push(OptionNumber::ETAG, vec![1, 2]);
        m.options.push(OptionNumber::ETAG, vec![3]);
        let parts = http_request(&m, "http://h/x".parse().unwrap()).unwrap();
        assert_eq!(parts.headers[IF_NONE_MATCH], "\"0102\", \"03\"");

        let mut m = request(Code::GET);
        m.options.set_uint(OptionNumber::ACCEPT, 65000);
        assert_eq!(
            http_request(&m, "http://h/x".parse().unwrap())
                .unwrap_err()
                .code,
            Code::NOT_ACCEPTABLE
        );
        let mut m = request(Code::POST);
        m.options.set_uint(OptionNumber::CONTENT_FORMAT, 65000);
        let parts = http_request(&m, "http://h/x".parse().unwrap()).unwrap();
        assert_eq!(parts.headers[CONTENT_TYPE], "application/octet-stream");
    }

    #[test]
    fn etags_both_ways() {
        assert_eq!(http_etag(&[0xde, 0xad]), "\"dead\"");
        assert_eq!(coap_etag("\"dead\""), Some(vec![0xde, 0xad]));
        assert_eq!(coap_etag("W/\"v1\""), Some(b"\0v1".to_vec()));
        for tag in [
            "\"v1\"",
            "\"0061\"",
            "\"00ab\"",
            "\"dead\"",
            "\"abc-7\"",
            "\"0123456789abcdef\"",
        ] {
            let coap = coap_etag(tag).unwrap();
            assert!((1..=8).contains(&coap.len()), "{tag}");
            assert_eq!(http_etag(&coap), tag, "round trip of {tag}");
        }
        assert_eq!(
            coap_etag("\"0123456789abcdef\""),
            Some(vec![1, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef])
        );
        assert_eq!(coap_etag("\"a-very-long-entity-tag\""), None);
        assert_eq!(coap_etag("unquoted"), None);
        assert_eq!(coap_etag("\"\""), None);
    }

    #[test]
    fn cache_control_to_max_age() {
        let rows: &[(&[&str], u32)] = &[
            (&[], 0),
            (&["max-age=120"], 120),
            (&["public, max-age=30"], 30),
            (&["max-age=30, s-maxage=10"], 10),
            (&["no-cache"], 0),
            (&["max-age=30", "no-store"], 0),
            (&["private, max-age=30"], 0),
            (&["max-age=\"45\""], 45),
            (&["max-age=99999999999"], u32::MAX),
            (&["max-age=abc"], 0),
        ];
        for (values, expected) in rows {
            let mut h = HeaderMap::new();
            for v in *values {
                h.append(CACHE_CONTROL, HeaderValue::from_str(v).unwrap());
            }
            assert_eq!(max_age(&h), *expected, "{values:?}");
        }
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=30"));
        h.insert(http::header::AGE, HeaderValue::from_static("10"));
        assert_eq!(max_age(&h), 20);
        h.insert(http::header::AGE, HeaderValue::from_static("99"));
        assert_eq!(max_age(&h), 0);
        assert!(storable(&h));
        for refused in ["no-store", "private, max-age=5", "public, No-Store"] {
            let mut h = HeaderMap::new();
            h.insert(CACHE_CONTROL, HeaderValue::from_static(refused));
            assert!(!storable(&h), "{refused}");
        }
    }

    #[test]
    fn locations() {
        let target: Uri = "http://h:8080/items".parse().unwrap();
        assert_eq!(
            location_options("/items/42?v=1&x", &target),
            Some((
                vec!["items".into(), "42".into()],
                vec!["v=1".into(), "x".into()]
            ))
        );
        assert_eq!(
            location_options("http://h:8080/a%20b", &target),
            Some((vec!["a b".into()], vec![]))
        );
        assert_eq!(location_options("http://other/a", &target), None);
        assert_eq!(location_options("https://h:8080/a", &target), None);
    }

    #[test]
    fn responses() {
        let target: Uri = "http://h/items".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
        h.insert(ETAG, HeaderValue::from_static("\"0a0b\""));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        h.insert(LOCATION, HeaderValue::from_static("/items/7"));
        let r = coap_response(Code::POST, &target, 201, &h, b"{}".to_vec());
        assert_eq!(r.code, Code::CREATED);
        assert_eq!(r.options.get_uint(OptionNumber::CONTENT_FORMAT), Some(50));
        assert_eq!(r.options.get(OptionNumber::ETAG), Some(&[0x0a, 0x0b][..]));
        assert_eq!(r.options.get_uint(OptionNumber::MAX_AGE), Some(5));
        let location: Vec<&[u8]> = r.options.get_all(OptionNumber::LOCATION_PATH).collect();
        assert_eq!(location, vec![&b"items"[..], &b"7"[..]]);
        assert_eq!(r.payload, b"{}");

        let r = coap_response(
            Code::GET,
            &target,
            304,
            &HeaderMap::new(),
            b"ignored".to_vec(),
        );
        assert_eq!(r.code, Code::VALID);
        assert!(r.payload.is_empty());
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
        let r = coap_response(Code::GET, &target, 200, &h, b"<p>".to_vec());
        assert_eq!(r.options.get(OptionNumber::CONTENT_FORMAT), None);
        assert_eq!(r.code, Code::CONTENT);
    }
}
