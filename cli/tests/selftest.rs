//! `lokey selftest`'s exit status end to end. The real daemon never serves data that fails
//! its health tests, so a stand-in daemon on a temporary socket speaks the protocol and
//! answers the one byte-stream request with what the test chooses: constant bytes (exit 1,
//! the failing summary on stdout) or an error mid-stream (exit 2, the daemon's message on
//! stderr). The passing path, against the real daemon, is in daemon/tests/cli.rs.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output};
use std::thread::JoinHandle;

use lokey::proto::{self, DataSource, ErrorCode, Frame, Request};

/// What the stand-in answers.
enum Answer {
    /// `n` bytes equal to `byte`, in chunks, then the end frame.
    Constant(u8),
    /// Half the bytes asked for, then an error frame.
    ErrorMidway,
}

/// Accepts one connection on `socket`, checks that it asks for `count` bytes of trng, and
/// answers.
fn stand_in(socket: &Path, count: u64, answer: Answer) -> JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = Vec::new();
        let request = loop {
            if let Some((frame, _)) = Frame::decode(&buf, proto::MAX_FRAME_LEN).unwrap() {
                break frame;
            }
            let mut chunk = [0u8; 4096];
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "the client closed before asking");
            buf.extend_from_slice(&chunk[..n]);
        };
        let Frame::Request(Request::Bytes {
            source,
            count: asked,
            // Asked for shared memory or not, the stand-in declines and sends Data frames,
            // as a daemon may.
            ..
        }) = request
        else {
            panic!("unexpected request {request:?}");
        };
        assert_eq!((source, asked), (DataSource::Trng, Some(count)));
        let mut out = Vec::new();
        match answer {
            Answer::Constant(byte) => {
                let mut left = count as usize;
                while left > 0 {
                    let n = left.min(proto::MAX_DATA_CHUNK);
                    Frame::Data(vec![byte; n]).encode(&mut out);
                    left -= n;
                }
                Frame::End(count).encode(&mut out);
            }
            Answer::ErrorMidway => {
                Frame::Data(vec![0x42; count as usize / 2]).encode(&mut out);
                Frame::Error {
                    code: ErrorCode::Unavailable,
                    message: "stand-in: the source went away".into(),
                }
                .encode(&mut out);
            }
        }
        // The client may stop reading once it has its answer.
        let _ = conn.write_all(&out);
    })
}

fn selftest(socket: &Path, size: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lokey"))
        .env_remove("LOKEY_SOCKET")
        .arg("--socket")
        .arg(socket)
        .args(["selftest", "--source", "trng", size])
        .output()
        .unwrap()
}

#[test]
fn failing_data_is_a_negative_answer_with_exit_1_and_the_failing_summary() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stand-in.sock");
    let server = stand_in(&socket, 100_000, Answer::Constant(0));
    let out = selftest(&socket, "100000");
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("tested 100000 bytes from trng"), "{report}");
    assert!(
        report.contains("FIPS 140-2: 0 of 40 blocks passed"),
        "{report}"
    );
    assert_eq!(report.matches("— FAIL").count(), 2, "{report}");
    assert!(!report.contains("PASS"), "{report}");
    // Joined last: a client that never connected must fail the test, not hang it.
    server.join().unwrap();
}

#[test]
fn a_stream_that_ends_in_an_error_is_an_error_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stand-in.sock");
    let server = stand_in(&socket, 10_000, Answer::ErrorMidway);
    let out = selftest(&socket, "10000");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "no verdict on part of the data");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stand-in: the source went away"), "{err}");
    server.join().unwrap();
}
