//! The server side: a router of path patterns to async handlers, with 4.04 and 4.05 answered
//! by default and `/.well-known/core` (RFC 6690) generated from the registered resources.
//!
//! Patterns are `/`-separated: a literal segment matches itself, `{name}` matches any one
//! segment (read with [`Request::param`]), and a final `*` matches the rest of the path,
//! including nothing (read with [`Request::rest`]). The first registered pattern that matches
//! wins.
//!
//! A resource marked [`Resource::obs`] is observable (RFC 7641): a GET with Observe 0 registers
//! the client, and [`ResourceNotifier::notify`] (from [`Router::notifier`]) tells every
//! endpoint serving this router that the resource changed, so that its observers are sent the
//! handler's new response (see the driver's `observe` module).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tern_proto::block::{Block1Config, Block2Config};
use tern_proto::link_format::{self, Link};
use tern_proto::observe::RegistryConfig;
use tern_proto::{Code, ContentFormat, OptionNumber};
use tokio::sync::broadcast;

use crate::echo::EchoVerifier;
use crate::message::{Request, Response};
use crate::oscore::OscoreServer;

/// A boxed handler future.
pub type BoxFuture = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// A boxed access decision: `Ok(())` lets the request through, `Err(response)` answers it.
pub type AccessFuture = Pin<Box<dyn Future<Output = Result<(), Response>> + Send + 'static>>;

/// Decides, before routing, whether a request may reach its handler (see
/// [`Router::access_control`]). Implemented for every `Fn(&Request) -> impl Future<Output =
/// Result<(), Response>>` whose future does not borrow the request.
pub trait AccessControl: Send + Sync + 'static {
    /// Lets the request through, or gives the response that refuses it (4.01, 4.03, 5.03…).
    fn check(&self, request: &Request) -> AccessFuture;
}

impl<F, Fut> AccessControl for F
where
    F: Fn(&Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), Response>> + Send + 'static,
{
    fn check(&self, request: &Request) -> AccessFuture {
        Box::pin(self(request))
    }
}

/// Something that answers requests. Implemented for every `Fn(Request) -> impl Future<Output =
/// Response>`.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, request: Request) -> BoxFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send + 'static,
{
    fn call(&self, request: Request) -> BoxFuture {
        Box::pin(self(request))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest,
}

fn parse_pattern(pattern: &str) -> Vec<Segment> {
    let segments: Vec<&str> = pattern
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let last = segments.len().saturating_sub(1);
    segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if *s == "*" && i == last {
                Segment::Rest
            } else if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Segment::Param(name.to_string())
            } else {
                Segment::Literal((*s).to_string())
            }
        })
        .collect()
}

/// What a pattern captured from a path.
type Captures = (Vec<(String, String)>, Option<String>);

fn match_pattern(pattern: &[Segment], path: &[&str]) -> Option<Captures> {
    let mut params = Vec::new();
    for (i, seg) in pattern.iter().enumerate() {
        match seg {
            Segment::Rest => return Some((params, Some(path.get(i..).unwrap_or(&[]).join("/")))),
            Segment::Literal(lit) => {
                if path.get(i) != Some(&lit.as_str()) {
                    return None;
                }
            }
            Segment::Param(name) => params.push((name.clone(), (*path.get(i)?).to_string())),
        }
    }
    (path.len() == pattern.len()).then_some((params, None))
}

/// One resource: the handlers for its methods and its link-format description.
#[derive(Clone, Default)]
pub struct Resource {
    handlers: Vec<(Code, Arc<dyn Handler>)>,
    attrs: Vec<(String, Option<String>)>,
    hidden: bool,
    observable: bool,
    oscore_only: bool,
    /// Unsafe requests need an Echo at most this old (RFC 9175 §2).
    fresh: Option<Duration>,
}

