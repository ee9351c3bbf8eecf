//! Suite: store. The durable fjall store: FIFO order and exact takes, capacity and counters
//! across restarts, settings, the seed file, usage statistics, bad data directories, and
//! crash safety — a child process killed with SIGKILL in the middle of pushes and takes, many
//! times over.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lokey::store::{CreationStep, FORMAT, Options, Pushed, Store, StoreError};

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, &Options::default()).expect("open the store")
}

/// An item whose content names it: its id in the first 8 bytes, then filler.
fn item(id: u64) -> [u8; 32] {
    let mut out = [0xA5u8; 32];
    out[..8].copy_from_slice(&id.to_be_bytes());
    out
}

fn ids(bytes: &[u8]) -> Vec<u64> {
    assert_eq!(bytes.len() % 32, 0, "whole items expected");
    bytes
        .chunks_exact(32)
        .map(|c| u64::from_be_bytes(c[..8].try_into().unwrap()))
        .collect()
}

#[test]
fn items_come_out_in_order_and_exactly_as_many_bytes_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let q = store.trng();
    assert_eq!(
        q.push(&[b"abc".as_slice(), b"defgh", b"", b"ij"]).unwrap(),
        Pushed {
            stored: 3,
            dropped: 0
        }
    );
    assert_eq!(q.stats().items, 3);
    assert_eq!(q.stats().bytes, 10);
    // A take across item boundaries, ending inside an item.
    assert_eq!(q.take(0, 4).unwrap(), b"abcd");
    assert_eq!(q.stats().bytes, 6);
    assert_eq!(
        q.stats().items,
        2,
        "the first item went, the second was cut"
    );
    assert_eq!(q.peek(0, 6).unwrap(), b"efghij");
    // More than there is: an error saying how much there is, and nothing taken.
    match q.take(0, 7) {
        Err(StoreError::Insufficient {
            available: 6,
            requested: 7,
        }) => {}
        other => panic!("expected Insufficient, got {other:?}"),
    }
    assert_eq!(q.stats().bytes, 6);
    assert_eq!(q.take(0, 6).unwrap(), b"efghij");
    assert_eq!(q.stats().items, 0);
    assert!(matches!(
        q.take(0, 1),
        Err(StoreError::Insufficient { available: 0, .. })
    ));
    assert_eq!(q.take(0, 0).unwrap(), b"");
    let stats = q.stats();
    assert_eq!(
        (stats.stored, stats.consumed_items, stats.consumed_bytes),
        (3, 3, 10)
    );
}

#[test]
fn skipped_bytes_stay_and_come_first_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let q = store.trng();
    q.push(&[b"0123".as_slice(), b"4567", b"89"]).unwrap();
    // Take 3..7 ("3456"): item one keeps "012", item two keeps "7".
    assert_eq!(q.take(3, 4).unwrap(), b"3456");
    assert_eq!(q.peek(0, 6).unwrap(), b"012789");
    assert!(matches!(
        q.take(5, 2),
        Err(StoreError::Insufficient { available: 1, .. })
    ));
    // Skipping whole items leaves them; taking the middle one removes it.
    assert_eq!(q.take(3, 1).unwrap(), b"7");
    assert_eq!(q.stats().items, 2);
    assert_eq!(q.take(0, 5).unwrap(), b"01289");
    assert_eq!(q.stats().items, 0);
    // The queue is usable afterwards and keeps order.
    q.push(&[b"xy".as_slice()]).unwrap();
    assert_eq!(q.take(0, 2).unwrap(), b"xy");
}

#[test]
fn a_full_queue_drops_new_items_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let q = store.trng();
    q.set_capacity(10);
    let items: Vec<[u8; 32]> = (0..13).map(item).collect();
    assert_eq!(
        q.push(&items).unwrap(),
        Pushed {
            stored: 10,
            dropped: 3
        }
    );
    assert_eq!(
        q.push(&[item(99)]).unwrap(),
        Pushed {
            stored: 0,
            dropped: 1
        }
    );
    // The oldest are kept (new ones are dropped, so nothing rewrites the disk).
    assert_eq!(ids(&q.take(0, 64).unwrap()), [0, 1]);
    assert_eq!(q.push(&[item(100)]).unwrap().stored, 1);
    let stats = q.stats();
    assert_eq!((stats.items, stats.dropped, stats.stored), (9, 4, 11));
    // Capacities out of range are clamped to the Go API's limits.
    q.set_capacity(3);
    assert_eq!(q.stats().capacity, 10);
    q.set_capacity(5_000_000);
    assert_eq!(q.stats().capacity, 1_000_000);
}

