//! PEM text (RFC 7468) in and out.
//!
//! The reader is strict where laxness hides damage and lax where real files differ: text
//! between blocks is ignored (CA bundles carry comments), but a BEGIN without its END, an END
//! naming another label, headers (the legacy encrypted-key form) or bad base64 are errors that
//! say which line. A bundle cut short in the middle of its second certificate is therefore an
//! error, not one certificate.

use std::fmt;

use base64::Engine as _;
use x509_parser::prelude::FromDer as _;
use zeroize::Zeroizing;

use super::PkiError;

/// The PEM label of an X.509 certificate.
pub const CERTIFICATE_LABEL: &str = "CERTIFICATE";

/// One decoded PEM block. The contents are zeroized on drop because some blocks are keys.
pub(crate) struct PemBlock {
    /// The label between `-----BEGIN ` and `-----`.
    pub label: String,
    /// The decoded contents.
    pub der: Zeroizing<Vec<u8>>,
}

/// The DER encoding of one X.509 certificate, as read from a PEM bundle.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CertificateDer(Vec<u8>);

impl CertificateDer {
    /// The DER bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The DER bytes, owned.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The certificate as one PEM `CERTIFICATE` block.
    pub fn to_pem(&self) -> String {
        encode(CERTIFICATE_LABEL, &self.0)
    }
}

impl AsRef<[u8]> for CertificateDer {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for CertificateDer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertificateDer({} bytes)", self.0.len())
    }
}

/// Parses PEM text holding one or more certificates (a chain, or a bundle of CAs).
///
/// Every block must be labelled `CERTIFICATE` and hold one well-formed X.509 certificate; text
/// outside the blocks is ignored. Text with no block at all is an error, so a wrong file
/// given as a bundle is caught here rather than showing up later as an empty trust store.
pub fn parse_pem_bundle(text: &str) -> Result<Vec<CertificateDer>, PkiError> {
    let blocks = read_blocks(text)?;
    if blocks.is_empty() {
        return Err(PkiError::PemBlockCount {
            label: CERTIFICATE_LABEL,
            expected: "at least one",
            found: 0,
        });
    }
    blocks
        .into_iter()
        .enumerate()
        .map(|(index, block)| {
            if block.label != CERTIFICATE_LABEL {
                return Err(PkiError::WrongPemLabel {
                    expected: CERTIFICATE_LABEL,
                    found: block.label,
                });
            }
            check_certificate_der(index, &block.der)?;
            Ok(CertificateDer(block.der.to_vec()))
        })
        .collect()
}

/// Checks that `der` is exactly one X.509 certificate.
pub(crate) fn check_certificate_der(index: usize, der: &[u8]) -> Result<(), PkiError> {
    match x509_parser::certificate::X509Certificate::from_der(der) {
        Ok(([], _)) => Ok(()),
        Ok((rest, _)) => Err(PkiError::BadCertificate {
            index,
            reason: format!("{} bytes after the end of the certificate", rest.len()),
        }),
        Err(e) => Err(PkiError::BadCertificate {
            index,
            reason: e.to_string(),
        }),
    }
}

/// Reads exactly one PEM block whose label is one of `labels`; `expected` names them for the
/// error message.
pub(crate) fn read_single_block(
    text: &str,
    labels: &[&str],
    expected: &'static str,
) -> Result<PemBlock, PkiError> {
    let mut blocks = read_blocks(text)?;
    if blocks.len() != 1 {
        return Err(PkiError::PemBlockCount {
            label: expected,
            expected: "exactly one",
            found: blocks.len(),
        });
    }
    let block = blocks.remove(0);
    if !labels.contains(&block.label.as_str()) {
        return Err(PkiError::WrongPemLabel {
            expected,
            found: block.label,
        });
    }
    Ok(block)
}

/// Splits PEM text into its decoded blocks, in order.
pub(crate) fn read_blocks(text: &str) -> Result<Vec<PemBlock>, PkiError> {
    struct Open {
        label: String,
        first_line: usize,
        base64: Zeroizing<String>,
    }

    let mut blocks = Vec::new();
    let mut open: Option<Open> = None;
    for (index, raw_line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw_line.trim();
        match open.as_mut() {
            None => {
                if let Some(rest) = line.strip_prefix("-----BEGIN ") {
                    let label = boundary_label(rest, line_number, "BEGIN")?;
                    open = Some(Open {
                        label,
                        first_line: line_number,
                        base64: Zeroizing::new(String::new()),
                    });
                } else if line.starts_with("-----END") {
                    return Err(bad_pem(line_number, "an END line without a BEGIN line"));
                } else if line.starts_with("-----BEGIN") {
                    return Err(bad_pem(line_number, "a malformed BEGIN line"));
                }
                // Anything else outside a block is explanatory text (RFC 7468 §2).
            }
            Some(block) => {
                if let Some(rest) = line.strip_prefix("-----END ") {
                    let label = boundary_label(rest, line_number, "END")?;
                    if label != block.label {
                        return Err(PkiError::BadPem {
                            reason: format!(
                                "BEGIN {:?} at line {} is closed by END {:?} at line {line_number}",
                                block.label, block.first_line, label
                            ),
                        });
                    }
                    let der = base64::engine::general_purpose::STANDARD
                        .decode(block.base64.as_bytes())
                        .map_err(|e| PkiError::BadPem {
                            reason: format!(
                                "the {:?} block at line {} is not valid base64: {e}",
                                block.label, block.first_line
                            ),
                        })?;
                    let der = Zeroizing::new(der);
                    if der.is_empty() {
                        return Err(PkiError::BadPem {
                            reason: format!(
                                "the {:?} block at line {} is empty",
                                block.label, block.first_line
                            ),
                        });
                    }
                    let label = std::mem::take(&mut block.label);
                    blocks.push(PemBlock { label, der });
                    open = None;
                } else if line.starts_with("-----") {
                    return Err(PkiError::BadPem {
                        reason: format!(
                            "line {line_number} is a boundary inside the {:?} block begun at \
                             line {} (a missing END line?)",
                            block.label, block.first_line
                        ),
                    });
                } else if line.contains(':') {
                    return Err(bad_pem(
                        line_number,
                        "a PEM header, which is not supported (an encrypted key?)",
                    ));
                } else {
                    block
                        .base64
                        .extend(line.chars().filter(|c| !c.is_whitespace()));
                }
            }
        }
    }
    if let Some(block) = open {
        return Err(PkiError::BadPem {
            reason: format!(
                "the {:?} block begun at line {} has no END line (truncated?)",
                block.label, block.first_line
            ),
        });
    }
    Ok(blocks)
}

