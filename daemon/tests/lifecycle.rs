//! The daemon's life cycle against a real `lokeyd`: systemd notifications (READY=1 once the
//! REST API answers, the watchdog, STOPPING=1), a refused start leaves no socket behind,
//! `--print-config` shows the settings stored at run time, and a disk that fills up (at run
//! time, or before a start) degrades the daemon to Fortuna only, losing nothing acknowledged.
//!
//! The disk tests mount small tmpfs file systems and need root; they say so and pass
//! without checking anything otherwise.

mod util;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use util::{Daemon, eventually, lokeyd, within};

// --- systemd notifications ---------------------------------------------------------------

/// An HTTP/1.1 request with timeouts: (status, body), `None` when nothing answers.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let code = text.get(9..12)?.parse().ok()?;
    Some((code, text.split_once("\r\n\r\n")?.1.to_string()))
}

/// A port on loopback that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The next notification (one datagram, `KEY=value` lines), `None` after `limit`.
fn next_message(sock: &UnixDatagram, limit: Duration) -> Option<String> {
    sock.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn systemd_hears_ready_once_rest_answers_then_the_watchdog_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify_path).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = lokeyd()
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "2000000")
        .args(["--config", "/dev/null", "--emulate", "--no-credit"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--socket")
        .arg(dir.path().join("lokey.sock"))
        .arg("--listen")
        .arg(addr.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(child.id() as i32);
    let _kill = KillOnDrop(pid);

    // READY=1 first (no watchdog ping before it), and when it comes, the REST API answers at
    // once: the listener is not merely bound.
    let ready = next_message(&sock, Duration::from_secs(20)).expect("no notification at all");
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message: {ready:?}"
    );
    let answered = Instant::now();
    let (code, body) = http(addr, "GET", "/api/v1/health", "").expect("REST silent at READY=1");
    assert!(matches!(code, 200 | 503), "{code} {body}");
    assert!(answered.elapsed() < Duration::from_secs(1));
    assert!(
        dir.path().join("lokey.sock").exists(),
        "socket missing at READY=1"
    );

    // The watchdog: at least twice within twice its interval (it pings at half of it).
    let since = Instant::now();
    let mut pings = 0;
    while since.elapsed() < Duration::from_secs(4) {
        let left = Duration::from_secs(4).saturating_sub(since.elapsed());
        let Some(msg) = next_message(&sock, left.max(Duration::from_millis(1))) else {
            break;
        };
        assert!(!msg.contains("READY=1"), "READY=1 twice: {msg:?}");
        pings += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
    }
    assert!(
        pings >= 2,
        "{pings} watchdog pings in 4 s (WATCHDOG_USEC = 2 s)"
    );

    // SIGTERM: STOPPING=1, then exit 0.
    kill(pid, Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let msg = next_message(&sock, Duration::from_secs(10)).expect("no STOPPING=1");
        if msg.lines().any(|l| l == "STOPPING=1") {
            break;
        }
        assert!(Instant::now() < deadline, "no STOPPING=1");
    }
    let status = wait_exit(&mut child, Duration::from_secs(10)).expect("still running");
    assert_eq!(status.code(), Some(0));
}

struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
    }
}

fn wait_exit(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// --- a refused start leaves no socket ------------------------------------------------------

/// Runs lokeyd on `data` with its socket at `socket` until it exits (it must, within 20 s):
/// (exit code, stderr).
fn run_to_exit(data: &Path, socket: &Path) -> (Option<i32>, String) {
    let mut child = lokeyd()
        .args(["--config", "/dev/null", "--emulate", "--no-credit"])
        .arg("--data-dir")
        .arg(data)
        .arg("--socket")
        .arg(socket)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _kill = KillOnDrop(Pid::from_raw(child.id() as i32));
    let mut err = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let status = wait_exit(&mut child, Duration::from_secs(20)).expect("lokeyd kept running");
    (status.code(), reader.join().unwrap())
}

#[test]
fn a_refused_store_leaves_no_socket_behind() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("refused.sock");

    // Foreign: a directory with someone else's files.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "not a store").unwrap();
    let (code, log) = run_to_exit(&foreign, &socket);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("is not a lokey data directory"), "{log}");
    assert!(!socket.exists(), "a foreign store left the socket behind");
    assert!(foreign.join("notes.txt").exists());

    // Damaged: a store whose engine version file is garbage.
    let damaged = dir.path().join("damaged");
    let mut d = Daemon::start_with_socket(&[], &dir.path().join("d"), &dir.path().join("d.sock"));
    assert_eq!(d.stop(), Some(0));
    std::fs::rename(d.data_dir(), &damaged).unwrap();
    std::fs::write(damaged.join("version"), b"\xff\xfe garbage").unwrap();
    let (code, log) = run_to_exit(&damaged, &socket);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("damaged"), "{log}");
    assert!(!socket.exists(), "a damaged store left the socket behind");

    // Locked: another daemon has the store open; its socket stays, the refused one goes.
    let running = Daemon::start(&[]);
    let (code, log) = run_to_exit(running.data_dir(), &socket);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("in use by another process"), "{log}");
    assert!(!socket.exists(), "a locked store left the socket behind");
    assert!(
        running.socket().exists(),
        "the running daemon's socket was removed"
    );
    eventually(
        || running.get("/api/v1/health").0 == 200,
        "the running daemon healthy",
    );
}

