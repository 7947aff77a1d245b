//! The store: every record Orchard keeps, behind one small typed API over sled (or memory, for tests).
//!
//! Records live in named tables ([`Table`]) inside one ordered key space, so a batch that touches
//! several tables is applied atomically. Values are serde_json; keys are bytes (big-endian integers
//! sort). Consumers declare the storage traits they need in their own modules and implement them for
//! [`Store`] in `store/<consumer>.rs`; the conformance tests at the bottom run on both backends.
//!
//! Durability: sled writes are in memory until flushed. Anything acknowledged to an admin, a device or
//! Apple must be followed by [`Store::flush`] before the answer goes out.

mod backend;
pub mod mdm;
pub mod push_cert;
mod tokens;
mod web;

use std::path::Path;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use backend::{Backend, MemoryBackend, Op, SledBackend};

/// The schema version this build writes. Bump it and add a step to [`MIGRATIONS`] when a record's
/// meaning changes in a way `#[serde(default)]` cannot absorb.
pub const SCHEMA_VERSION: u32 = 1;

/// Migration steps, indexed by the version they upgrade *from* (step 0 upgrades 0 → 1, ...).
/// Version 0 is a brand-new store, so there is nothing to transform yet.
type Migration = fn(&Store) -> Result<(), StoreError>;
const MIGRATIONS: &[Migration] = &[|_| Ok(())];

const META: Table = Table::new("meta");
const SCHEMA_KEY: &[u8] = b"schema_version";

/// Errors from the store. The messages are for an operator reading a log.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database could not be read or written: {0}")]
    Backend(String),
    #[error(
        "a stored {table} record is damaged ({source}); restore the data directory from a backup"
    )]
    Corrupt {
        table: &'static str,
        source: serde_json::Error,
    },
    #[error("a {table} record could not be encoded: {source}")]
    Encode {
        table: &'static str,
        source: serde_json::Error,
    },
    #[error(
        "the data directory was written by a newer Orchard (schema {found}, this build knows {known}); run the newer version"
    )]
    TooNew { found: u32, known: u32 },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// A table name. Names must be unique across Orchard and contain no NUL byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table(&'static str);

impl Table {
    pub const fn new(name: &'static str) -> Table {
        Table(name)
    }

    pub fn name(&self) -> &'static str {
        self.0
    }

    fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.0.len() + 1 + key.len());
        full.extend_from_slice(self.0.as_bytes());
        full.push(0);
        full.extend_from_slice(key);
        full
    }

    fn prefix_len(&self) -> usize {
        self.0.len() + 1
    }
}

