//! The client side of observing (RFC 7641): [`Observation`], made by
//! [`RequestBuilder::observe`](crate::RequestBuilder::observe).

use std::net::SocketAddr;
use std::sync::Arc;

use tern_proto::endpoint::{RequestError, RequestParams};
use tern_proto::observe::{self, REGISTER};
use tern_proto::{Code, Message, OptionNumber};
use tokio::sync::{mpsc, oneshot};

use crate::context::EndpointHandle;
use crate::driver::Command;
use crate::error::Error;
use crate::message::Response;
use crate::oscore::OscoreClient;
use crate::request::RequestBuilder;
use crate::session::Session;
use tern_oscore::RequestBinding;
use tern_proto::block::{Block2Fetch, Block2Step};

/// Notifications buffered for an [`Observation`] that is not being read; past this the driver
/// drops new ones (a later notification supersedes them, §3.4).
const BUFFERED_NOTIFICATIONS: usize = 64;

/// The sequence number in a protected notification's Partial IV.
fn notification_number(outer: &Message) -> Option<u64> {
    let value = outer.options.get(OptionNumber::OSCORE)?;
    let option = tern_oscore::OscoreOption::decode(value).ok()?;
    tern_oscore::context::sequence_of(option.partial_iv.as_deref()?)
}

/// The largest notification body fetched block-wise.
const MAX_NOTIFICATION_BODY: usize = 16 << 20;

/// Re-registrations after lapses in a row without a notification in between, before the
/// observation gives up.
const MAX_REREGISTRATIONS: u32 = 3;

/// An observation of one resource: the first response, then each fresh notification in order
/// (RFC 7641 §3.4: stale and duplicate ones are dropped by the core), read with
/// [`next`](Self::next).
///
/// - It ends (`next` returns `None`) after a response that is not a 2.xx with Observe: the
///   server refused or ended the observation, and that response was the last item.
/// - When no fresh notification arrives within the last one's Max-Age (plus slack), the
///   observation has lapsed: it registers again with the same request (§3.3.1), and the new
///   registration's response is the next item. If that fails, the error is the last item.
///   Over coap+tcp:// and coaps+tcp:// it does not lapse: it lasts as long as the connection,
///   and the connection closing is its last item, an error (RFC 8323 §7).
/// - [`cancel`](Self::cancel) deregisters with a GET Observe 1 (§3.6); dropping the
///   observation forgets it, so the server's next notification is answered with RST (over a
///   stream, which has no RST, dropping deregisters too).
pub struct Observation {
    first: Option<Response>,
    notifications: mpsc::Receiver<Result<Message, RequestError>>,
    ticket: u64,
    done: bool,
    endpoint: Arc<EndpointHandle>,
    context: crate::Context,
    peer: SocketAddr,
    request: Message,
    params: RequestParams,
    lapses: u32,
    /// For an OSCORE observation: the context, and the registration its notifications answer.
    oscore: Option<(OscoreClient, RequestBinding)>,
    /// The Partial IV of the last notification delivered (OSCORE's Notification Number).
    last_number: Option<u64>,
    /// Held so that the session outlives the observation.
    _session: Option<Session>,
}

impl std::fmt::Debug for Observation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observation")
            .field("peer", &self.peer)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// Sends a registration; answers its first response and the channel of later ones.
async fn register(
    context: &crate::Context,
    endpoint: &EndpointHandle,
    peer: SocketAddr,
    request: Message,
    params: RequestParams,
) -> Result<(u64, Message, mpsc::Receiver<Result<Message, RequestError>>), Error> {
    let ticket = context.next_ticket();
    let (reply, first) = oneshot::channel();
    let (notifications, rx) = mpsc::channel(BUFFERED_NOTIFICATIONS);
    endpoint
        .commands
        .send(Command::Observe {
            ticket,
            peer,
            message: request,
            params,
            reply,
            notifications,
        })
        .map_err(|_| Error::Closed)?;
    // If the caller goes away before the first response, forget the registration.
    struct Guard<'a>(&'a EndpointHandle, u64, bool);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            if self.2 {
                let _ = self.0.commands.send(Command::Cancel(self.1));
            }
        }
    }
    let mut guard = Guard(endpoint, ticket, true);
    let first = first.await.map_err(|_| Error::Closed)??;
    guard.2 = false;
    Ok((ticket, first, rx))
}