/// Encodes `der` as one PEM block with 64-column lines (RFC 7468 §2).
pub(crate) fn encode(label: &str, der: &[u8]) -> String {
    let base64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut text = String::with_capacity(base64.len() + base64.len() / 64 + 2 * label.len() + 40);
    text.push_str("-----BEGIN ");
    text.push_str(label);
    text.push_str("-----\n");
    // Base64 output is ASCII, so splitting it by bytes never splits a character.
    for line in base64.as_bytes().chunks(64) {
        text.extend(line.iter().map(|&b| char::from(b)));
        text.push('\n');
    }
    text.push_str("-----END ");
    text.push_str(label);
    text.push_str("-----\n");
    text
}

/// The label of a BEGIN or END line, given what follows `-----BEGIN ` / `-----END `.
fn boundary_label(rest: &str, line_number: usize, which: &str) -> Result<String, PkiError> {
    let label = rest.strip_suffix("-----").ok_or_else(|| PkiError::BadPem {
        reason: format!("the {which} line at line {line_number} does not end with \"-----\""),
    })?;
    // RFC 7468 §3: labels are printable ASCII without '-' at either end; real ones are
    // upper-case words.
    let well_formed = !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b' ' || b == b'-')
        && !label.starts_with(['-', ' '])
        && !label.ends_with(['-', ' ']);
    if !well_formed {
        return Err(PkiError::BadPem {
            reason: format!("the {which} line at line {line_number} has a malformed label"),
        });
    }
    Ok(label.to_owned())
}

fn bad_pem(line_number: usize, what: &str) -> PkiError {
    PkiError::BadPem {
        reason: format!("line {line_number} is {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_block_and_ignores_text_between_blocks() {
        let der = (0u8..=200).collect::<Vec<_>>();
        let text = format!(
            "# a comment\n{}subject=CN = x\n{}",
            encode("THING", &der),
            encode("OTHER", &[1, 2, 3])
        );
        let blocks = read_blocks(&text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "THING");
        assert_eq!(*blocks[0].der, der);
        assert_eq!(blocks[1].label, "OTHER");
        assert_eq!(*blocks[1].der, [1, 2, 3]);
    }

    #[test]
    fn accepts_crlf_line_endings() {
        let text = encode("THING", &[9; 100]).replace('\n', "\r\n");
        assert_eq!(*read_blocks(&text).unwrap()[0].der, [9; 100]);
    }

    #[test]
    fn a_truncated_block_is_an_error_not_a_shorter_bundle() {
        let one = encode("CERTIFICATE", &[1; 50]);
        let two = encode("CERTIFICATE", &[2; 50]);
        let truncated = format!("{one}{}", &two[..two.len() - 30]);
        let err = read_blocks(&truncated).err().unwrap();
        assert!(err.to_string().contains("no END line"), "{err}");
    }

    #[test]
    fn names_each_framing_problem() {
        let cases = [
            ("-----END X-----\n", "END line without a BEGIN"),
            (
                "-----BEGIN X-----\nAAAA\n-----END Y-----\n",
                "closed by END",
            ),
            (
                "-----BEGIN X----\nAAAA\n-----END X-----\n",
                "does not end with",
            ),
            (
                "-----BEGIN x-----\nAAAA\n-----END x-----\n",
                "malformed label",
            ),
            (
                "-----BEGIN X-----\nA!AA\n-----END X-----\n",
                "not valid base64",
            ),
            ("-----BEGIN X-----\n-----END X-----\n", "is empty"),
            (
                "-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END X-----\n",
                "PEM header",
            ),
            (
                "-----BEGIN X-----\nAAAA\n-----BEGIN X-----\nAAAA\n-----END X-----\n",
                "missing END",
            ),
        ];
        for (text, expected) in cases {
            let err = read_blocks(text).err().unwrap();
            assert!(err.to_string().contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn bundle_refuses_no_blocks_wrong_labels_and_non_certificates() {
        assert!(matches!(
            parse_pem_bundle("hello"),
            Err(PkiError::PemBlockCount { found: 0, .. })
        ));
        assert!(matches!(
            parse_pem_bundle(&encode("PRIVATE KEY", &[1, 2, 3])),
            Err(PkiError::WrongPemLabel { .. })
        ));
        assert!(matches!(
            parse_pem_bundle(&encode("CERTIFICATE", &[0x30, 0x03, 1, 2, 3])),
            Err(PkiError::BadCertificate { index: 0, .. })
        ));
    }
}
