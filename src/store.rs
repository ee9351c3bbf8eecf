//! The durable store: one fjall database in the daemon's data directory.
//!
//! # What lives here
//!
//! - The **TRNG queue** ([`Queue`]): health-tested raw hardware random bytes waiting to be
//!   served, a FIFO of byte items with O(1) push and pop.
//! - **Settings**: configuration changed at run time (queue sizes, consumption mode, …), so
//!   that it survives a restart.
//! - The **Fortuna seed file** (64 bytes, *Cryptography Engineering* §9.6).
//! - **Counters** and **hourly usage statistics** per source (bytes and requests).
//!
//! # Contract
//!
//! - Every queue change writes its items and the queue's head/tail/counters record in one
//!   atomic fjall batch, so a crash at any point leaves a consistent queue.
//! - [`Queue::push`] and [`Queue::take`] return only once their change is on disk (fsync).
//!   Concurrent callers share one fsync (group commit): callers queue their operation; one of
//!   them, the leader, applies every queued operation in order, each as its own journal batch,
//!   then syncs once and hands each caller its result, while newcomers queue for the next
//!   round. (Syncing per caller would serialise everybody on the journal lock, which fjall
//!   holds during an fsync.) Bytes handed out by `take` are deleted
//!   (never kept flagged), and durably so before the caller can serve them: after a crash no
//!   byte that was served is still in the queue (design.md §2 invariant 1).
//! - Pops never scan from the first key: the head sequence number is kept in the queue record
//!   and reads start there, because a drained queue's front is full of tombstones
//!   (`reference/rust-ecosystem.md` §1, fjall issue #115).
//! - A full queue stores nothing more and counts what it refused as dropped (no write churn on
//!   SD cards, and no fsync per refused push); shrinking the capacity below the current length
//!   trims nothing. The drop count is written with the queue's next change, by
//!   [`Store::flush`], and when the last handle to the store is dropped, so a restart loses
//!   at most the drops since the last flush.
//! - [`Store::open`] refuses a directory that is not a lokey store, a store of another format,
//!   a damaged store, or one that another process holds, naming the path.
//! - Creating a store is safe against a crash: [`Store::open`] first writes a marker file,
//!   `lokey-creating`, into the empty directory, and removes it only once the store is
//!   complete and synced. A directory holding the marker is a creation that was interrupted
//!   (nothing in it was ever acknowledged), and the next open starts the creation over.
//! - A failed write or sync poisons the store: it refuses every further write with
//!   [`StoreError::Engine`], and [`Store::healthy`] turns false until the daemon restarts.
//! - Counters other than the queue's, and usage statistics, are kept in memory and written by
//!   [`Store::flush`] (the daemon calls it periodically and at shutdown); a crash loses at most
//!   the increments since the last flush, never queue data.
//!
//! Sizes are Pi-sized by default ([`Options::default`]): a 4 MiB block cache, 1 MiB memtables
//! for every keyspace, journals bounded to 64 MiB, one background worker.

pub mod beacon;
pub mod draws;

use std::collections::VecDeque;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use fjall::config::{FilterPolicy, PinningPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};

/// The format this code writes, stored under the key `format`.
pub const FORMAT: &str = "lokey-store 1";
const FORMAT_KEY: &[u8] = b"format";
const SEED_KEY: &[u8] = b"fortuna/seed";
const SETTING_PREFIX: &str = "setting/";
const COUNTER_PREFIX: &str = "counter/";
/// The marker file present while a store is being created (see the module docs).
const CREATING: &str = "lokey-creating";
/// Hours of usage statistics kept per source (31 days).
pub const USAGE_HOURS_KEPT: u64 = 31 * 24;

/// Smallest and largest queue capacity, in items (the Go API's limits).
pub const CAPACITY_RANGE: std::ops::RangeInclusive<u64> = 10..=1_000_000;

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory holds something that is not a lokey store.
    #[error(
        "{path} is not a lokey data directory ({detail}); choose an empty or new directory \
         with --data-dir"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// A lokey store of a format this version does not read.
    #[error("{path} holds a lokey store of format {found:?}; this lokeyd reads {FORMAT:?}")]
    UnsupportedFormat {
        /// The directory.
        path: PathBuf,
        /// The format found.
        found: String,
    },
    /// The store is damaged.
    #[error(
        "the store in {path} is damaged ({detail}); lokeyd will not guess: move the directory \
         aside to start with an empty store"
    )]
    Corrupt {
        /// The directory.
        path: PathBuf,
        /// What the storage engine said.
        detail: String,
    },
    /// Another process has the store open.
    #[error("the store in {path} is in use by another process (is another lokeyd running?)")]
    Locked {
        /// The directory.
        path: PathBuf,
    },
    /// The directory could not be read or created.
    #[error("cannot open the store in {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Fewer bytes are queued than were asked for; nothing was taken.
    #[error("only {available} bytes are available, {requested} were requested")]
    Insufficient {
        /// Bytes that could be served now (after the skipped ones).
        available: u64,
        /// Bytes requested.
        requested: u64,
    },
    /// A read or write failed while running (a failed sync makes the store refuse further
    /// writes; the daemon must restart).
    #[error("store failure: {0}")]
    Engine(String),
}

