//! Security contexts in folders laid out as aiocoap's `FilesystemSecurityContext` does, so one
//! folder serves both stacks: `settings.json` and `secret.json` hold the parameters (each key at
//! most once across the two; `…_hex` values are hex, `…_ascii` text), `sequence.json` the
//! sequence-number mark (`{"next-to-send": N, "received": …}`).
//!
//! A context re-derived with a new ID Context (Appendix B.2) is recorded in `rederived.json`
//! (`{"id-context_hex": …, "next-to-send": N, "confirmed": bool}`), written before the new
//! context is first used; while it exists it supersedes `sequence.json`, so that after a
//! restart both ends still share the re-derived context and its numbers keep rising.
//!
//! Keys: `sender-id`, `recipient-id`, `secret` (required); `salt`, `id-context`, `algorithm`
//! (default `AES-CCM-16-64-128`), `kdf-hashfun` (`sha256` only), `window` (default 32).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::algorithm::Aead;
use crate::context::{ContextError, ContextParams, SecurityContext};
use crate::persist::write_atomically;

/// Why a context folder could not be used. Messages name the file and key, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file is not the JSON object expected.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// Neither settings.json nor secret.json exists.
    #[error("{0}: no settings.json or secret.json")]
    Empty(PathBuf),
    /// The parameters do not make a context.
    #[error("{path}: {source}")]
    Context {
        /// The folder.
        path: PathBuf,
        /// The reason.
        source: ContextError,
    },
}

/// The COSE names aiocoap uses for the algorithms Tern implements.
fn aead_by_name(name: &str) -> Option<Aead> {
    Some(match name {
        "AES-CCM-16-64-128" => Aead::AesCcm16_64_128,
        "AES-CCM-16-128-128" => Aead::AesCcm16_128_128,
        "A128GCM" => Aead::A128Gcm,
        "A256GCM" => Aead::A256Gcm,
        "ChaCha20/Poly1305" => Aead::ChaCha20Poly1305,
        _ => return None,
    })
}

/// A security context folder.
#[derive(Debug, Clone)]
pub struct ContextFolder {
    dir: PathBuf,
}

/// What a folder holds.
pub struct LoadedContext {
    /// The derived context, its sender sequence resumed at the stored mark.
    pub context: SecurityContext,
    /// The stored mark (`next-to-send`), if `sequence.json` exists.
    pub stored_mark: Option<u64>,
    /// Whether the context is a re-derived one from `rederived.json`.
    pub rederived: bool,
    /// Whether `sequence.json` holds the replay window. Tern does not persist it, and
    /// aiocoap writes "unknown" while it changes; the context is then loaded with its replay
    /// state forgotten, so that requests are challenged with Echo (Appendix B.1.2).
    pub replay_window_known: bool,
}

