//! The admin web UI and its framework: the application state ([`App`]), route registration per
//! feature ([`Routes`]), sessions, CSRF, forms, admin accounts, the setup link, the audit log, API
//! keys, the dashboard, error pages and the operational endpoints.
//!
//! A feature adds its pages with one line in [`register_all`] and its navigation item with one
//! `r.nav(..)` call inside its registration function.

pub mod accounts;
pub mod api;
pub mod audit;
pub mod cli;
pub mod dashboard;
pub mod devices;
pub mod fmt;
pub mod forms;
pub mod mdm;
pub mod ops;
pub mod push_cert;
pub mod request;
pub mod response;
pub mod routes;
pub mod session;
pub mod setup;
pub mod signin;
pub mod storage;
pub mod sync;
pub mod tokens;
pub mod users;

use std::sync::Arc;

use url::Url;

use crate::ade::inventory::Inventory;
use crate::ade::sync::SyncManager;
use crate::ade::token::TokenService;
use crate::apple::push_cert::PushCertService;
use crate::clock::SharedClock;
use crate::config::Config;
use crate::mdm::runtime::Mdm;
use crate::metrics::Metrics;
use crate::pki::ca::LocalCa;
use crate::pki::secret::SecretKey;
use crate::store::Store;

pub use request::{Form, Req, UploadedFile};
pub use response::{Flash, WebError, WebResult};
pub use routes::{Nav, Routes, Surface};

/// Every feature's routes, in one list. Add a line for a new page module.
pub fn register_all(r: &mut Routes) {
    ops::routes(r);
    signin::routes(r);
    setup::routes(r);
    dashboard::routes(r);
    users::routes(r);
    audit::routes(r);
    api::routes(r);
    push_cert::routes(r);
    tokens::routes(r);
    devices::routes(r);
    mdm::routes(r);
    sync::routes(r);
}

/// The application state every handler gets. Cheap to clone.
#[derive(Clone)]
pub struct App(Arc<AppInner>);

