//! `tern bench`: closed-loop load against one resource — `concurrency` requests in flight,
//! each worker sending its next request as soon as the previous one is answered, spread over
//! `sockets` client sockets (each with NSTART raised to its share of the workers, so that one
//! driver wake-up sends and receives many datagrams). Reports requests/s, latency percentiles,
//! retransmissions and time-outs.
//!
//! With `-b/--block-size` each request is a whole block-wise transfer (the client's transparent
//! Block1/Block2 path, as `tern get -b`): the latency is the transfer's, and the report adds the
//! body bytes moved and MB/s.
//!
//! coaps:// URIs run over DTLS with a PSK (`-u/--psk-identity`, `-k/--psk-key`): each client
//! socket does its handshake with one request before the clock starts, so the figure is
//! requests over established sessions (handshakes are `tern dtls-load handshakes`' job).
//!
//! coap+tcp:// and coaps+tcp:// (TLS, with the same PSK flags) run over one connection per
//! client "socket", opened (TCP connect, TLS handshake, CSM exchange) before the clock starts;
//! the requests in flight on a connection are pipelined on it.

use crate::load::latency_percentiles;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use std::net::SocketAddr;

use tern::oscore::{OscoreClient, OscoreContext};
use tern::proto::endpoint::RequestParams;
use tern::proto::uri::Scheme;
use tern::proto::{Message, TransmissionParams};
use tern::{Code, Context, Error};

/// Arguments of `tern bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The resource to load, e.g. coap://127.0.0.1/ (or an http:// URL: GET over HTTP/1.1,
    /// for comparing with a gateway).
    uri: String,
    /// Send each request to the URI as a forward proxy with this target in Proxy-Uri.
    #[arg(long = "proxy-uri", value_name = "URI")]
    proxy_uri: Option<String>,
    /// An extra `Name: value` header for http:// URLs (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER")]
    headers: Vec<String>,
    /// Requests in flight.
    #[arg(short = 'c', long, default_value_t = 32)]
    concurrency: usize,
    /// Client sockets the requests are spread over (default: one per 8 requests in flight).
    #[arg(long)]
    sockets: Option<usize>,
    /// Seconds to run.
    #[arg(short = 'd', long, default_value_t = 10.0)]
    duration: f64,
    /// Send NON requests instead of CON.
    #[arg(long)]
    non: bool,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 0)]
    payload: usize,
    /// Method.
    #[arg(long, value_enum, default_value_t = Method::Get)]
    method: Method,
    /// Per-request time-out in seconds.
    #[arg(long, default_value_t = 5.0)]
    timeout: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Block size (16 … 1024): each request becomes a whole block-wise transfer, and the
    /// report adds body MB/s.
    #[arg(short = 'b', long = "block-size")]
    block_size: Option<usize>,
    /// Protect every request with OSCORE (RFC 8613), with the context in this folder
    /// (aiocoap's format). Its sequence-number marks are stored 65,536 numbers apart, so that
    /// storage is not what is measured.
    #[arg(long = "oscore", value_name = "DIR", conflicts_with = "block_size")]
    oscore: Option<std::path::PathBuf>,
    /// PSK identity for coaps://.
    #[arg(short = 'u', long = "psk-identity", requires = "psk_key")]
    psk_identity: Option<String>,
    /// PSK for coaps://: text, hex:00ff..., or sha256:PASSWORD (its SHA-256 digest)
    #[arg(short = 'k', long = "psk-key", requires = "psk_identity")]
    psk_key: Option<String>,
}

/// Methods the benchmark can send.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Method {
    /// GET.
    Get,
    /// POST.
    Post,
    /// PUT.
    Put,
}

#[derive(Default)]
struct WorkerResult {
    latencies_us: Vec<u32>,
    timeouts: u64,
    errors: u64,
    /// Request and response body bytes of the successful requests.
    body_bytes: u64,
}

/// How many sequence numbers each stored mark reserves under `--oscore`.
const BENCH_MARK_STEP: u64 = 65_536;

/// What each worker sends: one prepared message, or a block-wise transfer.
#[derive(Clone)]
enum Load {
    Message(Message),
    /// The message, protected anew with OSCORE for each request.
    Protected(Message, OscoreClient),
    Transfer {
        method: Code,
        uri: tern::proto::uri::CoapUri,
        payload: Vec<u8>,
        block_size: usize,
    },
}

/// Sends one request over the URI's transport: UDP, the context's DTLS session, or its TCP
/// or TLS connection.
async fn send(
    context: &Context,
    scheme: Scheme,
    peer: SocketAddr,
    message: Message,
    params: RequestParams,
) -> Result<tern::Response, Error> {
    context.send_over(scheme, peer, message, params).await
}

