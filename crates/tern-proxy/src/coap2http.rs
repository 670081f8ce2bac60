//! CoAP → HTTP: a forward-proxy handler for Tern's router ([`tern::Router::forward_proxy`])
//! that sends requests carrying Proxy-Uri (or Proxy-Scheme with Uri-*) to http:// and https://
//! servers and maps their answers back.
//!
//! Failures: a target the policy refuses gets its [`Refusal`] code (5.05 for a scheme, 4.03
//! for the allow-list, internal addresses and credentials over plain coap); an HTTP server that
//! cannot be reached, breaks the exchange or sends a body larger than allowed, 5.02 Bad
//! Gateway; no answer within the time-out (30 s by default and at most), 5.04 Gateway Timeout.
//! Bodies of any size (up to the runtime's block-wise limits) arrive and leave whole: the
//! runtime reassembles and slices the blocks on the CoAP side.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, ETAG, IF_NONE_MATCH};
use http::uri::{Authority, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use tern::{PeerIdentity, Request, Response};
use tern_proto::{Code, OptionNumber};
use tokio::sync::Semaphore;

use crate::cache::{CacheKey, CacheStats, Lookup, ResponseCache};
use crate::policy::{ProxyPolicy, Refusal};
use crate::translate;

/// The longest a request may wait for its HTTP server, and the default.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest HTTP response body taken by default: the runtime's limit on a block-wise body.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;

/// Requests forwarded at once by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// Seconds a client is asked to wait when the gateway is at [`ForwarderConfig::max_in_flight`].
pub const BUSY_RETRY_AFTER: u32 = 5;

/// Bytes of responses the cache holds by default.
pub const DEFAULT_CACHE_BYTES: usize = 8 << 20;

/// How the forwarder behaves.
#[derive(Debug, Clone)]
pub struct ForwarderConfig {
    /// What may be forwarded, where.
    pub policy: ProxyPolicy,
    /// How long to wait for the HTTP server's answer (capped at [`MAX_TIMEOUT`]).
    pub timeout: Duration,
    /// Largest HTTP response body; more is answered 5.02.
    pub max_response_body: usize,
    /// A header that carries the CoAP client's authenticated identity to the HTTP server
    /// (`psk:<identity>`, `cert:<common name>`, `oscore:<kid in hex>`); not sent for
    /// unauthenticated clients, and removed from what the client could set itself.
    pub identity_header: Option<String>,
    /// Extra trust anchors (PEM) for https:// servers, besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Skip verifying https:// servers (for tests; logged loudly).
    pub no_verify: bool,
    /// Bytes of GET responses kept in the cache (0: no cache).
    pub cache_bytes: usize,
    /// Requests forwarded at once; more are answered 5.03 with Max-Age
    /// [`BUSY_RETRY_AFTER`].
    pub max_in_flight: usize,
}

impl Default for ForwarderConfig {
    fn default() -> Self {
        ForwarderConfig {
            policy: ProxyPolicy::default(),
            timeout: MAX_TIMEOUT,
            max_response_body: DEFAULT_MAX_BODY,
            identity_header: None,
            ca_file: None,
            no_verify: false,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Why a forwarder could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// TLS set-up for https:// targets failed (a CA file that does not load, say).
    #[error("TLS client set-up: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    /// A configured header name is not valid.
    #[error("{0:?} is not a valid header name")]
    HeaderName(String),
}

/// Resolves target host names and keeps only the addresses the policy allows, so that the
/// address checked is the address connected to.
#[derive(Clone)]
pub struct PolicyResolver {
    policy: Arc<ProxyPolicy>,
}

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<IpAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .map(|a| a.ip())
                .collect();
            let kept = policy
                .filter_addresses(&host, found)
                .map_err(|r| io::Error::new(io::ErrorKind::PermissionDenied, r.reason))?;
            Ok(kept
                .into_iter()
                .map(|ip| SocketAddr::new(ip, 0))
                .collect::<Vec<_>>()
                .into_iter())
        })
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector<PolicyResolver>>, Full<Bytes>>;

/// Forwards CoAP requests to HTTP servers. Cheap to clone.
#[derive(Clone)]
pub struct HttpForwarder {
    client: HttpClient,
    config: Arc<ForwarderConfig>,
    policy: Arc<ProxyPolicy>,
    identity_header: Option<HeaderName>,
    cache: Option<Arc<Mutex<ResponseCache>>>,
    in_flight: Arc<Semaphore>,
}

impl HttpForwarder {
    /// A forwarder with its own HTTP client (connections are pooled per host).
    pub fn new(mut config: ForwarderConfig) -> Result<Self, ProxyError> {
        config.timeout = config.timeout.min(MAX_TIMEOUT);
        let policy = Arc::new(config.policy.clone());
        let mut http = HttpConnector::new_with_resolver(PolicyResolver {
            policy: policy.clone(),
        });
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let mut tls = SslConnector::builder(SslMethod::tls_client())?;
        if let Some(ca) = &config.ca_file {
            tls.set_ca_file(ca)?;
        }
        if config.no_verify {
            tracing::warn!("https:// servers are NOT verified (--no-verify): anyone on the path can impersonate them");
            tls.set_verify(SslVerifyMode::NONE);
        }
        let https = HttpsConnector::with_connector(http, tls)?;
        let client = Client::builder(TokioExecutor::new()).build(https);
        let identity_header = match &config.identity_header {
            Some(name) => Some(
                HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ProxyError::HeaderName(name.clone()))?,
            ),
            None => None,
        };
        let cache = (config.cache_bytes > 0).then(|| {
            Arc::new(Mutex::new(ResponseCache::new(
                config.cache_bytes,
                config.max_response_body + 4096,
            )))
        });
        Ok(HttpForwarder {
            client,
            policy,
            identity_header,
            cache,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight.max(1))),
            config: Arc::new(config),
        })
    }

    /// The cache's counters (all zero without a cache).
    pub fn cache_stats(&self) -> CacheStats {
        self.cache
            .as_ref()
            .and_then(|c| c.lock().ok().map(|c| c.stats()))
            .unwrap_or_default()
    }

    /// Forwards one request meant for a forward proxy (its target in Proxy-Uri, or in
    /// Proxy-Scheme and Uri-*) and gives the CoAP response (errors included).
    pub async fn forward(&self, request: Request) -> Response {
        let target = translate::target_uri(request.message());
        self.respond(request, target, false).await
    }

    /// Forwards a request sent to a fixed path of the gateway (`/coap2http?target=URL`), for
    /// clients that cannot set Proxy-Uri: the target is the `target` query item.
    pub async fn forward_from_query(&self, request: Request) -> Response {
        let target = request
            .queries()
            .find_map(|q| q.strip_prefix("target="))
            .ok_or_else(|| refusal(Code::BAD_REQUEST, "needs ?target=URL"))
            .and_then(|t| {
                t.parse::<Uri>()
                    .ok()
                    .filter(|u| u.scheme().is_some() && u.host().is_some())
                    .ok_or_else(|| refusal(Code::BAD_REQUEST, "target is not an absolute URL"))
            });
        // Uri-Query is Class E: under OSCORE the target travels encrypted and integrity
        // protected end to end (RFC 8613 §4.1.1), outer copies being dropped on unprotect.
        self.respond(request, target, true).await
    }

    /// `target_protected`: whether the target came from options OSCORE protects (the fixed
    /// path's query) rather than from outer ones (Proxy-Uri's scheme and authority).
    async fn respond(
        &self,
        request: Request,
        target: Result<Uri, Refusal>,
        target_protected: bool,
    ) -> Response {
        // Each forwarded request may hold a response body of up to `max_response_body` for up
        // to the time-out: their number is capped, and past it clients are told to come back.
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Response::error(Code::SERVICE_UNAVAILABLE, "the gateway is busy")
                .with_max_age(BUSY_RETRY_AFTER);
        };
        let result = match target {
            Ok(target) => self.try_forward(&request, target, target_protected).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(response) => response,
            Err(refusal) => {
                tracing::debug!(peer = %request.peer(), code = ?refusal.code, reason = %refusal.reason, "not forwarded");
                // The gateway's own errors are not to be cached by the client (RFC 7252
                // §5.10.5 would give them 60 s).
                Response::error(refusal.code, refusal.reason).with_max_age(0)
            }
        }
    }

    async fn try_forward(
        &self,
        request: &Request,
        target: Uri,
        target_protected: bool,
    ) -> Result<Response, Refusal> {
        let message = request.message();
        // The CoAP leg counts as secure when the channel is (DTLS or TLS), or when the request
        // came under OSCORE with its target protected too (the fixed path's query). OSCORE with
        // Proxy-Uri does not count: the target's scheme, host and port travel in unprotected
        // outer options (RFC 8613 §4.1.3.3), which anyone on the path could point elsewhere,
        // sending the credentials in the query with them.
        let oscore_counts = target_protected && request.oscore().is_some();
        let secure = request.peer_identity().is_some() || oscore_counts;
        self.policy.check(&target, secure)?;
        let host = target.host().unwrap_or("");
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            self.policy.filter_addresses(literal, vec![ip])?;
        }
        // Only plain GETs are cached: not conditional ones (the client revalidates itself),
        // not ones with credentials (their answers are the requester's own).
        let options = &message.options;
        let cache_key = (message.code == Code::GET
            && message.payload.is_empty()
            && !options.contains(OptionNumber::CONTENT_FORMAT)
            && !options.contains(OptionNumber::ETAG)
            && !options.contains(OptionNumber::IF_MATCH)
            && !options.contains(OptionNumber::IF_NONE_MATCH)
            && !self.policy.carries_credentials(&target))
        .then(|| CacheKey {
            target: target.to_string(),
            accept: options.get_uint(OptionNumber::ACCEPT),
            identity: self
                .identity_header
                .as_ref()
                .and_then(|_| identity_of(request, oscore_counts)),
        })
        .filter(|_| self.cache.is_some());
        let now = Instant::now();
        let mut revalidating = None;
        if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
            match cache.lock().map(|mut c| c.lookup(key, now)) {
                Ok(Lookup::Fresh(cached)) => return Ok(Response::from_message(cached)),
                Ok(Lookup::Stale(tag, stale)) => revalidating = Some((tag, stale)),
                _ => {}
            }
        }
        let (target, authorization) = split_userinfo(&target)?;
        let mut parts = translate::http_request(message, target.clone())?;
        if let Some((tag, _)) = &revalidating {
            if let Ok(value) = HeaderValue::from_str(tag) {
                parts.headers.insert(IF_NONE_MATCH, value);
            }
        }
        let mut builder = http::Request::builder()
            .method(parts.method)
            .uri(target.clone());
        let headers = builder.headers_mut().expect("a fresh builder");
        *headers = parts.headers;
        if let Some(auth) = authorization {
            headers.insert(AUTHORIZATION, auth);
        }
        if let Some(name) = &self.identity_header {
            headers.remove(name);
            if let Some(identity) = identity_of(request, oscore_counts) {
                if let Ok(value) = HeaderValue::from_str(&identity) {
                    headers.insert(name.clone(), value);
                }
            }
        }
        let http_request = builder
            .body(Full::new(Bytes::from(parts.body)))
            .map_err(|e| {
                refusal(
                    Code::BAD_OPTION,
                    format!("cannot form the HTTP request: {e}"),
                )
            })?;
        let exchange = async {
            let response = self
                .client
                .request(http_request)
                .await
                .map_err(|e| classify(&e))?;
            let (head, body) = response.into_parts();
            let body = Limited::new(body, self.config.max_response_body)
                .collect()
                .await
                .map_err(|_| {
                    refusal(
                        Code::BAD_GATEWAY,
                        format!(
                            "the HTTP response was larger than {} bytes, or broke off",
                            self.config.max_response_body
                        ),
                    )
                })?
                .to_bytes();
            Ok::<_, Refusal>((head, body))
        };
        let (head, body) = tokio::time::timeout(self.config.timeout, exchange)
            .await
            .map_err(|_| {
                refusal(
                    Code::GATEWAY_TIMEOUT,
                    "the HTTP server did not answer in time",
                )
            })??;
        let max_age = translate::max_age(&head.headers);
        let cache = self.cache.as_ref().zip(cache_key.as_ref());
        if let (Some((_, stale)), true) =
            (revalidating, head.status == http::StatusCode::NOT_MODIFIED)
        {
            // The stored body is good again; answer with it even if the entry went meanwhile.
            let refreshed = cache
                .and_then(|(c, key)| c.lock().ok()?.revalidated(key, max_age, Instant::now()))
                .unwrap_or_else(|| {
                    crate::cache::with_max_age(&stale, Duration::from_secs(u64::from(max_age)))
                });
            return Ok(Response::from_message(refreshed));
        }
        let response = translate::coap_response(
            message.code,
            &target,
            head.status.as_u16(),
            &head.headers,
            body.to_vec(),
        );
        if let Some((cache, key)) = cache {
            let http_etag = head
                .headers
                .get(ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if let Ok(mut cache) = cache.lock() {
                if translate::storable(&head.headers) {
                    cache.store(key.clone(), &response, http_etag, max_age, Instant::now());
                } else {
                    cache.forget(key);
                }
            }
        }
        Ok(Response::from_message(response))
    }
}

