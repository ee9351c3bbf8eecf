//! Store throughput: durable pushes and takes, single and concurrent.
//!
//! Every push and take here returns only once its change is on disk, as in the daemon. With
//! several threads pushing or taking at once, group commit lets them share fsyncs: compare
//! `push_1` and `take_32` across thread counts (design.md §5 asks for ≥ 5,000 small durable
//! requests per second). At the end, the syncs per durable operation are printed.
//!
//! `cargo bench -p lokey --bench store`

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use divan::Bencher;
use divan::counter::ItemsCount;
use lokey::store::{Options, Store};

fn main() {
    divan::main();
    let ops = OPS.load(Ordering::Relaxed);
    if ops > 0 {
        let syncs = FIXTURE.store.syncs();
        println!(
            "{syncs} syncs for {ops} durable pushes and takes ({:.3} per operation)",
            syncs as f64 / ops as f64
        );
    }
}

/// Durable pushes and takes done by the benchmarks.
static OPS: AtomicU64 = AtomicU64::new(0);

fn counted<T>(result: T) -> T {
    OPS.fetch_add(1, Ordering::Relaxed);
    result
}

/// One store for all benchmarks, refilled as needed, in a directory removed at exit.
struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = Store::open(dir.path(), &Options::default()).expect("open the store");
    store.trng().set_capacity(1_000_000);
    Fixture { _dir: dir, store }
});

fn refill(items: u64) {
    let q = FIXTURE.store.trng();
    let have = q.stats().items;
    if have < items {
        let batch: Vec<[u8; 32]> = (0..(items - have).min(100_000))
            .map(|_| [0x5Au8; 32])
            .collect();
        for chunk in batch.chunks(1024) {
            counted(q.push(chunk).expect("push"));
        }
    }
}

/// One 32-byte item per durable push (the harvester's worst case). Run on 1, 2 and 8
/// threads: concurrent pushes share syncs.
#[divan::bench(threads = [1, 2, 8], sample_count = 200)]
fn push_1(bencher: Bencher) {
    let q = FIXTURE.store.trng();
    bencher.counter(ItemsCount::new(1usize)).bench(|| {
        if q.stats().items > 500_000 {
            // Several threads may see it at once: a drain that finds too little is fine.
            let _ = counted(q.take(0, 32 * 100_000));
        }
        counted(q.push(&[[0xA5u8; 32]]).expect("push"))
    });
}

/// 64 items per durable push.
#[divan::bench(sample_count = 100)]
fn push_64(bencher: Bencher) {
    let q = FIXTURE.store.trng();
    let items = [[0xA5u8; 32]; 64];
    bencher.counter(ItemsCount::new(64usize)).bench(|| {
        if q.stats().items > 500_000 {
            counted(q.take(0, 32 * 100_000).expect("drain"));
        }
        counted(q.push(&items).expect("push"))
    });
}

/// A client's small request: 32 bytes taken durably. Run on 1, 2 and 8 threads.
#[divan::bench(threads = [1, 2, 8], sample_count = 200)]
fn take_32(bencher: Bencher) {
    refill(200_000);
    let q = FIXTURE.store.trng();
    bencher
        .counter(ItemsCount::new(1usize))
        .bench(|| counted(q.take(0, 32).expect("take")));
}

/// A large request: 64 KiB taken durably.
#[divan::bench(sample_count = 50)]
fn take_64k(bencher: Bencher) {
    let q = FIXTURE.store.trng();
    bencher
        .counter(divan::counter::BytesCount::new(65_536usize))
        .bench(|| {
            if q.stats().bytes < 65_536 * 10 {
                refill(100_000);
            }
            counted(q.take(0, 65_536).expect("take"))
        });
}
