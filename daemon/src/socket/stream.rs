//! Byte streams over the socket (`bytes` requests): in `Data` frames, or through a ring of
//! shared memory when the client asks for one ([`lokey::ring`]; the protocol's rules are in
//! [`lokey::proto`], "Streams through shared memory").
//!
//! Either way the stream goes only as fast as the client takes it: a `Data` frame is written
//! when the socket has room, a slot of the ring is filled when the client has released it.
//! A client that does neither for `daemon.write_timeout_secs` is given up. The daemon declines
//! a ring it cannot make (no memfd, no `/proc`) by streaming `Data` frames, logged once.

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lokey::proto::{self, ErrorCode, Frame};
use lokey::ring::{self, Ring};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;

use super::{error_frame, refuse, send, who, write_within};
use crate::service::{Service, ServiceError};
use crate::shutdown::Shutdown;

/// Bytes per `Data` frame.
const CHUNK: usize = proto::MAX_DATA_CHUNK;

/// Slots per ring: the daemon fills one while the client writes out another. Two are enough
/// to keep both busy.
const RING_SLOTS: u32 = 2;

/// Bytes per slot of a ring: a stream holds 256 KiB, as one `Data` frame's buffer. Larger
/// slots are faster (fewer round trips: 2 GB in 0.21 s with 512 KiB slots, 0.33 s with these,
/// on the 2-core Xeon VM of the README), but every stream would hold more memory.
const SLOT_LEN: usize = 128 * 1024;

/// A `bytes` request.
pub(super) struct Ask {
    pub source: proto::DataSource,
    pub count: Option<u64>,
    pub shared: bool,
}

/// Answers a `bytes` request: the stream, then `End`, or an `Error` (before any data when the
/// request cannot be served at all). `buf` holds what the connection has read past the
/// request (a ring's `Release` frames are read through it).
///
/// # Errors
///
/// When the connection must close: I/O errors, a client that stopped taking the stream, or one
/// that broke the ring's rules (it was told why).
pub(super) async fn serve(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    service: &Service,
    ask: Ask,
    shutdown: &Shutdown,
) -> io::Result<()> {
    let mut worker = None;
    if ask.source == proto::DataSource::Fortuna {
        match service.fortuna_worker() {
            Ok(w) => worker = Some(w),
            Err(e) => return send(stream, &error_frame(&e), service).await,
        }
    }
    let mut out = if ask.shared {
        Out::offer_ring(stream, service).await?
    } else {
        Out::frames()
    };
    let mut sent = 0u64;
    let name = ask.source.as_str();
    let most = out.most();
    let result = loop {
        let want = match ask.count {
            Some(total) if sent >= total => break Ok(()),
            Some(total) => usize::try_from(total - sent).map_or(most, |n| n.min(most)),
            None => most,
        };
        if shutdown.is_triggered() {
            break Err(Frame::Error {
                code: ErrorCode::ShuttingDown,
                message: "lokeyd is shutting down".into(),
            });
        }
        let chunk = match out.chunk(stream, buf, service, want).await {
            Ok(chunk) => chunk,
            Err(e) => {
                if let Some(worker) = worker.take() {
                    service.return_worker(worker);
                }
                return Err(e);
            }
        };
        let filled = match (&mut worker, ask.count) {
            // Fortuna: generated straight into the frame or the slot.
            (Some(worker), _) => service.fortuna_fill(worker, chunk),
            (None, None) => Err(ServiceError::InvalidArgument(
                "an endless stream comes only from source fortuna; give a size for trng".into(),
            )),
            (None, Some(total)) => trng_into(service, sent, total, chunk).await?,
        };
        if let Err(e) = filled {
            break Err(error_frame(&e));
        }
        if let Err(e) = out.send(stream, service, want).await {
            if let Some(worker) = worker.take() {
                service.return_worker(worker);
            }
            return Err(e);
        }
        sent += want as u64;
        service
            .request_metrics()
            .served(name, "socket", want as u64);
    };
    if let Some(worker) = worker {
        service.return_worker(worker);
    }
    // The stream ends with nothing in flight: every filled slot released.
    out.drain(stream, buf, service).await?;
    match result {
        Ok(()) => send(stream, &Frame::End(sent), service).await,
        Err(frame) => send(stream, &frame, service).await,
    }
}

/// TRNG bytes into `chunk`, all or nothing where it can be told up front: a request larger
/// than the queue holds takes nothing.
async fn trng_into(
    service: &Service,
    sent: u64,
    total: u64,
    chunk: &mut [u8],
) -> io::Result<Result<(), ServiceError>> {
    if sent == 0
        && let Err(e) = service.trng_available(total)
    {
        return Ok(Err(e));
    }
    let service = service.clone();
    let want = chunk.len();
    let bytes = tokio::task::spawn_blocking(move || service.trng_bytes(0, want))
        .await
        .map_err(io::Error::other)?;
    Ok(bytes.map(|bytes| chunk.copy_from_slice(&bytes)))
}

/// Where a stream's chunks go.
enum Out {
    /// `Data` frames from one buffer: a header, then up to [`CHUNK`] bytes (allocated and
    /// zeroed once).
    Frames(Vec<u8>),
    /// The client's ring.
    Ring(Shared),
}

/// A stream's ring, and which of its slots are the client's.
struct Shared {
    ring: Ring,
    /// The slot to fill next.
    next: u32,
    /// Filled slots the client has not released; the oldest is `next - unreleased`.
    unreleased: u32,
}

