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
    buffer: Buffer,
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
            buffer: Buffer::default(),
        }
    }
}

impl ByteSource for DaemonSource {
    type Error = lokey::client::Error;

    fn fill(&mut self, out: &mut [u8]) -> Result<(), lokey::client::Error> {
        let (connect, source, stream) = (&self.connect, self.source, &mut self.stream);
        self.buffer.fill(out, |missing, chunk| {
            loop {
                let current = match stream {
                    Some(current) => current,
                    None => {
                        let count = match source {
                            DataSource::Fortuna => None,
                            DataSource::Trng => Some(missing.max(TRNG_BATCH) as u64),
                        };
                        stream.insert(connect()?.bytes(source, count)?)
                    }
                };
                if current.next_chunk(chunk)? {
                    return Ok(());
                }
                *stream = None;
            }
        })
    }
}

/// Bytes received and not yet handed out, `data[pos..]`: drawing moves the cursor, and only a
/// refill moves bytes (the few not yet used, to the front), so drawing 8 bytes at a time costs
/// 8 bytes of copying, not the rest of a 256 KiB chunk.
#[derive(Debug, Default)]
struct Buffer {
    data: Vec<u8>,
    pos: usize,
    chunk: Vec<u8>,
}

impl Buffer {
    /// Bytes not yet handed out.
    fn available(&self) -> usize {
        self.data.len() - self.pos
    }

    /// Fills `out` with the next bytes, first getting chunks from `more` (given how many bytes
    /// are missing and a buffer to replace with the chunk) until there are enough.
    fn fill<E>(
        &mut self,
        out: &mut [u8],
        mut more: impl FnMut(usize, &mut Vec<u8>) -> Result<(), E>,
    ) -> Result<(), E> {
        while self.available() < out.len() {
            more(out.len() - self.available(), &mut self.chunk)?;
            self.data.drain(..self.pos);
            self.pos = 0;
            self.data.extend_from_slice(&self.chunk);
        }
        let end = self.pos + out.len();
        out.copy_from_slice(&self.data[self.pos..end]);
        self.pos = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte received is handed out once, in order, whatever the sizes of the chunks and
    /// of the draws (smaller, equal and larger than a chunk, across refills).
    #[test]
    fn the_cursor_hands_out_every_buffered_byte_exactly_once() {
        // Bytes numbered by a non-repeating sequence, so a byte skipped or given twice shows.
        let mut next = 0u32;
        let mut byte = move || {
            next = next.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (next >> 24) as u8
        };
        let chunk_sizes = [1usize, 7, 8, 300, 4096, 0, 5, 65_536, 3, 262_144];
        let draws = [8usize, 1, 8, 16, 3, 100_000, 8, 0, 4095, 300_000, 8, 7];
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        let mut buffer = Buffer::default();
        let mut refills = 0;
        for round in 0..200 {
            let draw = draws[round % draws.len()];
            let mut out = vec![0u8; draw];
            buffer
                .fill(&mut out, |missing, chunk| {
                    assert!(missing > 0);
                    chunk.clear();
                    for _ in 0..chunk_sizes[refills % chunk_sizes.len()] {
                        chunk.push(byte());
                    }
                    sent.extend_from_slice(chunk);
                    refills += 1;
                    Ok::<(), ()>(())
                })
                .unwrap();
            got.extend_from_slice(&out);
            assert_eq!(got.len() + buffer.available(), sent.len(), "round {round}");
            assert_eq!(got[..], sent[..got.len()], "round {round}");
        }
        assert!(refills > 100, "{refills} refills");
        // The rest is still there, after everything handed out.
        let rest = buffer.available();
        let mut out = vec![0u8; rest];
        buffer.fill(&mut out, |_, _| Err(())).unwrap();
        got.extend_from_slice(&out);
        assert_eq!(got, sent);
    }

    #[test]
    fn a_failing_refill_hands_out_nothing() {
        let mut buffer = Buffer::default();
        buffer
            .fill(&mut [0u8; 2], |_, chunk| {
                *chunk = vec![1, 2, 3];
                Ok::<(), ()>(())
            })
            .unwrap();
        let mut out = [0u8; 4];
        assert_eq!(buffer.fill(&mut out, |_, _| Err("gone")), Err("gone"));
        assert_eq!(buffer.available(), 1);
        let mut last = [0u8; 1];
        buffer.fill(&mut last, |_, _| Err("unused")).unwrap();
        assert_eq!(last, [3]);
    }
}
