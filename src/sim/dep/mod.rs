//! A simulator of Apple's DEP service (`mdmenrollment.apple.com`) that behaves as Apple documents:
//! OAuth 1.0a sessions with nonce and timestamp checks, expiring sessions, paged fetch and sync with
//! cursors that expire after 7 days, profile validation with Apple's codes, assign/remove/disown,
//! token modes and scripted faults. It serves plain HTTP on a given listener; tests run it on
//! `127.0.0.1:0`, the demo and `orchard sim dep` on a chosen address.

mod server;
pub mod world;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use hyper_util::rt::TokioIo;
use time::Duration;
use tokio::net::TcpListener;

use crate::apple::dep::ServerToken;
use crate::apple::dep::types::Account;
use crate::clock::SharedClock;
use server::Servers;
pub use world::{Fault, TokenMode, World};

/// How the simulated service behaves.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The token the service accepts; `None` makes a new random one valid for a year.
    pub token: Option<ServerToken>,
    /// The organisation and MDM server `/account` reports.
    pub account: Account,
    /// Macs assigned to the server at start.
    pub devices: usize,
    /// Page size of fetch and sync when the client gives none, and the most it may ask for.
    pub page_default: u32,
    pub page_max: u32,
    /// How long a session lives.
    pub session_ttl: Duration,
    /// How far an OAuth timestamp may be from the service's clock.
    pub timestamp_window: Duration,
    /// Every API answer carries a new `X-ADM-Auth-Session` and the old one stops working.
    pub rotate_sessions: bool,
    /// Seed of the device generator (same seed, same serials).
    pub seed: u64,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How long every answer takes. Apple's service takes a few hundred milliseconds per call,
    /// so a sync of thousands of devices in small pages takes long enough to watch.
    pub latency: StdDuration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            token: None,
            account: Account {
                server_name: "Orchard Simulated MDM".into(),
                server_uuid: "5E1A7F00D0C5411B9E5E5A1B0C0FFEE1".into(),
                admin_id: "it-admin@school.example".into(),
                org_name: "Example Primary School".into(),
                org_email: "it-admin@school.example".into(),
                org_phone: "+44 20 7946 0000".into(),
                org_address: "1 School Lane, Exampleton".into(),
                org_id: Some("2468013".into()),
                org_id_hash: Some(
                    "7f3c1d0b5a9e4b6c8d2e1f0a3b5c7d9e7f3c1d0b5a9e4b6c8d2e1f0a3b5c7d9e".into(),
                ),
                org_type: Some("edu".into()),
                org_version: Some("v2".into()),
                ..Default::default()
            },
            devices: 0,
            page_default: 1000,
            page_max: 5000,
            session_ttl: Duration::minutes(5),
            timestamp_window: Duration::minutes(10),
            rotate_sessions: false,
            seed: 1,
            tls: None,
            latency: StdDuration::ZERO,
        }
    }
}

/// A running simulator. Dropping it stops the service.
pub struct DepSim {
    /// `http://127.0.0.1:PORT`, to give the client as its base URL.
    pub base_url: String,
    pub addr: SocketAddr,
    /// The token the service accepts.
    pub token: ServerToken,
    /// The MDM server `token` belongs to.
    pub world: World,
    servers: Servers,
    task: tokio::task::JoinHandle<()>,
}

impl DepSim {
    /// Starts the service on an already bound listener.
    pub async fn start(
        listener: TcpListener,
        clock: SharedClock,
        opts: SimOptions,
    ) -> std::io::Result<DepSim> {
        let addr = listener.local_addr()?;
        let token = opts
            .token
            .clone()
            .unwrap_or_else(|| random_token(clock.now() + Duration::days(365)));
        let world = World::new(
            clock,
            token.clone(),
            opts.account.clone(),
            opts.page_default.max(1),
            opts.page_max.max(opts.page_default).max(1),
            opts.seed,
        );
        world.add_macs(opts.devices);
        let scheme = if opts.tls.is_some() { "https" } else { "http" };
        let servers = Servers::new(world.clone(), opts.latency);
        let task = tokio::spawn(accept_loop(listener, servers.clone(), opts));
        Ok(DepSim {
            base_url: format!("{scheme}://{addr}"),
            addr,
            token,
            world,
            servers,
            task,
        })
    }

    /// Another MDM server of the same organisation on this service (the admin added one in
    /// ABM/ASM), with its own token ([`World::token`]), name, UUID and `devices` Macs.
    pub fn add_server(&self, server_name: &str, devices: usize) -> World {
        let world = self.world.sibling(server_name);
        world.add_macs(devices);
        self.servers.push(world.clone());
        world
    }

