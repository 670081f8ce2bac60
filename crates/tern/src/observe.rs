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
use crate::request::RequestBuilder;
use crate::session::Session;

/// Notifications buffered for an [`Observation`] that is not being read; past this the driver
/// drops new ones (a later notification supersedes them, §3.4).
const BUFFERED_NOTIFICATIONS: usize = 64;

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
        let (ticket, first, notifications) =
            register(&builder.context, &endpoint, peer, request.clone(), params).await?;
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
            return Some(Ok(first));
        }
        if self.done {
            return None;
        }
        match self.notifications.recv().await {
            Some(Ok(message)) => {
                self.lapses = 0;
                if !observe::continues_observation(&message) {
                    self.done = true;
                }
                Some(Ok(Response::from_message(message)))
            }
            Some(Err(RequestError::ObservationLapsed)) if self.lapses < MAX_REREGISTRATIONS => {
                self.lapses += 1;
                tracing::debug!(peer = %self.peer, "observation lapsed; registering again");
                let registered = register(
                    &self.context,
                    &self.endpoint,
                    self.peer,
                    self.request.clone(),
                    self.params,
                )
                .await;
                match registered {
                    Ok((ticket, first, rx)) => {
                        self.ticket = ticket;
                        self.notifications = rx;
                        self.done = !observe::continues_observation(&first);
                        Some(Ok(Response::from_message(first)))
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

    /// Cancels the observation actively: the server is sent a GET with Observe 1 and the
    /// registration's token and options (RFC 7641 §3.6).
    pub fn cancel(mut self) {
        if !self.done {
            self.done = true;
            let _ = self
                .endpoint
                .commands
                .send(Command::Deregister(self.ticket));
        }
    }
}

impl Drop for Observation {
    fn drop(&mut self) {
        if !self.done {
            // Forgotten: the server's next notification draws a RST (§3.6).
            let _ = self.endpoint.commands.send(Command::Cancel(self.ticket));
        }
    }
}
