//! `orchard demo`: Orchard beside a simulated Apple School Manager, with one command and no Apple
//! account. The simulator holds N Macs of mixed models; Orchard gets a server token for it through
//! the same path an admin's upload takes (public key → `.p7m` encrypted to it → upload), an admin
//! account to sign in with, and its first sync starts at once. While the demo runs the simulated
//! world changes now and then (a Mac added, one released, one changed), so incremental syncs have
//! something to do.
//!
//! The Macs also enroll: Orchard gets a push certificate from the simulated Apple push CA (through
//! its real CSR → certificate → upload path), and each simulated Mac takes a one-time manual
//! enrollment link, downloads its profile over HTTPS, gets its identity by SCEP, checks in, and
//! answers the commands Orchard pushes to it through the APNs simulator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rand::RngExt;

use crate::ade::token::{KeyOwner, Upload};
use crate::apple::dep::ServerToken;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::pki::cms::{self, Cipher};
use crate::server::{self, Running};
use crate::sim::apns::{ApnsSim, PushCa};
use crate::sim::dep::{DepSim, SimOptions, World};
use crate::sim::fleet::{HttpsTransport, MacSummary, ProfileSource, TokenSource, run_fleet};
use crate::sim::mac::{MacModel, SimFuture, SimRequest, Transport};
use crate::web::{App, accounts};
use tokio::sync::{broadcast, mpsc};

/// The Apple ID the simulated organisation's administrator uses.
const DEMO_APPLE_ID: &str = "it-admin@school.example";
pub const DEMO_ADMIN: &str = "admin";

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Macs in the simulated Apple School Manager.
    #[arg(long, default_value_t = 60)]
    pub macs: usize,
    /// Keep Orchard's data here instead of a fresh temporary directory.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to serve on [default: loopback, a free port].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Seconds between changes in the simulated world (0: never).
    #[arg(long, default_value_t = 45)]
    pub change_every: u64,
    /// Power every simulated Mac on at once instead of one every couple of seconds (for scripts
    /// and benchmarks).
    #[arg(long)]
    pub fast: bool,
    /// How many of the Macs power on and enroll [default: all of them].
    #[arg(long, value_name = "N")]
    pub enroll: Option<usize>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            macs: 60,
            data_dir: None,
            listen: None,
            change_every: 45,
            fast: false,
            enroll: None,
        }
    }
}

impl DemoArgs {
    /// How many Macs enroll.
    pub fn enrolling(&self) -> usize {
        self.enroll.unwrap_or(self.macs).min(self.macs)
    }
}

/// Time between two simulated Macs powering on, unless `--fast`.
const POWER_ON_EVERY: Duration = Duration::from_millis(1500);

/// A running demo: Orchard, the simulator, and the admin's sign-in.
pub struct Demo {
    pub running: Running,
    pub sim: DepSim,
    pub apns: Arc<ApnsSim>,
    /// Each simulated Mac's summary after it enrolls and after every MDM session.
    pub macs: mpsc::UnboundedReceiver<MacSummary>,
    pub password: String,
    pub data_dir: PathBuf,
    temporary: bool,
}

impl Demo {
    /// Starts the simulator and Orchard, creates the admin and connects the token.
    pub async fn start(args: &DemoArgs) -> anyhow::Result<Demo> {
        let clock = SystemClock::shared();
        let sim = DepSim::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            clock.clone(),
            SimOptions {
                devices: args.macs,
                seed: rand::random(),
                ..SimOptions::default()
            },
        )
        .await
        .context("cannot start the simulated Apple service")?;
        let (data_dir, temporary) = match &args.data_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "orchard-demo-{}",
                    hex::encode(rand::random::<[u8; 6]>())
                )),
                true,
            ),
        };
        let mut config = Config::for_data_dir(&data_dir);
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        config.dep_base_url = url::Url::parse(&sim.base_url)?;
        let apns = Arc::new(
            ApnsSim::start(Arc::new(PushCa::new()?), clock.clone())
                .await
                .context("cannot start the simulated APNs")?,
        );
        config.apns_base_url = url::Url::parse(&apns.base_url())?;
        config.apns_extra_roots = vec![apns.server_root()];
        let running = server::start_with_clock(config, clock).await?;
        let password = ensure_admin(&running.app).await?;
        connect_token(&running.app, &sim.token).await?;
        install_push_certificate(&running.app, &apns).await?;
        running.app.sync.reconcile();
        let serials: Vec<String> = sim
            .world
            .serials()
            .into_iter()
            .take(args.enrolling())
            .collect();
        let pace = (!args.fast).then_some(POWER_ON_EVERY);
        let macs = start_fleet(&running, apns.clone(), serials, pace)?;
        Ok(Demo {
            running,
            sim,
            apns,
            macs,
            password,
            data_dir,
            temporary,
        })
    }

    /// Waits until `count` simulated Macs have enrolled and each answered a command; fails on a
    /// Mac that could not enroll, or after `within`.
    pub async fn macs_ready(&mut self, count: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        let mut ready = std::collections::HashSet::new();
        while ready.len() < count {
            let summary = tokio::time::timeout_at(deadline, self.macs.recv())
                .await
                .map_err(|_| anyhow::anyhow!("only {} Macs ready after {within:?}", ready.len()))?
                .context("the simulated Macs stopped")?;
            if !summary.enrolled {
                anyhow::bail!("{} did not enroll: {:?}", summary.serial, summary.error);
            }
            if summary.answered.iter().any(|(_, s)| s == "Acknowledged") {
                ready.insert(summary.serial);
            }
        }
        Ok(())
    }

    /// Stops Orchard and removes a temporary data directory.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.running.stop().await?;
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
        Ok(())
    }
}