macro_rules! method_fns {
    ($($(#[$doc:meta])* $fn:ident => $code:ident;)*) => {
        impl Resource {
            $($(#[$doc])* pub fn $fn(self, handler: impl Handler) -> Self {
                self.method(Code::$code, handler)
            })*
        }
        impl Router {
            $($(#[$doc])* pub fn $fn(self, pattern: &str, handler: impl Handler) -> Self {
                self.method(pattern, Code::$code, handler)
            })*
        }
    };
}

method_fns! {
    /// Handles GET.
    get => GET;
    /// Handles POST.
    post => POST;
    /// Handles PUT.
    put => PUT;
    /// Handles DELETE.
    delete => DELETE;
    /// Handles FETCH.
    fetch => FETCH;
    /// Handles PATCH.
    patch => PATCH;
    /// Handles iPATCH.
    ipatch => IPATCH;
}

impl Resource {
    /// A resource with no handlers.
    pub fn new() -> Self {
        Resource::default()
    }

    /// Handles a method.
    pub fn method(mut self, code: Code, handler: impl Handler) -> Self {
        self.handlers.retain(|(c, _)| *c != code);
        self.handlers.push((code, Arc::new(handler)));
        self
    }

    /// Adds a link attribute for `/.well-known/core`.
    pub fn attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.attrs.push((name.to_string(), Some(value.into())));
        self
    }

    /// Resource type (`rt`).
    pub fn rt(self, rt: &str) -> Self {
        self.attr("rt", rt)
    }

    /// Interface description (`if`).
    pub fn interface(self, interface: &str) -> Self {
        self.attr("if", interface)
    }

    /// Content-Format hint (`ct`).
    pub fn ct(self, ct: ContentFormat) -> Self {
        self.attr("ct", ct.0.to_string())
    }

    /// Human-readable title.
    pub fn title(self, title: &str) -> Self {
        self.attr("title", title)
    }

    /// Marks the resource observable (RFC 7641): listed with `obs`, a GET with Observe 0
    /// registers the client, and [`ResourceNotifier::notify`] sends it the new state.
    pub fn obs(mut self) -> Self {
        if !self.observable {
            self.attrs.push(("obs".to_string(), None));
        }
        self.observable = true;
        self
    }

    /// Maximum size estimate (`sz`).
    pub fn sz(self, size: u64) -> Self {
        self.attr("sz", size.to_string())
    }

    /// Serves only requests protected with OSCORE (RFC 8613): others get 4.01 Unauthorized.
    /// Which contexts may do what is the handler's to decide, by
    /// [`Request::oscore`](crate::Request::oscore).
    pub fn require_oscore(mut self) -> Self {
        self.oscore_only = true;
        self
    }

    /// Demands freshness (RFC 9175 §2.3): a request with a method other than GET or FETCH
    /// must echo a value this router issued to its address at most `max_age` ago; one that
    /// does not is answered 4.01 Unauthorized with a new Echo, and is acted on only when
    /// repeated with it (Tern's client does this by itself). For actuators, where a delayed
    /// or replayed request must not act.
    pub fn require_echo(mut self, max_age: Duration) -> Self {
        self.fresh = Some(max_age);
        self
    }

    /// Leaves the resource out of `/.well-known/core`.
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }

    fn allowed(&self) -> String {
        let names: Vec<&str> = self.handlers.iter().filter_map(|(c, _)| c.name()).collect();
        names.join(", ")
    }
}

#[derive(Clone)]
struct Route {
    pattern: Vec<Segment>,
    text: String,
    resource: Resource,
}

/// Changes announced before a slow endpoint loses the oldest (it then misses those changes;
/// the next one brings its observers up to date).
const CHANGE_BACKLOG: usize = 1024;

/// Routes requests to handlers by path and method.
#[derive(Clone)]
pub struct Router {
    routes: Arc<Vec<Route>>,
    /// Paths of observable resources that changed, to every endpoint serving this router.
    changes: broadcast::Sender<String>,
    observe_config: RegistryConfig,
    /// Caps on request bodies arriving block by block, and on response bodies cached for
    /// block-wise GETs.
    block_config: (Block1Config, Block2Config),
    /// The OSCORE contexts requests to this router are unprotected with.
    oscore: Option<OscoreServer>,
    /// Issues and checks Echo values (freshness and address verification).
    echo: Arc<EchoVerifier>,
    /// Whether responses to unverified addresses are limited (RFC 9175 §2.4).
    limit_amplification: bool,
    /// Where requests meant for a forward proxy go (else they get 5.05).
    forward_proxy: Option<Arc<dyn Handler>>,
    /// Asked about every request before it is routed, if set.
    access: Option<Arc<dyn AccessControl>>,
}

impl Default for Router {
    fn default() -> Self {
        Router {
            routes: Arc::default(),
            changes: broadcast::channel(CHANGE_BACKLOG).0,
            observe_config: RegistryConfig::default(),
            block_config: (Block1Config::default(), Block2Config::default()),
            oscore: None,
            echo: Arc::new(EchoVerifier::new()),
            limit_amplification: false,
            forward_proxy: None,
            access: None,
        }
    }
}

