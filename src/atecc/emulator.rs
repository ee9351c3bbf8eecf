//! A byte-faithful ATECC608A emulator on a virtual I2C bus (reference §9 is its checklist).
//!
//! # Contract
//!
//! - [`Emulator`] implements embedded-hal's [`I2c`](embedded_hal::i2c::I2c) at the byte level:
//!   it starts asleep; a write to address 0x00 wakes it (the general call is NACKed); it NACKs
//!   its address while asleep, idle, waking (tWHI) or busy executing; word addresses 0x00
//!   (reset the read pointer), 0x01 (sleep), 0x02 (idle) and 0x03 (command) act as on the chip;
//!   reads come from the output buffer and are padded with 0xFF; the watchdog puts it to sleep
//!   1.3 s after a wake unless it idles or sleeps first.
//! - Commands are checked in the chip's order (§9): CRC or length → status 0xFF; too little
//!   watchdog time left → 0xEE; illegal parameters → 0x03; state violation → 0x0F. It
//!   implements Info, Random, Read (config zone) and Lock (config and data, with and without
//!   the summary CRC); other opcodes answer 0x03.
//! - The 128-byte config zone has the serial number (`01 23 …`, byte 12 `EE`), the revision
//!   `00 00 60 02`, the I2C address and the lock bytes (0x55 unlocked, 0x00 locked). Random
//!   gives `FF FF 00 00 …` while the config zone is unlocked, else 32 bytes from an
//!   [`EmulatorEntropy`], by default the operating system's RNG (`/dev/urandom`) — which is
//!   why emulator output is never credited to the kernel. When that source fails, Random
//!   answers status 0x08 (the chip's RNG health-test error): never zeros, never a partial
//!   block.
//! - Time comes from a [`Clock`]: real (transfers and executions take real time, for demos and
//!   throughput benchmarks) or virtual (time moves only when [`EmulatorDelay`] or a transfer
//!   advances it, so tests run thousands of commands in milliseconds). Transfers cost 9
//!   bit-times per byte at 100 kHz; executions take the datasheet maximum, a typical time or
//!   a fixed time ([`Timing`]). The watchdog period is configurable (1.3 s by default).
//! - Faults ([`FAULTS`]) are switched on and off through an [`EmulatorControl`] while the
//!   emulator runs, from tests or from the daemon (`--emulate-fault`, the admin fault switch).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource, Operation};

use super::{
    DEFAULT_ADDRESS, UNLOCKED_PATTERN, WAKE_DELAY, WAKE_REPLY, WATCHDOG, crc16, max_execution_time,
    opcode, transfer_time, word,
};

/// The emulator's faults, by name (kebab-case, as `--emulate-fault` takes them):
///
/// - `unlocked`: the config zone reads as unlocked and Random returns `FF FF 00 00 …`.
/// - `stuck-output`: Random returns the same block every time.
/// - `constant-byte`: Random returns 32 equal bytes.
/// - `crc-corruption`: one response in four has a corrupted byte.
/// - `nack-burst`: the chip NACKs bursts of 100 transfers in every 128 (longer than any
///   driver poll window, so commands are lost).
/// - `bus-gone`: every transfer fails with a bus error (not a NACK), as on an I2C adapter
///   that has gone away; the driver reports [`AteccError::Bus`](super::AteccError::Bus).
/// - `slow-execution`: commands take three times the datasheet maximum.
/// - `watchdog-sleep`: the chip falls asleep while executing, so results never arrive.
/// - `wrong-revision`: Info reports an ATECC508A (`00 00 50 00`).
pub const FAULTS: &[&str] = &[
    "unlocked",
    "stuck-output",
    "constant-byte",
    "crc-corruption",
    "nack-burst",
    "bus-gone",
    "slow-execution",
    "watchdog-sleep",
    "wrong-revision",
];

/// The emulator's time.
#[derive(Debug, Clone)]
pub enum Clock {
    /// Real time: advancing sleeps.
    Real(Instant),
    /// Virtual time in nanoseconds, shared by clones: advancing adds.
    Virtual(Arc<AtomicU64>),
}

impl Clock {
    /// A real clock.
    pub fn real() -> Clock {
        Clock::Real(Instant::now())
    }

    /// A virtual clock at zero.
    pub fn virtual_time() -> Clock {
        Clock::Virtual(Arc::new(AtomicU64::new(0)))
    }