#[test]
fn the_queue_and_its_counters_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let q = store.trng();
        q.set_capacity(10);
        q.push(&(0..12).map(item).collect::<Vec<_>>()).unwrap();
        assert_eq!(ids(&q.take(0, 96).unwrap()), [0, 1, 2]);
        q.take(0, 16).unwrap();
    }
    let store = open(dir.path());
    let q = store.trng();
    let stats = q.stats();
    assert_eq!(
        (stats.items, stats.bytes, stats.dropped, stats.stored),
        (7, 7 * 32 - 16, 2, 10)
    );
    assert_eq!((stats.consumed_items, stats.consumed_bytes), (3, 96 + 16));
    let rest = q.take(0, 16).unwrap();
    assert_eq!(rest, item(3)[16..]);
    assert_eq!(ids(&q.take(0, 6 * 32).unwrap()), [4, 5, 6, 7, 8, 9]);
    // New items continue after the old ones, never reusing a key.
    q.push(&[item(42)]).unwrap();
    assert_eq!(ids(&q.take(0, 32).unwrap()), [42]);
}

#[test]
fn settings_seed_counters_and_usage_persist() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3600;
    let t0 = UNIX_EPOCH + Duration::from_secs(490_000 * hour + 17);
    {
        let store = open(dir.path());
        assert_eq!(store.setting("store.consume").unwrap(), None);
        assert_eq!(store.fortuna_seed().unwrap(), None);
        store.set_setting("store.consume", "false").unwrap();
        store.set_setting("store.trng_queue_size", "5000").unwrap();
        store.set_fortuna_seed(&[7u8; 64]).unwrap();
        store.count("fortuna.reseeds", 2);
        store.count("fortuna.reseeds", 3);
        assert_eq!(store.counter("fortuna.reseeds").unwrap(), 5);
        store.record_usage("trng", 100, t0);
        store.record_usage("trng", 28, t0 + Duration::from_secs(60));
        store.record_usage("fortuna", 1 << 20, t0);
        store.record_usage("trng", 1, t0 + Duration::from_secs(hour));
        // Pending usage is visible before the flush.
        assert_eq!(store.usage("trng", t0).unwrap().len(), 2);
        store.flush().unwrap();
        store.count("fortuna.reseeds", 1);
        store.flush().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.setting("store.consume").unwrap().as_deref(),
        Some("false")
    );
    let all = store.settings().unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["store.trng_queue_size"], "5000");
    assert_eq!(store.fortuna_seed().unwrap(), Some([7u8; 64]));
    assert_eq!(store.counter("fortuna.reseeds").unwrap(), 6);
    let trng = store.usage("trng", t0).unwrap();
    assert_eq!(trng.len(), 2);
    assert_eq!((trng[0].bytes, trng[0].requests), (128, 2));
    assert_eq!((trng[1].bytes, trng[1].requests), (1, 1));
    assert_eq!(
        trng[0].hour_start,
        UNIX_EPOCH + Duration::from_secs(490_000 * hour)
    );
    assert_eq!(store.usage("fortuna", t0).unwrap()[0].bytes, 1 << 20);
    // Later hours only.
    assert_eq!(
        store
            .usage("trng", t0 + Duration::from_secs(hour))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn old_usage_hours_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let start = UNIX_EPOCH + Duration::from_secs(400_000 * 3600);
    store.record_usage("trng", 1, start);
    store.flush().unwrap();
    let later = start + Duration::from_secs(3600 * (lokey::store::USAGE_HOURS_KEPT + 5));
    store.record_usage("trng", 2, later);
    store.flush().unwrap();
    let kept = store.usage("trng", start).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].bytes, 2);
}

