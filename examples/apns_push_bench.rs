//! Benchmark (prints figures, asserts nothing): a bulk push to N simulated Macs through the pusher
//! and the APNs simulator over HTTP/2 + TLS with a client certificate, then the same again with
//! every device asked three times (coalescing).
//!
//! `cargo run --example apns_push_bench [DEVICES]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use orchard::apple::apns::pusher::{
    CertificateAlerts, DeadTokens, PUSHES_TOTAL, Pusher, PusherSettings,
};
use orchard::apple::apns::{ApnsSettings, DeviceToken, PushMagic, PushTarget, Topic};
use orchard::apple::push_cert::PushCertService;
use orchard::clock::{SharedClock, SystemClock};
use orchard::metrics::Metrics;
use orchard::pki::secret::SecretKey;
use orchard::sim::apns::{ApnsSim, PushCa};
use orchard::store::Store;

struct Ignore;
impl DeadTokens for Ignore {
    fn token_unregistered(&self, _: &DeviceToken, _: Option<time::OffsetDateTime>) {}
}
impl CertificateAlerts for Ignore {
    fn certificate_rejected(&self, _: &Topic, _: &str) {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(2_000);
    let clock: SharedClock = Arc::new(SystemClock);
    let ca = Arc::new(PushCa::new()?);
    let sim = ApnsSim::start(ca.clone(), clock.clone()).await?;
    sim.set_rate_limit(usize::MAX, time::Duration::minutes(1));
    let certs = PushCertService::new(
        Arc::new(Store::memory()),
        Arc::new(SecretKey::ephemeral()),
        clock.clone(),
    )?;
    let pem = ca.sign_csr_new_topic(&certs.csr()?, clock.now())?;
    let topic = certs
        .upload(pem.as_bytes(), "it@school.example", None)?
        .topic;
    let tokens: Vec<_> = (0..devices)
        .map(|_| sim.register_device(topic.as_str()))
        .collect();
    let metrics = Metrics::new();
    let settings = ApnsSettings {
        base_url: sim.base_url(),
        extra_roots: vec![sim.server_root()],
        ..ApnsSettings::default()
    };
    let pusher = Pusher::new(
        certs.identity(),
        settings,
        PusherSettings {
            spacing: Duration::ZERO,
            ..PusherSettings::default()
        },
        Arc::new(Ignore),
        Arc::new(Ignore),
        metrics.clone(),
    );
    let magic = PushMagic::parse("bench")?;
    let targets = |n: usize| {
        tokens.iter().cycle().take(n).map(|t| PushTarget {
            token: t.clone(),
            push_magic: magic.clone(),
        })
    };

    let t = Instant::now();
    pusher.push_all(targets(devices));
    let sent = pusher.run_once().await.len();
    let took = t.elapsed();
    println!(
        "bulk push: {sent} devices in {:.2?} ({:.0} pushes/s, concurrency {})",
        took,
        sent as f64 / took.as_secs_f64(),
        PusherSettings::default().concurrency
    );

    let t = Instant::now();
    let new = pusher.push_all(targets(devices * 3));
    let sent = pusher.run_once().await.len();
    println!(
        "coalescing: {} requests -> {new} queued -> {sent} sent in {:.2?}",
        devices * 3,
        t.elapsed()
    );
    println!(
        "simulator accepted {} pushes; delivered metric {:?}",
        sim.accepted().len(),
        metrics.value(PUSHES_TOTAL, &[("outcome", "delivered")])
    );
    Ok(())
}
