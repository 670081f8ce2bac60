//! Signaling messages (RFC 8323 §5): 7.01 CSM, 7.02 Ping, 7.03 Pong, 7.04 Release and
//! 7.05 Abort, with typed builders and one parser.
//!
//! Signaling option numbers are per code (§5.2): option 2 is Max-Message-Size in a CSM,
//! Custody in a Ping or Pong, Alternative-Address in a Release and Bad-CSM-Option in an
//! Abort. Every option defined so far is elective. As for requests (RFC 7252 §5.4.1),
//! unknown elective options are ignored, and so are elective ones whose value does not fit
//! (too long, not UTF-8) or that repeat. An unknown critical (odd-numbered) option is a
//! [`SignalError`]: in a CSM the receiver answers with Abort carrying Bad-CSM-Option
//! (§5.3); in the other signals it treats the message as a connection error and aborts too.
//! The payload of Release and Abort is a diagnostic (§5.5, §5.6), read lossily as UTF-8.

use std::time::Duration;

use crate::code::{Code, MessageType};
use crate::message::Message;
use crate::option::{decode_uint, OptionNumber};

/// The Max-Message-Size a peer is assumed to take until its CSM says otherwise (§5.3.1).
pub const DEFAULT_MAX_MESSAGE_SIZE: u32 = 1152;

/// CSM option 2: Max-Message-Size (uint, 0–4 bytes).
pub const CSM_MAX_MESSAGE_SIZE: OptionNumber = OptionNumber(2);
/// CSM option 4: Block-Wise-Transfer (empty).
pub const CSM_BLOCK_WISE_TRANSFER: OptionNumber = OptionNumber(4);
/// Ping and Pong option 2: Custody (empty).
pub const PING_CUSTODY: OptionNumber = OptionNumber(2);
/// Release option 2: Alternative-Address (string, 1–255 bytes).
pub const RELEASE_ALTERNATIVE_ADDRESS: OptionNumber = OptionNumber(2);
/// Release option 4: Hold-Off (uint seconds, 0–3 bytes).
pub const RELEASE_HOLD_OFF: OptionNumber = OptionNumber(4);
/// Abort option 2: Bad-CSM-Option (uint, 0–2 bytes).
pub const ABORT_BAD_CSM_OPTION: OptionNumber = OptionNumber(2);

/// Why a signaling message cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignalError {
    /// The code is not of class 7.
    #[error("{0} is not a signaling code")]
    NotSignaling(Code),
    /// A class-7 code that is not defined (7.00, 7.06–7.31).
    #[error("unknown signaling code {0}")]
    UnknownCode(Code),
    /// A critical option this side does not know.
    #[error("unknown critical option {} in {code:?}", option.0)]
    UnknownCriticalOption {
        /// The signal.
        code: Code,
        /// The option.
        option: OptionNumber,
    },
}

/// 7.01 Capabilities and Settings (§5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Csm {
    /// Max-Message-Size (§5.3.1); `None` leaves the receiver's current value.
    pub max_message_size: Option<u32>,
    /// Block-Wise-Transfer (§5.3.2): block-wise and BERT are supported.
    pub block_wise_transfer: bool,
}

/// 7.02 Ping and 7.03 Pong (§5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ping {
    /// Custody: the sender asks for (Ping) or gives (Pong) custody of the responses it
    /// has so far (§5.4.1).
    pub custody: bool,
}

/// 7.04 Release (§5.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Release {
    /// Where the peer may reconnect.
    pub alternative_address: Option<String>,
    /// How long to wait before reconnecting.
    pub hold_off: Option<Duration>,
    /// Diagnostic payload.
    pub diagnostic: String,
}

/// 7.05 Abort (§5.6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Abort {
    /// Diagnostic payload.
    pub diagnostic: String,
    /// The CSM option that caused the abort.
    pub bad_csm_option: Option<u16>,
}

/// A parsed signaling message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// 7.01 CSM.
    Csm(Csm),
    /// 7.02 Ping.
    Ping(Ping),
    /// 7.03 Pong.
    Pong(Ping),
    /// 7.04 Release.
    Release(Release),
    /// 7.05 Abort.
    Abort(Abort),
}

fn signal_message(code: Code) -> Message {
    Message::new(MessageType::Con, code)
}

impl Csm {
    /// The CSM as a message.
    pub fn to_message(&self) -> Message {
        let mut m = signal_message(Code::CSM);
        if let Some(size) = self.max_message_size {
            m.options.set_uint(CSM_MAX_MESSAGE_SIZE, size);
        }
        if self.block_wise_transfer {
            m.options.set(CSM_BLOCK_WISE_TRANSFER, Vec::new());
        }
        m
    }
}