    /// Time since the clock started.
    pub fn now(&self) -> Duration {
        match self {
            Clock::Real(origin) => origin.elapsed(),
            Clock::Virtual(ns) => Duration::from_nanos(ns.load(Ordering::Acquire)),
        }
    }

    /// Lets `d` pass: sleeps on a real clock, moves a virtual one.
    pub fn advance(&self, d: Duration) {
        match self {
            Clock::Real(_) => std::thread::sleep(d),
            Clock::Virtual(ns) => {
                ns.fetch_add(
                    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                    Ordering::AcqRel,
                );
            }
        }
    }
}

/// A [`DelayNs`] on a [`Clock`]: the driver's delays for an emulated chip.
#[derive(Debug, Clone)]
pub struct EmulatorDelay(pub Clock);

impl DelayNs for EmulatorDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.0.advance(Duration::from_nanos(u64::from(ns)));
    }
}

/// How long commands take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// The datasheet maximum (cryptoauthlib's ATECC608 M0 table, reference §4).
    Maximum,
    /// Half the maximum: the typical times are not published (reference §10), this is an
    /// assumption for demos.
    Typical,
    /// No execution time: for tests that only care about bytes.
    Instant,
    /// Every command takes this long: for tests of the driver's polling.
    Fixed(Duration),
}

impl Timing {
    fn of(self, op: u8) -> Duration {
        match self {
            Timing::Maximum => max_execution_time(op),
            Timing::Typical => max_execution_time(op) / 2,
            Timing::Instant => Duration::ZERO,
            Timing::Fixed(d) => d,
        }
    }
}

type Fill = dyn FnMut(&mut [u8]) -> io::Result<()> + Send;

/// Where the emulator's random bytes come from: the operating system's RNG by default, or any
/// function (for tests of what happens when it fails). Clones share the source.
#[derive(Clone)]
pub struct EmulatorEntropy(Arc<Mutex<Fill>>);

impl EmulatorEntropy {
    /// The operating system's RNG: `/dev/urandom`, opened on first use and kept open. An
    /// open or read failure is an error, never zeros.
    pub fn os() -> EmulatorEntropy {
        let mut file: Option<File> = None;
        EmulatorEntropy::from_fn(move |buf| {
            if file.is_none() {
                file = Some(File::open("/dev/urandom")?);
            }
            let result = match &mut file {
                Some(f) => f.read_exact(buf),
                None => unreachable!("opened above"),
            };
            if result.is_err() {
                // Open it afresh next time.
                file = None;
            }
            result
        })
    }

    /// Bytes from `fill`, which must fill the whole buffer or fail.
    pub fn from_fn(
        fill: impl FnMut(&mut [u8]) -> io::Result<()> + Send + 'static,
    ) -> EmulatorEntropy {
        EmulatorEntropy(Arc::new(Mutex::new(fill)))
    }

    /// Fills `buf` completely, or fails (then `buf` must not be used).
    ///
    /// # Errors
    ///
    /// The source's error.
    pub fn fill(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut fill = self.0.lock().unwrap_or_else(|e| e.into_inner());
        fill(buf)
    }
}

impl std::fmt::Debug for EmulatorEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EmulatorEntropy(..)")
    }
}

/// How to build an [`Emulator`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Its time.
    pub clock: Clock,
    /// Execution times.
    pub timing: Timing,
    /// Whether the config zone starts locked (a provisioned chip).
    pub locked: bool,
    /// Its 7-bit address.
    pub address: u8,
    /// tWHI.
    pub wake_delay: Duration,
    /// The watchdog period: the chip sleeps this long after a wake unless it idles or sleeps
    /// first (ChipMode bit 2 clear: about 1.3 s, reference §1).
    pub watchdog: Duration,
    /// Where Random's bytes come from.
    pub entropy: EmulatorEntropy,
}

impl Default for EmulatorConfig {
    /// A provisioned chip at 0x60 with datasheet-maximum timing on a real clock, the 1.3 s
    /// watchdog and the operating system's RNG.
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            clock: Clock::real(),
            timing: Timing::Maximum,
            locked: true,
            address: DEFAULT_ADDRESS,
            wake_delay: WAKE_DELAY,
            watchdog: WATCHDOG,
            entropy: EmulatorEntropy::os(),
        }
    }
}

impl EmulatorConfig {
    /// A provisioned chip on a virtual clock with maximum timing: fast, faithful tests.
    pub fn virtual_time() -> EmulatorConfig {
        EmulatorConfig {
            clock: Clock::virtual_time(),
            ..EmulatorConfig::default()
        }
    }
}

