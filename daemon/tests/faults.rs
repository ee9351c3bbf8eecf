//! Fault injection under concurrent load (issue 9): while client threads keep asking for
//! data over REST and the socket, every emulator fault is switched on and off again, and a
//! source disappears and comes back. The daemon keeps serving what is healthy (Fortuna never
//! fails once seeded; `trng` either serves fresh blocks or says clearly that it has too few),
//! reports what is not (health and status within a second), never hangs, and recovers by
//! itself without a restart.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use lokey::client::{self, Client};
use lokey::proto::{DataSource, ErrorCode};
use util::Daemon;

const JSON: &str = "Content-Type: application/json";

/// The tests here run one at a time: each loads its daemon hard, and the timings checked
/// (a second to report a fault) are the daemon's, not those of a host running three loads.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// A request that takes longer than this counts as a hang.
const HANG: Duration = Duration::from_secs(10);

/// The configuration: `extra` sections, and a trng rate limit high enough that the load never
/// meets it (429 is tested in data.rs; here only "too few bytes" may refuse a trng request).
fn config(dir: &Path, extra: &str) -> PathBuf {
    let conf = dir.join("lokeyd.toml");
    std::fs::write(
        &conf,
        format!(
            "{extra}\n[api]\ntrng_bytes_per_second = 100000000\ntrng_burst_bytes = 100000000\n"
        ),
    )
    .unwrap();
    conf
}

