//! The ATECC608A driver: commands over any embedded-hal 1.0 I2C bus.
//!
//! # Contract
//!
//! - The driver owns the bus and the delay until [`Atecc608a::release`] gives them back.
//! - Every command wakes the chip when needed (reference §7): a wake pulse (a write to address
//!   0x00, whose NACK is expected), tWHI, and the wake reply `04 11 33 43` checked. Commands
//!   then follow back to back; before the watchdog (~1.3 s after the wake) could expire, the
//!   driver idles and wakes the chip again, so continuous reading never loses a command. The
//!   time awake is the larger of the real time since the wake and the driver's own delays plus
//!   the bus's transfer time at 100 kHz (the latter is what counts on an emulator's virtual
//!   clock; the former catches time spent between calls, which the chip's watchdog counts
//!   too).
//! - A response is polled for rather than waited out: the first read after a short delay,
//!   then one every [`POLL_INTERVAL`] until the datasheet's maximum execution time plus a
//!   margin has passed ([`Atecc608a::command`]). The chip NACKs while busy (§1).
//! - Every response is checked: count byte, CRC, status (§3). Each failure is a typed
//!   [`AteccError`] and no data is returned with it.
//! - Random output equal to the unlocked-chip pattern, or equal to the previous output, is an
//!   error, never data (§5).
//! - The config zone is locked only by [`Atecc608a::lock_config`], which takes a
//!   [`LockConfirmation`] naming this chip's serial number and uses Lock mode 0x00 with the CRC
//!   of the config it read back, so a config other than the one reviewed cannot be locked (§6).
//! - At trace level every I2C transaction is logged in hex, for debugging wiring.

use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{
    AteccError, DEFAULT_ADDRESS, UNLOCKED_PATTERN, WAKE_DELAY, WAKE_REPLY, WAKE_SELF_TEST_FAILED,
    crc16, hex, max_execution_time, opcode, transfer_time, word,
};

/// Time between polls for a response.
pub const POLL_INTERVAL: Duration = Duration::from_micros(500);
/// The driver idles and re-wakes the chip once it has been awake this long (well inside the
/// ~1.3 s watchdog, reference §7).
pub const AWAKE_BUDGET: Duration = Duration::from_millis(1000);
/// Wake attempts before giving up.
pub const WAKE_ATTEMPTS: usize = 3;

/// Lock bytes of the config zone (reference §6: 0x55 means unlocked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LockState {
    /// The config zone is locked (LockConfig, byte 87, is not 0x55): Random is usable.
    pub config_locked: bool,
    /// The data and OTP zones are locked (LockValue, byte 86).
    pub data_locked: bool,
}

/// What the chip is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    /// Info revision bytes, hex (`00 00 60 02` for an ATECC608A).
    pub revision: String,
    /// The 9-byte serial number, hex.
    pub serial: String,
    /// Config zone locked.
    pub config_locked: bool,
    /// Data zone locked.
    pub data_locked: bool,
    /// The 7-bit I2C address.
    pub address: u8,
}

/// Proof that the caller means to lock this very chip's config zone: it carries the serial
/// number the operator saw and confirmed. Locking is irreversible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfirmation {
    serial: [u8; 9],
}

impl LockConfirmation {
    /// Confirms locking the chip with this serial number (as [`Atecc608a::serial_number`]
    /// reports it). The lock is refused on any other chip.
    pub fn for_serial_irreversibly(serial: [u8; 9]) -> LockConfirmation {
        LockConfirmation { serial }
    }
}

/// The ATECC608A driver.
#[derive(Debug)]
pub struct Atecc608a<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
    /// Time since the last wake as the driver counted it (delays and transfers); `None` while
    /// asleep or idle.
    awake: Option<Duration>,
    /// When the last wake happened, by the real clock.
    woke_at: std::time::Instant,
    last_random: Option<[u8; 32]>,
}

impl<I2C: I2c, D: DelayNs> Atecc608a<I2C, D> {
    /// A driver for the chip at the default address 0x60.
    pub fn new(i2c: I2C, delay: D) -> Self {
        Self::with_address(i2c, delay, DEFAULT_ADDRESS)
    }

    /// A driver for the chip at a 7-bit `address`.
    pub fn with_address(i2c: I2C, delay: D, address: u8) -> Self {
        Atecc608a {
            i2c,
            delay,
            address,
            awake: None,
            woke_at: std::time::Instant::now(),
            last_random: None,
        }
    }

    /// Gives the bus and the delay back.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }

