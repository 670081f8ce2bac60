//! The receiving half of a [`StreamConnection`]: frames decoded from the input and
//! dispatched, signals (RFC 8323 §5), requests (4.02 and 5.03 answered here, RFC 7252
//! §5.4.1) and responses matched by token, observations included (RFC 7641, RFC 8323 §7.1).

use std::time::Instant;

use super::{StreamConnection, StreamEvent, StreamState};
use crate::code::{Code, MessageType};
use crate::endpoint::{IncomingId, RequestError};
use crate::message::{Message, Options};
use crate::observe;
use crate::option::OptionNumber;
use crate::stream::signal::{Abort, Csm, Signal, SignalError};

/// Whether the options of a received message are usable: elective ones that are not
/// (unknown, value outside the registry's length or format, a repeat of a non-repeatable
/// one) are dropped; a critical one rejects the message (RFC 7252 §5.4.1, §5.4.3, §5.4.5).
fn usable_options(options: &Options) -> Result<Options, OptionNumber> {
    let mut kept = options.clone();
    let mut previous = None;
    let mut bad = None;
    kept.retain(|o| {
        let repeated = previous == Some(o.number);
        previous = Some(o.number);
        let usable = o
            .number
            .def()
            .is_some_and(|def| def.check(&o.value).is_ok() && (def.repeatable || !repeated));
        if !usable && o.number.is_critical() && bad.is_none() {
            bad = Some(o.number);
        }
        usable
    });
    match bad {
        Some(number) => Err(number),
        None => Ok(kept),
    }
}

impl StreamConnection {
    pub(super) fn decode_frames(&mut self, now: Instant) {
        loop {
            if self.state == StreamState::Closed {
                return;
            }
            match self.decoder.next_frame() {
                Ok(Some(message)) => {
                    self.frame_started = None;
                    self.handle_frame(now, message);
                }
                Ok(None) => break,
                Err(e) => return self.abort(now, &e.to_string()),
            }
        }
        if self.decoder.buffered() == 0 {
            self.frame_started = None;
        } else if self.frame_started.is_none() {
            self.frame_started = Some(now);
        }
    }

    fn handle_frame(&mut self, now: Instant, message: Message) {
        if message.code.is_empty() {
            return; // §3.4: Empty messages are ignored
        }
        if !self.csm_received && message.code != Code::CSM && message.code != Code::ABORT {
            let diagnostic = format!(
                "expected a CSM as the first message, got {:?}",
                message.code
            );
            return self.abort(now, &diagnostic);
        }
        if message.code.is_signaling() {
            self.handle_signal(now, message);
        } else if message.code.is_request() {
            self.handle_request(now, message);
        } else {
            self.handle_response(message);
        }
    }

    fn handle_signal(&mut self, now: Instant, message: Message) {
        match Signal::parse(&message) {
            Err(SignalError::UnknownCriticalOption {
                code: Code::CSM,
                option,
            }) => self.abort_with(Abort {
                diagnostic: format!("unknown critical CSM option {}", option.0),
                bad_csm_option: Some(option.0),
            }),
            Err(e) => self.abort(now, &e.to_string()),
            Ok(Signal::Csm(csm)) => self.handle_csm(csm),
            Ok(Signal::Ping(ping)) => {
                let mut pong = ping.to_pong();
                pong.token = message.token;
                self.write_reply(now, &pong);
            }
            Ok(Signal::Pong(_)) => {
                if self.pings.pop_front().is_some() {
                    self.events.push_back(StreamEvent::Pong);
                }
            }
            Ok(Signal::Release(release)) => {
                self.events.push_back(StreamEvent::Released {
                    alternative_address: release.alternative_address,
                    hold_off: release.hold_off,
                });
                self.enter_releasing("the peer released the connection");
            }
            Ok(Signal::Abort(abort)) => {
                let reason = if abort.diagnostic.is_empty() {
                    "the peer aborted the connection".to_string()
                } else {
                    format!("the peer aborted the connection: {}", abort.diagnostic)
                };
                self.close_inner(reason);
            }
        }
    }

    fn handle_csm(&mut self, csm: Csm) {
        if let Some(size) = csm.max_message_size {
            self.peer.max_message_size = size;
        }
        // Block-Wise-Transfer, once announced, stays: a later CSM without it is not a
        // withdrawal (options absent from a CSM keep their values, §5.3).
        self.peer.block_wise_transfer |= csm.block_wise_transfer;
        if self.csm_received {
            return;
        }
        self.csm_received = true;
        if self.state == StreamState::AwaitingCsm {
            self.state = StreamState::Open;
        }
        self.events.push_back(StreamEvent::Established(self.peer));
        while let Some(id) = self.queued.pop_front() {
            let Some(message) = self.requests.get_mut(&id).and_then(|r| r.message.take()) else {
                continue;
            };
            if let Err(error) = self.send_request(&message) {
                self.fail_request(id, error);
            }
        }
    }

    fn handle_request(&mut self, now: Instant, mut request: Message) {
        let token = request.token;
        let answer = match usable_options(&request.options) {
            Err(number) => Some((
                Code::BAD_OPTION,
                format!("Unrecognized critical option {}", number.0),
            )),
            Ok(_) if self.incoming.len() >= self.config.max_unanswered_requests => {
                Some((Code::SERVICE_UNAVAILABLE, "Overloaded".to_string()))
            }
            Ok(options) => {
                request.options = options;
                None
            }
        };
        if let Some((code, diagnostic)) = answer {
            let mut response = Message::new(MessageType::Con, code);
            response.token = token;
            response.payload = diagnostic.into_bytes();
            return self.write_reply(now, &response);
        }
        let id = IncomingId(self.next_id());
        self.incoming.insert(id, token);
        self.events.push_back(StreamEvent::Request { id, request });
    }

    fn handle_response(&mut self, response: Message) {
        let Some(&id) = self.tokens.get(&response.token) else {
            tracing::trace!(token = %response.token, "stream: response to an unknown token dropped");
            return;
        };
        let Some(request) = self.requests.get_mut(&id) else {
            return;
        };
        if request.message.is_some() {
            return; // not sent yet: this cannot be its response
        }
        if let Err(number) = usable_options(&response.options) {
            self.fail_request(id, RequestError::BadResponseOption(number));
            return self.maybe_finish_release();
        }
        let continues = observe::continues_observation(&response);
        if request.observing {
            if !continues {
                self.finish_request(id);
            }
            self.events
                .push_back(StreamEvent::Notification { id, response });
        } else {
            if request.registration.is_some() && continues && self.state != StreamState::Releasing {
                request.observing = true;
                if let Some(at) = request.deadline.take() {
                    self.deadlines.remove(&(at, id));
                }
            } else {
                self.finish_request(id);
            }
            self.events
                .push_back(StreamEvent::Response { id, response });
        }
        self.maybe_finish_release();
    }
}
