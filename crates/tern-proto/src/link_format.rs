//! The CoRE Link Format (RFC 6690): what `/.well-known/core` returns.
//!
//! [`serialize`] writes links as §2 describes (`</time>;rt="clock";obs,</echo>;ct=0`), [`parse`]
//! reads them back tolerantly (whitespace around separators, quoted strings with `\` escapes,
//! commas and semicolons inside quotes, empty list entries), and [`filter`] applies the query
//! filtering of §4.1.
//!
//! ```
//! use tern_proto::link_format::{filter, parse, serialize, Link};
//! let links = vec![
//!     Link::new("/time").with_rt("clock").with_obs(),
//!     Link::new("/echo").with_ct(tern_proto::ContentFormat::TEXT_PLAIN),
//! ];
//! let text = serialize(&links);
//! assert_eq!(text, r#"</time>;rt="clock";obs,</echo>;ct=0"#);
//! assert_eq!(parse(&text).unwrap(), links);
//! assert_eq!(filter(&links, &["rt=cl*".to_string()]), vec![links[0].clone()]);
//! ```
//!
//! Attribute values are kept unquoted and unescaped; which ones were quoted on the wire is not
//! kept. Attribute names are kept as written and compared ignoring ASCII case.

use crate::option::ContentFormat;

/// One link: a target URI-reference and its attributes (link-params) in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Link {
    /// The URI-reference between `<` and `>`, as written (`/sensors/temp`).
    pub target: String,
    /// `(name, value)` pairs; `None` for a flag written without `=` (`obs`).
    pub attrs: Vec<(String, Option<String>)>,
}

impl Link {
    /// A link to `target` with no attributes.
    pub fn new(target: impl Into<String>) -> Self {
        Link {
            target: target.into(),
            attrs: Vec::new(),
        }
    }

    /// Adds an attribute with a value.
    pub fn with_attr(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attrs.push((name.into(), Some(value.into())));
        self
    }

    /// Adds a flag attribute (no value).
    pub fn with_flag(mut self, name: impl Into<String>) -> Self {
        self.attrs.push((name.into(), None));
        self
    }

    /// Adds a resource type (`rt`, §3.1); several may be given separated by spaces.
    pub fn with_rt(self, rt: impl Into<String>) -> Self {
        self.with_attr("rt", rt)
    }

    /// Adds an interface description (`if`, §3.2).
    pub fn with_if(self, interface: impl Into<String>) -> Self {
        self.with_attr("if", interface)
    }

    /// Adds a content format (`ct`, RFC 7252 §7.2.1).
    pub fn with_ct(self, ct: ContentFormat) -> Self {
        self.with_attr("ct", ct.0.to_string())
    }

    /// Adds a human-readable title (`title`, RFC 8288).
    pub fn with_title(self, title: impl Into<String>) -> Self {
        self.with_attr("title", title)
    }

    /// Marks the resource observable (`obs`, RFC 7641 §6).
    pub fn with_obs(self) -> Self {
        self.with_flag("obs")
    }

    /// Adds the estimated size in bytes (`sz`, §3.3).
    pub fn with_sz(self, size: u64) -> Self {
        self.with_attr("sz", size.to_string())
    }

    /// Whether an attribute of this name is present (with or without a value).
    pub fn has(&self, name: &str) -> bool {
        self.attrs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// The value of the first attribute of this name that has one.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .find_map(|(_, v)| v.as_deref())
    }

    /// Every space-separated value of every attribute of this name (`rt="a b"` gives `a`, `b`).
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attrs
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| v.as_deref())
            .flat_map(|v| v.split_ascii_whitespace())
    }

    /// The resource types (`rt`).
    pub fn rt(&self) -> Vec<&str> {
        self.values("rt").collect()
    }

    /// The interface descriptions (`if`).
    pub fn interfaces(&self) -> Vec<&str> {
        self.values("if").collect()
    }

    /// The content formats (`ct`); values that are not numbers are skipped.
    pub fn content_formats(&self) -> Vec<ContentFormat> {
        self.values("ct")
            .filter_map(|v| v.parse::<u16>().ok())
            .map(ContentFormat)
            .collect()
    }

    /// The title.
    pub fn title(&self) -> Option<&str> {
        self.value("title")
    }

    /// Whether the resource is marked observable (`obs`).
    pub fn is_observable(&self) -> bool {
        self.has("obs")
    }

    /// The estimated size (`sz`), if present and a number.
    pub fn sz(&self) -> Option<u64> {
        self.value("sz").and_then(|v| v.parse().ok())
    }
}