    /// The chip's 7-bit address.
    pub fn address(&self) -> u8 {
        self.address
    }

    fn pause(&mut self, d: Duration) {
        self.delay
            .delay_us(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
        if let Some(awake) = &mut self.awake {
            *awake += d;
        }
    }

    fn count_transfer(&mut self, bytes: usize) {
        if let Some(awake) = &mut self.awake {
            *awake += transfer_time(bytes);
        }
    }

    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), I2C::Error> {
        let result = self.i2c.write(address, bytes);
        // A NACKed transfer ends after the address byte.
        self.count_transfer(if result.is_ok() { bytes.len() } else { 0 });
        tracing::trace!(
            "i2c write {address:#04x} [{}] {}",
            hex(bytes),
            if result.is_ok() { "ack" } else { "nack" }
        );
        result
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<(), I2C::Error> {
        let result = self.i2c.read(self.address, buf);
        self.count_transfer(if result.is_ok() { buf.len() } else { 0 });
        match &result {
            Ok(()) => tracing::trace!("i2c read {:#04x} [{}]", self.address, hex(buf)),
            Err(_) => tracing::trace!("i2c read {:#04x} ({} bytes) nack", self.address, buf.len()),
        }
        result
    }

    /// Wakes the chip: a low pulse (a write to address 0x00 at ≤ 100 kHz, NACKed as expected),
    /// tWHI, and the wake reply checked (reference §1).
    ///
    /// # Errors
    ///
    /// [`AteccError::NoResponse`] when the chip never answers, [`AteccError::Wake`] for
    /// another reply, [`AteccError::Status`] 0x07 for a failed power-on self test.
    pub fn wake(&mut self) -> Result<(), AteccError> {
        let mut last = None;
        for _ in 0..WAKE_ATTEMPTS {
            // The general-call NACK is expected: the pulse is all that matters.
            let _ = self.write(0x00, &[0x00]);
            self.awake = Some(Duration::ZERO);
            self.woke_at = std::time::Instant::now();
            self.pause(WAKE_DELAY);
            let mut reply = [0u8; 4];
            match self.read(&mut reply) {
                Ok(()) if reply == WAKE_REPLY => return Ok(()),
                Ok(()) if reply == WAKE_SELF_TEST_FAILED => {
                    return Err(AteccError::Status { status: 0x07 });
                }
                Ok(()) => {
                    // Awake already, with something else in its output buffer: idle it so
                    // that the next pulse wakes it afresh.
                    last = Some(AteccError::Wake(reply.to_vec()));
                    let _ = self.write(self.address, &[word::IDLE]);
                }
                Err(_) => {
                    last = Some(AteccError::NoResponse {
                        address: self.address,
                        during: "waking it (check wiring, bus number and address)",
                    });
                }
            }
            self.awake = None;
            self.pause(POLL_INTERVAL);
        }
        Err(last.unwrap_or(AteccError::NoResponse {
            address: self.address,
            during: "waking it",
        }))
    }

    /// Idles the chip: state kept, watchdog stopped; the next command wakes it.
    ///
    /// # Errors
    ///
    /// [`AteccError::NoResponse`] when the chip did not take the idle byte.
    pub fn idle(&mut self) -> Result<(), AteccError> {
        self.park(word::IDLE, "idling it")
    }

    /// Puts the chip to sleep: least power, all volatile state lost.
    ///
    /// # Errors
    ///
    /// [`AteccError::NoResponse`] when the chip did not take the sleep byte.
    pub fn sleep(&mut self) -> Result<(), AteccError> {
        self.park(word::SLEEP, "putting it to sleep")
    }

    fn park(&mut self, byte: u8, during: &'static str) -> Result<(), AteccError> {
        if self.awake.is_none() {
            return Ok(());
        }
        let result = self.write(self.address, &[byte]);
        self.awake = None;
        result.map_err(|_| AteccError::NoResponse {
            address: self.address,
            during,
        })
    }

    /// Makes sure the chip is awake with enough watchdog time left for one more command.
    fn ready(&mut self) -> Result<(), AteccError> {
        match self.awake {
            Some(t) if t.max(self.woke_at.elapsed()) < AWAKE_BUDGET => Ok(()),
            Some(_) => {
                let _ = self.idle();
                self.wake()
            }
            None => self.wake(),
        }
    }

    /// Sends a command and returns the data of its response (`expected` data bytes; 0 for a
    /// command answered by a status, which must be success).
    ///
    /// The packet is `[0x03][count][opcode][p1][p2 LE][data][CRC LE]` (reference §2). The
    /// response is polled for until the opcode's maximum execution time plus half again and
    /// 5 ms have passed.
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchange; nothing is returned with an error.
    pub fn command(
        &mut self,
        op: u8,
        p1: u8,
        p2: u16,
        data: &[u8],
        expected: usize,
    ) -> Result<Vec<u8>, AteccError> {
        self.ready()?;
        let mut packet = Vec::with_capacity(8 + data.len());
        packet.extend_from_slice(&[word::COMMAND, (7 + data.len()) as u8, op, p1]);
        packet.extend_from_slice(&p2.to_le_bytes());
        packet.extend_from_slice(data);
        let crc = crc16(&packet[1..]);
        packet.extend_from_slice(&crc.to_le_bytes());
        if self.write(self.address, &packet).is_err() {
            // Asleep after all (a watchdog we could not see): wake and send once more.
            self.awake = None;
            self.wake()?;
            self.write(self.address, &packet)
                .map_err(|_| AteccError::NoResponse {
                    address: self.address,
                    during: "sending a command",
                })?;
        }
        let max = max_execution_time(op);
        let limit = max + max / 2 + Duration::from_millis(5);
        let len = if expected == 0 { 4 } else { expected + 3 };
        let mut response = vec![0u8; len];
        // Most commands finish well before their maximum; start polling early.
        let first = (max / 4).max(POLL_INTERVAL);
        self.pause(first);
        let mut waited = first;
        loop {
            if self.read(&mut response).is_ok() {
                break;
            }
            if waited >= limit {
                // The chip may have gone to sleep mid-command; the next command re-wakes it.
                self.awake = None;
                return Err(AteccError::NoResponse {
                    address: self.address,
                    during: "waiting for a command's result",
                });
            }
            self.pause(POLL_INTERVAL);
            waited += POLL_INTERVAL;
        }
        parse_response(&response, expected)
    }

    /// The Info command's revision bytes (`00 00 60 02` on an ATECC608A, reference §5).
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchange.
    pub fn info(&mut self) -> Result<[u8; 4], AteccError> {
        let data = self.command(opcode::INFO, 0, 0, &[], 4)?;
        Ok(data.try_into().expect("parse_response checked the length"))
    }

    /// 32 random bytes from the chip's NIST SP 800-90A/B/C generator (reference §5).
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchange; [`AteccError::Unlocked`] for the unlocked-chip
    /// pattern; [`AteccError::Repeated`] for the same output twice in a row.
    pub fn random(&mut self) -> Result<[u8; 32], AteccError> {
        let data = self.command(opcode::RANDOM, 0, 0, &[], 32)?;
        let block: [u8; 32] = data.try_into().expect("parse_response checked the length");
        if block == UNLOCKED_PATTERN {
            return Err(AteccError::Unlocked);
        }
        if self.last_random == Some(block) {
            return Err(AteccError::Repeated);
        }
        self.last_random = Some(block);
        Ok(block)
    }

    /// The whole 128-byte config zone, as four 32-byte block reads (reference §6).
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchanges.
    pub fn read_config_zone(&mut self) -> Result<[u8; 128], AteccError> {
        let mut config = [0u8; 128];
        for block in 0..4u16 {
            let data = self.command(opcode::READ, 0x80, block << 3, &[], 32)?;
            config[usize::from(block) * 32..][..32].copy_from_slice(&data);
        }
        Ok(config)
    }

    /// The 9-byte serial number: config bytes 0–3 and 8–12 (reference §6).
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchanges.
    pub fn serial_number(&mut self) -> Result<[u8; 9], AteccError> {
        let first = self.command(opcode::READ, 0x00, 0, &[], 4)?;
        let second = self.command(opcode::READ, 0x00, 2, &[], 4)?;
        let third = self.command(opcode::READ, 0x00, 3, &[], 4)?;
        let mut serial = [0u8; 9];
        serial[..4].copy_from_slice(&first);
        serial[4..8].copy_from_slice(&second);
        serial[8] = third[0];
        Ok(serial)
    }

    /// The lock bytes, from config word 0x15 (bytes 84–87, reference §6).
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchange.
    pub fn lock_state(&mut self) -> Result<LockState, AteccError> {
        let word = self.command(opcode::READ, 0x00, 0x15, &[], 4)?;
        Ok(LockState {
            data_locked: word[2] != 0x55,
            config_locked: word[3] != 0x55,
        })
    }

    /// Revision, serial number and lock state.
    ///
    /// # Errors
    ///
    /// Any [`AteccError`] of the exchanges.
    pub fn device_info(&mut self) -> Result<DeviceInfo, AteccError> {
        let revision = self.info()?;
        let serial = self.serial_number()?;
        let lock = self.lock_state()?;
        Ok(DeviceInfo {
            revision: hex(&revision),
            serial: hex(&serial),
            config_locked: lock.config_locked,
            data_locked: lock.data_locked,
            address: self.address,
        })
    }

    /// Checks that the chip is an ATECC608 whose config zone is locked, so that its Random
    /// output is real.
    ///
    /// # Errors
    ///
    /// [`AteccError::NotAtecc608`], [`AteccError::Unlocked`], or an exchange error.
    pub fn check_usable(&mut self) -> Result<(), AteccError> {
        let revision = self.info()?;
        // Byte 2 names the device family: 0x60 is the ATECC608 (reference §5).
        if revision[2] != 0x60 {
            return Err(AteccError::NotAtecc608(revision));
        }
        if !self.lock_state()?.config_locked {
            return Err(AteccError::Unlocked);
        }
        Ok(())
    }

    /// Locks the config zone, irreversibly: only the chip `confirm` names, only while it is
    /// unlocked, and with Lock mode 0x00 carrying the CRC of the config zone as read back, so
    /// the chip refuses if its config differs from what was read (reference §6).
    ///
    /// # Errors
    ///
    /// [`AteccError::WrongChip`], [`AteccError::AlreadyLocked`], or an exchange error (the
    /// chip's status when it refuses).
    pub fn lock_config(&mut self, confirm: &LockConfirmation) -> Result<(), AteccError> {
        let config = self.read_config_zone()?;
        let mut serial = [0u8; 9];
        serial[..4].copy_from_slice(&config[..4]);
        serial[4..].copy_from_slice(&config[8..13]);
        if serial != confirm.serial {
            return Err(AteccError::WrongChip {
                expected: hex(&confirm.serial),
                actual: hex(&serial),
            });
        }
        if config[87] != 0x55 {
            return Err(AteccError::AlreadyLocked);
        }
        let summary = crc16(&config);
        self.command(opcode::LOCK, 0x00, summary, &[], 0)?;
        Ok(())
    }
}

/// Checks a response group: `[count][data][CRC LE]`, or a 4-byte status group (reference §3).
fn parse_response(response: &[u8], expected: usize) -> Result<Vec<u8>, AteccError> {
    let count = usize::from(response[0]);
    if count == 4 {
        let group = &response[..4];
        check_crc(group)?;
        let status = group[1];
        if expected == 0 && status == 0x00 {
            return Ok(Vec::new());
        }
        return Err(AteccError::Status { status });
    }
    if count != expected + 3 || count > response.len() {
        return Err(AteccError::Length {
            expected: expected + 3,
            got: count,
        });
    }
    check_crc(&response[..count])?;
    Ok(response[1..count - 2].to_vec())
}

fn check_crc(group: &[u8]) -> Result<(), AteccError> {
    let (body, crc) = group.split_at(group.len() - 2);
    let computed = crc16(body);
    let received = u16::from_le_bytes([crc[0], crc[1]]);
    if computed != received {
        return Err(AteccError::Crc { computed, received });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(payload: &[u8]) -> Vec<u8> {
        let mut g = vec![(payload.len() + 3) as u8];
        g.extend_from_slice(payload);
        let crc = crc16(&g);
        g.extend_from_slice(&crc.to_le_bytes());
        g
    }

    #[test]
    fn a_status_group_is_an_error_unless_success_was_expected() {
        assert_eq!(parse_response(&group(&[0x00]), 0), Ok(vec![]));
        assert_eq!(
            parse_response(&group(&[0x0F]), 0),
            Err(AteccError::Status { status: 0x0F })
        );
        let mut padded = group(&[0xEE]);
        padded.resize(35, 0xFF);
        assert_eq!(
            parse_response(&padded, 32),
            Err(AteccError::Status { status: 0xEE })
        );
    }

    #[test]
    fn length_and_crc_are_checked() {
        let mut g = group(&[1, 2, 3, 4]);
        assert_eq!(parse_response(&g, 4), Ok(vec![1, 2, 3, 4]));
        assert!(matches!(
            parse_response(&g, 32),
            Err(AteccError::Length {
                expected: 35,
                got: 7
            })
        ));
        g[2] ^= 1;
        assert!(matches!(parse_response(&g, 4), Err(AteccError::Crc { .. })));
    }
}
