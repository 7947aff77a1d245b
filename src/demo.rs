//! `orchard demo`: Orchard beside a simulated Apple School Manager, with one command and no Apple
//! account. The simulator holds N Macs of mixed models; Orchard gets a server token for it through
//! the same path an admin's upload takes (public key → `.p7m` encrypted to it → upload), an admin
//! account to sign in with, and its first sync starts at once. While the demo runs the simulated
//! world changes now and then (a Mac added, one released, one changed), so incremental syncs have
//! something to do.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rand::RngExt;

use crate::ade::token::{KeyOwner, Upload};
use crate::apple::dep::ServerToken;
use crate::clock::SystemClock;
use crate::config::Config;
use crate::pki::cms::{self, Cipher};
use crate::server::{self, Running};
use crate::sim::dep::{DepSim, SimOptions, World};
use crate::web::{App, accounts};

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
}

/// A running demo: Orchard, the simulator, and the admin's sign-in.
pub struct Demo {
    pub running: Running,
    pub sim: DepSim,
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
        let running = server::start_with_clock(config, clock).await?;
        let password = ensure_admin(&running.app).await?;
        connect_token(&running.app, &sim.token).await?;
        running.app.sync.reconcile();
        Ok(Demo {
            running,
            sim,
            password,
            data_dir,
            temporary,
        })
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
    let world = demo.sim.world.clone();
    let changes =
        (args.change_every > 0).then(|| tokio::spawn(change_world(world, args.change_every)));
    tokio::signal::ctrl_c().await?;
    if let Some(task) = changes {
        task.abort();
    }
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
