//! The server role of the message layer: deduplicated delivery of requests, piggybacked and
//! separate responses, and the answers the message layer gives on its own (4.02 Bad Option,
//! 5.03 when overloaded) (RFC 7252 §4.5, §5.2, §5.4.1, §5.4.5; No-Response, RFC 7967).

use std::net::SocketAddr;
use std::time::Instant;

use super::{later, Endpoint, Event, IncomingId, Purpose};
use crate::code::{Code, MessageType};
use crate::dedup::DedupState;
use crate::message::{CoapOption, EncodeError, Message, Options, Token};
use crate::option::{decode_uint, OptionNumber};
use crate::wire::Datagram;

#[derive(Debug)]
pub(super) struct PendingIncoming {
    peer: SocketAddr,
    mid: u16,
    token: Token,
    confirmable: bool,
    acked: bool,
    /// No-Response option value (RFC 7967): bit 1 suppresses 2.xx, bit 3 4.xx, bit 4 5.xx.
    no_response: u8,
}

/// Why [`Endpoint::respond`] could not send a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespondError {
    /// The request was already answered, or never existed.
    #[error("no pending request with this id")]
    UnknownRequest,
    /// The response cannot be encoded; 5.00 was sent instead.
    #[error("cannot encode the response ({0}); sent 5.00 instead")]
    Encode(EncodeError),
}

/// The result of checking a message's options against the registry.
enum OptionCheck {
    /// Every option is usable; elective ones that were not have been dropped.
    Usable(Options),
    /// An unrecognised (or unusable) critical option.
    BadCritical(OptionNumber),
}

impl Endpoint {
    fn is_known_option(&self, number: OptionNumber) -> bool {
        number.def().is_some() || self.config.extra_known_options.contains(&number.0)
    }

    /// Applies §5.4.1, §5.4.3 and §5.4.5: unknown options, values outside their length or
    /// format, and repeats of non-repeatable options are unrecognised; critical ones reject the
    /// message, elective ones are dropped.
    fn check_options<T: AsRef<[u8]>>(&self, d: &Datagram<T>) -> OptionCheck {
        let mut kept = Vec::new();
        let mut previous: Option<OptionNumber> = None;
        for (number, value) in d.options().flatten() {
            let repeated = previous == Some(number);
            previous = Some(number);
            let usable = match number.def() {
                _ if self.config.unimplemented_options.contains(&number.0) => false,
                Some(def) => def.check(value).is_ok() && (def.repeatable || !repeated),
                None => self.is_known_option(number),
            };
            if usable {
                kept.push(CoapOption {
                    number,
                    value: value.to_vec(),
                });
            } else if number.is_critical() {
                return OptionCheck::BadCritical(number);
            }
        }
        // The wire order is sorted and dropping options keeps it so.
        OptionCheck::Usable(Options::from_sorted(kept))
    }

    /// The first unrecognised critical option of a received response, if any.
    pub(super) fn unrecognized_critical<T: AsRef<[u8]>>(
        &self,
        d: &Datagram<T>,
    ) -> Option<OptionNumber> {
        match self.check_options(d) {
            OptionCheck::BadCritical(n) => Some(n),
            OptionCheck::Usable(_) => None,
        }
    }