impl StoreError {
    fn engine(e: fjall::Error) -> StoreError {
        StoreError::Engine(describe(&e))
    }
}

fn describe(e: &fjall::Error) -> String {
    match e {
        fjall::Error::Io(io) => io.to_string(),
        fjall::Error::Poisoned => {
            "an earlier write could not be synced to disk; restart lokeyd (check the disk)".into()
        }
        other => format!("{other:?}"),
    }
}

/// Sizes of the storage engine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Block cache, bytes.
    pub cache_bytes: u64,
    /// Memtable size of each keyspace, bytes.
    pub memtable_bytes: u64,
    /// Background workers (flush, compaction).
    pub workers: usize,
}

impl Default for Options {
    /// Pi-sized: 4 MiB cache, 1 MiB memtables, one worker. (Skiplist nodes take more memory
    /// than the data they hold, and a memtable being flushed stays while the next one fills:
    /// heaptrack saw 5 MB of skiplist at the peak of a `bench/load` run with 2 MiB memtables.)
    fn default() -> Options {
        Options {
            cache_bytes: 4 << 20,
            memtable_bytes: 1 << 20,
            workers: 1,
        }
    }
}

/// The store. Cheap to clone; all clones share one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    db: Database,
    meta: Keyspace,
    usage: Keyspace,
    trng: Queue,
    beacon: Keyspace,
    draws: Keyspace,
    sync: Arc<Durability>,
    /// Counter increments and usage not yet written.
    pending: Mutex<Pending>,
}

impl Drop for Inner {
    /// The last handle went: drops counted since the last write go to disk (best effort; a
    /// failure here was already reported by the write that poisoned the store).
    fn drop(&mut self) {
        if let Ok(true) = self.trng.write_record() {
            let _ = self.sync.persist(&self.db);
        }
    }
}

