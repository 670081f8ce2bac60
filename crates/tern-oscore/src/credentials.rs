//! Credentials files in aiocoap's format (`tern get --credentials FILE`), so one file serves
//! both stacks (also `tern::credentials`). A JSON
//! object maps URI patterns (`*` matches anything, the whole URI must match) or names
//! (`:name`) to a credential or to another name:
//!
//! ```json
//! {
//!   "coap://device.example/*": {"oscore": {"contextfile": "contexts/device/"}},
//!   "coaps://127.0.0.1/*": ":lab",
//!   ":lab": {"dtls": {"client-identity": {"ascii": "me"}, "psk": {"hex": "0011..."}}}
//! }
//! ```
//!
//! A request uses the entry of the longest pattern its URI matches (names followed, at most
//! 16 in a row). Context folder paths are taken as given (relative ones from the working
//! directory), as aiocoap does. Binary values are `{"ascii": "..."}` or `{"hex": "..."}`.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

/// A credential an entry names.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// An OSCORE security context folder.
    Oscore(PathBuf),
    /// A DTLS pre-shared key.
    Dtls {
        /// The PSK identity.
        identity: Vec<u8>,
        /// The key (zeroized on drop, never printed).
        key: Zeroizing<Vec<u8>>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Oscore(dir) => f.debug_tuple("Oscore").field(dir).finish(),
            Credential::Dtls { identity, .. } => f
                .debug_struct("Dtls")
                .field("identity", &String::from_utf8_lossy(identity))
                .finish_non_exhaustive(),
        }
    }
}

/// An entry: a credential or a reference to a named one.
#[derive(Clone, PartialEq, Eq)]
enum Entry {
    Credential(Credential),
    Reference(String),
}

/// A loaded credentials file.
#[derive(Default)]
pub struct Credentials {
    entries: Vec<(String, Entry)>,
}

/// How many references are followed before a loop is assumed.
const MAX_REFERENCES: usize = 16;

fn bytes(value: &Value, what: &str) -> Result<Vec<u8>, String> {
    let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
        return Err(format!(
            "{what} must be an object with one member, \"ascii\" or \"hex\""
        ));
    };
    match object.iter().next() {
        Some((kind, Value::String(text))) if kind == "ascii" => {
            if text.is_ascii() {
                Ok(text.as_bytes().to_vec())
            } else {
                Err(format!("{what}: the \"ascii\" value is not ASCII"))
            }
        }
        Some((kind, Value::String(text))) if kind == "hex" => {
            let digits: String = text
                .chars()
                .filter(|c| !matches!(c, '-' | ' ' | ':'))
                .collect();
            if digits.len() % 2 != 0 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("{what}: the \"hex\" value is not hex"));
            }
            Ok((0..digits.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap_or(0))
                .collect())
        }
        _ => Err(format!(
            "{what} must be {{\"ascii\": \"...\"}} or {{\"hex\": \"...\"}}"
        )),
    }
}

fn credential(key: &str, value: &Value) -> Result<Entry, String> {
    if let Value::String(reference) = value {
        if !reference.starts_with(':') {
            return Err(format!(
                "{key:?}: a reference must be a name starting with ':' (found {reference:?})"
            ));
        }
        return Ok(Entry::Reference(reference.clone()));
    }
    let Some(object) = value.as_object().filter(|o| o.len() == 1) else {
        return Err(format!(
            "{key:?}: an entry is a name (\":name\") or an object with exactly one member (\"oscore\" or \"dtls\")"
        ));
    };
    let Some((kind, params)) = object.iter().next() else {
        return Err(format!("{key:?}: empty entry"));
    };
    let params: &Map<String, Value> = params
        .as_object()
        .ok_or_else(|| format!("{key:?}: {kind} goes with an object"))?;
    let unknown = |allowed: &[&str]| {
        params
            .keys()
            .find(|k| !allowed.contains(&k.as_str()))
            .map(|k| format!("{key:?}: {kind} has no member {k:?}"))
    };
    match kind.as_str() {
        "oscore" => {
            if let Some(e) = unknown(&["contextfile", "basedir"]) {
                return Err(e);
            }
            let dir = params
                .get("contextfile")
                .or_else(|| params.get("basedir"))
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{key:?}: oscore needs \"contextfile\" (a folder)"))?;
            Ok(Entry::Credential(Credential::Oscore(PathBuf::from(dir))))
        }
        "dtls" => {
            if let Some(e) = unknown(&["client-identity", "psk"]) {
                return Err(e);
            }
            let identity = params
                .get("client-identity")
                .ok_or_else(|| format!("{key:?}: dtls needs \"client-identity\""))?;
            let psk = params
                .get("psk")
                .ok_or_else(|| format!("{key:?}: dtls needs \"psk\""))?;
            Ok(Entry::Credential(Credential::Dtls {
                identity: bytes(identity, &format!("{key:?}: client-identity"))?,
                key: Zeroizing::new(bytes(psk, &format!("{key:?}: psk"))?),
            }))
        }
        other => Err(format!(
            "{key:?}: credential type {other:?} is not supported here (oscore and dtls are)"
        )),
    }
}

/// Whether `uri` matches `pattern`, where `*` matches any run of characters.
fn matches(pattern: &str, uri: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = parts.split_first().unwrap_or((&"", &[]));
    let Some(mut remaining) = uri.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(at) => remaining = &remaining[at + part.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.entries.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Credentials")
            .field("entries", &keys)
            .finish()
    }
}