    pub(super) fn handle_request<T: AsRef<[u8]>>(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        d: &Datagram<T>,
    ) {
        let (mid, ty) = (d.mid(), d.ty());
        if let Some(state) = self.dedup.get_mut(peer, mid, now) {
            self.stats.duplicates += 1;
            if ty != MessageType::Con {
                return; // §4.5: duplicate NONs are ignored
            }
            let resend = match state {
                DedupState::Answered(bytes) => Some(bytes.clone()),
                DedupState::Processing { acked: true } => Some(Self::empty(MessageType::Ack, mid)),
                _ => None,
            };
            if let Some(bytes) = resend {
                self.queue_transmit(peer, bytes);
            }
            return;
        }
        let token = Token::new(d.token()).unwrap_or_default();
        let options = match self.check_options(d) {
            OptionCheck::Usable(options) => options,
            OptionCheck::BadCritical(number) => {
                self.stats.bad_options += 1;
                if ty == MessageType::Con {
                    // §5.4.1: a CON request with an unrecognised critical option gets 4.02.
                    let diagnostic = format!("Unrecognized critical option {}", number.0);
                    self.answer_now(now, peer, ty, mid, token, Code::BAD_OPTION, diagnostic);
                } else {
                    // A NON is rejected (§4.3): a matching RST, and duplicates ignored.
                    self.remember(now, peer, mid, ty, DedupState::Done);
                    self.send_reset(peer, mid);
                }
                return;
            }
        };
        if self.incoming.len() >= self.config.max_pending_incoming {
            self.stats.overloaded += 1;
            self.answer_now(
                now,
                peer,
                ty,
                mid,
                token,
                Code::SERVICE_UNAVAILABLE,
                "Overloaded".into(),
            );
            return;
        }
        let Some(p) = self.peer_mut(now, peer) else {
            return;
        };
        p.pending_incoming += 1;
        let confirmable = ty == MessageType::Con;
        let no_response = options
            .get(OptionNumber::NO_RESPONSE)
            .and_then(decode_uint)
            .map_or(0, |v| v as u8);
        let id = IncomingId(self.next_id());
        self.incoming.insert(
            id,
            PendingIncoming {
                peer,
                mid,
                token,
                confirmable,
                acked: false,
                no_response,
            },
        );
        self.remember(now, peer, mid, ty, DedupState::Processing { acked: false });
        if confirmable {
            let delay = self.config.separate_response_delay;
            self.separate_acks.push_back((later(now, delay), id));
            // Answered requests behind a slow one stay queued until it is answered; compact
            // so the queue never holds more than twice the pending requests.
            if self.separate_acks.len() > 2 * self.incoming.len() + 64 {
                let incoming = &self.incoming;
                self.separate_acks
                    .retain(|(_, id)| incoming.contains_key(id));
            }
        }
        let request = Message {
            ty,
            code: d.code(),
            mid,
            token,
            options,
            payload: d.payload().to_vec(),
        };
        self.events.push_back(Event::Request { id, peer, request });
    }

    /// Answers a request at once from the message layer, piggybacked on the ACK for a CON.
    #[allow(clippy::too_many_arguments)]
    fn answer_now(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        ty: MessageType,
        mid: u16,
        token: Token,
        code: Code,
        diagnostic: String,
    ) {
        let mut response = Message::new(MessageType::Ack, code);
        response.token = token;
        response.payload = diagnostic.into_bytes();
        if ty == MessageType::Con {
            response.mid = mid;
            if let Ok(bytes) = response.to_bytes() {
                self.remember(now, peer, mid, ty, DedupState::Answered(bytes.clone()));
                self.queue_transmit(peer, bytes);
            }
        } else {
            self.remember(now, peer, mid, ty, DedupState::Done);
            let Ok(own_mid) = self.allocate_mid(now, peer, false) else {
                return;
            };
            response.ty = MessageType::Non;
            response.mid = own_mid;
            if let Ok(bytes) = response.to_bytes() {
                self.queue_transmit(peer, bytes);
            }
        }
    }

