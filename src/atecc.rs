//! The Microchip ATECC608A: a driver for its random number generator over I2C, and a
//! byte-faithful emulator of the chip for running without hardware.
//!
//! # What lives here
//!
//! - [`Atecc608a`] ([`driver`]): the driver, generic over embedded-hal 1.0's
//!   [`I2c`](embedded_hal::i2c::I2c) and [`DelayNs`](embedded_hal::delay::DelayNs), so it runs
//!   on rppal's `/dev/i2c-N` on a Raspberry Pi ([`linux`]) and on the [`emulator`] anywhere. No
//!   tokio and no std I/O inside the protocol code.
//! - [`Emulator`] ([`emulator`]): the chip at the byte level — wake/idle/sleep, word addresses,
//!   command parsing with CRC checks, busy NACKs, the watchdog, a 128-byte config zone — with
//!   the datasheet's timing on a real or a virtual clock and switchable faults.
//! - [`ChipSource`] ([`source`]): the driver as a [`crate::source::Source`] for the daemon.
//! - [`BusHarvest`] ([`bus`]): several chips on one bus driven from one thread that keeps
//!   every chip busy, each a source of its own; [`EmulatedBus`] puts several emulated chips
//!   on one virtual bus.
//! - [`crc16`]: the chip's CRC.
//!
//! Every fact used here (packet layout, CRC, status codes, execution times, the config zone, the
//! unlocked-chip pattern) is in `reference/atecc608a.md`, which cites the datasheet and
//! Microchip's cryptoauthlib; the comments below name its sections.

pub mod bus;
pub mod driver;
pub mod emulator;
pub mod linux;
pub mod source;

pub use bus::{BusChipSource, BusError, BusHarvest, EmulatedBus, SharedBus};
pub use driver::{Atecc608a, DeviceInfo, KeygenConfirmation, LockConfirmation, LockState};
pub use emulator::{
    Clock, Emulator, EmulatorConfig, EmulatorControl, EmulatorDelay, EmulatorEntropy, FAULTS,
    Timing,
};
pub use source::{Chip, ChipSource, SharedChip};

use std::time::Duration;

/// The chip's default 7-bit I2C address.
pub const DEFAULT_ADDRESS: u8 = 0x60;

/// Word address bytes: the first byte of every write (§1).
pub mod word {
    /// Resets the read pointer.
    pub const RESET: u8 = 0x00;
    /// Puts the chip to sleep (all volatile state lost).
    pub const SLEEP: u8 = 0x01;
    /// Idles the chip (state kept, watchdog stopped).
    pub const IDLE: u8 = 0x02;
    /// A command follows.
    pub const COMMAND: u8 = 0x03;
}

/// Opcodes the driver sends (§4).
pub mod opcode {
    /// Read a config word or block.
    pub const READ: u8 = 0x02;
    /// Lock a zone.
    pub const LOCK: u8 = 0x17;
    /// 32 random bytes.
    pub const RANDOM: u8 = 0x1B;
    /// Write a word (here: a config word, before the config zone is locked).
    pub const WRITE: u8 = 0x12;
    /// Revision and state.
    pub const INFO: u8 = 0x30;
    /// Load TempKey or the Message Digest Buffer (here: pass-through of a host digest).
    pub const NONCE: u8 = 0x16;
    /// Create a P-256 private key in a slot, or compute the public key of one.
    pub const GENKEY: u8 = 0x40;
    /// ECDSA P-256 signature with a slot's private key.
    pub const SIGN: u8 = 0x41;
    /// Read or increment a monotonic counter.
    pub const COUNTER: u8 = 0x24;
}

/// Modes of the key and signing commands (`reference/verifiable-randomness.md` §4.1, §4.2,
/// §4.5; cryptoauthlib `calib_command.h`).
pub mod mode {
    /// GenKey: compute the public key of the private key already in the slot.
    pub const GENKEY_PUBLIC: u8 = 0x00;
    /// GenKey: create a new random private key in the slot and return its public key.
    pub const GENKEY_PRIVATE: u8 = 0x04;
    /// Nonce: pass-through (0x03) of a 32-byte input into the Message Digest Buffer (0x40).
    pub const NONCE_PASSTHROUGH_MSGDIGBUF: u8 = 0x43;
    /// Sign: external message (0x80), digest taken from the Message Digest Buffer (0x20).
    pub const SIGN_EXTERNAL_MSGDIGBUF: u8 = 0xA0;
    /// Counter: read.
    pub const COUNTER_READ: u8 = 0x00;
    /// Counter: increment, then read.
    pub const COUNTER_INCREMENT: u8 = 0x01;
}

/// The largest value of a monotonic counter: 2,097,151 (§4.5; an increment beyond is refused).
pub const COUNTER_MAX: u32 = 2_097_151;

