//! The HAProxy configurations in deploy/, run on loopback in front of real `lokeyd`:
//! - haproxy.cfg before three plain-HTTP daemons: a steady stream of requests through the
//!   proxy, one daemon stopped (SIGTERM) mid-run, and not one request may fail.
//! - haproxy-tls-passthrough.cfg and haproxy-tls-reencrypt.cfg before three TLS daemons, two
//!   with certificates from a test CA and an impostor with a self-signed one: the key a client
//!   is shown (a device's, or the proxy's), the impostor taken out by the TLS health checks
//!   and never answering, `lokey` through the proxy, and a device stopped without a failed
//!   request.
//!
//! Needs `haproxy` on PATH (or its path in `LOKEY_TEST_HAPROXY`); without it the tests print
//! why they are skipped and pass. CI installs it (.ci/run).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lokey::remote::{Pin, Remote, RemoteError, Trust};
use util::{Daemon, TestKey};

/// The haproxy binary; without one, says that the test running `config` is skipped and why.
fn haproxy(config: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOKEY_TEST_HAPROXY") {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("haproxy"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        crate::skipped!(
            "skipped: haproxy is not installed (apt-get install haproxy, or set \
             LOKEY_TEST_HAPROXY); this test runs deploy/{config}"
        );
    }
    found
}

/// One HTTP/1.1 request on a fresh connection: (status, the X-Lokey-Backend header, body).
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String, String), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let content_type = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: lokey\r\nConnection: close\r\n{content_type}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("incomplete response: {text:?}"))?;
    let code = head
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    let backend = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("x-lokey-backend")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Ok((code, backend, body.to_string()))
}

/// Waits up to `limit` for `check`.
fn wait_for(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// haproxy running the file `name` from deploy/, its output kept in `dir`, until dropped.
struct Proxy {
    child: Child,
    log: PathBuf,
    /// Where it listens.
    addr: SocketAddr,
}

impl Proxy {
    /// Starts haproxy with deploy/`name` as a test on this machine needs it: listening on a
    /// free loopback port rather than `bind :PORT`, the example servers `pi1`..`pi3`
    /// (`192.0.2.11:PORT`..) at `servers`, and each `(path, here)` of `files` (the example's
    /// `/etc/haproxy/...` files) at `here`. Every edited text must stand in the file exactly
    /// once; the result must pass `haproxy -c`.
    fn start(
        haproxy: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        servers: &[SocketAddr; 3],
        files: &[(&str, &Path)],
    ) -> Proxy {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        let mut text = std::fs::read_to_string(&path).unwrap();
        let listen = free_port();
        let mut edit = |from: &str, to: &str| {
            assert_eq!(
                text.matches(from).count(),
                1,
                "{from:?} in {}",
                path.display()
            );
            text = text.replace(from, to);
        };
        edit(
            &format!("bind :{port}"),
            &format!("bind 127.0.0.1:{listen}"),
        );
        for (n, addr) in (1..=3).zip(servers) {
            let example = format!("server pi{n} 192.0.2.{}:{port}", 10 + n);
            edit(&example, &format!("server pi{n} {addr}"));
        }
        for (example, here) in files {
            edit(example, &here.display().to_string());
        }

        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, text).unwrap();
        let check = Command::new(haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .unwrap();
        assert!(check.status.success(), "haproxy -c: {check:?}");
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], listen));
        Proxy { child, log, addr }
    }

    /// What haproxy logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn haproxy_keeps_serving_while_one_daemon_stops() {
    let Some(haproxy) = haproxy("haproxy.cfg") else {
        return;
    };

    let mut daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&[])).collect();
    // Healthy (sources running, Fortuna seeded) before the proxy sees them.
    for d in &daemons {
        wait_for(
            Duration::from_secs(30),
            "a daemon's health to be ok",
            || d.get("/api/v1/health").0 == 200,
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let addrs = [daemons[0].addr(), daemons[1].addr(), daemons[2].addr()];
    let proxy = Proxy::start(&haproxy, dir.path(), "haproxy.cfg", 8080, &addrs, &[]);
    let lb = proxy.addr;
    wait_for(Duration::from_secs(10), "haproxy to answer", || {
        matches!(request(lb, "GET", "/api/v1/health", ""), Ok((200, _, _)))
    });

    // Four clients, each alternating status, Fortuna data and health, for 6 s; the second
    // daemon gets SIGTERM after 2 s.
    let stop = Arc::new(AtomicBool::new(false));
    let stopped_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    type Record = (Instant, &'static str, Result<(u16, String, String), String>);
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut done: Vec<Record> = Vec::new();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let (what, result) = match i % 3 {
                        0 => ("status", request(lb, "GET", "/api/v1/status", "")),
                        1 => (
                            "data",
                            request(
                                lb,
                                "POST",
                                "/api/v1/data",
                                r#"{"format":"uint8","limit":32,"source":"fortuna"}"#,
                            ),
                        ),
                        _ => ("health", request(lb, "GET", "/api/v1/health", "")),
                    };
                    done.push((Instant::now(), what, result));
                    i += 1;
                    std::thread::sleep(Duration::from_millis(5));
                }
                done
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    let code = daemons[1].stop();
    *stopped_at.lock().unwrap() = Some(Instant::now());
    assert_eq!(code, Some(0), "lokeyd exit after SIGTERM");
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);

    let records: Vec<Record> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let stopped_at = stopped_at.lock().unwrap().unwrap();
    let mut failures = Vec::new();
    let mut before = std::collections::BTreeSet::new();
    let mut after = std::collections::BTreeSet::new();
    for (at, what, result) in &records {
        match result {
            Ok((200, backend, body)) => {
                if *what == "data" {
                    let values: Vec<u8> = serde_json::from_str(body).unwrap();
                    assert_eq!(values.len(), 32, "{body}");
                }
                if *at < stopped_at {
                    before.insert(backend.clone());
                } else if at.duration_since(stopped_at) > Duration::from_secs(2) {
                    after.insert(backend.clone());
                }
            }
            other => failures.push(format!("{what}: {other:?}")),
        }
    }
    let total = records.len();
    eprintln!(
        "{total} requests through haproxy, {} failed; served by {before:?} before the stop, \
         by {after:?} from 2 s after it",
        failures.len()
    );
    assert!(total > 100, "only {total} requests in 6 s");
    assert!(failures.is_empty(), "failed requests: {failures:#?}");
    let all: std::collections::BTreeSet<String> = ["pi1", "pi2", "pi3"].map(String::from).into();
    assert_eq!(before, all, "round robin over the three devices");
    let rest: std::collections::BTreeSet<String> = ["pi1", "pi3"].map(String::from).into();
    assert_eq!(after, rest, "the stopped device taken out of rotation");
    // The two survivors were never disturbed.
    for i in [0, 2] {
        assert!(daemons[i].try_wait().is_none(), "a surviving daemon exited");
    }
}

