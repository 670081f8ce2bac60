//! Client-side Block1: sending a request body block by block (RFC 7959 §2.3, §2.5, §2.9, §3;
//! Request-Tag per RFC 9175 §3).
//!
//! [`Block1Send::start`] returns the first request; the runtime sends each request it is
//! given and feeds the response back to [`Block1Send::handle_response`]. Block 0 carries Size1
//! (the whole length) and, if asked, a Request-Tag that every block repeats. A 2.31 Continue
//! with a smaller SZX moves the rest of the body to that size (the next NUM follows from the
//! byte offset). The final response ends the transfer, or, when it carries Block2 with more
//! blocks, hands over to a [`Block2Fetch`] for the response body.

use super::fetch::{Block2Fetch, Block2Step};
use super::value::{size_of_szx, BlockValue, BlockValueError, BERT_SZX, MAX_NUM, MAX_SZX};
use super::{read_block, TransferError};
use crate::code::Code;
use crate::message::{Message, Token};
use crate::option::OptionNumber;

/// Settings of one [`Block1Send`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block1SendConfig {
    /// The block size exponent to start with (default 6: 1024 bytes); the server may ask for
    /// smaller blocks.
    pub szx: u8,
    /// A Request-Tag for every block (RFC 9175 §3), so that the server keeps this body apart
    /// from others to the same resource; `None` sends none.
    pub request_tag: Option<Vec<u8>>,
    /// The largest response body accepted if the final response comes block-wise (default
    /// 1 MiB).
    pub max_response_body: usize,
    /// A payload up to this size goes whole, in one request without Block1, even if it is
    /// larger than a block (default 0: only payloads that fit one block). Over TCP and TLS a
    /// message may be as large as the peer's Max-Message-Size, so blocks are needed only
    /// beyond it.
    pub whole_up_to: usize,
    /// Accept a response body in BERT blocks (SZX 7, RFC 8323 §6): over TCP and TLS only.
    pub bert: bool,
}

impl Default for Block1SendConfig {
    fn default() -> Self {
        Block1SendConfig {
            szx: MAX_SZX,
            request_tag: None,
            max_response_body: 1 << 20,
            whole_up_to: 0,
            bert: false,
        }
    }
}

/// What to do after a response, as decided by [`Block1Send::handle_response`].
#[derive(Debug, Clone)]
pub enum Block1Step {
    /// Send this request (the next block) next.
    Send(Message),
    /// The transfer is over: the server's final response (or an error response that ends it).
    Done(Message),
    /// The final response carries the first block of a block-wise response body: send this
    /// request and feed the responses to the fetch.
    Fetch(Box<Block2Fetch>, Message),
}

/// The block in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    block: BlockValue,
    offset: usize,
    len: usize,
}

/// Sends a request body block-wise. See the module documentation.
///
/// Only the first request keeps the original request's token (and its response must carry
/// it); every later one has an empty token and message ID for the message layer to assign, a
/// fresh token per request (RFC 9175 §4).
#[derive(Debug, Clone)]
pub struct Block1Send {
    /// The request without its payload, token and message ID, as every block repeats it.
    template: Message,
    /// The original request's token, for the first request.
    first_token: Token,
    body: Vec<u8>,
    config: Block1SendConfig,
    /// `None` while a body that fits one block is sent as a plain request.
    in_flight: Option<InFlight>,
    expected_token: Token,
    finished: bool,
}

impl Block1Send {
    /// Prepares to send `request`'s payload block-wise and returns the first request. A payload
    /// that fits one block is sent as a plain request, without Block1.
    pub fn start(
        mut request: Message,
        config: Block1SendConfig,
    ) -> Result<(Self, Message), TransferError> {
        if config.szx == BERT_SZX {
            return Err(TransferError::Bert(OptionNumber::BLOCK1));
        }
        if config.szx > BERT_SZX {
            return Err(TransferError::BadOption {
                option: OptionNumber::BLOCK1,
                error: BlockValueError::Szx(config.szx),
            });
        }
        let size = size_of_szx(config.szx);
        let blocks = request.payload.len().div_ceil(size);
        if blocks > MAX_NUM as usize + 1 {
            return Err(TransferError::TooManyBlocks { size });
        }
        let body = std::mem::take(&mut request.payload);
        let first_token = std::mem::take(&mut request.token);
        request.mid = 0;
        for n in [
            OptionNumber::BLOCK1,
            OptionNumber::SIZE1,
            OptionNumber::REQUEST_TAG,
        ] {
            request.options.remove(n);
        }
        let whole = body.len() <= size.max(config.whole_up_to);
        if let (Some(tag), false) = (&config.request_tag, whole) {
            request.options.set(OptionNumber::REQUEST_TAG, tag.clone());
        }
        let mut send = Block1Send {
            template: request,
            first_token,
            body,
            config,
            in_flight: None,
            expected_token: Token::EMPTY,
            finished: false,
        };
        let first = send.first_request();
        Ok((send, first))
    }

    fn first_request(&mut self) -> Message {
        let mut request = self.template.clone();
        request.token = std::mem::take(&mut self.first_token);
        self.expected_token = request.token;
        if self.body.len() <= size_of_szx(self.config.szx).max(self.config.whole_up_to) {
            request.payload = self.body.clone();
            self.in_flight = None;
            return request;
        }
        let total = u32::try_from(self.body.len()).unwrap_or(u32::MAX);
        request.options.set_uint(OptionNumber::SIZE1, total);
        self.send_block(request, 0, self.config.szx)
    }

