//! `tern get|post|put|delete|fetch|patch|ipatch`: one request, the payload on stdout.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tern::credentials::{Credential, Credentials};
use tern::proto::option::{encode_uint, ValueFormat};
use tern::{Code, ContentFormat, Context, Error, OptionNumber};

use crate::display;

/// Arguments of a request command.
#[derive(Args, Debug)]
pub struct RequestArgs {
    /// The resource, e.g. coap://127.0.0.1/time.
    uri: String,
    /// Payload text.
    #[arg(short = 'e', long = "payload", conflicts_with = "file")]
    text: Option<String>,
    /// Payload from a file (`-` for stdin).
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Content-Format of the payload, by name (text, json, cbor, link, ...) or number.
    #[arg(short = 't', long = "content-format", value_parser = parse_content_format)]
    content_format: Option<ContentFormat>,
    /// Accept, by name or number.
    #[arg(short = 'A', long = "accept", value_parser = parse_content_format)]
    accept: Option<ContentFormat>,
    /// Send as non-confirmable (NON).
    #[arg(long)]
    non: bool,
    /// Extra option NUM,VALUE (NUM a number or name; VALUE text, a decimal for integer
    /// options, or 0x-prefixed hex). Repeatable.
    #[arg(short = 'O', long = "option", value_parser = parse_extra_option)]
    options: Vec<(OptionNumber, Vec<u8>)>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 90.0, value_parser = parse_timeout)]
    timeout: f64,
    /// Block size for block-wise transfers (16, 32, 64, 128, 256, 512 or 1024 bytes): asked of
    /// the server for the response, and used for a request body.
    #[arg(short = 'b', long = "block-size", value_parser = parse_block_size)]
    block_size: Option<usize>,
    /// Observe the resource (RFC 7641) for this many seconds, printing each notification.
    #[arg(short = 's', long = "observe", value_parser = parse_timeout)]
    observe: Option<f64>,
    /// Write the payload to a file instead of stdout.
    #[arg(short = 'o', long = "output")]
    output: Option<String>,
    /// Show the response code, options and decoded payload on stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// PSK identity for coaps://.
    #[arg(short = 'u', long = "psk-identity", requires = "psk_key")]
    psk_identity: Option<String>,
    /// PSK for coaps://: text, hex:00ff..., or sha256:PASSWORD (its SHA-256 digest)
    #[arg(short = 'k', long = "psk-key", requires = "psk_identity")]
    psk_key: Option<String>,
    /// Our certificate (PEM or DER) for coaps://.
    #[arg(short = 'c', long = "cert", requires = "key")]
    cert: Option<std::path::PathBuf>,
    /// The private key of --cert.
    #[arg(short = 'j', long = "key", requires = "cert")]
    key: Option<std::path::PathBuf>,
    /// CA certificate(s) to verify the server with; its name must match the URI's host.
    #[arg(short = 'C', long = "ca")]
    ca: Option<std::path::PathBuf>,
    /// Do not verify the server's certificate.
    #[arg(long = "no-verify", conflicts_with = "ca")]
    no_verify: bool,
    /// Protect the request with OSCORE (RFC 8613), using the security context in this folder
    /// (aiocoap's format: settings.json, secret.json, sequence.json).
    #[arg(long = "oscore", value_name = "DIR", conflicts_with = "credentials")]
    oscore: Option<std::path::PathBuf>,
    /// Draw a progress bar on stderr for a transfer of more than 4 kB even when stdout is
    /// not a terminal (it is drawn by default when stdout is one).
    #[arg(long)]
    progress: bool,
    /// Send through this forward proxy (a URI such as coap://proxy:5683, or HOST[:PORT] for
    /// coap://), with the target in Proxy-Uri; under --oscore the proxy sees only the
    /// target's scheme, host and port.
    #[arg(short = 'P', long = "proxy", value_name = "URI")]
    proxy: Option<String>,
    /// Credentials file in aiocoap's format (JSON mapping URI patterns to "oscore" context
    /// folders or "dtls" PSKs): the entry of the longest pattern the URI matches is used.
    #[arg(long = "credentials", value_name = "FILE")]
    credentials: Option<std::path::PathBuf>,
    /// Allow OSCORE context re-derivation (RFC 8613 Appendix B.2) with the server: follow one
    /// the server starts (after it lost its replay window), and start one when the context's
    /// sequence numbers are used up. The new context is stored in the context folder.
    #[arg(long = "oscore-rederivation")]
    oscore_rederivation: bool,
    /// Re-derive the OSCORE context with the server before the request, as a client does
    /// that lost its context's state (implies --oscore-rederivation).
    #[arg(long = "oscore-rederive")]
    oscore_rederive: bool,
}