#[test]
fn a_directory_that_is_not_a_store_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Store::open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&dir.path().display().to_string()), "{text}");
    assert!(text.contains("--data-dir"), "{text}");
    // Nothing was written into it.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn another_fjall_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert("something", "else").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = Store::open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Foreign { .. }), "{err:?}");
}

#[test]
fn a_store_of_another_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("meta", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        ks.insert("format", "lokey-store 99").unwrap();
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let err = Store::open(dir.path(), &Options::default()).unwrap_err();
    match &err {
        StoreError::UnsupportedFormat { found, .. } => assert_eq!(found, "lokey-store 99"),
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    assert!(err.to_string().contains(FORMAT));
}

#[test]
fn a_damaged_store_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    // The engine's version marker is the first thing it checks.
    std::fs::write(dir.path().join("version"), b"garbage!").unwrap();
    let err = Store::open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn a_store_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path());
    let err = Store::open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert!(err.to_string().contains("another lokeyd"), "{err}");
}

#[test]
fn concurrent_takers_never_get_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let total = 4_000u64;
    store
        .trng()
        .push(&(0..total).map(item).collect::<Vec<_>>())
        .unwrap();
    let store = Arc::new(store);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match store.trng().take(0, 64) {
                        Ok(bytes) => got.extend(ids(&bytes)),
                        Err(StoreError::Insufficient { .. }) => return got,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            assert!(all.insert(id), "item {id} was handed out twice");
        }
    }
    assert_eq!(all.len() as u64, total);
    assert_eq!(store.trng().stats().items, 0);
}

#[test]
fn concurrent_pushes_and_takes_share_syncs_and_each_returns_only_after_its_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .trng()
        .push(&(0..100).map(item).collect::<Vec<_>>())
        .unwrap();
    let callers = 8u64;
    let before = store.syncs();
    let returned = Arc::new(AtomicUsize::new(0));
    // Every sync stalls until `hold` goes: the first caller leads a round and waits in its
    // sync, the others queue behind it for the next round.
    let hold = store.hold_syncs();
    let threads: Vec<_> = (0..callers)
        .map(|k| {
            let (store, returned) = (store.clone(), returned.clone());
            std::thread::spawn(move || {
                let got = if k % 2 == 0 {
                    let pushed = store.trng().push(&[item(1000 + k)]).unwrap();
                    assert_eq!(pushed.stored, 1);
                    Vec::new()
                } else {
                    ids(&store.trng().take(0, 32).unwrap())
                };
                let synced = store.syncs();
                returned.fetch_add(1, Ordering::SeqCst);
                (got, synced)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.trng().waiting() < callers as usize - 1 {
        assert!(Instant::now() < deadline, "the callers never queued up");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        returned.load(Ordering::SeqCst),
        0,
        "a caller returned before its change was synced"
    );
    assert_eq!(store.syncs(), before);
    drop(hold);
    let mut taken = BTreeSet::new();
    for t in threads {
        let (got, synced) = t.join().unwrap();
        assert!(synced > before, "a caller returned before any sync");
        for id in got {
            assert!(taken.insert(id), "item {id} was taken twice");
        }
    }
    assert_eq!(taken, (0..4).collect());
    let syncs = store.syncs() - before;
    assert!(syncs < callers, "{callers} callers caused {syncs} syncs");
    assert_eq!(
        syncs, 2,
        "the leader's round, then one round for the 7 queued behind it"
    );
    let stats = store.trng().stats();
    assert_eq!((stats.items, stats.stored), (100 - 4 + 4, 104));
}

const DROPS_CHILD_ENV: &str = "LOKEY_STORE_TEST_DROPS_CHILD_DIR";

/// Runs the test `name` of this binary in a child process with `var` set to `value`.
fn run_child(name: &str, var: &str, value: &std::path::Path) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, value)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .status()
        .unwrap()
}

fn aborted(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGABRT)
}