/// Sends a registration, protected with OSCORE when `oscore` is given (answering an Echo
/// challenge once, Appendix B.1.2); answers its first (inner) response, the channel of later
/// ones and the binding their protection is checked against.
async fn register_maybe_protected(
    context: &crate::Context,
    endpoint: &std::sync::Arc<EndpointHandle>,
    peer: SocketAddr,
    request: &Message,
    params: RequestParams,
    oscore: Option<&OscoreClient>,
) -> Result<Registered, Error> {
    let mut request = request.clone();
    let mut echoed = false;
    let mut rederived = false;
    loop {
        let (ticket, first, rx, binding) = match oscore {
            Some(client) => {
                if let Some((probe, first)) = client.first_exchange()? {
                    let outer = context.send_on(endpoint, peer, probe, params).await?;
                    client.finish_first_exchange(&first, outer.message())?;
                }
                let (protected, binding) = client.protect(&request)?;
                let (ticket, outer, rx) =
                    register(context, endpoint, peer, protected, params).await?;
                let first = match client.unprotect(&binding, &outer) {
                    Err(Error::OscoreRederived) if !rederived => {
                        // The server did not register the observation: send it again
                        // under the re-derived context, once.
                        rederived = true;
                        let _ = endpoint.commands.send(Command::Cancel(ticket));
                        continue;
                    }
                    other => other?,
                };
                (ticket, first, rx, Some(binding))
            }
            None => {
                let (ticket, first, rx) =
                    register(context, endpoint, peer, request.clone(), params).await?;
                (ticket, first, rx, None)
            }
        };
        if !crate::request::answer_echo(&mut request, &first, &mut echoed) {
            return Ok((ticket, first, rx, binding));
        }
    }
}

/// A registration's ticket, first response, notification channel and OSCORE binding.
type Registered = (
    u64,
    Message,
    mpsc::Receiver<Result<Message, RequestError>>,
    Option<RequestBinding>,
);

impl Observation {
    pub(crate) async fn start(builder: RequestBuilder) -> Result<Observation, Error> {
        let mut request = builder.build_message()?;
        if !matches!(request.code, Code::GET | Code::FETCH) {
            return Err(Error::Config(format!(
                "only GET and FETCH can observe, not {}",
                request.code
            )));
        }
        request.options.set_uint(OptionNumber::OBSERVE, REGISTER);
        let (endpoint, peer, _) = builder.target().await?;
        // An observation has no overall deadline: it lives as long as notifications come.
        let params = RequestParams {
            timeout: builder.request_options.timeout,
        };
        let oscore = builder.oscore.clone();
        let (ticket, first, notifications, binding) = register_maybe_protected(
            &builder.context,
            &endpoint,
            peer,
            &request,
            params,
            oscore.as_ref(),
        )
        .await?;
        let done = !observe::continues_observation(&first);
        Ok(Observation {
            first: Some(Response::from_message(first)),
            notifications,
            ticket,
            done,
            endpoint,
            context: builder.context.clone(),
            peer,
            request,
            params,
            lapses: 0,
            last_number: None,
            oscore: oscore.zip(binding),
            _session: builder.session,
        })
    }

    /// Whether the server accepted the registration and the observation is still going.
    pub fn is_active(&self) -> bool {
        !self.done
    }

    /// The next response: the first one, then each fresh notification. `None` once the
    /// observation ended and its last response was returned.
    pub async fn next(&mut self) -> Option<Result<Response, Error>> {
        if let Some(first) = self.first.take() {
            return Some(self.complete(first.into_message()).await);
        }
        if self.done {
            return None;
        }
        loop {
            let received = self.notifications.recv().await;
            let received = match (received, &self.oscore) {
                (Some(Ok(outer)), Some((client, binding))) => {
                    match client.unprotect_notification(binding, &outer) {
                        Ok(inner) => {
                            // RFC 8613 §8.4: the Partial IV, which is integrity-protected
                            // unlike the outer Observe, orders notifications; one not newer
                            // than the last delivered is stale.
                            let number = notification_number(&outer);
                            if number.is_some_and(|n| self.last_number.is_some_and(|l| n <= l)) {
                                tracing::debug!(peer = %self.peer, "stale notification dropped");
                                continue;
                            }
                            if number.is_some() {
                                self.last_number = number;
                            }
                            Some(Ok(inner))
                        }
                        Err(e) => {
                            // A notification that does not verify (or replays one) is not
                            // the server's: dropped, the observation goes on.
                            tracing::debug!(peer = %self.peer, error = %e, "notification dropped");
                            continue;
                        }
                    }
                }
                (received, _) => received,
            };
            return self.deliver(received).await;
        }
    }