/// One HTTP/1.1 request with a timeout: (status, body), or what went wrong.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(HANG)).unwrap();
    s.set_write_timeout(Some(HANG)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{JSON}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes())
        .map_err(|e| format!("{method} {path}: write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("{method} {path}: read (a hang?): {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: no complete response"))?;
    let code = String::from_utf8_lossy(&raw[9..12])
        .parse()
        .map_err(|e| format!("{method} {path}: status line: {e}"))?;
    Ok((code, raw[split + 4..].to_vec()))
}

/// `count` bytes over the socket.
fn socket_bytes(socket: &Path, source: DataSource, count: u64) -> Result<Vec<u8>, client::Error> {
    let mut stream = Client::connect(socket)?.bytes(source, Some(count))?;
    let (mut data, mut chunk) = (Vec::new(), Vec::new());
    while stream.next_chunk(&mut chunk)? {
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// What every client saw.
#[derive(Default)]
struct Seen {
    /// Requests that must not have failed but did, or answers that break a promise.
    failures: Vec<String>,
    /// Every trng block served, from every client.
    trng_blocks: Vec<Vec<u8>>,
    /// trng requests refused with "too few bytes".
    trng_short: u64,
}

/// Client threads loading the daemon until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    /// Completed Fortuna requests per thread, and completed trng requests (served or refused).
    fortuna: Vec<Arc<AtomicU64>>,
    trng: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(d: &Daemon) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let trng = Arc::new(AtomicU64::new(0));
        let mut load = Load {
            stop,
            seen,
            fortuna: Vec::new(),
            trng,
            threads: Vec::new(),
        };
        let addr = d.addr();
        let socket = d.socket().to_path_buf();
        // Fortuna: REST POST /data, REST GET /random/bytes, and a socket stream.
        load.fortuna_client(move || {
            let (code, body) = http(
                addr,
                "POST",
                "/api/v1/data",
                r#"{"format":"binary","limit":4096,"source":"fortuna"}"#,
            )?;
            check(
                code == 200 && body.len() == 4096,
                "POST /data fortuna",
                code,
                &body,
            )
        });
        load.fortuna_client(move || {
            let (code, body) = http(
                addr,
                "GET",
                "/api/v1/random/bytes?n=4096&source=fortuna",
                "",
            )?;
            check(
                code == 200 && body.len() == 4096,
                "GET /random/bytes fortuna",
                code,
                &body,
            )
        });
        let s = socket.clone();
        load.fortuna_client(move || match socket_bytes(&s, DataSource::Fortuna, 65536) {
            Ok(data) if data.len() == 65536 => Ok(()),
            Ok(data) => Err(format!("socket fortuna: {} bytes", data.len())),
            Err(e) => Err(format!("socket fortuna: {e}")),
        });
        // trng, 32 bytes at a time: REST POST /data, two clients of REST GET /random/bytes
        // (its answer is streamed: two compete for the few queued blocks), and the socket.
        // Too few queued bytes is a 404 (REST) or an Unavailable error (socket) saying so.
        load.trng_client(move |_| {
            let (code, body) = http(
                addr,
                "POST",
                "/api/v1/data",
                r#"{"format":"binary","limit":32,"source":"trng"}"#,
            )?;
            trng_answer("POST /data", code, body, "Not enough data available")
        });
        for _ in 0..2 {
            load.trng_client(move |_| {
                let (code, body) = http(addr, "GET", "/api/v1/random/bytes?n=32&source=trng", "")?;
                trng_answer("GET /random/bytes", code, body, "not enough TRNG data")
            });
        }
        load.trng_client(move |_| match socket_bytes(&socket, DataSource::Trng, 32) {
            Ok(data) if data.len() == 32 => Ok(Some(data)),
            Ok(data) => Err(format!("socket trng: {} bytes", data.len())),
            Err(client::Error::Daemon {
                code: ErrorCode::Unavailable,
                message,
            }) if message.contains("not enough TRNG data") => Ok(None),
            Err(e) => Err(format!("socket trng: {e}")),
        });
        load
    }

    fn fortuna_client(&mut self, request: impl Fn() -> Result<(), String> + Send + 'static) {
        let done = Arc::new(AtomicU64::new(0));
        self.fortuna.push(done.clone());
        let (stop, seen) = (self.stop.clone(), self.seen.clone());
        self.threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = request() {
                    seen.lock().unwrap().failures.push(e);
                }
                done.fetch_add(1, Ordering::Relaxed);
                // Load, not a benchmark: leave the two CI cores some room.
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }

    fn trng_client(
        &mut self,
        request: impl Fn(u64) -> Result<Option<Vec<u8>>, String> + Send + 'static,
    ) {
        let (stop, seen, done) = (self.stop.clone(), self.seen.clone(), self.trng.clone());
        self.threads.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let result = request(n);
                let mut seen = seen.lock().unwrap();
                match result {
                    Ok(Some(block)) => seen.trng_blocks.push(block),
                    Ok(None) => seen.trng_short += 1,
                    Err(e) => seen.failures.push(e),
                }
                drop(seen);
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
    }

    /// Completed requests so far: per Fortuna client, then trng.
    fn progress(&self) -> (Vec<u64>, u64) {
        (
            self.fortuna
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            self.trng.load(Ordering::Relaxed),
        )
    }

    /// Asserts that every client completed requests since `before` (no client hangs).
    fn assert_moving(&self, before: &(Vec<u64>, u64), what: &str) {
        let now = self.progress();
        for (i, (a, b)) in before.0.iter().zip(&now.0).enumerate() {
            assert!(
                b > a,
                "{what}: Fortuna client {i} made no progress (a hang?)"
            );
        }
        assert!(
            now.1 > before.1,
            "{what}: the trng clients made no progress"
        );
    }

    /// Stops the clients (each finishes its request within [`HANG`]) and returns what they saw.
    fn finish(self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + HANG + Duration::from_secs(5);
        for t in self.threads {
            while !t.is_finished() {
                assert!(Instant::now() < deadline, "a client hangs");
                std::thread::sleep(Duration::from_millis(10));
            }
            t.join().unwrap();
        }
        Arc::try_unwrap(self.seen)
            .ok()
            .unwrap()
            .into_inner()
            .unwrap()
    }
}

/// A REST trng answer: a block, "too few" (a 404 saying `short`), or a failure.
fn trng_answer(
    what: &str,
    code: u16,
    body: Vec<u8>,
    short: &str,
) -> Result<Option<Vec<u8>>, String> {
    let text = String::from_utf8_lossy(&body);
    match code {
        200 if body.len() == 32 => Ok(Some(body)),
        404 if text.contains(short) && text.contains("fortuna") => Ok(None),
        _ => Err(format!("{what} trng: {code}, {} bytes: {text}", body.len())),
    }
}

fn check(ok: bool, what: &str, code: u16, body: &[u8]) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}: {code}, {} bytes: {}",
            body.len(),
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))
    }
}

/// Asserts what the clients saw: no failure, some trng blocks served and none served twice.
fn assert_served_well(seen: &Seen) {
    assert!(
        seen.failures.is_empty(),
        "{} failed requests, first: {:#?}",
        seen.failures.len(),
        &seen.failures[..seen.failures.len().min(10)]
    );
    assert!(
        !seen.trng_blocks.is_empty(),
        "no trng block was ever served"
    );
    let distinct: HashSet<&Vec<u8>> = seen.trng_blocks.iter().collect();
    // Two fresh 32-byte blocks are equal with probability 2^-256.
    assert_eq!(
        distinct.len(),
        seen.trng_blocks.len(),
        "a trng block was served twice"
    );
    assert!(
        seen.trng_blocks
            .iter()
            .all(|b| b.iter().any(|&x| x != b[0])),
        "a block of 32 equal bytes was served"
    );
    eprintln!(
        "served {} trng blocks; {} trng requests found too few bytes",
        seen.trng_blocks.len(),
        seen.trng_short
    );
}

