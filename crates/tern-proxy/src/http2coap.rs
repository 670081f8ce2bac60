//! HTTP → CoAP: an HTTP API through which applications call devices.
//!
//! - `METHOD /proxy/{coap-uri}`: any `coap://`, `coaps://`, `coap+tcp://` or `coaps+tcp://`
//!   URI, percent-encoded or not (`/proxy/coap://device.example/temp?x=1`), with the
//!   gateway's own client credentials.
//! - `METHOD /providers/{name}/{path}`: a provider is a base URI with credentials of its own
//!   (a PSK, or certificates) from the configuration; the path and query are appended.
//!
//! Per request, headers choose: `X-Coap-Type: NON` (default CON), `X-Coap-Proxy-Uri` (the URI
//! is then sent, as Proxy-Uri, to the provider's or URI's host, a further CoAP proxy), and
//! `X-Coap-Timeout` in seconds (default and at most 30). Every request needs
//! `Authorization: Bearer <token>` (compared in constant time); without one it gets 401.
//!
//! Mapping (RFC 8075): methods (PATCH as CoAP PATCH, FETCH as FETCH), Content-Type →
//! Content-Format (an unknown one is 415), Accept (the first type with a Content-Format),
//! If-Match / If-None-Match, the body; back: the status (RFC 8075 §7.1), Content-Type,
//! ETag, Max-Age → Cache-Control, Location-* → Location. No answer in time: 504; the device
//! unreachable or the exchange broken: 502. A GET with `Accept: text/event-stream` observes the
//! resource (RFC 7641) and streams each notification as a server-sent event
//! (`event: notification`, the Observe value as `id`, the payload as text when it is text,
//! else base64; an error code as `event: error`) until the observation ends or the HTTP client
//! goes away, which deregisters it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MATCH,
    IF_NONE_MATCH, LOCATION, WWW_AUTHENTICATE,
};
use http::{Method, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use subtle::ConstantTimeEq;
use tern::proto::{Code, ContentFormat, OptionNumber};
use tern::{Context, Error, RequestBuilder, Response};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::media;
use crate::status;
use crate::translate;
use crate::MAX_TIMEOUT;

/// HTTP connections the API holds at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// How long a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an HTTPS client has for its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest HTTP request body taken (the runtime sends larger ones block-wise up to its own
/// limit, 1 MiB by default).
pub const MAX_REQUEST_BODY: usize = 1 << 20;

/// A named CoAP device or service: its base URI and the client context holding its
/// credentials.
#[derive(Clone)]
pub struct Provider {
    /// The base URI (`coaps://device.example:5684/api`); request paths are appended.
    pub base: String,
    /// The client context its requests go through (with its PSK or certificates).
    pub context: Context,
}

/// How the HTTP API behaves.
#[derive(Clone)]
pub struct ApiConfig {
    /// The bearer token every request must present.
    pub token: Zeroizing<String>,
    /// Named providers.
    pub providers: HashMap<String, Provider>,
    /// The client context `/proxy/` requests go through (its credentials, if any).
    pub context: Context,
    /// Whether `/proxy/{coap-uri}` is served (providers only, otherwise).
    pub open_proxy_path: bool,
    /// Serve HTTPS with this acceptor (its certificate and key), else plain HTTP.
    pub tls: Option<openssl::ssl::SslAcceptor>,
}

/// An HTTPS acceptor from a PEM certificate chain and its PEM private key (TLS 1.2 and 1.3,
/// Mozilla's intermediate settings).
pub fn tls_acceptor(
    cert_chain: &std::path::Path,
    key: &std::path::Path,
) -> Result<openssl::ssl::SslAcceptor, openssl::error::ErrorStack> {
    use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    builder.set_certificate_chain_file(cert_chain)?;
    builder.set_private_key_file(key, SslFiletype::PEM)?;
    builder.check_private_key()?;
    Ok(builder.build())
}

/// An HTTP response with any body (whole, or a stream of events).
type HttpResponse = http::Response<BoxBody<Bytes, Infallible>>;

/// A request refused before anything is sent: the status and the text to answer.
type Rejection = (StatusCode, String);

fn reject(status: StatusCode, text: impl Into<String>) -> Rejection {
    (status, text.into())
}

fn plain(status: StatusCode, text: impl Into<String>) -> HttpResponse {
    let text: String = text.into();
    http::Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(text)).boxed())
        .expect("a valid response")
}