/// Slots that hold a P-256 private key in the factory configuration of a blank ATECC608A
/// (SlotConfig 0x2083/0x2087/0x208F, KeyConfig 0x0033: `verifiable-randomness.md` §4.4).
pub const FACTORY_KEY_SLOTS: [u8; 3] = [0, 1, 2];

/// A status the chip can answer instead of data (§3), by meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChipStatus {
    /// 0x01: a check or verify miscompare.
    Miscompare,
    /// 0x03: illegal length, opcode or parameters.
    Parse,
    /// 0x05: an ECC computation failed (e.g. an invalid private key was generated); retry.
    EccFault,
    /// 0x07: the power-on self test failed.
    SelfTest,
    /// 0x08: the random number generator's health test failed.
    HealthTest,
    /// 0x0F: a legal command that cannot run in the chip's state (unlocked config, a slot
    /// that does not allow it, a counter at its maximum).
    Execution,
    /// 0x11: the wake reply came back instead of a result.
    AfterWake,
    /// 0xEE: the watchdog is about to expire; the command did not run.
    Watchdog,
    /// 0xFF: CRC or communication error on the command.
    Communication,
    /// Any other byte.
    Unknown(u8),
}

impl ChipStatus {
    /// The meaning of `status`.
    pub fn from_byte(status: u8) -> ChipStatus {
        match status {
            0x01 => ChipStatus::Miscompare,
            0x03 => ChipStatus::Parse,
            0x05 => ChipStatus::EccFault,
            0x07 => ChipStatus::SelfTest,
            0x08 => ChipStatus::HealthTest,
            0x0F => ChipStatus::Execution,
            0x11 => ChipStatus::AfterWake,
            0xEE => ChipStatus::Watchdog,
            0xFF => ChipStatus::Communication,
            other => ChipStatus::Unknown(other),
        }
    }
}

/// Maximum execution time of `opcode` on the ATECC608 with the default clock divider (§4,
/// cryptoauthlib's `calib_execution.c`, M0 column).
pub fn max_execution_time(opcode: u8) -> Duration {
    let ms = match opcode {
        opcode::INFO => 5,
        opcode::RANDOM => 23,
        opcode::READ => 5,
        opcode::WRITE => 45,
        opcode::LOCK => 35,
        0x47 => 36,  // SHA
        0x16 => 20,  // Nonce
        0x40 => 115, // GenKey
        0x41 => 115, // Sign
        0x43 => 75,  // ECDH
        0x24 => 25,  // Counter
        _ => 50,
    };
    Duration::from_millis(ms)
}

/// The wake reply: count 4, status 0x11, CRC (§1).
pub const WAKE_REPLY: [u8; 4] = [0x04, 0x11, 0x33, 0x43];
/// The wake reply of a chip whose power-on self test failed (status 0x07, CRC computed, §1).
pub const WAKE_SELF_TEST_FAILED: [u8; 4] = [0x04, 0x07, 0x40, 0xC2];

/// What Random returns while the config zone is unlocked: `FF FF 00 00` eight times (§5).
pub const UNLOCKED_PATTERN: [u8; 32] = {
    let mut p = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        if i % 4 < 2 {
            p[i] = 0xFF;
        }
        i += 1;
    }
    p
};

/// Time to wait after a wake pulse before the chip answers (tWHI; 1.5 ms as cryptoauthlib and
/// the kernel wait, §1).
pub const WAKE_DELAY: Duration = Duration::from_micros(1500);
/// The watchdog puts the chip to sleep this long after a wake (ChipMode bit 2 clear, §1).
pub const WATCHDOG: Duration = Duration::from_millis(1300);
/// Time on a 100 kHz bus for `bytes` bytes plus the address byte (9 bit-times each, §7).
pub fn transfer_time(bytes: usize) -> Duration {
    Duration::from_micros(90 * (bytes as u64 + 1))
}

/// The chip's CRC-16 (§2): polynomial 0x8005, initial value 0, data bits fed least significant
/// first, no final XOR; stored little-endian on the wire.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        for i in 0..8 {
            let d = (byte >> i) & 1;
            let c = (crc >> 15) as u8;
            crc <<= 1;
            if d != c {
                crc ^= 0x8005;
            }
        }
    }
    crc
}

/// The meaning of a status byte (§3).
pub fn status_meaning(status: u8) -> &'static str {
    match status {
        0x00 => "success",
        0x01 => "check or verify miscompare",
        0x03 => "parse error: illegal length, opcode or parameters",
        0x05 => "ECC fault during computation",
        0x07 => "self-test error: the chip is in failure mode",
        0x08 => "random number generator health-test error",
        0x0F => "execution error: the command cannot run in the chip's current state",
        0x11 => "wake reply instead of a result (the command did not reach the chip)",
        0xEE => "watchdog about to expire: command not executed",
        0xFF => "CRC or communication error on the command: resend",
        _ => "unknown status",
    }
}

