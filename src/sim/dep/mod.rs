//! A simulator of Apple's DEP service (`mdmenrollment.apple.com`) that behaves as Apple documents:
//! OAuth 1.0a sessions with nonce and timestamp checks, expiring sessions, paged fetch and sync with
//! cursors that expire after 7 days, profile validation with Apple's codes, assign/remove/disown,
//! token modes and scripted faults. It serves plain HTTP on a given listener; tests run it on
//! `127.0.0.1:0`, the demo and `orchard sim dep` on a chosen address.

mod server;
pub mod world;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use hyper_util::rt::TokioIo;
use time::Duration;
use tokio::net::TcpListener;

use crate::apple::dep::ServerToken;
use crate::apple::dep::types::Account;
use crate::clock::SharedClock;
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
    pub world: World,
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
        let serving = world.clone();
        let task = tokio::spawn(accept_loop(listener, serving, opts));
        Ok(DepSim {
            base_url: format!("{scheme}://{addr}"),
            addr,
            token,
            world,
            task,
        })
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

async fn accept_loop(listener: TcpListener, world: World, opts: SimOptions) {
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
        let world = world.clone();
        let opts = opts.clone();
        connections.spawn(async move {
            let tls = opts.tls.clone();
            let service = hyper::service::service_fn(move |req| {
                server::handle(world.clone(), opts.clone(), req)
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
    /// Write the server token as Apple's portal does (`<server>_Token_<date>_smime.p7m`) into
    /// this directory.
    #[arg(long, value_name = "DIR", requires = "token_for")]
    pub write_token: Option<std::path::PathBuf>,
    /// The certificate (PEM or DER) the admin downloaded from Orchard ("Download your public
    /// key"); the token is encrypted for it, as Apple School Manager does.
    #[arg(long, value_name = "CERT")]
    pub token_for: Option<std::path::PathBuf>,
}

/// Starts the simulator on `args.listen`, prints its base URL and the server token it accepts
/// (simulator secrets only), and serves until Ctrl-C.
pub async fn run(args: SimDepArgs) -> anyhow::Result<()> {
    use crate::clock::Clock as _;
    let clock = crate::clock::SystemClock::shared();
    let sim = DepSim::bind(
        args.listen,
        clock,
        SimOptions {
            devices: args.devices,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    if let (Some(dir), Some(cert)) = (&args.write_token, &args.token_for) {
        let cert_bytes = std::fs::read(cert)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", cert.display()))?;
        let cert = crate::pki::cms::load_certificate(&cert_bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", cert.display()))?;
        let now = crate::clock::SystemClock.now();
        let path = write_token(
            &sim.token,
            &cert,
            dir,
            &sim.world.account().server_name,
            now,
        )?;
        println!("server token written to {}", path.display());
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

/// Writes `token` the way Apple's portal hands it out: the inner MIME message encrypted for
/// `cert` (AES-256-CBC, RSA PKCS#1 v1.5) in an S/MIME wrapper, named
/// `<server>_Token_<date>_smime.p7m`. Returns the file's path.
pub fn write_token(
    token: &ServerToken,
    cert: &crate::pki::cms::Certificate,
    dir: &std::path::Path,
    server_name: &str,
    now: time::OffsetDateTime,
) -> anyhow::Result<std::path::PathBuf> {
    use crate::pki::cms;
    let der = cms::encrypt_enveloped(token.to_message().as_bytes(), cert, cms::Cipher::Aes256Cbc)
        .map_err(|e| anyhow::anyhow!("cannot encrypt the token: {e}"))?;
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
    std::fs::write(&path, cms::smime_wrap(&der))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}
