//! `POST /api/v1/data`: the Go API's requests answered with exactly `limit` values, TRNG
//! bytes consumed durably and never served twice, clear errors that change nothing, and the
//! per-client rate limit on the scarce `trng` source.

mod util;

use std::collections::HashSet;
use std::time::Duration;

use util::Daemon;

const JSON: &str = "Content-Type: application/json";

/// Waits until the TRNG queue holds at least `bytes` bytes (hardware rates are ~1 kB/s, so
/// tests ask for little).
fn wait_for_trng(d: &Daemon, bytes: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while d.status()["trng"]["queue_current"].as_u64().unwrap_or(0) * 32 < bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "the TRNG queue did not reach {bytes} bytes: {}",
            d.status()["sources"]
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Turns consumption on or off (`PUT /api/v1/config/consume`).
fn set_consume(d: &Daemon, consume: bool) {
    let (code, body) = d.request(
        "PUT",
        "/api/v1/config/consume",
        &[JSON],
        &format!(r#"{{"consume":{consume}}}"#),
    );
    assert_eq!(code, 200, "{body}");
}

fn post(d: &Daemon, body: &str) -> (u16, String, Vec<u8>) {
    d.binary("POST", "/api/v1/data", &[JSON], body)
}

#[test]
fn every_format_gives_exactly_limit_big_endian_values() {
    let d = Daemon::start(&[]);
    wait_for_trng(&d, 4 * 100 * 15 + 1024);
    let formats = [
        ("int8", -128i128, 127i128),
        ("uint8", 0, 255),
        ("int16", -32768, 32767),
        ("uint16", 0, 65535),
        ("int32", i32::MIN as i128, i32::MAX as i128),
        ("uint32", 0, u32::MAX as i128),
        ("int64", i64::MIN as i128, i64::MAX as i128),
        ("uint64", 0, u64::MAX as i128),
    ];
    for (format, min, max) in formats {
        let (code, head, body) = post(
            &d,
            &format!(r#"{{"format":"{format}","limit":100,"source":"trng","chunk_size":7}}"#),
        );
        assert_eq!(code, 200, "{format}: {}", String::from_utf8_lossy(&body));
        assert!(head.contains("application/json"), "{head}");
        // Parse as i128 so that full 64-bit values are checked, not floats.
        let text = String::from_utf8(body).unwrap();
        let values: Vec<i128> = text
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(values.len(), 100, "{format}");
        assert!(values.iter().all(|v| (min..=max).contains(v)), "{format}");
        // 100 random values of 16 bits or more are not all equal (chance 2^-1584).
        if format.ends_with("16") || format.ends_with("32") || format.ends_with("64") {
            assert!(values.iter().any(|v| *v != values[0]), "{format}");
        }
    }
    let (code, head, body) = post(&d, r#"{"format":"binary","limit":1024,"source":"trng"}"#);
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/octet-stream"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-disposition: attachment; filename=random.bin"),
        "{head}"
    );
    assert_eq!(body.len(), 1024);
}

#[test]
fn too_little_trng_data_is_a_404_that_says_how_much_there_is_and_takes_nothing() {
    let d = Daemon::start(&[]);
    wait_for_trng(&d, 64);
    let before = d.status()["trng"]["consumed_count"].as_u64().unwrap();
    // Far more than the queue can hold (capacity 100000 items of 32 bytes).
    let (code, _, body) = post(
        &d,
        r#"{"format":"uint64","limit":1000,"offset":5000000,"source":"trng"}"#,
    );
    assert_eq!(code, 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let msg = v["error"].as_str().unwrap();
    assert!(msg.starts_with("Not enough data available"), "{msg}");
    assert!(msg.contains("1000 uint64 values requested"), "{msg}");
    assert_eq!(
        d.status()["trng"]["consumed_count"].as_u64().unwrap(),
        before
    );
}

#[test]
fn bad_requests_name_the_field_and_change_nothing() {
    let d = Daemon::start(&[]);
    let cases = [
        ("not json", "not valid JSON"),
        ("[1,2]", "JSON object"),
        (
            r#"{"limit":10,"source":"trng"}"#,
            "field `format` is required",
        ),
        (
            r#"{"format":"int128","limit":10,"source":"trng"}"#,
            "int128",
        ),
        (r#"{"format":"int8","limit":0,"source":"trng"}"#, "limit"),
        (
            r#"{"format":"int8","limit":100001,"source":"trng"}"#,
            "limit",
        ),
        (r#"{"format":"int8","limit":"10","source":"trng"}"#, "limit"),
        (
            r#"{"format":"int8","limit":10,"source":"moon"}"#,
            "trng, fortuna",
        ),
        (
            r#"{"format":"int8","limit":10}"#,
            "field `source` is required",
        ),
        (
            r#"{"format":"int8","limit":10,"offset":-1,"source":"trng"}"#,
            "offset",
        ),
    ];
    for (body, expected) in cases {
        let (code, _, answer) = post(&d, body);
        assert_eq!(code, 400, "{body}");
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(expected), "{body}: {msg}");
    }
    assert_eq!(d.status()["trng"]["consumed_count"], 0);
}

#[test]
fn many_clients_draining_trng_at_once_never_get_the_same_bytes() {
    let d = std::sync::Arc::new(Daemon::start(&[]));
    wait_for_trng(&d, 32 * 8 * 20);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let d = d.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| {
                        let (code, _, body) =
                            post(&d, r#"{"format":"binary","limit":32,"source":"trng"}"#);
                        assert_eq!(code, 200);
                        body
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for t in threads {
        for body in t.join().unwrap() {
            assert_eq!(body.len(), 32);
            // Any 16-byte piece served twice would be a repeat (chance ~2^-110 otherwise).
            for piece in body.chunks(16) {
                assert!(seen.insert(piece.to_vec()), "bytes served twice");
            }
        }
    }
    assert_eq!(seen.len(), 8 * 20 * 2);
}

#[test]
fn the_non_consuming_mode_serves_the_same_bytes_again() {
    let d = Daemon::start(&[]);
    wait_for_trng(&d, 256);
    set_consume(&d, false);
    let req = r#"{"format":"binary","limit":32,"offset":2,"source":"trng"}"#;
    let (_, _, a) = post(&d, req);
    let (_, _, b) = post(&d, req);
    assert_eq!(a.len(), 32);
    assert_eq!(a, b);
    set_consume(&d, true);
    let (_, _, c) = post(&d, req);
    let (_, _, e) = post(&d, req);
    assert_eq!(c, a, "the first consuming read takes the same bytes");
    assert_ne!(e, c, "and they are gone afterwards");
}

#[test]
fn the_trng_rate_limit_answers_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[api]\ntrng_bytes_per_second = 10\ntrng_burst_bytes = 100\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for_trng(&d, 200);
    let req = r#"{"format":"binary","limit":64,"source":"trng"}"#;
    assert_eq!(post(&d, req).0, 200);
    let (code, head, _) = post(&d, req);
    assert_eq!(code, 429, "{head}");
    // 28 bytes missing at 10 bytes/s: 3 seconds.
    assert!(
        head.to_ascii_lowercase().contains("retry-after: 3"),
        "{head}"
    );
    // Fortuna is not limited.
    assert_ne!(
        post(&d, r#"{"format":"binary","limit":64,"source":"fortuna"}"#).0,
        429
    );
}

/// Waits until Fortuna has been seeded.
fn wait_for_fortuna(d: &Daemon) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while d.status()["fortuna_generator"]["seeded"] != true {
        assert!(
            std::time::Instant::now() < deadline,
            "Fortuna was not seeded: {}",
            d.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A configuration without a working source (the emulated chip's bus is gone, no hwrng),
/// for the tests that need Fortuna unfed.
fn no_sources(dir: &std::path::Path) -> std::path::PathBuf {
    let conf = dir.join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[hwrng]\nmode = \"off\"\n[chip]\nemulate_faults = [\"bus-gone\"]\n",
    )
    .unwrap();
    conf
}

#[test]
fn fortuna_serves_exactly_limit_values_once_seeded_and_is_not_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(
        &conf,
        "[api]\ntrng_bytes_per_second = 1\ntrng_burst_bytes = 1\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for_fortuna(&d);
    for _ in 0..3 {
        let (code, _, body) = post(&d, r#"{"format":"uint32","limit":1000,"source":"fortuna"}"#);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let values: Vec<u64> = serde_json::from_slice(&body).unwrap();
        assert_eq!(values.len(), 1000);
        assert!(values.iter().all(|v| *v <= u32::MAX as u64));
    }
    let (code, _, body) = post(
        &d,
        r#"{"format":"binary","limit":100000,"source":"fortuna"}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(body.len(), 100_000);
    let health = d.get("/api/v1/health");
    let v: serde_json::Value = serde_json::from_str(&health.1).unwrap();
    assert_eq!(v["details"]["fortuna"], true, "{v}");
}

#[test]
fn fortuna_cipher_setting_picks_the_generator_and_status_names_it() {
    use lokey::fortuna::{Backend, Cipher};
    // Default (auto): AES-256 where the CPU has AES instructions, on production's path.
    let d = Daemon::start(&[]);
    let f = &d.status()["fortuna_generator"];
    assert_eq!(f["cipher"], Cipher::auto().name(), "{f}");
    assert_eq!(
        f["backend"],
        Backend::best(Cipher::auto()).describe(),
        "{f}"
    );
    drop(d);

    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[fortuna]\ncipher = \"chacha20\"\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for_fortuna(&d);
    let f = &d.status()["fortuna_generator"];
    assert_eq!(f["cipher"], "chacha20", "{f}");
    assert!(
        f["backend"].as_str().unwrap().starts_with("ChaCha20 "),
        "{f}"
    );
    let (code, _, body) = post(
        &d,
        r#"{"format":"binary","limit":100000,"source":"fortuna"}"#,
    );
    assert_eq!(code, 200);
    assert_eq!(body.len(), 100_000);
    assert!(body.iter().any(|&b| b != body[0]));
}

#[test]
fn an_unseeded_fortuna_serves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let conf = no_sources(dir.path());
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    // Long enough for a working chip to have seeded it (start-up test and two pool-0 events:
    // about 2 s at datasheet timing).
    std::thread::sleep(Duration::from_secs(3));
    let (code, _, body) = post(&d, r#"{"format":"binary","limit":16,"source":"fortuna"}"#);
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"].as_str().unwrap().contains("not seeded"), "{v}");
    assert_eq!(d.status()["fortuna_generator"]["seeded"], false);
    let (code, body) = d.get("/api/v1/health");
    assert_eq!(code, 503, "{body}");
}

#[test]
fn the_seed_file_makes_fortuna_usable_at_once_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("lokey.sock");
    let mut d = Daemon::start_with_socket(&[], dir.path(), &socket);
    wait_for_fortuna(&d);
    assert_eq!(d.stop(), Some(0), "SIGTERM writes the seed file");

    // No hardware now: only the seed file can have seeded it.
    let conf = no_sources(dir.path());
    let d = Daemon::start_with_socket(&["--config", conf.to_str().unwrap()], dir.path(), &socket);
    let status = d.status();
    assert_eq!(status["fortuna_generator"]["seeded"], true, "{status}");
    assert_eq!(status["fortuna_generator"]["reseed_count"], 0);
    let (code, _, first) = post(&d, r#"{"format":"binary","limit":64,"source":"fortuna"}"#);
    assert_eq!(code, 200);
    drop(d);

    // Killed without a clean shutdown: the seed file was replaced at start, so the next
    // start does not produce the same output again.
    let d = Daemon::start_with_socket(&["--config", conf.to_str().unwrap()], dir.path(), &socket);
    let (code, _, second) = post(&d, r#"{"format":"binary","limit":64,"source":"fortuna"}"#);
    assert_eq!(code, 200);
    assert_ne!(first, second, "a seed file must never be used twice");
}

#[test]
fn a_trng_request_larger_than_the_whole_bucket_is_a_400_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[api]\ntrng_burst_bytes = 1000\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    wait_for_trng(&d, 4000);
    // 200 uint64 values are 1600 bytes: queued, but more than the client's whole bucket, so
    // no wait would help (this was a 429 whose Retry-After never came true).
    for _ in 0..2 {
        let (code, head, body) = post(&d, r#"{"format":"uint64","limit":200,"source":"trng"}"#);
        assert_eq!(code, 400, "{head}");
        assert!(!head.to_ascii_lowercase().contains("retry-after"), "{head}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("api.trng_burst_bytes = 1000") && msg.contains("1600"),
            "{msg}"
        );
    }
    assert_eq!(d.status()["trng"]["consumed_count"], 0);
    // The refusals took no tokens: a full bucket's worth still passes.
    let (code, _, body) = post(&d, r#"{"format":"binary","limit":1000,"source":"trng"}"#);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body.len(), 1000);
}

/// Parses a JSON array of integers exactly (as i128, so that 64-bit values are not rounded).
fn integers(body: &[u8]) -> Vec<i128> {
    let text = std::str::from_utf8(body).unwrap();
    text.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect()
}

#[test]
fn offset_counts_values_not_bytes() {
    let d = Daemon::start(&[]);
    wait_for_trng(&d, 256);
    // Without consumption the head of the queue stays put, so every request below reads
    // the same known bytes.
    set_consume(&d, false);
    let (code, _, head) = post(&d, r#"{"format":"binary","limit":64,"source":"trng"}"#);
    assert_eq!(code, 200);
    assert_eq!(head.len(), 64);
    let be = |bytes: &[u8]| bytes.iter().fold(0i128, |acc, b| acc << 8 | i128::from(*b));
    for (format, width, offset, limit) in [
        ("uint32", 4, 2, 4),
        ("uint64", 8, 3, 2),
        ("uint16", 2, 5, 3),
    ] {
        let (code, _, body) = post(
            &d,
            &format!(
                r#"{{"format":"{format}","limit":{limit},"offset":{offset},"source":"trng"}}"#
            ),
        );
        assert_eq!(code, 200, "{format}: {}", String::from_utf8_lossy(&body));
        // Value i of the answer is value offset + i of the queue, bytes
        // (offset + i) · width onwards; a byte offset would start at byte `offset`.
        let expected: Vec<i128> = head[offset * width..(offset + limit) * width]
            .chunks(width)
            .map(be)
            .collect();
        assert_eq!(integers(&body), expected, "{format} offset {offset}");
    }
    // A signed format: the same bytes, read as two's complement.
    let (_, _, body) = post(
        &d,
        r#"{"format":"int8","limit":4,"offset":7,"source":"trng"}"#,
    );
    let expected: Vec<i128> = head[7..11].iter().map(|b| i128::from(*b as i8)).collect();
    assert_eq!(integers(&body), expected);
}

#[test]
fn the_seed_readme_request_works_as_written() {
    let d = Daemon::start(&[]);
    wait_for_fortuna(&d);
    // The Go project's README, verbatim (`chunk_size` is not a field of the API: ignored).
    let (code, head, body) = post(
        &d,
        r#"{"format":"int32","chunk_size":32,"limit":10,"offset":0,"source":"fortuna"}"#,
    );
    assert_eq!(code, 200, "{head}\n{}", String::from_utf8_lossy(&body));
    assert!(head.contains("application/json"), "{head}");
    let values = integers(&body);
    assert_eq!(values.len(), 10, "{values:?}");
    assert!(
        values
            .iter()
            .all(|v| (i128::from(i32::MIN)..=i128::from(i32::MAX)).contains(v)),
        "{values:?}"
    );
    // Ten random 32-bit values are not all equal (chance 2^-288).
    assert!(values.iter().any(|v| *v != values[0]), "{values:?}");
}
