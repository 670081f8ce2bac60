//! `tern pki`: CAs, manufacturer certificates and server certificates for tests and trials
//! of the provisioning service. Keys are P-256 and written with mode 0600.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tern_dps::device::client::{MANUFACTURER_CERT_FILE, MANUFACTURER_KEY_FILE, SERVICE_CA_FILE};
use tern_dps::pki::{
    create_ca, issue_manufacturer_certificate, issue_server_certificate, load_certified_key,
    write_atomically, write_pem_files, CertifiedKey,
};

const DAY: Duration = Duration::from_secs(86_400);

/// `tern pki …`.
#[derive(Debug, Args)]
pub struct PkiArgs {
    #[command(subcommand)]
    command: PkiCommand,
}

#[derive(Debug, Subcommand)]
enum PkiCommand {
    /// Create a CA (a manufacturer CA, the service's identity CA, a hub CA):
    /// `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
    Ca {
        /// The CA's common name.
        #[arg(long)]
        cn: String,
        /// The file name stem.
        #[arg(long)]
        name: String,
        /// The folder to write to.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a device's manufacturer certificate into its certificate folder
    /// (`mfgcrt.pem`, `mfgkey.pem`, and `dpsca.pem` when `--dps-ca` is given).
    Manufacturer {
        #[command(flatten)]
        issuer: Issuer,
        /// The device's name (the certificate's CN).
        #[arg(long)]
        device: String,
        /// The device's certificate folder.
        #[arg(long, default_value = "pki_certs")]
        dir: PathBuf,
        /// The provisioning service's trust anchor to put beside it as `dpsca.pem`.
        #[arg(long)]
        dps_ca: Option<PathBuf>,
        /// Validity, days.
        #[arg(long, default_value_t = 3650)]
        days: u64,
    },
    /// Issue a TLS server certificate (for the service or a hub):
    /// `<dir>/<name>.pem` and `<dir>/<name>-key.pem`.
    Server {
        #[command(flatten)]
        issuer: Issuer,
        /// A DNS name or IP address (repeatable; the first is the CN).
        #[arg(long = "host", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        hosts: Vec<String>,
        /// The file name stem.
        #[arg(long)]
        name: String,
        /// The folder to write to.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Validity, days.
        #[arg(long, default_value_t = 825)]
        days: u64,
    },
}

#[derive(Debug, Args)]
struct Issuer {
    /// The issuing CA's certificate (PEM).
    #[arg(long)]
    ca_cert: PathBuf,
    /// The issuing CA's key (PEM).
    #[arg(long)]
    ca_key: PathBuf,
}

impl Issuer {
    fn load(&self) -> Result<CertifiedKey, String> {
        load_certified_key(&self.ca_cert, &self.ca_key).map_err(|e| format!("issuing CA: {e}"))
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn validity(days: u64) -> Result<Duration, String> {
    if days == 0 || days > 36_500 {
        return Err(format!("--days {days}: must be 1 to 36500"));
    }
    Ok(DAY * days as u32)
}

/// Runs `tern pki …`.
pub async fn run(args: PkiArgs) -> Result<ExitCode, String> {
    match args.command {
        PkiCommand::Ca {
            cn,
            name,
            dir,
            days,
        } => {
            let ca = create_ca(&cn, validity(days)?, now()).map_err(|e| e.to_string())?;
            let paths = write_pem_files(&dir, &name, &ca).map_err(|e| e.to_string())?;
            println!("wrote {} and {}", paths.cert.display(), paths.key.display());
        }
        PkiCommand::Manufacturer {
            issuer,
            device,
            dir,
            dps_ca,
            days,
        } => {
            let ca = issuer.load()?;
            let cert = issue_manufacturer_certificate(&ca, &device, None, validity(days)?, now())
                .map_err(|e| e.to_string())?;
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            write_file(
                &dir.join(MANUFACTURER_KEY_FILE),
                cert.key_pem.as_bytes(),
                0o600,
            )?;
            write_file(
                &dir.join(MANUFACTURER_CERT_FILE),
                cert.cert_pem.as_bytes(),
                0o644,
            )?;
            if let Some(dps_ca) = dps_ca {
                let pem = std::fs::read(&dps_ca)
                    .map_err(|e| format!("--dps-ca {}: {e}", dps_ca.display()))?;
                write_file(&dir.join(SERVICE_CA_FILE), &pem, 0o644)?;
            }
            println!("wrote the certificate folder {}", dir.display());
        }
        PkiCommand::Server {
            issuer,
            hosts,
            name,
            dir,
            days,
        } => {
            let ca = issuer.load()?;
            let names: Vec<&str> = hosts.iter().map(String::as_str).collect();
            let cert = issue_server_certificate(&ca, &names, validity(days)?, now())
                .map_err(|e| e.to_string())?;
            let paths = write_pem_files(&dir, &name, &cert).map_err(|e| e.to_string())?;
            println!("wrote {} and {}", paths.cert.display(), paths.key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    write_atomically(path, bytes, mode).map_err(|e| e.to_string())
}