/// Serves the API on `listener` until the task is dropped; each connection is a task.
pub async fn serve(listener: TcpListener, config: ApiConfig) {
    let config = Arc::new(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        // Past the cap a new connection is closed at once: idle or slow clients, even
        // unauthenticated ones, cannot make the gateway hold more.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "HTTP connection refused: at the connection cap");
            continue;
        };
        let config = config.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let tls = config.tls.clone();
            let service = service_fn(move |request| {
                let config = config.clone();
                async move { Ok::<_, Infallible>(handle(&config, peer, request).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            // A client that sends its headers too slowly is cut off (no slowloris).
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(acceptor) => {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut stream) = tokio_openssl::SslStream::new(ssl, stream) else {
                        return;
                    };
                    // A handshake that stalls must not hold the task forever.
                    let handshake = std::pin::Pin::new(&mut stream).accept();
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                        Ok(Ok(())) => {
                            let _ = http.serve_connection(TokioIo::new(stream), service).await;
                        }
                        _ => tracing::debug!(%peer, "HTTPS handshake failed"),
                    }
                }
            }
        });
    }
}

/// Binds `addr` and serves the API in a task; returns the bound address.
pub async fn spawn(addr: SocketAddr, config: ApiConfig) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(serve(listener, config));
    Ok(local)
}

fn authorized(config: &ApiConfig, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    bool::from(given.trim().as_bytes().ct_eq(config.token.as_bytes()))
}

/// What the request asks for: the CoAP URI and the context to send it through.
fn route(config: &ApiConfig, path_and_query: &str) -> Result<(String, Context), Rejection> {
    if let Some(rest) = path_and_query.strip_prefix("/proxy/") {
        if !config.open_proxy_path {
            return Err(reject(StatusCode::NOT_FOUND, "no /proxy/ here"));
        }
        // The URI may come percent-encoded as one segment, or as written.
        let decoded = tern::proto::uri::percent_decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_else(|| rest.to_string());
        let uri = if decoded.starts_with("coap") {
            decoded
        } else {
            rest.to_string()
        };
        return Ok((uri, config.context.clone()));
    }
    if let Some(rest) = path_and_query.strip_prefix("/providers/") {
        // `name`, then the path (`/…`) and the query (`?…`) to append to its base URI.
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        let Some(provider) = config.providers.get(name) else {
            return Err(reject(StatusCode::NOT_FOUND, "no such provider"));
        };
        let uri = format!("{}{tail}", provider.base.trim_end_matches('/'));
        return Ok((uri, provider.context.clone()));
    }
    Err(reject(
        StatusCode::NOT_FOUND,
        "use /providers/{name}/{path} or /proxy/{coap-uri}",
    ))
}

fn coap_method(method: &Method) -> Option<Code> {
    Some(match method.as_str() {
        "GET" => Code::GET,
        "POST" => Code::POST,
        "PUT" => Code::PUT,
        "DELETE" => Code::DELETE,
        "FETCH" => Code::FETCH,
        "PATCH" => Code::PATCH,
        "IPATCH" => Code::IPATCH,
        _ => return None,
    })
}

