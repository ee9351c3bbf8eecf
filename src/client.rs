//! A blocking client for `lokeyd`'s Unix socket, used by the `lokey` CLI and by tests.
//!
//! It speaks [`crate::proto`] over a `std` [`UnixStream`]: blocking I/O is what a command-line
//! tool wants (a stream is copied to stdout at the speed stdout drains, which is the
//! backpressure the daemon sees). Byte streams come through the daemon's shared-memory ring
//! when it offers one ([`crate::ring`]): a chunk is then read where the daemon generated it.

use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::proto::{self, ErrorCode, Frame, Request};
use crate::ring::{self, Ring};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No socket could be connected; every path tried is listed with what went wrong.
    #[error("{}", connect_message(.0))]
    Connect(Vec<(PathBuf, io::Error)>),
    /// The connection failed mid-call. (The cause is in the message and not also given as
    /// `source()`, so that `{:#}` does not print it twice.)
    #[error("connection to lokeyd failed: {0}")]
    Io(io::Error),
    /// The daemon sent bytes that are not a valid frame.
    #[error("lokeyd sent an invalid answer: {0}")]
    Protocol(proto::Error),
    /// The daemon answered with an error.
    #[error("{message}")]
    Daemon {
        /// The stable code.
        code: ErrorCode,
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon answered with a frame that does not fit the request.
    #[error("lokeyd sent an unexpected answer ({0})")]
    Unexpected(&'static str),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

impl From<proto::Error> for Error {
    fn from(e: proto::Error) -> Error {
        Error::Protocol(e)
    }
}

fn connect_message(attempts: &[(PathBuf, io::Error)]) -> String {
    let mut out = String::from("cannot connect to lokeyd");
    for (path, err) in attempts {
        let hint = match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                "is lokeyd running? (start it with `lokeyd`, or pass --socket PATH)"
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied: add yourself to group lokey (`sudo usermod -aG lokey $USER`, \
                 then log in again)"
            }
            _ => "",
        };
        out.push_str(&format!("\n  {}: {err}", path.display()));
        if !hint.is_empty() {
            out.push_str(&format!(" — {hint}"));
        }
    }
    out
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors that arrived beside the bytes read (a stream's ring).
    fds: Vec<OwnedFd>,
    path: PathBuf,
}

impl Client {
    /// Connects to the socket at `path`.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] with the path and the reason.
    pub fn connect(path: &Path) -> Result<Client, Error> {
        Client::connect_any(&[path.to_path_buf()])
    }

    /// Connects to the first of `paths` that accepts.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] listing every path and why it failed.
    pub fn connect_any(paths: &[PathBuf]) -> Result<Client, Error> {
        let mut attempts = Vec::new();
        for path in paths {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    return Ok(Client {
                        stream,
                        buf: Vec::with_capacity(64 * 1024),
                        fds: Vec::new(),
                        path: path.clone(),
                    });
                }
                Err(e) => attempts.push((path.clone(), e)),
            }
        }
        Err(Error::Connect(attempts))
    }

    /// The socket this client is connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends `request` and returns the daemon's JSON answer.
    ///
    /// # Errors
    ///
    /// [`Error::Daemon`] when the daemon refuses; I/O and protocol errors otherwise.
    pub fn call(&mut self, request: &Request) -> Result<serde_json::Value, Error> {
        self.send(request)?;
        match self.read_frame()? {
            Frame::Response(value) => Ok(value),
            Frame::Error { code, message } => Err(Error::Daemon { code, message }),
            _ => Err(Error::Unexpected("expected a response")),
        }
    }

    /// Sends a request frame.
    ///
    /// # Errors
    ///
    /// I/O errors of the socket; [`Error::Daemon`] when the daemon had closed the connection
    /// with an explanation (e.g. `Busy`: it serves as many connections as it allows).
    pub fn send(&mut self, request: &Request) -> Result<(), Error> {
        self.send_frame(&Frame::Request(request.clone()))
    }

    fn send_frame(&mut self, frame: &Frame) -> Result<(), Error> {
        let mut out = Vec::new();
        frame.encode(&mut out);
        if let Err(e) = self.stream.write_all(&out) {
            // The daemon may have said why before it closed: that is the error to report.
            if matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            ) && let Ok(Frame::Error { code, message }) = self.read_frame()
            {
                return Err(Error::Daemon { code, message });
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads the next frame.
    ///
    /// # Errors
    ///
    /// I/O errors, [`Error::Protocol`] for an invalid frame, and an `UnexpectedEof` I/O error
    /// when the daemon closed the connection.
    pub fn read_frame(&mut self) -> Result<Frame, Error> {
        loop {
            if let Some((frame, used)) = Frame::decode(&self.buf, proto::MAX_FRAME_LEN)? {
                self.buf.drain(..used);
                return Ok(frame);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.read_some(&mut chunk)?;
            if n == 0 {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "lokeyd closed the connection",
                )));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Client {
    /// One read(2) of the socket, keeping descriptors that arrive beside the bytes (recvmsg(2);
    /// a plain read would have the kernel close them).
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        ring::recv_with_fds(self.stream.as_fd(), out, &mut self.fds)
    }
}

impl Client {
    /// Asks for a byte stream: `count` bytes, or an endless one (`None`, Fortuna only),
    /// through shared memory where the daemon offers it ([`crate::ring`]), else in `Data`
    /// frames. The answer is read with [`ByteStream::next_slice`]; dropping the stream (and the
    /// client) ends an endless one.
    ///
    /// # Errors
    ///
    /// I/O errors sending the request.
    pub fn bytes(self, source: proto::DataSource, count: Option<u64>) -> Result<ByteStream, Error> {
        self.stream(source, count, true)
    }

    /// As [`Client::bytes`], choosing whether to ask for shared memory (`shared`) or `Data`
    /// frames.
    ///
    /// # Errors
    ///
    /// I/O errors sending the request.
    pub fn stream(
        mut self,
        source: proto::DataSource,
        count: Option<u64>,
        shared: bool,
    ) -> Result<ByteStream, Error> {
        self.send(&Request::Bytes {
            source,
            count,
            shared,
        })?;
        Ok(ByteStream {
            client: self,
            request: (source, count, shared),
            done: false,
            total: 0,
            ring: None,
            next_slot: 0,
            held: None,
            data: Vec::new(),
        })
    }
}

/// A byte stream from the daemon: chunks in its shared ring, or `Data` frames read straight
/// into one buffer.
#[derive(Debug)]
pub struct ByteStream {
    client: Client,
    /// What was asked (source, count, shared), to ask again without shared memory.
    request: (proto::DataSource, Option<u64>, bool),
    done: bool,
    total: u64,
    ring: Option<Ring>,
    /// The slot the next `Filled` frame must name (round-robin).
    next_slot: u32,
    /// The slot the caller was last given, released when it asks for the next chunk.
    held: Option<u32>,
    /// The last `Data` frame's bytes (only ever grown, so never zeroed again).
    data: Vec<u8>,
}

impl ByteStream {
    /// The next chunk of the stream, `None` at its end. The chunk is valid until the next
    /// call: a slot of the shared ring is released then.
    ///
    /// # Errors
    ///
    /// [`Error::Daemon`] when the daemon ends the stream with an error (e.g. not enough TRNG
    /// data, Fortuna not seeded), I/O and protocol errors, and [`Error::Unexpected`] when the
    /// daemon's byte count disagrees with what arrived or it breaks the ring's rules.
    pub fn next_slice(&mut self) -> Result<Option<&[u8]>, Error> {
        if let Some(slot) = self.held.take() {
            self.client.send_frame(&Frame::Release { slot })?;
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let mut header = [0u8; proto::LENGTH_PREFIX + 2];
            self.fill_exact(&mut header)?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            if !(2..=proto::MAX_FRAME_LEN).contains(&len) {
                return Err(Error::Protocol(proto::Error::TooLarge {
                    len,
                    max: proto::MAX_FRAME_LEN,
                }));
            }
            let body = len as usize - 2;
            if header[4] != proto::VERSION {
                return Err(Error::Protocol(proto::Error::Version(header[4])));
            }
            if header[5] == proto::KIND_DATA {
                // Straight into the buffer, which only grows.
                if self.data.len() < body {
                    self.data.resize(body, 0);
                }
                let mut data = std::mem::take(&mut self.data);
                let filled = self.fill_exact(&mut data[..body]);
                self.data = data;
                filled?;
                self.total += body as u64;
                return Ok(Some(&self.data[..body]));
            }
            // Anything else is small: decode it as a whole frame.
            let mut frame = header.to_vec();
            frame.resize(header.len() + body, 0);
            self.fill_exact(&mut frame[header.len()..])?;
            match Frame::decode(&frame, proto::MAX_FRAME_LEN)? {
                Some((Frame::Ring { slots, slot_len }, _)) => self.open_ring(slots, slot_len)?,
                Some((Frame::Filled { slot, len }, _)) => {
                    let ring = self
                        .ring
                        .as_ref()
                        .ok_or(Error::Unexpected("a filled slot before the ring"))?;
                    if slot != self.next_slot || len > ring.slot_len() {
                        return Err(Error::Unexpected("a filled slot out of turn"));
                    }
                    self.next_slot = (slot + 1) % ring.slots();
                    self.held = Some(slot);
                    self.total += u64::from(len);
                    return Ok(Some(&ring.slot(slot)[..len as usize]));
                }
                Some((Frame::End(n), _)) => {
                    self.done = true;
                    if n != self.total {
                        return Err(Error::Unexpected("a stream of the wrong length"));
                    }
                }
                Some((Frame::Error { code, message }, _)) => {
                    if code == ErrorCode::Malformed
                        && self.total == 0
                        && self.request.2
                        && message.contains("shared")
                    {
                        // A daemon from before shared streams: ask it again in `Data` frames.
                        let (source, count, _) = self.request;
                        *self =
                            Client::connect(self.client.path())?.stream(source, count, false)?;
                        continue;
                    }
                    self.done = true;
                    return Err(Error::Daemon { code, message });
                }
                _ => return Err(Error::Unexpected("expected stream data")),
            }
        }
    }

    /// Replaces `buf`'s contents with the next chunk of the stream; `Ok(false)` at its end.
    ///
    /// # Errors
    ///
    /// As [`ByteStream::next_slice`].
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<bool, Error> {
        buf.clear();
        match self.next_slice()? {
            Some(chunk) => {
                buf.extend_from_slice(chunk);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.total
    }

    /// Whether the bytes come through the daemon's shared ring (rather than `Data` frames).
    pub fn is_shared(&self) -> bool {
        self.ring.is_some()
    }

    fn open_ring(&mut self, slots: u32, slot_len: u32) -> Result<(), Error> {
        let fd = match (self.ring.is_some(), self.client.fds.len()) {
            (false, 1) => self.client.fds.remove(0),
            _ => return Err(Error::Unexpected("a ring without exactly one descriptor")),
        };
        self.ring = Some(Ring::open(fd, slots, slot_len)?);
        Ok(())
    }

    fn fill_exact(&mut self, out: &mut [u8]) -> Result<(), Error> {
        let buffered = self.client.buf.len().min(out.len());
        out[..buffered].copy_from_slice(&self.client.buf[..buffered]);
        self.client.buf.drain(..buffered);
        let mut filled = buffered;
        while filled < out.len() {
            match self.client.read_some(&mut out[filled..]) {
                Ok(0) => {
                    return Err(Error::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "lokeyd closed the connection mid-stream",
                    )));
                }
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_told_once() {
        // The CLI prints errors with their chain (`{:#}`): the cause must not come twice.
        let e = Error::from(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "lokeyd closed the connection mid-stream",
        ));
        assert!(std::error::Error::source(&e).is_none());
        assert_eq!(
            e.to_string(),
            "connection to lokeyd failed: lokeyd closed the connection mid-stream"
        );
    }
}