/// A block size: a power of two from 16 to 1024.
fn parse_block_size(text: &str) -> Result<usize, String> {
    let size: usize = text
        .parse()
        .map_err(|_| format!("block size {text:?} is not a number"))?;
    if !(16..=1024).contains(&size) || !size.is_power_of_two() {
        return Err(format!(
            "block size {size} is not one of 16, 32, 64, 128, 256, 512, 1024"
        ));
    }
    Ok(size)
}

/// Certificate settings from the flags, if any certificate flag was given.
fn pki_from_args(args: &RequestArgs) -> Result<Option<tern::tls::PkiSettings>, String> {
    use tern::tls::{PkiSettings, Source};
    if args.cert.is_none() && args.ca.is_none() && !args.no_verify {
        return Ok(None);
    }
    let ca = args.ca.clone().map(Source::File);
    let mut pki = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            PkiSettings::new(Source::File(cert.clone()), Source::File(key.clone()), ca)
        }
        _ => PkiSettings::verify_only(ca),
    };
    pki.verify_peer = !args.no_verify;
    if pki.verify_peer {
        let uri =
            tern::proto::uri::CoapUri::parse(&args.uri).map_err(|e| format!("invalid URI: {e}"))?;
        pki.expected_name = Some(match &uri.host {
            tern::proto::uri::Host::Name(name) => name.clone(),
            tern::proto::uri::Host::Ipv4(ip) => ip.to_string(),
            tern::proto::uri::Host::Ipv6(ip) => ip.to_string(),
        });
        if let tern::proto::uri::Host::Name(name) = &uri.host {
            pki.sni = Some(name.clone());
        }
    } else if args.cert.is_none() {
        // --no-verify alone: no certificate of ours, nothing checked.
        pki.verify_peer = false;
    }
    Ok(Some(pki))
}

fn parse_content_format(text: &str) -> Result<ContentFormat, String> {
    ContentFormat::parse(text).ok_or_else(|| format!("unknown content format {text:?} (use a number or a name such as text, json, cbor, link)"))
}

fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "timeout {text:?} must be a number of seconds between 0 and 86400"
        )),
    }
}

/// Parses `NUM,VALUE` for `-O`.
pub fn parse_extra_option(text: &str) -> Result<(OptionNumber, Vec<u8>), String> {
    let (name, value) = text.split_once(',').unwrap_or((text, ""));
    let number = match name.parse::<u16>() {
        Ok(n) => OptionNumber(n),
        Err(_) => OptionNumber::from_name(name)
            .ok_or_else(|| format!("unknown option {name:?} in -O {text:?}"))?,
    };
    let bytes = if let Some(hex) = value.strip_prefix("0x") {
        decode_hex(hex).ok_or_else(|| format!("invalid hex value in -O {text:?}"))?
    } else if number.def().is_some_and(|d| d.format == ValueFormat::Uint) {
        let v: u32 = value
            .parse()
            .map_err(|_| format!("option {number} takes an unsigned integer, not {value:?}"))?;
        encode_uint(v).as_ref().to_vec()
    } else {
        value.as_bytes().to_vec()
    };
    if let Some(def) = number.def() {
        def.check(&bytes).map_err(|e| format!("-O {text:?}: {e}"))?;
    }
    Ok((number, bytes))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}

fn read_payload(args: &RequestArgs) -> Result<Vec<u8>, String> {
    if let Some(text) = &args.text {
        return Ok(text.clone().into_bytes());
    }
    match args.file.as_deref() {
        None => Ok(Vec::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| format!("cannot read stdin: {e}"))?;
            Ok(buf)
        }
        Some(path) => std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}")),
    }
}