/// Switches the emulator's faults; cheap to clone, shared with the emulator.
#[derive(Debug, Clone, Default)]
pub struct EmulatorControl {
    active: Arc<Mutex<BTreeSet<&'static str>>>,
}

impl EmulatorControl {
    /// Turns the fault `name` on or off.
    ///
    /// # Errors
    ///
    /// An unknown name, with the list of known ones.
    pub fn set(&self, name: &str, on: bool) -> Result<(), String> {
        let Some(fault) = FAULTS.iter().find(|f| **f == name) else {
            return Err(format!(
                "unknown emulator fault {name:?}; known faults: {}",
                FAULTS.join(", ")
            ));
        };
        let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if on {
            active.insert(fault);
        } else {
            active.remove(fault);
        }
        Ok(())
    }

    /// The faults active now.
    pub fn active(&self) -> Vec<String> {
        let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
        active.iter().map(|f| (*f).to_string()).collect()
    }

    fn is(&self, name: &str) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(name)
    }
}

/// A bus error from the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatorError(pub ErrorKind);

impl embedded_hal::i2c::Error for EmulatorError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

const NACK: EmulatorError = EmulatorError(ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address));

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Power {
    Asleep,
    Idle,
    Awake,
}

/// The emulated chip.
#[derive(Debug)]
pub struct Emulator {
    config: EmulatorConfig,
    control: EmulatorControl,
    power: Power,
    /// Not answering before this time (waking or executing).
    ready_at: Duration,
    /// The watchdog puts the chip to sleep at this time.
    watchdog_at: Duration,
    output: Vec<u8>,
    read_pos: usize,
    input: Vec<u8>,
    zone: [u8; 128],
    transfers: u64,
    responses: u64,
    stuck: Option<[u8; 32]>,
}

impl Emulator {
    /// An emulated chip with a fresh serial number.
    pub fn new(config: EmulatorConfig) -> Emulator {
        // The serial number is not entropy: a failing source leaves it at zeros.
        let mut serial = [0u8; 6];
        if config.entropy.fill(&mut serial).is_err() {
            serial = [0; 6];
        }
        let mut zone = [0u8; 128];
        // Serial number: bytes 0–1 are always 01 23, byte 12 is EE (reference §6).
        zone[..4].copy_from_slice(&[0x01, 0x23, serial[0], serial[1]]);
        zone[4..8].copy_from_slice(&[0x00, 0x00, 0x60, 0x02]);
        zone[8..12].copy_from_slice(&serial[2..6]);
        zone[12] = 0xEE;
        zone[13] = 0x01; // AES enabled
        zone[14] = 0x01; // I2C
        zone[16] = config.address << 1;
        zone[86] = 0x55;
        zone[87] = if config.locked { 0x00 } else { 0x55 };
        Emulator {
            config,
            control: EmulatorControl::default(),
            power: Power::Asleep,
            ready_at: Duration::ZERO,
            watchdog_at: Duration::ZERO,
            output: Vec::new(),
            read_pos: 0,
            input: Vec::new(),
            zone,
            transfers: 0,
            responses: 0,
            stuck: None,
        }
    }

    /// The fault switch of this emulator.
    pub fn control(&self) -> EmulatorControl {
        self.control.clone()
    }

    /// A delay on this emulator's clock, for the driver.
    pub fn delay(&self) -> EmulatorDelay {
        EmulatorDelay(self.config.clock.clone())
    }

    /// The config zone as the chip shows it (with the `unlocked` and `wrong-revision` faults
    /// applied).
    pub fn config_zone(&self) -> [u8; 128] {
        let mut zone = self.zone;
        if self.control.is("unlocked") {
            zone[87] = 0x55;
        }
        if self.control.is("wrong-revision") {
            zone[4..8].copy_from_slice(&[0x00, 0x00, 0x50, 0x00]);
        }
        zone
    }

    /// Its 7-bit I2C address.
    pub fn address(&self) -> u8 {
        self.config.address
    }

    /// A wake pulse on its bus has just ended (the bus's time already counted): it wakes,
    /// unless awake already (§1). Every chip on a bus sees the pulse.
    pub fn wake_pulse(&mut self) {
        self.tick();
        if self.power != Power::Awake {
            let now = self.now();
            self.power = Power::Awake;
            self.ready_at = now + self.config.wake_delay;
            self.watchdog_at = now + self.config.watchdog;
            self.output = WAKE_REPLY.to_vec();
            self.read_pos = 0;
            self.input.clear();
        }
    }

