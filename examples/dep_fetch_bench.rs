//! Benchmark (prints figures, asserts nothing): a full fetch of 100,000 simulated Macs through the
//! DEP client against the in-process simulator, at Apple's default and maximum page sizes, then an
//! incremental sync of 1,000 changes.
//!
//! `cargo run --example dep_fetch_bench [DEVICES]`

use std::sync::Arc;
use std::time::Instant;

use orchard::apple::dep::{Client, ClientOptions};
use orchard::clock::{SharedClock, SystemClock};
use orchard::metrics::Metrics;
use orchard::sim::dep::{DepSim, SimOptions};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let clock: SharedClock = Arc::new(SystemClock);
    let t = Instant::now();
    let sim = DepSim::bind(
        "127.0.0.1:0".parse()?,
        clock.clone(),
        SimOptions {
            devices,
            ..Default::default()
        },
    )
    .await?;
    println!(
        "simulator: {} devices generated in {:.2} s",
        sim.world.device_count(),
        t.elapsed().as_secs_f64()
    );
    let client = Client::new(
        ClientOptions {
            base_url: sim.base_url.clone(),
            ..Default::default()
        },
        sim.token.clone(),
        Metrics::new(),
        clock,
    )?;
    let mut last_cursor = String::new();
    for limit in [1000u32, 5000] {
        let t = Instant::now();
        let mut cursor: Option<String> = None;
        let (mut pages, mut seen) = (0usize, 0usize);
        loop {
            let page = client.fetch_devices(cursor.as_deref(), Some(limit)).await?;
            pages += 1;
            seen += page.devices.len();
            cursor = Some(page.cursor);
            if !page.more_to_follow {
                break;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "full fetch, limit {limit}: {seen} devices in {pages} pages, {secs:.2} s, {:.0} devices/s, {:.1} ms/page",
            seen as f64 / secs,
            secs * 1000.0 / pages as f64
        );
        last_cursor = cursor.unwrap_or_default();
    }
    let serials = sim.world.serials();
    for serial in serials.iter().take(1000) {
        sim.world
            .modify(serial, |d| d.asset_tag = Some("BENCH".into()));
    }
    let t = Instant::now();
    let mut cursor = last_cursor;
    let mut changes = 0;
    loop {
        let page = client.sync_devices(&cursor, Some(1000)).await?;
        changes += page.devices.len();
        cursor = page.cursor;
        if !page.more_to_follow {
            break;
        }
    }
    println!(
        "incremental sync: {changes} changes in {:.1} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}