async fn handle(
    config: &ApiConfig,
    peer: SocketAddr,
    request: http::Request<Incoming>,
) -> HttpResponse {
    let (head, body) = request.into_parts();
    if !authorized(config, &head.headers) {
        let mut r = plain(StatusCode::UNAUTHORIZED, "a bearer token is needed");
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let Some(code) = coap_method(&head.method) else {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "no CoAP method for this");
    };
    let path_and_query = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let (uri, context) = match route(config, path_and_query) {
        Ok(found) => found,
        Err((status, text)) => return plain(status, text),
    };
    let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_REQUEST_BODY} bytes"),
            )
        }
    };
    let timeout = match head
        .headers
        .get("x-coap-timeout")
        .map(|v| v.to_str().map(str::parse::<f64>))
    {
        None => MAX_TIMEOUT,
        Some(Ok(Ok(s))) if s > 0.0 && s <= MAX_TIMEOUT.as_secs_f64() => Duration::from_secs_f64(s),
        Some(_) => {
            return plain(
                StatusCode::BAD_REQUEST,
                format!(
                    "X-Coap-Timeout must be seconds, more than 0 and at most {}",
                    MAX_TIMEOUT.as_secs()
                ),
            )
        }
    };
    let builder = match build_request(&context, code, &uri, &head.headers, body.to_vec()) {
        Ok(b) => b,
        Err((status, text)) => return plain(status, text),
    };
    tracing::debug!(%peer, %uri, ?code, "HTTP → CoAP");
    let wants_events = code == Code::GET
        && head
            .headers
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
    if wants_events {
        return observe(builder, timeout).await;
    }
    match tokio::time::timeout(timeout, builder.timeout(timeout).send()).await {
        Ok(Ok(response)) => http_response(&response),
        Ok(Err(e)) => error_response(&e),
        Err(_) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "the device did not answer in time",
        ),
    }
}

/// The CoAP request for an HTTP one.
fn build_request(
    context: &Context,
    code: Code,
    uri: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<RequestBuilder, Rejection> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut builder = match header("x-coap-proxy-uri") {
        // Through a further CoAP proxy: the URI names the proxy, the header the target.
        Some(target) => context
            .request(code, uri)
            .option(OptionNumber::PROXY_URI, target.as_bytes().to_vec()),
        None => context.request(code, uri),
    };
    match header("x-coap-type")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("CON") => {}
        Some("NON") => builder = builder.non(),
        Some(other) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("X-Coap-Type {other:?}: CON or NON"),
            ))
        }
    }
    if let Some(ct) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        match media::content_format_for(ct) {
            Some(cf) => builder = builder.content_format(cf),
            None => {
                return Err(reject(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("{ct:?} has no CoAP Content-Format"),
                ))
            }
        }
    }
    if let Some(accept) = headers.get(ACCEPT).and_then(|v| v.to_str().ok()) {
        let first = accept
            .split(',')
            .map(|a| a.split(";q=").next().unwrap_or(a).trim())
            .find_map(media::content_format_for);
        if let Some(cf) = first {
            builder = builder.accept(cf);
        }
    }
    for value in headers
        .get_all(IF_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for tag in value.split(',').map(str::trim) {
            let bytes = if tag == "*" {
                Some(Vec::new())
            } else {
                translate::coap_etag(tag)
            };
            if let Some(bytes) = bytes {
                builder = builder.option(OptionNumber::IF_MATCH, bytes);
            }
        }
    }
    if let Some(value) = headers.get(IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        if value.trim() == "*" {
            builder = builder.option(OptionNumber::IF_NONE_MATCH, Vec::new());
        } else {
            // Entity tags the client holds: CoAP's ETag request option (2.03 if one is valid).
            for tag in value
                .split(',')
                .filter_map(|t| translate::coap_etag(t.trim()))
            {
                builder = builder.option(OptionNumber::ETAG, tag);
            }
        }
    }
    Ok(builder.payload(body))
}