    /// Changes how long every answer takes from now on.
    pub fn set_latency(&self, latency: StdDuration) {
        self.servers.set_latency(latency);
    }

    /// Binds `addr` (e.g. `127.0.0.1:0`) and starts the service.
    pub async fn bind(
        addr: SocketAddr,
        clock: SharedClock,
        opts: SimOptions,
    ) -> std::io::Result<DepSim> {
        DepSim::start(TcpListener::bind(addr).await?, clock, opts).await
    }
}

impl Drop for DepSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, servers: Servers, opts: SimOptions) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "DEP simulator accept failed");
                tokio::time::sleep(StdDuration::from_millis(50)).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let servers = servers.clone();
        let opts = opts.clone();
        connections.spawn(async move {
            let tls = opts.tls.clone();
            let service = hyper::service::service_fn(move |req| {
                server::handle(servers.clone(), opts.clone(), req)
            });
            let http = hyper::server::conn::http1::Builder::new();
            match tls {
                None => {
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(StdDuration::from_secs(10), acceptor.accept(stream))
                            .await
                    else {
                        return;
                    };
                    let _ = http.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        });
    }
}

/// A token in Apple's shape: `CK_`/`CS_`/`AT_`/`AS_` plus 128 hex digits.
pub fn random_token(expiry: time::OffsetDateTime) -> ServerToken {
    let value = |prefix: &str| format!("{prefix}{}", hex::encode(rand::random::<[u8; 64]>()));
    ServerToken {
        consumer_key: value("CK_"),
        consumer_secret: value("CS_"),
        access_token: value("AT_"),
        access_secret: value("AS_"),
        access_token_expiry: expiry.replace_nanosecond(0).unwrap_or(expiry),
    }
}

/// `orchard sim dep`: run the simulator until interrupted.
#[derive(Debug, Clone, clap::Args)]
pub struct SimDepArgs {
    /// Address to listen on (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:8480")]
    pub listen: SocketAddr,
    /// Macs assigned to the simulated MDM server at start.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Page size of fetch and sync when the client asks for none.
    #[arg(long, default_value_t = 1000)]
    pub page_size: u32,
    /// Milliseconds every answer takes; Apple's service takes a few hundred.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency_ms: u64,
    /// Write the server token as Apple's portal does (`<server>_Token_<date>_smime.p7m`) into
    /// this directory. Without --token-for, a keypair is made too and its private key
    /// (`orchard-token-key.pem`) and certificate are written beside the token, for
    /// `orchard token inspect --key`.
    #[arg(long, value_name = "DIR")]
    pub write_token: Option<PathBuf>,
    /// The certificate (PEM or DER) the admin downloaded from Orchard ("Download your public
    /// key"); the token is encrypted for it, as Apple School Manager does.
    #[arg(long, value_name = "CERT", requires = "write_token")]
    pub token_for: Option<PathBuf>,
}