/// Tells the endpoints serving a [`Router`] that an observable resource changed (RFC 7641
/// §4.2). Cheap to clone; made by [`Router::notifier`].
#[derive(Clone, Debug)]
pub struct ResourceNotifier {
    changes: broadcast::Sender<String>,
}

impl ResourceNotifier {
    /// The resource at `path` (`/time`, say: the path of a request to it) changed: each of its
    /// observers is sent the GET handler's new response, with the next Observe value. Returns
    /// how many endpoints and stream connections with observers were told (0 when none has
    /// any: they listen only while they have observers).
    pub fn notify(&self, path: &str) -> usize {
        self.changes.send(normalize(path)).unwrap_or(0)
    }
}

/// The key a resource's observers are kept under: its path segments joined by `/`, without a
/// leading `/`.
pub(crate) fn normalize(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    segments.join("/")
}

impl Router {
    /// An empty router (answers 4.04 to everything but `/.well-known/core`).
    pub fn new() -> Self {
        Router::default()
    }

    /// A handle to announce that observable resources changed.
    pub fn notifier(&self) -> ResourceNotifier {
        ResourceNotifier {
            changes: self.changes.clone(),
        }
    }

    /// Sets the observer limits and the CON interval (RFC 7641 §4.5, default 24 h) each
    /// endpoint serving this router applies to its observers.
    pub fn observe_limits(mut self, config: RegistryConfig) -> Self {
        self.observe_config = config;
        self
    }

    /// Handles requests meant for a forward proxy (with Proxy-Uri, or Proxy-Scheme and Uri-*,
    /// RFC 7252 §5.7.2) with `handler`, as a CoAP-to-CoAP or cross-proxy does; without it they
    /// are answered 5.05 Proxying Not Supported. Block-wise bodies reach the handler whole
    /// and its response is sliced as any other.
    pub fn forward_proxy(mut self, handler: impl Handler) -> Self {
        self.forward_proxy = Some(Arc::new(handler));
        self
    }

    /// Sets the caps on block-wise state each endpoint (or stream listener) serving this
    /// router keeps: request bodies being assembled (Block1: transfers, bytes, body size,
    /// lifetime) and response bodies cached for later blocks (Block2: bytes, per peer,
    /// lifetime). Past them, new transfers get 5.03 and cached bodies are evicted (and
    /// regenerated if asked for again). Over streams BERT request blocks are always accepted.
    pub fn block_limits(
        mut self,
        request_bodies: Block1Config,
        response_cache: Block2Config,
    ) -> Self {
        self.block_config = (request_bodies, response_cache);
        self
    }

    /// Unprotects OSCORE requests (RFC 8613) with these contexts before routing them, and
    /// protects their responses and notifications. Without it, a request with an OSCORE
    /// option gets 4.02 Bad Option. Requests without OSCORE are still routed (see
    /// [`Resource::require_oscore`]).
    pub fn oscore(mut self, contexts: OscoreServer) -> Self {
        self.oscore = Some(contexts);
        self
    }

    /// Asks `access` about every request before routing it: those it refuses get its
    /// response instead of reaching a handler. It sees each request after OSCORE is removed
    /// (so [`Request::oscore`] and [`Request::peer_identity`] say who sent it), requests for
    /// `/.well-known/core` and for the forward proxy included, and each notification to an
    /// observer again before it is sent, so that a peer whose access ends stops being
    /// notified (the refusal ends its observation).
    pub fn access_control(mut self, access: impl AccessControl) -> Self {
        self.access = Some(Arc::new(access));
        self
    }

    /// Limits what is sent to addresses not yet verified (RFC 9175 §2.4, for plain UDP, where
    /// a request's source address may be forged to aim responses at a victim): a response
    /// more than three times the size of its request goes to an address only after the
    /// address echoed a challenge; before that the answer is a small 4.01 with Echo, which
    /// Tern's client (and any RFC 9175 client) answers by repeating the request. A verified
    /// address stays verified (the last 16,384 per endpoint). DTLS and streams are not
    /// limited: their handshakes verify the address.
    pub fn limit_amplification(mut self, on: bool) -> Self {
        self.limit_amplification = on;
        self
    }

    /// Whether [`limit_amplification`](Self::limit_amplification) is on.
    pub(crate) fn limits_amplification(&self) -> bool {
        self.limit_amplification
    }

    /// The Echo verifier.
    pub(crate) fn echo(&self) -> &EchoVerifier {
        &self.echo
    }

