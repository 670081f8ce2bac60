//! What provisioning installed on a device, and the file that keeps it across crashes.
//!
//! The whole state is one JSON file, replaced atomically after every step: written to
//! `NAME.tmp`, synced, renamed over `NAME`, the directory synced. A crash at any instant
//! leaves either the state before the step or the state after it, never a mixture, so a
//! restarted device resumes at the step it had not finished. The file holds the identity key
//! and the authorization code, so it is created readable by its owner only.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tern_store::AclEntry;
use zeroize::Zeroizing;

use crate::pki::{sync_parent, temporary_path, write_atomically, CertifiedKey, PkiError};

/// The state file format this build writes and reads.
pub const STATE_VERSION: u32 = 1;

/// The largest state file accepted (a state holds a few certificates and ACLs).
pub const MAX_STATE_FILE_LEN: u64 = 1024 * 1024;

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a state this build wrote.
    #[error("state file {path} is not valid: {reason}; factory-reset to provision again")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The file belongs to another manufacturer certificate than the one loaded.
    #[error(
        "state file {path} was written for another manufacturer certificate; factory-reset to provision again"
    )]
    OtherDevice {
        /// The file.
        path: PathBuf,
    },
}

/// The identity the credentials step installed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityCredentials {
    /// The identity certificate (CN `uuid:<device id>`), PEM.
    pub certificate_pem: String,
    /// Its private key, generated on the device, PEM.
    pub key_pem: Zeroizing<String>,
    /// The trust anchors for the hub, PEM.
    pub hub_ca_pem: String,
    /// When the certificate expires, Unix seconds.
    pub not_after: i64,
}

impl IdentityCredentials {
    /// The certificate and key as a pair (checked to match).
    pub fn certified_key(&self) -> Result<CertifiedKey, crate::pki::PkiError> {
        CertifiedKey::from_pem(self.certificate_pem.clone(), self.key_pem.clone())
    }
}

impl fmt::Debug for IdentityCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityCredentials")
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The hub configuration the last step installed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubSettings {
    /// The hub's identifier.
    pub hub_id: String,
    /// Where the hub listens.
    pub endpoint: String,
    /// The code the device presents to the hub: a secret.
    pub authorization_code: Zeroizing<String>,
}

impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("hub_id", &self.hub_id)
            .field("endpoint", &self.endpoint)
            .field("authorization_code", &"<redacted>")
            .finish()
    }
}

/// Everything provisioning installed, step by step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedState {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// SHA-256 of the manufacturer certificate the state belongs to (hex).
    pub manufacturer_fingerprint: String,
    /// The device id.
    pub device_id: String,
    /// The service's clock minus the device's, seconds, from the last time step.
    pub service_clock_offset: Option<i64>,
    /// From the credentials step.
    pub identity: Option<IdentityCredentials>,
    /// From the ACL step.
    pub acls: Option<Vec<AclEntry>>,
    /// From the hub step.
    pub hub: Option<HubSettings>,
}

impl ProvisionedState {
    /// A device that has not run any step yet.
    pub fn fresh(manufacturer_fingerprint: String, device_id: String) -> Self {
        ProvisionedState {
            version: STATE_VERSION,
            manufacturer_fingerprint,
            device_id,
            service_clock_offset: None,
            identity: None,
            acls: None,
            hub: None,
        }
    }

    /// Whether every step that installs something is done.
    pub fn is_provisioned(&self) -> bool {
        self.identity.is_some() && self.acls.is_some() && self.hub.is_some()
    }

    /// When the identity certificate falls due for renewal (2/3 of its validity, see
    /// [`crate::pki::renewal_time`]), in Unix seconds of the device's clock: the service's
    /// time less the offset the time step measured. `None` without an identity certificate,
    /// or with one that does not inspect (the next provisioning run replaces it at once).
    ///
    /// A device that stays up runs [`crate::device::client::DeviceClient::provision`] again
    /// then; it renews the certificate by a new CSR and returns.
    pub fn renewal_due_at(&self) -> Option<i64> {
        let identity = self.identity.as_ref()?;
        let info = crate::pki::inspect(&identity.certificate_pem).ok()?;
        let service_time = crate::pki::renewal_time(&info).unix_timestamp();
        Some(service_time.saturating_sub(self.service_clock_offset.unwrap_or(0)))
    }

