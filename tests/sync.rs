//! The sync worker against the DEP simulator, on a clock the tests move: full and incremental
//! sync, the 24-hour, 15-minute and 7-day rules, the 15-minute run limit, resuming after a crash,
//! released devices and their purge, deletion in Orchard, and duplicate events.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orchard::ade::inventory::{DeviceState, Inventory, Query, Removed};
use orchard::ade::sync::{DeviceSource, Kind, Outcome, SyncSettings, SyncState, Syncer, Trigger};
use orchard::apple::dep::{self, DepError, DevicePage};
use orchard::clock::{Clock, ManualClock, SharedClock};
use orchard::metrics::Metrics;
use orchard::sim::dep::{DepSim, SimOptions};
use orchard::store::Store;
use time::Duration;

struct Rig {
    clock: Arc<ManualClock>,
    sim: DepSim,
    client: dep::Client,
    store: Store,
    inventory: Inventory,
    metrics: Metrics,
}

const TOKEN: &str = "1";

async fn rig(devices: usize, page: u32) -> Rig {
    let clock = ManualClock::starting_now();
    let shared: SharedClock = clock.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim = DepSim::start(
        listener,
        shared.clone(),
        SimOptions {
            devices,
            page_default: page,
            ..SimOptions::default()
        },
    )
    .await
    .unwrap();
    let metrics = Metrics::new();
    let client = dep::Client::new(
        dep::ClientOptions {
            base_url: sim.base_url.clone(),
            ..Default::default()
        },
        sim.token.clone(),
        metrics.clone(),
        shared,
    )
    .unwrap();
    let store = Store::memory();
    let inventory = Inventory::open(store.clone()).unwrap();
    Rig {
        clock,
        sim,
        client,
        store,
        inventory,
        metrics,
    }
}

impl Rig {
    fn syncer(&self) -> Syncer {
        self.syncer_with(SyncSettings::default())
    }

    fn syncer_with(&self, settings: SyncSettings) -> Syncer {
        Syncer::new(
            TOKEN,
            self.store.clone(),
            self.inventory.clone(),
            self.clock.clone(),
            self.metrics.clone(),
            settings,
        )
    }

    fn state(&self) -> SyncState {
        orchard::ade::sync::state(&self.store, TOKEN).unwrap()
    }

    fn count(&self, state: DeviceState) -> usize {
        self.inventory
            .counts()
            .into_iter()
            .find(|(s, _)| *s == state)
            .map(|(_, n)| n)
            .unwrap_or(0)
    }
}

/// Wraps the real client: advances the clock on every page, or stops answering after some pages.
struct Slow<'a> {
    inner: &'a dep::Client,
    clock: Arc<ManualClock>,
    per_page: Duration,
    pages: AtomicUsize,
    hang_after: Option<usize>,
}

impl<'a> Slow<'a> {
    fn new(rig: &'a Rig, per_page: Duration, hang_after: Option<usize>) -> Slow<'a> {
        Slow {
            inner: &rig.client,
            clock: rig.clock.clone(),
            per_page,
            pages: AtomicUsize::new(0),
            hang_after,
        }
    }

    async fn gate(&self) {
        let n = self.pages.fetch_add(1, Ordering::SeqCst);
        if self.hang_after.is_some_and(|h| n >= h) {
            std::future::pending::<()>().await;
        }
        self.clock.advance(self.per_page);
    }
}

impl DeviceSource for Slow<'_> {
    async fn fetch(
        &self,
        cursor: Option<&str>,
        limit: Option<u32>,
    ) -> Result<DevicePage, DepError> {
        self.gate().await;
        self.inner.fetch_devices(cursor, limit).await
    }
    async fn sync(&self, cursor: &str, limit: Option<u32>) -> Result<DevicePage, DepError> {
        self.gate().await;
        self.inner.sync_devices(cursor, limit).await
    }
    async fn details(&self, serials: &[String]) -> Result<dep::DeviceDetails, DepError> {
        self.inner.device_details(serials).await
    }
}

