//! The provisioning PKI end to end: chains, tampering, OpenSSL's own verdict on what we issue,
//! and hostile input.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine as _;
use proptest::prelude::*;
use tern_dps::pki::*;
use time::OffsetDateTime;

const DAY: Duration = Duration::from_secs(86_400);
const YEAR: Duration = Duration::from_secs(365 * 86_400);
const DEVICE: &str = "3f2b8e4a-1c5d-4a7b-9e0f-6d1c2b3a4f5e";
/// 2025-06-15T15:06:40Z, a fixed "now" for every test.
const NOW: i64 = 1_750_000_000;

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

fn now() -> OffsetDateTime {
    at(NOW)
}

/// PEM from DER, for tests that tamper with DER.
fn pem(label: &str, der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// DER from single-block PEM, for tests that tamper with DER.
fn der(pem: &str) -> Vec<u8> {
    let body: String = pem
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// One identity CA and signer shared by the tests that only need some CA.
fn shared_signer() -> &'static (CertifiedKey, IdentitySigner) {
    static SIGNER: OnceLock<(CertifiedKey, IdentitySigner)> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let ca = create_ca("Shared Identity CA", YEAR * 10, now()).unwrap();
        let signer = IdentitySigner::new(&ca).unwrap();
        (ca, signer)
    })
}

#[test]
fn manufacturer_certificate_chains_to_its_ca_and_not_to_another() {
    let maker = create_ca("Acme Manufacturer CA", YEAR * 10, now()).unwrap();
    let factory =
        issue_manufacturer_certificate(&maker, "acme-sensor-0001", None, YEAR, now()).unwrap();
    verify_chain(&factory.cert_pem, &maker.cert_pem, now(), true).unwrap();

    let info = inspect(&factory.cert_pem).unwrap();
    assert_eq!(info.subject_cn.as_deref(), Some("acme-sensor-0001"));
    assert_eq!(info.issuer_cn.as_deref(), Some("Acme Manufacturer CA"));
    assert_eq!(info.device_id, None);
    assert!(!info.is_ca);
    assert!(inspect(&maker.cert_pem).unwrap().is_ca);

    // Another CA, even one with the same name, is not the issuer.
    for name in ["Other Manufacturer CA", "Acme Manufacturer CA"] {
        let other = create_ca(name, YEAR * 10, now()).unwrap();
        match verify_chain(&factory.cert_pem, &other.cert_pem, now(), true) {
            Err(PkiError::UntrustedIssuer { subject, issuer }) => {
                assert_eq!(subject, "acme-sensor-0001");
                assert_eq!(issuer, "Acme Manufacturer CA");
            }
            other => panic!("{name}: {other:?}"),
        }
        // A bundle holding both verifies.
        let bundle = format!("{}{}", other.cert_pem, maker.cert_pem);
        verify_chain(&factory.cert_pem, &bundle, now(), true).unwrap();
    }
}

#[test]
fn identity_from_a_csr_chains_to_the_service_ca() {
    let service = create_ca("Tern Identity CA", YEAR * 10, now()).unwrap();
    let key = generate_key().unwrap();
    let csr = create_csr(&key, DEVICE).unwrap();
    let issued = sign_identity_csr(&csr, DEVICE, &service, YEAR, now(), None).unwrap();
    verify_chain(&issued.cert_pem, &service.cert_pem, now(), true).unwrap();

    let info = inspect(&issued.cert_pem).unwrap();
    assert_eq!(info.device_id.as_deref(), Some(DEVICE));
    assert_eq!(info.serial_hex, issued.serial_hex);
    assert_eq!(info.serial_hex.len(), 32);
    assert_eq!(info.not_after, now() + YEAR);
    assert_eq!(info.not_before, now() - NOT_BEFORE_BACKDATE);

    // The device pairs the certificate with its key.
    let identity = CertifiedKey::from_pem(issued.cert_pem.clone(), key.to_pem()).unwrap();
    assert_eq!(identity.cert_pem, issued.cert_pem);
    // And the identity CA does not vouch for factory certificates, nor the reverse.
    let maker = create_ca("Acme Manufacturer CA", YEAR * 10, now()).unwrap();
    assert!(matches!(
        verify_chain(&issued.cert_pem, &maker.cert_pem, now(), true),
        Err(PkiError::UntrustedIssuer { .. })
    ));
}