// --- --print-config shows the stored settings ----------------------------------------------

fn print_config(data: &Path, file: &Path, env: &[(&str, &str)]) -> (toml::Table, String) {
    let mut cmd = lokeyd();
    cmd.arg("--config")
        .arg(file)
        .arg("--data-dir")
        .arg(data)
        .arg("--print-config");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let config = toml::from_str(&String::from_utf8_lossy(&out.stdout)).unwrap();
    (config, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn trng_queue_size(config: &toml::Table) -> Option<i64> {
    config["store"]["trng_queue_size"].as_integer()
}

#[test]
fn print_config_includes_the_settings_stored_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lokeyd.toml");
    std::fs::write(&file, "[store]\ntrng_queue_size = 500\n").unwrap();
    let mut d = Daemon::start_with_socket(
        &["--config", file.to_str().unwrap()],
        dir.path(),
        &dir.path().join("lokey.sock"),
    );
    let data = d.data_dir().to_path_buf();
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/queue",
        &[],
        r#"{"trng_queue_size":1234,"fortuna_queue_size":20000}"#,
    );
    assert_eq!(code, 200, "{body}");

    // While the daemon runs its store is locked: printed without, and stderr says so.
    let (config, stderr) = print_config(&data, &file, &[]);
    assert_eq!(trng_queue_size(&config), Some(500));
    assert!(stderr.contains("in use by a running lokeyd"), "{stderr}");

    // Stopped: the stored setting overrides the file, as at a start; the environment wins.
    assert_eq!(d.stop(), Some(0));
    let (config, stderr) = print_config(&data, &file, &[]);
    assert_eq!(trng_queue_size(&config), Some(1234), "{stderr}");
    assert_eq!(
        config["store"]["fortuna_queue_size"].as_integer(),
        Some(20000)
    );
    assert!(stderr.contains("settings stored at run time"), "{stderr}");
    let (config, _) = print_config(&data, &file, &[("TRNG_QUEUE_SIZE", "777")]);
    assert_eq!(trng_queue_size(&config), Some(777));

    // A daemon started afterwards uses what was printed.
    let d = Daemon::start_with_socket(
        &["--config", file.to_str().unwrap()],
        dir.path(),
        &dir.path().join("lokey.sock"),
    );
    assert_eq!(d.status()["trng"]["queue_capacity"], 1234);
    drop(d);

    // No store: nothing is created.
    let none = dir.path().join("none");
    let (config, stderr) = print_config(&none, &file, &[]);
    assert_eq!(trng_queue_size(&config), Some(500));
    assert!(stderr.is_empty(), "{stderr}");
    assert!(!none.exists(), "--print-config created {}", none.display());
}

/// Every file under `dir` with its owner.
fn owners(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push((path.clone(), meta.uid()));
        if meta.is_dir() {
            out.extend(owners(&path));
        }
    }
    out
}