/// The handle every module uses. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the sled database in `dir` and brings its schema up to date.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let store = Store {
            backend: Arc::new(SledBackend::open(dir)?),
        };
        store.migrate()?;
        Ok(store)
    }

    /// A store that lives in memory only, for unit tests.
    pub fn memory() -> Store {
        let store = Store {
            backend: Arc::new(MemoryBackend::default()),
        };
        // A fresh in-memory store cannot fail to migrate: it only writes the version.
        let _ = store.migrate();
        store
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let found: u32 = self.get(META, SCHEMA_KEY)?.unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                found,
                known: SCHEMA_VERSION,
            });
        }
        for version in found..SCHEMA_VERSION {
            MIGRATIONS[version as usize](self)?;
            self.put(META, SCHEMA_KEY, &(version + 1))?;
            tracing::info!(from = version, to = version + 1, "store migrated");
        }
        self.flush_blocking()
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        Ok(self.get(META, SCHEMA_KEY)?.unwrap_or(0))
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        match self.backend.get(&table.key(key))? {
            Some(bytes) => decode(table, &bytes).map(Some),
            None => Ok(None),
        }
    }

    pub fn contains(&self, table: Table, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.backend.get(&table.key(key))?.is_some())
    }

    pub fn put<T: Serialize + ?Sized>(
        &self,
        table: Table,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.backend
            .apply(vec![Op::Put(table.key(key), encode(table, value)?)])
    }

    pub fn delete(&self, table: Table, key: &[u8]) -> Result<(), StoreError> {
        self.backend.apply(vec![Op::Delete(table.key(key))])
    }

    /// Records whose key starts with `prefix`, in key order.
    pub fn scan<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, T), StoreError>> + use<T> {
        let skip = table.prefix_len();
        self.backend
            .scan(table.key(prefix), false)
            .map(move |item| item.and_then(|(k, v)| Ok((k[skip..].to_vec(), decode(table, &v)?))))
    }

    /// Like [`Store::scan`], newest (largest key) first.
    pub fn scan_rev<T: DeserializeOwned>(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, T), StoreError>> + use<T> {
        let skip = table.prefix_len();
        self.backend
            .scan(table.key(prefix), true)
            .map(move |item| item.and_then(|(k, v)| Ok((k[skip..].to_vec(), decode(table, &v)?))))
    }

    /// Keys only, in order: cheaper than [`Store::scan`] when values are not needed.
    pub fn keys(
        &self,
        table: Table,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + use<> {
        let skip = table.prefix_len();
        self.backend
            .scan(table.key(prefix), false)
            .map(move |item| item.map(|(k, _)| k[skip..].to_vec()))
    }

    /// Up to `limit` records with keys from `start` (inclusive) within the table, in order.
    pub fn range<T: DeserializeOwned>(
        &self,
        table: Table,
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let skip = table.prefix_len();
        self.backend
            .range_from(table.key(start), table.key(b""), limit)?
            .into_iter()
            .map(|(k, v)| Ok((k[skip..].to_vec(), decode(table, &v)?)))
            .collect()
    }

    /// Number of records in the table (walks its keys).
    pub fn count(&self, table: Table) -> Result<usize, StoreError> {
        let mut n = 0;
        for item in self.backend.scan(table.key(b""), false) {
            item?;
            n += 1;
        }
        Ok(n)
    }

    pub fn batch(&self) -> Batch {
        Batch { ops: Vec::new() }
    }

    /// Applies every write in the batch, or none.
    pub fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.ops.is_empty() {
            return Ok(());
        }
        self.backend.apply(batch.ops)
    }

    /// Atomic read-modify-write of one record: `f` sees the current value and returns the new one
    /// (`None` deletes). `f` may run more than once under contention, so it must not have side
    /// effects. Returns what was written.
    pub fn update<T, F>(&self, table: Table, key: &[u8], mut f: F) -> Result<Option<T>, StoreError>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Option<T>,
    {
        let full = table.key(key);
        loop {
            let old = self.backend.get(&full)?;
            let current = match &old {
                Some(bytes) => Some(decode(table, bytes)?),
                None => None,
            };
            let new = f(current);
            let new_bytes = match &new {
                Some(v) => Some(encode(table, v)?),
                None => None,
            };
            if self.backend.compare_and_swap(&full, old, new_bytes)? {
                return Ok(new);
            }
        }
    }

    /// A process-wide monotonic id, unique across restarts.
    pub fn next_id(&self) -> Result<u64, StoreError> {
        self.backend.next_id()
    }

    /// Makes every write so far durable. Runs the fsync off the async threads.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let backend = self.backend.clone();
        tokio::task::spawn_blocking(move || backend.flush())
            .await
            .map_err(|e| StoreError::Backend(format!("flush task failed: {e}")))?
    }

    /// [`Store::flush`] for code that is not async (start-up, the CLI, shutdown).
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.backend.flush()
    }
}

/// Writes collected to be applied together by [`Store::apply`].
pub struct Batch {
    ops: Vec<Op>,
}

impl Batch {
    pub fn put<T: Serialize + ?Sized>(
        &mut self,
        table: Table,
        key: &[u8],
        value: &T,
    ) -> Result<(), StoreError> {
        self.ops
            .push(Op::Put(table.key(key), encode(table, value)?));
        Ok(())
    }

    pub fn delete(&mut self, table: Table, key: &[u8]) {
        self.ops.push(Op::Delete(table.key(key)));
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

fn encode<T: Serialize + ?Sized>(table: Table, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        table: table.0,
        source,
    })
}

fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        table: table.0,
        source,
    })
}

