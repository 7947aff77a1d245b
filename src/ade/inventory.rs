//! The device inventory: every Mac that Apple School Manager or Apple Business Manager lists for a
//! token, what Orchard knows of it, its history, and the in-memory index that answers the Devices
//! page in milliseconds at 100,000 devices.
//!
//! All device writes go through [`Inventory`], which keeps the index in step with the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::store::{Store, StoreError, Table};

pub const DEVICES: Table = Table::new("devices");
pub const HISTORY: Table = Table::new("device_history");
/// Devices an admin deleted in Orchard: not imported again until the next full sync.
pub const TOMBSTONES: Table = Table::new("device_tombstones");

/// Most history entries kept per device; the oldest go first.
const HISTORY_LIMIT: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("there is no device with serial number {0}")]
    NotFound(String),
}

/// A device as Orchard keeps it: Apple's fields, then Orchard's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub serial: String,
    /// The server token the device came from; `None` for a Mac enrolled by hand.
    pub token_id: Option<String>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub color: String,
    #[serde(default)]
    pub asset_tag: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub device_family: String,
    /// Apple's `profile_status`: `empty`, `assigned`, `pushed` or `removed`.
    #[serde(default)]
    pub profile_status: String,
    #[serde(default)]
    pub profile_uuid: Option<String>,
    /// The name of the enrollment profile, when Orchard knows it.
    #[serde(default)]
    pub profile_name: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub profile_assign_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub profile_push_time: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub device_assigned_date: Option<OffsetDateTime>,
    #[serde(default)]
    pub device_assigned_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// The newest `op_date` applied, so an older event never overwrites a newer one.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_op_date: Option<OffsetDateTime>,
    /// When Apple reported the device released (or it left the token's full list).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
    #[serde(default)]
    pub enrollment: Enrollment,
    #[serde(default)]
    pub udid: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_checkin: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub enrolled_at: Option<OffsetDateTime>,
    /// The last full fetch that listed this device (see `ade::sync`).
    #[serde(default)]
    pub seen_generation: u64,
}

/// Where the device is in its MDM life, as Orchard sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enrollment {
    #[default]
    NotEnrolled,
    /// Got its enrollment profile, has not finished check-in yet.
    Enrolling,
    Enrolled,
    /// Checked out or unenrolled.
    Unenrolled,
}

/// The one state shown for a device (and counted in `orchard_devices{state}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    Unassigned,
    Assigned,
    Enrolling,
    Enrolled,
    Removed,
}

impl DeviceState {
    pub const ALL: [DeviceState; 5] = [
        DeviceState::Unassigned,
        DeviceState::Assigned,
        DeviceState::Enrolling,
        DeviceState::Enrolled,
        DeviceState::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Unassigned => "unassigned",
            DeviceState::Assigned => "assigned",
            DeviceState::Enrolling => "enrolling",
            DeviceState::Enrolled => "enrolled",
            DeviceState::Removed => "removed",
        }
    }

    /// The words on the status tag.
    pub fn label(self) -> &'static str {
        match self {
            DeviceState::Unassigned => "Not assigned",
            DeviceState::Assigned => "Assigned",
            DeviceState::Enrolling => "Enrolling",
            DeviceState::Enrolled => "Enrolled",
            DeviceState::Removed => "Removed from Apple School Manager",
        }
    }

    pub fn parse(s: &str) -> Option<DeviceState> {
        DeviceState::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl Device {
    /// A device first seen now, with only its serial and token.
    pub fn new(serial: &str, token_id: Option<&str>, now: OffsetDateTime) -> Device {
        Device {
            serial: serial.to_string(),
            token_id: token_id.map(str::to_string),
            model: String::new(),
            description: String::new(),
            color: String::new(),
            asset_tag: String::new(),
            os: String::new(),
            device_family: String::new(),
            profile_status: String::new(),
            profile_uuid: None,
            profile_name: None,
            profile_assign_time: None,
            profile_push_time: None,
            device_assigned_date: None,
            device_assigned_by: String::new(),
            first_seen: now,
            updated_at: now,
            last_op_date: None,
            removed_at: None,
            enrollment: Enrollment::NotEnrolled,
            udid: None,
            user: None,
            last_checkin: None,
            enrolled_at: None,
            seen_generation: 0,
        }
    }

    pub fn state(&self) -> DeviceState {
        if self.removed_at.is_some() {
            return DeviceState::Removed;
        }
        match self.enrollment {
            Enrollment::Enrolled => DeviceState::Enrolled,
            Enrollment::Enrolling => DeviceState::Enrolling,
            Enrollment::NotEnrolled | Enrollment::Unenrolled => {
                let assigned = self.profile_uuid.as_deref().is_some_and(|u| !u.is_empty())
                    && matches!(self.profile_status.as_str(), "assigned" | "pushed");
                if assigned {
                    DeviceState::Assigned
                } else {
                    DeviceState::Unassigned
                }
            }
        }
    }
}

/// One line of a device's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub what: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tombstone {
    pub token_id: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub deleted_at: OffsetDateTime,
}