/// The child of the next test: fills a queue, has pushes dropped, flushes, has more dropped,
/// and dies without running any destructor.
#[test]
fn drops_child() {
    let Ok(dir) = std::env::var(DROPS_CHILD_ENV) else {
        return; // Only meaningful inside the next test.
    };
    let store = open(std::path::Path::new(&dir));
    let q = store.trng();
    q.set_capacity(10);
    assert_eq!(
        q.push(&(0..10).map(item).collect::<Vec<_>>())
            .unwrap()
            .stored,
        10
    );
    let syncs = store.syncs();
    for k in 0..5 {
        assert_eq!(
            q.push(&[item(100 + k)]).unwrap(),
            Pushed {
                stored: 0,
                dropped: 1
            }
        );
    }
    assert_eq!(
        store.syncs(),
        syncs,
        "a push that stores nothing costs no sync"
    );
    store.flush().unwrap();
    assert_eq!(store.syncs(), syncs + 1);
    // Dropped after the last flush: these may go with the crash.
    q.push(&[item(200), item(201)]).unwrap();
    std::process::abort();
}

#[test]
fn drops_at_a_full_queue_survive_a_flush_and_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let status = run_child("store::drops_child", DROPS_CHILD_ENV, dir.path());
    assert!(aborted(status), "the child failed: {status}");
    let stats = open(dir.path()).trng().stats();
    assert_eq!(
        (stats.items, stats.stored, stats.dropped),
        (10, 10, 5),
        "the drops flushed before the crash are kept"
    );
    // A clean close writes the drops since the last flush (the daemon flushes at shutdown
    // too).
    {
        let store = open(dir.path());
        store.trng().set_capacity(10);
        assert_eq!(
            store.trng().push(&[item(300), item(301)]).unwrap().dropped,
            2
        );
    }
    let store = open(dir.path());
    assert_eq!(store.trng().stats().dropped, 7);
    // The next change carries the count as well.
    store.trng().set_capacity(10);
    store.trng().push(&[item(400)]).unwrap();
    store.trng().take(0, 32).unwrap();
    drop(store);
    let stats = open(dir.path()).trng().stats();
    assert_eq!(
        (stats.items, stats.dropped, stats.consumed_items),
        (9, 8, 1)
    );
}

