//! `tern dps bench`: provisions many devices against a running service and reports devices/s
//! and provisioning time. Manufacturer certificates are issued before the clock starts; each
//! device then runs the whole client (time, credentials with a fresh P-256 key and CSR, ACLs,
//! hub; two TLS handshakes) with its own state file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tern_dps::device::client::{DeviceClient, FactoryCredentials};
use tern_dps::device::state::StateFile;
use tern_dps::pki::{issue_manufacturer_certificate, load_certified_key};
use tern_dps::schedule::RetrySchedule;

/// `tern dps bench …`.
#[derive(Debug, Args)]
pub struct DpsBenchArgs {
    /// The service's endpoint.
    #[arg(default_value = "coaps+tcp://127.0.0.1:20030")]
    endpoint: String,
    /// The manufacturer CA that issues the devices' certificates (its group must exist).
    #[arg(long)]
    maker_cert: PathBuf,
    /// Its key.
    #[arg(long)]
    maker_key: PathBuf,
    /// The service's trust anchor (`dpsca.pem`).
    #[arg(long)]
    dps_ca: PathBuf,
    /// How many devices to provision.
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Devices provisioning at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `tern dps bench`.
pub async fn run(args: DpsBenchArgs) -> Result<ExitCode, String> {
    if args.devices == 0 || args.devices > 1_000_000 {
        return Err("--devices must be 1 to 1000000".into());
    }
    if args.concurrency == 0 || args.concurrency > 4096 {
        return Err("--concurrency must be 1 to 4096".into());
    }
    let maker = load_certified_key(&args.maker_cert, &args.maker_key)
        .map_err(|e| format!("manufacturer CA: {e}"))?;
    let dps_ca = std::fs::read_to_string(&args.dps_ca)
        .map_err(|e| format!("--dps-ca {}: {e}", args.dps_ca.display()))?;
    let dir = std::env::temp_dir().join(format!("tern-dps-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let run_id = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let now = time::OffsetDateTime::now_utc();
    let mut clients = Vec::with_capacity(args.devices);
    for n in 0..args.devices {
        let certificate = issue_manufacturer_certificate(
            &maker,
            &format!("bench-{run_id}-{n}"),
            None,
            Duration::from_secs(86_400),
            now,
        )
        .map_err(|e| e.to_string())?;
        let factory = FactoryCredentials {
            certificate,
            service_ca_pem: Some(dps_ca.clone()),
        };
        // A folder per device, as each device has its own: thousands of state files (and
        // their temporary files) in one directory make every create and rename search it.
        let device_dir = dir.join(n.to_string());
        std::fs::create_dir_all(&device_dir)
            .map_err(|e| format!("{}: {e}", device_dir.display()))?;
        let client = DeviceClient::new(
            factory,
            vec![args.endpoint.clone()],
            StateFile::new(device_dir.join("state.json")),
        )
        .map_err(|e| e.to_string())?
        .with_schedule(RetrySchedule::parse("0.1,0.2,0.5").map_err(|e| e.to_string())?);
        clients.push(client);
    }
    let failed = Arc::new(AtomicUsize::new(0));
    let queue = Arc::new(std::sync::Mutex::new(clients.into_iter()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.min(args.devices) {
        let (queue, failed) = (queue.clone(), failed.clone());
        workers.spawn(async move {
            let mut times = Vec::new();
            loop {
                let Some(client) = queue.lock().expect("queue").next() else {
                    break;
                };
                let begun = Instant::now();
                let failed = failed.clone();
                let result = tokio::time::timeout(
                    Duration::from_secs(120),
                    client.provision(move |report| {
                        if report.failure.is_some() {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }),
                )
                .await;
                match result {
                    Ok(Ok(_)) => times.push(begun.elapsed()),
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("a device took over 120 s".to_owned()),
                }
            }
            Ok(times)
        });
    }
    let mut times = Vec::with_capacity(args.devices);
    while let Some(joined) = workers.join_next().await {
        times.extend(joined.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    times.sort();
    let pct = |p: f64| {
        let i = ((times.len() as f64 * p).ceil() as usize).clamp(1, times.len()) - 1;
        times[i].as_secs_f64() * 1000.0
    };
    let rate = times.len() as f64 / elapsed.as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));
    let seconds = elapsed.as_secs_f64();
    if args.json {
        println!(
            "{{\"devices\":{},\"concurrency\":{},\"seconds\":{seconds:.3},\"devices_per_s\":{rate:.1},\"p50_ms\":{p50:.1},\"p99_ms\":{p99:.1},\"max_ms\":{max:.1},\"failed_attempts\":{failed}}}",
            times.len(),
            args.concurrency,
        );
    } else {
        println!(
            "{} devices in {seconds:.2} s: {rate:.1} devices/s, p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {failed} failed attempts (retried)",
            times.len(),
        );
    }
    Ok(ExitCode::SUCCESS)
}
