//! Which targets the gateway forwards to, and with what (no SSRF through the gateway).
//!
//! A target must use an allowed scheme; its host must be on the allow-list when there is one;
//! and it must resolve to public addresses only, unless the host is listed explicitly:
//! loopback, link-local, private, shared (CGNAT), unspecified, multicast, documentation and
//! IPv4-mapped forms of those are refused. The check is made on the addresses the connection
//! then uses (see [`PolicyResolver`](crate::PolicyResolver)), so a name that resolves
//! differently the second time cannot reach an internal address.

use std::net::{IpAddr, Ipv4Addr};

use http::Uri;
use tern_proto::Code;

/// An entry of the allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowRule {
    /// A host name or IP literal; `*.example.com` also matches every subdomain (but, unlike an
    /// exact name, never lets a host resolve to an internal address).
    Host(String),
    /// A URL prefix (`https://api.example.com/v1/`): the target must have its scheme, host
    /// and port (the scheme's default when not written), no userinfo, and a path that starts
    /// with the prefix's path at a segment boundary (case-sensitive).
    Prefix {
        /// The scheme, lower case.
        scheme: String,
        /// The host, as compared.
        host: String,
        /// The port.
        port: u16,
        /// The path prefix.
        path: String,
    },
}

impl AllowRule {
    /// Parses a rule: anything with `://` is a URL prefix, the rest a host.
    pub fn parse(text: &str) -> Result<AllowRule, String> {
        if !text.contains("://") {
            let host = normalize_host(text);
            let name = host.strip_prefix("*.").unwrap_or(&host);
            let is_name = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !(is_name || host.parse::<IpAddr>().is_ok()) {
                return Err(format!("{text:?} is not a host name or IP address"));
            }
            return Ok(AllowRule::Host(host));
        }
        let uri: Uri = text
            .parse()
            .map_err(|_| format!("{text:?} is not a URL prefix"))?;
        let scheme = uri.scheme_str().unwrap_or("").to_ascii_lowercase();
        let host = uri.host().map(normalize_host).unwrap_or_default();
        let userinfo = uri.authority().is_some_and(|a| a.as_str().contains('@'));
        let port = uri.port_u16().or_else(|| default_port(&scheme));
        match (host.is_empty(), userinfo, port) {
            (false, false, Some(port)) => Ok(AllowRule::Prefix {
                scheme,
                host,
                port,
                path: uri.path().to_string(),
            }),
            _ => Err(format!(
                "{text:?}: a URL prefix needs an http or https scheme and a host, and no userinfo"
            )),
        }
    }

    /// Whether `target` (with its normalized `host`) is one this rule allows.
    fn matches(&self, host: &str, target: &Uri) -> bool {
        match self {
            AllowRule::Host(h) => match h.strip_prefix("*.") {
                Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
                None => h == host,
            },
            AllowRule::Prefix {
                scheme,
                host: h,
                port,
                path,
            } => {
                let target_scheme = target.scheme_str().unwrap_or("").to_ascii_lowercase();
                let target_port = target.port_u16().or_else(|| default_port(&target_scheme));
                // The rest of the path after the prefix, which must begin a new segment.
                let on_boundary = target
                    .path()
                    .strip_prefix(path.as_str())
                    .is_some_and(|rest| {
                        path.ends_with('/') || rest.is_empty() || rest.starts_with('/')
                    });
                target_scheme == *scheme
                    && h == host
                    && target_port == Some(*port)
                    && !has_userinfo(target)
                    && on_boundary
            }
        }
    }

