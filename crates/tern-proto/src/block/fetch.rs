//! Client-side Block2: fetching a response body block by block (RFC 7959 §2.4, §3; Observe
//! per §2.6 and RFC 7641 §3.3).
//!
//! The runtime sends the original request, feeds the response to [`Block2Fetch::handle_response`]
//! and sends whatever request it returns, until the body is whole. Each block is checked: it
//! must start where the body so far ends (the server may switch to a smaller size; the next
//! NUM is computed from the byte offset), fill its size unless it is the last, carry the ETag
//! the first block carried, and keep the body within the configured limit.

use super::value::{size_of_szx, BlockValue};
use super::{read_block, TransferError};
use crate::code::Code;
use crate::message::{Message, Token};
use crate::option::OptionNumber;

/// What to do after a response, as decided by [`Block2Fetch::handle_response`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block2Step {
    /// Send this request for the next block. Its message ID and token are empty, for the
    /// message layer to assign: a fresh token per request (RFC 9175 §4), so that a late
    /// response to an earlier block cannot be taken for this one.
    Send(Message),
    /// The transfer is over: the last response, carrying the whole body as payload, without
    /// Block2 and Size2, and with the first response's Observe option if it had one. A
    /// response that was not block-wise (or an error answering the first request) is handed
    /// back unchanged.
    Done(Message),
}

/// Fetches a response body block-wise. See the module documentation.
#[derive(Debug, Clone)]
pub struct Block2Fetch {
    /// The original request, as every follow-up request repeats it.
    template: Message,
    /// The token the next response must carry: the original request's, if it had one, for the
    /// first response; empty (the message layer matches) for follow-up requests.
    expected_token: Token,
    max_body_size: usize,
    body: Vec<u8>,
    blocks: u32,
    etag: Option<Vec<u8>>,
    observe: Option<Vec<u8>>,
    finished: bool,
    /// Whether BERT blocks (SZX 7) are accepted: over reliable transports only.
    bert: bool,
}

impl Block2Fetch {
    /// A fetch for the response to `request` (sent as is first), accepting bodies of at most
    /// `max_body_size` bytes.
    ///
    /// Follow-up requests repeat `request` with its message ID cleared, a Block2 option, and
    /// without Observe (RFC 7959 §2.6: only the first request registers), Block1, Size1,
    /// Size2 and Request-Tag; the payload is repeated only for FETCH (RFC 8132 §2.3.2). Their
    /// token is left empty for the message layer to choose (an observation keeps its own).
    /// When `request` carries a token, the first response must carry it too.
    pub fn new(request: &Message, max_body_size: usize) -> Self {
        let mut template = request.clone();
        template.mid = 0;
        template.token = Token::EMPTY;
        for n in [
            OptionNumber::OBSERVE,
            OptionNumber::BLOCK1,
            OptionNumber::BLOCK2,
            OptionNumber::SIZE1,
            OptionNumber::SIZE2,
            OptionNumber::REQUEST_TAG,
        ] {
            template.options.remove(n);
        }
        if template.code != Code::FETCH {
            template.payload.clear();
        }
        Block2Fetch {
            template,
            expected_token: request.token,
            max_body_size,
            body: Vec::new(),
            blocks: 0,
            etag: None,
            observe: None,
            finished: false,
            bert: false,
        }
    }

    /// Accepts BERT blocks (RFC 8323 §6: SZX 7, each a multiple of 1024 bytes) when `bert`
    /// is set, as a client over TCP or TLS that announced Block-Wise-Transfer does.
    pub fn with_bert(mut self, bert: bool) -> Self {
        self.bert = bert;
        self
    }

    /// Body bytes received so far.
    pub fn received(&self) -> usize {
        self.body.len()
    }

    /// Whether the transfer has ended (completed or failed).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Starts over from block 0 (after [`TransferError::EtagChanged`], say): forgets what was
    /// received and returns the request to send.
    pub fn restart(&mut self) -> Message {
        self.body.clear();
        self.blocks = 0;
        self.etag = None;
        self.observe = None;
        self.finished = false;
        self.expected_token = self.template.token;
        self.template.clone()
    }