#[test]
fn takes_read_from_the_head_never_from_the_first_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        let q = store.trng();
        q.push(&(0..100).map(item).collect::<Vec<_>>()).unwrap();
        assert_eq!(
            ids(&q.take(0, 60 * 32).unwrap()),
            (0..60).collect::<Vec<_>>()
        );
    }
    // Put live entries back under the head, at the keys of the taken items: only a read that
    // starts at the first key instead of the head would see them.
    {
        let db = fjall::Database::builder(dir.path()).open().unwrap();
        let ks = db
            .keyspace("queue.trng", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        for seq in 0..60u64 {
            ks.insert(seq.to_be_bytes(), item(1_000_000 + seq)).unwrap();
        }
        db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let store = open(dir.path());
    let q = store.trng();
    assert_eq!(ids(&q.peek(0, 32).unwrap()), [60]);
    assert_eq!(ids(&q.take(0, 32).unwrap()), [60]);
    // A take that skips: the skipped items stay, the head stays on the first of them.
    assert_eq!(ids(&q.take(5 * 32, 32).unwrap()), [66]);
    assert_eq!(ids(&q.take(0, 32).unwrap()), [61]);
    let rest = ids(&q.take(0, 37 * 32).unwrap());
    assert_eq!(rest, (62..100).filter(|&i| i != 66).collect::<Vec<_>>());
    assert_eq!(q.stats().items, 0);
}

// --- Crash safety ------------------------------------------------------------------------

const CHILD_ENV: &str = "LOKEY_STORE_TEST_CHILD_DIR";

/// The child's work, run when [`CHILD_ENV`] names a store directory: this thread pushes and a
/// second one takes, and both report each operation on stdout only after it returned
/// (that is, after it was acknowledged as durable). The parent kills it at a random moment.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful inside `killed_in_the_middle_…` below.
    };
    let store = Arc::new(open(std::path::Path::new(&dir)));
    store.trng().set_capacity(1_000_000);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    // libtest has printed `test store::crash_child ... ` without a newline: end that line, or
    // the first report would be glued to it and the parent would not see it acknowledged.
    writeln!(out.lock().unwrap()).unwrap();
    let taker_store = store.clone();
    let taker_out = out.clone();
    std::thread::spawn(move || {
        let mut k = 0u64;
        loop {
            k += 1;
            match taker_store.trng().take(0, 32 * (1 + (k % 5) as usize)) {
                Ok(bytes) => {
                    let list: Vec<String> = ids(&bytes).iter().map(u64::to_string).collect();
                    writeln!(taker_out.lock().unwrap(), "took {}", list.join(",")).unwrap();
                }
                Err(StoreError::Insufficient { .. }) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
    });
    // Ids continue from the number of items ever stored, which is durable with them.
    let mut next = store.trng().stats().stored;
    loop {
        let n = 1 + next % 7;
        let items: Vec<_> = (next..next + n).map(item).collect();
        store.trng().push(&items).unwrap();
        writeln!(out.lock().unwrap(), "pushed {next} {n}").unwrap();
        next += n;
    }
}

/// A child process pushing and taking is killed with SIGKILL at random moments, 20 times
/// over the same store. After each kill: no item that was taken (acknowledged) is still
/// there, every acknowledged push is either still there or could have been taken by the one
/// take in flight, and what remains is in order without duplicates.
#[test]
fn killed_in_the_middle_of_pushes_and_takes_nothing_is_lost_or_served_twice() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut taken = BTreeSet::new();
    let mut pushed_max: Option<u64> = None;
    // A varying kill point without a random number generator: a few hundred to a few
    // thousand acknowledged operations, different every round.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for round in 0..20u64 {
        let lines_before_kill = 50 + (seed.wrapping_mul(round + 7) % 400);
        let mut child = Command::new(&exe)
            .args([
                "store::crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut seen = 0;
        let mut killed = false;
        let mut last_lines = std::collections::VecDeque::new();
        // Read to the end: what the child printed before it died was acknowledged, even if
        // the kill came after the line we stopped at. A torn last line does not parse and
        // counts as not acknowledged.
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if last_lines.len() == 12 {
                last_lines.pop_front();
            }
            last_lines.push_back(line.clone());
            if let Some((first, n)) = line
                .strip_prefix("pushed ")
                .and_then(|rest| rest.split_once(' '))
                .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            {
                let last = first + n - 1;
                pushed_max = Some(pushed_max.map_or(last, |m: u64| m.max(last)));
            } else if let Some(list) = line.strip_prefix("took ").and_then(|rest| {
                rest.split(',')
                    .map(|s| s.parse::<u64>().ok())
                    .collect::<Option<Vec<u64>>>()
            }) {
                for id in list {
                    assert!(taken.insert(id), "round {round}: item {id} was taken twice");
                }
            } else {
                continue;
            }
            seen += 1;
            if !killed && seen >= lines_before_kill {
                child.kill().unwrap();
                killed = true;
            }
        }
        assert!(
            killed,
            "round {round}: the child stopped by itself after {seen} lines"
        );
        child.wait().unwrap();

        let store = open(dir.path());
        let q = store.trng();
        let stats = q.stats();
        let remaining = ids(&q.peek(0, stats.bytes as usize).unwrap());
        assert_eq!(remaining.len() as u64, stats.items, "round {round}");
        for pair in remaining.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "round {round}: out of order or duplicated"
            );
        }
        for id in &remaining {
            assert!(
                !taken.contains(id),
                "round {round}: taken item {id} is back"
            );
        }
        if let Some(max) = pushed_max {
            // Everything acknowledged and not taken is there; at most one take of at most
            // 5 items was in flight when the child died.
            let first_remaining = remaining.first().copied().unwrap_or(stats.stored);
            let missing: Vec<u64> = (0..first_remaining)
                .filter(|id| !taken.contains(id))
                .collect();
            assert!(
                missing.len() <= 5,
                "round {round}: acknowledged items {missing:?} are lost (first remaining \
                 {first_remaining}, last lines {:?})",
                last_lines
            );
            assert!(
                stats.stored > max,
                "round {round}: an acknowledged push is lost"
            );
            // Items taken by an unacknowledged take count as taken from now on.
            for id in 0..first_remaining {
                taken.insert(id);
            }
        }
    }
    assert!(!taken.is_empty());
}