    fn now(&self) -> Duration {
        self.config.clock.now()
    }

    /// Applies what time did: the watchdog's sleep.
    fn tick(&mut self) {
        if self.power == Power::Awake && self.now() >= self.watchdog_at {
            self.asleep();
        }
    }

    fn answering(&self) -> bool {
        self.power == Power::Awake && self.now() >= self.ready_at
    }

    fn write(&mut self, address: u8, bytes: &[u8]) -> Result<(), EmulatorError> {
        if address == 0x00 {
            // The wake pulse: SDA low for 8 bit-times.
            self.config.clock.advance(transfer_time(0));
            self.wake_pulse();
            return Err(NACK);
        }
        self.tick();
        if address != self.config.address || !self.answering() {
            self.config.clock.advance(transfer_time(0));
            return Err(NACK);
        }
        self.config.clock.advance(transfer_time(bytes.len()));
        let Some((&first, rest)) = bytes.split_first() else {
            return Ok(());
        };
        match first {
            word::RESET => self.read_pos = 0,
            word::SLEEP => self.asleep(),
            word::IDLE => {
                self.power = Power::Idle;
                self.output.clear();
                self.input.clear();
            }
            word::COMMAND => {
                self.input.extend_from_slice(rest);
                let Some(&count) = self.input.first() else {
                    return Ok(());
                };
                let count = usize::from(count);
                if self.input.len() >= count || count < 7 {
                    let packet = std::mem::take(&mut self.input);
                    self.execute(&packet[..count.clamp(1, packet.len())]);
                }
            }
            // Reserved word addresses are ignored.
            _ => {}
        }
        Ok(())
    }

    fn read(&mut self, address: u8, buf: &mut [u8]) -> Result<(), EmulatorError> {
        self.tick();
        if address != self.config.address || !self.answering() {
            self.config.clock.advance(transfer_time(0));
            return Err(NACK);
        }
        self.config.clock.advance(transfer_time(buf.len()));
        for b in buf.iter_mut() {
            *b = self.output.get(self.read_pos).copied().unwrap_or(0xFF);
            self.read_pos += 1;
        }
        Ok(())
    }

    /// Runs one command packet `[count][opcode][p1][p2 LE][data][CRC LE]`.
    fn execute(&mut self, packet: &[u8]) {
        let now = self.now();
        self.read_pos = 0;
        let count = usize::from(packet[0]);
        let crc_ok = count >= 7
            && packet.len() == count
            && crc16(&packet[..count - 2]).to_le_bytes() == packet[count - 2..];
        if !crc_ok {
            self.respond(status(0xFF), now);
            return;
        }
        let (op, p1, p2) = (
            packet[1],
            packet[2],
            u16::from_le_bytes([packet[3], packet[4]]),
        );
        let mut time = self.config.timing.of(op);
        if self.control.is("slow-execution") {
            time *= 3;
        }
        if now + time > self.watchdog_at {
            self.respond(status(0xEE), now);
            return;
        }
        let response = match op {
            opcode::INFO if p1 == 0 => group(&self.config_zone()[4..8]),
            opcode::RANDOM if p1 == 0 => match self.random_block() {
                Ok(block) => group(&block),
                // The random number generator failed: the chip's health-test status.
                Err(()) => status(0x08),
            },
            opcode::READ => self.read_config(p1, p2),
            opcode::LOCK => self.lock(p1, p2),
            opcode::WRITE => self.write_config(p1, p2, &packet[5..count - 2]),
            _ => status(0x03),
        };
        self.respond(response, now + time);
        if self.control.is("watchdog-sleep") {
            // Asleep in the middle of the execution: the result is lost.
            self.power = Power::Asleep;
            self.output.clear();
        }
    }

    fn respond(&mut self, mut response: Vec<u8>, ready_at: Duration) {
        self.responses += 1;
        if self.control.is("crc-corruption") && self.responses.is_multiple_of(4) {
            let last = response.len() - 3;
            response[last] ^= 0x5A;
        }
        self.output = response;
        self.read_pos = 0;
        self.ready_at = ready_at;
    }