/// Whether declining a ring has been logged (once per daemon).
static DECLINE_LOGGED: AtomicBool = AtomicBool::new(false);

impl Out {
    fn frames() -> Out {
        Out::Frames(vec![0; Frame::data_header(0).len() + CHUNK])
    }

    /// Makes a ring and sends it with a `Ring` frame; `Data` frames when no ring can be made.
    async fn offer_ring(stream: &mut UnixStream, service: &Service) -> io::Result<Out> {
        let made = Ring::create(RING_SLOTS, SLOT_LEN as u32)
            .and_then(|ring| ring.read_only_fd().map(|fd| (ring, fd)));
        let (ring, fd) = match made {
            Ok(made) => made,
            Err(e) => {
                if !DECLINE_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "socket: streaming in Data frames, not shared memory: cannot make a \
                         ring ({e}); streams are slower"
                    );
                }
                return Ok(Out::frames());
            }
        };
        let mut frame = Vec::new();
        Frame::Ring {
            slots: ring.slots(),
            slot_len: ring.slot_len(),
        }
        .encode(&mut frame);
        // The descriptor travels with the frame's first byte; the rest, if the socket took
        // only part, is written as usual.
        let first = stream
            .async_io(Interest::WRITABLE, || {
                ring::send_with_fd(stream.as_fd(), &frame, fd.as_fd())
            })
            .await?;
        drop(fd);
        write_within(stream, &frame[first..], service).await?;
        Ok(Out::Ring(Shared {
            ring,
            next: 0,
            unreleased: 0,
        }))
    }

    /// The most bytes a chunk holds.
    fn most(&self) -> usize {
        match self {
            Out::Frames(_) => CHUNK,
            Out::Ring(shared) => shared.ring.slot_len() as usize,
        }
    }

    /// Room for the next `want` bytes: the frame buffer, or the next slot once the client has
    /// released it.
    async fn chunk(
        &mut self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
        service: &Service,
        want: usize,
    ) -> io::Result<&mut [u8]> {
        match self {
            Out::Frames(frame) => {
                let header = Frame::data_header(want);
                frame[..header.len()].copy_from_slice(&header);
                Ok(&mut frame[header.len()..header.len() + want])
            }
            Out::Ring(shared) => {
                if shared.unreleased == shared.ring.slots() {
                    shared.release(stream, buf, service).await?;
                }
                Ok(&mut shared.ring.slot_mut(shared.next)[..want])
            }
        }
    }

    /// Sends the `want` bytes `chunk` made room for.
    async fn send(
        &mut self,
        stream: &mut UnixStream,
        service: &Service,
        want: usize,
    ) -> io::Result<()> {
        match self {
            Out::Frames(frame) => {
                let end = Frame::data_header(0).len() + want;
                write_within(stream, &frame[..end], service).await
            }
            Out::Ring(shared) => {
                let mut out = Vec::with_capacity(16);
                Frame::Filled {
                    slot: shared.next,
                    len: u32::try_from(want).map_err(io::Error::other)?,
                }
                .encode(&mut out);
                write_within(stream, &out, service).await?;
                shared.next = (shared.next + 1) % shared.ring.slots();
                shared.unreleased += 1;
                Ok(())
            }
        }
    }

    /// Waits until the client has released every filled slot.
    async fn drain(
        &mut self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
        service: &Service,
    ) -> io::Result<()> {
        if let Out::Ring(shared) = self {
            while shared.unreleased > 0 {
                shared.release(stream, buf, service).await?;
            }
        }
        Ok(())
    }
}

impl Shared {
    /// Reads the client's next `Release`, which must name the oldest unreleased slot. Anything
    /// else is refused (`Malformed`) and closes the connection; so does silence for the write
    /// timeout, as for a client that stops reading `Data`.
    async fn release(
        &mut self,
        stream: &mut UnixStream,
        buf: &mut Vec<u8>,
        service: &Service,
    ) -> io::Result<()> {
        let slots = self.ring.slots();
        let oldest = (self.next + slots - self.unreleased) % slots;
        let frame = next_frame(stream, buf, service).await?;
        match frame {
            Frame::Release { slot } if slot == oldest => {
                self.unreleased -= 1;
                Ok(())
            }
            other => {
                let message = match other {
                    Frame::Release { slot } => {
                        format!("released slot {slot}, but the oldest filled slot is {oldest}")
                    }
                    _ => "expected a release of a slot of the stream".to_string(),
                };
                refuse(stream, ErrorCode::Malformed, &message).await?;
                Err(io::Error::new(io::ErrorKind::InvalidData, message))
            }
        }
    }
}

/// The client's next frame during a stream, through the connection's buffer `buf`. A frame
/// that cannot be decoded is refused with its error code and closes the connection; so does
/// silence for the write timeout.
async fn next_frame(
    stream: &mut UnixStream,
    buf: &mut Vec<u8>,
    service: &Service,
) -> io::Result<Frame> {
    let limit = Duration::from_secs(service.config().daemon.write_timeout_secs);
    loop {
        match Frame::decode(buf, proto::MAX_REQUEST_LEN) {
            Ok(Some((frame, used))) => {
                buf.drain(..used);
                return Ok(frame);
            }
            Ok(None) => {}
            Err(e) => {
                refuse(stream, e.code(), &e.to_string()).await?;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        let mut chunk = [0u8; 256];
        match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                tracing::warn!(
                    "{} released no slot of its stream for {} s \
                     (daemon.write_timeout_secs); closing its connection",
                    who(stream),
                    limit.as_secs()
                );
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped taking its stream",
                ));
            }
        }
    }
}