// --- Creation ----------------------------------------------------------------------------

const CREATION_CHILD_ENV: &str = "LOKEY_STORE_TEST_CREATION_CHILD_DIR";
const CREATION_STEP_ENV: &str = "LOKEY_STORE_TEST_CREATION_STEP";
/// The marker file a store has while it is being created.
const CREATING: &str = "lokey-creating";

fn creation_steps() -> [(&'static str, CreationStep); 4] {
    [
        ("marked", CreationStep::Marked),
        ("engine", CreationStep::EngineCreated),
        ("format", CreationStep::FormatWritten),
        ("synced", CreationStep::Synced),
    ]
}

/// The child of the next test: creates a store and dies (abort, no destructor) at the step
/// named by [`CREATION_STEP_ENV`].
#[test]
fn creation_crash_child() {
    let Ok(dir) = std::env::var(CREATION_CHILD_ENV) else {
        return; // Only meaningful inside the next test.
    };
    let name = std::env::var(CREATION_STEP_ENV).unwrap();
    let (_, step) = creation_steps()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap();
    let _ = Store::open_crashing_at(std::path::Path::new(&dir), &Options::default(), step);
    panic!("the creation did not reach step {name}");
}

/// Checks that the store in `dir` is complete and works, across a restart.
fn assert_usable(dir: &std::path::Path, context: &str) {
    {
        let store = Store::open(dir, &Options::default())
            .unwrap_or_else(|e| panic!("{context}: the store does not open: {e}"));
        assert!(
            !dir.join(CREATING).exists(),
            "{context}: the marker is left"
        );
        let q = store.trng();
        assert_eq!(q.stats().items, 0, "{context}");
        q.push(&[item(1), item(2)]).unwrap();
        assert_eq!(ids(&q.take(0, 32).unwrap()), [1], "{context}");
    }
    let store = open(dir);
    assert_eq!(ids(&store.trng().take(0, 32).unwrap()), [2], "{context}");
}

#[test]
fn a_creation_killed_at_any_step_is_completed_by_the_next_open() {
    for (name, _) in creation_steps() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let status = Command::new(std::env::current_exe().unwrap())
            .args([
                "store::creation_crash_child",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CREATION_CHILD_ENV, &dir)
            .env(CREATION_STEP_ENV, name)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .unwrap();
        assert!(aborted(status), "step {name}: the child failed: {status}");
        assert!(dir.join(CREATING).is_file(), "step {name}: no marker");
        assert_usable(&dir, &format!("after a crash at step {name}"));
    }
}

#[test]
fn a_creation_cut_short_inside_the_engine_is_recognised_by_its_marker() {
    // What a power cut while the engine lays out its files can leave: the marker, some of
    // the engine's files, and no engine version file (written last).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CREATING), b"").unwrap();
    std::fs::write(dir.path().join("lock"), b"").unwrap();
    std::fs::write(dir.path().join("0.jnl"), [0u8; 100]).unwrap();
    std::fs::create_dir_all(dir.path().join("keyspaces/0")).unwrap();
    assert_usable(dir.path(), "after a cut inside the engine");
}

#[test]
fn a_creation_in_progress_elsewhere_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let marker = std::fs::File::create(dir.path().join(CREATING)).unwrap();
    std::fs::write(dir.path().join("0.jnl"), b"being written").unwrap();
    // The creator holds a lock on the marker while it works.
    marker.try_lock().unwrap();
    let err = Store::open(dir.path(), &Options::default()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(dir.path().join("0.jnl")).unwrap(),
        b"being written",
        "a running creation's files were touched"
    );
    // Once its creator is gone, the creation is taken over.
    drop(marker);
    assert_usable(dir.path(), "after the creator went");
}

// --- A full disk -------------------------------------------------------------------------