fn refusal(code: Code, reason: impl Into<String>) -> Refusal {
    Refusal {
        code,
        reason: reason.into(),
    }
}

/// The error of a failed HTTP exchange as a CoAP answer: the policy's refusal of every
/// address (4.03), else 5.02. The diagnostic stays generic: it must not tell a client about
/// the gateway's internal network.
fn classify(error: &hyper_util::client::legacy::Error) -> Refusal {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::PermissionDenied {
                return refusal(Code::FORBIDDEN, io.to_string());
            }
        }
        source = e.source();
    }
    tracing::debug!(error = %error, "HTTP exchange failed");
    refusal(Code::BAD_GATEWAY, "the HTTP server could not be reached")
}

/// The target without userinfo, and the userinfo as an `Authorization: Basic` header.
fn split_userinfo(target: &Uri) -> Result<(Uri, Option<HeaderValue>), Refusal> {
    let Some(authority) = target.authority() else {
        return Ok((target.clone(), None));
    };
    let Some((userinfo, hostport)) = authority.as_str().rsplit_once('@') else {
        return Ok((target.clone(), None));
    };
    let decode =
        |s: &str| tern_proto::uri::percent_decode(s).unwrap_or_else(|_| s.as_bytes().to_vec());
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let mut credentials = decode(user);
    credentials.push(b':');
    credentials.extend(decode(password));
    let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| refusal(Code::BAD_OPTION, "userinfo cannot be a header"))?;
    value.set_sensitive(true);
    let mut parts = target.clone().into_parts();
    parts.authority = Some(
        hostport
            .parse::<Authority>()
            .map_err(|_| refusal(Code::BAD_OPTION, "the target's host is not valid"))?,
    );
    let uri =
        Uri::from_parts(parts).map_err(|_| refusal(Code::BAD_OPTION, "the target is not valid"))?;
    Ok((uri, Some(value)))
}