#[tokio::test]
async fn first_start_runs_a_full_sync_that_brings_every_device() {
    let rig = rig(250, 100).await;
    let run = rig
        .syncer()
        .run_once(&rig.client, Trigger::Start)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Full);
    assert_eq!(run.outcome, Outcome::Ok, "{:?}", run.error);
    assert_eq!(run.pages, 3);
    assert_eq!(run.added, 250);
    assert_eq!(rig.inventory.len(), 250);
    let state = rig.state();
    assert!(state.cursor.is_some());
    assert_eq!(state.last_full_at, Some(run.started_at));
    let device = rig
        .inventory
        .get(&rig.sim.world.serials()[0])
        .unwrap()
        .unwrap();
    assert!(!device.model.is_empty());
    assert_eq!(device.token_id.as_deref(), Some(TOKEN));
    assert_eq!(
        rig.metrics.value(
            "orchard_sync_runs_total",
            &[("kind", "full"), ("trigger", "start"), ("outcome", "ok")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn later_runs_are_incremental_until_seven_days_pass() {
    let rig = rig(20, 100).await;
    let syncer = rig.syncer();
    syncer.run_once(&rig.client, Trigger::Start).await.unwrap();

    rig.clock.advance(Duration::hours(24));
    let added = rig.sim.world.add_macs(3);
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Incremental);
    assert_eq!(run.added, 3);
    assert!(rig.inventory.get(&added[0]).unwrap().is_some());

    // Six days and 23 hours after the full sync: still incremental.
    rig.clock.advance(Duration::days(5) + Duration::hours(23));
    let run = syncer.run_once(&rig.client, Trigger::Button).await.unwrap();
    assert_eq!(run.kind, Kind::Incremental);

    rig.clock.advance(Duration::hours(1));
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Full);
    assert_eq!(run.outcome, Outcome::Ok);
    assert_eq!(rig.inventory.len(), 23);
}

#[tokio::test]
async fn schedule_is_every_24_hours_and_the_button_once_per_15_minutes() {
    let rig = rig(5, 100).await;
    let settings = SyncSettings::default();
    let syncer = rig.syncer();
    let run = syncer.run_once(&rig.client, Trigger::Start).await.unwrap();
    let state = rig.state();
    assert_eq!(
        state.next_scheduled(&settings),
        Some(run.started_at + Duration::hours(24))
    );

    let now = rig.clock.now();
    let mut pressed = state.clone();
    pressed.last_button_at = Some(now);
    assert_eq!(
        pressed.button_available_at(now + Duration::minutes(14), &settings),
        Some(now + Duration::minutes(15))
    );
    assert_eq!(
        pressed.button_available_at(now + Duration::minutes(15), &settings),
        None
    );
}

#[tokio::test]
async fn an_expired_cursor_falls_back_to_a_full_sync() {
    let rig = rig(10, 100).await;
    let syncer = rig.syncer_with(SyncSettings {
        // Make the weekly full sync rare, so only the cursor's expiry can cause one.
        full_every: Duration::days(30),
        ..SyncSettings::default()
    });
    syncer.run_once(&rig.client, Trigger::Start).await.unwrap();
    rig.clock.advance(Duration::days(8));
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Full, "Apple refused the 8-day-old cursor");
    assert_eq!(run.outcome, Outcome::Ok, "{:?}", run.error);
    assert_eq!(rig.inventory.len(), 10);
}

#[tokio::test]
async fn a_run_past_15_minutes_stops_and_the_next_resumes_from_the_cursor() {
    let rig = rig(500, 50).await;
    let syncer = rig.syncer();
    // Every page costs 4 minutes: the fourth page crosses the limit.
    let slow = Slow::new(&rig, Duration::minutes(4), None);
    let run = syncer.run_once(&slow, Trigger::Start).await.unwrap();
    assert_eq!(run.outcome, Outcome::Timeout);
    assert_eq!(run.pages, 4);
    assert_eq!(rig.inventory.len(), 200);
    assert!(
        rig.state().fetch_cursor.is_some(),
        "the half-done fetch keeps its cursor"
    );

    let fetches_before = rig.sim.world.requests(dep::Endpoint::FetchDevices);
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Full);
    assert_eq!(run.outcome, Outcome::Ok, "{:?}", run.error);
    assert_eq!(rig.inventory.len(), 500);
    // Six more pages, not ten: it went on from the stored cursor.
    assert_eq!(
        rig.sim.world.requests(dep::Endpoint::FetchDevices) - fetches_before,
        6
    );
}

