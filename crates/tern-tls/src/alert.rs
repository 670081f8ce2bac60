//! TLS/DTLS alerts received from the peer (RFC 5246 §7.2, RFC 8446 §6), as OpenSSL reports
//! them: a received alert shows on the error stack as an SSL-library reason of 1000 plus the
//! alert's description (`SSL_AD_REASON_OFFSET`), and close_notify as a clean zero return.

use std::fmt;

/// OpenSSL's offset between a received alert's description and the reason code it reports.
const REASON_OFFSET: i32 = 1000;

/// OpenSSL's library code for libssl errors (`ERR_LIB_SSL`).
const LIB_SSL: i32 = 20;

/// An alert the peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Alert {
    /// The AlertDescription byte.
    pub description: u8,
}

impl Alert {
    /// close_notify: the peer closed the channel cleanly.
    pub const CLOSE_NOTIFY: Alert = Alert { description: 0 };

    /// Whether the alert ends the channel with an error (every alert but close_notify and
    /// user_canceled does in DTLS 1.2 as OpenSSL runs it).
    pub fn is_fatal(&self) -> bool {
        !matches!(self.description, 0 | 90)
    }

    /// The registered name, or `alert_N` for an unregistered description.
    pub fn name(&self) -> String {
        let known = match self.description {
            0 => "close_notify",
            10 => "unexpected_message",
            20 => "bad_record_mac",
            21 => "decryption_failed",
            22 => "record_overflow",
            30 => "decompression_failure",
            40 => "handshake_failure",
            42 => "bad_certificate",
            43 => "unsupported_certificate",
            44 => "certificate_revoked",
            45 => "certificate_expired",
            46 => "certificate_unknown",
            47 => "illegal_parameter",
            48 => "unknown_ca",
            49 => "access_denied",
            50 => "decode_error",
            51 => "decrypt_error",
            60 => "export_restriction",
            70 => "protocol_version",
            71 => "insufficient_security",
            80 => "internal_error",
            86 => "inappropriate_fallback",
            90 => "user_canceled",
            100 => "no_renegotiation",
            109 => "missing_extension",
            110 => "unsupported_extension",
            112 => "unrecognized_name",
            113 => "bad_certificate_status_response",
            115 => "unknown_psk_identity",
            116 => "certificate_required",
            120 => "no_application_protocol",
            other => return format!("alert_{other}"),
        };
        known.to_string()
    }

    /// The alert received from the peer that an OpenSSL error stack reports, if any.
    pub fn from_error_stack(stack: &openssl::error::ErrorStack) -> Option<Alert> {
        stack.errors().iter().find_map(|e| {
            let reason = e.reason_code() - REASON_OFFSET;
            if e.library_code() != LIB_SSL || !(0..=255).contains(&reason) {
                return None;
            }
            u8::try_from(reason)
                .ok()
                .map(|description| Alert { description })
        })
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.description)
    }
}

#[cfg(test)]
mod tests {
    use super::Alert;

    #[test]
    fn names_and_severity() {
        assert_eq!(Alert::CLOSE_NOTIFY.name(), "close_notify");
        assert!(!Alert::CLOSE_NOTIFY.is_fatal());
        let unknown_identity = Alert { description: 115 };
        assert_eq!(unknown_identity.to_string(), "unknown_psk_identity (115)");
        assert!(unknown_identity.is_fatal());
        assert_eq!(Alert { description: 201 }.name(), "alert_201");
    }

    #[test]
    fn an_empty_error_stack_holds_no_alert() {
        let stack = openssl::error::ErrorStack::get();
        assert_eq!(Alert::from_error_stack(&stack), None);
    }
}
