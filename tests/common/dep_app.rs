//! An in-process Orchard whose DEP base URL is an in-process simulator of Apple's DEP service,
//! with the admin account [`ADMIN_USER`] and a client signed in as it: for the Tokens pages and
//! the live Sync page. Stopped (and its data removed) on [`DepApp::stop`].

use std::net::SocketAddr;

use orchard::ade::token::{KeyOwner, TokenView, Upload};
use orchard::clock::SystemClock;
use orchard::config::Config;
use orchard::pki::cms;
use orchard::server::{self, Running};
use orchard::sim::dep::{DepSim, SimOptions, token_p7m};
use orchard::web::{App, accounts};

use super::{ADMIN_PASSWORD, ADMIN_USER, TestClient};

/// The Apple ID the simulated organisation's administrator signs in to Apple's portal with.
pub const APPLE_ID: &str = "it-admin@school.example";

pub struct DepApp {
    pub running: Running,
    pub sim: DepSim,
    /// `https://localhost:PORT`, no trailing slash.
    pub base_url: String,
    /// Signed in as the admin.
    pub client: TestClient,
    _data: tempfile::TempDir,
}

/// Starts the simulator with `opts` and Orchard pointed at it, makes the admin and signs in.
pub async fn start(opts: SimOptions) -> DepApp {
    let clock = SystemClock::shared();
    let sim = DepSim::bind(SocketAddr::from(([127, 0, 0, 1], 0)), clock.clone(), opts)
        .await
        .expect("the DEP simulator starts");
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = Config::for_data_dir(data.path());
    config.dep_base_url = url::Url::parse(&sim.base_url).expect("the simulator's URL");
    let running = server::start_with_clock(config, clock)
        .await
        .expect("Orchard starts");
    let app = running.app.clone();
    let hash = accounts::hash_password(ADMIN_PASSWORD.into())
        .await
        .expect("hash");
    accounts::create_admin_with_hash(&app.store, app.now(), ADMIN_USER, hash).expect("the admin");
    let base_url = running
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_string();
    let client = TestClient::new(&base_url, app.ca.cert_pem().as_bytes(), false);
    client.sign_in(ADMIN_USER, ADMIN_PASSWORD).await;
    DepApp {
        running,
        sim,
        base_url,
        client,
        _data: data,
    }
}

impl DepApp {
    pub fn app(&self) -> &App {
        &self.running.app
    }

    /// The tokens Orchard keeps.
    pub fn tokens(&self) -> Vec<TokenView> {
        self.app().tokens.list().expect("the token list")
    }

    /// Connects the simulator's token as an admin would, without the pages: Orchard's public
    /// key, the `.p7m` Apple's portal makes for it, and the upload with the Apple ID. Returns the
    /// token's id.
    pub async fn connect_token(&self) -> String {
        let tokens = &self.app().tokens;
        let pem = tokens
            .public_key(KeyOwner::NewToken)
            .await
            .expect("a public key");
        let cert = cms::load_certificate(pem.as_bytes()).expect("the certificate");
        let upload = Upload {
            apple_id: APPLE_ID.into(),
            file: token_p7m(&self.sim.token, &cert).expect("p7m").into_bytes(),
        };
        let view = tokens.add(&upload).await.expect("the token is added");
        self.app().sync.reconcile();
        view.id.expect("a kept token has an id").to_string()
    }

    pub async fn stop(self) {
        self.running.stop().await.expect("Orchard stops");
    }
}
