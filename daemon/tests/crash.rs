//! Crash consistency of the whole daemon: a real `lokeyd` is killed with SIGKILL at random
//! moments while clients drain the `trng` source over REST and over the socket at once, and is
//! restarted on the same data directory, cycle after cycle. Across all cycles no 32-byte block
//! is ever handed to two clients, the queue's counters stay consistent, and the Fortuna seed
//! file never makes the same output twice.
//!
//! `CRASH_CYCLES` sets the number of cycles (default 6 here; `scripts/crash-suite` runs
//! 50).

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lokey::client::Client;
use lokey::proto::{DataSource, Frame, Request};
use nix::sys::signal::Signal;
use util::Daemon;

fn cycles() -> usize {
    std::env::var("CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// A cheap varying number without a random number generator.
fn jitter(cycle: usize, range: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos ^ (cycle as u64).wrapping_mul(0x9E37_79B9)) % range
}

/// One REST request for 32 trng bytes; `None` when the daemon is gone or refuses.
fn rest_block(addr: SocketAddr) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let body = r#"{"format":"binary","limit":32,"source":"trng"}"#;
    write!(
        s,
        "POST /api/v1/data HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    if !raw.starts_with(b"HTTP/1.1 200") {
        return None;
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let block = raw[split + 4..].to_vec();
    (block.len() == 32).then_some(block)
}

/// One socket request for 32 trng bytes.
fn socket_block(client: &mut Client) -> Option<Vec<u8>> {
    client
        .send(&Request::Bytes {
            source: DataSource::Trng,
            count: Some(32),
            shared: false,
        })
        .ok()?;
    let mut block = Vec::new();
    loop {
        match client.read_frame().ok()? {
            Frame::Data(bytes) => block.extend_from_slice(&bytes),
            Frame::End(n) => return (n == 32 && block.len() == 32).then_some(block),
            _ => return None,
        }
    }
}

#[test]
fn killed_while_serving_trng_over_both_transports_no_block_is_served_twice() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lokey.sock");
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[api]\ntrng_bytes_per_second = 1000000000\ntrng_burst_bytes = 1000000000\n",
    )
    .unwrap();
    let served: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let mut total_served = 0;
    for cycle in 0..cycles() {
        let d =
            Daemon::start_with_socket(&["--config", conf.to_str().unwrap()], dir.path(), &socket);
        // Counters are consistent after every restart: what was stored is still there or
        // was consumed (32-byte requests take whole items).
        let trng = &d.status()["trng"];
        let stored = trng["total_generated"].as_u64().unwrap();
        let items = trng["queue_current"].as_u64().unwrap();
        let consumed = trng["consumed_count"].as_u64().unwrap();
        assert_eq!(stored, items + consumed, "cycle {cycle}: {trng}");
        assert!(
            consumed as usize >= total_served,
            "cycle {cycle}: {consumed} consumed but {total_served} were served"
        );

        let deadline = Instant::now() + Duration::from_secs(60);
        while d.status()["trng"]["queue_current"].as_u64().unwrap() < 64 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: the queue does not fill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for transport in 0..4 {
            let (served, stop, addr, socket) =
                (served.clone(), stop.clone(), d.addr(), socket.clone());
            clients.push(std::thread::spawn(move || {
                let mut client = None;
                while !stop.load(Ordering::Relaxed) {
                    let block = if transport % 2 == 0 {
                        rest_block(addr)
                    } else {
                        if client.is_none() {
                            client = Client::connect(&socket).ok();
                        }
                        let got = client.as_mut().and_then(socket_block);
                        if got.is_none() {
                            client = None;
                        }
                        got
                    };
                    match block {
                        Some(b) => served.lock().unwrap().push(b),
                        None => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(150 + jitter(cycle, 600)));
        d.signal(Signal::SIGKILL);
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        drop(d);
        let blocks = served.lock().unwrap();
        let unique: HashSet<&Vec<u8>> = blocks.iter().collect();
        assert_eq!(
            unique.len(),
            blocks.len(),
            "cycle {cycle}: a block was served twice"
        );
        assert!(
            blocks.len() > total_served,
            "cycle {cycle}: nothing was served"
        );
        total_served = blocks.len();
    }
}

#[test]
fn a_killed_daemon_never_reuses_its_fortuna_seed_file() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lokey.sock");
    // First a normal run, so that there is a seed file.
    let mut d = Daemon::start_with_socket(&[], dir.path(), &socket);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["fortuna_generator"]["seeded"] != true {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(d.stop(), Some(0));
    // Then no hardware at all: every output comes from the seed file alone.
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[hwrng]\nmode = \"off\"\n[chip]\nemulate_faults = [\"bus-gone\"]\n",
    )
    .unwrap();
    let mut outputs = HashSet::new();
    for cycle in 0..cycles() {
        let d =
            Daemon::start_with_socket(&["--config", conf.to_str().unwrap()], dir.path(), &socket);
        let (code, _, first) = d.binary(
            "POST",
            "/api/v1/data",
            &["Content-Type: application/json"],
            r#"{"format":"binary","limit":64,"source":"fortuna"}"#,
        );
        assert_eq!(code, 200, "cycle {cycle}");
        assert!(
            outputs.insert(first),
            "cycle {cycle}: the same Fortuna output again"
        );
        d.signal(Signal::SIGKILL);
    }
}