    /// The host this rule names exactly (a wildcard names none), which may then resolve to
    /// internal addresses.
    fn exact_host(&self) -> Option<&str> {
        match self {
            AllowRule::Host(h) if h.starts_with("*.") => None,
            AllowRule::Host(h) => Some(h),
            AllowRule::Prefix { host, .. } => Some(host),
        }
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

fn has_userinfo(target: &Uri) -> bool {
    target.authority().is_some_and(|a| a.as_str().contains('@'))
}

/// Whether a path has a `.` or `..` segment, written plainly or percent-encoded: servers
/// resolve them, so `/public/../admin` would leave an allowed prefix.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let decoded = segment.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// What the gateway forwards.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    /// Target schemes forwarded (default `http` and `https`); others get 5.05.
    pub schemes: Vec<String>,
    /// When not empty, only these targets are forwarded; others get 4.03.
    pub allow: Vec<AllowRule>,
    /// Forward credentials in the target URL (userinfo, or a query parameter named in
    /// `credential_params`) when the CoAP leg is not secure (plain coap://). Off by default:
    /// such requests get 4.03, since anyone on the path could read them.
    pub credentials_over_plain: bool,
    /// Query parameter names that carry credentials (compared without case).
    pub credential_params: Vec<String>,
}

impl Default for ProxyPolicy {
    fn default() -> Self {
        ProxyPolicy {
            schemes: vec!["http".into(), "https".into()],
            allow: Vec::new(),
            credentials_over_plain: false,
            credential_params: [
                "token",
                "access_token",
                "api_key",
                "apikey",
                "key",
                "auth",
                "password",
                "secret",
                "sig",
                "signature",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }
}

/// Why a target was refused, with the CoAP code to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The response code.
    pub code: Code,
    /// The diagnostic payload (names the rule, never the credentials).
    pub reason: String,
}

impl Refusal {
    fn new(code: Code, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }
}

impl ProxyPolicy {
    /// Checks a target before anything is resolved: scheme, allow-list, credentials.
    /// `secure` says whether the CoAP leg was DTLS, TLS or OSCORE.
    pub fn check(&self, target: &Uri, secure: bool) -> Result<(), Refusal> {
        let scheme = target.scheme_str().unwrap_or("").to_ascii_lowercase();
        if !self.schemes.iter().any(|s| s.eq_ignore_ascii_case(&scheme)) {
            return Err(Refusal::new(
                Code::PROXYING_NOT_SUPPORTED,
                format!("scheme {scheme:?} is not forwarded"),
            ));
        }
        let Some(host) = target.host().map(normalize_host) else {
            return Err(Refusal::new(Code::BAD_REQUEST, "target has no host"));
        };
        if has_dot_segment(target.path()) {
            return Err(Refusal::new(
                Code::BAD_REQUEST,
                "the target's path has . or .. segments",
            ));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|r| r.matches(&host, target)) {
            return Err(Refusal::new(
                Code::FORBIDDEN,
                "the target is not on the proxy's allow-list",
            ));
        }
        if !secure && !self.credentials_over_plain && self.carries_credentials(target) {
            return Err(Refusal::new(
                Code::FORBIDDEN,
                "credentials in the target URL need a secure CoAP leg (coaps or coaps+tcp)",
            ));
        }
        Ok(())
    }