impl Ping {
    /// As a 7.02 Ping.
    pub fn to_ping(&self) -> Message {
        self.with_code(Code::PING)
    }

    /// As a 7.03 Pong.
    pub fn to_pong(&self) -> Message {
        self.with_code(Code::PONG)
    }

    fn with_code(&self, code: Code) -> Message {
        let mut m = signal_message(code);
        if self.custody {
            m.options.set(PING_CUSTODY, Vec::new());
        }
        m
    }
}

impl Release {
    /// The Release as a message. A hold-off over 2^24 − 1 s (the option's 3 bytes) is sent
    /// as the maximum.
    pub fn to_message(&self) -> Message {
        let mut m = signal_message(Code::RELEASE);
        if let Some(address) = &self.alternative_address {
            m.options
                .set(RELEASE_ALTERNATIVE_ADDRESS, address.as_bytes().to_vec());
        }
        if let Some(hold_off) = self.hold_off {
            let secs = hold_off.as_secs().min(0xff_ffff) as u32;
            m.options.set_uint(RELEASE_HOLD_OFF, secs);
        }
        m.payload = self.diagnostic.as_bytes().to_vec();
        m
    }
}

impl Abort {
    /// An Abort with a diagnostic.
    pub fn new(diagnostic: impl Into<String>) -> Self {
        Abort {
            diagnostic: diagnostic.into(),
            bad_csm_option: None,
        }
    }

    /// The Abort as a message.
    pub fn to_message(&self) -> Message {
        let mut m = signal_message(Code::ABORT);
        if let Some(option) = self.bad_csm_option {
            m.options.set_uint(ABORT_BAD_CSM_OPTION, u32::from(option));
        }
        m.payload = self.diagnostic.as_bytes().to_vec();
        m
    }
}

impl Signal {
    /// The signal as a message (empty token).
    pub fn to_message(&self) -> Message {
        match self {
            Signal::Csm(c) => c.to_message(),
            Signal::Ping(p) => p.to_ping(),
            Signal::Pong(p) => p.to_pong(),
            Signal::Release(r) => r.to_message(),
            Signal::Abort(a) => a.to_message(),
        }
    }

