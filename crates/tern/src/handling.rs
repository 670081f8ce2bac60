//! Server-side request handling shared by the datagram and stream drivers: block-wise
//! reassembly and slicing around the handler (RFC 7959), and handlers polled once in place,
//! run as a task only if they wait.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use tern_proto::block::{
    Block1Action, Block1Assembler, Block1Config, Block2Lookup, Block2Server, BlockValue,
};
use tern_proto::{Code, Message, OptionNumber};
use tokio::sync::mpsc;

use crate::driver::Command;
use crate::message::Response;
use crate::oscore::{OscoreIdentity, OscoreServer, Protection};
use crate::router::{BoxFuture, Router};
use crate::usage::Gauge;

/// A request whose handler runs, as the block-wise layer needs it for the response: the peer,
/// the request without its body (kept for FETCH, whose body is part of its key), and the
/// Block1 block the final response acknowledges.
pub(crate) struct BlockExchange {
    pub(crate) peer: SocketAddr,
    pub(crate) request: Message,
    pub(crate) block1: Option<BlockValue>,
    /// The size of the request as it arrived (the last block's, for a request in blocks), for
    /// amplification limits.
    pub(crate) request_len: usize,
    /// Over a stream to a peer that does BERT (RFC 8323 §6): the most body bytes a BERT
    /// block to it may carry; `None` for ordinary blocks.
    pub(crate) bert: Option<usize>,
    /// For a request protected with OSCORE: what its response is protected with, and the
    /// outer exchange when the protected message itself came block-wise.
    pub(crate) oscore: Option<Box<OscoreExchange>>,
}

/// The OSCORE side of an exchange (RFC 8613): `request` of the [`BlockExchange`] is the inner
/// request, and the response is protected before it goes back through `outer`.
pub(crate) struct OscoreExchange {
    pub(crate) protection: Protection,
    pub(crate) outer: Option<BlockExchange>,
}

impl BlockExchange {
    /// Who protected the request, if it was protected.
    pub(crate) fn oscore_identity(&self) -> Option<OscoreIdentity> {
        self.oscore.as_ref().map(|o| o.protection.identity())
    }
}

/// A fresh random seed for the block-wise tables' hashers (keyed so that peers cannot aim
/// collisions); falls back to the clock's nanoseconds if the system has no randomness.
pub(crate) fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::getrandom(&mut seed).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        seed[..16].copy_from_slice(&nanos.to_le_bytes());
    }
    seed
}

/// The server's block-wise state: request bodies arriving in blocks, and large response
/// bodies served block by block.
pub(crate) struct BlockTables {
    block1: Block1Assembler,
    block2: Block2Server,
}

impl BlockTables {
    /// For a datagram endpoint, with the router's caps (the defaults without a router).
    pub(crate) fn new(router: Option<&Router>) -> Self {
        let (block1, block2) = router.map(|r| r.block_config().clone()).unwrap_or_default();
        BlockTables {
            block1: Block1Assembler::new(block1, seed()),
            block2: Block2Server::new(block2, seed()),
        }
    }

    /// For stream connections: request bodies may also come in BERT blocks (RFC 8323 §6),
    /// which a peer may send before it has seen the CSM that announces block-wise support.
    pub(crate) fn for_streams(router: Option<&Router>) -> Self {
        let mut tables = Self::new(router);
        let block1 = Block1Config {
            bert: true,
            ..tables.block1.config().clone()
        };
        tables.block1 = Block1Assembler::new(block1, seed());
        tables
    }

    /// Request bodies being assembled, and bytes of response bodies cached, against caps.
    pub(crate) fn usage(&self) -> (Gauge, Gauge) {
        let (c1, c2) = (self.block1.config(), self.block2.config());
        (
            Gauge::new(
                self.block1.len(),
                c1.max_transfers,
                self.block1.stats().refused,
            ),
            Gauge::new(
                self.block2.cached_bytes(),
                c2.max_cached_bytes,
                self.block2.stats().evicted,
            ),
        )
    }

    /// The block size responses are sliced to when the request asks for none.
    pub(crate) fn block_size(&self) -> usize {
        16usize << self.block2.config().default_szx
    }

    /// Before the handler: a request body arriving in blocks is reassembled, and later blocks
    /// of a large response come from the cache. `Ok` is the request for the handler with what
    /// its response needs; `Err` is the reply to send as it is.
    pub(crate) fn before(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message: Message,
        bert: Option<usize>,
    ) -> Result<(Message, BlockExchange), Message> {
        let (message, block1) = if message.options.contains(OptionNumber::BLOCK1) {
            match self.block1.handle(now, peer, message) {
                Block1Action::Complete(assembled) => (assembled.request, assembled.block1),
                Block1Action::Continue(reply) | Block1Action::Reject(reply) => return Err(reply),
            }
        } else {
            (message, None)
        };
        if message.options.contains(OptionNumber::BLOCK2) {
            if let Block2Lookup::Respond(reply) =
                self.block2.handle_request_with(now, peer, &message, bert)
            {
                return Err(reply);
            }
        }
        let mut kept = Message::new(message.ty, message.code);
        kept.token = message.token;
        kept.options = message.options.clone();
        if message.code == Code::FETCH {
            kept.payload = message.payload.clone();
        }
        let exchange = BlockExchange {
            peer,
            request: kept,
            block1,
            request_len: 0,
            bert,
            oscore: None,
        };
        Ok((message, exchange))
    }

