//! The seed corpus in `tests/corpus/` run through the parsers it is for: socket frames through
//! the frame decoder, configuration files through the loader, chip replies through the driver.
//! (REST requests are run through the router by `daemon/tests/corpus.rs`.) The property tests
//! beside each parser explore around these; this suite pins each file's expected answer, so a
//! parser that starts accepting garbage, or refusing what it should take, fails here by name.
//!
//! Adding a case: drop a file into the right folder and give it an expectation below; a file
//! without one fails the suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use embedded_hal_mock::eh1::delay::NoopDelay;
use lokey::atecc::{Atecc608a, AteccError};
use lokey::config::{Config, HostEnv, Sources};
use lokey::proto::{Frame, MAX_REQUEST_LEN};

use crate::util::Replay;

/// Every file of `tests/corpus/<folder>`, by name.
pub fn corpus(folder: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(folder);
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path: PathBuf = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        files.insert(name, std::fs::read(&path).unwrap());
    }
    assert!(
        files.len() >= 10,
        "{}: the corpus is missing",
        dir.display()
    );
    files
}

/// What decoding a byte stream gave: the frames decoded, then how it ended.
#[derive(Debug, PartialEq)]
enum Decoded {
    /// `n` frames, then nothing left over.
    Frames(usize),
    /// `n` frames, then an incomplete one (the decoder asks for more).
    Incomplete(usize),
    /// `n` frames, then an error.
    Refused(usize),
}

fn decode_all(mut bytes: &[u8]) -> Decoded {
    let mut n = 0;
    loop {
        match Frame::decode(bytes, MAX_REQUEST_LEN) {
            Ok(Some((_, used))) => {
                assert!(
                    used > 0 && used <= bytes.len(),
                    "the decoder used {used} bytes"
                );
                bytes = &bytes[used..];
                n += 1;
                if bytes.is_empty() {
                    return Decoded::Frames(n);
                }
            }
            Ok(None) if bytes.is_empty() => return Decoded::Frames(n),
            Ok(None) => return Decoded::Incomplete(n),
            Err(_) => return Decoded::Refused(n),
        }
    }
}

#[test]
fn socket_frames() {
    use Decoded::*;
    for (name, bytes) in corpus("frames") {
        // The decoder reads framing only; request JSON and versions are judged by the daemon
        // (daemon/tests/socket.rs), so those frames decode here.
        let expected = match name.as_str() {
            "empty.bin" => Frames(0),
            "truncated.bin" => Incomplete(0),
            "two-frames.bin" => Frames(2),
            "oversized-prefix.bin" | "zero-length.bin" | "unknown-kind.bin" | "version-2.bin" => {
                Refused(0)
            }
            "not-json.bin" | "unknown-verb.bin" | "data-frame-from-client.bin" => {
                match decode_all(&bytes) {
                    // A request whose JSON does not parse may be refused by the codec or
                    // handed on; either is an answer, not a panic.
                    other @ (Frames(1) | Refused(0)) => other,
                    other => panic!("{name}: {other:?}"),
                }
            }
            n if n.starts_with("status")
                || n.starts_with("health")
                || n.starts_with("bytes")
                || n.starts_with("config")
                || n.starts_with("device")
                || n.starts_with("fault") =>
            {
                Frames(1)
            }
            other => panic!("{other}: a corpus file without an expectation"),
        };
        assert_eq!(decode_all(&bytes), expected, "{name}");
    }
}

fn load(text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lokeyd.toml");
    std::fs::write(&path, text).unwrap();
    let host = HostEnv::default();
    Config::load(&Sources {
        file: Some((path, true)),
        host,
        flags: vec![],
    })
    .map(|l| l.config)
    .map_err(|e| e.to_string())
}

#[test]
fn configuration_files() {
    for (name, bytes) in corpus("config") {
        let text = String::from_utf8_lossy(&bytes);
        let result = load(&text);
        match name.as_str() {
            "empty.toml" | "full.toml" => {
                result.unwrap_or_else(|e| panic!("{name} refused: {e}"));
            }
            other => {
                let message = result.err().unwrap_or_else(|| panic!("{other} accepted"));
                // One clear message naming the file (design.md §2 invariant 7).
                assert!(message.contains("lokeyd.toml"), "{other}: {message}");
                let names_it = match other {
                    "unknown-key.toml" => message.contains("trng_queue_sise"),
                    "wrong-type.toml" => message.contains("trng_queue_size"),
                    // Too big for TOML itself: the parser names the line and the number.
                    "huge-number.toml" => {
                        message.contains("lokeyd.toml:2:") && message.contains("99999999999")
                    }
                    "out-of-range.toml" => message.contains("bits_per_byte"),
                    "unknown-section.toml" => message.contains("turbo"),
                    // The TOML parser names the line of the second `consume`.
                    "duplicate-key.toml" => message.contains("lokeyd.toml:3:"),
                    "nested-table.toml" => message.contains("extra"),
                    "array-for-scalar.toml" => message.contains("listen"),
                    // `path:line:column: …`
                    "bad-syntax.toml" | "nul-bytes.toml" => {
                        message.contains("lokeyd.toml:1:") || message.contains("lokeyd.toml:2:")
                    }
                    _ => panic!("{other}: a corpus file without an expectation"),
                };
                assert!(
                    names_it,
                    "{other}: the message does not say what: {message}"
                );
            }
        }
    }
}

#[test]
fn chip_replies() {
    for (name, reply) in corpus("chip") {
        let mut chip = Atecc608a::new(Replay::new(&reply), NoopDelay::new());
        let random = chip.random();
        match name.as_str() {
            // The one well-formed Random reply: its 32 bytes, exactly.
            "random-ok.bin" => assert_eq!(
                random.ok().as_ref().map(|b| &b[..]),
                Some(&reply[1..33]),
                "{name}"
            ),
            // The unlocked chip's fixed pattern has a valid count and CRC; the driver knows
            // it and says so (the health tests would refuse it too).
            "unlocked-pattern.bin" => {
                assert!(
                    matches!(random, Err(AteccError::Unlocked)),
                    "{name}: {random:?}"
                );
            }
            "random-bad-crc.bin"
            | "random-short-count.bin"
            | "status-ok.bin"
            | "status-parse-error.bin"
            | "status-execution-error.bin"
            | "status-crc-error.bin"
            | "status-watchdog.bin"
            | "status-after-wake.bin"
            | "count-zero.bin"
            | "count-too-big.bin"
            | "all-ff.bin"
            | "empty.bin"
            | "info-reply.bin" => assert!(random.is_err(), "{name} accepted as random data"),
            other => panic!("{other}: a corpus file without an expectation"),
        }
        // The other parsers see the same reply without panicking.
        let _ = chip.info();
        let _ = chip.lock_state();
    }
}
