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
//!   implements Info, Random, Read (config zone), Lock (config and data, with and without
//!   the summary CRC), and the key commands: GenKey (modes 0x00 and 0x04), Nonce (pass-through
//!   into TempKey or the Message Digest Buffer), Sign (external, from either) and Counter
//!   (read, increment); other opcodes answer 0x03.
//! - Keys are real ECDSA P-256 (RustCrypto's `p256`): GenKey and Sign answer 0x0F before the
//!   config zone is locked and on slots whose KeyConfig does not make them P-256 private-key
//!   slots (the factory configuration: slots 0–2, `verifiable-randomness.md` §4.4). The
//!   emulated private keys are software keys: whoever can read the state file has them.
//! - The non-volatile state a real chip keeps across power cycles — serial number, private
//!   keys, monotonic counters — is kept in [`EmulatorConfig::state_file`] when one is given
//!   (written atomically with fsync before the command answers), so an emulated chip keeps
//!   its identity across restarts. Without one it is forgotten with the emulator.
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
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource, Operation};

use p256::ecdsa::signature::hazmat::PrehashSigner;
use p256::ecdsa::{Signature, SigningKey};

use super::{
    COUNTER_MAX, DEFAULT_ADDRESS, UNLOCKED_PATTERN, WAKE_DELAY, WAKE_REPLY, WATCHDOG, crc16,
    max_execution_time, mode, opcode, transfer_time, word,
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
/// - `sign-fails`: Sign answers status 0x0F (the chip refuses to sign).
/// - `slow-signing`: Sign takes 1.3 times the datasheet maximum (150 ms instead of 115 ms),
///   still inside the driver's poll window: a slow part.
/// - `counter-at-max`: the monotonic counters read 2,097,151 and refuse increments (0x0F).
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
    "sign-fails",
    "slow-signing",
    "counter-at-max",
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
    /// Where Random's bytes come from (and the emulated chip's serial number and keys).
    pub entropy: EmulatorEntropy,
    /// Where the chip's non-volatile state (serial number, keys, counters) is kept across
    /// restarts; `None`: in memory only.
    pub state_file: Option<PathBuf>,
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
            state_file: None,
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
    /// Non-volatile: private keys by slot, counters.
    keys: [Option<SigningKey>; 16],
    counters: [u32; 2],
    /// Volatile: TempKey and the Message Digest Buffer, as loaded by Nonce.
    temp_key: Option<[u8; 32]>,
    msg_digest: Option<[u8; 32]>,
}

/// The non-volatile part of an emulated chip, as kept in its state file.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Persistent {
    /// Serial number, hex.
    serial: String,
    /// Private keys by slot, hex scalars.
    keys: std::collections::BTreeMap<u8, String>,
    counters: [u32; 2],
}