/// Runs one request; exit status 0 on 2.xx, 1 otherwise.
pub async fn run(method: Code, args: RequestArgs) -> Result<ExitCode, String> {
    let payload = read_payload(&args)?;
    let mut psk = None;
    let rederivation = args.oscore_rederivation || args.oscore_rederive;
    let mut oscore = match &args.oscore {
        Some(dir) => Some(crate::oscore::client(dir, "--oscore", rederivation)?),
        None => None,
    };
    if let Some(path) = &args.credentials {
        let credentials = Credentials::load(path).map_err(|e| format!("--credentials {e}"))?;
        match credentials.for_uri(&args.uri) {
            Some(Credential::Oscore(dir)) => {
                oscore = Some(crate::oscore::client(dir, "--credentials", rederivation)?);
            }
            Some(Credential::Dtls { identity, key }) if args.psk_identity.is_none() => {
                psk = Some(
                    tern::Psk::new(identity.clone(), key.to_vec())
                        .map_err(|e| format!("--credentials: {e}"))?,
                );
            }
            Some(Credential::Dtls { .. }) => {
                return Err("--credentials names a PSK, and -u/-k give another".into())
            }
            None => {
                return Err(format!(
                    "--credentials {}: no entry matches {}",
                    path.display(),
                    args.uri
                ))
            }
        }
    }
    if rederivation && oscore.is_none() {
        return Err(
            "--oscore-rederivation and --oscore-rederive need an OSCORE context (--oscore, or \
             --credentials naming one)"
                .into(),
        );
    }
    let mut builder = Context::builder();
    let pki = pki_from_args(&args)?;
    let have_pki = pki.is_some();
    if let Some(pki) = pki {
        builder = builder.dtls_client(tern::tls::DtlsSettings {
            pki: Some(pki),
            handshake_timeout: Duration::from_secs_f64(args.timeout),
            ..Default::default()
        });
    }
    if let (Some(identity), Some(key)) = (&args.psk_identity, &args.psk_key) {
        let key =
            tern::tls::credentials::parse_key(key).map_err(|e| format!("-k/--psk-key: {e}"))?;
        psk = Some(
            tern::Psk::new(identity.as_bytes(), key.to_vec()).map_err(|e| format!("-u/-k: {e}"))?,
        );
    }
    if let Some(psk) = psk {
        // The handshake gets the request's time-out, so a wrong key is reported as such.
        builder = builder.dtls_client(tern::tls::DtlsSettings {
            psk: Some(psk),
            handshake_timeout: Duration::from_secs_f64(args.timeout),
            ..Default::default()
        });
    } else if !have_pki {
        let lower = args.uri.to_ascii_lowercase();
        for scheme in ["coaps", "coaps+tcp"] {
            if lower.starts_with(&format!("{scheme}:")) {
                return Err(format!(
                    "{scheme}:// needs credentials: -u IDENTITY -k KEY, or -C CA (with -c CERT -j KEY)"
                ));
            }
        }
    }
    let context = builder.build().await.map_err(|e| e.to_string())?;
    let mut request = context
        .request(method, &args.uri)
        .payload(payload)
        .timeout(Duration::from_secs_f64(args.timeout));
    if let Some(size) = args.block_size {
        request = request.block_size(size);
    }
    if let Some(cf) = args.content_format {
        request = request.content_format(cf);
    }
    if let Some(cf) = args.accept {
        request = request.accept(cf);
    }
    for (number, value) in &args.options {
        request = request.option(*number, value.clone());
    }
    if args.non {
        request = request.non();
    }
    if let Some(client) = &oscore {
        if args.oscore_rederive {
            client.rederive();
        }
        request = request.oscore(client);
    }
    if let Some(proxy) = &args.proxy {
        let proxy = if proxy.contains("://") {
            proxy.clone()
        } else {
            format!("coap://{proxy}")
        };
        tern::proto::uri::CoapUri::parse(&proxy)
            .map_err(|e| format!("-P/--proxy {proxy:?}: {e}"))?;
        request = request.proxy(&proxy);
    }
    if let Some(seconds) = args.observe {
        let status = observe(request, seconds, &args).await;
        context.shutdown().await;
        return status;
    }
    let bar =
        (args.progress || std::io::stdout().is_terminal()).then(crate::progress::Bar::default);
    if let Some(bar) = &bar {
        request = request.on_progress(bar.callback());
    }
    let response = request.send().await;
    if let Some(bar) = &bar {
        bar.finish();
    }
    let response = response.map_err(|e| match e {
        Error::Request(inner) => format!("no response from {}: {inner}", args.uri),
        other => other.to_string(),
    })?;
    if args.verbose {
        eprint!("{}", display::describe(&response));
    }
    let code = response.code();
    if !code.is_success() {
        let diagnostic = String::from_utf8_lossy(response.payload());
        let name = code.name().map(|n| format!(" {n}")).unwrap_or_default();
        return Err(if diagnostic.is_empty() {
            format!("{code}{name}")
        } else {
            format!("{code}{name}: {diagnostic}")
        });
    }
    match &args.output {
        Some(path) => std::fs::write(path, response.payload())
            .map_err(|e| format!("cannot write {path}: {e}"))?,
        None => print_payload(&response)?,
    }
    context.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes a payload to stdout, ending it with a newline.
fn print_payload(response: &tern::Response) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    out.write_all(response.payload())
        .map_err(|e| format!("cannot write stdout: {e}"))?;
    if !response.payload().ends_with(b"\n") && !response.payload().is_empty() {
        let _ = out.write_all(b"\n");
    }
    out.flush().map_err(|e| format!("cannot write stdout: {e}"))
}

