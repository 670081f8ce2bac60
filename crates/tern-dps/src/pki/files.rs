//! Certificates and keys on disk: the only I/O in [`crate::pki`].

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{CertifiedKey, PkiError};

/// Where [`write_pem_files`] put the certificate and the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFilePaths {
    /// `<dir>/<name>.pem`.
    pub cert: PathBuf,
    /// `<dir>/<name>-key.pem`, mode 0600 on Unix.
    pub key: PathBuf,
}

/// Writes `certified` to `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
///
/// Each file is written to a temporary file in `dir` and renamed into place, so a reader never
/// sees half a file and a crash leaves the old pair. The key file is created with mode 0600
/// (before any key byte is written), whatever mode an earlier file of that name had. `name`
/// must be a plain file name: no path separators, not `.` or `..`, not empty.
pub fn write_pem_files(
    dir: &Path,
    name: &str,
    certified: &CertifiedKey,
) -> Result<PemFilePaths, PkiError> {
    check_file_name(name)?;
    let paths = PemFilePaths {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    // The key first: a certificate without its key is useless, a stale certificate beside a
    // new key is caught by `load_certified_key`'s match check.
    write_atomically(&paths.key, certified.key_pem.as_bytes(), 0o600)?;
    write_atomically(&paths.cert, certified.cert_pem.as_bytes(), 0o644)?;
    tracing::debug!(cert = %paths.cert.display(), key = %paths.key.display(), "wrote PEM files");
    Ok(paths)
}

/// Reads a certificate (or chain) and its key from PEM files and checks that they belong
/// together (see [`CertifiedKey::from_pem`]).
///
/// On Unix, a key file readable by group or others is loaded but logged as a warning.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, PkiError> {
    let cert_pem = read_text(cert_path)?;
    let key_pem = Zeroizing::new(read_text(key_path)?);
    warn_if_key_file_is_exposed(key_path);
    CertifiedKey::from_pem(cert_pem, key_pem)
}

fn read_text(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn check_file_name(name: &str) -> Result<(), PkiError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name == "." || name == ".." {
        "it names a directory"
    } else if name.contains(['/', '\\', '\0']) {
        "it contains a path separator or NUL"
    } else {
        return Ok(());
    };
    Err(PkiError::InvalidFileName {
        name: name.to_owned(),
        reason,
    })
}

/// Writes `contents` to a fresh temporary file beside `path` with `mode` (set before any byte
/// is written, whatever a stale temporary had), syncs it, renames it over `path` and syncs the
/// directory: a reader never sees half a file and a crash leaves the old one or the new one.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| PkiError::Io { path, source }
    };
    let temporary = temporary_path(path);
    // A temporary left by a crash is ours to replace; create_new below must not meet it, or
    // it could keep a wider mode than the one asked for.
    match fs::remove_file(&temporary) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io_error(&temporary)(error)),
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let result = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if let Err(error) = result {
        // Best effort: the error worth reporting is the one that got us here.
        let _ = fs::remove_file(&temporary);
        return Err(io_error(&temporary)(error));
    }
    sync_parent(path).map_err(io_error(path))
}

/// The temporary file [`write_atomically`] writes `path` through: `.<name>.tmp` beside it.
pub fn temporary_path(path: &Path) -> PathBuf {
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{file_name}.tmp"))
}

/// Syncs the directory holding `path`: a rename or a removal is only durable once it is.
/// Directories cannot be opened for syncing everywhere; where they cannot, nothing is done.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match fs::File::open(directory) {
        Ok(dir) => dir.sync_all(),
        Err(_) => Ok(()),
    }
}

#[cfg(unix)]
fn warn_if_key_file_is_exposed(key_path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(metadata) = fs::metadata(key_path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %key_path.display(),
                mode = format_args!("{mode:o}"),
                "private key file is readable by group or others"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_key_file_is_exposed(_key_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::create_ca;

    fn ca() -> CertifiedKey {
        let now = time::OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap();
        create_ca("File CA", std::time::Duration::from_secs(3600), now).unwrap()
    }

    #[test]
    fn writes_then_loads_a_pair_with_a_private_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca();
        let paths = write_pem_files(dir.path(), "ca", &ca).unwrap();
        assert_eq!(paths.cert, dir.path().join("ca.pem"));
        assert_eq!(paths.key, dir.path().join("ca-key.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&paths.key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let loaded = load_certified_key(&paths.cert, &paths.key).unwrap();
        assert_eq!(loaded.cert_pem, ca.cert_pem);
        assert_eq!(*loaded.key_pem, *ca.key_pem);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporaries left"
        );
    }

    #[cfg(unix)]
    #[test]
    fn rewriting_tightens_an_existing_wide_key_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let key_path = dir.path().join("ca-key.pem");
        fs::write(&key_path, "old").unwrap();
        fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
        write_pem_files(dir.path(), "ca", &ca()).unwrap();
        let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_names_that_leave_the_directory_and_mismatched_pairs() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "a/b", "../x"] {
            assert!(matches!(
                write_pem_files(dir.path(), name, &ca()),
                Err(PkiError::InvalidFileName { .. })
            ));
        }
        let one = write_pem_files(dir.path(), "one", &ca()).unwrap();
        let two = write_pem_files(dir.path(), "two", &ca()).unwrap();
        assert!(matches!(
            load_certified_key(&one.cert, &two.key),
            Err(PkiError::KeyMismatch { .. })
        ));
        assert!(matches!(
            load_certified_key(&dir.path().join("missing.pem"), &one.key),
            Err(PkiError::Io { .. })
        ));
    }
}