/// A small tmpfs mounted on a temporary directory, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None`, saying why, where mounting is not possible.
    fn mount(size: &str) -> Option<SmallDisk> {
        if !nix::unistd::Uid::effective().is_root() {
            crate::skipped!(
                "skipped: filling a disk needs a small tmpfs, and mounting one needs root; \
                 run the tests as root to check the store on a full disk"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallDisk { dir }),
            Ok(out) => {
                crate::skipped!(
                    "skipped: cannot mount a small tmpfs (no CAP_SYS_ADMIN here?): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                crate::skipped!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "cannot resize the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn a_full_disk_fails_writes_clearly_poisons_the_store_and_loses_nothing_acknowledged() {
    // Small pushes fill the journal's buffer, which the sync writes out: the sync fails.
    // Pushes larger than that buffer are written at once: the write fails.
    for batch in [64, 1024] {
        if !fill_the_disk(batch) {
            return;
        }
    }
}

/// Pushes `batch` items at a time, taking a few after each push, until the disk is full;
/// checks the failure, then that nothing acknowledged was lost. False when skipped.
fn fill_the_disk(batch: u64) -> bool {
    let Some(disk) = SmallDisk::mount("1m") else {
        return false;
    };
    let dir = disk.dir.path().join("data");
    let mut acked_pushed = BTreeSet::new();
    let mut acked_taken = BTreeSet::new();
    let mut failed_take = 0u64;
    {
        let store = open(&dir);
        store.set_setting("store.consume", "true").unwrap();
        let q = store.trng();
        let mut next = 0u64;
        let error = loop {
            assert!(next < 1_000_000, "the disk never filled");
            let items: Vec<_> = (next..next + batch).map(item).collect();
            match q.push(&items) {
                Ok(pushed) => {
                    assert_eq!(pushed.stored as u64, batch);
                    acked_pushed.extend(next..next + batch);
                }
                Err(e) => break e,
            }
            next += batch;
            match q.take(0, 3 * 32) {
                Ok(bytes) => acked_taken.extend(ids(&bytes)),
                Err(e) => {
                    failed_take = 3;
                    break e;
                }
            }
        };
        let text = error.to_string();
        eprintln!(
            "pushes of {batch} items: the disk filled after {} pushes and {} takes: {text}",
            acked_pushed.len() as u64 / batch,
            acked_taken.len() / 3
        );
        assert!(matches!(error, StoreError::Engine(_)), "{error:?}");
        assert!(text.contains("No space left on device"), "{text}");
        assert_eq!(text.matches("store failure").count(), 1, "{text}");
        assert!(
            !store.healthy(),
            "a failed write must make the store unhealthy"
        );
        // Every later write is refused, saying why, even small ones.
        for err in [
            q.push(&[item(u64::MAX)]).unwrap_err(),
            q.take(0, 32).unwrap_err(),
            store.set_setting("store.consume", "false").unwrap_err(),
            store.flush().unwrap_err(),
        ] {
            assert!(matches!(err, StoreError::Engine(_)), "{err:?}");
            assert!(err.to_string().contains("restart lokeyd"), "{err}");
        }
    }
    // Room again, and a restart: everything acknowledged is there.
    disk.resize("64m");
    let store = open(&dir);
    assert!(store.healthy());
    assert_eq!(
        store.setting("store.consume").unwrap().as_deref(),
        Some("true")
    );
    let q = store.trng();
    let remaining = ids(&q.peek(0, q.stats().bytes as usize).unwrap());
    for pair in remaining.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "out of order or duplicated");
    }
    for id in &remaining {
        assert!(!acked_taken.contains(id), "taken item {id} is back");
    }
    let missing: Vec<u64> = acked_pushed
        .iter()
        .filter(|id| !acked_taken.contains(id) && !remaining.contains(id))
        .copied()
        .collect();
    assert!(
        missing.len() as u64 <= failed_take,
        "acknowledged items {missing:?} are lost"
    );
    // And the store works.
    q.push(&[item(7)]).unwrap();
    assert_eq!(q.stats().items as usize, remaining.len() + 1);
    true
}
