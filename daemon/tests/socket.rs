//! The socket protocol against a real `lokeyd`, spoken raw: every kind of bad frame gets an
//! `Error` frame with its stable code and the connection is closed, while another client on
//! the same daemon streams on undisturbed; a stalled frame times out, an idle connection does
//! not; connections over the limit are turned away with `Busy`. Streams through a shared ring
//! keep its rules: only released slots are filled, the end waits for every release, a release
//! out of turn closes the connection.

mod util;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, OwnedFd};

use lokey::client::Client;
use lokey::proto::{DataSource, Frame, Request};
use lokey::ring::{Ring, recv_with_fds};
use lokeyd::socket::{FRAME_TIMEOUT, MAX_CONNECTIONS};
use util::{Daemon, lokey};

// The numbers on the wire, written out: they are part of the protocol and never change.
const MALFORMED: u16 = 1;
const UNSUPPORTED_VERSION: u16 = 2;
const TOO_LARGE: u16 = 3;
const TIMED_OUT: u16 = 10;
const BUSY: u16 = 11;

fn seeded() -> Daemon {
    let d = Daemon::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["fortuna_generator"]["seeded"] != true {
        assert!(Instant::now() < deadline, "not seeded: {}", d.status());
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn raw(d: &Daemon) -> UnixStream {
    let s = UnixStream::connect(d.socket()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn request(req: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::Request(req.clone()).encode(&mut out);
    out
}

/// Reads one frame as it is on the wire: (version, kind, body).
fn read_raw_frame(s: &mut UnixStream) -> io::Result<(u8, u8, Vec<u8>)> {
    let mut prefix = [0u8; 4];
    s.read_exact(&mut prefix)?;
    let len = u32::from_be_bytes(prefix) as usize;
    assert!((2..=1 << 21).contains(&len), "length {len}");
    let mut rest = vec![0u8; len];
    s.read_exact(&mut rest)?;
    Ok((rest[0], rest[1], rest[2..].to_vec()))
}

/// The connection is closed by the daemon: end of file, or a reset when the daemon closed it
/// with bytes of ours unread.
fn assert_closed(s: &mut UnixStream, what: &str) {
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: the connection is still open: {other:?}"),
    }
}

/// Reads an `Error` frame with `code` (as numbered on the wire), then the end of the
/// connection; returns the message.
fn expect_error(s: &mut UnixStream, code: u16, what: &str) -> String {
    let (version, kind, body) =
        read_raw_frame(s).unwrap_or_else(|e| panic!("{what}: no error frame: {e}"));
    assert_eq!((version, kind), (1, 5), "{what}: not an error frame");
    let got = u16::from_be_bytes([body[0], body[1]]);
    let message = String::from_utf8_lossy(&body[2..]).into_owned();
    assert_eq!(got, code, "{what}: {message}");
    assert!(!message.is_empty(), "{what}: an error without a message");
    assert_closed(s, what);
    message
}

/// Sends `bytes` (a write error is fine: the daemon may close before reading them all) and,
/// with `eof`, closes our side for writing.
fn send(d: &Daemon, bytes: &[u8], eof: bool) -> UnixStream {
    let mut s = raw(d);
    let _ = s.write_all(bytes);
    if eof {
        let _ = s.shutdown(Shutdown::Write);
    }
    s
}

#[test]
fn bad_frames_get_their_error_code_and_close_while_another_client_streams() {
    let mut d = seeded();

    // An endless Fortuna stream, read for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let streamer = {
        let (stop, received, socket) = (stop.clone(), received.clone(), d.socket().to_owned());
        std::thread::spawn(move || -> Result<(), lokey::client::Error> {
            let mut stream = Client::connect(&socket)?.bytes(DataSource::Fortuna, None)?;
            let mut chunk = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                assert!(stream.next_chunk(&mut chunk)?, "the endless stream ended");
                received.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    util::eventually(
        || received.load(Ordering::Relaxed) > 1 << 20,
        "the stream flows",
    );

    let status = request(&Request::Status);
    let mut other_version = status.clone();
    other_version[4] = 2;
    let body = |json: &[u8]| {
        let mut v = ((json.len() + 2) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&[1, 1]);
        v.extend_from_slice(json);
        v
    };
    let mut response_kind = Vec::new();
    Frame::Response(serde_json::json!({"ok": true})).encode(&mut response_kind);
    let max = lokey::proto::MAX_REQUEST_LEN;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        // (a) Oversized length prefixes: refused from the prefix alone.
        ("length u32::MAX", vec![0xff; 4], TOO_LARGE),
        (
            "one byte over the limit",
            (max + 1).to_be_bytes().to_vec(),
            TOO_LARGE,
        ),
        // (b) Garbage.
        (
            "HTTP at a socket",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            TOO_LARGE,
        ),
        ("empty frame", vec![0, 0, 0, 0], MALFORMED),
        ("no kind", vec![0, 0, 0, 1, 1], MALFORMED),
        ("unknown kind", vec![0, 0, 0, 2, 1, 0x7f], MALFORMED),
        ("not JSON", body(b"\xff\xfe not json at all"), MALFORMED),
        ("JSON of the wrong shape", body(b"[1, 2, 3]"), MALFORMED),
        // (d) Well-formed frames the daemon does not speak.
        ("unknown verb", body(br#"{"verb":"dance"}"#), MALFORMED),
        (
            "unknown field",
            body(br#"{"verb":"status","x":1}"#),
            MALFORMED,
        ),
        (
            "unknown source",
            body(br#"{"verb":"bytes","source":"moon"}"#),
            MALFORMED,
        ),
        ("version 2", other_version, UNSUPPORTED_VERSION),
        ("a response from the client", response_kind, MALFORMED),
    ];
    for (what, bytes, code) in &cases {
        let mut s = send(&d, bytes, false);
        expect_error(&mut s, *code, what);
    }
    // Bad frames after a good one: the good one is answered, then the error, then the end.
    let mut pipelined = status.clone();
    pipelined.extend_from_slice(&[0, 0, 0, 2, 1, 0x7f]);
    let mut s = send(&d, &pipelined, false);
    let (_, kind, _) = read_raw_frame(&mut s).unwrap();
    assert_eq!(kind, 2, "the status request is answered");
    expect_error(&mut s, MALFORMED, "bad frame after a good one");

    // (c) Truncated frames, then the end of input: the half-closed connection is still
    // writable, so the daemon says so before closing.
    for cut in [1, 3, 4, 5, 6, status.len() - 1] {
        let mut s = send(&d, &status[..cut], true);
        let msg = expect_error(&mut s, MALFORMED, &format!("cut after {cut} bytes"));
        assert!(msg.contains("truncated"), "{msg}");
    }
    // A connection dropped mid-frame without reading anything: nothing to answer, no harm.
    for cut in [2, 10] {
        drop(send(&d, &status[..cut], false));
    }

    // The stream went on through all of that.
    let before = received.load(Ordering::Relaxed);
    util::eventually(
        || received.load(Ordering::Relaxed) > before + (1 << 20),
        "the stream still flows after the bad clients",
    );
    stop.store(true, Ordering::Relaxed);
    streamer
        .join()
        .unwrap()
        .expect("the stream failed while other clients sent bad frames");

    // The daemon is alive, answers and is healthy, and nothing panicked.
    assert!(d.try_wait().is_none(), "lokeyd exited:\n{}", d.log());
    let mut c = Client::connect(d.socket()).unwrap();
    assert!(c.call(&Request::Status).unwrap()["daemon"]["pid"].is_u64());
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.call(&Request::Health).unwrap()["status"] != "ok" {
        assert!(Instant::now() < deadline, "not healthy: {}", d.status());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(d.get("/api/v1/health").0, 200);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn a_stalled_frame_times_out_and_an_idle_connection_does_not() {
    let d = Daemon::start(&[]);
    let status = request(&Request::Status);
    let limit = FRAME_TIMEOUT;
    let started = Instant::now();

    // Idle between frames: one request answered, then nothing for longer than the limit.
    let mut idle = Client::connect(d.socket()).unwrap();
    idle.call(&Request::Status).unwrap();
    // Nothing sent at all.
    let mut silent = raw(&d);
    // Half a frame, then nothing.
    let mut half = send(&d, &status[..status.len() / 2], false);
    // The frame a byte a second: still whole only long after the limit, so trickling does
    // not extend it.
    let mut trickle = raw(&d);
    let trickler = {
        let mut w = trickle.try_clone().unwrap();
        let frame = status.clone();
        std::thread::spawn(move || {
            for b in frame {
                if w.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    let msg = expect_error(&mut half, TIMED_OUT, "half a frame");
    let waited = started.elapsed();
    assert!(msg.contains("incomplete frame"), "{msg}");
    assert!(
        waited >= limit && waited < limit + Duration::from_secs(5),
        "half a frame was dropped after {waited:?}"
    );
    expect_error(&mut trickle, TIMED_OUT, "a frame trickled in");
    let waited = started.elapsed();
    assert!(
        waited < limit + Duration::from_secs(5),
        "the trickled frame was dropped after {waited:?}"
    );
    trickler.join().unwrap();

    // The idle connections are still served.
    assert!(idle.call(&Request::Status).unwrap()["daemon"]["pid"].is_u64());
    silent.write_all(&status).unwrap();
    let (_, kind, _) = read_raw_frame(&mut silent).unwrap();
    assert_eq!(kind, 2);
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn connections_over_the_limit_are_refused_with_busy() {
    let d = Daemon::start(&[]);
    // Every one of these is being served (each has had an answer), then stays idle.
    let mut held: Vec<Client> = (0..MAX_CONNECTIONS)
        .map(|i| {
            let mut c = Client::connect(d.socket()).unwrap();
            c.call(&Request::Status)
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            c
        })
        .collect();

    // One more: told why, and closed.
    let mut extra = raw(&d);
    let msg = expect_error(&mut extra, BUSY, "a connection over the limit");
    assert!(msg.contains(&MAX_CONNECTIONS.to_string()), "{msg}");
    // The same through the CLI: exit 2 and the daemon's reason.
    let out = lokey(&d, &["status"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limit of"), "{err}");
    // The held connections are unaffected.
    assert!(held[0].call(&Request::Status).is_ok());

    // A slot freed is a slot taken again.
    held.pop();
    util::eventually(
        || {
            Client::connect(d.socket())
                .and_then(|mut c| c.call(&Request::Status))
                .is_ok()
        },
        "a connection is accepted once one closed",
    );
    assert!(d.log().contains("refusing new ones"), "{}", d.log());
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

/// Bytes of one chunk: a `Data` frame's body, or a ring's slot.
const CHUNK: usize = lokey::proto::MAX_DATA_CHUNK;

/// Reads the next frame of a raw connection, keeping descriptors that arrive beside it.
fn next_frame(s: &UnixStream, buf: &mut Vec<u8>, fds: &mut Vec<OwnedFd>) -> io::Result<Frame> {
    loop {
        if let Some((frame, used)) = Frame::decode(buf, lokey::proto::MAX_FRAME_LEN).unwrap() {
            buf.drain(..used);
            return Ok(frame);
        }
        let mut chunk = [0u8; 4096];
        match recv_with_fds(s.as_fd(), &mut chunk, fds)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Nothing arrives for a while: the daemon is waiting for us.
fn assert_quiet(s: &UnixStream, buf: &mut Vec<u8>, fds: &mut Vec<OwnedFd>, what: &str) {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    match next_frame(s, buf, fds) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("{what}: {other:?}"),
    }
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
}

fn release(s: &mut UnixStream, slot: u32) {
    let mut out = Vec::new();
    Frame::Release { slot }.encode(&mut out);
    s.write_all(&out).unwrap();
}

#[test]
fn a_shared_stream_fills_only_released_slots_and_ends_with_none_in_flight() {
    let d = seeded();
    let mut s = raw(&d);
    let (mut buf, mut fds) = (Vec::new(), Vec::new());
    // Whatever the daemon's slot length, this is several rounds of the ring and a short end.
    let count = 4 * CHUNK + 10;
    s.write_all(&request(&Request::Bytes {
        source: DataSource::Fortuna,
        count: Some(count as u64),
        shared: true,
    }))
    .unwrap();
    let Frame::Ring { slots, slot_len } = next_frame(&s, &mut buf, &mut fds).unwrap() else {
        panic!("no ring")
    };
    assert!(
        slots >= 2 && (4096..=CHUNK as u32).contains(&slot_len),
        "{slots} × {slot_len}"
    );
    assert_eq!(
        fds.len(),
        1,
        "the ring's descriptor did not come with its frame"
    );
    let ring = Ring::open(fds.pop().unwrap(), slots, slot_len).unwrap();
    let slot_len = slot_len as usize;

    let filled = |s: &UnixStream, buf: &mut Vec<u8>, fds: &mut Vec<OwnedFd>, sent: &mut usize| {
        let Frame::Filled { slot, len } = next_frame(s, buf, fds).unwrap() else {
            panic!("expected a filled slot")
        };
        // Whole slots, in turn, until the short end.
        assert_eq!(slot as usize, (*sent / slot_len) % slots as usize);
        assert_eq!(len as usize, slot_len.min(count - *sent));
        // Random bytes: a 4 KiB page of zeros (the memfd's initial content, or a slot handed
        // back unfilled) means a slot was announced but not filled. False-failure rate
        // 2^-32768 per page (the short last page: 2^-80).
        for page in ring.slot(slot)[..len as usize].chunks(4096) {
            assert!(
                page.iter().any(|&b| b != 0),
                "an unfilled page in slot {slot}"
            );
        }
        *sent += len as usize;
        slot
    };
    // Every slot is filled, then the daemon waits for a release.
    let mut sent = 0;
    for _ in 0..slots {
        filled(&s, &mut buf, &mut fds, &mut sent);
    }
    assert_quiet(
        &s,
        &mut buf,
        &mut fds,
        "a slot was filled before its release",
    );
    let first = ring.slot(0).to_vec();
    let mut oldest = 0;
    while sent < count {
        release(&mut s, oldest);
        let slot = filled(&s, &mut buf, &mut fds, &mut sent);
        assert_eq!(slot, oldest, "not the released slot");
        if slot == 0 && sent <= slots as usize * slot_len + slot_len {
            assert_ne!(ring.slot(0), &first[..], "slot 0 was not filled anew");
        }
        oldest = (oldest + 1) % slots;
        assert_quiet(
            &s,
            &mut buf,
            &mut fds,
            "a slot was filled before its release",
        );
    }
    // The end waits for every slot in flight.
    for _ in 0..slots {
        assert_quiet(
            &s,
            &mut buf,
            &mut fds,
            "the stream ended with slots in flight",
        );
        release(&mut s, oldest);
        oldest = (oldest + 1) % slots;
    }
    assert_eq!(
        next_frame(&s, &mut buf, &mut fds).unwrap(),
        Frame::End(count as u64)
    );
    // The connection takes the next request.
    s.write_all(&request(&Request::Health)).unwrap();
    assert!(matches!(
        next_frame(&s, &mut buf, &mut fds).unwrap(),
        Frame::Response(_)
    ));
    assert!(fds.is_empty(), "descriptors beside other frames: {fds:?}");
}

#[test]
fn a_release_out_of_turn_is_malformed_and_closes_the_connection() {
    let d = seeded();
    let mut s = raw(&d);
    let (mut buf, mut fds) = (Vec::new(), Vec::new());
    s.write_all(&request(&Request::Bytes {
        source: DataSource::Fortuna,
        count: None,
        shared: true,
    }))
    .unwrap();
    assert!(matches!(
        next_frame(&s, &mut buf, &mut fds).unwrap(),
        Frame::Ring { .. }
    ));
    release(&mut s, 1);
    loop {
        match next_frame(&s, &mut buf, &mut fds).unwrap() {
            Frame::Filled { .. } => {}
            Frame::Error { code, message } => {
                assert_eq!(code as u16, MALFORMED, "{message}");
                assert!(
                    message.contains("released slot 1, but the oldest filled slot is 0"),
                    "{message}"
                );
                break;
            }
            other => panic!("{other:?}"),
        }
    }
    assert_closed(&mut s, "after a release out of turn");
}

#[test]
fn shared_and_framed_streams_deliver_exact_counts_of_fresh_bytes() {
    let d = seeded();
    for shared in [true, false] {
        for count in [1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7] {
            let mut stream = Client::connect(d.socket())
                .unwrap()
                .stream(DataSource::Fortuna, Some(count as u64), shared)
                .unwrap();
            let mut chunks = Vec::new();
            while let Some(chunk) = stream.next_slice().unwrap() {
                chunks.push(chunk.to_vec());
            }
            assert_eq!(stream.is_shared(), shared, "count {count}");
            assert_eq!(
                chunks.iter().map(Vec::len).sum::<usize>(),
                count,
                "shared {shared}"
            );
            // No chunk repeats another (a slot handed out twice without being filled anew);
            // two identical chunks of at least 4 KiB of random bytes: probability 2^-32768.
            let longest = chunks.iter().map(Vec::len).max().unwrap_or(0);
            let whole: Vec<_> = chunks.iter().filter(|c| c.len() == longest).collect();
            for (i, a) in whole.iter().enumerate() {
                assert!(whole[i + 1..].iter().all(|b| b != a), "a chunk repeated");
            }
        }
    }
    // TRNG bytes through a ring too, taken from the durable queue (4 blocks of 32 bytes).
    util::eventually(
        || d.status()["trng"]["queue_current"].as_u64().unwrap_or(0) >= 4,
        "the TRNG queue holds 100 bytes",
    );
    let mut stream = Client::connect(d.socket())
        .unwrap()
        .stream(DataSource::Trng, Some(100), true)
        .unwrap();
    let mut got = 0;
    while let Some(chunk) = stream.next_slice().unwrap() {
        got += chunk.len();
    }
    assert_eq!(got, 100);
}