#[test]
fn validity_is_checked_unless_the_caller_skips_it() {
    let (ca, signer) = shared_signer();
    let csr = create_csr(&generate_key().unwrap(), DEVICE).unwrap();
    let issued = signer.sign_csr(&csr, DEVICE, DAY, now(), None).unwrap();

    let expired_at = now() + DAY * 2;
    match verify_chain(&issued.cert_pem, &ca.cert_pem, expired_at, true) {
        Err(PkiError::Expired { subject, not_after }) => {
            assert_eq!(subject, format!("uuid:{DEVICE}"));
            assert_eq!(not_after, issued.not_after);
        }
        other => panic!("{other:?}"),
    }
    verify_chain(&issued.cert_pem, &ca.cert_pem, expired_at, false).unwrap();

    let too_early = now() - DAY;
    assert!(matches!(
        verify_chain(&issued.cert_pem, &ca.cert_pem, too_early, true),
        Err(PkiError::NotYetValid { .. })
    ));
    verify_chain(&issued.cert_pem, &ca.cert_pem, too_early, false).unwrap();

    // The ends, to the second. RFC 5280 makes both inclusive; OpenSSL treats the notAfter
    // second itself as expired, and this pins that so a change in it is noticed.
    let one = time::Duration::seconds(1);
    verify_chain(&issued.cert_pem, &ca.cert_pem, issued.not_before, true).unwrap();
    verify_chain(&issued.cert_pem, &ca.cert_pem, issued.not_after - one, true).unwrap();
    assert!(matches!(
        verify_chain(&issued.cert_pem, &ca.cert_pem, issued.not_after, true),
        Err(PkiError::Expired { .. })
    ));
    assert!(matches!(
        verify_chain(
            &issued.cert_pem,
            &ca.cert_pem,
            issued.not_before - one,
            true
        ),
        Err(PkiError::NotYetValid { .. })
    ));
}

#[test]
fn an_expired_ca_fails_the_chain_too() {
    let ca = create_ca("Brief CA", DAY, now()).unwrap();
    let factory = issue_manufacturer_certificate(&ca, "d", None, YEAR, now()).unwrap();
    // Cut to the CA's life, so both expire together.
    assert_eq!(
        inspect(&factory.cert_pem).unwrap().not_after,
        inspect(&ca.cert_pem).unwrap().not_after
    );
    assert!(matches!(
        verify_chain(&factory.cert_pem, &ca.cert_pem, now() + DAY * 2, true),
        Err(PkiError::Expired { .. })
    ));
}

#[test]
fn server_certificates_name_their_hosts() {
    let hub_ca = create_ca("Hub CA", YEAR, now()).unwrap();
    let server = issue_server_certificate(&hub_ca, &LOCAL_SERVER_NAMES, DAY, now()).unwrap();
    verify_chain(&server.cert_pem, &hub_ca.cert_pem, now(), true).unwrap();
    let der = parse_pem_bundle(&server.cert_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der[0].as_bytes()).unwrap();
    let names = &cert
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names;
    use x509_parser::extensions::GeneralName;
    assert!(
        matches!(
            names[..],
            [
                GeneralName::DNSName("localhost"),
                GeneralName::IPAddress([127, 0, 0, 1]),
            ]
        ),
        "{names:?}"
    );
    assert!(
        cert.extended_key_usage()
            .unwrap()
            .unwrap()
            .value
            .server_auth
    );
    assert!(matches!(
        issue_server_certificate(&hub_ca, &[], DAY, now()),
        Err(PkiError::InvalidName { .. })
    ));
}

#[test]
fn a_bundle_entry_that_is_not_a_ca_is_an_error() {
    let maker = create_ca("Acme Manufacturer CA", YEAR, now()).unwrap();
    let factory = issue_manufacturer_certificate(&maker, "dev", None, YEAR, now()).unwrap();
    let bundle = format!("{}{}", maker.cert_pem, factory.cert_pem);
    assert!(matches!(
        verify_chain(&factory.cert_pem, &bundle, now(), true),
        Err(PkiError::NotCa { .. })
    ));
}

