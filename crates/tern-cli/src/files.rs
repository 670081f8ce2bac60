//! `/files/…` of `tern serve`: a directory served for large GET and PUT (block-wise transfers
//! reassemble the body before the handler sees it). Names are one path segment of letters,
//! digits, `.`, `_` and `-`, not starting with a dot, so nothing outside the directory can be
//! named. A PUT is written to a temporary file and renamed, so a reader never sees half a
//! file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tern::{Code, Request, Resource, Response};

/// Longest file name accepted.
const MAX_NAME: usize = 128;

/// The directory and its limits.
#[derive(Debug)]
pub struct FileStore {
    root: PathBuf,
    max_size: usize,
}

/// Why a name is refused, for the 4.00 diagnostic.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("a file name is needed: /files/NAME");
    }
    if name.len() > MAX_NAME {
        return Err("the file name is longer than 128 bytes");
    }
    if name.starts_with('.') {
        return Err("file names may not start with a dot");
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.chars().all(allowed) {
        return Err("file names are letters, digits, '.', '_' and '-' only");
    }
    Ok(())
}

impl FileStore {
    /// Serves `root` (created if missing), refusing PUTs larger than `max_size` bytes.
    pub fn new(root: &Path, max_size: usize) -> Result<Self, String> {
        std::fs::create_dir_all(root)
            .map_err(|e| format!("cannot create --files directory {}: {e}", root.display()))?;
        Ok(FileStore {
            root: root.to_path_buf(),
            max_size,
        })
    }

    fn path(&self, name: &str) -> Result<PathBuf, Response> {
        check_name(name).map_err(|why| Response::error(Code::BAD_REQUEST, why))?;
        Ok(self.root.join(name))
    }

    async fn get(&self, name: &str) -> Response {
        let path = match self.path(name) {
            Ok(p) => p,
            Err(r) => return r,
        };
        match tokio::fs::read(&path).await {
            Ok(bytes) => Response::content(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Response::new(Code::NOT_FOUND),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read");
                Response::error(Code::INTERNAL_SERVER_ERROR, "cannot read the file")
            }
        }
    }

    async fn put(&self, name: &str, body: &[u8]) -> Response {
        let path = match self.path(name) {
            Ok(p) => p,
            Err(r) => return r,
        };
        if body.len() > self.max_size {
            let size1 = u32::try_from(self.max_size).unwrap_or(u32::MAX);
            return Response::error(
                Code::REQUEST_ENTITY_TOO_LARGE,
                format!("files are at most {} bytes", self.max_size),
            )
            .with_option(
                tern::OptionNumber::SIZE1,
                tern::proto::option::encode_uint(size1).as_ref(),
            );
        }
        let existed = tokio::fs::try_exists(&path).await.unwrap_or(false);
        let temporary = self.root.join(format!(".{name}.part"));
        let written = async {
            tokio::fs::write(&temporary, body).await?;
            tokio::fs::rename(&temporary, &path).await
        }
        .await;
        match written {
            Ok(()) if existed => Response::new(Code::CHANGED),
            Ok(()) => Response::new(Code::CREATED),
            Err(e) => {
                let _ = tokio::fs::remove_file(&temporary).await;
                tracing::warn!(file = %path.display(), error = %e, "cannot write");
                Response::error(Code::INTERNAL_SERVER_ERROR, "cannot write the file")
            }
        }
    }

    async fn delete(&self, name: &str) -> Response {
        let path = match self.path(name) {
            Ok(p) => p,
            Err(r) => return r,
        };
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Response::new(Code::DELETED),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Response::new(Code::NOT_FOUND),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot delete");
                Response::error(Code::INTERNAL_SERVER_ERROR, "cannot delete the file")
            }
        }
    }

    /// The names in the directory, one per line (sorted).
    async fn list(&self) -> Response {
        let mut names = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.root).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if check_name(&name).is_ok() {
                    names.push(name);
                }
            }
        }
        names.sort();
        Response::text(names.join("\n"))
    }

    /// The `/files/*` resource.
    pub fn resource(self: Arc<Self>) -> Resource {
        let (get, put, delete) = (self.clone(), self.clone(), self);
        Resource::new()
            .get(move |r: Request| {
                let store = get.clone();
                async move {
                    match r.rest().unwrap_or("") {
                        "" => store.list().await,
                        name => store.get(name).await,
                    }
                }
            })
            .put(move |r: Request| {
                let store = put.clone();
                async move { store.put(r.rest().unwrap_or(""), r.payload()).await }
            })
            .delete(move |r: Request| {
                let store = delete.clone();
                async move { store.delete(r.rest().unwrap_or("")).await }
            })
            .title("Files: GET, PUT, DELETE /files/NAME; GET /files/ lists them")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_directory() {
        for bad in ["", "..", ".hidden", "a/b", "../etc", "a\\b", "a b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"x".repeat(129)).is_err());
        for good in ["big.bin", "a-b_c.1", "README"] {
            assert!(check_name(good).is_ok(), "{good:?}");
        }
    }

    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let dir = std::env::temp_dir().join(format!("tern-files-{}", std::process::id()));
        let store = FileStore::new(&dir, 16).unwrap();
        assert_eq!(store.put("a.txt", b"hello").await.code(), Code::CREATED);
        assert_eq!(store.put("a.txt", b"hello!").await.code(), Code::CHANGED);
        assert_eq!(store.get("a.txt").await.payload(), b"hello!");
        assert_eq!(store.list().await.payload(), b"a.txt");
        let too_big = store.put("b.txt", &[0u8; 17]).await;
        assert_eq!(too_big.code(), Code::REQUEST_ENTITY_TOO_LARGE);
        assert!(too_big.option(tern::OptionNumber::SIZE1).is_some());
        assert_eq!(store.put("../x", b"no").await.code(), Code::BAD_REQUEST);
        assert_eq!(store.delete("a.txt").await.code(), Code::DELETED);
        assert_eq!(store.get("a.txt").await.code(), Code::NOT_FOUND);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