#[derive(Default)]
struct Pending {
    counters: BTreeMap<String, u64>,
    usage: HashMap<(String, u64), Usage>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the store in `dir`, creating it when `dir` is missing or empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::Foreign`], [`StoreError::UnsupportedFormat`], [`StoreError::Corrupt`],
    /// [`StoreError::Locked`] or [`StoreError::Io`], each naming `dir`.
    pub fn open(dir: &Path, options: &Options) -> Result<Store, StoreError> {
        Self::open_with(dir, options, None)
    }

    /// Like [`Store::open`], but when it creates the store it aborts the process at `step`,
    /// as a crash would (no destructor runs): for tests of the creation's crash safety.
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    #[doc(hidden)]
    pub fn open_crashing_at(
        dir: &Path,
        options: &Options,
        step: CreationStep,
    ) -> Result<Store, StoreError> {
        Self::open_with(dir, options, Some(step))
    }

    fn open_with(
        dir: &Path,
        options: &Options,
        crash_at: Option<CreationStep>,
    ) -> Result<Store, StoreError> {
        let crash = |step| {
            if crash_at == Some(step) {
                std::process::abort();
            }
        };
        let path = dir.to_path_buf();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        // Held (and locked) while this call creates the store.
        let creating = prepare(dir)?;
        crash(CreationStep::Marked);
        let db = Database::builder(dir)
            .cache_size(options.cache_bytes)
            .worker_threads(options.workers.max(1))
            .max_cached_files(Some(64))
            // The smallest journal bound fjall allows (default 512 MiB): a full journal makes
            // it flush the memtables that pin the oldest journal file, so an SD card never
            // holds more than this in journals.
            .max_journaling_size(64 << 20)
            .manual_journal_persist(true)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => StoreError::Locked { path: path.clone() },
                fjall::Error::Io(e) if e.kind() != std::io::ErrorKind::InvalidData => io(e),
                other => StoreError::Corrupt {
                    path: path.clone(),
                    detail: describe(&other),
                },
            })?;
        let corrupt = |e: fjall::Error| StoreError::Corrupt {
            path: path.clone(),
            detail: describe(&e),
        };
        crash(CreationStep::EngineCreated);
        // Every keyspace gets the small memtable (fjall's default is 64 MiB each): counters and
        // usage statistics are rewritten every few seconds, and each version stays in memory
        // until its memtable is flushed. fjall stores these options when a keyspace is created.
        //
        // No Bloom filters and nothing pinned: the queue is read by ranges from its head, which
        // filters never serve, and unpinned index blocks live in the bounded block cache, so
        // memory does not grow with the data (fjall pins the first levels' index and filter
        // blocks by default).
        let memtable = options.memtable_bytes;
        let small = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(memtable)
                .filter_policy(FilterPolicy::disabled())
                .filter_block_pinning_policy(PinningPolicy::disabled())
                .index_block_pinning_policy(PinningPolicy::disabled())
        };
        let meta = db.keyspace("meta", small).map_err(corrupt)?;
        match meta.get(FORMAT_KEY).map_err(corrupt)? {
            Some(found) if *found == *FORMAT.as_bytes() => {}
            Some(found) => {
                return Err(StoreError::UnsupportedFormat {
                    path,
                    found: String::from_utf8_lossy(&found).into_owned(),
                });
            }
            None if creating.is_some() => {}
            None => {
                return Err(StoreError::Foreign {
                    path,
                    detail: "a database without lokey's format marker".into(),
                });
            }
        }
        let usage = db.keyspace("usage", small).map_err(corrupt)?;
        let items = db.keyspace("queue.trng", small).map_err(corrupt)?;
        let beacon = db.keyspace("beacon", small).map_err(corrupt)?;
        let draws = db.keyspace("draws", small).map_err(corrupt)?;
        if let Some(marker) = creating {
            meta.insert(FORMAT_KEY, FORMAT).map_err(corrupt)?;
            crash(CreationStep::FormatWritten);
            db.persist(PersistMode::SyncAll).map_err(corrupt)?;
            crash(CreationStep::Synced);
            // Complete: from here on the store may hold acknowledged data.
            finish_creation(dir, marker).map_err(io)?;
        }
        let sync = Arc::new(Durability {
            dir: path.clone(),
            ..Durability::default()
        });
        let trng = Queue::open("trng", db.clone(), items, meta.clone(), sync.clone()).map_err(
            |e| match e {
                StoreError::Engine(detail) => StoreError::Corrupt {
                    path: path.clone(),
                    detail,
                },
                other => other,
            },
        )?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                db,
                meta,
                usage,
                trng,
                beacon,
                draws,
                sync,
                pending: Mutex::new(Pending::default()),
            }),
        })
    }

    /// The directory of the store.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The queue of raw hardware random bytes.
    pub fn trng(&self) -> &Queue {
        &self.inner.trng
    }

    /// The beacon's pulses and chain state.
    pub fn beacon(&self) -> beacon::Beacon {
        beacon::Beacon::new(self.clone(), self.inner.beacon.clone())
    }

    /// The registered draws.
    pub fn draws(&self) -> draws::Draws {
        draws::Draws::new(self.clone(), self.inner.draws.clone())
    }

    /// A persisted setting.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value = self
            .inner
            .meta
            .get(format!("{SETTING_PREFIX}{key}"))
            .map_err(StoreError::engine)?;
        Ok(value.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every persisted setting, by key.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn settings(&self) -> Result<BTreeMap<String, String>, StoreError> {
        let mut out = BTreeMap::new();
        for guard in self.inner.meta.prefix(SETTING_PREFIX) {
            let (key, value) = guard.into_inner().map_err(StoreError::engine)?;
            let key = String::from_utf8_lossy(&key[SETTING_PREFIX.len()..]).into_owned();
            out.insert(key, String::from_utf8_lossy(&value).into_owned());
        }
        Ok(out)
    }

    /// Persists a setting; durable when this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn set_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        let mut batch = self.inner.db.batch();
        batch.insert(&self.inner.meta, format!("{SETTING_PREFIX}{key}"), value);
        self.commit_durably(batch)
    }

    /// The Fortuna seed file, if one was written.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`]; [`StoreError::Corrupt`] when the stored seed is not 64 bytes.
    pub fn fortuna_seed(&self) -> Result<Option<[u8; 64]>, StoreError> {
        let Some(value) = self.inner.meta.get(SEED_KEY).map_err(StoreError::engine)? else {
            return Ok(None);
        };
        let seed = <[u8; 64]>::try_from(&*value).map_err(|_| StoreError::Corrupt {
            path: self.inner.path.clone(),
            detail: format!("the Fortuna seed file is {} bytes, not 64", value.len()),
        })?;
        Ok(Some(seed))
    }

    /// Replaces the Fortuna seed file; durable when this returns (§9.6.1: the new seed must be
    /// on disk before output that depends on the old one is used).
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn set_fortuna_seed(&self, seed: &[u8; 64]) -> Result<(), StoreError> {
        let mut batch = self.inner.db.batch();
        batch.insert(&self.inner.meta, SEED_KEY, seed.as_slice());
        self.commit_durably(batch)
    }

    /// Adds `delta` to the counter `name` (written by the next [`Store::flush`]).
    pub fn count(&self, name: &str, delta: u64) {
        let mut pending = lock(&self.inner.pending);
        *pending.counters.entry(name.to_owned()).or_default() += delta;
    }

    /// The counter `name`, including increments not yet flushed.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn counter(&self, name: &str) -> Result<u64, StoreError> {
        let pending = lock(&self.inner.pending)
            .counters
            .get(name)
            .copied()
            .unwrap_or(0);
        Ok(self.stored_counter(name)? + pending)
    }

    fn stored_counter(&self, name: &str) -> Result<u64, StoreError> {
        let value = self
            .inner
            .meta
            .get(format!("{COUNTER_PREFIX}{name}"))
            .map_err(StoreError::engine)?;
        Ok(value.map_or(0, |v| be_u64(&v, 0)))
    }

    /// Records a request of `bytes` served from `source` at `now` in the hourly statistics
    /// (written by the next [`Store::flush`]).
    pub fn record_usage(&self, source: &str, bytes: u64, now: SystemTime) {
        let hour = hour_of(now);
        let mut pending = lock(&self.inner.pending);
        let entry = pending.usage.entry((source.to_owned(), hour)).or_default();
        entry.bytes += bytes;
        entry.requests += 1;
    }

    /// Hourly usage of `source` from the hour containing `since` on, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn usage(&self, source: &str, since: SystemTime) -> Result<Vec<HourUsage>, StoreError> {
        let mut hours: BTreeMap<u64, Usage> = BTreeMap::new();
        let from = usage_key(source, hour_of(since));
        let to = usage_key(source, u64::MAX);
        for guard in self.inner.usage.range(from..=to) {
            let (key, value) = guard.into_inner().map_err(StoreError::engine)?;
            let hour = be_u64(&key, key.len() - 8);
            let u = hours.entry(hour).or_default();
            u.bytes += be_u64(&value, 0);
            u.requests += be_u64(&value, 8);
        }
        let since = hour_of(since);
        for ((s, hour), pending) in &lock(&self.inner.pending).usage {
            if s == source && *hour >= since {
                let u = hours.entry(*hour).or_default();
                u.bytes += pending.bytes;
                u.requests += pending.requests;
            }
        }
        Ok(hours
            .into_iter()
            .map(|(hour, u)| HourUsage {
                hour_start: UNIX_EPOCH + std::time::Duration::from_secs(hour * 3600),
                bytes: u.bytes,
                requests: u.requests,
            })
            .collect())
    }

    /// Writes pending counters and usage statistics and the TRNG queue's drop count, drops
    /// usage older than [`USAGE_HOURS_KEPT`], and syncs everything to disk.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`]; the pending increments are kept for the next try.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.trng.write_record()?;
        let mut pending = lock(&self.inner.pending);
        let mut batch = self.inner.db.batch();
        for (name, delta) in &pending.counters {
            let total = self.stored_counter(name)? + delta;
            batch.insert(
                &self.inner.meta,
                format!("{COUNTER_PREFIX}{name}"),
                total.to_be_bytes().as_slice(),
            );
        }
        let mut sources = Vec::new();
        for ((source, hour), u) in &pending.usage {
            let key = usage_key(source, *hour);
            let old = self.inner.usage.get(&key).map_err(StoreError::engine)?;
            let (bytes, requests) = old.map_or((0, 0), |v| (be_u64(&v, 0), be_u64(&v, 8)));
            let mut value = [0u8; 16];
            value[..8].copy_from_slice(&(bytes + u.bytes).to_be_bytes());
            value[8..].copy_from_slice(&(requests + u.requests).to_be_bytes());
            batch.insert(&self.inner.usage, key, value.as_slice());
            sources.push((source.clone(), *hour));
        }
        // Old hours go: each source's entries before the cut-off.
        for (source, hour) in sources {
            let cut = hour.saturating_sub(USAGE_HOURS_KEPT);
            for guard in self
                .inner
                .usage
                .range(usage_key(&source, 0)..usage_key(&source, cut))
            {
                batch.remove(&self.inner.usage, guard.key().map_err(StoreError::engine)?);
            }
        }
        self.commit_durably(batch)?;
        pending.counters.clear();
        pending.usage.clear();
        Ok(())
    }

    /// Whether the store accepts writes (a failed sync poisons it).
    pub fn healthy(&self) -> bool {
        self.inner.sync.failed().is_none()
    }

    /// Bytes the store takes on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.db.disk_space().unwrap_or(0)
    }

    /// Syncs performed so far (group commit lets concurrent callers share one).
    #[doc(hidden)]
    pub fn syncs(&self) -> u64 {
        self.inner.sync.syncs.load(Ordering::Relaxed)
    }

    /// Stalls every sync until the guard is dropped (for tests of the group commit).
    #[doc(hidden)]
    pub fn hold_syncs(&self) -> MutexGuard<'_, ()> {
        lock(&self.inner.sync.gate)
    }

    fn commit_durably(&self, batch: fjall::OwnedWriteBatch) -> Result<(), StoreError> {
        let ticket = self.inner.sync.commit(batch)?;
        self.inner.sync.persist_through(&self.inner.db, ticket)
    }
}

