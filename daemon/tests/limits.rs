//! The limits that keep one REST or socket client from holding the daemon's memory, budget,
//! connections or shutdown, against a real `lokeyd` with small configured limits: the total
//! size of a generator's answer, the trng budget of failed requests, the request timeout, the
//! connection limit and idle timeout, and the write deadline of streams (socket and REST) and
//! the shutdown bound with a client that stopped reading (or, through a shared ring, releasing).

mod util;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use lokey::client::Client;
use lokey::proto::{DataSource, Frame, Request};
use nix::sys::signal::Signal;
use util::Daemon;

fn with_config(toml: &str) -> Daemon {
    Daemon::with_config(toml, &[])
}

fn seeded(d: &Daemon) {
    util::within(
        Duration::from_secs(60),
        || d.status()["fortuna_generator"]["seeded"] == true,
        "Fortuna seeded",
    );
}

fn error(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_string()
}

/// Reads until the peer closes (EOF or reset) or `limit` passes: (bytes read, closed).
fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return (got, true),
        }
    }
    (got, false)
}

#[test]
fn strings_and_decimal_fractions_are_capped_in_total_characters() {
    let d = with_config("");
    for (path, fields) in [
        (
            "/api/v1/random/strings?n=10000&length=4096",
            ["`n`", "`length`"],
        ),
        (
            "/api/v1/random/strings?n=1001&length=1000",
            ["`n`", "`length`"],
        ),
        (
            "/api/v1/random/decimal-fractions?n=100000&places=19",
            ["`n`", "`places`"],
        ),
    ] {
        let (code, body) = d.get(path);
        assert_eq!(code, 400, "{path}: {body}");
        let msg = error(&body);
        for f in fields {
            assert!(msg.contains(f), "{path}: {msg}");
        }
        assert!(msg.contains("1000000"), "{path}: {msg}");
    }
    // Exactly at the limit is served, and the daemon stays small while doing it.
    seeded(&d);
    let (code, body) = d.get("/api/v1/random/strings?n=1000&length=1000");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1000);
    assert!(
        data.iter()
            .all(|s| s.as_str().unwrap().chars().count() == 1000)
    );
    let (code, _) = d.get("/api/v1/random/decimal-fractions?n=100000&places=10");
    assert_eq!(code, 200);
}

#[test]
fn a_failed_trng_request_does_not_use_up_the_clients_budget() {
    // A bucket of 1000 bytes that refills at 1 byte/s: a second request of 800 bytes is a 429
    // unless the first one's tokens came back.
    let d = with_config("[api]\ntrng_burst_bytes = 1000\ntrng_bytes_per_second = 1\n");
    util::within(
        Duration::from_secs(60),
        || d.status()["trng"]["queue_current"].as_u64().unwrap() * 32 >= 2000,
        "2000 trng bytes queued",
    );
    // 100 integers from trng: 800 bytes charged; min > max fails in the generator.
    for i in 0..3 {
        let (code, body) = d.get("/api/v1/random/integers?n=100&min=6&max=1&source=trng");
        assert_eq!(code, 400, "failed request {i}: {body}");
    }
    let (code, body) = d.get("/api/v1/random/integers?n=100&min=1&max=6&source=trng");
    assert_eq!(code, 200, "{body}");
    // Now the bucket is short: the next one waits.
    let (code, body) = d.get("/api/v1/random/integers?n=100&min=1&max=6&source=trng");
    assert_eq!(code, 429, "{body}");
}

/// A POST whose headers promise a body that never comes.
fn stalled_post(d: &Daemon) -> TcpStream {
    let mut s = TcpStream::connect(d.addr()).unwrap();
    write!(
        s,
        "POST /api/v1/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{\"format\""
    )
    .unwrap();
    s
}

