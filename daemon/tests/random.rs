//! The generators beyond the Go API: `/api/v1/random/*` against a real daemon. Statistical
//! checks state their false-failure rate.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use util::Daemon;

fn seeded() -> Daemon {
    let d = Daemon::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["fortuna_generator"]["seeded"] != true {
        assert!(
            Instant::now() < deadline,
            "Fortuna not seeded: {}",
            d.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn get(d: &Daemon, path: &str) -> serde_json::Value {
    let (code, body) = d.get(path);
    assert_eq!(code, 200, "{path}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["source"], "fortuna", "{path}");
    v["data"].clone()
}

#[test]
fn integers_are_in_range_unique_when_asked_and_every_face_comes_up() {
    let d = seeded();
    let dice: Vec<i64> =
        serde_json::from_value(get(&d, "/api/v1/random/integers?n=1000&min=1&max=6")).unwrap();
    assert_eq!(dice.len(), 1000);
    assert!(dice.iter().all(|v| (1..=6).contains(v)));
    // Missing a face in 1000 fair rolls: 6 · (5/6)^1000 ≈ 1e-78.
    assert_eq!(dice.iter().collect::<HashSet<_>>().len(), 6);
    let mut perm: Vec<i64> = serde_json::from_value(get(
        &d,
        "/api/v1/random/integers?n=50&min=1&max=50&unique=true",
    ))
    .unwrap();
    perm.sort_unstable();
    assert_eq!(perm, (1..=50).collect::<Vec<_>>());
    let big: Vec<i64> = serde_json::from_value(get(
        &d,
        "/api/v1/random/integers?n=5&min=-9223372036854775808&max=9223372036854775807&unique=1",
    ))
    .unwrap();
    assert_eq!(big.iter().collect::<HashSet<_>>().len(), 5);
}

#[test]
fn fractions_gaussians_strings_and_uuids_have_their_shapes() {
    let d = seeded();
    let fractions: Vec<String> =
        serde_json::from_value(get(&d, "/api/v1/random/decimal-fractions?n=100&places=4")).unwrap();
    assert!(fractions.iter().all(|f| f.len() == 6
        && f.starts_with("0.")
        && f[2..].chars().all(|c| c.is_ascii_digit())));

    let g: Vec<f64> =
        serde_json::from_value(get(&d, "/api/v1/random/gaussians?n=10000&mean=10&stddev=2"))
            .unwrap();
    assert_eq!(g.len(), 10_000);
    let mean = g.iter().sum::<f64>() / g.len() as f64;
    // The sample mean has standard deviation 2/√10000 = 0.02; ±0.1 is 5σ (false failure
    // about 6e-7).
    assert!((mean - 10.0).abs() < 0.1, "mean {mean}");

    let s: Vec<String> =
        serde_json::from_value(get(&d, "/api/v1/random/strings?n=20&length=16&charset=hex"))
            .unwrap();
    assert!(
        s.iter()
            .all(|x| x.len() == 16 && x.chars().all(|c| c.is_ascii_hexdigit()))
    );
    let custom: Vec<String> = serde_json::from_value(get(
        &d,
        "/api/v1/random/strings?n=5&length=40&characters=ab",
    ))
    .unwrap();
    assert!(
        custom
            .iter()
            .all(|x| x.chars().all(|c| c == 'a' || c == 'b'))
    );

    let uuids: Vec<String> = serde_json::from_value(get(&d, "/api/v1/random/uuids?n=100")).unwrap();
    for u in &uuids {
        let b = u.as_bytes();
        assert_eq!(u.len(), 36, "{u}");
        assert_eq!(b[14], b'4', "{u}: version 4");
        assert!(
            matches!(b[19], b'8' | b'9' | b'a' | b'b'),
            "{u}: RFC 9562 variant"
        );
    }
    assert_eq!(uuids.iter().collect::<HashSet<_>>().len(), 100);
}

#[test]
fn shuffle_and_sample_keep_the_items() {
    let d = seeded();
    let items: Vec<i64> = (1..=20).collect();
    let body = serde_json::json!({ "items": items }).to_string();
    let (code, answer) = d.request(
        "POST",
        "/api/v1/random/shuffle",
        &["Content-Type: application/json"],
        &body,
    );
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let mut shuffled: Vec<i64> = serde_json::from_value(v["data"].clone()).unwrap();
    shuffled.sort_unstable();
    assert_eq!(shuffled, items);

    let body = r#"{"items":["a","b","c","d","e"],"k":3}"#;
    let (code, answer) = d.request(
        "POST",
        "/api/v1/random/sample",
        &["Content-Type: application/json"],
        body,
    );
    assert_eq!(code, 200, "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let picked: Vec<String> = serde_json::from_value(v["data"].clone()).unwrap();
    assert_eq!(picked.len(), 3);
    assert_eq!(picked.iter().collect::<HashSet<_>>().len(), 3);
    assert!(
        picked
            .iter()
            .all(|p| ["a", "b", "c", "d", "e"].contains(&p.as_str()))
    );
}

#[test]
fn bad_parameters_are_400s_naming_them() {
    let d = seeded();
    for (path, expected) in [
        ("/api/v1/random/integers?n=5&max=6", "`min` is required"),
        ("/api/v1/random/integers?n=0&min=1&max=6", "`n`"),
        ("/api/v1/random/integers?n=5&min=6&max=1", "min (6)"),
        ("/api/v1/random/integers?n=7&min=1&max=6&unique=true", "6"),
        // A boolean is true, false, 1 or 0; an empty value is none of them (the schema says
        // boolean, and schemathesis found it accepted). The body is JSON: quotes escaped.
        (
            "/api/v1/random/integers?n=2&min=1&max=6&unique=",
            r#"`unique`: \"\" is not true or false"#,
        ),
        (
            "/api/v1/random/integers?n=2&min=1&max=6&unique=yes",
            r#"`unique`: \"yes\" is not true or false"#,
        ),
        (
            "/api/v1/random/integers?n=5&min=1&max=6&source=moon",
            "trng, fortuna",
        ),
        ("/api/v1/random/decimal-fractions?places=20", "`places`"),
        ("/api/v1/random/gaussians?stddev=-1", "deviation"),
        ("/api/v1/random/strings?charset=klingon", "alnum"),
        // Even when `characters` takes its place.
        (
            "/api/v1/random/strings?charset=klingon&characters=ab",
            "alnum",
        ),
        (
            "/api/v1/random/bytes?n=10&encoding=rot13",
            "raw, hex, base64",
        ),
        ("/api/v1/random/bytes", "`n` is required"),
        // A parameter given twice (a list where the schema has one value) is refused, not
        // read as either value.
        (
            "/api/v1/random/bytes?n=4&n=5",
            "`n` is given more than once",
        ),
        (
            "/api/v1/random/bytes?n=4&encoding=raw&encoding=hex",
            "`encoding` is given more than once",
        ),
        (
            "/api/v1/random/integers?n=2&min=1&max=6&max=9",
            "`max` is given more than once",
        ),
        // So is one the endpoint does not take (here a misspelling that would give raw).
        (
            "/api/v1/random/bytes?n=4&Encoding=hex",
            "unknown parameter `Encoding`: this endpoint takes n, source, encoding",
        ),
    ] {
        let (code, body) = d.get(path);
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body.contains(expected), "{path}: {body}");
    }
    let (code, body) = d.request(
        "POST",
        "/api/v1/random/sample",
        &[],
        r#"{"items":[1,2],"k":3}"#,
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("`k`"), "{body}");
}

#[test]
fn bytes_stream_in_every_encoding_and_trng_is_consumed() {
    let d = seeded();
    let (code, head, body) = d.binary("GET", "/api/v1/random/bytes?n=3000000", &[], "");
    assert_eq!(code, 200, "{head}");
    assert_eq!(body.len(), 3_000_000);
    // 3 MB of random bytes have every byte value (a missing one: 256·(255/256)^3e6, nil).
    assert_eq!(body.iter().collect::<HashSet<_>>().len(), 256);
    let (_, _, hex) = d.binary("GET", "/api/v1/random/bytes?n=1000&encoding=hex", &[], "");
    assert_eq!(hex.len(), 2000);
    assert!(hex.iter().all(|c| c.is_ascii_hexdigit()));
    let (_, _, b64) = d.binary(
        "GET",
        "/api/v1/random/bytes?n=1000&encoding=base64",
        &[],
        "",
    );
    assert_eq!(b64.len(), 1336);
    assert!(
        b64.ends_with(b"=="),
        "1000 = 3·333 + 1: two padding characters"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["trng"]["queue_current"].as_u64().unwrap() < 4 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = d.status()["served"]["trng_bytes"].as_u64().unwrap();
    let (code, _, body) = d.binary("GET", "/api/v1/random/bytes?n=100&source=trng", &[], "");
    assert_eq!(code, 200);
    assert_eq!(body.len(), 100);
    assert_eq!(
        d.status()["served"]["trng_bytes"].as_u64().unwrap(),
        before + 100
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// Threads of `pid` named `name` (the stream producer is named `random-bytes`; counting all
/// threads would also count tokio's blocking pool, which grows and shrinks on its own).
fn threads(pid: u32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

/// A 1 GiB stream whose client stops reading: the daemon buffers next to nothing (the
/// producer waits), and when the client hangs up the producer thread ends.
#[test]
fn a_stalled_client_is_not_buffered_for_and_a_closed_one_ends_the_stream() {
    let d = seeded();
    let pid = d.pid();
    assert_eq!(threads(pid, "random-bytes"), 0, "no stream yet");
    let rss_before = rss_kib(pid);
    let mut s = TcpStream::connect(d.addr()).unwrap();
    write!(
        s,
        "GET /api/v1/random/bytes?n=1073741824 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 1 << 20];
    s.read_exact(&mut buf).unwrap();
    // Stall: the socket buffers fill, then the producer must wait.
    std::thread::sleep(Duration::from_millis(1500));
    let rss_stalled = rss_kib(pid);
    assert!(
        rss_stalled < rss_before + 16 * 1024,
        "RSS grew from {rss_before} KiB to {rss_stalled} KiB while the client stalled"
    );
    assert_eq!(threads(pid, "random-bytes"), 1, "one producer thread");
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads(pid, "random-bytes") > 0 {
        assert!(Instant::now() < deadline, "the producer thread did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_unseeded_fortuna_refuses_before_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[hwrng]\nmode = \"off\"\n[chip]\nemulate_faults = [\"bus-gone\"]\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let (code, body) = d.get("/api/v1/random/bytes?n=10");
    assert_eq!(code, 503, "{body}");
    let (code, body) = d.get("/api/v1/random/uuids");
    assert_eq!(code, 503, "{body}");
}

#[test]
fn a_trng_stream_larger_than_the_whole_bucket_is_a_400_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[api]\ntrng_burst_bytes = 1000\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["trng"]["queue_current"].as_u64().unwrap() * 32 < 4000 {
        assert!(Instant::now() < deadline, "no TRNG data: {}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Queued, but more than the client's whole bucket: waiting would not help (this was a
    // 429 whose Retry-After never came true).
    for _ in 0..2 {
        let (code, head, body) =
            d.binary("GET", "/api/v1/random/bytes?n=2000&source=trng", &[], "");
        assert_eq!(code, 400, "{head}");
        assert!(!head.to_ascii_lowercase().contains("retry-after"), "{head}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains("api.trng_burst_bytes = 1000"), "{msg}");
    }
    // The same for a generator: 100 UUIDs need 1600 bytes.
    let (code, body) = d.get("/api/v1/random/uuids?n=100&source=trng");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("api.trng_burst_bytes"), "{body}");
    // The refusals took no tokens.
    let (code, head, body) = d.binary("GET", "/api/v1/random/bytes?n=1000&source=trng", &[], "");
    assert_eq!(code, 200, "{head}");
    assert_eq!(body.len(), 1000);
}

/// The bytes the TRNG queue holds, as the 404 to a request for more tells (binary values are
/// bytes).
fn trng_queued(d: &Daemon) -> u64 {
    let (code, body) = d.request(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"binary","limit":100000,"source":"trng"}"#,
    );
    assert_eq!(code, 404, "the queue holds 100000 bytes or more: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let msg = v["error"].as_str().unwrap();
    // "Not enough data available: 100000 binary values requested, N available from trng; …"
    msg.split(" available from trng")
        .next()
        .and_then(|m| m.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"))
}

/// Consumes `n` TRNG bytes.
fn take_trng(d: &Daemon, n: u64) {
    let (code, _, body) = d.binary(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        &format!(r#"{{"format":"binary","limit":{n},"source":"trng"}}"#),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.len() as u64, n);
}

#[test]
fn trng_streams_and_generators_take_exactly_the_bytes_they_need() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[hwrng]\nmode = \"off\"\n[api]\ntrng_bytes_per_second = 1000000000\n\
         trng_burst_bytes = 1000000000\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["trng"]["queue_current"].as_u64().unwrap() < 4 {
        assert!(Instant::now() < deadline, "no TRNG data: {}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stop the only source, so that the queue holds a known number of bytes.
    let (code, body) = d.request(
        "PUT",
        "/api/v1/admin/faults",
        &["Content-Type: application/json"],
        r#"{"name":"bus-gone","active":true}"#,
    );
    assert_eq!(code, 200, "{body}");
    let mut queued = trng_queued(&d);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = trng_queued(&d);
        if now == queued {
            break;
        }
        queued = now;
    }
    while queued > 56 {
        take_trng(&d, (queued - 56).min(100_000));
        queued = trng_queued(&d);
    }
    assert_eq!(queued, 56, "too little TRNG data to begin with");

    // A short stream takes its 32 bytes, no more (it used to take 64: more than queued, so
    // the stream broke off after its 200).
    let (code, head, body) = d.binary("GET", "/api/v1/random/bytes?n=32&source=trng", &[], "");
    assert_eq!(code, 200, "{head}");
    assert_eq!(body.len(), 32, "{head}");
    assert_eq!(trng_queued(&d), 24);
    // One UUID takes 16 bytes.
    let (code, body) = d.get("/api/v1/random/uuids?n=1&source=trng");
    assert_eq!(code, 200, "{body}");
    assert_eq!(trng_queued(&d), 8);
    take_trng(&d, 8);
    assert_eq!(trng_queued(&d), 0);
}

/// A daemon with a fast second source (`/dev/urandom` as the hwrng) and no trng rate limit,
/// once its queue holds at least `bytes`.
fn with_fast_trng(bytes: u64) -> Daemon {
    let d = Daemon::with_config(
        "[hwrng]\nmode = \"on\"\npath = \"/dev/urandom\"\n[api]\n\
         trng_bytes_per_second = 1000000000\ntrng_burst_bytes = 1000000000\n",
        &[],
    );
    util::within(
        Duration::from_secs(120),
        || d.status()["trng"]["queue_current"].as_u64().unwrap() * 32 >= bytes,
        &format!("{bytes} bytes of TRNG data queued"),
    );
    d
}

#[test]
fn a_non_consuming_trng_stream_reads_on_past_its_first_chunk() {
    // More than one 48 KiB chunk queued.
    let d = with_fast_trng(200_000);
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/consume",
        &["Content-Type: application/json"],
        r#"{"consume":false}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (code, head, stream) =
        d.binary("GET", "/api/v1/random/bytes?n=100000&source=trng", &[], "");
    assert_eq!(code, 200, "{head}");
    assert_eq!(stream.len(), 100_000);
    // Byte 49152 of the stream (its second chunk) is byte 49152 of the queue, not byte 0
    // again.
    let (code, _, at) = d.binary(
        "POST",
        "/api/v1/data",
        &["Content-Type: application/json"],
        r#"{"format":"binary","limit":64,"offset":49152,"source":"trng"}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(&stream[49152..49152 + 64], &at[..]);
    assert_ne!(&stream[49152..49152 + 64], &stream[..64]);
}

/// A trng stream takes all its bytes before its status line, so that no other client can
/// drain the queue under a stream that has already answered 200 (it would break off). The
/// client here reads only the head; with the bytes taken chunk by chunk as the client reads,
/// at most what the socket buffers hold would have been taken by then.
#[test]
fn a_trng_stream_takes_all_its_bytes_before_its_status_line() {
    const N: u64 = 1_000_000;
    let d = with_fast_trng(N + 100_000);
    let consumed = || d.status()["trng"]["consumed_count"].as_u64().unwrap();
    let before = consumed();

    let mut s = TcpStream::connect(d.addr()).unwrap();
    write!(
        s,
        "GET /api/v1/random/bytes?n={N}&source=trng HTTP/1.1\r\nHost: localhost\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    std::thread::sleep(Duration::from_millis(300));
    // 32 bytes an item: every item of the stream is gone from the queue, before one body byte
    // was read.
    assert_eq!(consumed() - before, N / 32, "{head}");

    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert_eq!(body.len() as u64, N);
    assert_eq!(consumed() - before, N / 32);
}
