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
//! - A NACK (embedded-hal's `ErrorKind::NoAcknowledge`) means the chip is asleep, busy or
//!   absent; when the bounded retries run out it is [`AteccError::NoResponse`]. Any other bus
//!   error (arbitration loss, a bus fault, an adapter gone) is [`AteccError::Bus`] at once,
//!   so callers and the status page can tell a missing chip from a broken bus.
//! - Status 0xEE (the watchdog is about to expire, the command did not run) idles the chip,
//!   wakes it again and resends the command once (§7 step 4), rather than sending into the
//!   same expiring window again.
//! - Random output equal to the unlocked-chip pattern, or equal to the previous output, is an
//!   error, never data (§5).
//! - The config zone is locked only by [`Atecc608a::lock_config`], which takes a
//!   [`LockConfirmation`] naming this chip's serial number and uses Lock mode 0x00 with the CRC
//!   of the config it read back, so a config other than the one reviewed cannot be locked (§6).
//! - At trace level every I2C transaction is logged in hex, for debugging wiring, except the
//!   data of Random responses: those show their length and count byte only, or the whole
//!   group when it is a 4-byte status (design.md §2, invariant 6). A wake reply that is not a
//!   4-byte group (a result left in the chip's buffer) is withheld in the same way.

use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{Error as _, ErrorKind, I2c};

use super::{
    AteccError, COUNTER_MAX, DEFAULT_ADDRESS, UNLOCKED_PATTERN, WAKE_DELAY, WAKE_REPLY,
    WAKE_SELF_TEST_FAILED, crc16, hex, max_execution_time, mode, opcode, transfer_time, word,
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

/// Proof that the caller means to destroy the private key in `slot` of this very chip and
/// create a new one: it carries the serial number the operator saw and confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeygenConfirmation {
    serial: [u8; 9],
    slot: u8,
}

