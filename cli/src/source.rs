//! Random bytes from the daemon for the generators of [`lokey::generate`].
//!
//! Fortuna: one endless stream, read as far as needed and then dropped (closing the
//! connection ends it on the daemon's side). TRNG: requests of at least [`TRNG_BATCH`] bytes,
//! each consumed from the durable queue; what a command leaves unused is discarded, never
//! served to anyone.

use lokey::client::{ByteStream, Client};
use lokey::generate::ByteSource;
use lokey::proto::DataSource;

/// Bytes asked from the TRNG queue at a time.
pub const TRNG_BATCH: usize = 64;

/// A [`ByteSource`] over the daemon's socket.
pub struct DaemonSource {
    connect: Box<dyn Fn() -> Result<Client, lokey::client::Error>>,
    source: DataSource,
    stream: Option<ByteStream>,
    buffer: Vec<u8>,
    chunk: Vec<u8>,
}

impl DaemonSource {
    /// A source of `source` bytes from the daemon `connect` reaches.
    pub fn new(
        connect: impl Fn() -> Result<Client, lokey::client::Error> + 'static,
        source: DataSource,
    ) -> DaemonSource {
        DaemonSource {
            connect: Box::new(connect),
            source,
            stream: None,
            buffer: Vec::new(),
            chunk: Vec::new(),
        }
    }
}

impl ByteSource for DaemonSource {
    type Error = lokey::client::Error;

    fn fill(&mut self, out: &mut [u8]) -> Result<(), lokey::client::Error> {
        while self.buffer.len() < out.len() {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let count = match self.source {
                        DataSource::Fortuna => None,
                        DataSource::Trng => {
                            Some((out.len() - self.buffer.len()).max(TRNG_BATCH) as u64)
                        }
                    };
                    self.stream
                        .insert((self.connect)()?.bytes(self.source, count)?)
                }
            };
            if !stream.next_chunk(&mut self.chunk)? {
                self.stream = None;
                continue;
            }
            self.buffer.extend_from_slice(&self.chunk);
        }
        out.copy_from_slice(&self.buffer[..out.len()]);
        self.buffer.drain(..out.len());
        Ok(())
    }
}
