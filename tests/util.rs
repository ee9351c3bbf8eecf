//! What several suites share.

/// Property-test cases: `PROPTEST_CASES` when set (a longer run: `scripts/fuzz`), else the
/// suite's own `default`, chosen so that `cargo test` stays quick.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// An I2C bus whose ATECC608A wakes properly (the wake pulse to address 0 is not
/// acknowledged; the first read is the wake reply `04 11 33 43`) and then answers every read
/// with `reply`, 0xFF past its end as an idle line reads: hostile chip replies for the driver.
pub struct Replay {
    reply: Vec<u8>,
    woke: bool,
}

impl Replay {
    pub fn new(reply: &[u8]) -> Replay {
        Replay {
            reply: reply.to_vec(),
            woke: false,
        }
    }
}

impl embedded_hal::i2c::ErrorType for Replay {
    type Error = embedded_hal::i2c::ErrorKind;
}

impl embedded_hal::i2c::I2c for Replay {
    fn transaction(
        &mut self,
        address: u8,
        ops: &mut [embedded_hal::i2c::Operation<'_>],
    ) -> Result<(), Self::Error> {
        use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource, Operation};
        for op in ops {
            match op {
                Operation::Write(_) if address == 0 => {
                    return Err(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));
                }
                Operation::Write(_) => {}
                Operation::Read(buf) => {
                    let src: &[u8] = if self.woke {
                        &self.reply
                    } else {
                        &[0x04, 0x11, 0x33, 0x43]
                    };
                    self.woke = true;
                    for (i, b) in buf.iter_mut().enumerate() {
                        *b = src.get(i).copied().unwrap_or(0xFF);
                    }
                }
            }
        }
        Ok(())
    }
}

/// Writes a line (`skipped: <why>`) straight to the process's stderr: the test harness
/// captures `eprintln!` of a passing test, so a skip said that way would never be seen.
#[macro_export]
macro_rules! skipped {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