#[test]
fn a_certificate_signed_by_a_non_ca_does_not_verify() {
    // Forge a leaf under the factory certificate with rcgen directly (this crate refuses to).
    let maker = create_ca("Acme Manufacturer CA", YEAR, now()).unwrap();
    let factory = issue_manufacturer_certificate(&maker, "dev", None, YEAR, now()).unwrap();
    let factory_key = rcgen::KeyPair::from_pem(&factory.key_pem).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&factory.cert_pem, factory_key).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["victim".to_owned()]).unwrap();
    params.not_before = now() - time::Duration::hours(1);
    params.not_after = now() + time::Duration::days(1);
    params.use_authority_key_identifier_extension = true;
    let forged_key = rcgen::KeyPair::generate().unwrap();
    let forged = params.signed_by(&forged_key, &issuer).unwrap().pem();

    let chain = format!("{forged}{}", factory.cert_pem);
    let result = verify_chain(&chain, &maker.cert_pem, now(), true);
    match result {
        Err(PkiError::IssuerNotCa { subject }) => assert_eq!(subject, "dev"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_certificate_with_a_broken_signature_does_not_verify() {
    let maker = create_ca("Acme Manufacturer CA", YEAR, now()).unwrap();
    let factory = issue_manufacturer_certificate(&maker, "dev", None, YEAR, now()).unwrap();
    let mut bytes = der(&factory.cert_pem);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let result = verify_chain(&pem("CERTIFICATE", &bytes), &maker.cert_pem, now(), true);
    assert!(
        matches!(result, Err(PkiError::CertificateSignature { .. })),
        "{result:?}"
    );
}

#[test]
fn a_tampered_csr_is_refused() {
    let (ca, signer) = shared_signer();
    let csr = create_csr(&generate_key().unwrap(), DEVICE).unwrap();
    let original = der(&csr);

    // A flipped bit in the signature itself.
    let mut bytes = original.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let result = signer.sign_csr(
        &pem("CERTIFICATE REQUEST", &bytes),
        DEVICE,
        DAY,
        now(),
        None,
    );
    assert!(
        matches!(
            result,
            Err(PkiError::CsrSignature) | Err(PkiError::BadCsr { .. })
        ),
        "{result:?}"
    );

    // A changed subject: the signature no longer covers it, and that is caught before the
    // name is looked at.
    let mut bytes = original.clone();
    let at = bytes
        .windows(5)
        .position(|window| window == b"uuid:")
        .unwrap();
    bytes[at + 5] ^= 0x01;
    let result = signer.sign_csr(
        &pem("CERTIFICATE REQUEST", &bytes),
        DEVICE,
        DAY,
        now(),
        None,
    );
    assert!(matches!(result, Err(PkiError::CsrSignature)), "{result:?}");

    // The untouched CSR still goes through, with the one-shot function too.
    sign_identity_csr(&csr, DEVICE, ca, DAY, now(), None).unwrap();
}

#[test]
fn a_csr_with_the_wrong_name_or_key_type_is_refused() {
    let (_, signer) = shared_signer();
    let csr = create_csr(
        &generate_key().unwrap(),
        "f00dface-0000-4000-8000-000000000000",
    )
    .unwrap();
    match signer.sign_csr(&csr, DEVICE, DAY, now(), None) {
        Err(PkiError::DeviceIdMismatch { expected, found }) => {
            assert_eq!(expected, format!("uuid:{DEVICE}"));
            assert_eq!(found, "uuid:f00dface-0000-4000-8000-000000000000");
        }
        other => panic!("{other:?}"),
    }

    // P-384, signed properly.
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("uuid:{DEVICE}"));
    let p384_csr = params.serialize_request(&p384).unwrap().pem().unwrap();
    assert!(matches!(
        signer.sign_csr(&p384_csr, DEVICE, DAY, now(), None),
        Err(PkiError::WrongKeyType { .. })
    ));

    // RSA, from OpenSSL.
    let rsa = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
    let mut request = openssl::x509::X509ReqBuilder::new().unwrap();
    let mut name = openssl::x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", &format!("uuid:{DEVICE}"))
        .unwrap();
    request.set_subject_name(&name.build()).unwrap();
    request.set_pubkey(&rsa).unwrap();
    request
        .sign(&rsa, openssl::hash::MessageDigest::sha256())
        .unwrap();
    let rsa_csr = String::from_utf8(request.build().to_pem().unwrap()).unwrap();
    match signer.sign_csr(&rsa_csr, DEVICE, DAY, now(), None) {
        Err(PkiError::WrongKeyType { found, .. }) => assert_eq!(found, "an RSA key"),
        other => panic!("{other:?}"),
    }

    // A certificate where a CSR belongs, and two CSRs at once.
    assert!(matches!(
        signer.sign_csr(&shared_signer().0.cert_pem, DEVICE, DAY, now(), None),
        Err(PkiError::WrongPemLabel { .. })
    ));
    assert!(matches!(
        signer.sign_csr(&format!("{csr}{csr}"), DEVICE, DAY, now(), None),
        Err(PkiError::PemBlockCount { found: 2, .. })
    ));
}

#[test]
fn renewal_is_due_at_two_thirds_of_an_issued_certificate() {
    let (_, signer) = shared_signer();
    let csr = create_csr(&generate_key().unwrap(), DEVICE).unwrap();
    let issued = signer.sign_csr(&csr, DEVICE, DAY * 3, now(), None).unwrap();
    let info = inspect(&issued.cert_pem).unwrap();
    // 3 days plus the backdating hour: 73 h, two thirds of which is 48 h 40 min.
    let due = info.not_before + time::Duration::minutes(48 * 60 + 40);
    assert_eq!(renewal_time(&info), due);
    assert!(!renewal_due(&info, due - time::Duration::seconds(1)));
    assert!(renewal_due(&info, due));
    assert!(info.renewal_due(info.not_after));
    assert!(!info.renewal_due(now()));
}

#[test]
fn files_round_trip_a_ca_that_still_signs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = create_ca("Disk CA", YEAR, now()).unwrap();
    let paths = write_pem_files(dir.path(), "identity-ca", &ca).unwrap();
    let loaded = load_certified_key(&paths.cert, &paths.key).unwrap();
    let csr = create_csr(&generate_key().unwrap(), DEVICE).unwrap();
    let issued = sign_identity_csr(&csr, DEVICE, &loaded, DAY, now(), None).unwrap();
    verify_chain(&issued.cert_pem, &ca.cert_pem, now(), true).unwrap();
}

