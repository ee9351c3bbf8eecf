//! The chip shared by harvesting and the beacon's signatures, as in lokeyd: one thread reads
//! 32-byte Random blocks through [`SharedChip`] without pause, another signs a pulse digest
//! (Nonce pass-through + Sign) every `BEACON_PERIOD_MS` milliseconds (default 5000, the
//! shortest `beacon.period_secs` allows: twelve times the default's signing load). The
//! emulator runs on a real clock at the datasheet's maximum execution times and 100 kHz.
//!
//! Reports the blocks per second harvested while signing (design.md §5 and the beacon issue:
//! at least 30) and the signing latency as the beacon sees it, lock wait included.
//!
//! `cargo bench -p lokey --bench beacon` (`BENCH_SECS`, default 30; `BEACON_PERIOD_MS`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lokey::atecc::{
    Atecc608a, ChipSource, Emulator, EmulatorConfig, KeygenConfirmation, SharedChip,
};
use lokey::source::{Source, SourceKind};

/// The beacon issue's floor for the chip path while the beacon runs.
const GOAL_BLOCKS_PER_SEC: f64 = 30.0;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = env("BENCH_SECS", if benching { 30 } else { 2 });
    let period = Duration::from_millis(env("BEACON_PERIOD_MS", 5000));
    let emulator = Emulator::new(EmulatorConfig::default());
    let delay = emulator.delay();
    let chip = SharedChip::new(Box::new(ChipSource::new(
        "chip",
        SourceKind::Emulator,
        Atecc608a::new(emulator, delay),
    )));
    let serial = chip.with(|c| c.serial_number()).expect("serial number");
    chip.with(|c| {
        c.genkey(&KeygenConfirmation::for_serial_destroying_old_key(
            serial, 0,
        ))
    })
    .expect("a key in slot 0");

    let stop = Arc::new(AtomicBool::new(false));
    let blocks = Arc::new(AtomicU64::new(0));
    let harvester = {
        let (mut chip, stop, blocks) = (chip.clone(), stop.clone(), blocks.clone());
        std::thread::spawn(move || {
            let mut block = [0u8; 32];
            while !stop.load(Ordering::Relaxed) {
                if chip.read(&mut block).is_ok() {
                    blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let start = Instant::now();
    let mut latencies = Vec::new();
    let mut next = start;
    while start.elapsed() < Duration::from_secs(secs) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        let digest = [latencies.len() as u8; 32];
        let t = Instant::now();
        chip.with(|c| c.sign_digest(0, &digest)).expect("signature");
        latencies.push(t.elapsed());
        next += period;
    }
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    harvester.join().unwrap();
    let rate = blocks.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = latencies.iter().map(|d| ms(*d)).sum::<f64>() / latencies.len().max(1) as f64;
    println!(
        "beacon signing every {} ms while harvesting, datasheet maximum timing, 100 kHz, real clock, {:.1} s: {} signatures, latency mean {mean:.1} ms, max {:.1} ms; harvest {rate:.1} blocks/s; goal >= {GOAL_BLOCKS_PER_SEC:.0} blocks/s: {}",
        period.as_millis(),
        elapsed.as_secs_f64(),
        latencies.len(),
        latencies.last().map_or(0.0, |d| ms(*d)),
        if rate >= GOAL_BLOCKS_PER_SEC {
            "goal met"
        } else {
            "goal NOT met"
        }
    );
}