    /// Takes the response to the last request sent (the original one first) and says what to
    /// do next. Any error ends the transfer.
    pub fn handle_response(&mut self, response: Message) -> Result<Block2Step, TransferError> {
        if self.finished {
            return Err(TransferError::Finished);
        }
        let step = self.step(response);
        if !matches!(step, Ok(Block2Step::Send(_))) {
            self.finished = true;
            self.body = Vec::new();
        }
        step
    }

    fn step(&mut self, mut response: Message) -> Result<Block2Step, TransferError> {
        if !self.expected_token.is_empty() && response.token != self.expected_token {
            return Err(TransferError::TokenMismatch {
                expected: self.expected_token,
                got: response.token,
            });
        }
        if !response.code.is_response() {
            return Err(TransferError::NotAResponse(response.code));
        }
        let first = self.blocks == 0;
        if !response.code.is_success() {
            return if first {
                Ok(Block2Step::Done(response))
            } else {
                Err(TransferError::ErrorResponse(response.code))
            };
        }
        let Some(block) = read_block(&response, OptionNumber::BLOCK2)? else {
            return if first {
                Ok(Block2Step::Done(response))
            } else {
                Err(TransferError::MissingOption(OptionNumber::BLOCK2))
            };
        };
        if block.is_bert() && !self.bert {
            return Err(TransferError::Bert(OptionNumber::BLOCK2));
        }
        let expected_offset = self.body.len() as u64;
        if block.offset() != expected_offset {
            return Err(TransferError::WrongBlock {
                option: OptionNumber::BLOCK2,
                got: block,
                got_offset: block.offset(),
                expected_offset,
            });
        }
        let (len, size) = (response.payload.len(), block.size());
        // A BERT block is any whole number of 1024-byte units (the last one may be shorter).
        let bad_size = if block.is_bert() {
            (block.more() && (len == 0 || len % size != 0)) || (!block.more() && len == 0 && !first)
        } else {
            len > size || (block.more() && len != size)
        };
        if bad_size {
            return Err(TransferError::BlockSize {
                len,
                size,
                more: block.more(),
            });
        }
        let etag = response.options.get(OptionNumber::ETAG).map(<[u8]>::to_vec);
        let max = self.max_body_size;
        if first {
            let announced = response.options.get_uint(OptionNumber::SIZE2);
            if announced.is_some_and(|s| s as usize > max) {
                return Err(TransferError::BodyTooLarge { max });
            }
            self.etag = etag;
            self.observe = response
                .options
                .get(OptionNumber::OBSERVE)
                .map(<[u8]>::to_vec);
        } else if etag != self.etag {
            return Err(TransferError::EtagChanged);
        }
        if self.body.len() + len > max {
            return Err(TransferError::BodyTooLarge { max });
        }
        self.body.extend_from_slice(&response.payload);
        self.blocks += 1;
        if !block.more() {
            response.payload = std::mem::take(&mut self.body);
            response.options.remove(OptionNumber::BLOCK2);
            response.options.remove(OptionNumber::SIZE2);
            if let Some(observe) = self.observe.take() {
                response.options.set(OptionNumber::OBSERVE, observe);
            }
            return Ok(Block2Step::Done(response));
        }
        // The next block starts where the body ends, in the server's size, or a smaller one if
        // the server switched sizes so that the offset is not on one of its boundaries.
        let offset = self.body.len() as u64;
        if block.is_bert() {
            // The next BERT block: NUM counts 1024-byte units (the body so far is whole units).
            let num = u32::try_from(offset / 1024)
                .map_err(|_| TransferError::TooManyBlocks { size: 1024 })?;
            let next = BlockValue::new(num, false, super::value::BERT_SZX)
                .map_err(|_| TransferError::TooManyBlocks { size: 1024 })?;
            let mut request = self.template.clone();
            next.write(&mut request.options, OptionNumber::BLOCK2);
            self.expected_token = request.token;
            return Ok(Block2Step::Send(request));
        }
        let mut szx = block.szx();
        while szx > 0 && offset % size_of_szx(szx) as u64 != 0 {
            szx -= 1;
        }
        let size = size_of_szx(szx);
        let next = BlockValue::at_offset(offset, false, size)
            .map_err(|_| TransferError::TooManyBlocks { size })?;
        let mut request = self.template.clone();
        next.write(&mut request.options, OptionNumber::BLOCK2);
        self.expected_token = request.token;
        Ok(Block2Step::Send(request))
    }
}