    /// Before the handler, with OSCORE (RFC 8613) where the request carries it: an outer
    /// message in blocks (a proxy's doing) is reassembled first, then unprotected with the
    /// router's contexts, then the inner request goes through block-wise as in
    /// [`before`](Self::before). `Err` is the reply to send as it is: a block-wise reply to
    /// the inner request comes protected, an OSCORE failure as §8.2's unprotected error.
    pub(crate) fn before_handler(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        message: Message,
        oscore: Option<&OscoreServer>,
        max_payload: usize,
        bert: Option<usize>,
    ) -> Result<(Message, BlockExchange), Message> {
        if !message.options.contains(OptionNumber::OSCORE) {
            return self.before(now, peer, message, bert);
        }
        let Some(server) = oscore else {
            return Err(crate::oscore::server_not_supported(&message));
        };
        // A real OSCORE request names its kid and Partial IV; checked before any block-wise
        // table is looked at, as the inner requests' keys carry an OSCORE option without a
        // Partial IV, which a forged outer request must not be able to match.
        if let Err(e) = tern_oscore::request_option(&message) {
            return Err(tern_oscore::error_response(&message, &e));
        }
        let outer_blocks = message.options.contains(OptionNumber::BLOCK1)
            || message.options.contains(OptionNumber::BLOCK2);
        let (message, outer) = if outer_blocks {
            let (whole, exchange) = self.before(now, peer, message, bert)?;
            (whole, Some(exchange))
        } else {
            (message, None)
        };
        let (inner, protection) = match server.unprotect(&message) {
            Ok(unprotected) => unprotected,
            Err(reply) => return Err(self.finish_outer(now, reply, outer.as_ref(), max_payload)),
        };
        match self.before(now, peer, inner, bert) {
            Ok((inner, mut exchange)) => {
                exchange.oscore = Some(Box::new(OscoreExchange { protection, outer }));
                Ok((inner, exchange))
            }
            Err(reply) => {
                let protected = server.protect(&protection, &reply, false);
                Err(self.finish_outer(now, protected, outer.as_ref(), max_payload))
            }
        }
    }

    /// After the handler, once the response is sliced and its Observe value set: the last
    /// Block1 block acknowledged, then for an OSCORE request the response protected (with
    /// its own Partial IV when it carries Observe) and sent back through the outer
    /// block-wise exchange if there was one.
    pub(crate) fn seal(
        &mut self,
        now: Instant,
        mut response: Message,
        exchange: &BlockExchange,
        oscore: Option<&OscoreServer>,
        max_payload: usize,
    ) -> Message {
        Self::acknowledge(&mut response, exchange);
        let Some(protected) = exchange.oscore.as_deref() else {
            return response;
        };
        let Some(server) = oscore else {
            // Unreachable in practice: the request was unprotected with these contexts.
            let mut error = Message::new(response.ty, Code::INTERNAL_SERVER_ERROR);
            error.mid = response.mid;
            error.token = response.token;
            return error;
        };
        let response = server.protect(&protected.protection, &response, false);
        self.finish_outer(now, response, protected.outer.as_ref(), max_payload)
    }

    /// A reply to a message that came in outer blocks: sliced if large, acknowledging the
    /// last block.
    fn finish_outer(
        &mut self,
        now: Instant,
        reply: Message,
        outer: Option<&BlockExchange>,
        max_payload: usize,
    ) -> Message {
        match outer {
            Some(outer) => {
                let mut reply = self.slice(now, reply, outer, max_payload);
                Self::acknowledge(&mut reply, outer);
                reply
            }
            None => reply,
        }
    }

    /// Slices a handler's response into blocks when it is larger than `max_payload` (or the
    /// request asked for blocks).
    pub(crate) fn slice(
        &mut self,
        now: Instant,
        response: Message,
        exchange: &BlockExchange,
        max_payload: usize,
    ) -> Message {
        if exchange.request.options.contains(OptionNumber::BLOCK2)
            || response.payload.len() > max_payload
        {
            self.block2.respond_with(
                now,
                exchange.peer,
                &exchange.request,
                response,
                exchange.bert,
            )
        } else {
            response
        }
    }

    /// Ends a block-wise request: the final response acknowledges the last Block1 block, M=0
    /// (RFC 7959 §2.3).
    pub(crate) fn acknowledge(response: &mut Message, exchange: &BlockExchange) {
        if let Some(last) = exchange.block1 {
            if response.code.is_success() {
                last.with_more(false)
                    .write(&mut response.options, OptionNumber::BLOCK1);
            }
        }
    }
}

/// Runs a handler's future: polled once in place, so that most handlers answer without a
/// task; one that waits runs as a task bounded by `limit`, and its response goes back to the
/// driver as the command `reply` makes of it and `context`. Returns the response with
/// `context` if it was ready.
pub(crate) fn run_handler<T: Send + 'static>(
    mut future: BoxFuture,
    peer: SocketAddr,
    limit: Duration,
    commands: &mpsc::UnboundedSender<Command>,
    context: T,
    reply: impl FnOnce(Response, T) -> Command + Send + 'static,
) -> Option<(Response, T)> {
    let mut cx = TaskContext::from_waker(Waker::noop());
    let polled = std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx)));
    match polled {
        Ok(Poll::Ready(response)) => Some((response, context)),
        Ok(Poll::Pending) => {
            let tx = commands.clone();
            tokio::spawn(async move {
                // A handler that hangs must not hold its pending slot forever.
                let response = match tokio::time::timeout(limit, tokio::spawn(future)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(_)) => Response::error(Code::INTERNAL_SERVER_ERROR, "handler failed"),
                    Err(_) => {
                        tracing::warn!(%peer, "handler timed out");
                        Response::error(Code::SERVICE_UNAVAILABLE, "handler timed out")
                    }
                };
                let _ = tx.send(reply(response, context));
            });
            None
        }
        Err(_) => {
            tracing::error!(%peer, "handler panicked");
            let response = Response::error(Code::INTERNAL_SERVER_ERROR, "handler failed");
            Some((response, context))
        }
    }
}