/// The controller's `lokey_component_healthy` gauge, as written.
fn controller_metric(d: &Daemon) -> String {
    let (code, body) = d.get("/metrics");
    assert_eq!(code, 200, "{body}");
    body.lines()
        .find_map(|l| l.strip_prefix(r#"lokey_component_healthy{component="controller"} "#))
        .map(|v| v.trim_end_matches(".0").to_string())
        .unwrap_or_else(|| panic!("no controller gauge in {body}"))
}

fn healthy(d: &Daemon) -> bool {
    d.get("/api/v1/health").0 == 200 && d.source("chip")["healthy"] == true
}

fn fault(d: &Daemon, name: &str, active: bool) {
    d.set_fault(name, active);
}

/// Waits until the daemon is healthy, Fortuna is seeded and the trng queue holds data.
fn ready(d: &Daemon) {
    util::within(
        Duration::from_secs(60),
        || {
            let s = d.status();
            healthy(d)
                && s["fortuna_generator"]["seeded"] == true
                && s["trng"]["queue_current"].as_u64().unwrap_or(0) > 0
        },
        "a healthy daemon with Fortuna seeded and trng data queued",
    );
}

/// Every emulator fault in turn, under load on both transports. The faults that stop the
/// chip's data show as a degraded health and an unhealthy chip within a second and clear by
/// themselves; CRC corruption the driver rides out (errors are counted while good data keeps
/// flowing). Meanwhile Fortuna never fails and trng serves only fresh blocks or "too few".
#[test]
fn every_fault_under_load_degrades_the_chip_while_fortuna_serves_and_all_recovers() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), "[hwrng]\nmode = \"off\"");
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    ready(&d);
    let load = Load::start(&d);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for name in util::degrading_faults() {
        let before = load.progress();
        let errors = d.source("chip")["read_errors"].as_u64().unwrap();
        fault(&d, name, true);
        let switched = Instant::now();
        // The driver's wait for a command's result adds up its nominal pauses, so on a loaded
        // host it waits longer in real time and some of slow-execution's late results still
        // count as in time: that fault shows as degraded health or as read errors counted,
        // and it may take longer than a second.
        let (shown, limit) = if name == "slow-execution" {
            ("degraded or failing", Duration::from_secs(5))
        } else {
            ("degraded", Duration::from_secs(1))
        };
        while healthy(&d)
            && (name != "slow-execution"
                || d.source("chip")["read_errors"].as_u64().unwrap() == errors)
        {
            assert!(
                switched.elapsed() < limit,
                "{name}: not {shown} {limit:?} after the fault: {}",
                d.source("chip")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let degraded = switched.elapsed();
        // The fault lasts a little longer; the clients keep being served meanwhile.
        std::thread::sleep(Duration::from_millis(300));
        if name != "slow-execution" {
            let (code, body) = d.get("/api/v1/health");
            assert_eq!(code, 503, "{name}: {body}");
            assert!(body.contains(r#""controller":false"#), "{name}: {body}");
            assert_eq!(d.source("chip")["healthy"], false, "{name}");
            assert_eq!(controller_metric(&d), "0", "{name}: metrics");
        }
        if name == "bus-gone" {
            let chip = d.source("chip");
            assert!(
                chip["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("bus error")),
                "{chip}"
            );
        }
        fault(&d, name, false);
        let cleared = Instant::now();
        util::within(
            Duration::from_secs(30),
            || healthy(&d),
            &format!("recovery from {name}"),
        );
        assert_eq!(controller_metric(&d), "1", "{name}: metrics after recovery");
        eprintln!(
            "{name}: {shown} after {degraded:?}, recovered {:?} after it cleared",
            cleared.elapsed()
        );
        load.assert_moving(&before, name);
    }
    // The chip's revision is checked when it (re)appears: switched on alone, wrong-revision
    // changes nothing; a different chip where the bus comes back is refused, and the right
    // one is used again.
    let before = load.progress();
    fault(&d, "wrong-revision", true);
    std::thread::sleep(Duration::from_millis(300));
    assert!(healthy(&d), "the running chip's revision is not read again");
    fault(&d, "bus-gone", true);
    util::within(
        Duration::from_secs(1),
        || !healthy(&d),
        "degraded when the bus goes",
    );
    fault(&d, "bus-gone", false);
    util::eventually(
        || {
            d.source("chip")["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("not an ATECC608"))
        },
        "the other chip refused",
    );
    assert!(!healthy(&d));
    fault(&d, "wrong-revision", false);
    util::within(
        Duration::from_secs(30),
        || healthy(&d),
        "recovery with the right chip",
    );
    load.assert_moving(&before, "wrong-revision");

    // The driver rides out CRC errors: counted, data keeps flowing, health stays ok.
    let before = load.progress();
    let chip = d.source("chip");
    let (errors, routed) = (
        chip["read_errors"].as_u64().unwrap(),
        chip["bytes_routed"].as_u64().unwrap(),
    );
    fault(&d, "crc-corruption", true);
    util::eventually(
        || {
            let c = d.source("chip");
            c["read_errors"].as_u64().unwrap() > errors
                && c["bytes_routed"].as_u64().unwrap() > routed + 320
        },
        "CRC errors counted while data keeps flowing",
    );
    fault(&d, "crc-corruption", false);
    util::eventually(|| healthy(&d), "healthy after crc-corruption");
    load.assert_moving(&before, "crc-corruption");
    eprintln!("all faults took {:?}", started.elapsed());

    let seen = load.finish();
    assert_served_well(&seen);
    assert_eq!(
        d.status()["kernel"]["credited_bits"],
        0,
        "emulator output credited"
    );
}

/// A FIFO standing in for a hardware RNG device node: a thread writes random bytes into it
/// while it is "present"; taking it away unlinks the node and closes the writer, so the
/// daemon's reader sees the end of its data and then no device, as when a driver unbinds.
struct Device {
    path: PathBuf,
    present: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Device {
    fn new(path: PathBuf) -> Device {
        let present = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s, fifo) = (present.clone(), stop.clone(), path.clone());
        let thread = std::thread::spawn(move || feed(&fifo, &p, &s));
        let mut device = Device {
            path,
            present,
            stop,
            thread: Some(thread),
        };
        device.plug();
        device
    }

    fn plug(&mut self) {
        nix::unistd::mkfifo(&self.path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        self.present.store(true, Ordering::SeqCst);
    }

    fn unplug(&mut self) {
        // Unlinked first: the reader, reopening after the writer closes, must find nothing
        // (and not block opening the old node).
        std::fs::remove_file(&self.path).unwrap();
        self.present.store(false, Ordering::SeqCst);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The writer side of [`Device`]: opens the FIFO without blocking (it fails until a reader
/// has it open), writes random bytes while the device is present, and reopens after the reader
/// closed (a source closes its device while it rests).
fn feed(path: &Path, present: &AtomicBool, stop: &AtomicBool) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut random = std::fs::File::open("/dev/urandom").unwrap();
    let mut buf = [0u8; 4096];
    let mut writer: Option<std::fs::File> = None;
    while !stop.load(Ordering::SeqCst) {
        if !present.load(Ordering::SeqCst) {
            writer = None;
            std::thread::sleep(Duration::from_millis(5));
            continue;
        }
        let Some(w) = writer.as_mut() else {
            writer = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .ok();
            match &writer {
                // The smallest pipe buffer (a page): little is left to read after the writer
                // goes, as little is left in a device's buffer when its driver goes.
                Some(w) => {
                    let _ = nix::fcntl::fcntl(w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096));
                }
                None => std::thread::sleep(Duration::from_millis(5)),
            }
            continue;
        };
        random.read_exact(&mut buf).unwrap();
        let mut left = &buf[..];
        while !left.is_empty() && present.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
            match w.write(left) {
                Ok(n) => left = &left[n..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => {
                    // The reader closed it.
                    writer = None;
                    break;
                }
            }
        }
    }
}

/// A source disappearing and coming back, under load: the chip's bus goes and returns, and a
/// hardware RNG device node (`hwrng.path`, mode on) goes and returns, twice. What is gone is
/// reported unhealthy within a second with its error; what stays serves (trng data keeps
/// coming from the hwrng while the chip is gone; Fortuna never fails even with both gone);
/// each source is used again by itself once it is back.
#[test]
fn sources_that_disappear_under_load_are_reported_and_used_again_when_they_return() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("hwrng");
    let mut device = Device::new(fifo.clone());
    let conf = config(
        dir.path(),
        &format!(
            "[hwrng]\nmode = \"on\"\npath = {:?}",
            fifo.to_str().unwrap()
        ),
    );
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    ready(&d);
    util::eventually(|| d.source("hwrng")["healthy"] == true, "a healthy hwrng");
    let load = Load::start(&d);
    let served = || load.seen.lock().unwrap().trng_blocks.len();

    // The chip's bus goes: the hwrng still fills the trng queue.
    let before = load.progress();
    fault(&d, "bus-gone", true);
    util::within(
        Duration::from_secs(1),
        || d.source("chip")["healthy"] == false,
        "the chip reported gone",
    );
    let (code, body) = d.get("/api/v1/health");
    assert_eq!(code, 503, "{body}");
    let during = served();
    util::eventually(
        || served() >= during + 10,
        "trng blocks served from the hwrng while the chip is gone",
    );
    fault(&d, "bus-gone", false);
    util::within(Duration::from_secs(10), || healthy(&d), "the chip back");
    load.assert_moving(&before, "chip gone");

    for round in 0..2 {
        let before = load.progress();
        device.unplug();
        let gone = Instant::now();
        util::within(
            Duration::from_secs(1),
            || {
                let h = d.source("hwrng");
                h["healthy"] == false
                    && h["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains(fifo.to_str().unwrap()))
            },
            "the hwrng reported gone, naming its path",
        );
        eprintln!(
            "round {round}: hwrng reported gone after {:?}",
            gone.elapsed()
        );
        // (What the pipe still held was read first, as a device's last buffered data.)
        let blocks = d.source("hwrng")["blocks_read"].as_u64().unwrap();
        // Health says degraded (a configured source is failing), while the chip still serves;
        // `lokey status` says the hwrng is failing.
        assert_eq!(d.get("/api/v1/health").0, 503, "{}", d.status());
        let shown = String::from_utf8_lossy(&util::lokey(&d, &["status"]).stdout).into_owned();
        assert!(
            shown
                .lines()
                .any(|l| l.starts_with("source hwrng") && l.contains(" failing ")),
            "{shown}"
        );
        assert_eq!(d.source("chip")["healthy"], true, "{}", d.status());
        if round == 1 {
            // Both sources gone: Fortuna still serves (the load checks it), health stays
            // degraded and names the chip too.
            fault(&d, "bus-gone", true);
            util::within(
                Duration::from_secs(1),
                || {
                    d.source("chip")["healthy"] == false
                        && d.get("/api/v1/health").1.contains("\"controller\":false")
                },
                "the chip reported gone as well",
            );
        }
        std::thread::sleep(Duration::from_millis(700));
        let read = d.source("hwrng")["blocks_read"].as_u64().unwrap();
        assert_eq!(read, blocks, "blocks kept coming from a gone device");
        if round == 1 {
            fault(&d, "bus-gone", false);
        }
        device.plug();
        let back = Instant::now();
        util::within(
            Duration::from_secs(10),
            || {
                let h = d.source("hwrng");
                h["healthy"] == true && h["blocks_read"].as_u64().unwrap() > read
            },
            "the hwrng read again after it came back",
        );
        eprintln!(
            "round {round}: hwrng healthy again {:?} after it came back",
            back.elapsed()
        );
        // It came back through a fresh start-up test: it may be another device.
        let restarts = d.source("hwrng")["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["from"] == "healthy" && t["to"] == "starting_up")
            .map_or(0, |t| t["count"].as_u64().unwrap());
        assert_eq!(restarts, round + 1, "{}", d.source("hwrng"));
        util::within(Duration::from_secs(10), || healthy(&d), "all healthy again");
        load.assert_moving(&before, "hwrng gone");
    }

    let seen = load.finish();
    assert_served_well(&seen);
}

/// Many clients at once asking for the last few queued trng blocks over the streamed
/// `GET /random/bytes`: each gets its block or the 404 "too few", never a 200 whose body then
/// breaks off because another client took the block between the check and the stream.
#[test]
fn concurrent_trng_streams_get_a_block_or_a_clear_404_never_a_broken_200() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), "[hwrng]\nmode = \"off\"");
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    ready(&d);
    let addr = d.addr();
    let until = Instant::now() + Duration::from_secs(2);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            std::thread::spawn(move || {
                let mut seen = Seen::default();
                while Instant::now() < until {
                    let answer = http(addr, "GET", "/api/v1/random/bytes?n=32&source=trng", "")
                        .and_then(|(code, body)| {
                            trng_answer("GET /random/bytes", code, body, "not enough TRNG data")
                        });
                    match answer {
                        Ok(Some(block)) => seen.trng_blocks.push(block),
                        Ok(None) => seen.trng_short += 1,
                        Err(e) => seen.failures.push(e),
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Seen::default();
    for c in clients {
        let seen = c.join().unwrap();
        all.failures.extend(seen.failures);
        all.trng_blocks.extend(seen.trng_blocks);
        all.trng_short += seen.trng_short;
    }
    assert_served_well(&all);
}