impl KeygenConfirmation {
    /// Confirms replacing the key in `slot` of the chip with this serial number. Refused on
    /// any other chip.
    pub fn for_serial_destroying_old_key(serial: [u8; 9], slot: u8) -> KeygenConfirmation {
        KeygenConfirmation { serial, slot }
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
    /// A command sent by [`Atecc608a::start`] whose result has not been read.
    pending: Option<Pending>,
    /// The result of a started command that [`Atecc608a::command`] had to wait for (the chip
    /// takes one command at a time), kept for the next [`Atecc608a::poll`].
    settled: Option<Result<Vec<u8>, AteccError>>,
    /// Other chips share the bus (see [`Atecc608a::on_shared_bus`]).
    shared_bus: bool,
}

/// A command on its way: what it is and how long the driver has waited for it.
#[derive(Debug, Clone, Copy)]
struct Pending {
    op: u8,
    expected: usize,
    /// Time counted since it was sent (the driver's delays and transfers, and time reported by
    /// [`Atecc608a::note_elapsed`]).
    waited: Duration,
}

impl Pending {
    /// The poll window: the opcode's maximum execution time plus half again and 5 ms.
    fn limit(&self) -> Duration {
        let max = max_execution_time(self.op);
        max + max / 2 + Duration::from_millis(5)
    }
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
            pending: None,
            settled: None,
            shared_bus: false,
        }
    }

    /// Marks the bus as shared with other chips. Every chip sees every wake pulse, so a chip
    /// this driver idled may have been woken by another's pulse, its watchdog running unseen;
    /// before each wake the driver then idles it first, so that its own pulse starts the
    /// watchdog afresh (an idle byte to a sleeping chip is NACKed, which is fine).
    pub fn on_shared_bus(mut self) -> Self {
        self.shared_bus = true;
        self
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
        self.note_elapsed(d);
    }

    fn count_transfer(&mut self, bytes: usize) {
        self.note_elapsed(transfer_time(bytes));
    }

    /// Counts `d` as passed for this chip: its watchdog and the poll window of a started
    /// command. A scheduler that drives several chips on one bus reports here the time it
    /// spent on the others, which this driver's own delays and transfers do not see.
    pub fn note_elapsed(&mut self, d: Duration) {
        if let Some(awake) = &mut self.awake {
            *awake += d;
        }
        if let Some(pending) = &mut self.pending {
            pending.waited += d;
        }
    }

    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), I2C::Error> {
        let result = self.i2c.write(address, bytes);
        // A NACKed transfer ends after the address byte.
        self.count_transfer(if result.is_ok() { bytes.len() } else { 0 });
        match &result {
            Ok(()) => tracing::trace!("i2c write {address:#04x} [{}] ack", hex(bytes)),
            Err(e) => tracing::trace!(
                "i2c write {address:#04x} [{}] {}",
                hex(bytes),
                describe(e.kind())
            ),
        }
        result
    }

    /// Reads `buf.len()` bytes. With `secret`, only a 4-byte status group (count byte 4) is
    /// logged, and nothing after it; otherwise the log shows the length and the count byte,
    /// never the data (invariant 6).
    fn read(&mut self, buf: &mut [u8], secret: bool) -> Result<(), I2C::Error> {
        let result = self.i2c.read(self.address, buf);
        self.count_transfer(if result.is_ok() { buf.len() } else { 0 });
        match &result {
            Ok(()) if secret && buf.first() != Some(&4) => tracing::trace!(
                "i2c read {:#04x} ({} bytes, count byte {:#04x}; data not logged)",
                self.address,
                buf.len(),
                buf.first().copied().unwrap_or(0)
            ),
            Ok(()) if secret => tracing::trace!(
                "i2c read {:#04x} [{}] (status group; {} more bytes not logged)",
                self.address,
                hex(&buf[..4.min(buf.len())]),
                buf.len().saturating_sub(4)
            ),
            Ok(()) => tracing::trace!("i2c read {:#04x} [{}]", self.address, hex(buf)),
            Err(e) => tracing::trace!(
                "i2c read {:#04x} ({} bytes) {}",
                self.address,
                buf.len(),
                describe(e.kind())
            ),
        }
        result
    }

    /// The error for a failed transfer: a NACK is the chip not answering, anything else is
    /// the bus failing.
    fn failure(&self, e: &I2C::Error, during: &'static str) -> AteccError {
        match e.kind() {
            ErrorKind::NoAcknowledge(_) => AteccError::NoResponse {
                address: self.address,
                during,
            },
            kind => AteccError::Bus(format!(
                "{} {during}, address {:#04x} ({e:?})",
                describe(kind),
                self.address
            )),
        }
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
            if self.shared_bus {
                let _ = self.write(self.address, &[word::IDLE]);
            }
            // The general-call NACK is expected: the pulse is all that matters.
            let _ = self.write(0x00, &[0x00]);
            self.awake = Some(Duration::ZERO);
            self.woke_at = std::time::Instant::now();
            self.pause(WAKE_DELAY);
            let mut reply = [0u8; 4];
            // Secret: an awake chip may still hold a Random result here.
            match self.read(&mut reply, true) {
                Ok(()) if reply == WAKE_REPLY => return Ok(()),
                Ok(()) if reply == WAKE_SELF_TEST_FAILED => {
                    return Err(AteccError::Status { status: 0x07 });
                }
                Ok(()) => {
                    // Awake already, with something else in its output buffer: idle it so
                    // that the next pulse wakes it afresh. Only a status group is shown in
                    // full; of anything else (perhaps random data) only the count byte.
                    let shown = if reply[0] == 4 {
                        &reply[..]
                    } else {
                        &reply[..1]
                    };
                    last = Some(AteccError::Wake(shown.to_vec()));
                    let _ = self.write(self.address, &[word::IDLE]);
                }
                Err(e) => {
                    last =
                        Some(self.failure(&e, "waking it (check wiring, bus number and address)"));
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
        result.map_err(|e| self.failure(&e, during))
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
    /// 5 ms have passed. Status 0xEE (watchdog about to expire, command not executed) idles
    /// and re-wakes the chip and resends the command once (reference §7). A command started
    /// with [`Atecc608a::start`] and not yet polled for is waited for first; its result is
    /// kept for [`Atecc608a::poll`].
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
        self.settle();
        match self.exchange(op, p1, p2, data, expected) {
            Err(AteccError::Status { status: 0xEE }) => {
                tracing::debug!(
                    "ATECC608A status 0xEE (watchdog about to expire): idling, waking and \
                     resending opcode {op:#04x} once"
                );
                self.rewake();
                self.exchange(op, p1, p2, data, expected)
            }
            other => other,
        }
    }

    /// Only idle (or sleep) and a new wake reset the watchdog (reference §1). If the chip is
    /// asleep already the idle byte is NACKed, which is fine.
    fn rewake(&mut self) {
        let _ = self.idle();
        self.awake = None;
    }

    fn exchange(
        &mut self,
        op: u8,
        p1: u8,
        p2: u16,
        data: &[u8],
        expected: usize,
    ) -> Result<Vec<u8>, AteccError> {
        self.send(op, p1, p2, data, expected)?;
        // Most commands finish well before their maximum; start polling early.
        let first = (max_execution_time(op) / 4).max(POLL_INTERVAL);
        self.pause(first);
        loop {
            if let Some(result) = self.poll_once()? {
                return result;
            }
            self.pause(POLL_INTERVAL);
        }
    }

    /// Wakes the chip if needed and writes the command packet; the command is then pending.
    fn send(
        &mut self,
        op: u8,
        p1: u8,
        p2: u16,
        data: &[u8],
        expected: usize,
    ) -> Result<(), AteccError> {
        self.ready()?;
        let mut packet = Vec::with_capacity(8 + data.len());
        packet.extend_from_slice(&[word::COMMAND, (7 + data.len()) as u8, op, p1]);
        packet.extend_from_slice(&p2.to_le_bytes());
        packet.extend_from_slice(data);
        let crc = crc16(&packet[1..]);
        packet.extend_from_slice(&crc.to_le_bytes());
        if let Err(e) = self.write(self.address, &packet) {
            if !is_nack(&e) {
                self.awake = None;
                return Err(self.failure(&e, "sending a command"));
            }
            // Asleep after all (a watchdog we could not see): wake and send once more.
            self.awake = None;
            self.wake()?;
            self.write(self.address, &packet)
                .map_err(|e| self.failure(&e, "sending a command"))?;
        }
        self.pending = Some(Pending {
            op,
            expected,
            waited: Duration::ZERO,
        });
        Ok(())
    }

    /// One read for the pending command's response: `Ok(None)` while the chip is busy (NACK)
    /// and the poll window is open; `Err` for a bus failure or the window closed; otherwise
    /// the parsed response. The command is no longer pending unless `Ok(None)`.
    #[allow(clippy::type_complexity)]
    fn poll_once(&mut self) -> Result<Option<Result<Vec<u8>, AteccError>>, AteccError> {
        let Some(pending) = self.pending else {
            return Err(AteccError::NothingStarted);
        };
        let mut response = vec![0u8; group_len(pending.expected)];
        // Random data never reaches the log (invariant 6).
        let secret = pending.op == opcode::RANDOM;
        match self.read(&mut response, secret) {
            Ok(()) => {
                self.pending = None;
                Ok(Some(parse_response(&response, pending.expected)))
            }
            Err(e) if !is_nack(&e) => {
                // The chip's state is unknown now; the next command wakes it.
                self.pending = None;
                self.awake = None;
                Err(self.failure(&e, "waiting for a command's result"))
            }
            Err(_) if self.pending.is_some_and(|p| p.waited >= p.limit()) => {
                // The chip may have gone to sleep mid-command; the next command re-wakes it.
                self.pending = None;
                self.awake = None;
                Err(AteccError::NoResponse {
                    address: self.address,
                    during: "waiting for a command's result",
                })
            }
            Err(_) => Ok(None),
        }
    }

    /// Waits for a started command to finish and keeps its result for [`Atecc608a::poll`]:
    /// the chip executes one command at a time.
    fn settle(&mut self) {
        while self.pending.is_some() {
            match self.poll_once() {
                Ok(Some(result)) => self.settled = Some(result),
                Ok(None) => self.pause(POLL_INTERVAL),
                Err(e) => self.settled = Some(Err(e)),
            }
        }
    }

    /// Sends a command without waiting for its result, so that a caller driving several
    /// chips on one bus can use the bus while this one executes; [`Atecc608a::poll`] reads
    /// the result. A command started earlier and not polled for is waited for first and its
    /// result dropped.
    ///
    /// # Errors
    ///
    /// An error waking the chip or sending the packet; the command is then not started.
    pub fn start(
        &mut self,
        op: u8,
        p1: u8,
        p2: u16,
        data: &[u8],
        expected: usize,
    ) -> Result<(), AteccError> {
        self.settle();
        self.settled = None;
        self.send(op, p1, p2, data, expected)
    }

    /// One look for the result of the command [`Atecc608a::start`] sent: `Ok(None)` while the
    /// chip is still executing (it NACKs), else its data. Status 0xEE idles the chip so that
    /// the next start wakes it afresh (the caller starts the command again).
    ///
    /// # Errors
    ///
    /// [`AteccError::NothingStarted`] without a started command; otherwise any error of the
    /// exchange, as [`Atecc608a::command`] gives it (no data is returned with an error).
    pub fn poll(&mut self) -> Result<Option<Vec<u8>>, AteccError> {
        let result = match self.settled.take() {
            Some(result) => result,
            None => match self.poll_once()? {
                Some(result) => result,
                None => return Ok(None),
            },
        };
        if result == Err(AteccError::Status { status: 0xEE }) {
            self.rewake();
        }
        result.map(Some)
    }

    /// Whether a started command has not been polled for yet.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.settled.is_some()
    }

    /// Starts a Random (see [`Atecc608a::start`]).
    ///
    /// # Errors
    ///
    /// As [`Atecc608a::start`].
    pub fn start_random(&mut self) -> Result<(), AteccError> {
        self.start(opcode::RANDOM, 0, 0, &[], 32)
    }

    /// Polls for the block of a Random started by [`Atecc608a::start_random`], checked as
    /// [`Atecc608a::random`] checks it.
    ///
    /// # Errors
    ///
    /// As [`Atecc608a::poll`] and [`Atecc608a::random`].
    pub fn poll_random(&mut self) -> Result<Option<[u8; 32]>, AteccError> {
        match self.poll()? {
            Some(data) => self.check_random(data).map(Some),
            None => Ok(None),
        }
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
        self.check_random(data)
    }

    /// A Random response as a block: never the unlocked-chip pattern, never the previous one.
    fn check_random(&mut self, data: Vec<u8>) -> Result<[u8; 32], AteccError> {
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

    /// The config zone, read in full, of the chip with serial number `serial`: the check
    /// before an irreversible change (a lock, a new address).
    ///
    /// # Errors
    ///
    /// [`AteccError::WrongChip`] for another chip, or an exchange error.
    fn config_of(&mut self, serial: &[u8; 9]) -> Result<[u8; 128], AteccError> {
        let config = self.read_config_zone()?;
        let mut found = [0u8; 9];
        found[..4].copy_from_slice(&config[..4]);
        found[4..].copy_from_slice(&config[8..13]);
        if found != *serial {
            return Err(AteccError::WrongChip {
                expected: hex(serial),
                actual: hex(&found),
            });
        }
        Ok(config)
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
        let config = self.config_of(&confirm.serial)?;
        if config[87] != 0x55 {
            return Err(AteccError::AlreadyLocked);
        }
        let summary = crc16(&config);
        self.command(opcode::LOCK, 0x00, summary, &[], 0)?;
        Ok(())
    }

    /// Changes the chip's 7-bit I2C address to `address`: config byte 16 holds it in 8-bit
    /// form (0xC0 for 0x60), and Write can change it only before the config zone is locked
    /// (reference pi-crypto-speed §6; Microchip's "UpdateExtra Command"). Irreversible once
    /// the config zone is locked. The chip is checked to be the one `confirm` names; the word
    /// is read back after the write. The chip keeps answering at its old address until it
    /// next sleeps or powers up; this driver keeps the old address.
    ///
    /// # Errors
    ///
    /// [`AteccError::WrongChip`], [`AteccError::AddressLocked`], or an exchange error.
    pub fn set_address(
        &mut self,
        address: u8,
        confirm: &LockConfirmation,
    ) -> Result<(), AteccError> {
        let config = self.config_of(&confirm.serial)?;
        if config[87] != 0x55 {
            return Err(AteccError::AddressLocked);
        }
        // Word 4 of block 0: bytes 16–19 (I2C_Address, reserved, OTPmode, ChipMode); only
        // byte 16 changes.
        let word = [address << 1, config[17], config[18], config[19]];
        self.command(opcode::WRITE, 0x00, 0x0004, &word, 0)?;
        let back = self.command(opcode::READ, 0x00, 0x0004, &[], 4)?;
        if back != word {
            return Err(AteccError::Bus(format!(
                "config word 4 reads back as {} after writing {}",
                hex(&back),
                hex(&word)
            )));
        }
        Ok(())
    }
}

impl<I2C: I2c, D: DelayNs> Atecc608a<I2C, D> {
    /// Creates a new random P-256 private key inside `slot` (GenKey mode 0x04) and returns
    /// its public key `X‖Y`; the slot's old key is destroyed. Only for the chip `confirm`
    /// names. The private key never leaves the chip (`verifiable-randomness.md` §4.2).
    ///
    /// # Errors
    ///
    /// [`AteccError::WrongChip`]; [`AteccError::NotKeySlot`] for a slot above 15; the chip's
    /// status when it refuses (0x0F: config zone unlocked or the slot does not allow GenKey;
    /// 0x05: an invalid key was generated, retry).
    pub fn genkey(&mut self, confirm: &KeygenConfirmation) -> Result<[u8; 64], AteccError> {
        check_slot(confirm.slot)?;
        let serial = self.serial_number()?;
        if serial != confirm.serial {
            return Err(AteccError::WrongChip {
                expected: hex(&confirm.serial),
                actual: hex(&serial),
            });
        }
        self.key_command(mode::GENKEY_PRIVATE, confirm.slot)
    }

    /// The public key `X‖Y` of the private key in `slot` (GenKey mode 0x00).
    ///
    /// # Errors
    ///
    /// [`AteccError::NotKeySlot`] for a slot above 15; the chip's status when the slot holds
    /// no private key it may compute from (0x0F, 0x03).
    pub fn public_key(&mut self, slot: u8) -> Result<[u8; 64], AteccError> {
        check_slot(slot)?;
        self.key_command(mode::GENKEY_PUBLIC, slot)
    }

    fn key_command(&mut self, mode: u8, slot: u8) -> Result<[u8; 64], AteccError> {
        let data = self.command(opcode::GENKEY, mode, u16::from(slot), &[], 64)?;
        Ok(data.try_into().expect("parse_response checked the length"))
    }

    /// Signs a 32-byte digest with the private key in `slot`: Nonce in pass-through mode
    /// loads the digest into the Message Digest Buffer (mode 0x43), then Sign in external
    /// mode signs it from there (mode 0xA0), as cryptoauthlib's `calib_sign` does on the
    /// ATECC608 (`verifiable-randomness.md` §4.1). Returns `r‖s`, big-endian: an ECDSA P-256
    /// signature of the message whose SHA-256 is `digest`. Both commands run inside one
    /// wake, so no other command can come between them on this driver.
    ///
    /// # Errors
    ///
    /// [`AteccError::NotKeySlot`] for a slot above 15; the chip's status when it refuses
    /// (0x0F: config zone unlocked or the slot may not sign external messages).
    pub fn sign_digest(&mut self, slot: u8, digest: &[u8; 32]) -> Result<[u8; 64], AteccError> {
        check_slot(slot)?;
        // Nonce (20 ms) and Sign (115 ms) must fit in one watchdog window: the Message
        // Digest Buffer is lost when the chip sleeps. Start a fresh window when the current
        // one has less than both left.
        let both = max_execution_time(opcode::NONCE) + max_execution_time(opcode::SIGN);
        if self
            .awake
            .is_some_and(|t| t.max(self.woke_at.elapsed()) + both * 2 >= AWAKE_BUDGET)
        {
            let _ = self.idle();
        }
        self.command(
            opcode::NONCE,
            mode::NONCE_PASSTHROUGH_MSGDIGBUF,
            0,
            digest,
            0,
        )?;
        let data = self.command(
            opcode::SIGN,
            mode::SIGN_EXTERNAL_MSGDIGBUF,
            u16::from(slot),
            &[],
            64,
        )?;
        Ok(data.try_into().expect("parse_response checked the length"))
    }

    /// The value of monotonic counter `id` (0 or 1; Counter mode 0x00, §4.5).
    ///
    /// # Errors
    ///
    /// [`AteccError::NoSuchCounter`], or an exchange error.
    pub fn counter_read(&mut self, id: u8) -> Result<u32, AteccError> {
        self.counter(mode::COUNTER_READ, id)
    }

    /// Increments monotonic counter `id` (0 or 1; Counter mode 0x01) and returns its new
    /// value. After a power loss during an increment the chip may have counted more than one
    /// (§4.5), so callers compare with `>`, never `== old + 1`.
    ///
    /// # Errors
    ///
    /// [`AteccError::CounterExhausted`] when the counter is at its maximum (2,097,151);
    /// [`AteccError::NoSuchCounter`]; an exchange error.
    pub fn counter_increment(&mut self, id: u8) -> Result<u32, AteccError> {
        match self.counter(mode::COUNTER_INCREMENT, id) {
            Err(AteccError::Status { status: 0x0F }) => {
                // The chip refuses an increment only at the limit; say so when it is.
                match self.counter(mode::COUNTER_READ, id) {
                    Ok(v) if v >= COUNTER_MAX => Err(AteccError::CounterExhausted {
                        id,
                        max: COUNTER_MAX,
                    }),
                    _ => Err(AteccError::Status { status: 0x0F }),
                }
            }
            other => other,
        }
    }

    fn counter(&mut self, mode: u8, id: u8) -> Result<u32, AteccError> {
        if id > 1 {
            return Err(AteccError::NoSuchCounter(id));
        }
        let data = self.command(opcode::COUNTER, mode, u16::from(id), &[], 4)?;
        Ok(u32::from_le_bytes(
            data.try_into().expect("parse_response checked the length"),
        ))
    }
}

fn check_slot(slot: u8) -> Result<(), AteccError> {
    if slot > 15 {
        return Err(AteccError::NotKeySlot(slot));
    }
    Ok(())
}

/// Size of a status group: count byte, status, CRC-16 (reference §3).
const STATUS_GROUP: usize = 4;

/// Size of the response group for `expected` data bytes (0: a status group).
fn group_len(expected: usize) -> usize {
    if expected == 0 {
        STATUS_GROUP
    } else {
        expected + 3
    }
}

fn is_nack<E: embedded_hal::i2c::Error>(e: &E) -> bool {
    matches!(e.kind(), ErrorKind::NoAcknowledge(_))
}

/// A bus error kind for logs and messages.
fn describe(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NoAcknowledge(_) => "nack",
        ErrorKind::Bus => "bus error",
        ErrorKind::ArbitrationLoss => "arbitration lost",
        ErrorKind::Overrun => "overrun",
        _ => "bus failure",
    }
}

/// Checks a response group: `[count][data][CRC LE]`, or a 4-byte status group (reference §3).
fn parse_response(response: &[u8], expected: usize) -> Result<Vec<u8>, AteccError> {
    let count = usize::from(response[0]);
    if count == STATUS_GROUP {
        let group = &response[..4];
        check_crc(group)?;
        let status = group[1];
        if expected == 0 && status == 0x00 {
            return Ok(Vec::new());
        }
        return Err(AteccError::Status { status });
    }
    let want = group_len(expected);
    if count != want || count > response.len() {
        return Err(AteccError::Length {
            expected: want,
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
        return Err(AteccError::Crc);
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
        assert!(matches!(parse_response(&g, 4), Err(AteccError::Crc)));
    }

    #[test]
    fn a_data_reply_to_a_status_only_command_expects_the_4_byte_status_group() {
        // Count byte, status, CRC-16: 4 bytes (reference §3), not 0 + 3.
        assert_eq!(
            parse_response(&group(&[1, 2, 3, 4]), 0),
            Err(AteccError::Length {
                expected: 4,
                got: 7
            })
        );
    }
}
