//! The OpenSSL context set-up DTLS and TLS share: PSK callbacks (RFC 4279) and the identity
//! hint, certificates, keys and trust anchors, peer verification with the allow-* rules and the
//! validation callback (RFC 5280), certificate choice by SNI (RFC 6066 §3), cipher and group
//! lists, the server's session policy, and reading back who the peer proved to be.
//!
//! `dtls` and `tls` each pick their method and versions, then apply these pieces; everything
//! here is checked when a context is built, before any traffic.

use std::sync::Arc;

use openssl::ssl::{
    NameType, SniError, SslContext, SslContextBuilder, SslOptions, SslRef, SslSessionCacheMode,
    SslVerifyMode,
};

use crate::credentials::{Psk, PskStore};
use crate::error::TlsError;
use crate::ffi;
use crate::layer::PeerIdentity;
use crate::pki::{CertificateCheck, PkiError, PkiSettings};

/// Whether a context makes clients or servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connects.
    Client,
    /// Accepts.
    Server,
}

/// Sets the cipher list (TLS 1.2 and DTLS 1.2), the TLS 1.3 suites and the key-exchange groups
/// (`None` leaves OpenSSL's defaults).
pub(crate) fn apply_algorithms(
    b: &mut SslContextBuilder,
    ciphers: &str,
    ciphersuites: Option<&str>,
    groups: Option<&str>,
) -> Result<(), TlsError> {
    b.set_cipher_list(ciphers)?;
    if let Some(suites) = ciphersuites {
        b.set_ciphersuites(suites)?;
    }
    if let Some(groups) = groups {
        b.set_groups_list(groups)?;
    }
    Ok(())
}

/// A server keeps no session cache, and issues session tickets only when asked.
///
/// A server-side cache would keep every session's SSL_SESSION (about 1 KB) for up to 20,480
/// sessions after the channel is gone, and Tern's clients do not resume. Clients that do can
/// resume statelessly with a session ticket where `session_tickets` turns them on.
pub(crate) fn apply_session_policy(b: &mut SslContextBuilder, role: Role, session_tickets: bool) {
    if role != Role::Server {
        return;
    }
    b.set_session_cache_mode(SslSessionCacheMode::OFF);
    if !session_tickets {
        b.set_options(SslOptions::NO_TICKET);
    }
}

/// A client answers the server with this PSK, whatever identity hint it sent.
pub(crate) fn apply_psk_client(b: &mut SslContextBuilder, psk: Psk) {
    b.set_psk_client_callback(move |_ssl, _hint, identity_out, key_out| {
        let (identity, key) = (psk.identity(), psk.key());
        // Written as a C string; both fit by construction (128 + NUL, 64).
        if identity.len() >= identity_out.len() || key.len() > key_out.len() {
            return Ok(0);
        }
        identity_out[..identity.len()].copy_from_slice(identity);
        identity_out[identity.len()] = 0;
        key_out[..key.len()].copy_from_slice(key);
        Ok(key.len())
    });
}

/// A server looks the client's identity up in `store`, and sends `hint` (none when empty).
/// An unknown identity fails the handshake (OpenSSL sends unknown_psk_identity).
pub(crate) fn apply_psk_server(
    b: &mut SslContextBuilder,
    store: Arc<dyn PskStore>,
    hint: Option<&[u8]>,
) -> Result<(), TlsError> {
    b.set_psk_server_callback(move |_ssl, identity, key_out| {
        let Some(identity) = identity else {
            return Ok(0);
        };
        match store.key_for(identity) {
            Some(key) if key.len() <= key_out.len() => {
                key_out[..key.len()].copy_from_slice(&key);
                Ok(key.len())
            }
            _ => {
                tracing::debug!(identity = %String::from_utf8_lossy(identity), "unknown PSK identity");
                Ok(0)
            }
        }
    });
    ffi::set_identity_hint(b, hint)?;
    Ok(())
}

