//! ATECC608A path throughput: the driver against the emulator on a real clock, with the
//! datasheet's maximum execution times and 100 kHz transfer times, for 10 seconds each
//! (design.md §5 asks for at least 35 random blocks per second; the Go seed managed about 10).
//!
//! `cargo bench -p lokey --bench atecc` (set `BENCH_SECS` for another duration).

use std::time::{Duration, Instant};

use lokey::atecc::{Atecc608a, Emulator, EmulatorConfig, Timing};

fn run(timing: Timing, secs: u64) -> (u64, Duration, u64) {
    let emulator = Emulator::new(EmulatorConfig {
        timing,
        ..EmulatorConfig::default()
    });
    let delay = emulator.delay();
    let mut chip = Atecc608a::new(emulator, delay);
    chip.check_usable().expect("emulated chip usable");
    let (mut blocks, mut errors) = (0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        match chip.random() {
            Ok(_) => blocks += 1,
            Err(_) => errors += 1,
        }
    }
    (blocks, start.elapsed(), errors)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: keep that short.
    let benching = std::env::args().any(|a| a == "--bench");
    let secs = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if benching { 10 } else { 1 });
    for (name, timing) in [
        ("datasheet maximum", Timing::Maximum),
        ("typical (half)", Timing::Typical),
    ] {
        let (blocks, elapsed, errors) = run(timing, secs);
        let rate = blocks as f64 / elapsed.as_secs_f64();
        println!(
            "atecc random, {name:18} timing, 100 kHz, real clock: {blocks} blocks in {:.1} s = {rate:.1} blocks/s ({:.0} B/s), {errors} errors",
            elapsed.as_secs_f64(),
            rate * 32.0
        );
    }
}