/// `orchard demo`: start, print how to sign in, change the world now and then, stop on Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let demo = Demo::start(&args).await?;
    println!();
    println!(
        "Orchard demo is running, with a simulated Apple School Manager of {} Macs.",
        args.macs
    );
    println!();
    println!("  Open      {}", demo.running.public_url);
    println!("  Sign in   {DEMO_ADMIN} / {}", demo.password);
    println!("  Data      {}", demo.data_dir.display());
    println!();
    println!(
        "The browser will warn about the certificate: Orchard made its own certificate authority."
    );
    println!(
        "Download it from {}ca.crt to trust it, or continue past the warning.",
        demo.running.public_url
    );
    println!("The first sync starts now; watch the Devices and Sync pages. Press Ctrl-C to stop.");
    println!(
        "The simulated Macs enroll {}; open one on the Devices page and send it a command.",
        if args.fast {
            "all at once"
        } else {
            "one by one"
        }
    );
    let mut demo = demo;
    let report = tokio::spawn(report_macs(
        std::mem::replace(&mut demo.macs, mpsc::unbounded_channel().1),
        args.enrolling(),
    ));
    let world = demo.sim.world.clone();
    let changes =
        (args.change_every > 0).then(|| tokio::spawn(change_world(world, args.change_every)));
    tokio::signal::ctrl_c().await?;
    if let Some(task) = changes {
        task.abort();
    }
    report.abort();
    println!("Stopping…");
    demo.stop().await
}

/// Makes the demo's admin account (or resets its password) and returns the password.
async fn ensure_admin(app: &App) -> anyhow::Result<String> {
    let password: String = {
        let mut rng = rand::rng();
        (0..4)
            .map(|_| {
                const WORDS: &[&str] = &[
                    "apple", "orchard", "blossom", "cider", "pippin", "russet", "bramley", "gala",
                    "harvest", "ladder", "basket", "branch", "meadow", "spring", "autumn",
                    "pruning",
                ];
                WORDS[rng.random_range(0..WORDS.len())]
            })
            .collect::<Vec<_>>()
            .join("-")
    };
    let hash = accounts::hash_password(password.clone()).await?;
    match accounts::create_admin_with_hash(&app.store, app.now(), DEMO_ADMIN, hash.clone()) {
        Ok(_) => {}
        Err(accounts::AccountError::Taken(_)) => {
            let user = crate::web::storage::WebStore::user_by_name(&app.store, DEMO_ADMIN)?
                .context("the demo admin vanished")?;
            accounts::set_password_hash(&app.store, &user.username, hash)?;
        }
        Err(e) => return Err(e.into()),
    }
    app.store.flush().await?;
    Ok(password)
}

/// Connects the simulator's token the way an admin would: Orchard's public key, a `.p7m`
/// encrypted to it (what Apple's portal would hand back), and the upload with the Apple ID.
async fn connect_token(app: &App, token: &ServerToken) -> anyhow::Result<()> {
    if !app.tokens.list()?.is_empty() {
        return Ok(());
    }
    let pem = app.tokens.public_key(KeyOwner::NewToken).await?;
    let cert = cms::load_certificate(pem.as_bytes())?;
    let der = cms::encrypt_enveloped(token.to_message().as_bytes(), &cert, Cipher::Aes256Cbc)?;
    let upload = Upload {
        apple_id: DEMO_APPLE_ID.into(),
        file: cms::smime_wrap(&der).into_bytes(),
    };
    let view = app.tokens.add(&upload).await?;
    tracing::info!(server = %view.server_name, org = %view.org_name, "demo token connected");
    Ok(())
}