#[test]
fn a_request_whose_answer_does_not_start_in_time_is_a_503() {
    let d = with_config("[api]\nrequest_timeout_secs = 1\n");
    let started = Instant::now();
    let mut slow = stalled_post(&d);
    let (answer, _) = read_until_closed(&mut slow, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("took longer than 1 s"), "{answer}");
    assert!(answer.contains("api.request_timeout_secs"), "{answer}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // Other requests are answered meanwhile and afterwards.
    let (code, _) = d.get("/api/v1/config/consume");
    assert_eq!(code, 200);
}

#[test]
fn connections_over_the_limit_are_refused_and_idle_ones_are_closed() {
    let d = with_config("[api]\nmax_connections = 4\nidle_timeout_secs = 2\n");
    // Four connections, each in another idle state: nothing sent, half a request line,
    // half the headers, and a kept-alive one after a complete request.
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(d.addr()).unwrap())
        .collect();
    held[1].write_all(b"GET /api/v1/hea").unwrap();
    held[2]
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    held[3]
        .write_all(b"GET /api/v1/config/consume HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(300));

    // One more: a 503 naming the limit, and closed.
    let mut extra = TcpStream::connect(d.addr()).unwrap();
    let (answer, closed) = read_until_closed(&mut extra, Duration::from_secs(5));
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("api.max_connections"), "{answer}");
    assert!(closed, "the connection over the limit is closed");

    // The idle ones are closed after the idle timeout, not before.
    for (i, s) in held.iter_mut().enumerate() {
        let (got, closed) = read_until_closed(s, Duration::from_secs(10));
        assert!(closed, "idle connection {i} still open after 10 s");
        if i == 3 {
            assert!(
                String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
                "the kept-alive connection had its answer"
            );
        }
    }
    let idle = opened.elapsed();
    assert!(idle >= Duration::from_millis(1900), "closed after {idle:?}");
    assert!(idle < Duration::from_secs(8), "closed after {idle:?}");

    // With the slots free again, new connections are served.
    util::eventually(|| d.get("/api/v1/config/consume").0 == 200, "served again");
    assert!(d.log().contains("refusing new ones"), "{}", d.log());
}

/// Asks the socket for an endless Fortuna stream, in `Data` frames or through a shared ring
/// (`shared`), read from or not, as the test likes (a ring's slots are never released).
fn endless_socket_stream(d: &Daemon, shared: bool) -> UnixStream {
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let mut out = Vec::new();
    Frame::Request(Request::Bytes {
        source: DataSource::Fortuna,
        count: None,
        shared,
    })
    .encode(&mut out);
    s.write_all(&out).unwrap();
    s
}

/// Asks REST for a 1 TiB stream (read from it or not, as the test likes).
fn endless_rest_stream(d: &Daemon) -> TcpStream {
    let mut s = TcpStream::connect(d.addr()).unwrap();
    s.write_all(b"GET /api/v1/random/bytes?n=1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s
}

#[test]
fn a_stream_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let d = with_config("[daemon]\nwrite_timeout_secs = 2\n");
    seeded(&d);
    let started = Instant::now();
    let mut socket = endless_socket_stream(&d, false);
    let mut ring = endless_socket_stream(&d, true);
    let mut rest = endless_rest_stream(&d);
    let ring_given_up = "released no slot of its stream for 2 s";
    util::within(
        Duration::from_secs(15),
        || {
            let log = d.log();
            log.contains("socket client pid")
                && log.contains(ring_given_up)
                && log.contains("REST client 127.0.0.1")
        },
        "the three stalled clients given up",
    );
    assert!(started.elapsed() >= Duration::from_secs(2));
    // What was written before is still readable; then the connections end.
    for socket in [&mut socket, &mut ring] {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match socket.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => assert!(Instant::now() < deadline, "the socket stream goes on"),
            }
        }
    }
    let (_, closed) = read_until_closed(&mut rest, Duration::from_secs(10));
    assert!(closed, "the REST stream goes on");
    // Logged once per connection.
    let log = d.log();
    let given_up = |who: &str| {
        log.lines()
            .filter(|l| l.contains(who) && l.contains("stopped reading: nothing written for 2 s"))
            .count()
    };
    assert_eq!(given_up("socket client pid"), 1, "{log}");
    assert_eq!(given_up("REST client 127.0.0.1"), 1, "{log}");
    let ring_lines: Vec<_> = log.lines().filter(|l| l.contains(ring_given_up)).collect();
    assert_eq!(ring_lines.len(), 1, "{log}");
    assert!(ring_lines[0].contains("socket client pid"), "{log}");
    // The daemon serves on.
    assert_eq!(d.get("/api/v1/health").0, 200);
}