/// What the Devices page shows for one row, plus lower-cased copies for search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub serial: String,
    pub token_id: Option<String>,
    pub model: String,
    pub description: String,
    pub color: String,
    pub os: String,
    pub profile_status: String,
    pub profile_name: Option<String>,
    pub state: DeviceState,
    pub user: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_checkin: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub removed_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(skip)]
    search: String,
}

impl Summary {
    fn of(d: &Device) -> Summary {
        let search = format!(
            "{}\u{1}{}\u{1}{}",
            d.model.to_lowercase(),
            d.description.to_lowercase(),
            d.user.as_deref().unwrap_or("").to_lowercase()
        );
        Summary {
            serial: d.serial.clone(),
            token_id: d.token_id.clone(),
            model: d.model.clone(),
            description: d.description.clone(),
            color: d.color.clone(),
            os: d.os.clone(),
            profile_status: d.profile_status.clone(),
            profile_name: d.profile_name.clone(),
            state: d.state(),
            user: d.user.clone(),
            last_checkin: d.last_checkin,
            removed_at: d.removed_at,
            first_seen: d.first_seen,
            search,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortKey {
    #[default]
    Serial,
    Model,
    Description,
    State,
    User,
    LastCheckin,
    FirstSeen,
}

impl SortKey {
    pub const ALL: [(SortKey, &'static str); 7] = [
        (SortKey::Serial, "serial"),
        (SortKey::Model, "model"),
        (SortKey::Description, "description"),
        (SortKey::State, "state"),
        (SortKey::User, "user"),
        (SortKey::LastCheckin, "last_checkin"),
        (SortKey::FirstSeen, "first_seen"),
    ];

    pub fn parse(s: &str) -> Option<SortKey> {
        SortKey::ALL.iter().find(|(_, n)| *n == s).map(|(k, _)| *k)
    }

    pub fn as_str(self) -> &'static str {
        SortKey::ALL
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, n)| *n)
            .unwrap_or("serial")
    }
}

/// Whether removed devices are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Removed {
    /// Everything, removed devices included (what Intune shows: "Removed from ABM/ASM").
    #[default]
    Include,
    Exclude,
    Only,
}

/// The Devices page's question.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Serial prefix, or part of the model, description or user; case does not matter.
    pub search: String,
    pub token_id: Option<String>,
    pub profile_name: Option<String>,
    pub state: Option<DeviceState>,
    pub removed: Removed,
    pub sort: SortKey,
    pub descending: bool,
    /// 1-based.
    pub page: usize,
    pub per_page: usize,
}

impl Query {
    fn matcher(&self) -> impl Fn(&Summary) -> bool + '_ {
        let needle = self.search.trim().to_lowercase();
        let serial_needle = self.search.trim().to_uppercase();
        move |s: &Summary| {
            if self
                .token_id
                .as_ref()
                .is_some_and(|t| s.token_id.as_ref() != Some(t))
                || self
                    .profile_name
                    .as_ref()
                    .is_some_and(|p| s.profile_name.as_ref() != Some(p))
                || self.state.is_some_and(|st| s.state != st)
            {
                return false;
            }
            let removed_ok = match self.removed {
                Removed::Include => true,
                Removed::Exclude => s.removed_at.is_none(),
                Removed::Only => s.removed_at.is_some(),
            };
            removed_ok
                && (needle.is_empty()
                    || s.serial.starts_with(&serial_needle)
                    || s.search.contains(&needle))
        }
    }
}

/// One page of answers.
#[derive(Debug, Clone)]
pub struct Page {
    pub rows: Vec<Arc<Summary>>,
    pub matching: usize,
    pub page: usize,
    pub pages: usize,
    pub per_page: usize,
}