/// The CoAP client's authenticated identity, as the identity header says it: its DTLS or TLS
/// one as `psk:` or `cert:` and the identity with every byte outside `A-Za-z0-9-._~` written
/// as `%XX`, so that distinct identities stay distinct and nothing in one can read as header
/// syntax; else, when `oscore_counts` (see `try_forward`), its OSCORE context as `oscore:`, the
/// kid in hex and, when the context has one, `.` and the configured ID Context in hex (two
/// contexts may share a kid). A channel identity wins: it is the one the gateway checked.
fn identity_of(request: &Request, oscore_counts: bool) -> Option<String> {
    let Some(channel) = request.peer_identity() else {
        let oscore = request.oscore().filter(|_| oscore_counts)?;
        let mut out = format!("oscore:{}", hex(&oscore.kid));
        if let Some(context) = &oscore.kid_context {
            out.push('.');
            out.push_str(&hex(context));
        }
        return Some(out);
    };
    let (kind, bytes) = match channel {
        PeerIdentity::Psk(id) => ("psk", id.as_slice()),
        PeerIdentity::Certificate { common_name, .. } => {
            ("cert", common_name.as_deref()?.as_bytes())
        }
    };
    let mut out = format!("{kind}:");
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_becomes_basic_authorization() {
        let uri: Uri = "https://al%40ice:s3cr%3At@example.com:8443/x?y"
            .parse()
            .unwrap();
        let (stripped, auth) = split_userinfo(&uri).unwrap();
        assert_eq!(stripped.to_string(), "https://example.com:8443/x?y");
        let auth = auth.unwrap();
        assert!(auth.is_sensitive());
        let b64 = auth.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, b"al@ice:s3cr:t");
        let plain: Uri = "http://example.com/".parse().unwrap();
        assert!(split_userinfo(&plain).unwrap().1.is_none());
    }
}