/// Three TLS devices for the deploy/haproxy-tls-*.cfg tests, each `files` mode in a directory
/// of its own: `pi1` and `pi2` with certificates from a test CA, `pi3` an impostor with a
/// self-signed certificate the proxy must never use.
struct Fleet {
    daemons: Vec<Daemon>,
    /// The pins of the three devices' keys.
    pins: [Pin; 3],
    /// The test CA's certificate.
    ca: PathBuf,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = TestKey::new(0x50);
        let ca = dir.path().join("fleet-ca.pem");
        std::fs::write(&ca, ca_key.ca_certificate()).unwrap();
        let keys = [0x51, 0x52, 0x53].map(TestKey::new);
        let daemons: Vec<Daemon> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| {
                let home = dir.path().join(format!("pi{}", i + 1));
                std::fs::create_dir(&home).unwrap();
                let cert = if i < 2 {
                    key.issued_by(&ca_key)
                } else {
                    key.certificate().0
                };
                util::write_tls_files(&home, &cert, key);
                util::files_daemon(&home)
            })
            .collect();
        let pins = [keys[0].pin(), keys[1].pin(), keys[2].pin()];
        for (d, pin) in daemons.iter().zip(pins) {
            let r =
                Remote::new(&format!("https://{}", d.addr()), Trust::Pin(pin), TIMEOUT).unwrap();
            wait_for(
                Duration::from_secs(30),
                "a device's health to be ok",
                || r.get("/api/v1/health").is_ok_and(|a| a.status == 200),
            );
        }
        Fleet {
            daemons,
            pins,
            ca,
            dir,
        }
    }

    /// haproxy running deploy/`name` in front of the fleet, with the fleet's CA for
    /// `/etc/haproxy/lokey-fleet-ca.pem` and `files` besides.
    fn behind(&self, haproxy: &Path, name: &str, files: &[(&str, &Path)]) -> Proxy {
        let servers = [0, 1, 2].map(|i| self.daemons[i].addr());
        let mut files = files.to_vec();
        files.push(("/etc/haproxy/lokey-fleet-ca.pem", &self.ca));
        Proxy::start(haproxy, self.dir.path(), name, 8443, &servers, &files)
    }

    /// The device whose key has `pin`.
    fn index_of(&self, pin: &str) -> usize {
        self.pins
            .iter()
            .position(|p| p.to_string() == pin)
            .unwrap_or_else(|| panic!("{pin} is none of the devices' keys"))
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

/// The pin of the key that answers a TLS handshake at `addr`: a client given a pin no key has
/// refuses every server, naming the key it was shown.
fn served_pin(addr: SocketAddr) -> Result<String, String> {
    let nobody = Trust::Pin(Pin([0; 32]));
    match Remote::new(&format!("https://{addr}"), nobody, TIMEOUT)
        .unwrap()
        .get("/api/v1/health")
    {
        Err(RemoteError::PinMismatch { actual, .. }) => Ok(actual),
        other => Err(format!("{other:?}")),
    }
}

/// The pin the answering device reports in `/api/v1/tls`, fetched through `r`.
fn device_behind(r: &Remote) -> Result<String, String> {
    let answer = r.get("/api/v1/tls").map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(format!("status {}", answer.status));
    }
    let report: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    Ok(report["pin"].as_str().unwrap().to_string())
}