#[tokio::test]
async fn a_crash_mid_sync_leaves_a_store_that_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let rig = rig(300, 100).await;
    {
        let store = Store::open(dir.path()).unwrap();
        let inventory = Inventory::open(store.clone()).unwrap();
        let syncer = Syncer::new(
            TOKEN,
            store,
            inventory,
            rig.clock.clone(),
            rig.metrics.clone(),
            SyncSettings::default(),
        );
        let hang = Slow::new(&rig, Duration::seconds(1), Some(2));
        // The third page never comes: the process "dies" with the run in flight.
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            syncer.run_once(&hang, Trigger::Start),
        )
        .await;
        assert!(cut.is_err());
    }
    let store = Store::open(dir.path()).unwrap();
    let inventory = Inventory::open(store.clone()).unwrap();
    assert_eq!(inventory.len(), 200, "the two stored pages survived");
    let syncer = Syncer::new(
        TOKEN,
        store.clone(),
        inventory.clone(),
        rig.clock.clone(),
        rig.metrics.clone(),
        SyncSettings::default(),
    );
    assert_eq!(syncer.recover_interrupted().unwrap(), 1);
    let fetches_before = rig.sim.world.requests(dep::Endpoint::FetchDevices);
    let run = syncer.run_once(&rig.client, Trigger::Start).await.unwrap();
    assert_eq!(run.outcome, Outcome::Ok, "{:?}", run.error);
    assert_eq!(inventory.len(), 300);
    assert_eq!(
        rig.sim.world.requests(dep::Endpoint::FetchDevices) - fetches_before,
        1
    );
    let runs = orchard::ade::sync::runs(&store, TOKEN, 10).unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1].outcome, Outcome::Interrupted);
}

#[tokio::test]
async fn released_devices_are_flagged_then_purged_after_the_grace_period() {
    let rig = rig(10, 100).await;
    let syncer = rig.syncer_with(SyncSettings::default().with_removed_grace_days(45));
    syncer.run_once(&rig.client, Trigger::Start).await.unwrap();
    let serial = rig.sim.world.serials()[3].clone();
    assert!(rig.sim.world.release(&serial));

    rig.clock.advance(Duration::hours(24));
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.removed, 1);
    let device = rig.inventory.get(&serial).unwrap().unwrap();
    assert_eq!(device.state(), DeviceState::Removed);
    assert!(device.removed_at.is_some());
    assert_eq!(rig.count(DeviceState::Removed), 1);
    let removed_only = Query {
        removed: Removed::Only,
        per_page: 10,
        ..Query::default()
    };
    assert_eq!(rig.inventory.query(&removed_only).matching, 1);

    // 44 days after the release it is still listed as removed.
    rig.clock.advance(Duration::days(43));
    syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert!(rig.inventory.get(&serial).unwrap().is_some());

    // Past 45 days, Apple confirms it is gone, and Orchard purges it.
    rig.clock.advance(Duration::days(2));
    syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert!(rig.inventory.get(&serial).unwrap().is_none());
    assert_eq!(rig.inventory.len(), 9);
}

#[tokio::test]
async fn a_device_deleted_in_orchard_returns_only_with_a_full_sync() {
    let rig = rig(10, 100).await;
    let syncer = rig.syncer();
    syncer.run_once(&rig.client, Trigger::Start).await.unwrap();
    let serial = rig.sim.world.serials()[0].clone();
    assert_eq!(
        rig.inventory
            .delete(std::slice::from_ref(&serial), rig.clock.now())
            .unwrap(),
        1
    );

    // Apple changes the device: the incremental sync does not bring it back.
    assert!(
        rig.sim
            .world
            .modify(&serial, |d| d.asset_tag = Some("LIB-0042".into()))
    );
    rig.clock.advance(Duration::days(1));
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Incremental);
    assert!(rig.inventory.get(&serial).unwrap().is_none());

    rig.clock.advance(Duration::days(7));
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.kind, Kind::Full);
    let back = rig
        .inventory
        .get(&serial)
        .unwrap()
        .expect("the full sync re-imports it");
    assert_eq!(back.asset_tag, "LIB-0042");
}

