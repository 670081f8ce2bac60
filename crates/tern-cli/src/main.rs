//! `tern`: a CoAP client, a demo server and a benchmark, in the manner of libcoap's
//! `coap-client` and aiocoap's tools.

mod bench;
mod client;
mod display;
mod dps;
mod dps_bench;
mod dtls_load;
mod files;
mod http_load;
mod load;
mod oscore;
mod pki;
mod progress;
mod proxy;
mod serve;
mod stream_load;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Tern: a secure CoAP stack.
#[derive(Parser)]
#[command(name = "tern", version, about)]
struct Cli {
    /// Log level (error, warn, info, debug, trace) or a tracing filter.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send a GET request.
    Get(client::RequestArgs),
    /// Send a POST request.
    Post(client::RequestArgs),
    /// Send a PUT request.
    Put(client::RequestArgs),
    /// Send a DELETE request.
    Delete(client::RequestArgs),
    /// Send a FETCH request.
    Fetch(client::RequestArgs),
    /// Send a PATCH request.
    Patch(client::RequestArgs),
    /// Send an iPATCH request.
    Ipatch(client::RequestArgs),
    /// Run the demo server.
    Serve(serve::ServeArgs),
    /// Run the CoAP → HTTP gateway (forwards Proxy-Uri requests to http:// and https://).
    Proxy(Box<proxy::ProxyArgs>),
    /// Load a server and report requests/s and latency.
    Bench(bench::BenchArgs),
    /// A minimal HTTP server for the gateway's benchmark (answers 200 to everything).
    #[command(hide = true)]
    BenchHttpServer {
        /// TCP address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
    },
    /// DTLS load: handshakes/s, many idle sessions, a spoofed ClientHello flood.
    DtlsLoad(dtls_load::DtlsLoadArgs),
    /// TCP and TLS load: pipelined requests/s, new connections/s, many idle connections.
    StreamLoad(stream_load::StreamLoadArgs),
    /// Zero-touch provisioning: the service, the device client and the store's admin commands.
    Dps(dps::DpsArgs),
    /// Certificates for provisioning trials: CAs, manufacturer and server certificates.
    Pki(pki::PkiArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One thread: the server is measured pinned to one core, and a client needs no more.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    use tern::Code;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Get(a) => client::run(Code::GET, a).await,
            Command::Post(a) => client::run(Code::POST, a).await,
            Command::Put(a) => client::run(Code::PUT, a).await,
            Command::Delete(a) => client::run(Code::DELETE, a).await,
            Command::Fetch(a) => client::run(Code::FETCH, a).await,
            Command::Patch(a) => client::run(Code::PATCH, a).await,
            Command::Ipatch(a) => client::run(Code::IPATCH, a).await,
            Command::Serve(a) => serve::run(a).await,
            Command::Proxy(a) => proxy::run(*a).await,
            Command::Bench(a) => bench::run(a).await,
            Command::BenchHttpServer { bind } => http_load::serve(bind).await,
            Command::DtlsLoad(a) => dtls_load::run(a).await,
            Command::StreamLoad(a) => stream_load::run(a).await,
            Command::Dps(a) => dps::run(a).await,
            Command::Pki(a) => pki::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