/// A point in the creation of a store, where a test can simulate a crash
/// ([`Store::open_crashing_at`]).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreationStep {
    /// The marker file is written and synced; nothing else is there.
    Marked,
    /// The storage engine has created its files.
    EngineCreated,
    /// The format marker and keyspaces are written, not yet synced.
    FormatWritten,
    /// Everything is synced; the marker file is still there.
    Synced,
}

/// Readies `dir` for the engine: the marker file, locked, when this call is to create the
/// store (`dir` missing or empty, or an interrupted creation, whose leftovers are removed);
/// `None` for an existing store.
fn prepare(dir: &Path) -> Result<Option<std::fs::File>, StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_path_buf(),
        source,
    };
    loop {
        let names = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                sync_parent(dir).map_err(io)?;
                Vec::new()
            }
            Err(e) => return Err(io(e)),
        };
        if names.is_empty() {
            match start_creation(dir) {
                Ok(marker) => return Ok(Some(marker)),
                // Another process began creating it just now: see below.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(StoreError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
        if names.iter().any(|n| n == CREATING) {
            match resume_creation(dir) {
                Ok(Some(marker)) => return Ok(Some(marker)),
                // The creator finished meanwhile: look again.
                Ok(None) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    return Err(StoreError::Locked {
                        path: dir.to_path_buf(),
                    });
                }
                Err(e) => return Err(io(e)),
            }
        }
        if !dir.join("version").is_file() {
            return Err(StoreError::Foreign {
                path: dir.to_path_buf(),
                detail: "it is not empty and holds no store".into(),
            });
        }
        return Ok(None);
    }
}