    /// The OSCORE contexts, if any.
    pub(crate) fn oscore_server(&self) -> Option<&OscoreServer> {
        self.oscore.as_ref()
    }

    /// The block-wise caps ([`block_limits`](Self::block_limits)).
    pub(crate) fn block_config(&self) -> &(Block1Config, Block2Config) {
        &self.block_config
    }

    /// The observer limits ([`observe_limits`](Self::observe_limits)).
    pub(crate) fn observe_config(&self) -> &RegistryConfig {
        &self.observe_config
    }

    /// Changes announced by [`ResourceNotifier::notify`] from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    /// Whether the resource a GET with these path segments reaches is observable.
    pub(crate) fn is_observable(&self, segments: &[&str]) -> bool {
        self.routes
            .iter()
            .find(|route| {
                match_pattern(&route.pattern, segments).is_some()
                    && route.resource.handlers.iter().any(|(c, _)| *c == Code::GET)
            })
            .is_some_and(|route| route.resource.observable)
    }

    fn routes_mut(&mut self) -> &mut Vec<Route> {
        // Copy-on-write: a clone of this router keeps the routes it had.
        Arc::make_mut(&mut self.routes)
    }

    /// Registers a resource under a pattern, replacing one with the same pattern.
    pub fn resource(mut self, pattern: &str, resource: Resource) -> Self {
        let parsed = parse_pattern(pattern);
        let routes = self.routes_mut();
        match routes.iter_mut().find(|r| r.pattern == parsed) {
            Some(route) => route.resource = resource,
            None => routes.push(Route {
                pattern: parsed,
                text: pattern.to_string(),
                resource,
            }),
        }
        self
    }

    /// Adds a handler for one method under a pattern, creating the resource if needed.
    pub fn method(mut self, pattern: &str, code: Code, handler: impl Handler) -> Self {
        let parsed = parse_pattern(pattern);
        let routes = self.routes_mut();
        match routes.iter_mut().find(|r| r.pattern == parsed) {
            Some(route) => {
                route.resource = std::mem::take(&mut route.resource).method(code, handler)
            }
            None => routes.push(Route {
                pattern: parsed,
                text: pattern.to_string(),
                resource: Resource::new().method(code, handler),
            }),
        }
        self
    }

    /// The links of every listed resource, as `/.well-known/core` shows them.
    pub fn links(&self) -> Vec<Link> {
        self.routes
            .iter()
            .filter(|r| {
                !r.resource.hidden && r.pattern.iter().all(|s| matches!(s, Segment::Literal(_)))
            })
            .map(|r| {
                let mut target = String::new();
                for seg in &r.pattern {
                    if let Segment::Literal(lit) = seg {
                        target.push('/');
                        target.push_str(lit);
                    }
                }
                if target.is_empty() {
                    target.push('/');
                }
                Link {
                    target,
                    attrs: r.resource.attrs.clone(),
                }
            })
            .collect()
    }

    /// Whether a request meets its resource's freshness demand, if any.
    fn fresh_enough(&self, resource: &Resource, request: &Request) -> bool {
        let Some(max_age) = resource.fresh else {
            return true;
        };
        if matches!(request.method(), Code::GET | Code::FETCH) {
            return true;
        }
        request
            .message
            .options
            .get(OptionNumber::ECHO)
            .is_some_and(|echo| {
                self.echo
                    .verify(crate::clock::now(), request.peer, echo, max_age)
            })
    }

    /// Routes a request to its handler; 4.04, 4.05 and `/.well-known/core` are answered here.
    /// A request meant for a forward proxy (Proxy-Uri or Proxy-Scheme, RFC 7252 §5.7.2) goes
    /// to the [`forward_proxy`](Self::forward_proxy) handler, or gets 5.05 without one. With
    /// [`access_control`](Self::access_control), the request is first let through or refused.
    pub fn dispatch(&self, request: Request) -> BoxFuture {
        let Some(access) = &self.access else {
            return self.route(request);
        };
        let decision = access.check(&request);
        let router = self.clone();
        Box::pin(async move {
            match decision.await {
                Ok(()) => router.route(request).await,
                Err(refusal) => refusal,
            }
        })
    }