impl Emulator {
    /// An emulated chip with a fresh serial number.
    ///
    /// A state file that exists but cannot be read or parsed is reported in the log and
    /// replaced by a fresh chip only when the emulator next writes it; use
    /// [`Emulator::open`] to refuse such a file instead.
    pub fn new(config: EmulatorConfig) -> Emulator {
        match Emulator::open(config.clone()) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("ATECC608A emulator: {e}; starting as a new chip");
                Emulator::open(EmulatorConfig {
                    state_file: None,
                    ..config
                })
                .expect("without a state file nothing is read")
            }
        }
    }

    /// An emulated chip whose non-volatile state comes from [`EmulatorConfig::state_file`]
    /// when that file exists (a new chip, written there on its first change, otherwise).
    ///
    /// # Errors
    ///
    /// A state file that exists but cannot be read, or does not hold an emulated chip's
    /// state, naming the file.
    pub fn open(config: EmulatorConfig) -> io::Result<Emulator> {
        let saved = match &config.state_file {
            Some(path) => load_state(path)?,
            None => None,
        };
        // The serial number is not entropy: a failing source leaves it at zeros.
        let mut serial = [0u8; 6];
        if config.entropy.fill(&mut serial).is_err() {
            serial = [0; 6];
        }
        let mut keys: [Option<SigningKey>; 16] = Default::default();
        let mut counters = [0u32; 2];
        if let Some(saved) = &saved {
            let bad = |what: &str| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: not an emulated chip's state ({what})",
                        config
                            .state_file
                            .as_deref()
                            .unwrap_or(Path::new(""))
                            .display()
                    ),
                )
            };
            let bytes = crate::format::from_hex(&saved.serial).ok_or_else(|| bad("serial"))?;
            serial = bytes.try_into().map_err(|_| bad("serial length"))?;
            for (slot, scalar) in &saved.keys {
                let scalar = crate::format::from_hex(scalar).ok_or_else(|| bad("key"))?;
                let key = SigningKey::from_slice(&scalar).map_err(|_| bad("key"))?;
                *keys
                    .get_mut(usize::from(*slot))
                    .ok_or_else(|| bad("slot"))? = Some(key);
            }
            counters = saved.counters;
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
        // The factory SlotConfig and KeyConfig of a blank part (§4.4): slots 0–2 P-256
        // private keys that may sign external messages and be regenerated by GenKey.
        let factory: [(u16, u16); 16] = [
            (0x2083, 0x0033),
            (0x2087, 0x0033),
            (0x208F, 0x0033),
            (0x8FC4, 0x001C),
            (0x8F8F, 0x001C),
            (0x8F8F, 0x001C),
            (0x8F9F, 0x001C),
            (0x8FAF, 0x001C),
            (0x0000, 0x003C),
            (0x0000, 0x003C),
            (0x0000, 0x003C),
            (0x0000, 0x003C),
            (0x0000, 0x003C),
            (0x0000, 0x003C),
            (0x0000, 0x003C),
            (0x8FAF, 0x001C),
        ];
        for (slot, (slot_config, key_config)) in factory.iter().enumerate() {
            zone[20 + 2 * slot..][..2].copy_from_slice(&slot_config.to_le_bytes());
            zone[96 + 2 * slot..][..2].copy_from_slice(&key_config.to_le_bytes());
        }
        zone[86] = 0x55;
        zone[87] = if config.locked { 0x00 } else { 0x55 };
        Ok(Emulator {
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
            keys,
            counters,
            temp_key: None,
            msg_digest: None,
        })
    }

    /// The serial number (config bytes 0–3 and 8–12).
    fn serial(&self) -> [u8; 9] {
        let mut serial = [0u8; 9];
        serial[..4].copy_from_slice(&self.zone[..4]);
        serial[4..].copy_from_slice(&self.zone[8..13]);
        serial
    }

    /// Writes the non-volatile state to the state file, if there is one: a temporary file,
    /// fsync, rename, fsync of the directory, so a crash leaves the old or the new state.
    fn persist(&self) -> io::Result<()> {
        let Some(path) = &self.config.state_file else {
            return Ok(());
        };
        let serial = self.serial();
        let state = Persistent {
            serial: crate::format::hex(&[&serial[2..4], &serial[4..8]].concat()),
            keys: self
                .keys
                .iter()
                .enumerate()
                .filter_map(|(slot, k)| {
                    Some((slot as u8, crate::format::hex(&k.as_ref()?.to_bytes())))
                })
                .collect(),
            counters: self.counters,
        };
        let text = serde_json::to_string_pretty(&state).map_err(io::Error::other)?;
        let tmp = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Whether `slot`'s KeyConfig makes it a P-256 private-key slot (Private bit 0, KeyType
    /// bits 4..2 = 4; cryptoauthlib `calib_device.h`).
    fn is_key_slot(&self, slot: u16) -> bool {
        let Some(at) = usize::from(slot).checked_mul(2).filter(|a| *a < 32) else {
            return false;
        };
        let key_config = u16::from_le_bytes([self.zone[96 + at], self.zone[97 + at]]);
        key_config & 1 == 1 && (key_config >> 2) & 7 == 4
    }

    /// Whether `slot`'s SlotConfig lets it sign external messages (ReadKey bit 0).
    fn may_sign_external(&self, slot: u16) -> bool {
        let at = 20 + 2 * usize::from(slot);
        self.zone[at] & 1 == 1
    }

    /// GenKey (opcode 0x40): mode 0x04 creates a key, 0x00 recomputes its public key.
    fn genkey(&mut self, p1: u8, p2: u16) -> Vec<u8> {
        if p2 > 15 || !matches!(p1, mode::GENKEY_PUBLIC | mode::GENKEY_PRIVATE) {
            return status(0x03);
        }
        if self.config_zone()[87] == 0x55 || !self.is_key_slot(p2) {
            return status(0x0F);
        }
        let slot = usize::from(p2);
        if p1 == mode::GENKEY_PRIVATE {
            let mut scalar = zeroize::Zeroizing::new([0u8; 32]);
            if self.config.entropy.fill(scalar.as_mut()).is_err() {
                return status(0x08);
            }
            // A scalar of zero or ≥ n is not a key: the chip answers an ECC fault and the
            // caller retries (§4.2, "on rare occasions an invalid ECC private key is
            // generated").
            let Ok(key) = SigningKey::from_slice(scalar.as_ref()) else {
                return status(0x05);
            };
            let old = self.keys[slot].replace(key);
            if let Err(e) = self.persist() {
                tracing::error!("ATECC608A emulator: cannot save its state: {e}");
                self.keys[slot] = old;
                return status(0x0F);
            }
        }
        match &self.keys[slot] {
            Some(key) => group(&public_xy(key)),
            None => status(0x0F),
        }
    }

    /// Nonce (opcode 0x16), pass-through only (mode bits 1..0 = 3): the 32-byte input goes to
    /// TempKey, or to the Message Digest Buffer with mode bit 6 (target 0x40).
    fn nonce(&mut self, p1: u8, data: &[u8]) -> Vec<u8> {
        if p1 & 0x03 != 0x03 || data.len() != 32 || p1 & !0x43 != 0 {
            return status(0x03);
        }
        let value: [u8; 32] = data.try_into().expect("length checked");
        if p1 & 0x40 != 0 {
            self.msg_digest = Some(value);
        } else {
            self.temp_key = Some(value);
        }
        status(0x00)
    }

    /// Sign (opcode 0x41) of an external message: mode 0x80 signs TempKey, 0xA0 the Message
    /// Digest Buffer; either is used up by the signature.
    fn sign(&mut self, p1: u8, p2: u16) -> Vec<u8> {
        if p2 > 15 || !matches!(p1, 0x80 | mode::SIGN_EXTERNAL_MSGDIGBUF) {
            return status(0x03);
        }
        if self.control.is("sign-fails")
            || self.config_zone()[87] == 0x55
            || !self.is_key_slot(p2)
            || !self.may_sign_external(p2)
        {
            return status(0x0F);
        }
        let digest = if p1 == mode::SIGN_EXTERNAL_MSGDIGBUF {
            self.msg_digest.take()
        } else {
            self.temp_key.take()
        };
        let (Some(digest), Some(key)) = (digest, &self.keys[usize::from(p2)]) else {
            return status(0x0F);
        };
        let signature: Signature = match key.sign_prehash(&digest) {
            Ok(s) => s,
            Err(_) => return status(0x05),
        };
        group(&signature.to_bytes())
    }

    /// Counter (opcode 0x24): mode 0 reads, mode 1 increments; the value little-endian.
    fn counter(&mut self, p1: u8, p2: u16) -> Vec<u8> {
        if p2 > 1 || p1 > mode::COUNTER_INCREMENT {
            return status(0x03);
        }
        let id = usize::from(p2);
        if self.control.is("counter-at-max") {
            self.counters[id] = COUNTER_MAX;
        }
        if p1 == mode::COUNTER_INCREMENT {
            if self.counters[id] >= COUNTER_MAX {
                return status(0x0F);
            }
            self.counters[id] += 1;
            if let Err(e) = self.persist() {
                tracing::error!("ATECC608A emulator: cannot save its state: {e}");
                self.counters[id] -= 1;
                return status(0x0F);
            }
        }
        group(&self.counters[id].to_le_bytes())
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
        if op == opcode::SIGN && self.control.is("slow-signing") {
            time = time * 13 / 10;
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
            opcode::GENKEY => self.genkey(p1, p2),
            opcode::NONCE => self.nonce(p1, &packet[5..count - 2]),
            opcode::SIGN => self.sign(p1, p2),
            opcode::COUNTER => self.counter(p1, p2),
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

/// The public key of `key` as the chip returns it: `X‖Y`, 64 bytes.
fn public_xy(key: &SigningKey) -> [u8; 64] {
    let point = key.verifying_key().to_sec1_point(false);
    let mut xy = [0u8; 64];
    xy.copy_from_slice(&point.as_bytes()[1..65]);
    xy
}

fn load_state(path: &Path) -> io::Result<Option<Persistent>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "cannot read the emulated chip's state {}: {e}",
                    path.display()
                ),
            ));
        }
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not an emulated chip's state: {e}", path.display()),
        )
    })
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
