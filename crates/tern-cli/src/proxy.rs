//! `tern proxy`: the CoAP → HTTP gateway. It listens like `tern serve` (every transport and
//! credential flag of it applies) and forwards requests that carry Proxy-Uri, or Proxy-Scheme
//! with Uri-*, to http:// and https:// servers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tern::{Code, Resource, Router};
use tern_proxy::{AllowRule, ForwarderConfig, HttpForwarder, ProxyPolicy, MAX_TIMEOUT};

use crate::serve::{self, ServeArgs};

/// `tern proxy` flags.
#[derive(Args)]
pub struct ProxyArgs {
    /// Listeners and credentials, as for `tern serve`.
    #[command(flatten)]
    listen: ServeArgs,
    /// Forward only to this host (`api.example.com`, `*.example.com`, an IP) or URL prefix
    /// (`https://api.example.com/v1/`); repeatable. Loopback, link-local and private addresses
    /// are refused unless a host is named exactly (not by a wildcard).
    #[arg(long = "allow", value_name = "HOST|PREFIX")]
    allow: Vec<String>,
    /// Forward to every public host (no allow-list): an open proxy, refused unless asked for.
    #[arg(long = "allow-any-public", conflicts_with = "allow")]
    allow_any_public: bool,
    /// Seconds to wait for the HTTP server (at most 30).
    #[arg(long = "http-timeout", default_value_t = MAX_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    http_timeout: f64,
    /// Largest HTTP response body forwarded (bytes); larger ones are answered 5.02.
    #[arg(long = "max-body", default_value_t = tern_proxy::coap2http::DEFAULT_MAX_BODY)]
    max_body: usize,
    /// Pass the client's authenticated identity to the HTTP server in this header: psk:ID or
    /// cert:CN, or oscore:KIDHEX[.IDCONTEXTHEX] for OSCORE requests to the fixed path.
    #[arg(long = "identity-header", value_name = "NAME")]
    identity_header: Option<String>,
    /// Forward target URLs holding credentials (userinfo, token=, key=, ...) from plain
    /// coap:// clients too, where anyone on the path can read them.
    #[arg(long = "allow-credentials-over-coap")]
    credentials_over_plain: bool,
    /// Extra trust anchors (PEM) for https:// servers.
    #[arg(long = "http-ca-file", value_name = "FILE")]
    http_ca_file: Option<PathBuf>,
    /// Do not verify https:// servers (tests only).
    #[arg(long = "http-no-verify")]
    http_no_verify: bool,
    /// Requests forwarded at once; more are answered 5.03 with Max-Age 5.
    #[arg(long = "max-in-flight", default_value_t = tern_proxy::coap2http::DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Bytes of GET responses cached (fresh ones answered from the cache, stale ones with an
    /// ETag revalidated); 0 turns the cache off.
    #[arg(long = "cache-bytes", default_value_t = tern_proxy::coap2http::DEFAULT_CACHE_BYTES)]
    cache_bytes: usize,
    /// Serve the HTTP → CoAP API on this TCP address (`/providers/NAME/PATH`, and with
    /// --http-proxy-path `/proxy/COAP-URI`); needs --http-token-file.
    #[arg(long = "http-bind", value_name = "ADDR", requires = "http_token_file")]
    http_bind: Option<std::net::SocketAddr>,
    /// A file holding the bearer token HTTP clients must send (`Authorization: Bearer …`).
    #[arg(long = "http-token-file", value_name = "FILE")]
    http_token_file: Option<PathBuf>,
    /// A provider for the HTTP API: NAME=COAP-URI, the base its requests go to (repeatable).
    #[arg(long = "provider", value_name = "NAME=URI")]
    providers: Vec<String>,
    /// A provider's PSK: NAME=IDENTITY:KEY (the key as text, hex:…, or sha256:PASSWORD).
    #[arg(long = "provider-psk", value_name = "NAME=IDENTITY:KEY")]
    provider_psks: Vec<String>,
    /// Serve the HTTP API over HTTPS with this certificate chain (PEM); needs --http-key.
    #[arg(long = "http-cert", value_name = "FILE", requires = "http_key")]
    http_cert: Option<PathBuf>,
    /// The private key (PEM) of --http-cert.
    #[arg(long = "http-key", value_name = "FILE", requires = "http_cert")]
    http_key: Option<PathBuf>,
    /// A provider's certificates: NAME=CERT.pem,KEY.pem,CA.pem (its own certificate and key,
    /// and the CA its device's certificate must chain to).
    #[arg(long = "provider-cert", value_name = "NAME=CERT,KEY,CA")]
    provider_certs: Vec<String>,
    /// Requests in flight at once to one device over UDP (NSTART, RFC 7252 §4.7; 1 by default).
    #[arg(long = "provider-nstart", default_value_t = 1)]
    provider_nstart: usize,
    /// Let the API's requests to a device reuse CoAP message IDs within EXCHANGE_LIFETIME,
    /// for more than about 265 requests/s to one device (a device that still remembers an ID
    /// would take the request for a duplicate).
    #[arg(long = "provider-reuse-message-ids")]
    provider_reuse_message_ids: bool,
    /// Also serve `/proxy/COAP-URI` on the HTTP API: any device, with no credentials.
    #[arg(long = "http-proxy-path")]
    http_proxy_path: bool,
    /// Also forward requests sent to this path with the target in a `target=URL` query item,
    /// for clients that cannot set Proxy-Uri (e.g. `/coap2http`).
    #[arg(long = "path", value_name = "PATH")]
    path: Option<String>,
}