    /// [`dispatch`](Self::dispatch) without the access check.
    fn route(&self, mut request: Request) -> BoxFuture {
        let options = &request.message.options;
        if options.contains(OptionNumber::PROXY_URI) || options.contains(OptionNumber::PROXY_SCHEME)
        {
            if let Some(proxy) = &self.forward_proxy {
                return proxy.call(request);
            }
            let response = Response::new(Code::PROXYING_NOT_SUPPORTED);
            return Box::pin(std::future::ready(response));
        }
        let method = request.method();
        let mut path_matched: Option<&Resource> = None;
        let mut found: Option<(&Arc<dyn Handler>, &str, Captures)> = None;
        // Match on the Uri-Path options themselves: a segment holding a `/` stays one segment.
        let segments: Vec<&str> = request.message.path_segments().collect();
        for route in self.routes.iter() {
            let Some(captures) = match_pattern(&route.pattern, &segments) else {
                continue;
            };
            match route.resource.handlers.iter().find(|(c, _)| *c == method) {
                Some(_) if route.resource.oscore_only && request.oscore.is_none() => {
                    let response = Response::error(Code::UNAUTHORIZED, "OSCORE required");
                    return Box::pin(std::future::ready(response));
                }
                Some(_) if !self.fresh_enough(&route.resource, &request) => {
                    let now = crate::clock::now();
                    let challenge = self.echo.challenge(now, request.peer);
                    let response = Response::new(Code::UNAUTHORIZED)
                        .with_option(OptionNumber::ECHO, challenge);
                    return Box::pin(std::future::ready(response));
                }
                Some((_, handler)) => {
                    found = Some((handler, &route.text, captures));
                    break;
                }
                None => {
                    path_matched.get_or_insert(&route.resource);
                }
            }
        }
        let well_known = segments == [".well-known", "core"];
        drop(segments);
        if let Some((handler, route, (params, rest))) = found {
            request.params = params;
            request.rest = rest;
            tracing::trace!(route, "dispatch");
            return handler.call(request);
        }
        let response = if well_known {
            if method == Code::GET {
                let query: Vec<String> = request.queries().map(str::to_string).collect();
                let links = link_format::filter(&self.links(), &query);
                Response::content(link_format::serialize(&links).into_bytes())
                    .with_content_format(ContentFormat::LINK_FORMAT)
            } else {
                Response::error(Code::METHOD_NOT_ALLOWED, "Allowed: GET")
            }
        } else {
            match path_matched {
                Some(resource) => Response::error(
                    Code::METHOD_NOT_ALLOWED,
                    format!("Allowed: {}", resource.allowed()),
                ),
                None => Response::new(Code::NOT_FOUND),
            }
        };
        Box::pin(std::future::ready(response))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tern_proto::{Message, MessageType};

    fn request(code: Code, path: &str) -> Request {
        let mut message = Message::new(MessageType::Con, code);
        if let Some((p, q)) = path.split_once('?') {
            message.set_path(p);
            for item in q.split('&') {
                message
                    .options
                    .push(tern_proto::OptionNumber::URI_QUERY, item.as_bytes());
            }
        } else {
            message.set_path(path);
        }
        Request {
            peer: SocketAddr::from(([127, 0, 0, 1], 1)),
            identity: None,
            oscore: None,
            message,
            params: Vec::new(),
            rest: None,
        }
    }

    #[test]
    fn requests_for_a_proxy_get_5_05() {
        let router = Router::new().get("/x", |_| async { Response::text("x") });
        for number in [OptionNumber::PROXY_URI, OptionNumber::PROXY_SCHEME] {
            let mut r = request(Code::GET, "/x");
            r.message.options.push(number, b"coap".to_vec());
            let fut = router.dispatch(r);
            let response = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(fut);
            assert_eq!(response.code(), Code::PROXYING_NOT_SUPPORTED);
        }
    }

    fn run(router: &Router, code: Code, path: &str) -> Response {
        let fut = router.dispatch(request(code, path));
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fut)
    }

    fn router() -> Router {
        Router::new()
            .resource(
                "/time",
                Resource::new()
                    .get(|_| async { Response::text("now") })
                    .rt("clock")
                    .obs()
                    .obs(),
            )
            .get("/users/{id}", |r: Request| async move {
                Response::text(r.param("id").unwrap_or(""))
            })
            .put("/store/*", |r: Request| async move {
                Response::text(r.rest().unwrap_or(""))
            })
            .resource(
                "/hidden",
                Resource::new()
                    .get(|_| async { Response::text("h") })
                    .hidden(),
            )
    }