impl ContextFolder {
    /// The folder at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ContextFolder { dir: dir.into() }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read_object(
        &self,
        name: &str,
        read: &impl Fn(&Path) -> io::Result<String>,
    ) -> Result<Option<Map<String, Value>>, FolderError> {
        let path = self.file(name);
        let text = match read(&path) {
            Ok(text) => Zeroizing::new(text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(FolderError::Io { path, source }),
        };
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(Some(map)),
            Ok(_) => Err(FolderError::Invalid {
                path,
                problem: "not a JSON object".into(),
            }),
            // serde_json's message names line and column, not the content.
            Err(e) => Err(FolderError::Invalid {
                path,
                problem: format!("not JSON: {e}"),
            }),
        }
    }

    /// Reads and derives the context.
    pub fn load(&self) -> Result<LoadedContext, FolderError> {
        self.load_with(|path| fs::read_to_string(path))
    }

    /// [`load`](Self::load) with the files read by `read` (given each file's path; a file
    /// that does not exist is an `io::ErrorKind::NotFound` error): for tests and fuzzing,
    /// which hold the files in memory.
    pub fn load_with(
        &self,
        read: impl Fn(&Path) -> io::Result<String>,
    ) -> Result<LoadedContext, FolderError> {
        let mut data: Map<String, Value> = Map::new();
        let mut sources: Vec<(String, PathBuf)> = Vec::new();
        let mut any = false;
        for name in ["secret.json", "settings.json"] {
            let Some(object) = self.read_object(name, &read)? else {
                continue;
            };
            any = true;
            for (key, value) in object {
                let plain = key
                    .strip_suffix("_hex")
                    .or_else(|| key.strip_suffix("_ascii"))
                    .unwrap_or(&key)
                    .to_string();
                if data.contains_key(&plain) {
                    return Err(FolderError::Invalid {
                        path: self.file(name),
                        problem: format!("{plain} is given in more than one file"),
                    });
                }
                sources.push((plain.clone(), self.file(name)));
                data.insert(plain, Value::Array(vec![Value::String(key), value]));
            }
        }
        if !any {
            return Err(FolderError::Empty(self.dir.clone()));
        }
        let source_of = |key: &str| {
            sources
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| self.file("settings.json"))
        };
        let invalid = |key: &str, problem: String| FolderError::Invalid {
            path: source_of(key),
            problem,
        };
        let bytes = |key: &str| -> Result<Option<Vec<u8>>, FolderError> {
            let Some(Value::Array(pair)) = data.get(key) else {
                return Ok(None);
            };
            let (Some(Value::String(original)), Some(value)) = (pair.first(), pair.get(1)) else {
                return Ok(None);
            };
            let Value::String(text) = value else {
                return Err(invalid(key, format!("{original} must be a string")));
            };
            if original.ends_with("_hex") {
                decode_hex(text)
                    .map(Some)
                    .ok_or_else(|| invalid(key, format!("{original} is not hex")))
            } else if original.ends_with("_ascii") {
                if text.is_ascii() {
                    Ok(Some(text.as_bytes().to_vec()))
                } else {
                    Err(invalid(key, format!("{original} is not ASCII")))
                }
            } else {
                Err(invalid(
                    key,
                    format!("{original} needs a _hex or _ascii suffix"),
                ))
            }
        };
        let text = |key: &str| -> Result<Option<String>, FolderError> {
            match data.get(key) {
                None => Ok(None),
                Some(Value::Array(pair)) => match pair.get(1) {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(invalid(key, format!("{key} must be a string"))),
                },
                Some(_) => Ok(None),
            }
        };
        let required = |key: &str| -> Result<Vec<u8>, FolderError> {
            bytes(key)?.ok_or_else(|| {
                invalid(
                    key,
                    format!("{key} (as {key}_hex or {key}_ascii) is missing"),
                )
            })
        };
        let secret = Zeroizing::new(required("secret")?);
        let sender_id = required("sender-id")?;
        let recipient_id = required("recipient-id")?;
        let mut params = ContextParams::new(&secret, &sender_id, &recipient_id);
        params.master_salt = bytes("salt")?.unwrap_or_default();
        params.id_context = bytes("id-context")?;
        if let Some(name) = text("algorithm")? {
            params.aead = aead_by_name(&name).ok_or_else(|| {
                invalid(
                    "algorithm",
                    format!("algorithm {name:?} is not supported (AES-CCM-16-64-128, AES-CCM-16-128-128, A128GCM, A256GCM, ChaCha20/Poly1305 are)"),
                )
            })?;
        }
        if let Some(name) = text("kdf-hashfun")? {
            if name != "sha256" {
                return Err(invalid(
                    "kdf-hashfun",
                    format!("kdf-hashfun {name:?} is not supported (sha256 is)"),
                ));
            }
        }
        if let Some(Value::Array(pair)) = data.get("window") {
            let window = pair
                .get(1)
                .and_then(Value::as_u64)
                .and_then(|w| u32::try_from(w).ok())
                .ok_or_else(|| invalid("window", "window must be a whole number".into()))?;
            params.replay_window = window;
        }
        let mut context =
            SecurityContext::derive(&params).map_err(|source| FolderError::Context {
                path: self.dir.clone(),
                source,
            })?;
        let (stored_mark, replay_window_known) = match self.read_object("sequence.json", &read)? {
            None => (None, true),
            Some(sequence) => {
                let next = sequence
                    .get("next-to-send")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| FolderError::Invalid {
                        path: self.file("sequence.json"),
                        problem: "next-to-send must be a whole number".into(),
                    })?;
                let known = sequence.get("received").is_some_and(|r| r != "unknown");
                (Some(next), known)
            }
        };
        let (stored_mark, replay_window_known, rederived) = match self
            .read_object("rederived.json", &read)?
        {
            None => (stored_mark, replay_window_known, false),
            Some(record) => {
                let path = self.file("rederived.json");
                let bad = |problem: &str| FolderError::Invalid {
                    path: path.clone(),
                    problem: problem.into(),
                };
                let id_context = record
                    .get("id-context_hex")
                    .and_then(Value::as_str)
                    .and_then(decode_hex)
                    .ok_or_else(|| bad("id-context_hex must be a hex string"))?;
                let next = record
                    .get("next-to-send")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("next-to-send must be a whole number"))?;
                let confirmed = match record.get("confirmed") {
                    None => true,
                    Some(value) => value
                        .as_bool()
                        .ok_or_else(|| bad("confirmed must be true or false"))?,
                };
                context = context
                    .rederive(Some(id_context.clone()))
                    .map_err(|source| FolderError::Context {
                        path: self.dir.clone(),
                        source,
                    })?;
                if !confirmed {
                    context
                        .set_wire_kid_context(Some(crate::rederive::wire_id_context(&id_context)));
                }
                // The replay window is never stored.
                (Some(next), false, true)
            }
        };
        if let Some(next) = stored_mark {
            context.resume_sender_sequence(next);
        }
        if !replay_window_known {
            // Requests are challenged with Echo until one proves fresh (Appendix B.1.2).
            context.forget_replay_state();
        }
        Ok(LoadedContext {
            context,
            stored_mark,
            rederived,
            replay_window_known,
        })
    }

    /// Stores a sequence-number mark in `sequence.json` (atomically), with the replay window
    /// marked unknown as Tern does not persist it.
    pub fn store_mark(&self, mark: u64) -> Result<(), FolderError> {
        let path = self.file("sequence.json");
        let json = format!("{{\"next-to-send\": {mark}, \"received\": \"unknown\"}}");
        write_atomically(&path, json.as_bytes()).map_err(|source| FolderError::Io { path, source })
    }

    /// Stores the context's next mark if one is due (see [`SecurityContext::mark_to_store`]):
    /// in `rederived.json`, with its ID Context, for a re-derived context.
    pub fn reserve(&self, context: &mut SecurityContext) -> Result<(), FolderError> {
        if let Some(mark) = context.mark_to_store() {
            if context.is_rederived() {
                self.store_rederived(context, mark)?;
            } else {
                self.store_mark(mark)?;
            }
            context.mark_stored(mark);
        }
        Ok(())
    }

    /// Makes a re-derived context this folder's (Appendix B.2): records it in
    /// `rederived.json` with its first mark, `step` numbers ahead, before it is used.
    pub fn adopt(&self, context: &mut SecurityContext, step: u64) -> Result<(), FolderError> {
        context.persist_sequence_numbers(None, step);
        self.reserve(context)
    }

    /// Records that a re-derived context was confirmed by a response (its requests no longer
    /// carry the wire form of its ID Context).
    pub fn record_confirmed(&self, context: &SecurityContext) -> Result<(), FolderError> {
        match context.persisted_limit() {
            Some(mark) if context.is_rederived() => self.store_rederived(context, mark),
            _ => Ok(()),
        }
    }

    fn store_rederived(&self, context: &SecurityContext, mark: u64) -> Result<(), FolderError> {
        let path = self.file("rederived.json");
        let id: String = context
            .id_context()
            .unwrap_or_default()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let confirmed = context.wire_kid_context().is_none();
        let json = format!(
            "{{\"id-context_hex\": \"{id}\", \"next-to-send\": {mark}, \"confirmed\": {confirmed}}}"
        );
        write_atomically(&path, json.as_bytes()).map_err(|source| FolderError::Io { path, source })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|pair| {
            let digit = |c: u8| (c as char).to_digit(16);
            Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &str)]) -> (ContextFolder, PathBuf) {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tern-oscore-folder-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            fs::write(dir.join(name), text).unwrap();
        }
        (ContextFolder::new(&dir), dir)
    }

    /// The RFC 8613 C.1 client context, as aiocoap's plugtest folders write it.
    const C1_SETTINGS: &str =
        r#"{"sender-id_hex": "", "recipient-id_hex": "01", "algorithm": "AES-CCM-16-64-128"}"#;
    const C1_SECRET: &str =
        r#"{"secret_hex": "0102030405060708090a0b0c0d0e0f10", "salt_hex": "9e7ca92223786340"}"#;

    #[test]
    fn loads_an_aiocoap_folder_and_keeps_the_mark() {
        let (f, dir) = folder(&[("settings.json", C1_SETTINGS), ("secret.json", C1_SECRET)]);
        let loaded = f.load().unwrap();
        assert_eq!(
            loaded.context.sender_key().as_bytes(),
            decode_hex("f0910ed7295e6ad4b54fc793154302ff").unwrap()
        );
        assert_eq!(loaded.stored_mark, None);
        let mut context = loaded.context;
        context.persist_sequence_numbers(None, 10);
        f.reserve(&mut context).unwrap();
        let again = f.load().unwrap();
        assert_eq!(again.stored_mark, Some(10));
        assert_eq!(again.context.sender_sequence(), 10);
        assert!(!again.replay_window_known);
        assert!(!again.context.replay_state_known());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_rederived_context_supersedes_the_configured_one_across_restarts() {
        let (f, dir) = folder(&[
            ("settings.json", C1_SETTINGS),
            ("secret.json", C1_SECRET),
            ("sequence.json", r#"{"next-to-send": 500}"#),
        ]);
        let base = f.load().unwrap().context;
        let mut derived = base.rederive(Some(vec![0xab; 16])).unwrap();
        derived.set_wire_kid_context(Some(crate::rederive::wire_id_context(&[0xab; 16])));
        f.adopt(&mut derived, 20).unwrap();
        let again = f.load().unwrap();
        assert!(again.rederived);
        assert_eq!(
            again.stored_mark,
            Some(20),
            "rederived.json, not sequence.json"
        );
        assert_eq!(again.context.id_context(), Some(&[0xab; 16][..]));
        assert_eq!(
            again.context.sender_key().as_bytes(),
            derived.sender_key().as_bytes()
        );
        assert!(
            again.context.wire_kid_context().is_some(),
            "not yet confirmed"
        );
        derived.set_wire_kid_context(None);
        f.record_confirmed(&derived).unwrap();
        let confirmed = f.load().unwrap();
        assert!(confirmed.context.wire_kid_context().is_none());
        assert_eq!(confirmed.context.sender_sequence(), 20);
        for bad in [
            r#"{"next-to-send": 3}"#,
            r#"{"id-context_hex": "zz", "next-to-send": 3}"#,
            r#"{"id-context_hex": "ab", "next-to-send": "3"}"#,
            r#"{"id-context_hex": "ab", "next-to-send": 3, "confirmed": 1}"#,
        ] {
            fs::write(dir.join("rederived.json"), bad).unwrap();
            let e = f.load().err().unwrap().to_string();
            assert!(e.contains("rederived.json"), "{bad}: {e}");
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_folders_are_named_clearly() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "no settings.json or secret.json"),
            (&[("settings.json", "[1]")], "not a JSON object"),
            (&[("settings.json", "{")], "not JSON"),
            (
                &[("settings.json", C1_SETTINGS)],
                "secret (as secret_hex or secret_ascii) is missing",
            ),
            (
                &[
                    ("settings.json", C1_SETTINGS),
                    ("secret.json", r#"{"secret_hex": "zz"}"#),
                ],
                "secret_hex is not hex",
            ),
            (
                &[
                    ("settings.json", C1_SETTINGS),
                    (
                        "secret.json",
                        r#"{"secret_hex": "00", "sender-id_hex": "02"}"#,
                    ),
                ],
                "sender-id is given in more than one file",
            ),
            (
                &[
                    (
                        "settings.json",
                        r#"{"sender-id_hex": "", "recipient-id_hex": "01", "algorithm": "A128CBC"}"#,
                    ),
                    ("secret.json", C1_SECRET),
                ],
                "algorithm \"A128CBC\" is not supported",
            ),
            (
                &[
                    ("settings.json", C1_SETTINGS),
                    ("secret.json", C1_SECRET),
                    ("sequence.json", r#"{"next-to-send": -1}"#),
                ],
                "next-to-send must be a whole number",
            ),
            (
                &[
                    (
                        "settings.json",
                        r#"{"sender-id_hex": "01", "recipient-id_hex": "01"}"#,
                    ),
                    ("secret.json", C1_SECRET),
                ],
                "sender and recipient ID are the same",
            ),
        ];
        for (files, expected) in cases {
            let (f, dir) = folder(files);
            let err = f.load().err().expect("the folder is refused").to_string();
            assert!(err.contains(expected), "{err:?} should say {expected:?}");
            assert!(!err.contains("0102030405060708"), "a secret leaked: {err}");
            fs::remove_dir_all(dir).unwrap();
        }
    }
}