/// A driver error. Each variant is something a caller may branch on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AteccError {
    /// The bus reported an error other than a NACK (embedded-hal's `ErrorKind` other than
    /// `NoAcknowledge`): arbitration lost, a bus fault, an adapter gone. The chip may be
    /// fine; the bus is not.
    #[error("I2C bus error: {0}")]
    Bus(String),
    /// The chip did not answer (its address was NACKed) within the bounded retries: not
    /// present, wrong address, asleep by the watchdog, or slower than the datasheet allows.
    #[error("no response from the ATECC608A at address {address:#04x} {during}")]
    NoResponse {
        /// Its 7-bit address.
        address: u8,
        /// What the driver was doing.
        during: &'static str,
    },
    /// The wake reply was not `04 11 33 43`.
    #[error("unexpected wake reply {0:02x?} (expected 04 11 33 43)")]
    Wake(Vec<u8>),
    /// A response's CRC did not match: the reply was corrupted on the bus. The CRC values are
    /// not kept: over a Random reply they are 16 bits of a (discarded) random block.
    #[error(
        "response CRC mismatch: the reply was corrupted on the bus (check wiring and pull-ups)"
    )]
    Crc,
    /// The chip answered with a status code instead of data.
    #[error("chip status {status:#04x}: {}", status_meaning(*status))]
    Status {
        /// The status byte.
        status: u8,
    },
    /// A response of the wrong length.
    #[error("response of {got} bytes where {expected} were expected")]
    Length {
        /// Expected count byte.
        expected: usize,
        /// Count byte received.
        got: usize,
    },
    /// The chip is not an ATECC608.
    #[error(
        "the device at this address is not an ATECC608 (revision {0:02x?}; an ATECC608 reports \
         00 00 60 xx)"
    )]
    NotAtecc608([u8; 4]),
    /// The config zone is unlocked: Random returns a fixed test pattern.
    #[error(
        "the ATECC608A's configuration zone is not locked, so its random number generator \
         returns the fixed test pattern FF FF 00 00 …; provision the chip once with \
         `lokey device lock` (irreversible) before use"
    )]
    Unlocked,
    /// Random returned the same 32 bytes twice in a row.
    #[error("the chip returned the same 32 random bytes twice in a row")]
    Repeated,
    /// The config zone is locked already.
    #[error("the configuration zone is already locked")]
    AlreadyLocked,
    /// A slot number outside 0–15, or a slot the chip's configuration does not make a P-256
    /// private-key slot.
    #[error("slot {0} is not a P-256 private-key slot of this chip")]
    NotKeySlot(u8),
    /// A counter id other than 0 or 1.
    #[error("counter {0} does not exist (the ATECC608A has counters 0 and 1)")]
    NoSuchCounter(u8),
    /// A monotonic counter at its maximum refused an increment.
    #[error("monotonic counter {id} is at its maximum ({max}) and cannot be incremented")]
    CounterExhausted {
        /// Its id.
        id: u8,
        /// The maximum.
        max: u32,
    },
    /// The config zone is locked, so config byte 16 (the I2C address) can no longer be
    /// written.
    #[error(
        "the configuration zone is locked, so the I2C address (config byte 16) can no longer be \
         changed; after locking, only UpdateExtra can set byte 85 (UserExtraAdd) once, and the \
         chip uses it only if ChipMode bit 0 was set before locking; an I2C multiplexer needs no \
         address change"
    )]
    AddressLocked,
    /// [`Atecc608a::poll`] was called with no command started.
    #[error("no command was started on the ATECC608A to poll for")]
    NothingStarted,
    /// The confirmation names another chip.
    #[error("the lock confirmation names serial {expected}, but this chip is {actual}")]
    WrongChip {
        /// Serial in the confirmation.
        expected: String,
        /// This chip's serial.
        actual: String,
    },
}

impl AteccError {
    /// The chip's status, when the chip answered one.
    pub fn chip_status(&self) -> Option<ChipStatus> {
        match self {
            AteccError::Status { status } => Some(ChipStatus::from_byte(*status)),
            _ => None,
        }
    }

    /// Whether a retry may succeed without anyone acting (CRC errors, busy NACKs, watchdog).
    pub fn is_transient(&self) -> bool {
        match self {
            AteccError::Crc | AteccError::Length { .. } | AteccError::Repeated => true,
            AteccError::Status { status } => matches!(status, 0x05 | 0x11 | 0xEE | 0xFF),
            _ => false,
        }
    }
}

/// Hex for trace logs and error messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_value() {
        // CRC-16 with these parameters over "123456789" (§2).
        assert_eq!(crc16(b"123456789"), 0xBCDD);
    }

    #[test]
    fn unlocked_pattern_is_ff_ff_00_00() {
        assert_eq!(
            &UNLOCKED_PATTERN[..8],
            &[0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0, 0]
        );
    }

    #[test]
    fn transfer_time_at_100_khz() {
        // The 9-byte Random command: 10 bytes with the address, 90 µs each.
        assert_eq!(transfer_time(9), Duration::from_micros(900));
    }
}