/// Loads and checks certificates, the key and trust anchors; sets how the peer is verified
/// (chain depth, verify mode, the allow-* excuses and the validation callback).
pub(crate) fn apply_pki(
    b: &mut SslContextBuilder,
    role: Role,
    pki: &PkiSettings,
) -> Result<(), TlsError> {
    match (&pki.certificate, &pki.private_key) {
        (Some(cert), Some(key)) => {
            let chain = crate::pki::load_certificates(cert, "certificate")?;
            let key = crate::pki::load_key(key, "private key")?;
            let mut chain = chain.into_iter();
            if let Some(leaf) = chain.next() {
                let matches = leaf.public_key().is_ok_and(|public| public.public_eq(&key));
                if !matches {
                    return Err(PkiError::KeyMismatch.into());
                }
                b.set_certificate(&leaf)?;
            }
            for extra in chain {
                b.add_extra_chain_cert(extra)?;
            }
            b.set_private_key(&key)?;
            b.check_private_key().map_err(|_| PkiError::KeyMismatch)?;
        }
        (None, None) if role == Role::Client => {}
        (None, None) => return Err(TlsError::NoCredentials("server with PKI (a certificate)")),
        _ => return Err(PkiError::Incomplete.into()),
    }
    if let Some(ca) = &pki.ca {
        for cert in crate::pki::load_certificates(ca, "CA certificate")? {
            b.cert_store_mut().add_cert(cert)?;
        }
    }
    b.set_verify_depth(pki.chain_depth);
    let mode = match (role, pki.verify_peer, pki.require_peer_certificate) {
        (_, false, _) => SslVerifyMode::NONE,
        (Role::Server, true, true) => SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        (_, true, _) => SslVerifyMode::PEER,
    };
    let settings = pki.clone();
    b.set_verify_callback(mode, move |preverified, ctx| {
        let mut ok = preverified || crate::pki::excusable(ctx.error(), &settings);
        if let (Some(validate), Some(cert)) = (&settings.validate, ctx.current_cert()) {
            let (common_name, sans) = crate::pki::names(cert);
            let check = CertificateCheck {
                common_name,
                sans,
                der: cert.to_der().unwrap_or_default(),
                depth: ctx.error_depth(),
                validated: ok,
            };
            ok = validate(&check);
        }
        ok
    });
    Ok(())
}

/// Presents another certificate when the client's SNI names one of `pki.by_server_name`.
///
/// `build` makes a complete server context (same protocol, same trust anchors) for the
/// certificate settings it is given: OpenSSL's switch to it changes the certificate and key,
/// and verifies the client's chain against its store, while the callbacks stay those of the
/// SSL object.
pub(crate) fn apply_sni_certificates(
    b: &mut SslContextBuilder,
    pki: &PkiSettings,
    build: impl Fn(PkiSettings) -> Result<SslContext, TlsError>,
) -> Result<(), TlsError> {
    if pki.by_server_name.is_empty() {
        return Ok(());
    }
    let mut alternates = Vec::with_capacity(pki.by_server_name.len());
    for (name, certificate, key) in &pki.by_server_name {
        let ctx = build(PkiSettings {
            certificate: Some(certificate.clone()),
            private_key: Some(key.clone()),
            by_server_name: Vec::new(),
            ..pki.clone()
        })?;
        alternates.push((name.to_ascii_lowercase(), ctx));
    }
    b.set_servername_callback(move |ssl, _alert| {
        let Some(name) = ssl.servername(NameType::HOST_NAME) else {
            return Ok(());
        };
        let name = name.to_ascii_lowercase();
        if let Some((_, ctx)) = alternates.iter().find(|(n, _)| *n == name) {
            ssl.set_ssl_context(ctx)
                .map_err(|_| SniError::ALERT_FATAL)?;
        }
        Ok(())
    });
    Ok(())
}

/// A client sends `sni` (or the PKI settings' SNI) and checks the server's certificate against
/// the PKI settings' expected name or address.
pub(crate) fn apply_client_names(
    ssl: &mut SslRef,
    pki: Option<&PkiSettings>,
    sni: Option<&str>,
) -> Result<(), TlsError> {
    if let Some(sni) = sni.or_else(|| pki.and_then(|p| p.sni.as_deref())) {
        ssl.set_hostname(sni)?;
    }
    if let Some(name) = pki.and_then(|p| p.expected_name.as_deref()) {
        let param = ssl.param_mut();
        match name.parse::<std::net::IpAddr>() {
            Ok(ip) => param.set_ip(ip)?,
            Err(_) => param.set_host(name)?,
        }
    }
    Ok(())
}

/// Who the peer proved to be on an SSL object: its certificate's names if it sent one, else
/// the PSK identity used.
pub(crate) fn peer_identity(ssl: &SslRef) -> Option<PeerIdentity> {
    if let Some(cert) = ssl.peer_certificate() {
        let (common_name, sans) = crate::pki::names(&cert);
        let der = cert.to_der().unwrap_or_default();
        return Some(PeerIdentity::Certificate {
            common_name,
            sans,
            der,
        });
    }
    ssl.psk_identity()
        .map(|identity| PeerIdentity::Psk(identity.to_vec()))
}