    #[test]
    fn routes_by_pattern_and_method() {
        let r = router();
        assert_eq!(run(&r, Code::GET, "/time").payload(), b"now");
        assert_eq!(run(&r, Code::GET, "/users/42").payload(), b"42");
        assert_eq!(run(&r, Code::PUT, "/store/a/b").payload(), b"a/b");
        assert_eq!(run(&r, Code::PUT, "/store").payload(), b"");
        assert_eq!(run(&r, Code::GET, "/users/42/x").code(), Code::NOT_FOUND);
        assert_eq!(run(&r, Code::GET, "/nope").code(), Code::NOT_FOUND);
        let r405 = run(&r, Code::DELETE, "/time");
        assert_eq!(r405.code(), Code::METHOD_NOT_ALLOWED);
        assert_eq!(r405.payload(), b"Allowed: GET");
    }

    #[test]
    fn observable_resources_and_change_notices() {
        let r = router();
        assert!(r.is_observable(&["time"]));
        assert!(!r.is_observable(&["users", "1"]));
        assert!(!r.is_observable(&["nope"]));
        let links = run(&r, Code::GET, "/.well-known/core");
        let text = String::from_utf8_lossy(links.payload()).into_owned();
        assert_eq!(text.matches("obs").count(), 1, "{text}");
        let notifier = r.notifier();
        assert_eq!(notifier.notify("/time"), 0, "no endpoint listens yet");
        let mut changes = r.subscribe();
        assert_eq!(notifier.notify("//time/"), 1);
        assert_eq!(changes.try_recv().unwrap(), "time");
        assert_eq!(normalize("/a//b/"), "a/b");
    }

    #[test]
    fn adding_to_a_cloned_router_leaves_the_clone_alone() {
        let base = Router::new().get("/a", |_| async { Response::text("a") });
        let copy = base.clone();
        let extended = base.get("/b", |_| async { Response::text("b") });
        assert_eq!(run(&extended, Code::GET, "/b").code(), Code::CONTENT);
        assert_eq!(run(&copy, Code::GET, "/b").code(), Code::NOT_FOUND);
        assert_eq!(run(&copy, Code::GET, "/a").code(), Code::CONTENT);
    }

    #[test]
    fn a_segment_with_a_slash_is_one_segment() {
        let r = router();
        let mut req = request(Code::GET, "/");
        req.message
            .options
            .push(tern_proto::OptionNumber::URI_PATH, b"users/42".to_vec());
        let fut = r.dispatch(req);
        let resp = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(fut);
        assert_eq!(resp.code(), Code::NOT_FOUND);
    }

    #[test]
    fn well_known_core_lists_and_filters() {
        let r = router();
        let all = run(&r, Code::GET, "/.well-known/core");
        assert_eq!(all.content_format(), Some(ContentFormat::LINK_FORMAT));
        let text = String::from_utf8(all.payload().to_vec()).unwrap();
        assert!(text.contains("</time>"), "{text}");
        assert!(text.contains("obs"), "{text}");
        assert!(!text.contains("hidden"), "{text}");
        assert!(!text.contains("users"), "{text}");
        let filtered = run(&r, Code::GET, "/.well-known/core?rt=clock");
        assert!(String::from_utf8_lossy(filtered.payload()).contains("</time>"));
        let none = run(&r, Code::GET, "/.well-known/core?rt=nothing");
        assert!(none.payload().is_empty());
        assert_eq!(
            run(&r, Code::POST, "/.well-known/core").code(),
            Code::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn access_control_refuses_before_any_handler_runs() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let handled = Arc::new(AtomicUsize::new(0));
        let counter = handled.clone();
        let r = router()
            .put("/count", move |_| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    Response::new(Code::CHANGED)
                }
            })
            .access_control(|request: &Request| {
                let allowed = request.path() == "time";
                async move {
                    if allowed {
                        Ok(())
                    } else {
                        Err(Response::error(Code::FORBIDDEN, "not for you"))
                    }
                }
            });
        assert_eq!(run(&r, Code::GET, "/time").code(), Code::CONTENT);
        let refused = run(&r, Code::PUT, "/count");
        assert_eq!(refused.code(), Code::FORBIDDEN);
        assert_eq!(refused.payload(), b"not for you");
        assert_eq!(handled.load(Ordering::SeqCst), 0);
        // Even what the router answers itself is refused: nothing is disclosed.
        assert_eq!(
            run(&r, Code::GET, "/.well-known/core").code(),
            Code::FORBIDDEN
        );
        assert_eq!(run(&r, Code::GET, "/nowhere").code(), Code::FORBIDDEN);
    }
}