// --- OpenSSL's own verdict ------------------------------------------------------------------

/// Runs the `openssl` command line in `dir`, returning (success, stdout + stderr).
fn openssl(dir: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool must be installed for the interop tests");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

#[test]
fn openssl_verifies_what_we_issue() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let attime = NOW.to_string();

    let maker = create_ca("Acme Manufacturer CA", YEAR * 10, now()).unwrap();
    let factory = issue_manufacturer_certificate(&maker, "acme-1", None, YEAR, now()).unwrap();
    let service = create_ca("Tern Identity CA", YEAR * 10, now()).unwrap();
    let key = generate_key().unwrap();
    let csr = create_csr(&key, DEVICE).unwrap();
    let identity = sign_identity_csr(&csr, DEVICE, &service, YEAR, now(), None).unwrap();
    let hub = create_ca("Hub CA", YEAR, now()).unwrap();
    let server = issue_server_certificate(&hub, &LOCAL_SERVER_NAMES, DAY, now()).unwrap();

    write(dir, "maker.pem", &maker.cert_pem);
    write(dir, "factory.pem", &factory.cert_pem);
    write(dir, "service.pem", &service.cert_pem);
    write(dir, "identity.pem", &identity.cert_pem);
    write(dir, "csr.pem", &csr);
    write(dir, "hub.pem", &hub.cert_pem);
    write(dir, "server.pem", &server.cert_pem);

    for (ca, leaf, purpose) in [
        ("maker.pem", "factory.pem", "sslclient"),
        ("service.pem", "identity.pem", "sslclient"),
        ("service.pem", "identity.pem", "sslserver"),
        ("hub.pem", "server.pem", "sslserver"),
    ] {
        let (ok, text) = openssl(
            dir,
            &[
                "verify", "-attime", &attime, "-purpose", purpose, "-CAfile", ca, leaf,
            ],
        );
        assert!(ok, "openssl verify {ca} {leaf} ({purpose}): {text}");
    }
    // A factory certificate is not a server's; a wrong CA is refused; so is the future.
    let refused = [
        vec![
            "verify",
            "-attime",
            &attime,
            "-purpose",
            "sslserver",
            "-CAfile",
            "maker.pem",
            "factory.pem",
        ],
        vec![
            "verify",
            "-attime",
            &attime,
            "-CAfile",
            "service.pem",
            "factory.pem",
        ],
        vec![
            "verify",
            "-attime",
            "4102444800",
            "-CAfile",
            "maker.pem",
            "factory.pem",
        ],
    ];
    for args in refused {
        let (ok, text) = openssl(dir, &args);
        assert!(!ok, "openssl accepted {args:?}: {text}");
    }

    let (ok, text) = openssl(dir, &["req", "-verify", "-noout", "-in", "csr.pem"]);
    assert!(ok, "openssl req -verify: {text}");
    let (ok, text) = openssl(dir, &["req", "-noout", "-subject", "-in", "csr.pem"]);
    assert!(ok, "{text}");
    assert!(
        text.replace(' ', "").contains(&format!("CN=uuid:{DEVICE}")),
        "{text}"
    );

    // OpenSSL agrees on fingerprint and serial.
    let info = inspect(&identity.cert_pem).unwrap();
    let (ok, text) = openssl(
        dir,
        &[
            "x509",
            "-noout",
            "-fingerprint",
            "-sha256",
            "-serial",
            "-in",
            "identity.pem",
        ],
    );
    assert!(ok, "{text}");
    let flat = text.to_ascii_lowercase().replace(':', "");
    assert!(flat.contains(&info.sha256_fingerprint_hex), "{text}");
    assert!(
        flat.contains(&format!("serial={}", info.serial_hex)),
        "{text}"
    );
}

