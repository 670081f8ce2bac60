//! The certificates of zero-touch provisioning, on both sides.
//!
//! A device leaves the factory with a *manufacturer certificate* (clientAuth, CN = device
//! name) signed by its maker's CA, and with the provisioning service's CA. The service admits
//! it over mutual TLS when that certificate chains to the manufacturer CA of an enrollment
//! group ([`verify_chain`]). The device then generates a key ([`generate_key`]), sends a PKCS#10
//! CSR ([`create_csr`], RFC 2986) with CN `uuid:<device id>`, and the service returns an
//! *identity certificate* signed by its identity CA ([`IdentitySigner`]), clientAuth and
//! serverAuth, with the device id it decided. The device renews from two thirds of the
//! validity on ([`renewal_due`]).
//!
//! Everything here is a pure function of its arguments: times come in as `now`, never from
//! the clock, so tests are exact. Only [`write_pem_files`] and [`load_certified_key`] touch
//! the file system. Keys are ECDSA P-256 with SHA-256 throughout; others are refused.
//!
//! ```
//! # fn main() -> Result<(), tern_dps::pki::PkiError> {
//! use std::time::Duration;
//! use tern_dps::pki::*;
//! let now = time::OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
//! let year = Duration::from_secs(365 * 86_400);
//!
//! // The factory.
//! let maker_ca = create_ca("Acme Manufacturer CA", year * 10, now)?;
//! let factory = issue_manufacturer_certificate(&maker_ca, "acme-thermostat-0001", None, year, now)?;
//!
//! // The service admits the device on its factory certificate…
//! verify_chain(&factory.cert_pem, &maker_ca.cert_pem, now, true)?;
//!
//! // …the device asks for an identity…
//! let device_id = "5b0a9c1e-7d8f-4e2a-9b3c-1d2e3f4a5b6c";
//! let key = generate_key()?;
//! let csr = create_csr(&key, device_id)?;
//!
//! // …and the service issues it.
//! let identity_ca = create_ca("Tern Identity CA", year * 10, now)?;
//! let signer = IdentitySigner::new(&identity_ca)?;
//! let issued = signer.sign_csr(&csr, device_id, year, now, None)?;
//! verify_chain(&issued.cert_pem, &identity_ca.cert_pem, now, true)?;
//! assert_eq!(inspect(&issued.cert_pem)?.device_id.as_deref(), Some(device_id));
//! # Ok(()) }
//! ```

mod error;
mod files;
mod identity;
mod inspect;
mod issue;
mod key;
mod pem;
mod verify;

pub use error::PkiError;
pub use files::{
    load_certified_key, sync_parent, temporary_path, write_atomically, write_pem_files,
    PemFilePaths,
};
pub use identity::{
    check_device_id, create_csr, sign_identity_csr, IdentitySigner, IssuedIdentity, MAX_CSR_PEM_LEN,
};
pub use inspect::{
    inspect, inspect_der, renewal_due, renewal_time, CertificateInfo, DEVICE_ID_CN_PREFIX,
};
pub use issue::{
    create_ca, issue_manufacturer_certificate, issue_server_certificate, Serial,
    LOCAL_SERVER_NAMES, NOT_BEFORE_BACKDATE,
};
pub use key::{generate_key, CertifiedKey, PrivateKey};
pub use pem::{parse_pem_bundle, CertificateDer, CERTIFICATE_LABEL};
pub use verify::{verify_chain, TrustAnchors};