/// Why a link-format document could not be read; offsets are in bytes from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkFormatError {
    /// A link must start with `<`.
    #[error("expected '<' to open a link at byte {at}")]
    ExpectedTarget {
        /// Byte offset.
        at: usize,
    },
    /// A `<` with no matching `>`.
    #[error("link target opened at byte {at} is not closed by '>'")]
    UnterminatedTarget {
        /// Byte offset of the `<`.
        at: usize,
    },
    /// A `"` with no matching `"`.
    #[error("quoted string opened at byte {at} is not closed")]
    UnterminatedQuote {
        /// Byte offset of the opening `"`.
        at: usize,
    },
    /// A `;` not followed by a parameter name.
    #[error("expected a parameter name at byte {at}")]
    ExpectedParam {
        /// Byte offset.
        at: usize,
    },
    /// Something other than `,` or `;` after a link or parameter.
    #[error("unexpected {ch:?} at byte {at} (expected ',' or ';')")]
    Unexpected {
        /// The character found.
        ch: char,
        /// Byte offset.
        at: usize,
    },
}

/// Writes links in link format. `ct` and `sz` values that are plain numbers are written bare,
/// flags without `=`, every other value as a quoted string. A `>` in a target, which the format
/// cannot carry, is written as `%3E`.
pub fn serialize(links: &[Link]) -> String {
    let mut out = String::new();
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('<');
        out.push_str(&link.target.replace('>', "%3E"));
        out.push('>');
        for (name, value) in &link.attrs {
            out.push(';');
            out.push_str(name);
            let Some(value) = value else { continue };
            out.push('=');
            let bare = (name.eq_ignore_ascii_case("ct") || name.eq_ignore_ascii_case("sz"))
                && !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_digit());
            if bare {
                out.push_str(value);
            } else {
                out.push('"');
                for c in value.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    out
}

/// Reads a link-format document. An empty document is an empty list.
pub fn parse(text: &str) -> Result<Vec<Link>, LinkFormatError> {
    let mut p = Parser { text, pos: 0 };
    let mut links = Vec::new();
    loop {
        p.skip_ws();
        match p.peek() {
            None => return Ok(links),
            Some(',') => {
                p.bump(',');
                continue;
            }
            Some('<') => links.push(p.link()?),
            Some(_) => return Err(LinkFormatError::ExpectedTarget { at: p.pos }),
        }
        p.skip_ws();
        match p.peek() {
            None => return Ok(links),
            Some(',') => p.bump(','),
            Some(ch) => return Err(LinkFormatError::Unexpected { ch, at: p.pos }),
        }
    }
}

/// Applies RFC 6690 §4.1 query filtering. Every item `name=pattern` must match (items without
/// `=` are ignored, so no usable item keeps every link). `href` matches the target; any other
/// name matches an attribute of that name, against each of its space-separated values (a flag
/// counts as the empty value). A pattern ending in `*` matches by prefix.
pub fn filter(links: &[Link], query: &[String]) -> Vec<Link> {
    let filters: Vec<(&str, &str)> = query.iter().filter_map(|q| q.split_once('=')).collect();
    links
        .iter()
        .filter(|link| {
            filters
                .iter()
                .all(|&(name, pattern)| matches(link, name, pattern))
        })
        .cloned()
        .collect()
}

fn matches(link: &Link, name: &str, pattern: &str) -> bool {
    let test = |value: &str| match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    };
    if name.eq_ignore_ascii_case("href") {
        return test(&link.target);
    }
    link.attrs
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .any(|(_, value)| {
            let value = value.as_deref().unwrap_or("");
            let mut words = value.split_ascii_whitespace().peekable();
            if words.peek().is_none() {
                test(value)
            } else {
                words.any(test)
            }
        })
}

/// A cursor over the document; every slice it takes is at a char boundary, and none can panic.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.pos += rest.len() - rest.trim_start().len();
    }

    /// Takes characters while `keep` holds.
    fn take_while(&mut self, keep: impl Fn(char) -> bool) -> &'a str {
        let rest = self.rest();
        let end = rest.find(|c: char| !keep(c)).unwrap_or(rest.len());
        self.pos += end;
        rest.get(..end).unwrap_or("")
    }

    /// `"<" URI-Reference ">" *( ";" link-param )`, at a `<`.
    fn link(&mut self) -> Result<Link, LinkFormatError> {
        let open = self.pos;
        self.bump('<');
        let target = self.take_while(|c| c != '>');
        if self.peek() != Some('>') {
            return Err(LinkFormatError::UnterminatedTarget { at: open });
        }
        self.bump('>');
        let mut link = Link::new(target);
        loop {
            self.skip_ws();
            if self.peek() != Some(';') {
                return Ok(link);
            }
            self.bump(';');
            self.skip_ws();
            let name = self.take_while(is_param_name_char);
            if name.is_empty() {
                return Err(LinkFormatError::ExpectedParam { at: self.pos });
            }
            self.skip_ws();
            let value = if self.peek() == Some('=') {
                self.bump('=');
                self.skip_ws();
                Some(self.value()?)
            } else {
                None
            };
            link.attrs.push((name.to_owned(), value));
        }
    }

    /// A quoted string (unescaped) or a bare token.
    fn value(&mut self) -> Result<String, LinkFormatError> {
        if self.peek() != Some('"') {
            let token = self.take_while(|c| !matches!(c, ';' | ',') && !c.is_whitespace());
            return Ok(token.to_owned());
        }
        let open = self.pos;
        self.bump('"');
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' => match chars.next() {
                    Some((_, escaped)) => out.push(escaped),
                    None => break,
                },
                _ => out.push(c),
            }
        }
        Err(LinkFormatError::UnterminatedQuote { at: open })
    }
}