    /// Sends the response to a request from [`Event::Request`]. Type, message ID and token are
    /// filled in here: piggybacked on the ACK when in time, else a separate CON after the empty
    /// ACK already sent; a NON request gets a NON response.
    pub fn respond(
        &mut self,
        now: Instant,
        id: IncomingId,
        mut response: Message,
    ) -> Result<(), RespondError> {
        let pending = self
            .incoming
            .remove(&id)
            .ok_or(RespondError::UnknownRequest)?;
        while self
            .separate_acks
            .front()
            .is_some_and(|(_, id)| !self.incoming.contains_key(id))
        {
            self.separate_acks.pop_front();
        }
        let peer = pending.peer;
        if let Some(p) = self.peers.get_mut(&peer) {
            p.pending_incoming = p.pending_incoming.saturating_sub(1);
            p.last_activity = now;
        }
        let request_ty = if pending.confirmable {
            MessageType::Con
        } else {
            MessageType::Non
        };
        response.token = pending.token;
        let suppressed = match response.code.class() {
            2 => pending.no_response & 0x02 != 0,
            4 => pending.no_response & 0x08 != 0,
            5 => pending.no_response & 0x10 != 0,
            _ => false,
        };
        if suppressed {
            // RFC 7967: no response; a CON still needs its (empty) ACK.
            if pending.confirmable {
                let ack = Self::empty(MessageType::Ack, pending.mid);
                self.dedup
                    .update(peer, pending.mid, DedupState::Answered(ack.clone()));
                if !pending.acked {
                    self.queue_transmit(peer, ack);
                }
            } else {
                self.dedup.update(peer, pending.mid, DedupState::Done);
            }
            return Ok(());
        }
        let result = self.encode_response(now, &pending, &mut response);
        let bytes = match result {
            Ok(bytes) => bytes,
            Err(e) => {
                let mut fallback = Message::new(response.ty, Code::INTERNAL_SERVER_ERROR);
                fallback.token = pending.token;
                fallback.mid = response.mid;
                match fallback.to_bytes() {
                    Ok(bytes) => {
                        self.send_response(now, &pending, request_ty, fallback.mid, bytes);
                    }
                    Err(_) => return Err(RespondError::Encode(e)),
                }
                return Err(RespondError::Encode(e));
            }
        };
        self.send_response(now, &pending, request_ty, response.mid, bytes);
        Ok(())
    }

    fn encode_response(
        &mut self,
        now: Instant,
        pending: &PendingIncoming,
        response: &mut Message,
    ) -> Result<Vec<u8>, EncodeError> {
        if pending.confirmable && !pending.acked {
            response.ty = MessageType::Ack;
            response.mid = pending.mid;
        } else {
            response.ty = if pending.confirmable {
                MessageType::Con
            } else {
                MessageType::Non
            };
            response.mid = self.allocate_mid(now, pending.peer, false).unwrap_or(0);
        }
        response.to_bytes()
    }

    fn send_response(
        &mut self,
        now: Instant,
        pending: &PendingIncoming,
        request_ty: MessageType,
        mid: u16,
        bytes: Vec<u8>,
    ) {
        let peer = pending.peer;
        match (request_ty, pending.acked) {
            (MessageType::Con, false) => {
                self.dedup
                    .update(peer, pending.mid, DedupState::Answered(bytes.clone()));
                self.queue_transmit(peer, bytes);
            }
            (MessageType::Con, true) => {
                let ack = Self::empty(MessageType::Ack, pending.mid);
                self.dedup
                    .update(peer, pending.mid, DedupState::Answered(ack));
                self.send_tracked(now, peer, mid, bytes, Purpose::SeparateResponse, true);
            }
            _ => {
                self.dedup.update(peer, pending.mid, DedupState::Done);
                self.queue_transmit(peer, bytes);
            }
        }
    }

    /// The handler is slow: acknowledge the CON now so the client stops retransmitting (§5.2.2).
    pub(super) fn on_separate_ack_timer(&mut self, _now: Instant, id: IncomingId) {
        let Some(p) = self.incoming.get_mut(&id) else {
            return;
        };
        if p.acked || !p.confirmable {
            return;
        }
        p.acked = true;
        let (peer, mid) = (p.peer, p.mid);
        self.dedup
            .update(peer, mid, DedupState::Processing { acked: true });
        self.queue_transmit(peer, Self::empty(MessageType::Ack, mid));
    }
}
