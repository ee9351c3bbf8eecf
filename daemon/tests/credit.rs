//! A credited source, for real: `hwrng.path` names a FIFO this test writes (a device node other
//! than `/dev/hwrng` is credited), the kernel feeder is on (no `--no-credit`) and mixes every
//! second, so RNDADDENTROPY credits the source's bytes while it is healthy. Then the writer
//! turns into a broken device (a constant byte, then a repeated block): health must degrade
//! within a second, the source's credit and its bytes to Fortuna and the TRNG queue must stop,
//! and once good data returns the source must recover by itself and be credited again.
//!
//! It needs root (CAP_SYS_ADMIN for RNDADDENTROPY); elsewhere it says why it skips. The
//! configuration checks at the end need nothing.

mod util;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use util::{Daemon, lokeyd, within};

const GOOD: u8 = 0;
const CONSTANT: u8 = 1;
const REPEATED: u8 = 2;

/// Writes the FIFO at a steady ~4 kB/s, what `mode` says: OS randomness, one byte value, or
/// one random block over and over. A device makes its bytes when they are read; a FIFO keeps
/// what was written, so at each change of mode the writer first takes back what lokeyd has
/// not read (it holds the FIFO read-write), and it drops a block rather than wait when the
/// FIFO is full (while the source is quarantined nobody reads). The thread is left running
/// when the test ends.
fn writer(fifo: &std::path::Path, mode: Arc<AtomicU8>) {
    use std::os::unix::fs::OpenOptionsExt;
    // Opening read-write does not wait for a reader, and keeps the FIFO open for lokeyd; our
    // end does not block (lokeyd's has its own, blocking, open file).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(fifo)
        .unwrap();
    let mut urandom = std::fs::File::open("/dev/urandom").unwrap();
    let mut repeated = [0u8; 32];
    urandom.read_exact(&mut repeated).unwrap();
    std::thread::spawn(move || {
        let mut block = [0u8; 32];
        let mut last = GOOD;
        loop {
            let now = mode.load(Ordering::Relaxed);
            if now != last {
                let mut stale = [0u8; 4096];
                while file.read(&mut stale).is_ok_and(|n| n > 0) {}
                last = now;
            }
            match now {
                GOOD => urandom.read_exact(&mut block).unwrap(),
                CONSTANT => block = [0x5A; 32],
                _ => block = repeated,
            }
            match file.write(&block) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
            std::thread::sleep(Duration::from_millis(8));
        }
    });
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// (credited bits, bytes to Fortuna, bytes to the TRNG queue, bytes to the kernel).
fn flow(s: &serde_json::Value) -> (u64, u64, u64, u64) {
    (
        n(&s["credited_bits"]),
        n(&s["routed_to"]["fortuna"]),
        n(&s["routed_to"]["trng-queue"]),
        n(&s["routed_to"]["kernel"]),
    )
}

/// The value of the metric line that starts with `prefix` (name and labels), if any.
fn metric(d: &Daemon, prefix: &str) -> Option<f64> {
    let (code, body) = d.get("/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

fn healthy(d: &Daemon) -> bool {
    d.get("/api/v1/health").0 == 200
}

#[test]
fn a_credited_source_stops_being_credited_while_it_fails_and_recovers_by_itself() {
    if !nix::unistd::geteuid().is_root() {
        crate::skipped!(
            "skipped: needs root (CAP_SYS_ADMIN for RNDADDENTROPY, so that the source is \
             really credited)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // lokeyd becomes `nobody`: its data directory and socket's directory must be nobody's.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    nix::unistd::chown(dir.path(), Some(nobody.uid), None).unwrap();
    let fifo = dir.path().join("rng");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mode = Arc::new(AtomicU8::new(GOOD));
    writer(&fifo, mode.clone());
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!(
            "[daemon]\nuser = \"nobody\"\n[chip]\nmode = \"emulator\"\n\
             [kernel]\nmix_interval_secs = 1\n\
             [hwrng]\nmode = \"on\"\npath = \"{}\"\nmin_entropy = 7.5\ncredit_bits_per_byte = 2\n",
            fifo.display()
        ),
    )
    .unwrap();
    let d = Daemon::spawn(
        util::lokeyd_as_configured(),
        &["--config", conf.to_str().unwrap()],
        dir.path(),
        &dir.path().join("lokey.sock"),
    );

    // The source's own credit is in force; the emulator's is 0, and status says why.
    let s = d.source("hwrng");
    assert_eq!(s["credit_bits_per_byte"], 2, "{s}");
    assert!(s["credit_note"].is_null(), "{s}");
    // The cutoffs come from the fractional claim (H = 7.5; α = 2^-30 and 2^-40).
    assert_eq!(s["min_entropy"], 7.5);
    assert_eq!(s["cutoffs"]["rct_discard"], 5, "{s}");
    assert_eq!(s["cutoffs"]["apt_discard"], 19, "{s}");
    assert_eq!(s["cutoffs"]["rct_quarantine"], 7, "{s}");
    assert_eq!(s["cutoffs"]["apt_quarantine"], 22, "{s}");
    let chip = d.status()["sources"][0].clone();
    assert_eq!(chip["name"], "chip");
    assert_eq!(chip["credit_bits_per_byte"], 0, "{chip}");
    assert!(
        chip["credit_note"]
            .as_str()
            .is_some_and(|n| n.contains("emulator")),
        "{chip}"
    );
    assert!(
        d.log().contains("source chip: not credited"),
        "said once in the log: {}",
        d.log()
    );

    // Good data: credited (64 bytes at 2 bits each per mix), and flowing to Fortuna and the
    // queue too.
    within(
        Duration::from_secs(30),
        || {
            let (credited, fortuna, queue, _) = flow(&d.source("hwrng"));
            credited >= 2 * 128 && fortuna > 0 && queue > 0 && healthy(&d)
        },
        "the hwrng credited and feeding Fortuna and the queue",
    );
    let (credited, ..) = flow(&d.source("hwrng"));
    assert_eq!(credited % 128, 0, "whole 64-byte chunks at 2 bits per byte");
    assert_eq!(d.status()["sources"][0]["credited_bits"], 0, "emulator");
    // The metric counts the same bits (read a moment later: at least as many).
    let metered = metric(&d, "lokey_source_credited_bits_total{source=\"hwrng\"}");
    assert!(
        metered.is_some_and(|m| m >= credited as f64),
        "{metered:?} < {credited}"
    );

    for (fault, name) in [(CONSTANT, "constant byte"), (REPEATED, "repeated block")] {
        // Let the log reader catch up with what came before.
        std::thread::sleep(Duration::from_millis(300));
        let lines_before = d.log().lines().count();
        let transitions_before = transitions(&d.source("hwrng"));
        mode.store(fault, Ordering::Relaxed);
        let switched = Instant::now();
        while healthy(&d) {
            assert!(
                switched.elapsed() < Duration::from_secs(1),
                "{name}: still healthy after 1 s: {}",
                d.source("hwrng")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let s = d.source("hwrng");
        assert_ne!(s["state"], "healthy", "{name}: {s}");
        let stopped = flow(&s);
        // Three mixing intervals and at least one retry: nothing more is credited, mixed,
        // seeded into Fortuna or queued from this source.
        std::thread::sleep(Duration::from_millis(3500));
        let s = d.source("hwrng");
        let later = flow(&s);
        assert_eq!(
            later, stopped,
            "{name}: the failing source kept flowing: {s}"
        );
        assert!(!healthy(&d), "{name}: healthy again while the fault lasts");
        // The fault persisted for seconds: each transition was logged once, counted once, and
        // the retries back off (no line per block).
        // The log is read on another thread, a little behind, and a retry may fall between
        // two reads: every transition counted so far lies between the health lines logged
        // before and a moment after.
        let health_lines = |log: &str| {
            log.lines()
                .filter(|l| l.contains("source=hwrng") && l.contains("health: "))
                .count() as u64
        };
        let early = health_lines(&d.log());
        let total = transitions(&d.source("hwrng"));
        std::thread::sleep(Duration::from_millis(300));
        let log = d.log();
        assert!(
            early <= total && total <= health_lines(&log),
            "{name}: {total} transitions counted, {early} logged: {log}"
        );
        // Since the fault began, only health lines about the source, and only a few.
        let new: Vec<&str> = log
            .lines()
            .skip(lines_before)
            .filter(|l| l.contains("hwrng"))
            .collect();
        assert!(
            new.iter().all(|l| l.contains("health: ")),
            "{name}: {new:#?}"
        );
        let counted = total - transitions_before;
        assert!((1..=6).contains(&counted), "{name}: {counted} transitions");
        let quarantines = metric(
            &d,
            "lokey_source_transitions_total{source=\"hwrng\",from=\"healthy\",to=\"quarantined\"}",
        );
        assert!(
            quarantines.is_some_and(|q| q >= 1.0),
            "{name}: {quarantines:?}"
        );

        // Good data again: back by itself (after the backoff and a fresh start-up test), and
        // credited and feeding again.
        mode.store(GOOD, Ordering::Relaxed);
        within(
            Duration::from_secs(60),
            || healthy(&d) && d.source("hwrng")["state"] == "healthy",
            &format!(
                "{name}: recovery (as the fault ended: {}, log:\n{})",
                d.source("hwrng"),
                d.log()
            ),
        );
        within(
            Duration::from_secs(30),
            || {
                let (credited, fortuna, queue, _) = flow(&d.source("hwrng"));
                credited > stopped.0 && fortuna > stopped.1 && queue > stopped.2
            },
            "credited and feeding again",
        );
    }
}

/// Health transitions counted for a source, in total.
fn transitions(s: &serde_json::Value) -> u64 {
    s["transitions"]
        .as_array()
        .map_or(0, |t| t.iter().map(|t| n(&t["count"])).sum())
}

#[test]
fn credit_and_min_entropy_out_of_range_are_refused_at_start_naming_file_line_and_range() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key, allowed) in [
        (
            "[hwrng]\nmode = \"off\"\n\ncredit_bits_per_byte = 9\n",
            "hwrng.credit_bits_per_byte",
            "an integer from 0 to 8",
        ),
        (
            "[chip]\nmode = \"emulator\"\n\ncredit_bits_per_byte = -1\n",
            "chip.credit_bits_per_byte",
            "an integer from 0 to 8",
        ),
        (
            "[chip]\nmode = \"emulator\"\n\nmin_entropy = 0.0\n",
            "chip.min_entropy",
            "a number greater than 0 and at most 8",
        ),
    ] {
        let conf = dir.path().join("lokeyd.toml");
        std::fs::write(&conf, text).unwrap();
        let out = lokeyd()
            .arg("--config")
            .arg(&conf)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("{}:4", conf.display()))
                && err.contains(key)
                && err.contains(allowed),
            "{err}"
        );
    }
}
