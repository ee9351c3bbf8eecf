//! Write Fortuna output to stdout, for statistical test tools (`scripts/fortuna-quality`).
//!
//! Usage: `fortuna-stream [BYTES]` (endless without BYTES). The main Fortuna is seeded through
//! the seed-file path with 64 bytes read from /dev/urandom; the output comes from a [`Worker`],
//! so the worker's rekeying from the main generator is exercised too. A closed pipe ends the
//! program quietly.
//!
//! [`Worker`]: lokey::fortuna::Worker

use std::io::{ErrorKind, Read, Write};

use lokey::fortuna::{Fortuna, SharedFortuna};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limit: Option<u64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let mut seed = [0u8; 64];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut seed)?;
    let mut fortuna = Fortuna::new();
    fortuna.update_seed_file(&seed)?;
    let mut worker = SharedFortuna::new(fortuna).worker();

    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = limit.unwrap_or(u64::MAX);
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        worker.fill(&mut buf[..n])?;
        match stdout.write_all(&buf[..n]) {
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
            other => other?,
        }
        if limit.is_some() {
            left -= n as u64;
        }
    }
    stdout.flush().or_else(|e| {
        if e.kind() == ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}