#[test]
fn print_config_as_root_leaves_the_store_to_its_owner() {
    if !nix::unistd::geteuid().is_root() {
        crate::skipped!("skipped: needs root (a store owned by another user, read by root)");
        return;
    }
    let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
        crate::skipped!("skipped: there is no user `nobody` to own the store");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start_with_socket(&[], dir.path(), &dir.path().join("lokey.sock"));
    let data = d.data_dir().to_path_buf();
    let (code, body) = d.request("PUT", "/api/v1/config/consume", &[], r#"{"consume":false}"#);
    assert_eq!(code, 200, "{body}");
    assert_eq!(d.stop(), Some(0));
    let chown = |path: &Path| {
        nix::unistd::chown(path, Some(nobody.uid), Some(nobody.gid)).unwrap();
    };
    chown(&data);
    for (path, _) in owners(&data) {
        chown(&path);
    }
    // The test's directory is 0700 root: let the owner reach its store.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();

    let (config, stderr) = print_config(&data, Path::new("/dev/null"), &[]);
    assert_eq!(
        config["store"]["consume"].as_bool(),
        Some(false),
        "{stderr}"
    );
    for (path, uid) in owners(&data) {
        assert_eq!(uid, nobody.uid.as_raw(), "{} changed owner", path.display());
    }
}

// --- a disk that fails ---------------------------------------------------------------------

/// A small tmpfs mounted on a temporary directory, unmounted when dropped (also when a test
/// fails: declare it before the daemon, so that the daemon is gone first).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// `None`, saying why, where mounting is not possible.
    fn mount(options: &str) -> Option<Tmpfs> {
        if !nix::unistd::geteuid().is_root() {
            crate::skipped!(
                "skipped: a full or read-only disk needs a small tmpfs, and mounting one needs \
                 root; run the tests as root to check this"
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs { dir }),
            Ok(out) => {
                crate::skipped!(
                    "skipped: cannot mount a tmpfs (no CAP_SYS_ADMIN here?): {}",
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

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(self.path())
            .status()
            .unwrap();
        assert!(status.success(), "cannot remount the tmpfs {options}");
    }

    /// Bytes free.
    fn free(&self) -> u64 {
        let fs = nix::sys::statvfs::statvfs(self.path()).unwrap();
        fs.blocks_available() as u64 * fs.fragment_size() as u64
    }

    /// Fills the file system with a file of zeros until at most `leave` bytes are free.
    fn fill(&self, leave: u64) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("filler"))
            .unwrap();
        let chunk = vec![0u8; 4096];
        while self.free() > leave {
            if file
                .write_all(&chunk)
                .and_then(|()| file.sync_data())
                .is_err()
            {
                break;
            }
        }
    }

    fn unfill(&self) {
        std::fs::remove_file(self.path().join("filler")).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a daemon not yet reaped): detach it now, freed when unused.
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

fn health(d: &Daemon) -> (u16, serde_json::Value) {
    let (code, body) = d.get("/api/v1/health");
    (code, serde_json::from_str(&body).unwrap())
}

fn data(d: &Daemon, source: &str, limit: usize) -> (u16, Vec<u8>) {
    let (code, _, body) = d.binary(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        &format!(r#"{{"format":"binary","limit":{limit},"source":"{source}"}}"#),
    );
    (code, body)
}

/// One trng block over REST, remembered in `served` when it was served: the status code.
fn take(d: &Daemon, served: &mut BTreeSet<Vec<u8>>) -> u16 {
    let (code, bytes) = data(d, "trng", 32);
    if code == 200 {
        assert_eq!(bytes.len(), 32);
        served.insert(bytes);
    }
    code
}

/// Waits up to `limit` for `check`.
/// Stores a setting (the TRNG queue size `queue`), waits until at least `queued` blocks are
/// harvested, and serves ten of them: the acknowledged state a later check compares with.
fn store_setting_and_serve(d: &Daemon, queue: u64, queued: u64) -> BTreeSet<Vec<u8>> {
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/queue",
        &[],
        &format!(r#"{{"trng_queue_size":{queue},"fortuna_queue_size":20000}}"#),
    );
    assert_eq!(code, 200, "{body}");
    within(
        Duration::from_secs(20),
        || d.status()["trng"]["unconsumed_count"].as_u64() >= Some(queued),
        "some trng data",
    );
    let mut served = BTreeSet::new();
    for _ in 0..10 {
        assert_eq!(take(d, &mut served), 200);
    }
    served
}

#[test]
fn a_disk_that_fills_while_trng_is_harvested_leaves_fortuna_serving_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount("size=1m,mode=0700") else {
        return;
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let socket = elsewhere.path().join("lokey.sock");
    let mut d = Daemon::start_with_socket(&[], disk.path(), &socket);
    let data_dir = d.data_dir().to_path_buf();
    // Blocks served (acknowledged) before and while the disk fills.
    let mut served = store_setting_and_serve(&d, 50000, 64);
    disk.fill(24 << 10);
    within(
        Duration::from_secs(60),
        || {
            take(&d, &mut served);
            health(&d).1["details"]["database"] == false
        },
        "the store to fail on the full disk",
    );
    assert!(served.len() >= 10);

    // Degraded, reported once, and Fortuna keeps serving.
    let (code, h) = health(&d);
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "degraded");
    assert_eq!(h["details"]["fortuna"], true);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(d.try_wait(), None, "lokeyd exited:\n{}", d.log());
    let (code, bytes) = data(&d, "fortuna", 4096);
    assert_eq!((code, bytes.len()), (200, 4096));
    assert_ne!(
        take(&d, &mut served),
        200,
        "trng served from a store that cannot be written"
    );
    let log = d.log();
    assert_eq!(
        log.matches("can no longer be written").count(),
        1,
        "reported once:\n{log}"
    );
    assert!(log.contains("the disk is full"), "{log}");
    assert!(log.contains(&data_dir.display().to_string()), "{log}");
    // The harvest stops filling a queue that cannot be written: no error per block.
    assert!(
        log.matches("cannot write to the TRNG queue").count() <= 2,
        "{log}"
    );
    let db = &d.status()["database"];
    assert_eq!(db["writable"], false, "{db}");
    assert!(
        db["error"]
            .as_str()
            .is_some_and(|e| e.contains(&data_dir.display().to_string())),
        "{db}"
    );
    let (code, _, body) = d.binary(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"binary","limit":32,"source":"trng"}"#,
    );
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(d.stop(), Some(0), "{}", d.log());

    // Room again and a restart: healthy, the setting kept, no served block back.
    disk.unfill();
    disk.remount("size=64m");
    let d = Daemon::start_with_socket(&[], disk.path(), &socket);
    eventually(
        || health(&d).1["details"]["database"] == true,
        "a healthy store after the restart",
    );
    assert_eq!(d.status()["trng"]["queue_capacity"], 50000);
    drop(d);
    let store = lokey::store::Store::open(&data_dir, &Default::default()).unwrap();
    let queue = store.trng();
    let queued = queue.peek(0, queue.stats().bytes as usize).unwrap();
    let back: Vec<_> = queued
        .chunks(32)
        .filter(|block| served.contains(*block))
        .collect();
    assert!(
        back.is_empty(),
        "{} served blocks are queued again",
        back.len()
    );
}

#[test]
fn a_full_disk_at_start_does_not_stop_the_daemon_nor_reuse_the_seed_file() {
    let Some(disk) = Tmpfs::mount("size=1m,mode=0700") else {
        return;
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let socket = elsewhere.path().join("lokey.sock");
    // A seed file (written at shutdown once Fortuna is seeded).
    let mut d = Daemon::start_with_socket(&[], disk.path(), &socket);
    within(
        Duration::from_secs(20),
        || d.status()["fortuna_generator"]["seeded"] == true,
        "Fortuna seeded",
    );
    assert_eq!(d.stop(), Some(0));

    // No hardware: the only writes at start are the seed file's replacement. Start until one
    // fails (the journal's last page may still take a few small writes).
    let quiet = elsewhere.path().join("no-hardware.toml");
    std::fs::write(
        &quiet,
        "[hwrng]\nmode = \"off\"\n[chip]\nemulate_faults = [\"bus-gone\"]\n",
    )
    .unwrap();
    let quiet_args = ["--config", quiet.to_str().unwrap()];
    let mut failed = None;
    for _ in 0..40 {
        // Full again: opening the store can free the unused end of its journal.
        disk.fill(0);
        let mut d = Daemon::start_with_socket(&quiet_args, disk.path(), &socket);
        if d.log().contains("cannot replace the Fortuna seed file") {
            failed = Some(d);
            break;
        }
        assert_eq!(d.stop(), Some(0), "{}", d.log());
    }
    let d = failed.expect("the seed file was always replaced on a full disk");
    let log = d.log();
    assert!(log.contains("the disk is full"), "{log}");
    // The old seed is not used: without hardware Fortuna stays unseeded.
    let (code, h) = health(&d);
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["details"]["database"], false, "{h}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(d.status()["fortuna_generator"]["seeded"], false);
    assert_ne!(data(&d, "fortuna", 64).0, 200, "served from the old seed");
    drop(d);

    // With hardware, Fortuna serves within seconds; trng does not.
    let d = Daemon::start_with_socket(&[], disk.path(), &socket);
    within(
        Duration::from_secs(20),
        || data(&d, "fortuna", 64).0 == 200,
        "Fortuna seeded from hardware",
    );
    assert_eq!(health(&d).1["details"]["database"], false);
    assert_ne!(data(&d, "trng", 32).0, 200);
    drop(d);

    // Room again: healthy.
    disk.unfill();
    let d = Daemon::start_with_socket(&[], disk.path(), &socket);
    within(
        Duration::from_secs(20),
        || health(&d).0 == 200,
        "healthy once the disk has room",
    );
    assert!(!d.log().contains("cannot replace the Fortuna seed file"));
}

/// Checks that `d` runs without a usable store: degraded health, status saying why with the
/// path, trng refused with 503, settings refused, Fortuna serving within seconds.
fn assert_fortuna_only(d: &Daemon, why: &str) {
    let data_dir = d.data_dir().display().to_string();
    let (code, h) = health(d);
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["details"]["database"], false, "{h}");
    let status = d.status();
    let db = &status["database"];
    assert_eq!(db["writable"], false, "{db}");
    let error = db["error"].as_str().unwrap_or_default();
    assert!(error.contains(&data_dir) && error.contains(why), "{db}");
    let (code, _, body) = d.binary(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"binary","limit":32,"source":"trng"}"#,
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("TRNG data is unavailable") && body.contains(&data_dir),
        "{body}"
    );
    let (code, body) = d.request("PUT", "/api/v1/config/consume", &[], r#"{"consume":false}"#);
    assert_eq!(code, 503, "{body}");
    within(
        Duration::from_secs(20),
        || data(d, "fortuna", 64).0 == 200,
        "Fortuna seeded from hardware",
    );
    let log = d.log();
    assert_eq!(log.matches("serving Fortuna only").count(), 1, "{log}");
    assert!(log.contains(why), "{log}");
}

#[test]
fn a_read_only_data_directory_leaves_fortuna_serving_and_loses_nothing() {
    let Some(disk) = Tmpfs::mount("size=4m,mode=0755") else {
        return;
    };
    let elsewhere = tempfile::tempdir().unwrap();
    let socket = elsewhere.path().join("lokey.sock");
    let read_only = "the file system is mounted read-only";

    // Read-only before there is a data directory, then with an empty one.
    disk.remount("ro");
    let mut d = Daemon::start_with_socket(&[], disk.path(), &socket);
    assert!(
        d.log().contains("cannot create data directory"),
        "{}",
        d.log()
    );
    assert_fortuna_only(&d, read_only);
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert!(!socket.exists(), "socket left behind");
    disk.remount("rw");
    std::fs::create_dir(disk.path().join("data")).unwrap();
    disk.remount("ro");
    let mut d = Daemon::start_with_socket(&[], disk.path(), &socket);
    assert!(d.log().contains("cannot open the store in"), "{}", d.log());
    assert_fortuna_only(&d, read_only);
    assert_eq!(d.stop(), Some(0), "{}", d.log());

    // A store with data and a setting, then the disk turns read-only (as after an I/O error).
    disk.remount("rw");
    let mut d = Daemon::start_with_socket(&[], disk.path(), &socket);
    let data_dir = d.data_dir().to_path_buf();
    let served = store_setting_and_serve(&d, 4321, 20);
    assert_eq!(d.stop(), Some(0));
    disk.remount("ro");
    let mut d = Daemon::start_with_socket(&[], disk.path(), &socket);
    assert_fortuna_only(&d, read_only);
    assert_eq!(d.stop(), Some(0), "{}", d.log());

    // Writable again: everything acknowledged is there, nothing served is back.
    disk.remount("rw");
    let d = Daemon::start_with_socket(&[], disk.path(), &socket);
    eventually(
        || health(&d).1["details"]["database"] == true,
        "a healthy store",
    );
    assert_eq!(d.status()["trng"]["queue_capacity"], 4321);
    assert_eq!(d.status()["database"]["writable"], true);
    drop(d);
    let store = lokey::store::Store::open(&data_dir, &Default::default()).unwrap();
    let queue = store.trng();
    let queued = queue.peek(0, queue.stats().bytes as usize).unwrap();
    assert!(
        queued.chunks(32).all(|block| !served.contains(block)),
        "a served block is queued again"
    );
}