    /// A Random block, or `Err` when the entropy source failed (never zeros, never part of
    /// a block).
    fn random_block(&mut self) -> Result<[u8; 32], ()> {
        if self.config_zone()[87] == 0x55 {
            return Ok(UNLOCKED_PATTERN);
        }
        if self.control.is("constant-byte") {
            return Ok([0x5A; 32]);
        }
        let mut block = [0u8; 32];
        if let Err(e) = self.config.entropy.fill(&mut block) {
            tracing::error!(
                "ATECC608A emulator: its entropy source failed ({e}); Random answers status 0x08"
            );
            return Err(());
        }
        if self.control.is("stuck-output") {
            return Ok(*self.stuck.get_or_insert(block));
        }
        self.stuck = None;
        Ok(block)
    }

    /// Read (opcode 0x02) from the config zone: a 4-byte word, or a 32-byte block when bit 7 of
    /// p1 is set; p2 = block << 3 | word (reference §6).
    fn read_config(&self, p1: u8, p2: u16) -> Vec<u8> {
        if p1 & 0x03 != 0 || p1 & 0x7C != 0 {
            return status(0x03); // Only the config zone is modelled.
        }
        let (block, offset) = (usize::from(p2 >> 3), usize::from(p2 & 7));
        let zone = self.config_zone();
        if p1 & 0x80 != 0 {
            if block >= 4 || offset != 0 {
                return status(0x03);
            }
            group(&zone[block * 32..][..32])
        } else {
            if block >= 4 {
                return status(0x03);
            }
            group(&zone[block * 32 + offset * 4..][..4])
        }
    }

    /// Write (opcode 0x12) of a 4-byte config word while the config zone is unlocked: bytes
    /// 16–83 (0–15 are read-only, 84–87 belong to UpdateExtra and Lock); anything else answers
    /// 0x0F, other zones and sizes 0x03 (the model's choice). A new I2C address (byte 16)
    /// takes effect when the chip next sleeps.
    fn write_config(&mut self, p1: u8, p2: u16, data: &[u8]) -> Vec<u8> {
        if p1 != 0x00 || data.len() != 4 {
            return status(0x03);
        }
        let offset = usize::from(p2 >> 3) * 32 + usize::from(p2 & 7) * 4;
        if self.config_zone()[87] != 0x55 || !(16..84).contains(&offset) {
            return status(0x0F);
        }
        self.zone[offset..offset + 4].copy_from_slice(data);
        status(0x00)
    }

    /// Asleep now: a new I2C address written to config byte 16 applies from here on.
    fn asleep(&mut self) {
        self.power = Power::Asleep;
        self.output.clear();
        self.input.clear();
        self.config.address = self.zone[16] >> 1;
    }

    /// Lock (opcode 0x17): config (mode 0) or data (mode 1); bit 7 skips the summary CRC.
    /// A second lock or a CRC mismatch answers 0x0F (reference §6, the model's choice).
    fn lock(&mut self, p1: u8, p2: u16) -> Vec<u8> {
        if p1 & 0x40 != 0 {
            return status(0x03);
        }
        let check_crc = p1 & 0x80 == 0;
        match p1 & 0x03 {
            0 => {
                // As the chip shows itself: the `unlocked` fault is an unprovisioned chip,
                // and provisioning it ends the fault.
                let zone = self.config_zone();
                if zone[87] != 0x55 || (check_crc && crc16(&zone) != p2) {
                    return status(0x0F);
                }
                self.zone[87] = 0x00;
                let _ = self.control.set("unlocked", false);
                status(0x00)
            }
            1 => {
                if self.config_zone()[87] == 0x55 || self.zone[86] != 0x55 {
                    return status(0x0F);
                }
                self.zone[86] = 0x00;
                status(0x00)
            }
            _ => status(0x03),
        }
    }
}

/// A response group `[count][payload][CRC LE]`.
fn group(payload: &[u8]) -> Vec<u8> {
    let mut g = Vec::with_capacity(payload.len() + 3);
    g.push((payload.len() + 3) as u8);
    g.extend_from_slice(payload);
    let crc = crc16(&g);
    g.extend_from_slice(&crc.to_le_bytes());
    g
}

fn status(code: u8) -> Vec<u8> {
    group(&[code])
}

impl embedded_hal::i2c::ErrorType for Emulator {
    type Error = EmulatorError;
}

