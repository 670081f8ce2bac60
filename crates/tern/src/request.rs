//! Client requests: [`RequestBuilder`], made by [`Context`] and [`Session`] methods.

use std::time::Duration;

use tern_proto::endpoint::RequestParams;
use tern_proto::uri::{CoapUri, Scheme, UriError};
use tern_proto::{Code, ContentFormat, Message, MessageType, OptionNumber};

use crate::context::{resolve, Context};
use crate::error::Error;
use crate::message::{RequestOptions, Response};
use crate::session::Session;

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

    /// Gives up after `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request_options.timeout = Some(timeout);
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
        if !matches!(uri.scheme, Scheme::Coap | Scheme::Coaps) {
            return Err(Error::UnsupportedScheme(uri.scheme));
        }
        let ty = if self.request_options.non_confirmable {
            MessageType::Non
        } else {
            MessageType::Con
        };
        let mut message = Message::new(ty, self.method);
        for (number, value) in uri.request_options() {
            message.options.push(number, value);
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

    /// Sends the request and waits for its response (of any code).
    pub async fn send(self) -> Result<Response, Error> {
        let message = self.build_message()?;
        if let Some(session) = &self.session {
            if session.is_closed() {
                return Err(Error::SessionClosed);
            }
            // The token (up to 8 bytes) is chosen on sending: count it at its longest.
            let size = message.encoded_len() + 8;
            let max = session.max_pdu_size();
            if size > max {
                return Err(Error::TooLarge { size, max });
            }
            let (endpoint, peer) = session.target();
            let params = RequestParams {
                timeout: self.request_options.timeout,
            };
            return self.context.send_on(&endpoint, peer, message, params).await;
        }
        let uri = self.uri?;
        let peer = resolve(&uri).await?;
        let params = RequestParams {
            timeout: self.request_options.timeout,
        };
        let secure = uri.scheme == Scheme::Coaps;
        self.context.send_via(peer, secure, message, params).await
    }
}
