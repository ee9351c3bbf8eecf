//! `lokey --remote https://HOST:PORT`: the commands that make sense across machines (bytes,
//! int, uuid, password, status, health, beacon last/get) over the remote daemon's REST API,
//! with its key pinned (`--pin`) or a CA file (`--cacert`) ([`lokey::remote`]).
//!
//! Random bytes come from `GET /api/v1/random/bytes` in requests of at most
//! [`REMOTE_CHUNK`] bytes, each on a new connection that resumes the TLS session (no chip
//! signature on the server); the generators run here on those bytes, as they do for the
//! local socket.

use std::time::Duration;

use anyhow::{Context, bail};
use lokey::generate::ByteSource;
use lokey::remote::{Pin, Remote, RemoteError, Trust};
use serde_json::Value;

use crate::{Cli, Source};

/// Bytes asked for in one request.
pub const REMOTE_CHUNK: u64 = 1 << 16;
/// Connect, read and write timeout.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The remote daemon of `--remote`, or `None` for the local socket.
///
/// # Errors
///
/// A URL that is not `https://`, no or a malformed pin, an unreadable CA file.
pub fn from_cli(cli: &Cli) -> anyhow::Result<Option<Remote>> {
    let Some(url) = &cli.remote else {
        if cli.pin.is_some() || cli.cacert.is_some() {
            bail!("--pin and --cacert are for --remote https://HOST:PORT");
        }
        return Ok(None);
    };
    let trust = match (&cli.pin, &cli.cacert) {
        (Some(pin), None) => Trust::Pin(Pin::parse(pin)?),
        (None, Some(file)) => Trust::CaFile(file.clone()),
        (None, None) => return Err(RemoteError::NoTrust.into()),
        (Some(_), Some(_)) => bail!("give either --pin or --cacert, not both"),
    };
    Ok(Some(Remote::new(url, trust, TIMEOUT)?))
}

fn source_name(source: Source) -> &'static str {
    match source {
        Source::Fortuna => "fortuna",
        Source::Trng => "trng",
    }
}

/// `GET path` as JSON; statuses in `accept` are answers, any other is an error with the
/// daemon's message.
///
/// # Errors
///
/// The connection's, or the daemon's error answer.
pub fn json(remote: &Remote, path: &str, accept: &[u16]) -> anyhow::Result<(u16, Value)> {
    let answer = remote.get(path)?;
    let value: Value = serde_json::from_slice(&answer.body).with_context(|| {
        format!(
            "{}{path}: not JSON (status {})",
            remote.server(),
            answer.status
        )
    })?;
    if !accept.contains(&answer.status) {
        bail!(
            "{}{path}: {} {}",
            remote.server(),
            answer.status,
            value["error"].as_str().unwrap_or("error")
        );
    }
    Ok((answer.status, value))
}

/// `n` random bytes from the remote daemon (at most [`REMOTE_CHUNK`]).
///
/// # Errors
///
/// The connection's, or the daemon's error answer (a TRNG queue that is short, a rate limit).
pub fn fetch(remote: &Remote, source: Source, n: u64) -> Result<Vec<u8>, RemoteError> {
    remote.random_bytes(n, source_name(source))
}

/// A stream of `size` bytes (endless without) in chunks.
pub struct RemoteStream {
    remote: Remote,
    source: Source,
    left: Option<u64>,
    received: u64,
}

impl RemoteStream {
    /// A stream of `size` bytes of `source`.
    pub fn new(remote: Remote, source: Source, size: Option<u64>) -> RemoteStream {
        RemoteStream {
            remote,
            source,
            left: size,
            received: 0,
        }
    }

    /// The next chunk into `buf`; `false` at the end.
    ///
    /// # Errors
    ///
    /// See [`fetch`].
    pub fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Result<bool, RemoteError> {
        buf.clear();
        let n = self.left.map_or(REMOTE_CHUNK, |l| l.min(REMOTE_CHUNK));
        if n == 0 {
            return Ok(false);
        }
        *buf = fetch(&self.remote, self.source, n)?;
        self.received += n;
        if let Some(left) = &mut self.left {
            *left -= n;
        }
        Ok(true)
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }
}

/// A [`ByteSource`] over the remote daemon, for the generators.
pub struct RemoteSource {
    remote: Remote,
    source: Source,
    buffer: Vec<u8>,
}

impl RemoteSource {
    /// Bytes of `source` from `remote`.
    pub fn new(remote: Remote, source: Source) -> RemoteSource {
        RemoteSource {
            remote,
            source,
            buffer: Vec::new(),
        }
    }
}

impl ByteSource for RemoteSource {
    type Error = RemoteError;

    fn fill(&mut self, out: &mut [u8]) -> Result<(), RemoteError> {
        while self.buffer.len() < out.len() {
            // TRNG bytes are scarce: ask for what is missing (at least 64); Fortuna in bulk.
            let missing = (out.len() - self.buffer.len()) as u64;
            let n = match self.source {
                Source::Trng => missing.max(64),
                Source::Fortuna => missing.max(4096),
            }
            .min(REMOTE_CHUNK);
            let more = fetch(&self.remote, self.source, n)?;
            self.buffer.extend_from_slice(&more);
        }
        out.copy_from_slice(&self.buffer[..out.len()]);
        self.buffer.drain(..out.len());
        Ok(())
    }
}