    /// Reads a signaling message (code 7.01–7.05) and its options.
    pub fn parse(message: &Message) -> Result<Signal, SignalError> {
        let code = message.code;
        if !code.is_signaling() {
            return Err(SignalError::NotSignaling(code));
        }
        // The options each code knows, with their value length range; first instance wins.
        let known: &[(OptionNumber, usize, usize)] = match code {
            Code::CSM => &[
                (CSM_MAX_MESSAGE_SIZE, 0, 4),
                (CSM_BLOCK_WISE_TRANSFER, 0, 0),
            ],
            Code::PING | Code::PONG => &[(PING_CUSTODY, 0, 0)],
            Code::RELEASE => &[
                (RELEASE_ALTERNATIVE_ADDRESS, 1, 255),
                (RELEASE_HOLD_OFF, 0, 3),
            ],
            Code::ABORT => &[(ABORT_BAD_CSM_OPTION, 0, 2)],
            _ => return Err(SignalError::UnknownCode(code)),
        };
        let mut values: [Option<&[u8]>; 2] = [None, None];
        for o in &message.options {
            let slot = known.iter().position(|(n, _, _)| *n == o.number);
            let usable = slot.filter(|&i| {
                let (_, min, max) = known[i];
                let fits = (min..=max).contains(&o.value.len())
                    && (code != Code::RELEASE
                        || o.number != RELEASE_ALTERNATIVE_ADDRESS
                        || std::str::from_utf8(&o.value).is_ok());
                fits && values[i].is_none()
            });
            match usable {
                Some(i) => values[i] = Some(&o.value),
                None if o.number.is_critical() => {
                    return Err(SignalError::UnknownCriticalOption {
                        code,
                        option: o.number,
                    })
                }
                None => {} // elective: ignored
            }
        }
        let diagnostic = || String::from_utf8_lossy(&message.payload).into_owned();
        Ok(match code {
            Code::CSM => Signal::Csm(Csm {
                max_message_size: values[0].and_then(decode_uint),
                block_wise_transfer: values[1].is_some(),
            }),
            Code::PING => Signal::Ping(Ping {
                custody: values[0].is_some(),
            }),
            Code::PONG => Signal::Pong(Ping {
                custody: values[0].is_some(),
            }),
            Code::RELEASE => Signal::Release(Release {
                alternative_address: values[0].map(|v| String::from_utf8_lossy(v).into_owned()),
                hold_off: values[1]
                    .and_then(decode_uint)
                    .map(|s| Duration::from_secs(u64::from(s))),
                diagnostic: diagnostic(),
            }),
            _ => Signal::Abort(Abort {
                diagnostic: diagnostic(),
                bad_csm_option: values[0]
                    .and_then(decode_uint)
                    .and_then(|v| u16::try_from(v).ok()),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::frame;

    fn round_trip(signal: Signal) {
        let bytes = frame::to_bytes(&signal.to_message()).unwrap();
        let back = frame::decode(&bytes).unwrap();
        assert_eq!(Signal::parse(&back), Ok(signal));
    }

    #[test]
    fn every_signal_round_trips() {
        round_trip(Signal::Csm(Csm {
            max_message_size: Some(1_049_600),
            block_wise_transfer: true,
        }));
        round_trip(Signal::Csm(Csm::default()));
        round_trip(Signal::Ping(Ping { custody: true }));
        round_trip(Signal::Pong(Ping { custody: false }));
        round_trip(Signal::Release(Release {
            alternative_address: Some("coap+tcp://other.example/".into()),
            hold_off: Some(Duration::from_secs(30)),
            diagnostic: "maintenance".into(),
        }));
        round_trip(Signal::Release(Release::default()));
        round_trip(Signal::Abort(Abort {
            diagnostic: "bad CSM".into(),
            bad_csm_option: Some(9),
        }));
        round_trip(Signal::Abort(Abort::new("x")));
    }

    #[test]
    fn literal_csm() {
        let csm = Csm {
            max_message_size: Some(1152),
            block_wise_transfer: true,
        };
        let bytes = frame::to_bytes(&csm.to_message()).unwrap();
        assert_eq!(bytes, [0x40, 0xe1, 0x22, 0x04, 0x80, 0x20]);
    }

    #[test]
    fn option_numbers_are_per_code() {
        // Option 4 is Block-Wise-Transfer in a CSM, Hold-Off in a Release, unknown (and
        // elective, so ignored) in a Ping.
        let mut m = Message::new(MessageType::Con, Code::PING);
        m.options.push(OptionNumber(4), vec![1]);
        assert_eq!(Signal::parse(&m), Ok(Signal::Ping(Ping { custody: false })));
        let mut m = Message::new(MessageType::Con, Code::RELEASE);
        m.options.push(OptionNumber(4), vec![1]);
        match Signal::parse(&m) {
            Ok(Signal::Release(r)) => assert_eq!(r.hold_off, Some(Duration::from_secs(1))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_options() {
        let mut m = Csm::default().to_message();
        m.options.push(OptionNumber(6), vec![1, 2]);
        assert!(Signal::parse(&m).is_ok(), "elective: ignored");
        m.options.push(OptionNumber(9), Vec::new());
        assert_eq!(
            Signal::parse(&m),
            Err(SignalError::UnknownCriticalOption {
                code: Code::CSM,
                option: OptionNumber(9)
            })
        );
        let mut m = Message::new(MessageType::Con, Code::PONG);
        m.options.push(OptionNumber(1), Vec::new());
        assert!(matches!(
            Signal::parse(&m),
            Err(SignalError::UnknownCriticalOption { .. })
        ));
        // Values that do not fit an elective option are ignored: a 5-byte Max-Message-Size,
        // a non-empty Custody, a second Max-Message-Size.
        let mut m = Message::new(MessageType::Con, Code::CSM);
        m.options.push(CSM_MAX_MESSAGE_SIZE, vec![1; 5]);
        m.options.push(CSM_MAX_MESSAGE_SIZE, vec![4, 0]);
        m.options.push(CSM_MAX_MESSAGE_SIZE, vec![8, 0]);
        assert_eq!(
            Signal::parse(&m),
            Ok(Signal::Csm(Csm {
                max_message_size: Some(1024),
                block_wise_transfer: false
            }))
        );
    }

    #[test]
    fn unknown_codes() {
        let m = Message::new(MessageType::Con, Code(0xe6));
        assert_eq!(Signal::parse(&m), Err(SignalError::UnknownCode(Code(0xe6))));
        let m = Message::new(MessageType::Con, Code::GET);
        assert_eq!(Signal::parse(&m), Err(SignalError::NotSignaling(Code::GET)));
        let m = Message::new(MessageType::Con, Code(0xe0));
        assert!(matches!(
            Signal::parse(&m),
            Err(SignalError::UnknownCode(_))
        ));
    }

    #[test]
    fn long_hold_off_is_capped() {
        let r = Release {
            hold_off: Some(Duration::from_secs(1 << 30)),
            ..Release::default()
        };
        let m = r.to_message();
        assert_eq!(m.options.get_uint(RELEASE_HOLD_OFF), Some(0xff_ffff));
    }
}