/// Starts the simulator on `args.listen`, prints its base URL and the server token it accepts
/// (simulator secrets only), and serves until Ctrl-C.
pub async fn run(args: SimDepArgs) -> anyhow::Result<()> {
    let clock = crate::clock::SystemClock::shared();
    let sim = DepSim::bind(
        args.listen,
        clock.clone(),
        SimOptions {
            devices: args.devices,
            page_default: args.page_size,
            latency: StdDuration::from_millis(args.latency_ms),
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    if let Some(dir) = &args.write_token {
        let written = write_token_files(
            &sim.token,
            args.token_for.as_deref(),
            dir,
            &sim.world.account().server_name,
            clock.now(),
        )?;
        println!("server token written to {}", written.token.display());
        if let Some(key) = &written.key {
            println!("its private key written to {}", key.display());
            println!(
                "check it with: orchard token inspect --key {} {}",
                key.display(),
                written.token.display()
            );
        }
    }
    println!("DEP simulator listening on {}", sim.base_url);
    println!(
        "{} Macs assigned to this MDM server",
        sim.world.device_count()
    );
    println!("server token it accepts:");
    println!("{}", sim.token.to_json());
    tokio::signal::ctrl_c().await?;
    Ok(())
}

/// The files [`write_token_files`] wrote.
#[derive(Debug, Clone)]
pub struct WrittenToken {
    /// The `.p7m`, named as Apple's portal names it.
    pub token: PathBuf,
    /// The private key (PKCS#1 PEM, mode 0600) the token is encrypted for, when the keypair was
    /// made here.
    pub key: Option<PathBuf>,
    /// That keypair's certificate (PEM).
    pub cert: Option<PathBuf>,
}

/// File names of the keypair [`write_token_files`] makes.
pub const KEY_FILE: &str = "orchard-token-key.pem";
pub const CERT_FILE: &str = "orchard-public-key.pem";

/// Writes `token` into `dir` as Apple's portal does, encrypted for the certificate in the file
/// `cert` or, with none, for a keypair made here whose private key and certificate are written
/// beside it.
pub fn write_token_files(
    token: &ServerToken,
    cert: Option<&Path>,
    dir: &Path,
    server_name: &str,
    now: time::OffsetDateTime,
) -> anyhow::Result<WrittenToken> {
    use crate::pki::{cms, token_keypair::TokenKeypair};
    let (cert, made) = match cert {
        Some(path) => {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            let cert = cms::load_certificate(&bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            (cert, None)
        }
        None => {
            let pair = TokenKeypair::generate(now)
                .map_err(|e| anyhow::anyhow!("cannot make a keypair: {e}"))?;
            (pair.certificate().clone(), Some(pair))
        }
    };
    let token_path = write_token(token, &cert, dir, server_name, now)?;
    let mut written = WrittenToken {
        token: token_path,
        key: None,
        cert: None,
    };
    if let Some(pair) = made {
        let key_pem = pair
            .key_pem()
            .map_err(|e| anyhow::anyhow!("cannot encode the private key: {e}"))?;
        let key_path = dir.join(KEY_FILE);
        write_private(&key_path, key_pem.as_bytes())?;
        let cert_path = dir.join(CERT_FILE);
        std::fs::write(&cert_path, pair.cert_pem())
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", cert_path.display()))?;
        written.key = Some(key_path);
        written.cert = Some(cert_path);
    }
    Ok(written)
}

/// `token` as Apple's portal hands it out: the inner MIME message encrypted for `cert`
/// (AES-256-CBC, RSA PKCS#1 v1.5) in an S/MIME wrapper.
pub fn token_p7m(
    token: &ServerToken,
    cert: &crate::pki::cms::Certificate,
) -> Result<String, crate::pki::cms::CmsError> {
    use crate::pki::cms;
    let der = cms::encrypt_enveloped(token.to_message().as_bytes(), cert, cms::Cipher::Aes256Cbc)?;
    Ok(cms::smime_wrap(&der))
}

/// Writes [`token_p7m`] named `<server>_Token_<date>_smime.p7m` into `dir`. Returns the file's
/// path.
pub fn write_token(
    token: &ServerToken,
    cert: &crate::pki::cms::Certificate,
    dir: &Path,
    server_name: &str,
    now: time::OffsetDateTime,
) -> anyhow::Result<PathBuf> {
    let p7m =
        token_p7m(token, cert).map_err(|e| anyhow::anyhow!("cannot encrypt the token: {e}"))?;
    let name: String = server_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let date = now.date();
    let path = dir.join(format!(
        "{name}_Token_{:04}-{:02}-{:02}_smime.p7m",
        date.year(),
        u8::from(date.month()),
        date.day()
    ));
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(&path, p7m)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ade::token::inspect::{self, InspectArgs};

    #[test]
    fn write_token_without_a_certificate_writes_a_key_that_inspect_opens() {
        let now = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let token = random_token(now + Duration::days(365));
        let dir = tempfile::tempdir().unwrap();
        let written =
            write_token_files(&token, None, dir.path(), "Orchard Simulated MDM", now).unwrap();
        let key = written.key.expect("a private key is written");
        assert_eq!(key, dir.path().join(KEY_FILE));
        assert_eq!(written.cert, Some(dir.path().join(CERT_FILE)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the private key is private");
        }
        let seen = inspect::run(
            &InspectArgs {
                key: key.clone(),
                token: written.token.clone(),
            },
            now,
        )
        .unwrap();
        assert_eq!(seen.consumer_key, token.consumer_key);
        assert_eq!(seen.access_token_expiry, token.access_token_expiry);
        assert!(!seen.expired);

        // A second token written with the certificate made above opens with the same key.
        let other = random_token(now + Duration::days(30));
        let again = write_token_files(
            &other,
            written.cert.as_deref(),
            &dir.path().join("again"),
            "Orchard Simulated MDM",
            now,
        )
        .unwrap();
        assert!(again.key.is_none() && again.cert.is_none());
        let seen = inspect::run(
            &InspectArgs {
                key,
                token: again.token,
            },
            now,
        )
        .unwrap();
        assert_eq!(seen.consumer_key, other.consumer_key);
    }
}