    /// Writes the block at `offset` into `request` and records it as in flight.
    fn send_block(&mut self, mut request: Message, offset: usize, szx: u8) -> Message {
        let size = size_of_szx(szx);
        let end = offset.saturating_add(size).min(self.body.len());
        let more = end < self.body.len();
        // In range: the number of blocks was checked at the start and sizes only shrink by
        // the server's request, which is checked before this is called.
        let block = BlockValue::at_offset(offset as u64, more, size)
            .unwrap_or_else(|_| BlockValue::initial(szx));
        block.write(&mut request.options, OptionNumber::BLOCK1);
        request.payload = self.body[offset..end].to_vec();
        self.in_flight = Some(InFlight {
            block,
            offset,
            len: end - offset,
        });
        request
    }

    /// The body's length.
    pub fn total(&self) -> usize {
        self.body.len()
    }

    /// Body bytes the server has acknowledged so far.
    pub fn acknowledged(&self) -> usize {
        self.in_flight.map_or(0, |f| f.offset)
    }

    /// Whether the transfer has ended (completed or failed).
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Starts over from block 0 (after [`TransferError::EntityIncomplete`], say) and returns
    /// the first request again (with an empty token: the original one has been used).
    pub fn restart(&mut self) -> Message {
        self.finished = false;
        self.first_request()
    }

    /// Takes the response to the last request sent and says what to do next. Any error ends
    /// the transfer.
    pub fn handle_response(&mut self, response: Message) -> Result<Block1Step, TransferError> {
        if self.finished {
            return Err(TransferError::Finished);
        }
        let step = self.step(response);
        if !matches!(step, Ok(Block1Step::Send(_))) {
            self.finished = true;
        }
        step
    }

    fn step(&mut self, response: Message) -> Result<Block1Step, TransferError> {
        if !self.expected_token.is_empty() && response.token != self.expected_token {
            return Err(TransferError::TokenMismatch {
                expected: self.expected_token,
                got: response.token,
            });
        }
        let code = response.code;
        if !code.is_response() {
            return Err(TransferError::NotAResponse(code));
        }
        let more = self.in_flight.is_some_and(|f| f.block.more());
        match code {
            Code::REQUEST_ENTITY_TOO_LARGE => {
                // §2.9.3: Size1 tells the limit; a smaller SZX in Block1 hints at a block size.
                let szx = BlockValue::read(&response.options, OptionNumber::BLOCK1)
                    .ok()
                    .flatten()
                    .filter(|b| !b.is_bert())
                    .map(|b| b.szx());
                Err(TransferError::EntityTooLarge {
                    size1: response.options.get_uint(OptionNumber::SIZE1),
                    szx,
                })
            }
            Code::REQUEST_ENTITY_INCOMPLETE => Err(TransferError::EntityIncomplete),
            Code::CONTINUE if !more => Err(TransferError::UnexpectedContinue),
            // 2.31, or another success to a non-final block from a server that processes
            // blocks as they come (§2.3): go on with the next block.
            c if c.is_success() && more => self.next_block(&response),
            _ => self.finish(response),
        }
    }

    fn next_block(&mut self, response: &Message) -> Result<Block1Step, TransferError> {
        let Some(sent) = self.in_flight else {
            return Err(TransferError::UnexpectedContinue);
        };
        let ack = self
            .check_ack(response, sent)?
            .ok_or(TransferError::MissingOption(OptionNumber::BLOCK1))?;
        let szx = sent.block.szx().min(ack.szx());
        let size = size_of_szx(szx);
        let offset = sent.offset + sent.len;
        if self.body.len().div_ceil(size) > MAX_NUM as usize + 1 {
            return Err(TransferError::TooManyBlocks { size });
        }
        let request = self.send_block(self.template.clone(), offset, szx);
        self.expected_token = request.token;
        Ok(Block1Step::Send(request))
    }

    /// The response's Block1, checked against the block sent: the server echoes its NUM (or,
    /// when it switches to a smaller size, may give the same offset in its own size).
    fn check_ack(
        &self,
        response: &Message,
        sent: InFlight,
    ) -> Result<Option<BlockValue>, TransferError> {
        let Some(ack) = read_block(response, OptionNumber::BLOCK1)? else {
            return Ok(None);
        };
        if ack.is_bert() {
            return Err(TransferError::Bert(OptionNumber::BLOCK1));
        }
        if ack.num() != sent.block.num() && ack.offset() != sent.offset as u64 {
            return Err(TransferError::WrongBlock {
                option: OptionNumber::BLOCK1,
                got: ack,
                got_offset: ack.offset(),
                expected_offset: sent.offset as u64,
            });
        }
        Ok(Some(ack))
    }

    /// The final response; a block-wise response body continues as a [`Block2Fetch`].
    fn finish(&mut self, response: Message) -> Result<Block1Step, TransferError> {
        if let Some(sent) = self.in_flight {
            self.check_ack(&response, sent)?;
        }
        let blockwise = response.code.is_success()
            && read_block(&response, OptionNumber::BLOCK2)?.is_some_and(|b| b.more());
        if !blockwise {
            return Ok(Block1Step::Done(response));
        }
        let mut last = self.template.clone();
        last.token = self.expected_token;
        // A FETCH's body is part of what it asks for (RFC 8132 §2): the requests for later
        // blocks repeat it, or the server would answer another question. (A body that itself
        // needed Block1 is not repeated: it would not fit one message.)
        let sent_whole =
            self.body.len() <= size_of_szx(self.config.szx).max(self.config.whole_up_to);
        if last.code == Code::FETCH && sent_whole {
            last.payload = self.body.clone();
        }
        // The fetch checks the final response's token as its first.
        let mut fetch =
            Block2Fetch::new(&last, self.config.max_response_body).with_bert(self.config.bert);
        match fetch.handle_response(response)? {
            Block2Step::Send(request) => Ok(Block1Step::Fetch(Box::new(fetch), request)),
            Block2Step::Done(response) => Ok(Block1Step::Done(response)),
        }
    }
}