impl std::ops::Deref for App {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// The parts of [`App`]. Features add their services here (and to [`AppBuilder`]).
pub struct AppInner {
    pub store: Store,
    pub clock: SharedClock,
    pub metrics: Metrics,
    pub config: Config,
    pub secret: Arc<SecretKey>,
    pub ca: Arc<LocalCa>,
    /// The address admins and devices use, e.g. `https://orchard.school.example:8443/`.
    pub public_url: Url,
    /// Failed sign-ins per client address (kept in memory; per-account counts are in the store).
    pub throttle: accounts::AddressThrottle,
    /// The MDM push certificate (its page and the topic for enrollment profiles).
    pub push_certs: Arc<PushCertService>,
    /// ADE server tokens.
    pub tokens: Arc<TokenService>,
    /// Every device Orchard knows, with the index behind the Devices page.
    pub inventory: Inventory,
    /// The sync workers (one per token) and the Sync button.
    pub sync: SyncManager,
    /// SCEP, enrollment, check-in, commands and pushes.
    pub mdm: Mdm,
}

/// A part [`AppBuilder::build`] was not given.
#[derive(Debug, thiserror::Error)]
#[error("the application cannot start without its {0}")]
pub struct MissingPart(pub &'static str);

/// Collects the parts of an [`App`]; [`AppBuilder::build`] refuses a missing one.
#[derive(Default)]
pub struct AppBuilder {
    store: Option<Store>,
    clock: Option<SharedClock>,
    metrics: Option<Metrics>,
    config: Option<Config>,
    secret: Option<Arc<SecretKey>>,
    ca: Option<Arc<LocalCa>>,
    public_url: Option<Url>,
    push_certs: Option<Arc<PushCertService>>,
    tokens: Option<Arc<TokenService>>,
    inventory: Option<Inventory>,
    sync: Option<SyncManager>,
    mdm: Option<Mdm>,
}

impl AppBuilder {
    pub fn store(mut self, v: Store) -> Self {
        self.store = Some(v);
        self
    }
    pub fn clock(mut self, v: SharedClock) -> Self {
        self.clock = Some(v);
        self
    }
    pub fn metrics(mut self, v: Metrics) -> Self {
        self.metrics = Some(v);
        self
    }
    pub fn config(mut self, v: Config) -> Self {
        self.config = Some(v);
        self
    }
    pub fn secret(mut self, v: Arc<SecretKey>) -> Self {
        self.secret = Some(v);
        self
    }
    pub fn ca(mut self, v: Arc<LocalCa>) -> Self {
        self.ca = Some(v);
        self
    }
    pub fn public_url(mut self, v: Url) -> Self {
        self.public_url = Some(v);
        self
    }
    pub fn push_certs(mut self, v: Arc<PushCertService>) -> Self {
        self.push_certs = Some(v);
        self
    }

    pub fn tokens(mut self, v: Arc<TokenService>) -> Self {
        self.tokens = Some(v);
        self
    }
    pub fn inventory(mut self, v: Inventory) -> Self {
        self.inventory = Some(v);
        self
    }
    pub fn sync(mut self, v: SyncManager) -> Self {
        self.sync = Some(v);
        self
    }
    pub fn mdm(mut self, v: Mdm) -> Self {
        self.mdm = Some(v);
        self
    }

    pub fn build(self) -> Result<App, MissingPart> {
        let store = self.store.ok_or(MissingPart("store"))?;
        let clock = self.clock.ok_or(MissingPart("clock"))?;
        let metrics = self.metrics.ok_or(MissingPart("metrics"))?;
        let config = self.config.ok_or(MissingPart("configuration"))?;
        let secret = self.secret.ok_or(MissingPart("secret key"))?;
        Ok(App(Arc::new(AppInner {
            store,
            clock,
            metrics,
            config,
            secret,
            ca: self.ca.ok_or(MissingPart("certificate authority"))?,
            public_url: self.public_url.ok_or(MissingPart("public URL"))?,
            throttle: accounts::AddressThrottle::default(),
            push_certs: self
                .push_certs
                .ok_or(MissingPart("push certificate service"))?,
            tokens: self.tokens.ok_or(MissingPart("token service"))?,
            inventory: self.inventory.ok_or(MissingPart("device inventory"))?,
            sync: self.sync.ok_or(MissingPart("sync manager"))?,
            mdm: self.mdm.ok_or(MissingPart("MDM service"))?,
        })))
    }
}

impl App {
    pub fn builder() -> AppBuilder {
        AppBuilder::default()
    }

    pub fn now(&self) -> time::OffsetDateTime {
        self.clock.now()
    }

    /// `public_url` joined with an absolute path such as `/setup/abc`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.public_url.as_str().trim_end_matches('/'), path)
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! An [`App`] over the memory store with a manual clock, for unit tests of handlers.
    use super::*;
    use crate::clock::{Clock, ManualClock};

    pub fn app() -> (App, Arc<ManualClock>) {
        let clock = ManualClock::starting_now();
        let dir = std::env::temp_dir();
        let secret = SecretKey::ephemeral();
        let ca_dir = tempfile::tempdir().unwrap();
        let ca = LocalCa::load_or_create(ca_dir.path(), &secret, clock.now()).unwrap();
        let store = Store::memory();
        let push_certs = PushCertService::new(
            Arc::new(store.clone()),
            Arc::new(SecretKey::ephemeral()),
            clock.clone(),
        )
        .unwrap();
        let tokens = Arc::new(TokenService::new(
            Arc::new(store.clone()),
            Arc::new(SecretKey::ephemeral()),
            clock.clone(),
            crate::apple::dep::ClientOptions::default(),
            Metrics::new(),
        ));
        let inventory = Inventory::open(store.clone()).unwrap();
        let sync = SyncManager::new(
            store.clone(),
            inventory.clone(),
            clock.clone(),
            Metrics::new(),
            crate::ade::sync::SyncSettings::default(),
            tokens.clone(),
            tokio::sync::watch::channel(false).1,
        );
        let identity =
            crate::pki::ca::server_identity(ca_dir.path(), &ca, &secret, &[], clock.now()).unwrap();
        let push_certs = Arc::new(push_certs);
        let secret = Arc::new(secret);
        let mdm = Mdm::new(crate::mdm::runtime::MdmParts {
            store: store.clone(),
            clock: clock.clone(),
            metrics: Metrics::new(),
            secret: secret.clone(),
            push_certs: push_certs.clone(),
            inventory: inventory.clone(),
            signer: crate::mdm::runtime::TlsSigner::from_identity(&identity).unwrap(),
            settings: crate::mdm::runtime::MdmSettings {
                base_url: "https://localhost:8443".into(),
                organization: "Orchard".into(),
                root_ca_der: Some(ca.cert_der().to_vec()),
                apns: Default::default(),
                pusher: Default::default(),
            },
        })
        .unwrap();
        let app = App::builder()
            .mdm(mdm)
            .store(store)
            .tokens(tokens)
            .inventory(inventory)
            .sync(sync)
            .push_certs(push_certs)
            .clock(clock.clone())
            .metrics(Metrics::new())
            .config(Config::for_data_dir(&dir))
            .secret(secret)
            .ca(Arc::new(ca))
            .public_url(Url::parse("https://localhost:8443/").unwrap())
            .build()
            .unwrap();
        (app, clock)
    }

    #[test]
    fn builder_refuses_missing_parts() {
        let err = App::builder().store(Store::memory()).build().err().unwrap();
        assert_eq!(
            err.to_string(),
            "the application cannot start without its clock"
        );
    }
}
