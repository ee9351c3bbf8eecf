//! deploy/haproxy.cfg, run on loopback in front of three `lokeyd`: a steady stream of requests
//! through the proxy, one daemon stopped (SIGTERM) mid-run, and not one request may fail.
//!
//! Needs `haproxy` on PATH (or its path in `LOKEY_TEST_HAPROXY`); without it the test prints
//! why it is skipped and passes. CI installs it (.ci/run).

mod util;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use util::Daemon;

/// The haproxy binary, if there is one.
fn haproxy() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("LOKEY_TEST_HAPROXY") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("haproxy"))
            .find(|p| p.is_file())
    })
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

/// deploy/haproxy.cfg with the proxy on `port` and the three servers at `servers`.
fn config_for(port: u16, servers: [SocketAddr; 3]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy.cfg");
    let mut text = std::fs::read_to_string(&path).unwrap();
    let replace = |text: &mut String, from: &str, to: &str| {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{from:?} in {}",
            path.display()
        );
        *text = text.replace(from, to);
    };
    replace(&mut text, "bind :8080", &format!("bind 127.0.0.1:{port}"));
    for (i, addr) in servers.iter().enumerate() {
        let n = i + 1;
        let example = format!("server pi{n} 192.0.2.{}:8080", 10 + n);
        replace(&mut text, &example, &format!("server pi{n} {addr}"));
    }
    text
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn haproxy_keeps_serving_while_one_daemon_stops() {
    let Some(haproxy) = haproxy() else {
        crate::skipped!(
            "skipped: haproxy is not installed (apt-get install haproxy, or set \
             LOKEY_TEST_HAPROXY); this test runs deploy/haproxy.cfg against three lokeyd"
        );
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
    let port = free_port();
    let cfg = dir.path().join("haproxy.cfg");
    let addrs = [daemons[0].addr(), daemons[1].addr(), daemons[2].addr()];
    std::fs::write(&cfg, config_for(port, addrs)).unwrap();
    let check = Command::new(&haproxy)
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(check.status.success(), "haproxy -c: {check:?}");
    let _proxy = Proxy(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let lb: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
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
