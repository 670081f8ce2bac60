//! Client requests: [`RequestBuilder`], made by [`Context`] and [`Session`] methods.

use std::time::Duration;

use tern_proto::block::{
    Block1Send, Block1SendConfig, Block1Step, Block2Fetch, Block2Step, BlockValue, TransferError,
};
use tern_proto::endpoint::{RequestError, RequestParams};
use tern_proto::uri::{CoapUri, Host, Scheme, UriError};
use tern_proto::{Code, ContentFormat, Message, MessageType, OptionNumber};

use crate::context::{resolve, Context, EndpointHandle};
use crate::error::Error;
use crate::message::{RequestOptions, Response};
use crate::observe::Observation;
use crate::oscore::OscoreClient;
use crate::session::Session;

/// How often a block-wise GET or FETCH starts over when the representation changes between
/// its blocks, before it fails with the change.
const MAX_ETAG_RESTARTS: u32 = 3;

/// A client request being prepared; [`send`](Self::send) sends it.
pub struct RequestBuilder {
    pub(crate) context: Context,
    pub(crate) method: Code,
    pub(crate) uri: Result<CoapUri, UriError>,
    pub(crate) payload: Vec<u8>,
    pub(crate) options: Vec<(OptionNumber, Vec<u8>)>,
    pub(crate) request_options: RequestOptions,
    /// Held while the request runs, so the session outlives it.
    pub(crate) session: Option<Session>,
    /// The OSCORE context the request is protected with, if any.
    pub(crate) oscore: Option<OscoreClient>,
    /// The forward proxy the request goes through (with Proxy-Uri), if any.
    pub(crate) proxy: Option<Result<CoapUri, UriError>>,
    /// Told how far a block-wise transfer has come.
    pub(crate) progress: Option<ProgressFn>,
}

/// A progress callback ([`RequestBuilder::on_progress`]).
pub(crate) type ProgressFn = std::sync::Arc<dyn Fn(Progress) + Send + Sync>;

/// How far a request has come, for progress displays: after each round trip of a block-wise
/// transfer (and once at the end of any request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Request body bytes the server acknowledged so far.
    pub sent: usize,
    /// The request body's size.
    pub sent_total: usize,
    /// Response body bytes received so far.
    pub received: usize,
    /// The response body's size, when the server announced it (Size2).
    pub received_total: Option<usize>,
}

impl RequestBuilder {
    /// Sets the payload.
    pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets the Content-Format of the payload.
    pub fn content_format(self, cf: ContentFormat) -> Self {
        self.option(
            OptionNumber::CONTENT_FORMAT,
            tern_proto::option::encode_uint(u32::from(cf.0)).as_ref(),
        )
    }

    /// Sets Accept.
    pub fn accept(self, cf: ContentFormat) -> Self {
        self.option(
            OptionNumber::ACCEPT,
            tern_proto::option::encode_uint(u32::from(cf.0)).as_ref(),
        )
    }

    /// Adds an option (after the URI's own options of the same number).
    pub fn option(mut self, number: OptionNumber, value: impl Into<Vec<u8>>) -> Self {
        self.options.push((number, value.into()));
        self
    }

    /// Sends as NON instead of CON.
    pub fn non(mut self) -> Self {
        self.request_options.non_confirmable = true;
        self
    }

    /// Block size for block-wise transfers: 16, 32, … 1024 bytes (other values round down).
    pub fn block_size(mut self, size: usize) -> Self {
        self.request_options.block_szx = Some(tern_proto::block::value::szx_for_size(size));
        self
    }