impl Credentials {
    /// Reads and checks a credentials file (JSON).
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the JSON text of a credentials file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("not a JSON object".into());
        };
        let mut entries = Vec::with_capacity(map.len());
        for (key, value) in &map {
            if value.is_null() {
                continue;
            }
            entries.push((key.clone(), credential(key, value)?));
        }
        let credentials = Credentials { entries };
        for (key, entry) in &credentials.entries {
            if let Entry::Reference(name) = entry {
                credentials
                    .resolve(name)
                    .map_err(|e| format!("{key:?}: {e}"))?;
            }
        }
        Ok(credentials)
    }

    /// Follows a reference to its credential.
    fn resolve(&self, name: &str) -> Result<&Credential, String> {
        let mut name = name;
        for _ in 0..MAX_REFERENCES {
            match self.entries.iter().find(|(k, _)| k == name) {
                Some((_, Entry::Credential(c))) => return Ok(c),
                Some((_, Entry::Reference(next))) => name = next,
                None => return Err(format!("{name:?} is not defined")),
            }
        }
        Err(format!(
            "more than {MAX_REFERENCES} references in a row from {name:?}"
        ))
    }

    /// The credential for a request to `uri`: the entry of the longest matching pattern.
    pub fn for_uri(&self, uri: &str) -> Option<&Credential> {
        let (_, entry) = self
            .entries
            .iter()
            .filter(|(k, _)| !k.starts_with(':') && matches(k, uri))
            .max_by_key(|(k, _)| k.len())?;
        match entry {
            Entry::Credential(c) => Some(c),
            // Checked on loading.
            Entry::Reference(name) => self.resolve(name).ok(),
        }
    }

    /// Every OSCORE context folder named, once each (a server loads them all).
    pub fn oscore_folders(&self) -> Vec<PathBuf> {
        let mut folders: Vec<PathBuf> = Vec::new();
        for (_, entry) in &self.entries {
            if let Entry::Credential(Credential::Oscore(dir)) = entry {
                if !folders.contains(dir) {
                    folders.push(dir.clone());
                }
            }
        }
        folders
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("coap://h/*", "coap://h/a/b"));
        assert!(matches("coap://h/*", "coap://h/"));
        assert!(!matches("coap://h/*", "coap://g/a"));
        assert!(matches("*", "coap://x"));
        assert!(matches("coap://*/x", "coap://h/x"));
        assert!(!matches("coap://*/x", "coap://h/y"));
        assert!(matches("coap://h/x", "coap://h/x"));
        assert!(!matches("coap://h/x", "coap://h/xy"));
    }

    #[test]
    fn most_specific_entry_and_references() {
        let c = Credentials::parse(
            r#"{
                "coap://h/*": {"oscore": {"contextfile": "general/"}},
                "coap://h/special/*": ":s",
                ":s": {"oscore": {"basedir": "special/"}},
                "coaps://h/*": {"dtls": {"client-identity": {"ascii": "me"}, "psk": {"hex": "00-ff"}}},
                "coap://gone/*": null
            }"#,
        )
        .unwrap();
        assert_eq!(
            c.for_uri("coap://h/x"),
            Some(&Credential::Oscore("general/".into()))
        );
        assert_eq!(
            c.for_uri("coap://h/special/y"),
            Some(&Credential::Oscore("special/".into()))
        );
        assert_eq!(
            c.for_uri("coaps://h/x"),
            Some(&Credential::Dtls {
                identity: b"me".to_vec(),
                key: Zeroizing::new(vec![0, 0xff])
            })
        );
        assert_eq!(c.for_uri("coap://other/x"), None);
        assert_eq!(c.oscore_folders().len(), 2);
    }

    #[test]
    fn hostile_files_are_refused_with_a_reason() {
        for (text, needle) in [
            ("[]", "not a JSON object"),
            ("{", "not JSON"),
            (r#"{"a": ":missing"}"#, "not defined"),
            (
                r#"{"x": ":a", ":a": ":b", ":b": ":a"}"#,
                "references in a row",
            ),
            (r#"{"a": "b"}"#, "starting with ':'"),
            (r#"{"a": {}}"#, "exactly one member"),
            (r#"{"a": {"oscore": {}, "dtls": {}}}"#, "exactly one member"),
            (r#"{"a": {"tlscert": {}}}"#, "not supported"),
            (r#"{"a": {"oscore": 1}}"#, "goes with an object"),
            (r#"{"a": {"oscore": {"x": 1}}}"#, "no member"),
            (
                r#"{"a": {"oscore": {"contextfile": 1}}}"#,
                "needs \"contextfile\"",
            ),
            (
                r#"{"a": {"dtls": {"psk": {"hex": "0"}, "client-identity": {"ascii": "x"}}}}"#,
                "not hex",
            ),
            (
                r#"{"a": {"dtls": {"psk": "k", "client-identity": {"ascii": "x"}}}}"#,
                "must be an object",
            ),
            (
                r#"{"a": {"dtls": {"client-identity": {"ascii": "é"}, "psk": {"hex": "00"}}}}"#,
                "not ASCII",
            ),
        ] {
            let e = Credentials::parse(text).unwrap_err();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