/// Sends SIGTERM and waits up to `limit` for the daemon to exit 0; returns how long it took.
fn sigterm_exits_0(d: &mut Daemon, limit: Duration) -> Duration {
    let t = Instant::now();
    d.signal(Signal::SIGTERM);
    let code = d
        .wait_for_exit(limit)
        .unwrap_or_else(|| panic!("lokeyd did not exit within {limit:?} of SIGTERM"));
    assert_eq!(code, Some(0), "{}", d.log());
    t.elapsed()
}

#[test]
fn sigterm_with_stalled_stream_clients_still_exits_0_within_the_shutdown_bound() {
    // The write timeout is long: only the shutdown bound ends the wait.
    let mut d = with_config("[daemon]\nshutdown_timeout_secs = 2\nwrite_timeout_secs = 3600\n");
    seeded(&d);
    let _socket = endless_socket_stream(&d, false);
    let _ring = endless_socket_stream(&d, true);
    let _rest = endless_rest_stream(&d);
    // Both streams have filled their connection's buffers and are blocked on the client.
    std::thread::sleep(Duration::from_secs(1));
    let took = sigterm_exits_0(&mut d, Duration::from_secs(8));
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(d.log().contains("exiting anyway"), "{}", d.log());
}

#[test]
fn sigterm_ends_streams_whose_clients_read_at_once_and_says_so() {
    // A long bound: only ending the streams makes the exit quick.
    let mut d = with_config("[daemon]\nshutdown_timeout_secs = 30\n");
    seeded(&d);
    let mut rest = endless_rest_stream(&d);
    let mut socket = endless_socket_stream(&d, false);
    let mut ring = Client::connect(d.socket())
        .unwrap()
        .stream(DataSource::Fortuna, None, true)
        .unwrap();
    // The clients read as fast as they can, on their own threads, until the daemon ends.
    let rest_reader =
        std::thread::spawn(move || read_until_closed(&mut rest, Duration::from_secs(20)));
    let socket_reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = socket.read_to_end(&mut got);
        got
    });
    let ring_reader = std::thread::spawn(move || {
        loop {
            match ring.next_slice() {
                Ok(Some(_)) => {}
                Ok(None) => return (ring.is_shared(), None),
                Err(e) => return (ring.is_shared(), Some(e)),
            }
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    let took = sigterm_exits_0(&mut d, Duration::from_secs(20));
    // Before, a REST stream held shutdown for the whole bound.
    assert!(took < Duration::from_secs(3), "{took:?}\n{}", d.log());
    assert!(!d.log().contains("exiting anyway"), "{}", d.log());

    // The REST client saw its stream end early: fewer bytes than its Content-Length.
    let (got, closed) = rest_reader.join().unwrap();
    assert!(closed);
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&got[..split]);
    assert!(head.contains("content-length: 1099511627776"), "{head}");
    assert!(((got.len() - split - 4) as u64) < 1_099_511_627_776);
    // The socket client was told why, in a final error frame.
    let got = socket_reader.join().unwrap();
    let tail = String::from_utf8_lossy(&got[got.len().saturating_sub(200)..]).into_owned();
    assert!(tail.contains("shutting down"), "{tail:?}");
    // So was the client of a shared ring, once it had released its slots.
    let (shared, error) = ring_reader.join().unwrap();
    assert!(shared, "the daemon declined the ring: {}", d.log());
    match error {
        Some(lokey::client::Error::Daemon { code, .. }) => {
            assert_eq!(code, lokey::proto::ErrorCode::ShuttingDown);
        }
        other => panic!("the shared stream ended with {other:?}"),
    }
}

#[test]
fn a_socket_client_that_sends_requests_and_reads_no_answers_is_disconnected() {
    let d = with_config("[daemon]\nwrite_timeout_secs = 2\n");
    let mut s = UnixStream::connect(d.socket()).unwrap();
    let mut one = Vec::new();
    Frame::Request(Request::Status).encode(&mut one);
    // Requests until the daemon, blocked on answers nobody reads, stops taking them (or gives
    // up and closes the connection).
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || while s.write_all(&one).is_ok() {})
    };
    util::within(
        Duration::from_secs(20),
        || d.log().contains("stopped reading: nothing written for 2 s"),
        "the client given up",
    );
    // The connection is closed: the writer stops, and reading ends.
    writer.join().unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => assert!(Instant::now() < deadline, "still open"),
        }
    }
    assert_eq!(d.get("/api/v1/config/consume").0, 200);
}
