//! Benchmark (prints figures, asserts nothing): a full sync of N simulated Macs (default 100,000)
//! through the real DEP client and sync worker into a sled store, with its peak memory; then the
//! Devices page's query over that inventory, a third of it enrolled (p50/p99 of server-side
//! query time for each search, filter and sort an admin uses, and for the first query after a
//! write, as while a sync runs).
//!
//! `cargo run --release --example sync_bench [DEVICES]`

use std::sync::Arc;
use std::time::Instant;

use time::{Duration, OffsetDateTime};

use orchard::ade::inventory::{
    Device, DeviceState, Enrollment, Inventory, Query, Removed, SortKey,
};
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
    let rss_before = rss_kib("VmHWM");
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
        rss_kib("VmHWM") / 1024,
        rss_before / 1024
    );

    // Apple's list alone leaves every Mac unassigned; enroll a third of the fleet (a user, a
    // profile, check-ins) and mark some removed, so filters and sorts have something to sort.
    let t = Instant::now();
    let serials = inventory.serials(None);
    let now = OffsetDateTime::now_utc();
    let mut enrolled = 0;
    for (i, serial) in serials.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        inventory.modify(serial, |d| {
            d.user = Some(format!("user{i}@school.example"));
            d.enrollment = Enrollment::Enrolled;
            d.last_checkin = Some(now - Duration::seconds(i as i64));
            d.profile_uuid = Some(format!("P{}", i % 4));
            d.profile_name = Some(PROFILES[i % 4].into());
            d.profile_status = "pushed".into();
            if i % 30 == 0 {
                d.removed_at = Some(now);
            }
            vec![]
        })?;
        enrolled += 1;
    }
    println!(
        "enrolled {enrolled} devices in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    let page = |page: usize| Query {
        per_page: 50,
        page,
        ..Query::default()
    };
    let mut views: Vec<(String, Query)> = vec![
        ("first page".into(), page(1)),
        ("page 1,000".into(), page(1000)),
        (
            "serial prefix search".into(),
            Query {
                search: "C0".into(),
                ..page(1)
            },
        ),
        (
            "whole serial".into(),
            Query {
                search: serials[serials.len() / 2].to_lowercase(),
                ..page(1)
            },
        ),
        (
            "text search (model)".into(),
            Query {
                search: "macbook".into(),
                ..page(1)
            },
        ),
        (
            "text search (model), page 200".into(),
            Query {
                search: "macbook".into(),
                ..page(200)
            },
        ),
        (
            "text search (user)".into(),
            Query {
                search: "user123".into(),
                ..page(1)
            },
        ),
        (
            "text search, no match".into(),
            Query {
                search: "zzz".into(),
                ..page(1)
            },
        ),
        (
            "filter state, hide removed".into(),
            Query {
                state: Some(DeviceState::Unassigned),
                removed: Removed::Exclude,
                ..page(1)
            },
        ),
        (
            "filter state enrolled, page 100".into(),
            Query {
                state: Some(DeviceState::Enrolled),
                ..page(100)
            },
        ),
        (
            "filter token".into(),
            Query {
                token_id: Some("1".into()),
                ..page(1)
            },
        ),
        (
            "filter profile".into(),
            Query {
                profile_name: Some(PROFILES[1].into()),
                ..page(1)
            },
        ),
        (
            "only removed".into(),
            Query {
                removed: Removed::Only,
                ..page(1)
            },
        ),
        (
            "profile, text, sort by user descending, page 2".into(),
            Query {
                profile_name: Some(PROFILES[2].into()),
                search: "user1".into(),
                sort: SortKey::User,
                descending: true,
                ..page(2)
            },
        ),
    ];
    for (key, name) in SortKey::ALL {
        for descending in [false, true] {
            let dir = if descending {
                "descending"
            } else {
                "ascending"
            };
            views.push((
                format!("sort by {name}, {dir}, page 3"),
                Query {
                    sort: key,
                    descending,
                    ..page(3)
                },
            ));
        }
    }
    let rss_before_views = rss_kib("VmRSS");
    for (name, q) in &views {
        let (times, matching) = time_query(&inventory, q, || Ok(()))?;
        report(name, &times, matching);
    }
    // The first query after a write (as while a sync runs) pays for the orders the write made
    // stale: a changed device, those by what changed; a new device, all.
    let mut n = 0;
    for key in [
        SortKey::Serial,
        SortKey::Model,
        SortKey::User,
        SortKey::LastCheckin,
    ] {
        let q = Query {
            sort: key,
            ..page(3)
        };
        let (times, matching) = time_query(&inventory, &q, || {
            n += 1;
            inventory.modify(&serials[n * 7 % serials.len()], |d| {
                d.description = format!("Changed {n}");
                d.last_checkin = Some(OffsetDateTime::now_utc());
                vec![]
            })?;
            Ok(())
        })?;
        report(
            &format!(
                "sort by {}, just after a device changed (description, check-in)",
                key.as_str()
            ),
            &times,
            matching,
        );
        let (times, matching) = time_query(&inventory, &q, || {
            n += 1;
            let mut d = Device::new(&format!("ZZ{n:08}"), Some("1"), OffsetDateTime::now_utc());
            d.model = "Mac15,12".into();
            inventory.save(&d, &[])?;
            Ok(())
        })?;
        report(
            &format!("sort by {}, just after a new device", key.as_str()),
            &times,
            matching,
        );
    }
    println!(
        "memory: {} MiB resident after the views (before them: {} MiB), peak {} MiB",
        rss_kib("VmRSS") / 1024,
        rss_before_views / 1024,
        rss_kib("VmHWM") / 1024
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

const PROFILES: [&str; 4] = ["Staff", "Students", "Lab", "Loaners"];

/// Times `q` 200 times, calling `before` ahead of each (untimed); milliseconds, sorted.
fn time_query(
    inventory: &Inventory,
    q: &Query,
    mut before: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let mut times = Vec::with_capacity(200);
    let mut matching = 0;
    for _ in 0..200 {
        before()?;
        let t = Instant::now();
        let page = inventory.query(q);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        matching = page.matching;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((times, matching))
}

fn report(name: &str, times: &[f64], matching: usize) {
    println!(
        "devices page, {name}: {matching} match, p50 {:.2} ms, p99 {:.2} ms",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
}

/// A line of `/proc/self/status` (`VmHWM` is the peak resident memory), in KiB; 0 where `/proc`
/// is not available.
fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}