#[test]
fn we_accept_what_openssl_makes() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // A SEC1 key and a CSR from the command line, as factory tooling might make them.
    let (ok, text) = openssl(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "device-key.pem",
        ],
    );
    assert!(ok, "{text}");
    let subject = format!("/CN=uuid:{DEVICE}");
    let (ok, text) = openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            "device-key.pem",
            "-subj",
            &subject,
            "-out",
            "csr.pem",
        ],
    );
    assert!(ok, "{text}");
    let csr = std::fs::read_to_string(dir.join("csr.pem")).unwrap();
    let key_pem = std::fs::read_to_string(dir.join("device-key.pem")).unwrap();
    let key = PrivateKey::from_pem(&key_pem).unwrap();

    let (ca, signer) = shared_signer();
    let issued = signer.sign_csr(&csr, DEVICE, DAY, now(), None).unwrap();
    verify_chain(&issued.cert_pem, &ca.cert_pem, now(), true).unwrap();
    CertifiedKey::from_pem(issued.cert_pem, key.to_pem()).unwrap();
}

// --- hostile input --------------------------------------------------------------------------

/// A CSR of the right shape to mutate.
fn sample_csr_der() -> &'static [u8] {
    static CSR: OnceLock<Vec<u8>> = OnceLock::new();
    CSR.get_or_init(|| der(&create_csr(&generate_key().unwrap(), DEVICE).unwrap()))
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Overwrite { at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
    ]
}