/// `-s SECONDS`: observes for that long, printing the first response and each notification
/// (with `-o`, appending them to the file), then deregisters. Exit status 0 when the first
/// response was a 2.xx; the observation ending early with an error response is an error.
async fn observe(
    request: tern::RequestBuilder,
    seconds: f64,
    args: &RequestArgs,
) -> Result<ExitCode, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let mut observation = request.observe().await.map_err(|e| match e {
        Error::Request(inner) => format!("no response from {}: {inner}", args.uri),
        other => other.to_string(),
    })?;
    let mut output = match &args.output {
        Some(path) => {
            Some(std::fs::File::create(path).map_err(|e| format!("cannot write {path}: {e}"))?)
        }
        None => None,
    };
    while let Ok(item) = tokio::time::timeout_at(deadline, observation.next()).await {
        let Some(item) = item else { break };
        let response = item.map_err(|e| e.to_string())?;
        if args.verbose {
            eprint!("{}", display::describe(&response));
        }
        let code = response.code();
        if !code.is_success() {
            let name = code.name().map(|n| format!(" {n}")).unwrap_or_default();
            return Err(format!(
                "{code}{name}: {}",
                String::from_utf8_lossy(response.payload())
            ));
        }
        match output.as_mut() {
            Some(file) => {
                file.write_all(response.payload())
                    .and_then(|()| file.write_all(b"\n"))
                    .map_err(|e| format!("cannot write the output: {e}"))?;
            }
            None => print_payload(&response)?,
        }
    }
    observation.cancel();
    // Give the deregistration a moment to leave before the context shuts down.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_options() {
        assert_eq!(
            parse_extra_option("15,a=1").unwrap(),
            (OptionNumber::URI_QUERY, b"a=1".to_vec())
        );
        assert_eq!(
            parse_extra_option("Max-Age,60").unwrap(),
            (OptionNumber::MAX_AGE, vec![60])
        );
        assert_eq!(
            parse_extra_option("2049,0xdead").unwrap(),
            (OptionNumber(2049), vec![0xde, 0xad])
        );
        assert!(parse_extra_option("Max-Age,x")
            .unwrap_err()
            .contains("unsigned integer"));
        assert!(parse_extra_option("Nope,1")
            .unwrap_err()
            .contains("unknown option"));
        assert!(parse_extra_option("2049,0xabc").is_err());
        assert!(
            parse_extra_option("Uri-Host,").is_err(),
            "Uri-Host must not be empty"
        );
    }

    #[test]
    fn timeouts() {
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("nan").is_err());
        assert_eq!(parse_timeout("1.5"), Ok(1.5));
    }
}
