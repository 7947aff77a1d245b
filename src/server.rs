//! `orchard serve` as a library: [`start`] opens the data directory, the store, the CA and the TLS
//! certificate, binds the listener and serves every route; the returned [`Running`] gives the bound
//! address and stops it gracefully. `main.rs` and `orchard demo` both start Orchard this way.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::DistinguishedName;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use url::Url;

use crate::ade::inventory::{Inventory, InventoryError};
use crate::ade::sync::{SyncManager, SyncSettings};
use crate::ade::token::TokenService;
use crate::apple::apns::ApnsSettings;
use crate::apple::apns::pusher::PusherSettings;
use crate::apple::push_cert::{PushCertError, PushCertService};
use crate::clock::{SharedClock, SystemClock};
use crate::config::{Config, LogFormat};
use crate::http::{self, Shutdown};
use crate::mdm::runtime::{Mdm, MdmParts, MdmSettings, MdmSetupError, TlsSigner};
use crate::metrics::Metrics;
use crate::pki::ca::{self, CaError, LocalCa};
use crate::pki::secret::{SecretError, SecretKey};
use crate::store::{Store, StoreError};
use crate::web::{App, MissingPart, ops, routes::Site, session, setup};

/// How long in-flight requests may take to finish after a shutdown is asked for.
const GRACE: Duration = Duration::from_secs(20);

/// Why Orchard could not start, said so an operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot open the database in {path}: {source} (is another Orchard running on this data directory?)"
    )]
    Store { path: String, source: StoreError },
    #[error(transparent)]
    StoreIo(#[from] StoreError),
    #[error("cannot load the data directory's secret key: {0}")]
    Secret(#[from] SecretError),
    #[error("cannot load the push certificate: {0}")]
    PushCert(#[from] PushCertError),
    #[error("cannot load the device inventory: {0}")]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Tls(#[from] http::tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot set up MDM: {0}")]
    Mdm(#[from] MdmSetupError),
    #[error(transparent)]
    Wiring(#[from] MissingPart),
    #[error("a route is registered wrongly: {0}")]
    Routes(#[from] http::RouteError),
}

/// A serving Orchard.
pub struct Running {
    pub addr: SocketAddr,
    pub public_url: Url,
    pub app: App,
    /// The first-admin link when no admin exists yet.
    pub setup_link: Option<String>,
    shutdown: Shutdown,
    task: JoinHandle<()>,
}

impl Running {
    /// A handle that makes the server stop (e.g. from a signal handler).
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish, flushes the store.
    pub async fn stop(self) -> Result<(), StoreError> {
        self.shutdown.trigger();
        self.wait().await
    }

    /// Waits until the server has stopped (after [`Shutdown::trigger`]), then flushes the store.
    pub async fn wait(self) -> Result<(), StoreError> {
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "the server task failed");
        }
        self.app.store.flush().await
    }
}

/// Opens everything in `config.data_dir` and serves on `config.listen`, with the system clock.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    start_with_clock(config, SystemClock::shared()).await
}

/// [`start`] with a given clock (for `orchard demo` and tests that move time).
pub async fn start_with_clock(config: Config, clock: SharedClock) -> Result<Running, ServeError> {
    let data_dir = config.data_dir.clone();
    create_data_dir(&data_dir)?;
    let secret = Arc::new(SecretKey::load_or_create(&data_dir)?);
    let db = data_dir.join("db");
    let store = Store::open(&db).map_err(|source| ServeError::Store {
        path: db.display().to_string(),
        source,
    })?;
    let tls_dir = data_dir.join("tls");
    let ca = LocalCa::load_or_create(&tls_dir, &secret, clock.now())?;
    let identity = match &config.tls_files {
        Some((cert, key)) => {
            let (chain, key) = http::tls::load_pem_pair(cert, key)?;
            ca::TlsIdentity { chain, key }
        }
        None => ca::server_identity(&tls_dir, &ca, &secret, &config.hostnames, clock.now())?,
    };
    let signer = TlsSigner::from_identity(&identity)?;

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    let public_url = config.public_url_for(addr);

    let push_certs = PushCertService::new(Arc::new(store.clone()), secret.clone(), clock.clone())?;
    let metrics = Metrics::new();
    let shutdown = Shutdown::new();
    let dep = crate::apple::dep::ClientOptions {
        base_url: config
            .dep_base_url
            .as_str()
            .trim_end_matches('/')
            .to_string(),
        ..Default::default()
    };
    let tokens = Arc::new(TokenService::new(
        Arc::new(store.clone()),
        secret.clone(),
        clock.clone(),
        dep,
        metrics.clone(),
    ));
    let inventory = Inventory::open(store.clone())?;
    let settings =
        SyncSettings::default().with_removed_grace_days(config.removed_grace_days.into());
    let sync = SyncManager::new(
        store.clone(),
        inventory.clone(),
        clock.clone(),
        metrics.clone(),
        settings,
        tokens.clone(),
        shutdown.subscribe(),
    );
    let push_certs = Arc::new(push_certs);
    let mdm = Mdm::new(MdmParts {
        store: store.clone(),
        clock: clock.clone(),
        metrics: metrics.clone(),
        secret: secret.clone(),
        push_certs: push_certs.clone(),
        inventory: inventory.clone(),
        signer,
        settings: MdmSettings {
            base_url: public_url.as_str().trim_end_matches('/').to_string(),
            organization: "Orchard".into(),
            root_ca_der: config.tls_files.is_none().then(|| ca.cert_der().to_vec()),
            apns: ApnsSettings {
                base_url: config
                    .apns_base_url
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
                extra_roots: config.apns_extra_roots.clone(),
                ..ApnsSettings::default()
            },
            pusher: PusherSettings::default(),
        },
    })?;
    // TLS asks a client for a certificate from Orchard's CA or its SCEP CA (device identities).
    let hints = ca
        .subject_der()
        .into_iter()
        .chain(mdm.ca_subject_der())
        .map(DistinguishedName::from)
        .collect();
    let tls = http::tls::server_config(identity.chain, identity.key, hints)?;
    let app = App::builder()
        .mdm(mdm.clone())
        .push_certs(push_certs)
        .tokens(tokens)
        .inventory(inventory)
        .sync(sync.clone())
        .store(store)
        .clock(clock)
        .metrics(metrics)
        .config(config)
        .secret(secret)
        .ca(Arc::new(ca))
        .public_url(public_url.clone())
        .build()?;
    ops::init_metrics(&app);
    let site = Site::build(app.clone())?;
    let setup_link = setup::issue_link(&app)?;
    let purged = session::purge_expired(&app)?;
    if purged > 0 {
        tracing::info!(purged, "removed expired admin sessions");
    }
    app.store.flush().await?;

    tokio::spawn(sync.supervise());
    tokio::spawn(mdm.run(shutdown.subscribe()));
    let task = tokio::spawn(http::serve(
        listener,
        tls,
        Arc::new(site),
        shutdown.clone(),
        GRACE,
    ));
    tracing::info!(%addr, url = %public_url, "Orchard is serving");
    if let Some(link) = &setup_link {
        tracing::warn!(link = %link, "No admin account exists yet. Open this link within 24 hours to create the first one: {link}");
    }
    Ok(Running {
        addr,
        public_url,
        app,
        setup_link,
        shutdown,
        task,
    })
}

/// Sets up logging: human lines by default, JSON with `--log-format json`. `RUST_LOG` filters.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

fn create_data_dir(path: &Path) -> Result<(), ServeError> {
    let err = |source| ServeError::DataDir {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    Ok(())
}
