//! A sequence-number state file (Appendix B.1.1): the mark below which numbers are reserved,
//! written atomically (a temporary file, synced, renamed over the old one, the directory
//! synced) so that a crash leaves either the old mark or the new one, never a torn file.
//!
//! ```no_run
//! # use tern_oscore::{ContextParams, SecurityContext, SequenceFile, protect_request};
//! # use tern_proto::{Code, Message, MessageType};
//! let mut context = SecurityContext::derive(&ContextParams::new(b"0123456789abcdef", b"c", b"s")).unwrap();
//! let file = SequenceFile::new("/var/lib/tern/oscore/sequence");
//! context.persist_sequence_numbers(file.load().unwrap(), 64);
//! let request = Message::new(MessageType::Con, Code::GET);
//! file.reserve(&mut context).unwrap(); // stores a new mark when one is due
//! let (protected, _) = protect_request(&mut context, &request, false).unwrap();
//! ```

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::context::SecurityContext;

/// A file holding one sequence-number mark, as decimal text.
#[derive(Debug, Clone)]
pub struct SequenceFile {
    path: PathBuf,
}

impl SequenceFile {
    /// The state file at `path` (it need not exist yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SequenceFile { path: path.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored mark; `None` when the file does not exist. A file that exists but does not
    /// hold a number is an error: guessing could reuse nonces.
    pub fn load(&self) -> io::Result<Option<u64>> {
        match fs::read_to_string(&self.path) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not a sequence number mark: {:?}",
                        self.path.display(),
                        text.chars().take(40).collect::<String>()
                    ),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores `mark` durably.
    pub fn store(&self, mark: u64) -> io::Result<()> {
        write_atomically(&self.path, format!("{mark}\n").as_bytes())
    }

    /// Stores the context's next mark if one is due, so that the next protection succeeds.
    pub fn reserve(&self, context: &mut SecurityContext) -> io::Result<()> {
        if let Some(mark) = context.mark_to_store() {
            self.store(mark)?;
            context.mark_stored(mark);
        }
        Ok(())
    }
}

/// Replaces `path` with `contents` so that a crash leaves the old file or the new one: a
/// temporary file beside it, synced, renamed over it, the directory synced.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = dir {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_loads_and_refuses_garbage() {
        let dir = std::env::temp_dir().join(format!("tern-seqfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = SequenceFile::new(dir.join("seq"));
        assert_eq!(file.load().unwrap(), None);
        file.store(4096).unwrap();
        assert_eq!(file.load().unwrap(), Some(4096));
        fs::write(file.path(), "12x").unwrap();
        let err = file.load().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("not a sequence number mark"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