    /// Passes on what the driver delivered: a notification, or the observation's end (a
    /// lapse registers again).
    async fn deliver(
        &mut self,
        received: Option<Result<Message, RequestError>>,
    ) -> Option<Result<Response, Error>> {
        match received {
            Some(Ok(message)) => {
                self.lapses = 0;
                if !observe::continues_observation(&message) {
                    self.done = true;
                }
                Some(self.complete(message).await)
            }
            Some(Err(RequestError::ObservationLapsed)) if self.lapses < MAX_REREGISTRATIONS => {
                self.lapses += 1;
                tracing::debug!(peer = %self.peer, "observation lapsed; registering again");
                let client = self.oscore.as_ref().map(|(client, _)| client.clone());
                let registered = register_maybe_protected(
                    &self.context,
                    &self.endpoint,
                    self.peer,
                    &self.request,
                    self.params,
                    client.as_ref(),
                )
                .await;
                match registered {
                    Ok((ticket, first, rx, binding)) => {
                        self.ticket = ticket;
                        self.notifications = rx;
                        self.oscore = client.zip(binding);
                        self.last_number = None;
                        self.done = !observe::continues_observation(&first);
                        Some(self.complete(first).await)
                    }
                    Err(e) => {
                        self.done = true;
                        Some(Err(e))
                    }
                }
            }
            Some(Err(e)) => {
                self.done = true;
                Some(Err(e.into()))
            }
            None => {
                self.done = true;
                Some(Err(Error::Closed))
            }
        }
    }

    /// A notification (or first response) in blocks (RFC 7959 §2.6) made whole: the later
    /// blocks are fetched with the registration request without Observe (protected anew
    /// under OSCORE); others pass as they are.
    async fn complete(&self, message: Message) -> Result<Response, Error> {
        let more = tern_proto::block::BlockValue::read(&message.options, OptionNumber::BLOCK2)
            .ok()
            .flatten()
            .is_some_and(|b| b.more());
        if !more || !message.code.is_success() {
            return Ok(Response::from_message(message));
        }
        let mut template = self.request.clone();
        template.token = tern_proto::Token::EMPTY;
        let mut fetch = Block2Fetch::new(&template, MAX_NOTIFICATION_BODY);
        let mut step = fetch.handle_response(message)?;
        loop {
            let next = match step {
                Block2Step::Send(next) => next,
                Block2Step::Done(whole) => return Ok(Response::from_message(whole)),
            };
            let response = match &self.oscore {
                Some((client, _)) => {
                    let (outer, binding) = client.protect(&next)?;
                    let response = self
                        .context
                        .send_on(&self.endpoint, self.peer, outer, self.params)
                        .await?;
                    client.unprotect(&binding, response.message())?
                }
                None => self
                    .context
                    .send_on(&self.endpoint, self.peer, next, self.params)
                    .await?
                    .into_message(),
            };
            step = fetch.handle_response(response)?;
        }
    }

    /// Cancels the observation actively: the server is sent a GET with Observe 1 and the
    /// registration's token and options (RFC 7641 §3.6).
    pub fn cancel(mut self) {
        if !self.done {
            self.done = true;
            let message = self.protected_deregistration();
            let _ = self
                .endpoint
                .commands
                .send(Command::Deregister(self.ticket, message));
        }
    }

    /// For an OSCORE observation, the deregistration protected anew (the registration's
    /// bytes again would be a replay, which the server refuses).
    fn protected_deregistration(&self) -> Option<Box<Message>> {
        let (client, _) = self.oscore.as_ref()?;
        let mut inner = self.request.clone();
        inner
            .options
            .set_uint(OptionNumber::OBSERVE, observe::DEREGISTER);
        match client.protect(&inner) {
            Ok((protected, _)) => Some(Box::new(protected)),
            Err(e) => {
                tracing::debug!(error = %e, "OSCORE deregistration not protected");
                None
            }
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let command = match self.protected_deregistration() {
            // An OSCORE observation is deregistered: over a stream there is no RST, and the
            // registration repeated would be refused as a replay.
            Some(message) => Command::Deregister(self.ticket, Some(message)),
            // Forgotten: the server's next notification draws a RST (§3.6).
            None => Command::Cancel(self.ticket),
        };
        let _ = self.endpoint.commands.send(command);
    }
}
