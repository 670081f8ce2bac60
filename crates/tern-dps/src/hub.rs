//! The hub's half of provisioning: admitting devices by the identity certificate the service
//! issued them and holding their requests to the ACLs the service gave them.
//!
//! [`HubAccess`] is a [`tern::AccessControl`] for a hub's router (`tern serve --hub-store`).
//! The TLS layer has already checked that the peer's certificate chains to the service's CA;
//! on top of that a request passes only when
//! - the certificate is one the store recorded as issued (same serial, same bytes) to the
//!   device its subject names (`uuid:<device id>`), and neither it nor the device is revoked
//!   (else 4.01 Unauthorized: the device must re-provision before trying again);
//! - one of the device's ACL entries that applies to it covers the resource with the
//!   permission the method needs (else 4.03 Forbidden).
//!
//! What the store says is cached per certificate for a refresh interval (5 s by default), so
//! a hub does not query its store on every request; a revocation therefore takes effect
//! within that interval. A store that cannot be read refuses with 5.03 (fail closed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tern::{AccessFuture, Code, OptionNumber, PeerIdentity, Request, Response};
use tern_store::{AclEntry, AclSubject, DeviceState, ProvisioningStore, Store};

use crate::pki::{inspect_der, parse_pem_bundle};

/// How long what the store says about a certificate is trusted before it is read again.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(5);

/// Certificates whose verdicts are cached at once; past it, expired entries are dropped, and
/// if none has expired the cache starts over (memory stays bounded under a flood of distinct
/// certificates, which must each have passed the TLS handshake anyway).
const MAX_CACHED: usize = 4096;

/// Admits devices by their identity certificate and enforces their ACLs from the store.
/// Cheap to clone: clones share the store and the cache.
#[derive(Clone)]
pub struct HubAccess {
    store: Arc<Store>,
    refresh: Duration,
    /// Verdicts by the certificate's DER (hashing ~0.5 KB costs less than parsing it).
    cache: Arc<Mutex<HashMap<Vec<u8>, Cached>>>,
}

/// What the store said about one certificate, and when.
#[derive(Clone)]
struct Cached {
    verdict: Verdict,
    read_at: Instant,
}

/// Whether a certificate admits its holder, and with which ACLs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Verdict {
    /// The device and the entries that apply to it.
    Admitted {
        device_id: String,
        acls: Vec<AclEntry>,
    },
    /// Why the certificate is refused (sent as the 4.01's diagnostic).
    Refused(String),
}

impl HubAccess {
    /// Enforces what `store` says, reading it again at most every [`DEFAULT_REFRESH`].
    pub fn new(store: Arc<Store>) -> Self {
        HubAccess {
            store,
            refresh: DEFAULT_REFRESH,
            cache: Arc::default(),
        }
    }