    /// Refuses states no step could have produced: a later step without the earlier ones,
    /// an identity whose key is not its certificate's.
    fn check(&self) -> Result<(), String> {
        if self.version != STATE_VERSION {
            return Err(format!(
                "version {} (this build reads {STATE_VERSION})",
                self.version
            ));
        }
        if self.hub.is_some() && self.acls.is_none()
            || self.acls.is_some() && self.identity.is_none()
        {
            return Err("it holds a later step's result without an earlier one's".into());
        }
        if let Some(identity) = &self.identity {
            identity
                .certified_key()
                .map_err(|e| format!("its identity credentials do not load: {e}"))?;
        }
        Ok(())
    }
}

/// The file a device keeps its [`ProvisionedState`] in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file at `path` (which need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateFile { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, source: std::io::Error) -> StateError {
        StateError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// The saved state, `None` when there is none; refuses a file written for a manufacturer
    /// certificate other than `manufacturer_fingerprint`, and any file that is not a state.
    pub fn load(
        &self,
        manufacturer_fingerprint: &str,
    ) -> Result<Option<ProvisionedState>, StateError> {
        let file = match fs::File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(e)),
        };
        let len = file.metadata().map_err(|e| self.io(e))?.len();
        if len > MAX_STATE_FILE_LEN {
            return Err(StateError::Corrupt {
                path: self.path.clone(),
                reason: format!("{len} bytes, more than the {MAX_STATE_FILE_LEN} allowed"),
            });
        }
        let text = Zeroizing::new(fs::read(&self.path).map_err(|e| self.io(e))?);
        let state: ProvisionedState =
            serde_json::from_slice(&text).map_err(|e| StateError::Corrupt {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
        state.check().map_err(|reason| StateError::Corrupt {
            path: self.path.clone(),
            reason,
        })?;
        if state.manufacturer_fingerprint != manufacturer_fingerprint {
            return Err(StateError::OtherDevice {
                path: self.path.clone(),
            });
        }
        Ok(Some(state))
    }

    /// Replaces the saved state with `state`, atomically and durably.
    pub fn save(&self, state: &ProvisionedState) -> Result<(), StateError> {
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(state).map_err(|e| self.io(std::io::Error::other(e)))?,
        );
        write_atomically(&self.path, &json, 0o600).map_err(|e| match e {
            PkiError::Io { source, .. } => self.io(source),
            other => self.io(std::io::Error::other(other)),
        })
    }

    /// Deletes the saved state (a factory reset); nothing to delete is fine.
    pub fn remove(&self) -> Result<(), StateError> {
        for path in [temporary_path(&self.path), self.path.clone()] {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        sync_parent(&self.path).map_err(|e| self.io(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{create_ca, generate_key, IdentitySigner};
    use std::time::Duration;
    use tern_store::AclSubject;
    use time::OffsetDateTime;

    const DEVICE: &str = "3f2b8e4a-1c5d-4a7b-9e0f-6d1c2b3a4f5e";

    #[test]
    fn renewal_falls_due_at_two_thirds_on_the_devices_clock() {
        let mut state = provisioned();
        let info = crate::pki::inspect(&state.identity.as_ref().unwrap().certificate_pem).unwrap();
        let service_due = crate::pki::renewal_time(&info).unix_timestamp();
        let start = info.not_before.unix_timestamp();
        let end = info.not_after.unix_timestamp();
        assert!((service_due - (start + (end - start) * 2 / 3)).abs() <= 1);
        // The service's clock runs 3 s behind the device's (offset -3): due 3 s later here.
        assert_eq!(state.renewal_due_at(), Some(service_due + 3));
        state.service_clock_offset = None;
        assert_eq!(state.renewal_due_at(), Some(service_due));
        state.identity.as_mut().unwrap().certificate_pem = "garbage".into();
        assert_eq!(state.renewal_due_at(), None);
        state.identity = None;
        assert_eq!(state.renewal_due_at(), None);
    }

    fn provisioned() -> ProvisionedState {
        let now = OffsetDateTime::now_utc();
        let ca = create_ca("State Test CA", Duration::from_secs(86_400 * 30), now).unwrap();
        let signer = IdentitySigner::new(&ca).unwrap();
        let key = generate_key().unwrap();
        let csr = crate::pki::create_csr(&key, DEVICE).unwrap();
        let issued = signer
            .sign_csr(&csr, DEVICE, Duration::from_secs(86_400), now, None)
            .unwrap();
        let mut state = ProvisionedState::fresh("ab".repeat(32), DEVICE.into());
        state.service_clock_offset = Some(-3);
        state.identity = Some(IdentityCredentials {
            certificate_pem: issued.cert_pem,
            key_pem: key.to_pem(),
            hub_ca_pem: ca.cert_pem,
            not_after: issued.not_after.unix_timestamp(),
        });
        state.acls = Some(vec![AclEntry {
            subject: AclSubject::AnyAuthenticated,
            resources: vec!["*".into()],
            permissions: AclEntry::READ,
        }]);
        state.hub = Some(HubSettings {
            hub_id: "hub".into(),
            endpoint: "coaps+tcp://127.0.0.1:5684".into(),
            authorization_code: Zeroizing::new("secret-code".into()),
        });
        state
    }

    #[test]
    fn a_saved_state_loads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        assert!(file.load(&"ab".repeat(32)).unwrap().is_none());
        let state = provisioned();
        file.save(&state).unwrap();
        assert_eq!(file.load(&"ab".repeat(32)).unwrap(), Some(state.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "mode {mode:o}");
        }
        assert!(!temporary_path(file.path()).exists());
        // Debug output never shows the secrets.
        let debug = format!("{state:?}");
        assert!(
            !debug.contains("secret-code") && !debug.contains("PRIVATE KEY"),
            "{debug}"
        );
        file.remove().unwrap();
        assert!(file.load(&"ab".repeat(32)).unwrap().is_none());
        file.remove().unwrap();
    }

    #[test]
    fn a_leftover_temporary_file_does_not_count() {
        // A crash between writing the temporary file and renaming it leaves the old state.
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        let mut state = provisioned();
        state.hub = None;
        file.save(&state).unwrap();
        fs::write(temporary_path(file.path()), b"{\"version\": 1, \"half\": ").unwrap();
        assert_eq!(file.load(&"ab".repeat(32)).unwrap(), Some(state.clone()));
        // The next save replaces it.
        state.hub = provisioned().hub;
        file.save(&state).unwrap();
        assert_eq!(file.load(&"ab".repeat(32)).unwrap(), Some(state));
    }

    #[test]
    fn files_that_are_not_states_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path().join("state.json"));
        let valid = serde_json::to_value(provisioned()).unwrap();
        let mut wrong_version = valid.clone();
        wrong_version["version"] = 2.into();
        let mut skipped_step = valid.clone();
        skipped_step["identity"] = serde_json::Value::Null;
        let mut wrong_key = valid.clone();
        wrong_key["identity"]["key_pem"] = generate_key().unwrap().to_pem().as_str().into();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("garbage", b"\x00\xffnot json".to_vec()),
            ("truncated", b"{\"version\": 1, \"device_id\": ".to_vec()),
            ("wrong version", wrong_version.to_string().into_bytes()),
            ("skipped step", skipped_step.to_string().into_bytes()),
            ("wrong key", wrong_key.to_string().into_bytes()),
        ];
        for (name, bytes) in cases {
            fs::write(file.path(), bytes).unwrap();
            match file.load(&"ab".repeat(32)) {
                Err(StateError::Corrupt { reason, .. }) => {
                    assert!(!reason.is_empty(), "{name}")
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // Too large.
        fs::write(file.path(), vec![b' '; MAX_STATE_FILE_LEN as usize + 1]).unwrap();
        assert!(matches!(
            file.load(&"ab".repeat(32)),
            Err(StateError::Corrupt { .. })
        ));
        // Another device's state.
        file.save(&provisioned()).unwrap();
        let error = file.load(&"cd".repeat(32)).unwrap_err();
        assert!(matches!(error, StateError::OtherDevice { .. }));
        assert!(error.to_string().contains("factory-reset"), "{error}");
    }
}