/// The impostor was found out by haproxy's TLS health checks, and no genuine device was.
fn assert_only_the_impostor_is_down(proxy: &Proxy) {
    wait_for(Duration::from_secs(10), "haproxy to take pi3 out", || {
        proxy.log().contains("/pi3 is DOWN")
    });
    let log = proxy.log();
    assert!(
        !log.contains("/pi1 is DOWN") && !log.contains("/pi2 is DOWN"),
        "a device with the CA's certificate was taken out:\n{log}"
    );
}

#[test]
fn tls_passthrough_hands_each_client_a_devices_own_session() {
    let Some(haproxy) = haproxy("haproxy-tls-passthrough.cfg") else {
        return;
    };
    let mut fleet = Fleet::start();
    let proxy = fleet.behind(&haproxy, "haproxy-tls-passthrough.cfg", &[]);
    let lb = proxy.addr;
    assert_only_the_impostor_is_down(&proxy);

    // The client's session is with a device: the key it is shown is that device's, and the
    // CA file is all it needs to trust any of them. The same client stays on one device.
    let by_ca = Remote::new(
        &format!("https://{lb}"),
        Trust::CaFile(fleet.ca.clone()),
        TIMEOUT,
    )
    .unwrap();
    let first = served_pin(lb).unwrap();
    let sticky = fleet.index_of(&first);
    assert!(sticky < 2, "the impostor's key was served");
    for _ in 0..10 {
        assert_eq!(served_pin(lb).unwrap(), first, "balance source");
        assert_eq!(device_behind(&by_ca).unwrap(), first);
    }
    let out = util::lokey_cmd()
        .env_remove("LOKEY_REMOTE")
        .env_remove("LOKEY_PIN")
        .args(["--socket", "/nonexistent/lokey.sock"])
        .arg("--remote")
        .arg(format!("https://{lb}"))
        .arg("--cacert")
        .arg(&fleet.ca)
        .args(["bytes", "32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout.len(), 32);

    // That device stops: its client moves to the other genuine device without a failure.
    assert_eq!(fleet.daemons[sticky].stop(), Some(0));
    let other = fleet.pins[1 - sticky].to_string();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while Instant::now() < deadline {
        assert_eq!(device_behind(&by_ca), Ok(other.clone()), "request {n}");
        n += 1;
    }
    eprintln!("{n} requests through the passthrough proxy after the stop, none failed");
}

#[test]
fn tls_reencryption_presents_the_proxys_key_and_checks_every_device() {
    let Some(haproxy) = haproxy("haproxy-tls-reencrypt.cfg") else {
        return;
    };
    let mut fleet = Fleet::start();
    let proxy_key = TestKey::new(0x5f);
    let (proxy_cert, proxy_pin) = proxy_key.certificate();
    let proxy_pem = fleet.dir.path().join("lokey-proxy.pem");
    std::fs::write(&proxy_pem, proxy_cert + &proxy_key.pkcs8_pem()).unwrap();
    let proxy = fleet.behind(
        &haproxy,
        "haproxy-tls-reencrypt.cfg",
        &[("/etc/haproxy/lokey-proxy.pem", &proxy_pem)],
    );
    let lb = proxy.addr;
    let url = format!("https://{lb}");
    let pinned = Remote::new(&url, Trust::Pin(proxy_pin), TIMEOUT).unwrap();
    wait_for(Duration::from_secs(10), "haproxy to answer", || {
        pinned.get("/api/v1/health").is_ok_and(|a| a.status == 200)
    });

    // Clients are shown the proxy's key, and behind it both genuine devices answer in turn;
    // the impostor never does, not even before its health check failed (its certificate
    // fails verification on every connection and the request goes to another device).
    let mut behind = std::collections::BTreeSet::new();
    for _ in 0..12 {
        assert_eq!(served_pin(lb).unwrap(), proxy_pin.to_string());
        behind.insert(fleet.index_of(&device_behind(&pinned).unwrap()));
    }
    assert_eq!(pinned.random_bytes(64, "fortuna").unwrap().len(), 64);
    assert_eq!(
        behind,
        [0, 1].into(),
        "round robin over the genuine devices"
    );
    assert_only_the_impostor_is_down(&proxy);

    // A client machine seeds its kernel pool from the fleet through the proxy, pinned.
    let out = util::lokey_cmd()
        .args(["seed-kernel", "--remote", &url, "--pin"])
        .arg(proxy_pin.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    // pi1 stops: every request is still answered, by pi2.
    assert_eq!(fleet.daemons[0].stop(), Some(0));
    let pi2 = fleet.pins[1].to_string();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut n = 0;
    while Instant::now() < deadline {
        assert_eq!(device_behind(&pinned), Ok(pi2.clone()), "request {n}");
        n += 1;
    }
    eprintln!("{n} requests through the re-encrypting proxy after the stop, none failed");
}