/// Big-endian bytes of an integer key, so numeric order is key order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Deserialize;

    const T1: Table = Table::new("t1");
    const T2: Table = Table::new("t2");
    // A table whose name is a prefix of T1's, to prove tables never see each other's rows.
    const T: Table = Table::new("t");

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        n: u64,
    }

    fn rec(name: &str, n: u64) -> Rec {
        Rec {
            name: name.into(),
            n,
        }
    }

    /// Runs `check` on a memory store and on a sled store in a temporary directory.
    pub(crate) fn on_both_backends(check: impl Fn(&Store)) {
        check(&Store::memory());
        let dir = tempfile::tempdir().expect("temp dir");
        check(&Store::open(dir.path()).expect("open sled"));
    }

    #[test]
    fn put_get_delete_round_trip() {
        on_both_backends(|s| {
            assert_eq!(s.get::<Rec>(T1, b"a").unwrap(), None);
            s.put(T1, b"a", &rec("a", 1)).unwrap();
            assert_eq!(s.get::<Rec>(T1, b"a").unwrap(), Some(rec("a", 1)));
            assert!(s.contains(T1, b"a").unwrap());
            s.put(T1, b"a", &rec("a", 2)).unwrap();
            assert_eq!(s.get::<Rec>(T1, b"a").unwrap().unwrap().n, 2);
            s.delete(T1, b"a").unwrap();
            assert_eq!(s.get::<Rec>(T1, b"a").unwrap(), None);
        });
    }

    #[test]
    fn tables_are_isolated_even_when_names_share_a_prefix() {
        on_both_backends(|s| {
            s.put(T1, b"k", &rec("one", 1)).unwrap();
            s.put(T2, b"k", &rec("two", 2)).unwrap();
            s.put(T, b"1\0k", &rec("t", 3)).unwrap();
            assert_eq!(s.get::<Rec>(T1, b"k").unwrap().unwrap().name, "one");
            assert_eq!(s.count(T1).unwrap(), 1);
            assert_eq!(s.count(T).unwrap(), 1);
            let all: Vec<_> = s.scan::<Rec>(T, b"").map(|r| r.unwrap().1.name).collect();
            assert_eq!(all, vec!["t"]);
        });
    }

    #[test]
    fn scan_is_ordered_and_filtered_by_prefix() {
        on_both_backends(|s| {
            for (k, n) in [("b2", 2), ("a1", 1), ("b1", 3), ("c", 4)] {
                s.put(T1, k.as_bytes(), &rec(k, n)).unwrap();
            }
            let keys: Vec<_> = s.scan::<Rec>(T1, b"b").map(|r| r.unwrap().0).collect();
            assert_eq!(keys, vec![b"b1".to_vec(), b"b2".to_vec()]);
            let rev: Vec<_> = s
                .scan_rev::<Rec>(T1, b"")
                .map(|r| r.unwrap().1.name)
                .collect();
            assert_eq!(rev, vec!["c", "b2", "b1", "a1"]);
            let ks: Vec<_> = s.keys(T1, b"a").map(|r| r.unwrap()).collect();
            assert_eq!(ks, vec![b"a1".to_vec()]);
        });
    }

    #[test]
    fn range_starts_at_key_and_respects_limit_within_the_table() {
        on_both_backends(|s| {
            for i in 0..10u64 {
                s.put(T1, &be(i), &rec("x", i)).unwrap();
            }
            s.put(T2, &be(0), &rec("other", 0)).unwrap();
            let page = s.range::<Rec>(T1, &be(7), 5).unwrap();
            let ns: Vec<_> = page.iter().map(|(_, r)| r.n).collect();
            assert_eq!(ns, vec![7, 8, 9]);
            assert_eq!(s.range::<Rec>(T1, &be(2), 2).unwrap().len(), 2);
        });
    }

    #[test]
    fn batch_applies_across_tables() {
        on_both_backends(|s| {
            s.put(T2, b"gone", &rec("gone", 0)).unwrap();
            let mut b = s.batch();
            b.put(T1, b"x", &rec("x", 1)).unwrap();
            b.put(T2, b"y", &rec("y", 2)).unwrap();
            b.delete(T2, b"gone");
            assert_eq!(b.len(), 3);
            s.apply(b).unwrap();
            assert!(s.contains(T1, b"x").unwrap());
            assert!(s.contains(T2, b"y").unwrap());
            assert!(!s.contains(T2, b"gone").unwrap());
        });
    }

    #[test]
    fn update_is_atomic_under_concurrency() {
        on_both_backends(|s| {
            std::thread::scope(|scope| {
                for _ in 0..4 {
                    scope.spawn(|| {
                        for _ in 0..50 {
                            s.update::<u64, _>(T1, b"counter", |old| Some(old.unwrap_or(0) + 1))
                                .unwrap();
                        }
                    });
                }
            });
            assert_eq!(s.get::<u64>(T1, b"counter").unwrap(), Some(200));
            assert_eq!(s.update::<u64, _>(T1, b"counter", |_| None).unwrap(), None);
            assert!(!s.contains(T1, b"counter").unwrap());
        });
    }

    #[test]
    fn next_id_is_monotonic() {
        on_both_backends(|s| {
            let a = s.next_id().unwrap();
            let b = s.next_id().unwrap();
            assert!(b > a);
        });
    }

    #[test]
    fn damaged_record_is_reported_not_panicked() {
        on_both_backends(|s| {
            s.put(T1, b"k", &"not a record").unwrap();
            let err = s.get::<Rec>(T1, b"k").unwrap_err();
            assert!(
                matches!(err, StoreError::Corrupt { table: "t1", .. }),
                "{err}"
            );
        });
    }

    #[test]
    fn sled_store_keeps_flushed_writes_and_schema_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(T1, b"k", &rec("kept", 7)).unwrap();
            s.flush_blocking().unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get::<Rec>(T1, b"k").unwrap(), Some(rec("kept", 7)));
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    }

    #[test]
    fn refuses_a_store_from_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path()).unwrap();
            s.put(META, SCHEMA_KEY, &(SCHEMA_VERSION + 1)).unwrap();
            s.flush_blocking().unwrap();
        }
        let err = Store::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }

    #[tokio::test]
    async fn async_flush_completes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put(T1, b"k", &1u32).unwrap();
        s.flush().await.unwrap();
    }
}