    /// Gives up after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request_options.timeout = Some(timeout);
        self
    }

    /// Protects the request end to end with OSCORE (RFC 8613). Block-wise transfers are
    /// inner (each block its own protected exchange, §4.1.3.4.1), an observation's
    /// notifications are unprotected and checked against the replay window, and a server
    /// that lost its replay state and answers with an Echo challenge (Appendix B.1.2) is
    /// answered once with the Echo. An unprotected answer is
    /// [`Error::OscoreRefused`]; a response that does not verify is [`Error::Oscore`].
    pub fn oscore(mut self, context: &OscoreClient) -> Self {
        self.oscore = Some(context.clone());
        self
    }

    /// Sends the request through a forward proxy (RFC 7252 §5.7.2): to `proxy_uri`'s host
    /// and port, over its scheme, with the target in Proxy-Scheme, Uri-Host, Uri-Port,
    /// Uri-Path and Uri-Query. Under OSCORE (RFC 8613 §4.1.3.3) the proxy sees only the
    /// target's scheme, host and port; the path and query travel encrypted.
    pub fn proxy(mut self, proxy_uri: &str) -> Self {
        self.proxy = Some(CoapUri::parse(proxy_uri));
        self
    }

    /// The URI of the first hop: the proxy if there is one, else the target.
    fn hop(&self) -> Result<&CoapUri, Error> {
        let uri = match &self.proxy {
            Some(proxy) => proxy,
            None => &self.uri,
        };
        uri.as_ref().map_err(|e| Error::Uri(e.clone()))
    }

    /// Calls `progress` after each round trip of the request (each block of a block-wise
    /// transfer), for progress bars.
    pub fn on_progress(mut self, progress: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(std::sync::Arc::new(progress));
        self
    }

    /// Sets every per-request setting at once.
    pub fn options(mut self, options: RequestOptions) -> Self {
        self.request_options = options;
        self
    }

    /// The message this builder would send (message ID and token are assigned on sending).
    pub fn build_message(&self) -> Result<Message, Error> {
        let uri = self.uri.as_ref().map_err(|e| Error::Uri(e.clone()))?;
        let ty = if self.request_options.non_confirmable {
            MessageType::Non
        } else {
            MessageType::Con
        };
        let mut message = Message::new(ty, self.method);
        match &self.proxy {
            Some(_) => {
                self.hop()?;
                // The target as Proxy-Scheme and Uri-* options rather than one Proxy-Uri
                // (equivalent, RFC 7252 §6.4), since some proxies take only this form, and
                // under OSCORE it is already split into the proxy's part and the rest.
                message.options.push(
                    OptionNumber::PROXY_SCHEME,
                    uri.scheme.as_str().as_bytes().to_vec(),
                );
                let host = match &uri.host {
                    Host::Name(name) => name.clone(),
                    Host::Ipv4(ip) => ip.to_string(),
                    Host::Ipv6(ip) => ip.to_string(),
                };
                message
                    .options
                    .push(OptionNumber::URI_HOST, host.into_bytes());
                if let Some(port) = uri.port {
                    message
                        .options
                        .set_uint(OptionNumber::URI_PORT, u32::from(port));
                }
                for (number, value) in uri.request_options() {
                    if number != OptionNumber::URI_HOST {
                        message.options.push(number, value);
                    }
                }
            }
            None => {
                for (number, value) in uri.request_options() {
                    message.options.push(number, value);
                }
            }
        }
        for (number, value) in &self.options {
            message.options.push(*number, value.clone());
        }
        message.payload = self.payload.clone();
        Ok(message)
    }

    pub(crate) fn via_session(mut self, session: Session) -> Self {
        self.session = Some(session);
        self
    }

    /// Where the request goes: the endpoint, the peer, and the session's largest PDU.
    pub(crate) async fn target(
        &self,
    ) -> Result<
        (
            std::sync::Arc<EndpointHandle>,
            std::net::SocketAddr,
            Option<usize>,
        ),
        Error,
    > {
        Ok(match &self.session {
            Some(session) => {
                if session.is_closed() {
                    return Err(Error::SessionClosed);
                }
                let (endpoint, peer) = session.target();
                // A stream connection checks sizes against the peer's CSM itself.
                let max_pdu = (!session.transport().is_stream()).then(|| session.max_pdu_size());
                (endpoint, peer, max_pdu)
            }
            None => {
                let uri = self.hop()?.clone();
                let peer = resolve(&uri).await?;
                match uri.scheme {
                    Scheme::Coap | Scheme::Coaps => {
                        let secure = uri.scheme == Scheme::Coaps;
                        (self.context.endpoint_for(peer, secure)?, peer, None)
                    }
                    Scheme::CoapTcp | Scheme::CoapsTcp => {
                        let secure = uri.scheme == Scheme::CoapsTcp;
                        (
                            self.context.stream_endpoint(peer, secure).await?,
                            peer,
                            None,
                        )
                    }
                }
            }
        })
    }

    /// Observes the resource (RFC 7641): sends a GET with Observe 0 and returns its
    /// notifications as an [`Observation`], the first response first. See [`Observation`] for
    /// ordering, cancellation and re-registration.
    pub async fn observe(self) -> Result<Observation, Error> {
        Observation::start(self).await
    }

    /// Sends the request and waits for its response (of any code). Block-wise transfers
    /// (RFC 7959) are transparent: a payload larger than the block size goes in Block1
    /// blocks, and a response that comes in Block2 blocks is fetched whole.
    pub async fn send(self) -> Result<Response, Error> {
        let message = self.build_message()?;
        let params = RequestParams {
            timeout: self.request_options.timeout,
        };
        let (mut endpoint, peer, max_pdu) = self.target().await?;
        let stream = self.hop().is_ok_and(|uri| uri.scheme.is_reliable());
        let szx = self
            .request_options
            .block_szx
            .unwrap_or(tern_proto::block::value::MAX_SZX);
        let config = Block1SendConfig {
            szx,
            // RFC 9175 §3: concurrent request bodies to one resource from this endpoint stay
            // apart at the server (sent only when the body goes in blocks).
            request_tag: Some(request_tag()),
            max_response_body: self.request_options.max_body_size,
            // Over TCP and TLS a body goes whole unless a block size was asked for; the
            // connection refuses it if it is larger than the peer's Max-Message-Size.
            whole_up_to: if stream && self.request_options.block_szx.is_none() {
                self.request_options.max_body_size
            } else {
                0
            },
            // Over TCP and TLS we announce Block-Wise-Transfer: responses may come in BERT.
            bert: stream,
        };
        let mut message = message;
        if self.request_options.block_szx.is_some() && matches!(message.code, Code::GET) {
            // Early negotiation (RFC 7959 §2.4): ask for blocks of this size from the start.
            BlockValue::new(0, false, szx)
                .map_err(|e| Error::Config(e.to_string()))?
                .write(&mut message.options, OptionNumber::BLOCK2);
        }
        // Kept for a fallback to blocks (a body sent whole that the peer finds too large).
        let mut whole = (config.whole_up_to > 0).then(|| message.clone());
        // A GET or FETCH whose representation changed between blocks starts over, a few times
        // (RFC 7959 §2.4: the blocks of two representations must not be combined).
        let mut restarts_left = if matches!(message.code, Code::GET | Code::FETCH) {
            MAX_ETAG_RESTARTS
        } else {
            0
        };
        let (mut sender, mut next) = Block1Send::start(message, config.clone())?;
        let mut fetch: Option<Box<Block2Fetch>> = None;
        let mut received_total: Option<usize> = None;
        // Only a context's kept connections are retried, not a session's own.
        let mut retry_on_new_connection = stream && self.session.is_none();
        // Each round trip moves at least one block forward or ends the transfer; the block
        // machines refuse more blocks than the limits allow, so this loop ends.
        loop {
            if let Some(max) = max_pdu {
                // The token (up to 8 bytes) is chosen on sending: count it at its longest.
                let size = next.encoded_len() + 8;
                if size > max {
                    return Err(Error::TooLarge { size, max });
                }
            }
            // A kept connection the server closed (idle, say) just as this request went out:
            // an idempotent request goes once more, on a new connection.
            let retry = (retry_on_new_connection && is_idempotent(next.code)).then(|| next.clone());
            retry_on_new_connection = false;
            let sent = self.round_trip(&endpoint, peer, next, params).await;
            let sent = match (sent, retry) {
                (Err(Error::Request(RequestError::ChannelFailed(_))), Some(again)) => {
                    let secure = self.hop().is_ok_and(|u| u.scheme.is_secure());
                    endpoint = self.context.stream_endpoint(peer, secure).await?;
                    next = again;
                    continue;
                }
                (sent, _) => sent,
            };
            let response = match sent {
                Ok(response) => response.into_message(),
                Err(Error::Request(RequestError::TooLarge { size, max })) if fetch.is_none() => {
                    // The peer takes less in one message than the body: send it block-wise
                    // after all (once), in blocks of the largest size.
                    let Some(original) = whole.take() else {
                        return Err(Error::Request(RequestError::TooLarge { size, max }));
                    };
                    let blocks = Block1SendConfig {
                        whole_up_to: 0,
                        ..config.clone()
                    };
                    (sender, next) = Block1Send::start(original, blocks)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(size) = response.options.get_uint(OptionNumber::SIZE2) {
                received_total = Some(size as usize);
            }
            let step = match &mut fetch {
                Some(fetch) => match fetch.handle_response(response) {
                    Ok(Block2Step::Send(m)) => Ok(m),
                    Ok(Block2Step::Done(m)) => Err(m),
                    Err(TransferError::EtagChanged) if restarts_left > 0 => {
                        restarts_left -= 1;
                        tracing::debug!("representation changed mid-transfer: starting over");
                        Ok(fetch.restart())
                    }
                    Err(e) => return Err(e.into()),
                },
                None => match sender.handle_response(response)? {
                    Block1Step::Send(m) => Ok(m),
                    Block1Step::Done(m) => Err(m),
                    Block1Step::Fetch(f, m) => {
                        fetch = Some(f);
                        Ok(m)
                    }
                },
            };
            if let Some(progress) = &self.progress {
                let received = match (&fetch, &step) {
                    (_, Err(done)) => done.payload.len(),
                    (Some(fetch), Ok(_)) => fetch.received(),
                    (None, Ok(_)) => 0,
                };
                // A final response means the whole body was taken.
                let sent = if step.is_err() {
                    sender.total()
                } else {
                    sender.acknowledged()
                };
                progress(Progress {
                    sent,
                    sent_total: sender.total(),
                    received,
                    received_total,
                });
            }
            next = match step {
                Ok(m) => m,
                Err(done) => return Ok(Response::from_message(done)),
            };
        }
    }
}

impl RequestBuilder {
    /// One request and its response, protected with OSCORE if the request is.
    async fn round_trip(
        &self,
        endpoint: &std::sync::Arc<EndpointHandle>,
        peer: std::net::SocketAddr,
        message: Message,
        params: RequestParams,
    ) -> Result<Response, Error> {
        let mut request = message;
        let mut echoed = false;
        let mut rederived = false;
        loop {
            let response = match &self.oscore {
                Some(client) => {
                    if let Some((probe, first)) = client.first_exchange()? {
                        let outer = self.context.send_on(endpoint, peer, probe, params).await?;
                        client.finish_first_exchange(&first, outer.message())?;
                    }
                    let (protected, binding) = client.protect(&request)?;
                    let outer = self
                        .context
                        .send_on(endpoint, peer, protected, params)
                        .await?;
                    match client.unprotect(&binding, outer.message()) {
                        // The server started a re-derivation, which the client followed: the
                        // request goes again under the new context, once.
                        Err(Error::OscoreRederived) if !rederived => {
                            rederived = true;
                            continue;
                        }
                        other => Response::from_message(other?),
                    }
                }
                None => {
                    self.context
                        .send_on(endpoint, peer, request.clone(), params)
                        .await?
                }
            };
            if !answer_echo(&mut request, response.message(), &mut echoed) {
                return Ok(response);
            }
        }
    }
}

/// A fresh Request-Tag: a per-process random start plus a counter, so that concurrent
/// transfers of this process never share one (other processes send from other ports, which
/// servers key by too), without a system call per request.
fn request_tag() -> Vec<u8> {
    static START: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = *START.get_or_init(|| {
        let mut bytes = [0u8; 4];
        // Without randomness the counter alone still keeps this process's transfers apart.
        let _ = getrandom::getrandom(&mut bytes);
        u32::from_be_bytes(bytes)
    });
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    start.wrapping_add(n).to_be_bytes().to_vec()
}

/// RFC 9175 §2.3 (and RFC 8613 Appendix B.1.2 inside OSCORE): a 4.01 with Echo asks for the
/// request again with that Echo. Sets it on `request` and says whether to repeat, once: a
/// second challenge is the server's answer, not a loop.
pub(crate) fn answer_echo(request: &mut Message, response: &Message, echoed: &mut bool) -> bool {
    if *echoed || response.code != Code::UNAUTHORIZED {
        return false;
    }
    let Some(echo) = response.options.get(OptionNumber::ECHO) else {
        return false;
    };
    request.options.set(OptionNumber::ECHO, echo.to_vec());
    *echoed = true;
    true
}

/// Whether a request may be sent twice with the effect of once (RFC 7252 §5.1: GET, PUT and
/// DELETE; FETCH is safe, RFC 8132 §2).
fn is_idempotent(method: Code) -> bool {
    matches!(method, Code::GET | Code::PUT | Code::DELETE | Code::FETCH)
}