fn apply(der: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = der.to_vec();
    for mutation in mutations {
        let len = bytes.len().max(1);
        match mutation {
            Mutation::Flip { at, mask } => {
                if let Some(byte) = bytes.get_mut(at % len) {
                    *byte ^= mask;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Insert { at, byte } => bytes.insert((at % len).min(bytes.len()), *byte),
            Mutation::Overwrite { at, bytes: new } => {
                for (offset, byte) in new.iter().enumerate() {
                    if let Some(slot) = bytes.get_mut((at % len) + offset) {
                        *slot = *byte;
                    }
                }
            }
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Beside this file, as tests/pki.proptest-regressions.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let (ca, signer) = shared_signer();
        let _ = parse_pem_bundle(&text);
        let _ = inspect(&text);
        let _ = inspect_der(&bytes);
        let _ = PrivateKey::from_pem(&text);
        let _ = verify_chain(&text, &ca.cert_pem, now(), true);
        let _ = verify_chain(&ca.cert_pem, &text, now(), true);
        prop_assert!(signer.sign_csr(&text, DEVICE, DAY, now(), None).is_err());
    }

    #[test]
    fn arbitrary_strings_never_panic(text in "\\PC{0,600}", id in "\\PC{0,80}") {
        let (ca, signer) = shared_signer();
        let _ = parse_pem_bundle(&text);
        let _ = inspect(&text);
        let _ = signer.sign_csr(&text, &id, DAY, now(), None);
        let _ = sign_identity_csr(&text, DEVICE, ca, DAY, now(), None);
        let _ = check_device_id(&id);
    }

    #[test]
    fn well_framed_garbage_never_panics(
        label in prop_oneof![
            Just("CERTIFICATE"), Just("CERTIFICATE REQUEST"), Just("PRIVATE KEY"),
            Just("EC PRIVATE KEY"), Just("X509 CRL"),
        ],
        bytes in proptest::collection::vec(any::<u8>(), 1..1024),
    ) {
        let text = pem(label, &bytes);
        let (ca, signer) = shared_signer();
        let _ = parse_pem_bundle(&text);
        let _ = inspect(&text);
        let _ = PrivateKey::from_pem(&text);
        let _ = verify_chain(&text, &ca.cert_pem, now(), false);
        prop_assert!(signer.sign_csr(&text, DEVICE, DAY, now(), None).is_err());
    }

    /// Fuzz-style: mutate a real CSR's DER. Whatever survives must still be a CSR for this
    /// device, signed by its key: a mutation can only change what the signature does not cover.
    #[test]
    fn mutated_csrs_are_refused_or_still_name_the_device(
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let bytes = apply(sample_csr_der(), &mutations);
        let (ca, signer) = shared_signer();
        if let Ok(issued) = signer.sign_csr(&pem("CERTIFICATE REQUEST", &bytes), DEVICE, DAY, now(), None) {
            let info = inspect(&issued.cert_pem).unwrap();
            prop_assert_eq!(info.device_id.as_deref(), Some(DEVICE));
            verify_chain(&issued.cert_pem, &ca.cert_pem, now(), true).unwrap();
        }
    }

    /// Mutate the PEM text rather than the DER, to reach the PEM reader's corners.
    #[test]
    fn mutated_csr_text_never_panics(
        at in any::<usize>(),
        cut in any::<usize>(),
        insert in "\\PC{0,12}",
    ) {
        let text = pem("CERTIFICATE REQUEST", sample_csr_der());
        let mut chars: Vec<char> = text.chars().collect();
        let len = chars.len();
        chars.truncate(len - cut % (len / 4));
        let at = at % chars.len();
        chars.splice(at..at, insert.chars());
        let text: String = chars.into_iter().collect();
        let (_, signer) = shared_signer();
        let _ = signer.sign_csr(&text, DEVICE, DAY, now(), None);
        let _ = parse_pem_bundle(&text);
    }
}

// --- cost -----------------------------------------------------------------------------------

/// Prints what signing an identity costs (run with `--release -- --nocapture`). Asserts
/// nothing about time: machines differ.
#[test]
fn signing_cost() {
    const CSRS: usize = 200;
    let service = create_ca("Cost CA", YEAR, now()).unwrap();
    let csrs: Vec<String> = (0..CSRS)
        .map(|_| create_csr(&generate_key().unwrap(), DEVICE).unwrap())
        .collect();

    let signer = IdentitySigner::new(&service).unwrap();
    let started = Instant::now();
    for csr in &csrs {
        signer.sign_csr(csr, DEVICE, YEAR, now(), None).unwrap();
    }
    let with_signer = started.elapsed() / CSRS as u32;

    let started = Instant::now();
    for csr in &csrs {
        sign_identity_csr(csr, DEVICE, &service, YEAR, now(), None).unwrap();
    }
    let one_shot = started.elapsed() / CSRS as u32;

    let issued = signer
        .sign_csr(&csrs[0], DEVICE, YEAR, now(), None)
        .unwrap();
    let started = Instant::now();
    for _ in 0..CSRS {
        verify_chain(&issued.cert_pem, &service.cert_pem, now(), true).unwrap();
    }
    let verify = started.elapsed() / CSRS as u32;

    let started = Instant::now();
    for _ in 0..CSRS {
        create_csr(&generate_key().unwrap(), DEVICE).unwrap();
    }
    let device_side = started.elapsed() / CSRS as u32;

    println!(
        "per identity, one thread ({} build): IdentitySigner::sign_csr {with_signer:?} \
         (= {:.0}/s), sign_identity_csr {one_shot:?}, verify_chain {verify:?}, \
         generate_key + create_csr {device_side:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        1.0 / with_signer.as_secs_f64(),
    );
}

#[test]
fn trust_anchors_are_valid_where_every_anchor_is() {
    let early = create_ca("Early CA", DAY * 10, at(NOW)).unwrap();
    let late = create_ca("Late CA", DAY * 10, at(NOW + 86_400 * 5)).unwrap();
    let one = TrustAnchors::from_pem(&early.cert_pem).unwrap();
    let info = inspect(&early.cert_pem).unwrap();
    assert_eq!(one.validity(), (info.not_before, info.not_after));
    let both = TrustAnchors::from_pem(&format!("{}{}", early.cert_pem, late.cert_pem)).unwrap();
    let (from, until) = both.validity();
    assert_eq!(from, inspect(&late.cert_pem).unwrap().not_before);
    assert_eq!(until, info.not_after);
    // Periods that do not overlap leave an empty one.
    let later = create_ca("Later CA", DAY, at(NOW + 86_400 * 30)).unwrap();
    let apart = TrustAnchors::from_pem(&format!("{}{}", early.cert_pem, later.cert_pem)).unwrap();
    let (from, until) = apart.validity();
    assert!(from > until);
}
