//! HTTP for the gateway's benchmark: `tern bench http://…` (closed-loop load with the same
//! report as CoAP's, so that calls through the gateway and calls straight to the HTTP server
//! are measured alike), and the hidden `tern bench-http-server`, a minimal HTTP server to
//! measure against.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::load::latency_percentiles;

/// The load's parameters (from `tern bench`'s flags).
pub struct HttpLoad {
    /// The URL to GET.
    pub url: String,
    /// Requests in flight.
    pub concurrency: usize,
    /// How long to run.
    pub duration: Duration,
    /// Per-request time-out.
    pub timeout: Duration,
    /// Extra `Name: value` headers.
    pub headers: Vec<String>,
    /// One JSON line instead of a table.
    pub json: bool,
}

/// Runs the load and prints its report.
pub async fn run(load: HttpLoad) -> Result<ExitCode, String> {
    let uri: http::Uri = load.url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are loaded".into());
    }
    let mut headers = http::HeaderMap::new();
    for h in &load.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("-H {h:?}: expected `Name: value`"))?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("-H {h:?}: not a header name"))?;
        let value = http::HeaderValue::from_str(value.trim())
            .map_err(|_| format!("-H {h:?}: not a header value"))?;
        headers.append(name, value);
    }
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(load.concurrency)
        .build(connector);
    let started = Instant::now();
    let until = started + load.duration;
    let mut tasks = Vec::new();
    for _ in 0..load.concurrency {
        let (client, uri, headers, timeout) =
            (client.clone(), uri.clone(), headers.clone(), load.timeout);
        tasks.push(tokio::spawn(async move {
            let (mut latencies, mut timeouts, mut errors) = (Vec::new(), 0u64, 0u64);
            while Instant::now() < until {
                let mut request = http::Request::new(Full::new(Bytes::new()));
                *request.uri_mut() = uri.clone();
                *request.headers_mut() = headers.clone();
                let start = Instant::now();
                let exchange = async {
                    let response = client.request(request).await.ok()?;
                    let ok = response.status().is_success();
                    response.into_body().collect().await.ok()?;
                    Some(ok)
                };
                match tokio::time::timeout(timeout, exchange).await {
                    Ok(Some(true)) => {
                        let us = start.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                        latencies.push(us);
                    }
                    Ok(_) => errors += 1,
                    Err(_) => timeouts += 1,
                }
            }
            (latencies, timeouts, errors)
        }));
    }
    let mut latencies = Vec::new();
    let (mut timeouts, mut errors) = (0, 0);
    for task in tasks {
        let (l, t, e) = task.await.map_err(|e| format!("a worker failed: {e}"))?;
        latencies.extend(l);
        timeouts += t;
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (p50, p90, p99, p999) = latency_percentiles(&mut latencies);
    let requests = latencies.len();
    let rps = requests as f64 / elapsed;
    if load.json {
        println!(
            "{{\"requests\":{requests},\"rps\":{rps:.1},\"p50_us\":{p50},\"p90_us\":{p90},\"p99_us\":{p99},\"p999_us\":{p999},\"retransmissions\":0,\"timeouts\":{timeouts},\"errors\":{errors},\"concurrency\":{},\"duration_s\":{elapsed:.2}}}",
            load.concurrency
        );
    } else {
        println!(
            "{} for {elapsed:.1} s, {} clients, HTTP/1.1",
            load.url, load.concurrency
        );
        println!("  requests        {requests}");
        println!("  requests/s      {rps:.0}");
        println!("  latency p50     {p50} µs");
        println!("  latency p90     {p90} µs");
        println!("  latency p99     {p99} µs");
        println!("  latency p99.9   {p999} µs");
        println!("  timeouts        {timeouts}");
        println!("  errors          {errors}");
    }
    Ok(if requests == 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `tern bench-http-server`: answers every request 200 with a short text body and
/// `Cache-Control: no-store` (so a gateway's cache never answers for it), until Ctrl-C.
pub async fn serve(bind: SocketAddr) -> Result<ExitCode, String> {
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| format!("cannot listen on {bind}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("listening on {local} (http)");
    let accept = async {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_request| async {
                    let response = http::Response::builder()
                        .header("content-type", "text/plain")
                        .header("cache-control", "no-store")
                        .body(Full::new(Bytes::from_static(b"hello from http\n")))
                        .expect("a valid response");
                    Ok::<_, Infallible>(response)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    };
    tokio::select! {
        () = accept => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