/// One OSCORE request: protected, sent, its response unprotected.
async fn protected(
    context: &Context,
    scheme: Scheme,
    peer: SocketAddr,
    message: &Message,
    client: &OscoreClient,
    params: RequestParams,
) -> Result<tern::Response, Error> {
    let (outer, binding) = client.protect(message)?;
    let response = send(context, scheme, peer, outer, params).await?;
    Ok(tern::Response::from_message(
        client.unprotect(&binding, response.message())?,
    ))
}

async fn worker(
    context: Context,
    scheme: Scheme,
    peer: SocketAddr,
    load: Load,
    timeout: Duration,
    until: Instant,
) -> WorkerResult {
    let mut result = WorkerResult::default();
    let params = RequestParams {
        timeout: Some(timeout),
    };
    while Instant::now() < until {
        let start = Instant::now();
        let (sent, outcome) = match &load {
            Load::Message(message) => (
                message.payload.len(),
                send(&context, scheme, peer, message.clone(), params).await,
            ),
            Load::Protected(message, client) => (
                message.payload.len(),
                protected(&context, scheme, peer, message, client, params).await,
            ),
            Load::Transfer {
                method,
                uri,
                payload,
                block_size,
            } => (
                payload.len(),
                context
                    .request_uri(*method, uri.clone())
                    .payload(payload.clone())
                    .block_size(*block_size)
                    .timeout(timeout)
                    .send()
                    .await,
            ),
        };
        match outcome {
            Ok(response) if !response.code().is_error() => {
                let us = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                result.latencies_us.push(us);
                result.body_bytes += (sent + response.payload().len()) as u64;
            }
            Ok(_) => result.errors += 1,
            Err(Error::Request(_)) => result.timeouts += 1,
            Err(_) => result.errors += 1,
        }
    }
    result
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs) -> Result<ExitCode, String> {
    if args.concurrency == 0 || args.concurrency > 10_000 {
        return Err(format!(
            "concurrency must be between 1 and 10000, not {}",
            args.concurrency
        ));
    }
    if !(args.duration.is_finite() && args.duration > 0.0 && args.duration <= 86_400.0) {
        return Err(format!(
            "duration must be between 0 and 86400 seconds, not {}",
            args.duration
        ));
    }
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 3600.0) {
        return Err(format!(
            "timeout must be between 0 and 3600 seconds, not {}",
            args.timeout
        ));
    }
    if let Some(size) = args.block_size {
        if !(16..=1024).contains(&size) || !size.is_power_of_two() {
            return Err(format!(
                "-b/--block-size must be 16, 32, 64, 128, 256, 512 or 1024, not {size}"
            ));
        }
        if args.non {
            return Err("-b/--block-size runs CON transfers; leave out --non".into());
        }
    }
    if args.uri.starts_with("http://") {
        return crate::http_load::run(crate::http_load::HttpLoad {
            url: args.uri.clone(),
            concurrency: args.concurrency,
            duration: Duration::from_secs_f64(args.duration),
            timeout: Duration::from_secs_f64(args.timeout),
            headers: args.headers.clone(),
            json: args.json,
        })
        .await;
    }
    if !args.headers.is_empty() {
        return Err("-H/--header is for http:// URLs".into());
    }
    let method = match args.method {
        Method::Get => Code::GET,
        Method::Post => Code::POST,
        Method::Put => Code::PUT,
    };
    // The URI is parsed and resolved once, so a typo is one clear message rather than N
    // failures, and the load measures the server rather than the URI parser.
    let probe = Context::client();
    let mut builder = probe
        .request(method, &args.uri)
        .payload(vec![b'x'; args.payload]);
    if args.non {
        builder = builder.non();
    }
    if let Some(target) = &args.proxy_uri {
        builder = builder.option(tern::OptionNumber::PROXY_URI, target.as_bytes().to_vec());
    }
    let message = builder.build_message().map_err(|e| e.to_string())?;
    let uri =
        tern::proto::uri::CoapUri::parse(&args.uri).map_err(|e| format!("invalid URI: {e}"))?;
    let peer = tern::resolve(&uri).await.map_err(|e| e.to_string())?;
    let scheme = uri.scheme;
    let secure = scheme.is_secure();
    let load = match args.block_size {
        Some(block_size) => Load::Transfer {
            method,
            uri: uri.clone(),
            payload: message.payload.clone(),
            block_size,
        },
        None => match &args.oscore {
            Some(dir) => {
                let context = OscoreContext::from_folder(dir, BENCH_MARK_STEP)
                    .map_err(|e| format!("--oscore: {e}"))?;
                Load::Protected(message.clone(), OscoreClient::new(context))
            }
            None => Load::Message(message.clone()),
        },
    };
    let psk = match (&args.psk_identity, &args.psk_key) {
        (Some(identity), Some(key)) if secure => {
            let key =
                tern::tls::credentials::parse_key(key).map_err(|e| format!("-k/--psk-key: {e}"))?;
            Some(
                tern::Psk::new(identity.as_bytes(), key.to_vec())
                    .map_err(|e| format!("-u/-k: {e}"))?,
            )
        }
        (Some(_), _) | (_, Some(_)) => {
            return Err("-u/-k are for coaps:// and coaps+tcp:// URIs".into());
        }
        _ if secure => return Err(format!("{scheme}:// needs a PSK: -u IDENTITY -k KEY")),
        _ => None,
    };
    let timeout = Duration::from_secs_f64(args.timeout);
    let sockets = args
        .sockets
        .unwrap_or(args.concurrency.div_ceil(8))
        .clamp(1, args.concurrency);
    let per_socket = args.concurrency.div_ceil(sockets);
    let mut contexts = Vec::new();
    for _ in 0..sockets {
        let params = TransmissionParams {
            nstart: per_socket,
            ..Default::default()
        };
        // Load generation sends far more than 265 requests/s per socket: message IDs come round
        // well within EXCHANGE_LIFETIME, as with libcoap's client under load. Servers with the
        // default deduplication caps only remember the last thousand or so per client.
        let config = tern::proto::EndpointConfig {
            params,
            strict_message_ids: false,
            ..Default::default()
        };
        let builder = Context::builder().endpoint_config(config);
        let builder = match &psk {
            // The DTLS endpoint is made on first use (one socket per context, as for UDP);
            // the handshake gets the request time-out.
            Some(psk) => builder.dtls_client(tern::tls::DtlsSettings {
                psk: Some(psk.clone()),
                handshake_timeout: timeout,
                ..Default::default()
            }),
            None => builder.bind(
                if peer.is_ipv4() {
                    "0.0.0.0:0"
                } else {
                    "[::]:0"
                }
                .parse()
                .map_err(|e| format!("{e}"))?,
            ),
        };
        let context = builder.build().await.map_err(|e| e.to_string())?;
        contexts.push(context);
    }
    if secure || scheme.is_reliable() {
        // Handshakes (DTLS; TCP connect and CSM exchange) first, all sockets at once,
        // outside the measured time.
        let params = RequestParams {
            timeout: Some(timeout),
        };
        let mut warmups = Vec::new();
        for context in &contexts {
            let (context, message) = (context.clone(), message.clone());
            warmups.push(tokio::spawn(async move {
                send(&context, scheme, peer, message, params).await
            }));
        }
        for warmup in warmups {
            match warmup
                .await
                .map_err(|e| format!("a handshake task failed: {e}"))?
            {
                Ok(_) => {}
                Err(e) => {
                    for context in &contexts {
                        context.shutdown().await;
                    }
                    return Err(format!("{scheme} session to {peer} not established: {e}"));
                }
            }
        }
    }
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.duration);
    let mut tasks = Vec::new();
    for i in 0..args.concurrency {
        let context = contexts[i % sockets].clone();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            worker(context, scheme, peer, load, timeout, until).await
        }));
    }
    let mut latencies = Vec::new();
    let (mut timeouts, mut errors, mut body_bytes) = (0, 0, 0);
    for task in tasks {
        let r = task.await.map_err(|e| format!("a worker failed: {e}"))?;
        latencies.extend(r.latencies_us);
        timeouts += r.timeouts;
        errors += r.errors;
        body_bytes += r.body_bytes;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut retransmissions = 0;
    for context in &contexts {
        retransmissions += context.stats().await.retransmissions;
        context.shutdown().await;
    }
    let (p50, p90, p99, p999) = latency_percentiles(&mut latencies);
    let requests = latencies.len();
    let rps = requests as f64 / elapsed;
    let mbps = body_bytes as f64 / elapsed / 1e6;
    if args.json {
        println!(
            "{{\"requests\":{requests},\"rps\":{rps:.1},\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"retransmissions\":{retransmissions},\"timeouts\":{timeouts},\"errors\":{errors},\"body_bytes\":{body_bytes},\"mb_per_s\":{mbps:.3},\"concurrency\":{},\"sockets\":{sockets},\"duration_s\":{elapsed:.2}}}",
            args.concurrency
        );
    } else {
        println!(
            "{} for {elapsed:.1} s, {} clients, {}{}",
            args.uri,
            args.concurrency,
            if args.non { "NON" } else { "CON" },
            match scheme {
                Scheme::Coaps => ", DTLS-PSK",
                Scheme::CoapTcp => ", TCP",
                Scheme::CoapsTcp => ", TLS-PSK",
                Scheme::Coap => "",
            }
        );
        println!("  requests        {requests}");
        println!("  requests/s      {rps:.0}");
        println!("  latency p50     {p50} µs");
        println!("  latency p90     {p90} µs");
        println!("  latency p99     {p99} µs");
        println!("  latency p99.9   {p999} µs");
        println!("  retransmissions {retransmissions}");
        println!("  timeouts        {timeouts}");
        println!("  errors          {errors}");
        println!("  body bytes      {body_bytes}");
        println!("  body MB/s       {mbps:.2}");
    }
    Ok(if requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use crate::load::percentile;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 99.9), 100);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