#[tokio::test]
async fn duplicate_events_resolve_to_the_latest_op_date() {
    let rig = rig(5, 100).await;
    let syncer = rig.syncer();
    syncer.run_once(&rig.client, Trigger::Start).await.unwrap();
    let serial = rig.sim.world.serials()[1].clone();
    rig.clock.advance(Duration::minutes(1));
    rig.sim
        .world
        .modify(&serial, |d| d.color = Some("Space Grey".into()));
    rig.clock.advance(Duration::minutes(1));
    rig.sim
        .world
        .modify(&serial, |d| d.color = Some("Starlight".into()));
    rig.clock.advance(Duration::hours(24));
    let run = syncer
        .run_once(&rig.client, Trigger::Schedule)
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Ok, "{:?}", run.error);
    assert_eq!(
        rig.inventory.get(&serial).unwrap().unwrap().color,
        "Starlight"
    );
}

/// Pages crafted by hand, for ordering the simulator does not produce on its own: an older event
/// arriving after a newer one.
struct Scripted {
    pages: std::sync::Mutex<Vec<DevicePage>>,
}

impl DeviceSource for Scripted {
    async fn fetch(&self, _: Option<&str>, _: Option<u32>) -> Result<DevicePage, DepError> {
        Ok(DevicePage {
            cursor: "c0".into(),
            ..DevicePage::default()
        })
    }
    async fn sync(&self, _: &str, _: Option<u32>) -> Result<DevicePage, DepError> {
        let mut pages = self.pages.lock().unwrap();
        Ok(if pages.is_empty() {
            DevicePage::default()
        } else {
            pages.remove(0)
        })
    }
    async fn details(&self, _: &[String]) -> Result<dep::DeviceDetails, DepError> {
        Ok(dep::DeviceDetails::default())
    }
}

#[tokio::test]
async fn an_older_event_on_a_later_page_does_not_undo_a_newer_one() {
    let rig = rig(0, 100).await;
    let t0 = rig.clock.now();
    let event = |op: &str, color: &str, minutes: i64| dep::Device {
        serial_number: "C02SCRIPTED1".into(),
        color: Some(color.into()),
        op_type: Some(op.into()),
        op_date: Some(t0 + Duration::minutes(minutes)),
        ..dep::Device::default()
    };
    let source = Scripted {
        pages: std::sync::Mutex::new(vec![
            DevicePage {
                devices: vec![
                    event("added", "Silver", 1),
                    event("modified", "Midnight", 3),
                ],
                cursor: "c1".into(),
                more_to_follow: true,
                ..DevicePage::default()
            },
            DevicePage {
                devices: vec![event("modified", "Gold", 2)],
                cursor: "c2".into(),
                more_to_follow: false,
                ..DevicePage::default()
            },
        ]),
    };
    let syncer = rig.syncer();
    syncer.run_once(&source, Trigger::Start).await.unwrap();
    rig.clock.advance(Duration::hours(24));
    let run = syncer.run_once(&source, Trigger::Schedule).await.unwrap();
    assert_eq!(run.kind, Kind::Incremental);
    assert_eq!(
        rig.inventory.get("C02SCRIPTED1").unwrap().unwrap().color,
        "Midnight"
    );
    assert_eq!(rig.state().cursor.as_deref(), Some("c2"));
}

#[tokio::test]
async fn terms_not_signed_is_recorded_with_the_admins_sentence() {
    let rig = rig(3, 100).await;
    rig.sim
        .world
        .set_token_mode(orchard::sim::dep::TokenMode::TermsNotSigned);
    let run = rig
        .syncer()
        .run_once(&rig.client, Trigger::Start)
        .await
        .unwrap();
    assert_eq!(run.outcome, Outcome::Error);
    assert!(
        run.error
            .as_deref()
            .unwrap_or("")
            .contains("terms and conditions"),
        "{:?}",
        run.error
    );
    assert!(rig.state().terms_not_signed());
    assert_eq!(rig.inventory.len(), 0);
}