/// Runs the gateway until Ctrl-C.
pub async fn run(args: ProxyArgs) -> Result<ExitCode, String> {
    if !(args.http_timeout > 0.0 && args.http_timeout <= MAX_TIMEOUT.as_secs_f64()) {
        return Err(format!(
            "--http-timeout must be more than 0 and at most {} seconds",
            MAX_TIMEOUT.as_secs()
        ));
    }
    let allow = args
        .allow
        .iter()
        .map(|a| AllowRule::parse(a).map_err(|e| format!("--allow {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if allow.is_empty() && !args.allow_any_public {
        return Err("give the targets with --allow HOST|PREFIX (repeatable), or --allow-any-public to forward to every public host (an open proxy)".into());
    }
    if args.http_no_verify {
        eprintln!("WARNING: --http-no-verify: https:// servers are not verified");
    }
    let config = ForwarderConfig {
        policy: ProxyPolicy {
            allow,
            credentials_over_plain: args.credentials_over_plain,
            ..ProxyPolicy::default()
        },
        timeout: Duration::from_secs_f64(args.http_timeout),
        max_response_body: args.max_body,
        identity_header: args.identity_header.clone(),
        ca_file: args.http_ca_file.clone(),
        no_verify: args.http_no_verify,
        cache_bytes: args.cache_bytes,
        max_in_flight: args.max_in_flight,
    };
    let forwarder = HttpForwarder::new(config).map_err(|e| e.to_string())?;
    let proxied = forwarder.clone();
    let mut router = Router::new().forward_proxy(move |request| {
        let forwarder = proxied.clone();
        async move { forwarder.forward(request).await }
    });
    if let Some(path) = &args.path {
        let mut resource = Resource::new().hidden();
        for method in [
            Code::GET,
            Code::POST,
            Code::PUT,
            Code::DELETE,
            Code::FETCH,
            Code::PATCH,
            Code::IPATCH,
        ] {
            let forwarder = forwarder.clone();
            resource = resource.method(method, move |request| {
                let forwarder = forwarder.clone();
                async move { forwarder.forward_from_query(request).await }
            });
        }
        router = router.resource(path, resource);
    }
    if let Some(addr) = args.http_bind {
        let api = api_config(&args).await?;
        let local = tern_proxy::http2coap::spawn(addr, api)
            .await
            .map_err(|e| format!("--http-bind {addr}: {e}"))?;
        let scheme = if args.http_cert.is_some() {
            "https"
        } else {
            "http"
        };
        eprintln!("HTTP API listening on {local} ({scheme})");
    }
    serve::run_with(args.listen, Some(router)).await
}

/// The HTTP API's configuration from the flags: token, providers and their credentials.
async fn api_config(args: &ProxyArgs) -> Result<tern_proxy::ApiConfig, String> {
    let path = args
        .http_token_file
        .as_ref()
        .ok_or("--http-bind needs --http-token-file")?;
    let token = std::fs::read_to_string(path)
        .map_err(|e| format!("--http-token-file {}: {e}", path.display()))?;
    let token = zeroize::Zeroizing::new(token.trim().to_string());
    if token.len() < 16 {
        return Err(format!(
            "--http-token-file {}: the token must be at least 16 characters",
            path.display()
        ));
    }
    let mut psks = std::collections::HashMap::new();
    for entry in &args.provider_psks {
        let (name, cred) = entry
            .split_once('=')
            .ok_or_else(|| format!("--provider-psk {entry:?}: expected NAME=IDENTITY:KEY"))?;
        let (identity, key) = cred
            .split_once(':')
            .ok_or_else(|| format!("--provider-psk {name}: expected IDENTITY:KEY"))?;
        let key = tern::tls::credentials::parse_key(key)
            .map_err(|e| format!("--provider-psk {name}: {e}"))?;
        let psk = tern::Psk::new(identity.as_bytes(), key.to_vec())
            .map_err(|e| format!("--provider-psk {name}: {e}"))?;
        psks.insert(name.to_string(), psk);
    }
    let mut pkis = std::collections::HashMap::new();
    for entry in &args.provider_certs {
        let (name, files) = entry
            .split_once('=')
            .ok_or_else(|| format!("--provider-cert {entry:?}: expected NAME=CERT,KEY,CA"))?;
        let parts: Vec<&str> = files.split(',').collect();
        let [cert, key, ca] = parts[..] else {
            return Err(format!("--provider-cert {name}: expected CERT,KEY,CA"));
        };
        use tern::tls::{PkiSettings, Source};
        let source = |p: &str| Source::File(PathBuf::from(p));
        pkis.insert(
            name.to_string(),
            PkiSettings::new(source(cert), source(key), Some(source(ca))),
        );
    }
    let mut providers = std::collections::HashMap::new();
    for entry in &args.providers {
        let (name, base) = entry
            .split_once('=')
            .ok_or_else(|| format!("--provider {entry:?}: expected NAME=COAP-URI"))?;
        tern::proto::uri::CoapUri::parse(base).map_err(|e| format!("--provider {name}: {e}"))?;
        let config = tern::proto::EndpointConfig {
            params: tern::proto::TransmissionParams {
                nstart: args.provider_nstart.max(1),
                ..Default::default()
            },
            strict_message_ids: !args.provider_reuse_message_ids,
            ..Default::default()
        };
        let mut builder = tern::Context::builder().endpoint_config(config);
        if let Some(psk) = psks.remove(name) {
            builder = builder.psk(psk);
        }
        if let Some(pki) = pkis.remove(name) {
            builder = builder.pki(pki);
        }
        let context = builder
            .build()
            .await
            .map_err(|e| format!("--provider {name}: {e}"))?;
        let provider = tern_proxy::Provider {
            base: base.to_string(),
            context,
        };
        providers.insert(name.to_string(), provider);
    }
    if let Some(name) = psks.keys().next() {
        return Err(format!("--provider-psk {name}: no --provider {name}=URI"));
    }
    if let Some(name) = pkis.keys().next() {
        return Err(format!("--provider-cert {name}: no --provider {name}=URI"));
    }
    let tls = match (&args.http_cert, &args.http_key) {
        (Some(cert), Some(key)) => Some(
            tern_proxy::http2coap::tls_acceptor(cert, key)
                .map_err(|e| format!("--http-cert/--http-key: {e}"))?,
        ),
        _ => None,
    };
    Ok(tern_proxy::ApiConfig {
        token,
        providers,
        context: tern::Context::client(),
        open_proxy_path: args.http_proxy_path,
        tls,
    })
}