impl embedded_hal::i2c::I2c for Emulator {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.transfers += 1;
        if self.control.is("bus-gone") {
            self.config.clock.advance(transfer_time(0));
            return Err(EmulatorError(ErrorKind::Other));
        }
        if self.control.is("nack-burst") && self.transfers % 128 < 100 {
            self.config.clock.advance(transfer_time(0));
            return Err(NACK);
        }
        for op in operations {
            match op {
                Operation::Write(bytes) => self.write(address, bytes)?,
                Operation::Read(buf) => self.read(address, buf)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal::i2c::I2c;

    fn awake(e: &mut Emulator) {
        assert_eq!(e.write(0x00, &[0x00]), Err(NACK));
        e.config.clock.advance(WAKE_DELAY);
    }

    #[test]
    fn nacks_while_asleep_and_during_twhi_then_gives_the_wake_reply() {
        let mut e = Emulator::new(EmulatorConfig::virtual_time());
        let mut buf = [0u8; 4];
        assert_eq!(e.read(0x60, &mut buf), Err(NACK), "asleep");
        assert_eq!(
            e.write(0x00, &[0x00]),
            Err(NACK),
            "the wake pulse is a general call"
        );
        assert_eq!(e.read(0x60, &mut buf), Err(NACK), "inside tWHI");
        e.config.clock.advance(WAKE_DELAY);
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf, WAKE_REPLY);
        // Reads continue where they stopped and pad with 0xFF.
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf, [0xFF; 4]);
        e.write(0x60, &[word::RESET]).unwrap();
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf, WAKE_REPLY);
    }

    #[test]
    fn a_bad_crc_is_status_ff_and_an_unknown_opcode_03() {
        let mut e = Emulator::new(EmulatorConfig::virtual_time());
        awake(&mut e);
        e.write(0x60, &[0x03, 0x07, 0x1B, 0x00, 0x00, 0x00, 0x24, 0xCE])
            .unwrap();
        let mut buf = [0u8; 4];
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf, [0x04, 0xFF, 0x01, 0x42]);
        let mut packet = vec![0x07, 0x99, 0x00, 0x00, 0x00];
        let crc = crc16(&packet);
        packet.extend_from_slice(&crc.to_le_bytes());
        packet.insert(0, 0x03);
        e.write(0x60, &packet).unwrap();
        e.config.clock.advance(Duration::from_millis(60));
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf, [0x04, 0x03, 0x83, 0x42]);
    }

    #[test]
    fn busy_while_executing_and_asleep_after_the_watchdog() {
        let mut e = Emulator::new(EmulatorConfig::virtual_time());
        awake(&mut e);
        e.write(0x60, &[0x03, 0x07, 0x1B, 0x00, 0x00, 0x00, 0x24, 0xCD])
            .unwrap();
        let mut buf = [0u8; 35];
        assert_eq!(e.read(0x60, &mut buf), Err(NACK), "busy");
        e.config.clock.advance(Duration::from_millis(23));
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf[0], 0x23);
        e.config.clock.advance(WATCHDOG);
        assert_eq!(
            e.read(0x60, &mut buf),
            Err(NACK),
            "the watchdog put it to sleep"
        );
    }

    #[test]
    fn too_little_watchdog_time_left_is_status_ee() {
        let mut e = Emulator::new(EmulatorConfig::virtual_time());
        awake(&mut e);
        e.config.clock.advance(WATCHDOG - Duration::from_millis(10));
        e.write(0x60, &[0x03, 0x07, 0x1B, 0x00, 0x00, 0x00, 0x24, 0xCD])
            .unwrap();
        let mut buf = [0u8; 4];
        e.read(0x60, &mut buf).unwrap();
        assert_eq!(buf, [0x04, 0xEE, 0x31, 0x41]);
    }

    #[test]
    fn the_fault_switch_knows_its_faults() {
        let c = EmulatorControl::default();
        for f in FAULTS {
            c.set(f, true).unwrap();
        }
        assert_eq!(c.active().len(), FAULTS.len());
        let e = c.set("gremlins", true).unwrap_err();
        assert!(e.contains("stuck-output"), "{e}");
        c.set("bus-gone", false).unwrap();
        assert!(!c.active().contains(&"bus-gone".to_string()));
    }

    #[test]
    fn bus_gone_fails_every_transfer() {
        let mut e = Emulator::new(EmulatorConfig::virtual_time());
        e.control().set("bus-gone", true).unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(
            I2c::read(&mut e, 0x60, &mut buf),
            Err(EmulatorError(ErrorKind::Other))
        );
        assert_eq!(
            I2c::write(&mut e, 0x00, &[0]),
            Err(EmulatorError(ErrorKind::Other))
        );
    }
}
