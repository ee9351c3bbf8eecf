//! Creates a new store whose TRNG queue holds `ITEMS` 32-byte blocks, for `bench/run`'s durable
//! `trng` benchmark: the emulator harvests about 36 blocks/s, far too few to measure thousands
//! of durable takes per second against.
//!
//! Usage: `bench-queue DIR ITEMS`. DIR must not exist or be empty: this never touches a store
//! in use. The blocks come from the operating system's RNG, not from hardware, so a store made
//! here is for benchmarks only; never point a production lokeyd at it.

use std::io::Read;

use lokey::store::{Options, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(items)) = (args.next(), args.next()) else {
        return Err("usage: bench-queue DIR ITEMS".into());
    };
    let items: usize = items.parse()?;
    let dir = std::path::Path::new(&dir);
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(format!(
            "{} is not empty: bench-queue only creates new stores",
            dir.display()
        )
        .into());
    }
    let store = Store::open(dir, &Options::default())?;
    let queue = store.trng();
    queue.set_capacity(u64::MAX);
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    let mut batch = vec![[0u8; 32]; 4096];
    let mut left = items;
    while left > 0 {
        let n = left.min(batch.len());
        for block in &mut batch[..n] {
            urandom.read_exact(block)?;
        }
        queue.push(&batch[..n])?;
        left -= n;
    }
    store.flush()?;
    eprintln!(
        "bench-queue: {} holds {} blocks",
        dir.display(),
        queue.stats().items
    );
    Ok(())
}