    /// Whether the target URL holds credentials: userinfo, or a credential query parameter.
    pub fn carries_credentials(&self, target: &Uri) -> bool {
        let query = target.query().unwrap_or("").split('&').any(|pair| {
            let raw = pair.split('=').next().unwrap_or("");
            // Compare the decoded name: `%74oken` is `token` to the server.
            let name = tern_proto::uri::percent_decode(raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_else(|| raw.to_string());
            self.credential_params
                .iter()
                .any(|c| c.eq_ignore_ascii_case(&name))
        });
        has_userinfo(target) || query
    }

    /// Whether `host` is named exactly by a rule (a host rule without wildcard, or a URL
    /// prefix), so that it may resolve to internal addresses.
    pub fn explicitly_allowed(&self, host: &str) -> bool {
        let host = normalize_host(host);
        self.allow
            .iter()
            .any(|r| r.exact_host() == Some(host.as_str()))
    }

    /// Keeps the addresses a connection to `host` may use; fails when none is left.
    pub fn filter_addresses(&self, host: &str, addrs: Vec<IpAddr>) -> Result<Vec<IpAddr>, Refusal> {
        if self.explicitly_allowed(host) {
            return Ok(addrs);
        }
        let public: Vec<IpAddr> = addrs.into_iter().filter(|a| is_public(*a)).collect();
        if public.is_empty() {
            // Generic on purpose: naming the host's addresses would let clients map the
            // gateway's internal network.
            tracing::debug!(
                host,
                "target refused: it resolves to internal addresses only"
            );
            return Err(Refusal::new(Code::FORBIDDEN, "the target is not allowed"));
        }
        Ok(public)
    }
}

/// A host as compared: lower case, no brackets around IPv6, no trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Whether an address is reachable on the public Internet (and so fine to connect to).
pub fn is_public(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => is_public_v4(a),
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = a.segments();
            !(a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 embeds v4 (may be internal)
                || s[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
        }
    }
}

fn is_public_v4(a: Ipv4Addr) -> bool {
    let o = a.octets();
    !(a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_unspecified()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared address space 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn schemes_allow_list_and_credentials() {
        let p = ProxyPolicy::default();
        assert!(p.check(&uri("http://example.com/a"), false).is_ok());
        assert_eq!(
            p.check(&uri("ftp://example.com/a"), false)
                .unwrap_err()
                .code,
            Code::PROXYING_NOT_SUPPORTED
        );
        let token = uri("https://example.com/a?token=abc");
        assert_eq!(p.check(&token, false).unwrap_err().code, Code::FORBIDDEN);
        assert!(p.check(&token, true).is_ok());
        let userinfo = uri("https://user:pw@example.com/a");
        assert_eq!(p.check(&userinfo, false).unwrap_err().code, Code::FORBIDDEN);
        assert!(!p.carries_credentials(&uri("https://example.com/a?tokens=1&x=token")));
        let lax = ProxyPolicy {
            credentials_over_plain: true,
            ..ProxyPolicy::default()
        };
        assert!(lax.check(&token, false).is_ok());

        let listed = ProxyPolicy {
            allow: vec![
                AllowRule::parse("*.example.com").unwrap(),
                AllowRule::parse("https://api.other.org/v1/").unwrap(),
            ],
            ..ProxyPolicy::default()
        };
        assert!(listed.check(&uri("http://a.example.com/"), false).is_ok());
        assert!(listed.check(&uri("http://example.com/"), false).is_ok());
        assert!(listed
            .check(&uri("https://api.other.org/v1/x"), false)
            .is_ok());
        for refused in [
            "https://api.other.org/v2/x",
            "http://evil.com/",
            "http://notexample.com/",
        ] {
            assert_eq!(
                listed.check(&uri(refused), false).unwrap_err().code,
                Code::FORBIDDEN,
                "{refused}"
            );
        }
    }

    #[test]
    fn url_prefixes_compare_scheme_host_port_and_whole_segments() {
        let policy = |rule: &str| ProxyPolicy {
            allow: vec![AllowRule::parse(rule).unwrap()],
            ..ProxyPolicy::default()
        };
        let rows: &[(&str, &str, bool)] = &[
            ("http://intranet", "http://intranet/", true),
            ("http://intranet", "http://intranet:80/x", true),
            ("http://intranet", "http://intranet:6379/", false),
            (
                "https://api.example.com",
                "https://api.example.com/v1",
                true,
            ),
            (
                "https://api.example.com",
                "https://api.example.com.evil.net/",
                false,
            ),
            ("https://api.example.com", "http://api.example.com/", false),
            (
                "https://api.example.com",
                "https://api.example.com@10.0.0.5:22/",
                false,
            ),
            (
                "http://10.0.0.5:8080/public/",
                "http://10.0.0.5:8080/public/x",
                true,
            ),
            (
                "http://10.0.0.5:8080/public/",
                "http://10.0.0.5:8080/public/../admin",
                false,
            ),
            (
                "http://10.0.0.5:8080/public/",
                "http://10.0.0.5:8080/public/%2E%2e/admin",
                false,
            ),
            (
                "http://10.0.0.5:8080/public/",
                "http://10.0.0.5:8080/publicity",
                false,
            ),
            ("https://h/v1", "https://h/v1/x", true),
            ("https://h/v1", "https://h/v1", true),
            ("https://h/v1", "https://h/v10", false),
            ("https://h/v1/deeper", "https://h/v1", false),
            ("https://h/v1", "https://h/", false),
            ("https://h/v1/", "https://h/V1/x", false),
        ];
        for &(rule, target, allowed) in rows {
            let got = policy(rule).check(&uri(target), true).is_ok();
            assert_eq!(got, allowed, "{rule} vs {target}");
        }
        // Dot segments are refused even without an allow-list.
        assert_eq!(
            ProxyPolicy::default()
                .check(&uri("http://example.com/a/./b"), true)
                .unwrap_err()
                .code,
            Code::BAD_REQUEST
        );
        for bad in [
            "",
            "a/b",
            "user@host",
            "ftp://",
            "http://u:p@h/",
            "mailto:x",
        ] {
            assert!(AllowRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_exact_names_may_resolve_internally() {
        let p = ProxyPolicy {
            allow: vec![
                AllowRule::parse("*.corp.example").unwrap(),
                AllowRule::parse("db.corp.example").unwrap(),
                AllowRule::parse("https://api.corp.example:8443/v1/").unwrap(),
            ],
            ..ProxyPolicy::default()
        };
        assert!(p.explicitly_allowed("db.corp.example"));
        assert!(p.explicitly_allowed("api.corp.example"));
        assert!(!p.explicitly_allowed("other.corp.example"));
        let internal = vec!["10.0.0.1".parse().unwrap()];
        let refused = p
            .filter_addresses("other.corp.example", internal)
            .unwrap_err();
        assert_eq!(refused.reason, "the target is not allowed");
        assert!(p.carries_credentials(&uri("http://h/?%74oken=1")));
    }

    #[test]
    fn internal_addresses_are_refused_unless_listed() {
        let internal = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fd00::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "198.18.0.1",
        ];
        for a in internal {
            assert!(!is_public(a.parse().unwrap()), "{a}");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "8.8.8.8"] {
            assert!(is_public(a.parse().unwrap()), "{a}");
        }
        let p = ProxyPolicy::default();
        let loopback = vec!["127.0.0.1".parse().unwrap()];
        assert!(p.filter_addresses("localhost", loopback.clone()).is_err());
        let mixed = vec!["10.0.0.1".parse().unwrap(), "1.1.1.1".parse().unwrap()];
        assert_eq!(p.filter_addresses("x.example", mixed).unwrap().len(), 1);
        let listed = ProxyPolicy {
            allow: vec![AllowRule::parse("localhost").unwrap()],
            ..ProxyPolicy::default()
        };
        assert_eq!(
            listed
                .filter_addresses("localhost", loopback)
                .unwrap()
                .len(),
            1
        );
        let by_prefix = ProxyPolicy {
            allow: vec![AllowRule::parse("http://127.0.0.1:8080/").unwrap()],
            ..ProxyPolicy::default()
        };
        assert!(by_prefix.explicitly_allowed("127.0.0.1"));
    }
}