#[derive(Default)]
struct Index {
    /// Every device by serial (so the default order needs no sort).
    by_serial: BTreeMap<String, Arc<Summary>>,
    by_state: HashMap<DeviceState, usize>,
}

impl Index {
    fn insert(&mut self, summary: Summary) {
        *self.by_state.entry(summary.state).or_default() += 1;
        if let Some(old) = self
            .by_serial
            .insert(summary.serial.clone(), Arc::new(summary))
        {
            self.forget_state(old.state);
        }
    }

    fn remove(&mut self, serial: &str) {
        if let Some(old) = self.by_serial.remove(serial) {
            self.forget_state(old.state);
        }
    }

    fn forget_state(&mut self, state: DeviceState) {
        if let Some(n) = self.by_state.get_mut(&state) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The inventory. Cheap to clone.
#[derive(Clone)]
pub struct Inventory {
    store: Store,
    index: Arc<RwLock<Index>>,
}

impl Inventory {
    /// Loads the index from the store.
    pub fn open(store: Store) -> Result<Inventory, InventoryError> {
        let mut index = Index::default();
        for item in store.scan::<Device>(DEVICES, b"") {
            let (_, device) = item?;
            index.insert(Summary::of(&device));
        }
        Ok(Inventory {
            store,
            index: Arc::new(RwLock::new(index)),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn get(&self, serial: &str) -> Result<Option<Device>, InventoryError> {
        Ok(self.store.get(DEVICES, serial.as_bytes())?)
    }

    /// Writes a device with history lines, all at once, and updates the index.
    pub fn save(&self, device: &Device, history: &[HistoryEntry]) -> Result<(), InventoryError> {
        let mut batch = self.store.batch();
        batch.put(DEVICES, device.serial.as_bytes(), device)?;
        for entry in history {
            batch.put(
                HISTORY,
                &history_key(&device.serial, self.store.next_id()?),
                entry,
            )?;
        }
        self.store.apply(batch)?;
        self.write_index().insert(Summary::of(device));
        if !history.is_empty() {
            self.trim_history(&device.serial)?;
        }
        Ok(())
    }

    /// Changes one device with `f` (which returns the history lines to add), atomically with
    /// respect to other writers of the same device.
    pub fn modify(
        &self,
        serial: &str,
        f: impl FnOnce(&mut Device) -> Vec<HistoryEntry>,
    ) -> Result<Device, InventoryError> {
        let mut device = self
            .get(serial)?
            .ok_or_else(|| InventoryError::NotFound(serial.to_string()))?;
        let history = f(&mut device);
        self.save(&device, &history)?;
        Ok(device)
    }

    /// Deletes devices from Orchard. Those that came from Apple are remembered, so incremental
    /// syncs do not bring them back; the next full sync does. Returns how many were deleted.
    pub fn delete(&self, serials: &[String], now: OffsetDateTime) -> Result<usize, InventoryError> {
        let mut batch = self.store.batch();
        let mut deleted = Vec::new();
        for serial in serials {
            let Some(device) = self.get(serial)? else {
                continue;
            };
            batch.delete(DEVICES, serial.as_bytes());
            if device.token_id.is_some() && device.removed_at.is_none() {
                let tomb = Tombstone {
                    token_id: device.token_id.clone(),
                    deleted_at: now,
                };
                batch.put(TOMBSTONES, serial.as_bytes(), &tomb)?;
            }
            for key in self.store.keys(HISTORY, &history_prefix(serial)) {
                batch.delete(HISTORY, &key?);
            }
            deleted.push(serial.clone());
        }
        self.store.apply(batch)?;
        let mut index = self.write_index();
        for serial in &deleted {
            index.remove(serial);
        }
        Ok(deleted.len())
    }

    /// Forgets a device entirely (purge after the grace period): no tombstone.
    pub fn purge(&self, serial: &str) -> Result<(), InventoryError> {
        let mut batch = self.store.batch();
        batch.delete(DEVICES, serial.as_bytes());
        batch.delete(TOMBSTONES, serial.as_bytes());
        for key in self.store.keys(HISTORY, &history_prefix(serial)) {
            batch.delete(HISTORY, &key?);
        }
        self.store.apply(batch)?;
        self.write_index().remove(serial);
        Ok(())
    }

    pub fn is_tombstoned(&self, serial: &str) -> Result<bool, InventoryError> {
        Ok(self.store.contains(TOMBSTONES, serial.as_bytes())?)
    }

    /// Clears the tombstones of one token (a full sync re-imports what Apple still lists).
    pub fn clear_tombstones(&self, token_id: &str) -> Result<usize, InventoryError> {
        let mut batch = self.store.batch();
        for item in self.store.scan::<Tombstone>(TOMBSTONES, b"") {
            let (key, tomb) = item?;
            if tomb.token_id.as_deref() == Some(token_id) {
                batch.delete(TOMBSTONES, &key);
            }
        }
        let n = batch.len();
        self.store.apply(batch)?;
        Ok(n)
    }

    /// Newest first.
    pub fn history(&self, serial: &str) -> Result<Vec<HistoryEntry>, InventoryError> {
        self.store
            .scan_rev::<HistoryEntry>(HISTORY, &history_prefix(serial))
            .map(|r| r.map(|(_, e)| e).map_err(InventoryError::from))
            .collect()
    }

    fn trim_history(&self, serial: &str) -> Result<(), InventoryError> {
        let keys: Vec<Vec<u8>> = self
            .store
            .keys(HISTORY, &history_prefix(serial))
            .collect::<Result<_, _>>()?;
        if keys.len() > HISTORY_LIMIT {
            let mut batch = self.store.batch();
            for key in &keys[..keys.len() - HISTORY_LIMIT] {
                batch.delete(HISTORY, key);
            }
            self.store.apply(batch)?;
        }
        Ok(())
    }

    /// Serials of one token's devices (or every device), from the index.
    pub fn serials(&self, token_id: Option<&str>) -> Vec<String> {
        self.read_index()
            .by_serial
            .values()
            .filter(|s| token_id.is_none() || s.token_id.as_deref() == token_id)
            .map(|s| s.serial.clone())
            .collect()
    }

    /// The enrollment profile names devices carry, sorted (for the profile filter).
    pub fn profile_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .read_index()
            .by_serial
            .values()
            .filter_map(|s| s.profile_name.clone())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Devices per state, for the dashboard and `orchard_devices{state}`.
    pub fn counts(&self) -> Vec<(DeviceState, usize)> {
        let index = self.read_index();
        DeviceState::ALL
            .into_iter()
            .map(|s| (s, index.by_state.get(&s).copied().unwrap_or(0)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.read_index().by_serial.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Devices of one token.
    pub fn count_for_token(&self, token_id: &str) -> usize {
        self.read_index()
            .by_serial
            .values()
            .filter(|s| s.token_id.as_deref() == Some(token_id))
            .count()
    }

    /// Summaries of all devices, ordered by first sighting (for the dashboard chart).
    pub fn first_seen_dates(&self) -> Vec<(OffsetDateTime, DeviceState)> {
        let mut v: Vec<_> = self
            .read_index()
            .by_serial
            .values()
            .map(|s| (s.first_seen, s.state))
            .collect();
        v.sort_by_key(|(t, _)| *t);
        v
    }

    /// Answers the Devices page.
    pub fn query(&self, q: &Query) -> Page {
        let index = self.read_index();
        let matches = q.matcher();
        let per_page = q.per_page.clamp(1, 500);
        let page = q.page.max(1);
        let skip = (page - 1) * per_page;
        let (matching, rows) = if q.sort == SortKey::Serial {
            // The index is already in serial order: count everything, keep only the page.
            let mut matching = 0;
            let mut rows = Vec::with_capacity(per_page);
            let iter: Box<dyn Iterator<Item = &Arc<Summary>>> = if q.descending {
                Box::new(index.by_serial.values().rev())
            } else {
                Box::new(index.by_serial.values())
            };
            for s in iter {
                if matches(s) {
                    if matching >= skip && rows.len() < per_page {
                        rows.push(s.clone());
                    }
                    matching += 1;
                }
            }
            (matching, rows)
        } else {
            let mut all: Vec<&Arc<Summary>> =
                index.by_serial.values().filter(|s| matches(s)).collect();
            let matching = all.len();
            let cmp = |a: &&Arc<Summary>, b: &&Arc<Summary>| {
                let ord = match q.sort {
                    SortKey::Serial => std::cmp::Ordering::Equal,
                    SortKey::Model => a.model.cmp(&b.model),
                    SortKey::Description => a.description.cmp(&b.description),
                    SortKey::State => a.state.cmp(&b.state),
                    SortKey::User => a.user.cmp(&b.user),
                    SortKey::LastCheckin => a.last_checkin.cmp(&b.last_checkin),
                    SortKey::FirstSeen => a.first_seen.cmp(&b.first_seen),
                };
                // Ties keep serial order, so pages are stable.
                let ord = ord.then_with(|| a.serial.cmp(&b.serial));
                if q.descending { ord.reverse() } else { ord }
            };
            // Only the rows up to the end of this page need to be in order.
            let end = (skip + per_page).min(matching);
            if end > 0 && end < matching {
                all.select_nth_unstable_by(end - 1, cmp);
                all.truncate(end);
            }
            all.sort_unstable_by(cmp);
            let rows = all.into_iter().skip(skip).take(per_page).cloned().collect();
            (matching, rows)
        };
        Page {
            rows,
            matching,
            page,
            pages: matching.div_ceil(per_page).max(1),
            per_page,
        }
    }

    /// Every serial the query matches (for "select everything the filter matches").
    pub fn matching_serials(&self, q: &Query) -> Vec<String> {
        let matches = q.matcher();
        self.read_index()
            .by_serial
            .values()
            .filter(|s| matches(s))
            .map(|s| s.serial.clone())
            .collect()
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Index updates are single map operations; a poisoned lock still holds a usable index.
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }
}

fn history_prefix(serial: &str) -> Vec<u8> {
    let mut k = serial.as_bytes().to_vec();
    k.push(0);
    k
}

fn history_key(serial: &str, id: u64) -> Vec<u8> {
    let mut k = history_prefix(serial);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-09-01 08:00 UTC);

    fn device(serial: &str, model: &str, desc: &str) -> Device {
        let mut d = Device::new(serial, Some("t1"), NOW);
        d.model = model.into();
        d.description = desc.into();
        d
    }

    fn entry(what: &str) -> HistoryEntry {
        HistoryEntry {
            at: NOW,
            what: what.into(),
        }
    }

    fn inventory_with(devices: &[Device]) -> Inventory {
        let inv = Inventory::open(Store::memory()).unwrap();
        for d in devices {
            inv.save(d, &[entry("added")]).unwrap();
        }
        inv
    }

    #[test]
    fn state_follows_removal_enrollment_and_profile() {
        let mut d = device("C02A", "Mac15,3", "MacBook Air");
        assert_eq!(d.state(), DeviceState::Unassigned);
        d.profile_uuid = Some("P1".into());
        d.profile_status = "assigned".into();
        assert_eq!(d.state(), DeviceState::Assigned);
        d.enrollment = Enrollment::Enrolled;
        assert_eq!(d.state(), DeviceState::Enrolled);
        d.removed_at = Some(NOW);
        assert_eq!(d.state(), DeviceState::Removed);
    }

    #[test]
    fn search_matches_serial_prefix_model_description_and_user() {
        let mut c = device("C02XL0AAJGH5", "Mac15,3", "MacBook Air 13-inch");
        c.user = Some("ada.lovelace".into());
        let inv = inventory_with(&[
            c,
            device("C02XL0ABJGH5", "Mac14,7", "MacBook Pro 13-inch"),
            device("FVFXL0ACQ6L4", "iMac21,1", "iMac 24-inch"),
        ]);
        let find = |s: &str| -> Vec<String> {
            let q = Query {
                search: s.into(),
                per_page: 50,
                ..Query::default()
            };
            inv.query(&q)
                .rows
                .iter()
                .map(|r| r.serial.clone())
                .collect()
        };
        assert_eq!(find("c02xl0a").len(), 2, "serial prefix, any case");
        assert_eq!(
            find("XL0A"),
            Vec::<String>::new(),
            "serial matches by prefix only"
        );
        assert_eq!(find("imac"), vec!["FVFXL0ACQ6L4"]);
        assert_eq!(find("Mac14,7"), vec!["C02XL0ABJGH5"]);
        assert_eq!(find("lovelace"), vec!["C02XL0AAJGH5"]);
        assert_eq!(find("").len(), 3);
    }

    #[test]
    fn filters_sort_and_pages_are_consistent() {
        let mut devices = Vec::new();
        for i in 0..25 {
            let mut d = device(
                &format!("SER{i:03}"),
                if i % 2 == 0 { "Mac15,3" } else { "Mac14,2" },
                "Mac",
            );
            if i % 5 == 0 {
                d.removed_at = Some(NOW);
            }
            devices.push(d);
        }
        let inv = inventory_with(&devices);
        let q = Query {
            removed: Removed::Exclude,
            per_page: 7,
            page: 3,
            ..Query::default()
        };
        let page = inv.query(&q);
        assert_eq!(page.matching, 20);
        assert_eq!(page.pages, 3);
        assert_eq!(page.rows.len(), 6);
        assert_eq!(page.rows[0].serial, "SER018");

        let only = inv.query(&Query {
            removed: Removed::Only,
            per_page: 50,
            ..Query::default()
        });
        assert_eq!(only.matching, 5);
        assert!(only.rows.iter().all(|r| r.state == DeviceState::Removed));

        // Sorting by model, descending, then by serial within a model; pages do not overlap.
        let sorted = |page| {
            inv.query(&Query {
                sort: SortKey::Model,
                descending: true,
                per_page: 10,
                page,
                ..Query::default()
            })
        };
        let p1 = sorted(1);
        let p2 = sorted(2);
        assert_eq!(p1.rows[0].model, "Mac15,3");
        assert_eq!(p1.rows[0].serial, "SER024");
        let mut seen: Vec<_> = p1
            .rows
            .iter()
            .chain(p2.rows.iter())
            .map(|r| r.serial.clone())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 20);
        assert_eq!(sorted(3).rows.len(), 5);

        let by_state = inv.query(&Query {
            state: Some(DeviceState::Removed),
            per_page: 50,
            ..Query::default()
        });
        assert_eq!(by_state.matching, 5);
        assert_eq!(inv.matching_serials(&q).len(), 20);
    }

    #[test]
    fn counts_follow_saves_and_deletes() {
        let inv = inventory_with(&[device("A", "m", "d"), device("B", "m", "d")]);
        inv.modify("A", |d| {
            d.removed_at = Some(NOW);
            vec![entry("removed")]
        })
        .unwrap();
        let counts: HashMap<_, _> = inv.counts().into_iter().collect();
        assert_eq!(counts[&DeviceState::Removed], 1);
        assert_eq!(counts[&DeviceState::Unassigned], 1);
        assert_eq!(inv.delete(&["B".into(), "nope".into()], NOW).unwrap(), 1);
        let counts: HashMap<_, _> = inv.counts().into_iter().collect();
        assert_eq!(counts[&DeviceState::Unassigned], 0);
        assert_eq!(inv.len(), 1);
    }

    #[test]
    fn deleted_device_is_tombstoned_until_cleared_and_history_goes_with_it() {
        let inv = inventory_with(&[device("A", "m", "d")]);
        assert_eq!(inv.history("A").unwrap().len(), 1);
        inv.delete(&["A".into()], NOW).unwrap();
        assert!(inv.get("A").unwrap().is_none());
        assert!(inv.history("A").unwrap().is_empty());
        assert!(inv.is_tombstoned("A").unwrap());
        assert_eq!(inv.clear_tombstones("other").unwrap(), 0);
        assert_eq!(inv.clear_tombstones("t1").unwrap(), 1);
        assert!(!inv.is_tombstoned("A").unwrap());
    }

    #[test]
    fn index_is_rebuilt_from_the_store_on_open() {
        let inv = inventory_with(&[device("A", "Mac15,3", "d"), device("B", "m", "d")]);
        let reopened = Inventory::open(inv.store().clone()).unwrap();
        assert_eq!(reopened.len(), 2);
        let q = Query {
            search: "mac15".into(),
            per_page: 10,
            ..Query::default()
        };
        assert_eq!(reopened.query(&q).matching, 1);
    }

    #[test]
    fn history_is_newest_first_and_bounded() {
        let inv = inventory_with(&[device("A", "m", "d")]);
        for i in 0..(HISTORY_LIMIT + 10) {
            inv.modify("A", |_| vec![entry(&format!("change {i}"))])
                .unwrap();
        }
        let h = inv.history("A").unwrap();
        assert_eq!(h.len(), HISTORY_LIMIT);
        assert_eq!(h[0].what, format!("change {}", HISTORY_LIMIT + 9));
    }
}