    /// Reads the store again about a certificate once its cached verdict is this old (zero:
    /// on every request).
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Lets `request` through or gives the response refusing it (see the module's text).
    pub async fn decide(&self, request: &Request) -> Result<(), Response> {
        let Some(PeerIdentity::Certificate { der, .. }) = request.peer_identity() else {
            return Err(Response::error(
                Code::UNAUTHORIZED,
                "a device identity certificate is required",
            ));
        };
        let verdict = self.verdict(der).await.map_err(|error| {
            tracing::warn!(%error, "hub cannot read its store; refusing");
            Response::error(Code::SERVICE_UNAVAILABLE, "authorization store unavailable")
        })?;
        let (device_id, acls) = match verdict {
            Verdict::Admitted { device_id, acls } => (device_id, acls),
            Verdict::Refused(reason) => {
                tracing::info!(%reason, "hub refused a certificate");
                return Err(Response::error(Code::UNAUTHORIZED, reason));
            }
        };
        let href = href(request);
        let needed = needed_permissions(request);
        if permits(&acls, &device_id, &href, needed) {
            tracing::trace!(%device_id, %href, "hub admitted a request");
            return Ok(());
        }
        tracing::info!(%device_id, %href, method = %request.method(), "ACLs refuse the request");
        Err(Response::error(
            Code::FORBIDDEN,
            format!(
                "the device's ACLs do not allow {} on {href}",
                request.method()
            ),
        ))
    }

    /// The cached verdict on a certificate, or a fresh one from the store.
    async fn verdict(&self, der: &[u8]) -> Result<Verdict, tern_store::StoreError> {
        let now = Instant::now();
        if let Some(cached) = self.lock().get(der) {
            if now.duration_since(cached.read_at) < self.refresh {
                return Ok(cached.verdict.clone());
            }
        }
        let verdict = self.read_verdict(der).await?;
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED && !cache.contains_key(der) {
            cache.retain(|_, cached| now.duration_since(cached.read_at) < self.refresh);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(
            der.to_vec(),
            Cached {
                verdict: verdict.clone(),
                read_at: now,
            },
        );
        Ok(verdict)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Cached>> {
        // A panic elsewhere while holding the lock leaves a cache that is still consistent
        // (each entry is written whole).
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the store says about a certificate now.
    async fn read_verdict(&self, der: &[u8]) -> Result<Verdict, tern_store::StoreError> {
        let refused = |reason: &str| Ok(Verdict::Refused(reason.to_owned()));
        let Ok(info) = inspect_der(der) else {
            return refused("the certificate cannot be read");
        };
        let Some(device_id) = info.device_id else {
            return refused("not a device identity certificate (its subject is not uuid:<id>)");
        };
        let Some(issued) = self.store.certificate(&info.serial_hex).await? else {
            return refused("the provisioning service never issued this certificate");
        };
        let same_bytes = parse_pem_bundle(&issued.pem)
            .ok()
            .and_then(|chain| chain.into_iter().next())
            .is_some_and(|stored| stored.as_bytes() == der);
        if issued.device_id != device_id || !same_bytes {
            return refused("the certificate differs from the one issued under its serial");
        }
        if issued.revoked {
            return refused("the certificate is revoked");
        }
        match self.store.device(&device_id).await? {
            Some(device) if device.state == DeviceState::Revoked => {
                return refused("the device is revoked")
            }
            Some(_) => {}
            None => return refused("the device is not in the store"),
        }
        let acls = self.store.acls(&device_id).await?;
        Ok(Verdict::Admitted { device_id, acls })
    }
}

impl std::fmt::Debug for HubAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubAccess")
            .field("refresh", &self.refresh)
            .field("cached", &self.lock().len())
            .finish()
    }
}

impl tern::AccessControl for HubAccess {
    fn check(&self, request: &Request) -> AccessFuture {
        // The router hands out `&self` but wants a future that outlives the call: the shared
        // state is behind an `Arc`, so a clone of the handle is cheap.
        let access = self.clone();
        let request = request.clone();
        Box::pin(async move { access.decide(&request).await })
    }
}

/// The resource a request is for, as ACL patterns name it: `/` and the Uri-Path segments
/// joined by `/`. A `/` inside one segment is written `%2F`, so that a segment cannot pose as
/// two and reach under a pattern's prefix.
pub fn href(request: &Request) -> String {
    let mut href = String::new();
    for segment in request.message().path_segments() {
        href.push('/');
        href.push_str(&segment.replace('/', "%2F"));
    }
    if href.is_empty() {
        href.push('/');
    }
    href
}

/// The permissions a request needs, as alternatives: it passes when the entries grant every
/// bit of one of them. GET and FETCH read (and an Observe registration also needs NOTIFY);
/// PUT creates or replaces, so CREATE or WRITE will do; POST, PATCH and iPATCH write; DELETE
/// deletes. Any other method needs what no entry can grant.
pub fn needed_permissions(request: &Request) -> &'static [u8] {
    const READ: &[u8] = &[AclEntry::READ];
    const OBSERVE: &[u8] = &[AclEntry::READ | AclEntry::NOTIFY];
    const PUT: &[u8] = &[AclEntry::CREATE, AclEntry::WRITE];
    const WRITE: &[u8] = &[AclEntry::WRITE];
    const DELETE: &[u8] = &[AclEntry::DELETE];
    match request.method() {
        Code::GET | Code::FETCH => {
            let registers = request
                .message()
                .options
                .get(OptionNumber::OBSERVE)
                .and_then(tern::proto::option::decode_uint)
                == Some(0);
            if registers {
                OBSERVE
            } else {
                READ
            }
        }
        Code::PUT => PUT,
        Code::POST | Code::PATCH | Code::IPATCH => WRITE,
        Code::DELETE => DELETE,
        _ => &[],
    }
}

/// Whether an entry is about this device: its own id, any authenticated peer or anyone.
/// Role entries never apply, as identity certificates carry no roles.
fn applies_to(subject: &AclSubject, device_id: &str) -> bool {
    match subject {
        AclSubject::DeviceId(id) => id == device_id,
        AclSubject::AnyAuthenticated | AclSubject::Anonymous => true,
        AclSubject::Role(_) => false,
    }
}

/// Whether `acls` let `device_id` act on `href` with one of the `needed` alternatives. The
/// permissions of every entry that applies to the device and covers `href` add up.
pub fn permits(acls: &[AclEntry], device_id: &str, href: &str, needed: &[u8]) -> bool {
    let granted = acls
        .iter()
        .filter(|entry| applies_to(&entry.subject, device_id) && entry.covers(href))
        .fold(0u8, |granted, entry| granted | entry.permissions);
    needed
        .iter()
        .any(|&bits| bits != 0 && granted & bits == bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(subject: AclSubject, resources: &[&str], permissions: u8) -> AclEntry {
        AclEntry {
            subject,
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            permissions,
        }
    }

    #[test]
    fn nothing_is_allowed_without_an_entry() {
        assert!(!permits(&[], "d1", "/light", &[AclEntry::READ]));
        let other = entry(AclSubject::DeviceId("d2".into()), &["*"], AclEntry::ALL);
        let role = entry(AclSubject::Role("admin".into()), &["*"], AclEntry::ALL);
        assert!(!permits(&[other, role], "d1", "/light", &[AclEntry::READ]));
    }

    #[test]
    fn entries_add_up_and_patterns_cover() {
        let read = entry(AclSubject::AnyAuthenticated, &["/light/*"], AclEntry::READ);
        let notify = entry(
            AclSubject::DeviceId("d1".into()),
            &["/light/1"],
            AclEntry::NOTIFY,
        );
        let acls = [read, notify];
        let observe = [AclEntry::READ | AclEntry::NOTIFY];
        assert!(permits(&acls, "d1", "/light/1", &observe));
        assert!(!permits(&acls, "d1", "/light/2", &observe));
        assert!(permits(&acls, "d1", "/light/2", &[AclEntry::READ]));
        assert!(!permits(&acls, "d1", "/lights", &[AclEntry::READ]));
        assert!(!permits(&acls, "d1", "/light/1", &[AclEntry::WRITE]));
        // PUT: creating or writing will do.
        let create = [entry(
            AclSubject::Anonymous,
            &["/store/*"],
            AclEntry::CREATE,
        )];
        assert!(permits(
            &create,
            "d1",
            "/store/a",
            &[AclEntry::CREATE, AclEntry::WRITE]
        ));
        // A method no entry can grant.
        assert!(!permits(&create, "d1", "/store/a", &[]));
    }

    proptest! {
        /// Whatever the entries, a request passes only when one bit set it needs is inside
        /// what the entries covering the resource for this device grant.
        #[test]
        fn permits_is_the_union_of_applicable_entries(
            entries in proptest::collection::vec(
                (0u8..4, proptest::sample::select(vec!["*", "/a/*", "/a/b", "/c"]), 0u8..32),
                0..6,
            ),
            href in proptest::sample::select(vec!["/a/b", "/a/c", "/c", "/d", "/"]),
            needed in 1u8..32,
        ) {
            let acls: Vec<AclEntry> = entries
                .iter()
                .map(|(who, pattern, bits)| {
                    let subject = match who {
                        0 => AclSubject::DeviceId("me".into()),
                        1 => AclSubject::DeviceId("other".into()),
                        2 => AclSubject::Role("r".into()),
                        _ => AclSubject::AnyAuthenticated,
                    };
                    entry(subject, &[pattern], *bits)
                })
                .collect();
            let mut granted = 0u8;
            for (entry, (who, _, _)) in acls.iter().zip(&entries) {
                if (*who == 0 || *who == 3) && entry.covers(href) {
                    granted |= entry.permissions;
                }
            }
            prop_assert_eq!(permits(&acls, "me", href, &[needed]), granted & needed == needed);
        }
    }
}
