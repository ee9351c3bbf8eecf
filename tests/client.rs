//! The socket client against scripted daemons: a daemon from before shared streams is asked
//! again in `Data` frames, and a daemon that breaks the ring's rules is an error, not a crash
//! or a wrong stream.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use lokey::client::{Client, Error};
use lokey::proto::{self, DataSource, ErrorCode, Frame, Request};
use lokey::ring::{Ring, send_with_fd};

/// A daemon on a fresh socket that answers each connection in turn with `script`, given the
/// request it read.
fn scripted(
    connections: usize,
    script: impl Fn(usize, Request, &mut UnixStream) + Send + 'static,
) -> (PathBuf, tempfile::TempDir, JoinHandle<()>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lokey.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let daemon = std::thread::spawn(move || {
        for i in 0..connections {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let request = loop {
                if let Some((Frame::Request(r), _)) =
                    Frame::decode(&buf, proto::MAX_REQUEST_LEN).unwrap()
                {
                    break r;
                }
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0, "the client closed before its request");
                buf.extend_from_slice(&chunk[..n]);
            };
            script(i, request, &mut s);
        }
    });
    (path, dir, daemon)
}

fn write(s: &mut UnixStream, frame: Frame) {
    let mut out = Vec::new();
    frame.encode(&mut out);
    s.write_all(&out).unwrap();
}

fn fortuna(path: &Path, count: u64) -> lokey::client::ByteStream {
    Client::connect(path)
        .unwrap()
        .bytes(DataSource::Fortuna, Some(count))
        .unwrap()
}

#[test]
fn a_daemon_that_does_not_know_shared_streams_is_asked_again_in_data_frames() {
    let (path, _dir, daemon) = scripted(2, |i, request, s| {
        let Request::Bytes { shared, count, .. } = request else {
            panic!("{request:?}")
        };
        assert_eq!((i, shared, count), (i, i == 0, Some(5)));
        if i == 0 {
            // What such a daemon answered: serde's error for a field it does not know.
            write(
                s,
                Frame::Error {
                    code: ErrorCode::Malformed,
                    message: "unknown field `shared`, expected `source` or `count`".into(),
                },
            );
        } else {
            write(s, Frame::Data(b"abcde".to_vec()));
            write(s, Frame::End(5));
        }
    });
    let mut stream = fortuna(&path, 5);
    assert_eq!(stream.next_slice().unwrap(), Some(&b"abcde"[..]));
    assert_eq!(stream.next_slice().unwrap(), None);
    assert!(!stream.is_shared());
    daemon.join().unwrap();
}

#[test]
fn a_daemon_that_breaks_the_rings_rules_is_an_error() {
    let ring = Ring::create(2, 4096).unwrap();
    let fd = ring.read_only_fd().unwrap();
    let (path, _dir, daemon) = scripted(3, move |i, _, s| {
        let ring_frame = Frame::Ring {
            slots: 2,
            slot_len: 4096,
        };
        match i {
            // A filled slot before any ring.
            0 => write(s, Frame::Filled { slot: 0, len: 5 }),
            // A ring without its descriptor.
            1 => write(s, ring_frame),
            // A ring, then slot 1 when slot 0 is due.
            _ => {
                let mut out = Vec::new();
                ring_frame.encode(&mut out);
                assert_eq!(
                    send_with_fd(s.as_fd(), &out, fd.as_fd()).unwrap(),
                    out.len()
                );
                write(s, Frame::Filled { slot: 1, len: 5 });
            }
        }
        // Hold the connection until the client has given up.
        let _ = s.read(&mut [0u8; 64]);
    });
    for expected in [
        "a filled slot before the ring",
        "a ring without exactly one descriptor",
        "a filled slot out of turn",
    ] {
        match fortuna(&path, 5).next_slice() {
            Err(Error::Unexpected(what)) => assert_eq!(what, expected),
            other => panic!("{expected}: {other:?}"),
        }
    }
    daemon.join().unwrap();
}