/// Locks `file` (exclusive, not waiting): `WouldBlock` when another process holds it.
fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    file.try_lock().map_err(|e| match e {
        std::fs::TryLockError::WouldBlock => std::io::ErrorKind::WouldBlock.into(),
        std::fs::TryLockError::Error(e) => e,
    })
}

/// Writes and syncs the marker file in the empty `dir`.
fn start_creation(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut marker = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(CREATING))?;
    try_lock(&marker)?;
    marker.write_all(
        b"lokeyd is creating a store in this directory. If this file stays, the creation was \
          interrupted, and the next start of lokeyd begins it again.\n",
    )?;
    marker.sync_all()?;
    sync_dir(dir)?;
    Ok(marker)
}

/// Takes over an interrupted creation: locks the marker file (`WouldBlock` while its creator
/// runs) and removes everything else in `dir`, none of which was ever acknowledged. `None`
/// when the marker went meanwhile (its creator finished).
fn resume_creation(dir: &Path) -> std::io::Result<Option<std::fs::File>> {
    let marker_path = dir.join(CREATING);
    let marker = match std::fs::OpenOptions::new().write(true).open(&marker_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    try_lock(&marker)?;
    // The creator removes the marker before it lets go of the lock.
    if !marker_path.try_exists()? {
        return Ok(None);
    }
    tracing::warn!(
        "{}: an earlier creation of the store was interrupted; creating it again",
        dir.display()
    );
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name() == CREATING {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    sync_dir(dir)?;
    Ok(Some(marker))
}

/// The store in `dir` is complete and synced: the marker goes, durably, before the lock on
/// it is let go.
fn finish_creation(dir: &Path, marker: std::fs::File) -> std::io::Result<()> {
    std::fs::remove_file(dir.join(CREATING))?;
    sync_dir(dir)?;
    drop(marker);
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes the entry of a directory just created durable in its parent (skipped when the parent
/// cannot be read, which some setups do on purpose).
fn sync_parent(dir: &Path) -> std::io::Result<()> {
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match sync_dir(parent) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

/// Bytes and requests of one hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    bytes: u64,
    requests: u64,
}

/// Usage of one source during one hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourUsage {
    /// Start of the hour.
    pub hour_start: SystemTime,
    /// Bytes served.
    pub bytes: u64,
    /// Requests served.
    pub requests: u64,
}

fn hour_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 3600)
}

fn usage_key(source: &str, hour: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(source.len() + 9);
    key.extend_from_slice(source.as_bytes());
    key.push(0);
    key.extend_from_slice(&hour.to_be_bytes());
    key
}

fn be_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Committing and syncing, and remembering a failure: fjall refuses every write after a
/// failed journal write or sync (its "poisoned" state), and health reports it.
#[derive(Default)]
struct Durability {
    /// The data directory, to say why a background write failed.
    dir: PathBuf,
    failed: Mutex<Option<String>>,
    /// Syncs performed.
    syncs: AtomicU64,
    /// Taken by every sync; a test holds it to stall syncs (see [`Store::hold_syncs`]).
    gate: Mutex<()>,
    /// Batches committed (each one's ticket), and the highest ticket a sync has covered:
    /// group commit for [`Durability::persist_through`].
    committed: AtomicU64,
    synced: AtomicU64,
}

impl Durability {
    /// Writes `batch` to the journal (not yet durable); returns its ticket for
    /// [`Durability::persist_through`].
    fn commit(&self, batch: fjall::OwnedWriteBatch) -> Result<u64, StoreError> {
        batch.commit().map_err(|e| self.fail(&e))?;
        Ok(self.committed.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Makes the batch with `ticket` durable, with every batch committed before it: group
    /// commit. A sync covers every ticket handed out before it began (each was in the journal
    /// by then), so a caller that waited for the gate while another synced finds its ticket
    /// covered and returns without a sync of its own.
    fn persist_through(&self, db: &Database, ticket: u64) -> Result<(), StoreError> {
        let _gate = lock(&self.gate);
        if self.synced.load(Ordering::Acquire) >= ticket {
            return Ok(());
        }
        let upto = self.committed.load(Ordering::Acquire);
        db.persist(PersistMode::SyncData)
            .map_err(|e| self.fail(&e))?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.synced.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Makes every batch committed so far durable. Journals are preallocated and their
    /// directory synced when created, so a data sync (fdatasync) suffices.
    fn persist(&self, db: &Database) -> Result<(), StoreError> {
        // No ticket is that high: always a sync of its own.
        self.persist_through(db, u64::MAX)
    }

    /// The error for `e`, remembered when it leaves fjall poisoned: an I/O error while
    /// writing or syncing the journal does, and so does every write after it.
    fn fail(&self, e: &fjall::Error) -> StoreError {
        let why = match e {
            // fjall's background flush failed and poisoned it; its I/O error went to its log
            // only. A full disk is the usual cause, and worth naming.
            fjall::Error::Poisoned if disk_full(&self.dir) => format!(
                "No space left on device holding {} (a background write failed); free some \
                 space and restart lokeyd",
                self.dir.display()
            ),
            _ => describe(e),
        };
        if matches!(e, fjall::Error::Io(_) | fjall::Error::Poisoned) {
            lock(&self.failed).get_or_insert_with(|| why.clone());
        }
        StoreError::Engine(why)
    }

    fn failed(&self) -> Option<String> {
        lock(&self.failed).clone()
    }
}

/// Whether the file system holding `dir` has less than one journal write's worth of room
/// left for this process (statvfs(3) `f_bavail`, what unprivileged writers may use).
#[allow(
    clippy::unnecessary_cast,
    reason = "fsblkcnt_t and c_ulong are 32 bits on 32-bit targets"
)]
fn disk_full(dir: &Path) -> bool {
    nix::sys::statvfs::statvfs(dir).is_ok_and(|s| {
        (s.blocks_available() as u64).saturating_mul(s.fragment_size() as u64) < 64 * 1024
    })
}

/// A durable FIFO queue of byte items (see the module docs for its guarantees).
pub struct Queue {
    name: &'static str,
    db: Database,
    items: Keyspace,
    meta: Keyspace,
    sync: Arc<Durability>,
    state: Mutex<QueueState>,
    rounds: Mutex<Rounds>,
    finished: Condvar,
}

/// An operation waiting for the leader of a group commit.
enum Op {
    Push(Vec<Box<[u8]>>),
    Take { skip: u64, n: usize },
}

/// What an operation gave.
enum Done {
    Pushed(Pushed),
    Taken(Vec<u8>),
}

/// The group commit's bookkeeping.
#[derive(Default)]
struct Rounds {
    /// Operations queued for the next round, with their ids.
    waiting: VecDeque<(u64, Op)>,
    /// Results of finished rounds not yet collected.
    results: HashMap<u64, Result<Done, StoreError>>,
    next_id: u64,
    /// A leader is applying a round.
    leading: bool,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.name)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// The persistent record of a queue, written with every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct QueueState {
    /// Sequence number of the first item (== `tail` when empty).
    head: u64,
    /// Sequence number the next item gets.
    tail: u64,
    /// Items stored.
    items: u64,
    /// Bytes stored.
    bytes: u64,
    /// Items ever stored.
    stored: u64,
    /// Items refused because the queue was full.
    dropped: u64,
    /// Items taken whole or finished.
    consumed_items: u64,
    /// Bytes taken.
    consumed_bytes: u64,
    /// Capacity in items (not part of the record: it comes from the configuration).
    capacity: u64,
    /// Drops not yet written (not part of the record).
    unwritten: bool,
}

const RECORD_FIELDS: usize = 8;

impl QueueState {
    fn encode(&self) -> [u8; RECORD_FIELDS * 8] {
        let fields = [
            self.head,
            self.tail,
            self.items,
            self.bytes,
            self.stored,
            self.dropped,
            self.consumed_items,
            self.consumed_bytes,
        ];
        let mut out = [0u8; RECORD_FIELDS * 8];
        for (chunk, value) in out.chunks_exact_mut(8).zip(fields) {
            chunk.copy_from_slice(&value.to_be_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<QueueState> {
        if bytes.len() != RECORD_FIELDS * 8 {
            return None;
        }
        let f = |i: usize| be_u64(bytes, i * 8);
        let state = QueueState {
            head: f(0),
            tail: f(1),
            items: f(2),
            bytes: f(3),
            stored: f(4),
            dropped: f(5),
            consumed_items: f(6),
            consumed_bytes: f(7),
            capacity: *CAPACITY_RANGE.end(),
            unwritten: false,
        };
        (state.head <= state.tail && state.items <= state.tail - state.head).then_some(state)
    }
}

/// What a queue holds and has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    /// Items stored now.
    pub items: u64,
    /// Bytes stored now.
    pub bytes: u64,
    /// Capacity in items.
    pub capacity: u64,
    /// Items ever stored.
    pub stored: u64,
    /// Items refused because the queue was full.
    pub dropped: u64,
    /// Items fully consumed.
    pub consumed_items: u64,
    /// Bytes consumed.
    pub consumed_bytes: u64,
}

/// What [`Queue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// Items stored.
    pub stored: usize,
    /// Items refused because the queue was full.
    pub dropped: usize,
}

impl Queue {
    fn open(
        name: &'static str,
        db: Database,
        items: Keyspace,
        meta: Keyspace,
        sync: Arc<Durability>,
    ) -> Result<Queue, StoreError> {
        let state = match meta
            .get(Self::record_key(name))
            .map_err(StoreError::engine)?
        {
            None => QueueState {
                capacity: *CAPACITY_RANGE.end(),
                ..QueueState::default()
            },
            Some(bytes) => QueueState::decode(&bytes).ok_or_else(|| {
                StoreError::Engine(format!("the {name} queue's record is malformed"))
            })?,
        };
        Ok(Queue {
            name,
            db,
            items,
            meta,
            sync,
            state: Mutex::new(state),
            rounds: Mutex::new(Rounds::default()),
            finished: Condvar::new(),
        })
    }

    fn record_key(name: &str) -> Vec<u8> {
        format!("queue/{name}").into_bytes()
    }

    /// What the queue holds and has done.
    pub fn stats(&self) -> QueueStats {
        let s = *lock(&self.state);
        QueueStats {
            items: s.items,
            bytes: s.bytes,
            capacity: s.capacity,
            stored: s.stored,
            dropped: s.dropped,
            consumed_items: s.consumed_items,
            consumed_bytes: s.consumed_bytes,
        }
    }

    /// Sets the capacity in items (clamped to [`CAPACITY_RANGE`]). Items beyond a smaller
    /// capacity stay until taken; new ones are dropped meanwhile.
    pub fn set_capacity(&self, items: u64) {
        lock(&self.state).capacity = items.clamp(*CAPACITY_RANGE.start(), *CAPACITY_RANGE.end());
    }

    /// Appends `items` (empty ones are ignored) as far as the capacity allows, counting the
    /// rest as dropped; durable when this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`]; nothing was stored then.
    pub fn push<T: AsRef<[u8]>>(&self, items: &[T]) -> Result<Pushed, StoreError> {
        let items = items
            .iter()
            .map(AsRef::as_ref)
            .filter(|i| !i.is_empty())
            .map(Box::from)
            .collect();
        match self.run(Op::Push(items))? {
            Done::Pushed(pushed) => Ok(pushed),
            Done::Taken(_) => unreachable!("a push gives Pushed"),
        }
    }

    /// Takes bytes `skip .. skip + n` of the queue (counting from its front) and deletes
    /// them; the `skip` bytes before them stay. Durable when this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Insufficient`] (nothing taken) or [`StoreError::Engine`].
    pub fn take(&self, skip: u64, n: usize) -> Result<Vec<u8>, StoreError> {
        match self.run(Op::Take { skip, n })? {
            Done::Taken(bytes) => Ok(bytes),
            Done::Pushed(_) => unreachable!("a take gives Taken"),
        }
    }

    /// Group commit: queues `op`; the first caller to find no leader becomes one, applies
    /// every queued operation in order, syncs once, and publishes the results.
    fn run(&self, op: Op) -> Result<Done, StoreError> {
        let mut rounds = lock(&self.rounds);
        let id = rounds.next_id;
        rounds.next_id += 1;
        rounds.waiting.push_back((id, op));
        loop {
            if let Some(result) = rounds.results.remove(&id) {
                return result;
            }
            if rounds.leading {
                rounds = self
                    .finished
                    .wait(rounds)
                    .unwrap_or_else(|e| e.into_inner());
                continue;
            }
            rounds.leading = true;
            let round = std::mem::take(&mut rounds.waiting);
            drop(rounds);
            let results = self.apply_round(round);
            rounds = lock(&self.rounds);
            rounds.results.extend(results);
            rounds.leading = false;
            self.finished.notify_all();
        }
    }

    /// Applies a round of operations, each as its own journal batch, then syncs once. Results
    /// are withheld until the sync: no byte leaves before its removal is durable.
    fn apply_round(&self, round: VecDeque<(u64, Op)>) -> Vec<(u64, Result<Done, StoreError>)> {
        let mut state = lock(&self.state);
        let mut wrote = false;
        let mut results: Vec<_> = round
            .into_iter()
            .map(|(id, op)| {
                let result = match op {
                    Op::Push(items) => self.apply_push(&mut state, &items).map(Done::Pushed),
                    Op::Take { skip, n } => self.apply_take(&mut state, skip, n).map(Done::Taken),
                };
                // Only what reached the journal needs the sync: a push that was only dropped
                // (a full queue, the idle state) costs none.
                wrote |= match &result {
                    Ok(Done::Pushed(pushed)) => pushed.stored > 0,
                    Ok(Done::Taken(bytes)) => !bytes.is_empty(),
                    Err(_) => false,
                };
                (id, result)
            })
            .collect();
        drop(state);
        if wrote && let Err(e) = self.sync.persist(&self.db) {
            let why = match e {
                StoreError::Engine(why) => why,
                other => other.to_string(),
            };
            for (_, result) in &mut results {
                if result.is_ok() {
                    *result = Err(StoreError::Engine(why.clone()));
                }
            }
        }
        results
    }

    fn apply_push(
        &self,
        state: &mut QueueState,
        items: &[Box<[u8]>],
    ) -> Result<Pushed, StoreError> {
        let mut next = *state;
        let mut batch = self.db.batch();
        let mut pushed = Pushed::default();
        for item in items {
            if next.items >= next.capacity {
                next.dropped += 1;
                pushed.dropped += 1;
                continue;
            }
            batch.insert(&self.items, next.tail.to_be_bytes(), &**item);
            next.tail += 1;
            next.items += 1;
            next.bytes += item.len() as u64;
            next.stored += 1;
            pushed.stored += 1;
        }
        if pushed.stored > 0 {
            batch.insert(&self.meta, Self::record_key(self.name), next.encode());
            self.sync.commit(batch)?;
            next.unwritten = false;
        } else if pushed.dropped > 0 {
            // A full queue costs no disk write: the drop count goes with the next change, the
            // next flush or the close.
            next.unwritten = true;
        }
        *state = next;
        Ok(pushed)
    }

    /// Writes the queue's record to the journal if it has drops not yet written (not synced:
    /// the caller syncs). Whether it wrote.
    fn write_record(&self) -> Result<bool, StoreError> {
        let mut state = lock(&self.state);
        if !state.unwritten {
            return Ok(false);
        }
        let mut batch = self.db.batch();
        batch.insert(&self.meta, Self::record_key(self.name), state.encode());
        // Committed under the state lock, so no newer record can be overwritten by this one.
        self.sync.commit(batch)?;
        state.unwritten = false;
        Ok(true)
    }

    /// Operations queued for the next group-commit round (for tests).
    #[doc(hidden)]
    pub fn waiting(&self) -> usize {
        lock(&self.rounds).waiting.len()
    }

    fn apply_take(
        &self,
        state: &mut QueueState,
        skip: u64,
        n: usize,
    ) -> Result<Vec<u8>, StoreError> {
        self.check_available(state, skip, n)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut next = *state;
        let mut batch = self.db.batch();
        let mut out = Vec::with_capacity(n);
        let (start, end) = (skip, skip + n as u64);
        let mut pos = 0u64;
        let mut first_kept = None;
        let mut stored = self.items.range(state.head.to_be_bytes()..);
        for guard in stored.by_ref() {
            let (key, value) = guard.into_inner().map_err(StoreError::engine)?;
            let len = value.len() as u64;
            let (a, b) = (start.clamp(pos, pos + len), end.clamp(pos, pos + len));
            let seq = be_u64(&key, 0);
            if a == b {
                // Entirely before the range: stays.
                first_kept.get_or_insert(seq);
            } else {
                let (a, b) = ((a - pos) as usize, (b - pos) as usize);
                out.extend_from_slice(&value[a..b]);
                if a == 0 && b == value.len() {
                    batch.remove(&self.items, key);
                    next.items -= 1;
                    next.consumed_items += 1;
                } else {
                    let mut kept = Vec::with_capacity(value.len() - (b - a));
                    kept.extend_from_slice(&value[..a]);
                    kept.extend_from_slice(&value[b..]);
                    batch.insert(&self.items, key, kept);
                    first_kept.get_or_insert(seq);
                }
            }
            pos += len;
            if pos >= end {
                break;
            }
        }
        if out.len() != n {
            return Err(StoreError::Engine(format!(
                "the {} queue holds fewer bytes than its record says ({} of {n} found)",
                self.name,
                out.len()
            )));
        }
        next.head = match first_kept {
            Some(seq) => seq,
            // Every item read went: the head moves to the next stored item, if any.
            None => match stored.next() {
                Some(guard) => be_u64(&guard.key().map_err(StoreError::engine)?, 0),
                None => state.tail,
            },
        };
        next.bytes -= n as u64;
        next.consumed_bytes += n as u64;
        batch.insert(&self.meta, Self::record_key(self.name), next.encode());
        self.sync.commit(batch)?;
        next.unwritten = false;
        *state = next;
        Ok(out)
    }

    /// Bytes `skip .. skip + n` without taking them (for the non-consuming mode).
    ///
    /// # Errors
    ///
    /// [`StoreError::Insufficient`] or [`StoreError::Engine`].
    pub fn peek(&self, skip: u64, n: usize) -> Result<Vec<u8>, StoreError> {
        let state = lock(&self.state);
        self.check_available(&state, skip, n)?;
        let mut out = Vec::with_capacity(n);
        let (start, end) = (skip, skip + n as u64);
        let mut pos = 0u64;
        for guard in self.items.range(state.head.to_be_bytes()..) {
            if pos >= end {
                break;
            }
            let value = guard.value().map_err(StoreError::engine)?;
            let len = value.len() as u64;
            let (a, b) = (start.clamp(pos, pos + len), end.clamp(pos, pos + len));
            out.extend_from_slice(&value[(a - pos) as usize..(b - pos) as usize]);
            pos += len;
        }
        Ok(out)
    }

    fn check_available(&self, state: &QueueState, skip: u64, n: usize) -> Result<(), StoreError> {
        let wanted = skip.saturating_add(n as u64);
        if wanted > state.bytes {
            return Err(StoreError::Insufficient {
                available: state.bytes.saturating_sub(skip),
                requested: n as u64,
            });
        }
        Ok(())
    }
}