/// `parmname` (RFC 5987 attr-char) plus `*` for extended names such as `title*`.
fn is_param_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '!' | '#' | '$' | '&' | '+' | '-' | '.' | '^' | '_' | '`' | '|' | '~' | '*'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn serializes_rfc_style() {
        let links = vec![
            Link::new("/sensors/temp")
                .with_if("sensor")
                .with_rt("temperature-c")
                .with_sz(32)
                .with_obs(),
            Link::new("/t")
                .with_title("say \"hi\" \\o/")
                .with_ct(ContentFormat::LINK_FORMAT),
        ];
        let text = serialize(&links);
        assert_eq!(
            text,
            r#"</sensors/temp>;if="sensor";rt="temperature-c";sz=32;obs,</t>;title="say \"hi\" \\o/";ct=40"#
        );
        assert_eq!(parse(&text).unwrap(), links);
        assert_eq!(serialize(&[]), "");
        assert_eq!(serialize(&[Link::new("a>b")]), "<a%3Eb>");
    }

    #[test]
    fn parses_rfc_6690_examples() {
        // RFC 6690 §5, example 2 (line breaks and all).
        let text = "</sensors/temp>;rt=\"temperature-c\";if=\"sensor\",\r\n\
                    </sensors/light>;rt=\"light-lux\";if=\"sensor\"";
        let links = parse(text).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].target, "/sensors/temp");
        assert_eq!(links[1].rt(), vec!["light-lux"]);
        assert_eq!(links[1].interfaces(), vec!["sensor"]);
        // §5, example 4: anchors, multiple rel values.
        let text =
            "<http://www.example.com/sensors/t123>;anchor=\"/sensors/temp\";rel=\"describedby\",\
                    </t>;anchor=\"/sensors/temp\";rel=\"alternate\"";
        let links = parse(text).unwrap();
        assert_eq!(links[0].value("anchor"), Some("/sensors/temp"));
        assert_eq!(links[1].value("REL"), Some("alternate"));
    }

    #[test]
    fn parse_is_tolerant() {
        let text = " <a> ; rt = \"x, y;z\" ; ct=0 ;obs , , </b>;ct=\"0 41\";sz=12;title*=UTF-8'de'n%c3%a4chstes,";
        let links = parse(text).unwrap();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].rt(), vec!["x,", "y;z"]);
        assert_eq!(links[0].content_formats(), vec![ContentFormat::TEXT_PLAIN]);
        assert!(links[0].is_observable());
        assert_eq!(links[0].attrs.last(), Some(&("obs".to_string(), None)));
        assert_eq!(
            links[1].content_formats(),
            vec![ContentFormat::TEXT_PLAIN, ContentFormat::XML]
        );
        assert_eq!(links[1].sz(), Some(12));
        assert_eq!(links[1].value("title*"), Some("UTF-8'de'n%c3%a4chstes"));
        assert_eq!(parse("").unwrap(), vec![]);
        assert_eq!(parse(" \n ").unwrap(), vec![]);
        assert_eq!(parse("<>").unwrap(), vec![Link::new("")]);
        assert_eq!(parse("<a>;x=\"\\\"\"").unwrap()[0].value("x"), Some("\""));
        assert_eq!(parse("<a>;x=").unwrap()[0].value("x"), Some(""));
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, LinkFormatError)] = &[
            ("a", LinkFormatError::ExpectedTarget { at: 0 }),
            ("<a>,b", LinkFormatError::ExpectedTarget { at: 4 }),
            ("  <a", LinkFormatError::UnterminatedTarget { at: 2 }),
            ("<a>;x=\"abc", LinkFormatError::UnterminatedQuote { at: 6 }),
            (
                "<a>;x=\"abc\\",
                LinkFormatError::UnterminatedQuote { at: 6 },
            ),
            ("<a>;", LinkFormatError::ExpectedParam { at: 4 }),
            ("<a>;=1", LinkFormatError::ExpectedParam { at: 4 }),
            ("<a>x", LinkFormatError::Unexpected { ch: 'x', at: 3 }),
            (
                "<a>;x=\"1\"y",
                LinkFormatError::Unexpected { ch: 'y', at: 9 },
            ),
            ("<a>;é", LinkFormatError::ExpectedParam { at: 4 }),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text), Err(*want), "{text}");
        }
        assert_eq!(
            LinkFormatError::UnterminatedQuote { at: 6 }.to_string(),
            "quoted string opened at byte 6 is not closed"
        );
    }

    #[test]
    fn hostile_input_is_refused_quickly() {
        let deep = "<".repeat(100_000);
        assert!(parse(&deep).is_err());
        let many = "<a>;x".repeat(20_000);
        assert!(parse(&many).is_err());
        let flags = format!("<a>{}", ";x".repeat(50_000));
        assert_eq!(parse(&flags).unwrap()[0].attrs.len(), 50_000);
        let quotes = format!("<a>;x=\"{}", "\\\"".repeat(50_000));
        assert!(parse(&quotes).is_err());
    }

    #[test]
    fn filters_per_rfc_6690_4_1() {
        let links = parse(
            "</sensors/temp>;rt=\"temperature-c sensor\";if=\"sensor\";obs,\
             </sensors/light>;rt=\"light-lux\";ct=\"0 41\",\
             </time>;ct=0;title=\"clock\"",
        )
        .unwrap();
        let targets = |query: &[&str]| -> Vec<String> {
            filter(&links, &q(query))
                .into_iter()
                .map(|l| l.target)
                .collect()
        };
        assert_eq!(targets(&[]).len(), 3);
        assert_eq!(targets(&["rt=temperature-c"]), vec!["/sensors/temp"]);
        assert_eq!(targets(&["rt=sensor"]), vec!["/sensors/temp"]);
        assert_eq!(targets(&["rt=light*"]), vec!["/sensors/light"]);
        assert_eq!(targets(&["rt=*"]).len(), 2);
        assert_eq!(targets(&["rt=temperature"]), Vec::<String>::new());
        assert_eq!(targets(&["href=/sensors/*"]).len(), 2);
        assert_eq!(targets(&["href=/time"]), vec!["/time"]);
        assert_eq!(targets(&["ct=0"]), vec!["/sensors/light", "/time"]);
        assert_eq!(targets(&["ct=41"]), vec!["/sensors/light"]);
        assert_eq!(targets(&["title=clock"]), vec!["/time"]);
        assert_eq!(targets(&["obs="]), vec!["/sensors/temp"]);
        assert_eq!(targets(&["RT=light-lux", "ct=41"]), vec!["/sensors/light"]);
        assert_eq!(targets(&["rt=light-lux", "ct=42"]), Vec::<String>::new());
        assert_eq!(targets(&["nothing"]).len(), 3);
        assert_eq!(targets(&["unknown=1"]), Vec::<String>::new());
    }

    #[test]
    fn helpers() {
        let l = Link::new("/x")
            .with_rt("a b")
            .with_rt("c")
            .with_flag("obs")
            .with_attr("sz", "nope");
        assert_eq!(l.rt(), vec!["a", "b", "c"]);
        assert!(l.has("OBS") && l.is_observable());
        assert_eq!(l.sz(), None);
        assert_eq!(l.title(), None);
        assert_eq!(l.value("obs"), None);
    }

    fn arb_link() -> impl Strategy<Value = Link> {
        let name = prop_oneof![
            "[a-zA-Z0-9!#$&+.^_`|~*-]{1,8}",
            Just("rt".to_string()),
            Just("ct".to_string()),
            Just("sz".to_string()),
        ];
        let value = prop_oneof![
            proptest::option::of("\\PC{0,12}"),
            proptest::option::of("[0-9]{1,5}"),
            proptest::option::of("[\"\\\\,; ]{0,6}"),
        ];
        ("[^>]{0,20}", proptest::collection::vec((name, value), 0..5))
            .prop_map(|(target, attrs)| Link { target, attrs })
    }

    proptest! {
        #[test]
        fn serialize_then_parse_is_identity(links in proptest::collection::vec(arb_link(), 0..5)) {
            let text = serialize(&links);
            prop_assert_eq!(parse(&text), Ok(links), "{}", text);
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_link_like_text(text in "[<>;=,\" \\\\a-c0-9*é]{0,60}") {
            if let Ok(links) = parse(&text) {
                prop_assert_eq!(parse(&serialize(&links)), Ok(links));
            }
        }

        #[test]
        fn filter_never_panics(
            links in proptest::collection::vec(arb_link(), 0..4),
            query in proptest::collection::vec("[a-z=*]{0,6}", 0..3),
        ) {
            let kept = filter(&links, &query);
            prop_assert!(kept.len() <= links.len());
        }
    }
}