/// Gets a push certificate from the simulated Apple push CA the way an admin does: Orchard's
/// CSR, signed for the topic (the installed one, so a reused data directory keeps its Macs),
/// uploaded with the Apple ID.
async fn install_push_certificate(app: &App, apns: &ApnsSim) -> anyhow::Result<()> {
    let certs = app.push_certs.clone();
    let csr = {
        let certs = certs.clone();
        tokio::task::spawn_blocking(move || certs.csr()).await??
    };
    let now = app.now();
    let pem = match certs.topic() {
        Some(topic) => apns.ca().sign_csr(
            &csr,
            topic.as_str(),
            now - time::Duration::minutes(5),
            now + time::Duration::days(365),
        )?,
        None => apns.ca().sign_csr_new_topic(&csr, now)?,
    };
    let status =
        tokio::task::spawn_blocking(move || certs.upload(pem.as_bytes(), DEMO_APPLE_ID, None))
            .await??;
    app.store.flush().await?;
    tracing::info!(topic = %status.topic, "demo push certificate installed");
    Ok(())
}

/// Each Mac takes a manual enrollment link and downloads its profile over HTTPS, as Safari would.
struct EnrollmentLinks {
    app: App,
    transport: Arc<HttpsTransport>,
}

impl ProfileSource for EnrollmentLinks {
    fn profile(&self, mac: &MacModel) -> SimFuture<'_> {
        let serial = mac.serial.clone();
        Box::pin(async move {
            let (id, _) = self
                .app
                .mdm
                .enroller
                .new_ticket(&serial, "orchard demo")
                .map_err(|e| e.to_string())?;
            self.transport
                .send(SimRequest {
                    method: "GET",
                    path: format!("/enroll/{id}"),
                    headers: Vec::new(),
                    body: Vec::new(),
                })
                .await
        })
    }
}

/// Powers on one simulated Mac per serial; each enrolls and then answers pushes.
fn start_fleet(
    running: &Running,
    apns: Arc<ApnsSim>,
    serials: Vec<String>,
    pace: Option<Duration>,
) -> anyhow::Result<mpsc::UnboundedReceiver<MacSummary>> {
    let app = &running.app;
    let transport = Arc::new(HttpsTransport::new(
        running.public_url.as_str(),
        app.ca.cert_der(),
    )?);
    let topic = app
        .push_certs
        .topic()
        .context("the push certificate is missing")?
        .to_string();
    let tokens: TokenSource = {
        let apns = apns.clone();
        Arc::new(move |_: &MacModel| apns.register_device(&topic).as_bytes().to_vec())
    };
    let (wake, woken) = mpsc::unbounded_channel();
    let mut pushes = apns.subscribe();
    tokio::spawn(async move {
        loop {
            match pushes.recv().await {
                Ok(push) => {
                    if wake.send(push.token.as_bytes().to_vec()).is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let models = serials
        .iter()
        .zip(1u32..)
        .map(|(serial, n)| MacModel::with_serial(n, serial))
        .collect();
    let profiles = Arc::new(EnrollmentLinks {
        app: app.clone(),
        transport: transport.clone(),
    });
    Ok(run_fleet(transport, profiles, tokens, models, pace, woken))
}

/// Prints how far the Macs are: each enrollment failure, and a line when all have enrolled and
/// answered their first command.
async fn report_macs(mut macs: mpsc::UnboundedReceiver<MacSummary>, total: usize) {
    let mut ready = std::collections::HashSet::new();
    while let Some(m) = macs.recv().await {
        if let Some(e) = &m.error {
            println!("Simulated Mac {} had a problem: {e}", m.serial);
        }
        if m.enrolled && m.answered.iter().any(|(_, s)| s == "Acknowledged") {
            ready.insert(m.serial);
            if ready.len() == total {
                println!("All {total} simulated Macs are enrolled and have answered a command.");
            }
        }
    }
}

/// Now and then: a Mac bought (added), one released from Apple School Manager, one changed.
async fn change_world(world: World, every: u64) {
    let mut tick = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(every)).await;
        tick += 1;
        match tick % 3 {
            0 => {
                let serials = world.serials();
                if let Some(serial) = serials.get(tick as usize % serials.len().max(1)) {
                    world.release(serial);
                    tracing::info!(%serial, "simulated Apple School Manager: a Mac was released");
                }
            }
            1 => {
                world.add_macs(1);
                tracing::info!(
                    "simulated Apple School Manager: a Mac was bought and assigned to Orchard"
                );
            }
            _ => {
                let serials = world.serials();
                if let Some(serial) = serials.first() {
                    world.modify(serial, |d| d.asset_tag = Some(format!("LIB-{tick:04}")));
                }
            }
        }
    }
}
