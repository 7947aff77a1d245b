//! Benchmark (prints figures, asserts nothing): a full sync of N simulated Macs (default 100,000)
//! through the real DEP client and sync worker into a sled store, with its peak memory; then the
//! Devices page's query over that inventory (p50/p99 of server-side query time for the views an
//! admin uses most).
//!
//! `cargo run --release --example sync_bench [DEVICES]`

use std::sync::Arc;
use std::time::Instant;

use orchard::ade::inventory::{DeviceState, Inventory, Query, Removed, SortKey};
use orchard::ade::sync::{SyncSettings, Syncer, Trigger};
use orchard::apple::dep::{Client, ClientOptions};
use orchard::clock::{SharedClock, SystemClock};
use orchard::metrics::Metrics;
use orchard::sim::dep::{DepSim, SimOptions};
use orchard::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let devices: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let clock: SharedClock = Arc::new(SystemClock);
    let sim = DepSim::bind(
        "127.0.0.1:0".parse()?,
        clock.clone(),
        SimOptions {
            devices,
            ..Default::default()
        },
    )
    .await?;
    let metrics = Metrics::new();
    let client = Client::new(
        ClientOptions {
            base_url: sim.base_url.clone(),
            ..Default::default()
        },
        sim.token.clone(),
        metrics.clone(),
        clock.clone(),
    )?;
    let dir = std::env::temp_dir().join(format!("orchard-sync-bench-{}", std::process::id()));
    let store = Store::open(&dir)?;
    let inventory = Inventory::open(store.clone())?;
    let syncer = Syncer::new(
        "1",
        store.clone(),
        inventory.clone(),
        clock,
        metrics,
        SyncSettings::default(),
    );
    let rss_before = peak_rss_kib();
    let t = Instant::now();
    let run = syncer.run_once(&client, Trigger::Start).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "full sync: {} devices, {} pages, outcome {}, {:.2} s ({:.0} devices/s)",
        inventory.len(),
        run.pages,
        run.outcome.as_str(),
        secs,
        inventory.len() as f64 / secs
    );
    println!(
        "peak memory (whole process, simulator included): {} MiB (before the sync: {} MiB)",
        peak_rss_kib() / 1024,
        rss_before / 1024
    );

    let views: Vec<(&str, Query)> = vec![
        (
            "first page",
            Query {
                per_page: 50,
                page: 1,
                ..Query::default()
            },
        ),
        (
            "page 1,000",
            Query {
                per_page: 50,
                page: 1000,
                ..Query::default()
            },
        ),
        (
            "serial prefix search",
            Query {
                search: "C0".into(),
                per_page: 50,
                page: 1,
                ..Query::default()
            },
        ),
        (
            "text search (model)",
            Query {
                search: "macbook".into(),
                per_page: 50,
                page: 1,
                ..Query::default()
            },
        ),
        (
            "filter state, hide removed",
            Query {
                state: Some(DeviceState::Unassigned),
                removed: Removed::Exclude,
                per_page: 50,
                page: 1,
                ..Query::default()
            },
        ),
        (
            "sort by model, descending",
            Query {
                sort: SortKey::Model,
                descending: true,
                per_page: 50,
                page: 3,
                ..Query::default()
            },
        ),
    ];
    for (name, q) in views {
        let mut times = Vec::with_capacity(200);
        let mut matching = 0;
        for _ in 0..200 {
            let t = Instant::now();
            let page = inventory.query(&q);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            matching = page.matching;
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "devices page, {name}: {} match, p50 {:.2} ms, p99 {:.2} ms",
            matching,
            times[times.len() / 2],
            times[times.len() * 99 / 100]
        );
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The process's peak resident memory (`VmHWM`), in KiB; 0 where `/proc` is not available.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