/// The HTTP response for a CoAP one.
fn http_response(response: &Response) -> HttpResponse {
    let message = response.message();
    let has_payload = !message.payload.is_empty();
    let status = status::http_status_for_coap(message.code, has_payload);
    let mut builder = http::Response::builder().status(status);
    let headers = builder.headers_mut().expect("a fresh builder");
    if let Some(cf) = response.content_format() {
        let ct = media::content_type_for(cf).unwrap_or_else(|| "application/octet-stream".into());
        if let Ok(v) = HeaderValue::from_str(&ct) {
            headers.insert(CONTENT_TYPE, v);
        }
    }
    if let Some(tag) = message.options.get(OptionNumber::ETAG) {
        if let Ok(v) = HeaderValue::from_str(&translate::http_etag(tag)) {
            headers.insert(ETAG, v);
        }
    }
    // Max-Age, 60 s when absent (RFC 7252 §5.10.5).
    let max_age = message
        .options
        .get_uint(OptionNumber::MAX_AGE)
        .unwrap_or(60);
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(CACHE_CONTROL, v);
    }
    let path: Vec<String> = message
        .options
        .get_all(OptionNumber::LOCATION_PATH)
        .map(percent_encode)
        .collect();
    let query: Vec<String> = message
        .options
        .get_all(OptionNumber::LOCATION_QUERY)
        .map(percent_encode)
        .collect();
    if !path.is_empty() || !query.is_empty() {
        let mut location = format!("/{}", path.join("/"));
        if !query.is_empty() {
            location.push('?');
            location.push_str(&query.join("&"));
        }
        if let Ok(v) = HeaderValue::from_str(&location) {
            headers.insert(LOCATION, v);
        }
    }
    let body = if status == 304 {
        Bytes::new()
    } else {
        Bytes::from(message.payload.clone())
    };
    builder
        .body(Full::new(body).boxed())
        .expect("a valid response")
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~!$'()*+,;=:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A failed CoAP exchange as an HTTP answer: no answer in time 504, the rest 502.
fn error_response(error: &Error) -> HttpResponse {
    use tern::proto::endpoint::RequestError;
    match error {
        Error::Request(RequestError::Timeout | RequestError::Unacknowledged { .. }) => plain(
            StatusCode::GATEWAY_TIMEOUT,
            "the device did not answer in time",
        ),
        Error::Uri(e) => plain(StatusCode::BAD_REQUEST, format!("not a CoAP URI: {e}")),
        Error::UnsupportedScheme(s) => plain(
            StatusCode::BAD_REQUEST,
            format!("scheme {s} is not supported"),
        ),
        Error::NoCredentials => plain(StatusCode::BAD_GATEWAY, "no credentials for this device"),
        // The device is asked more than CoAP lets one client ask one peer (message IDs not
        // reusable within EXCHANGE_LIFETIME, requests in flight): come back later.
        Error::Request(RequestError::MessageIdsExhausted | RequestError::TooManyRequests(_)) => {
            let mut r = plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests to this device",
            );
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
            r
        }
        other => {
            tracing::debug!(error = %other, "CoAP exchange failed");
            plain(StatusCode::BAD_GATEWAY, "the device could not be reached")
        }
    }
}

/// Observes the resource and streams its notifications as server-sent events.
async fn observe(builder: RequestBuilder, timeout: Duration) -> HttpResponse {
    let mut observation = match tokio::time::timeout(timeout, builder.observe()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return error_response(&e),
        Err(_) => {
            return plain(
                StatusCode::GATEWAY_TIMEOUT,
                "the device did not answer in time",
            )
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        // Ends when the observation does, or when the HTTP client has gone (send fails);
        // dropping the observation deregisters it.
        while let Some(next) = observation.next().await {
            let event = match next {
                Ok(response) => sse_event(&response),
                Err(e) => format!("event: error\ndata: {e}\n\n"),
            };
            if tx.send(Bytes::from(event)).await.is_err() {
                break;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    http::Response::builder()
        .status(StatusCode::OK)
        .header(CONTENT_TYPE, "text/event-stream")
        .header(CACHE_CONTROL, "no-cache")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("a valid response")
}

/// One notification as a server-sent event: `event: notification` for a success code,
/// `event: error` with the code on the first data line otherwise (the last event then); the
/// payload as text lines when it is text, else `base64:` and its base64.
fn sse_event(response: &Response) -> String {
    let message = response.message();
    let observe = tern::proto::observe::observe_value(message);
    let text = response
        .content_format()
        .is_none_or(ContentFormat::is_text)
        .then(|| std::str::from_utf8(&message.payload).ok())
        .flatten();
    let success = message.code.class() == 2;
    let mut event = format!(
        "event: {}\n",
        if success { "notification" } else { "error" }
    );
    if let Some(n) = observe {
        event.push_str(&format!("id: {n}\n"));
    }
    if !success {
        let name = message.code.name().unwrap_or("");
        event.push_str(&format!("data: {} {name}\n", message.code));
    }
    match text {
        Some("") => event.push_str("data:\n"),
        Some(text) => {
            for line in text.lines() {
                event.push_str(&format!("data: {line}\n"));
            }
        }
        None => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&message.payload);
            event.push_str(&format!("data: base64:{b64}\n"));
        }
    }
    event.push('\n');
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern::proto::{Message, MessageType};

    fn config() -> ApiConfig {
        let mut providers = HashMap::new();
        providers.insert(
            "lamp".to_string(),
            Provider {
                base: "coaps://lamp.example:5684/api/".into(),
                context: Context::client(),
            },
        );
        ApiConfig {
            token: Zeroizing::new("t0ken-of-sixteen-chars".into()),
            providers,
            context: Context::client(),
            open_proxy_path: true,
            tls: None,
        }
    }

    #[tokio::test]
    async fn routes() {
        let c = config();
        let uri = |p: &str| route(&c, p).map(|(u, _)| u).map_err(|(s, _)| s);
        assert_eq!(
            uri("/providers/lamp/state?x=1").unwrap(),
            "coaps://lamp.example:5684/api/state?x=1"
        );
        assert_eq!(
            uri("/providers/lamp").unwrap(),
            "coaps://lamp.example:5684/api"
        );
        assert_eq!(
            uri("/providers/lamp?x").unwrap(),
            "coaps://lamp.example:5684/api?x"
        );
        assert_eq!(
            uri("/providers/other/x").unwrap_err(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            uri("/proxy/coap://d.example/t?a=1").unwrap(),
            "coap://d.example/t?a=1"
        );
        assert_eq!(
            uri("/proxy/coap%3A%2F%2Fd.example%2Ft").unwrap(),
            "coap://d.example/t"
        );
        assert_eq!(uri("/elsewhere").unwrap_err(), StatusCode::NOT_FOUND);
        let closed = ApiConfig {
            open_proxy_path: false,
            ..config()
        };
        assert!(route(&closed, "/proxy/coap://d/t").is_err());
    }

    #[test]
    fn bearer_tokens() {
        let c = config();
        let mut h = HeaderMap::new();
        assert!(!authorized(&c, &h));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer t0ken-of-sixteen-chars"),
        );
        assert!(authorized(&c, &h));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer t0ken-of-sixteen-charz"),
        );
        assert!(!authorized(&c, &h));
        h.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwdw=="),
        );
        assert!(!authorized(&c, &h));
    }

    #[test]
    fn coap_responses_become_http_ones() {
        let mut m = Message::new(MessageType::Ack, Code::CREATED);
        m.options.push(OptionNumber::LOCATION_PATH, &b"items"[..]);
        m.options.push(OptionNumber::LOCATION_PATH, &b"a b"[..]);
        m.options.push(OptionNumber::LOCATION_QUERY, &b"v=1"[..]);
        m.options.set(OptionNumber::ETAG, vec![0xab]);
        m.options.set_uint(OptionNumber::MAX_AGE, 9);
        m.options.set_uint(OptionNumber::CONTENT_FORMAT, 50);
        m.payload = b"{}".to_vec();
        let r = http_response(&Response::from_message(m));
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()[LOCATION], "/items/a%20b?v=1");
        assert_eq!(r.headers()[ETAG], "\"ab\"");
        assert_eq!(r.headers()[CACHE_CONTROL], "max-age=9");
        assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
        let r = http_response(&Response::from_message(Message::new(
            MessageType::Ack,
            Code::CHANGED,
        )));
        assert_eq!(r.status(), 204);
        assert_eq!(r.headers()[CACHE_CONTROL], "max-age=60");
    }

    #[test]
    fn events() {
        let mut m = Message::new(MessageType::Con, Code::CONTENT);
        m.options.set_uint(OptionNumber::OBSERVE, 7);
        m.payload = b"line one\nline two".to_vec();
        assert_eq!(
            sse_event(&Response::from_message(m.clone())),
            "event: notification\nid: 7\ndata: line one\ndata: line two\n\n"
        );
        m.options.set_uint(OptionNumber::CONTENT_FORMAT, 60);
        m.payload = vec![0xa1, 0x01, 0x02];
        assert_eq!(
            sse_event(&Response::from_message(m)),
            "event: notification\nid: 7\ndata: base64:oQEC\n\n"
        );
        let mut gone = Message::new(MessageType::Con, Code::NOT_FOUND);
        gone.payload = Vec::new();
        assert_eq!(
            sse_event(&Response::from_message(gone)),
            "event: error\ndata: 4.04 Not Found\ndata:\n\n"
        );
    }
}
