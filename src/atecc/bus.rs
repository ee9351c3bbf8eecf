//! Several ATECC608As on one I2C bus: the shared bus, its emulated form, and the one thread
//! per bus that keeps every chip busy.
//!
//! # Contract
//!
//! - [`SharedBus`] hands one bus to several drivers: each transaction holds the bus for its
//!   whole length, so transfers serialise as on the wire.
//! - [`EmulatedBus`] puts several [`Emulator`]s on one virtual bus with one [`Clock`]: a
//!   transfer is routed to the chip at its address (no chip there: a NACK, costing the
//!   address byte's time); the wake pulse (a write to address 0x00) reaches every chip, as the
//!   low SDA pulse does on a real bus. Transfers cost bus time one after another; executions
//!   are each chip's own and overlap.
//! - [`BusHarvest`] drives the chips of one bus from one thread (reference pi-crypto-speed
//!   §6: at 100 kHz the bus is idle about 85% of a Random): it sends a Random to every chip
//!   whose previous block has been taken, and reads each result when it is due, earliest
//!   first, while the others execute. With other chips on the bus the first poll waits the
//!   datasheet's maximum execution time (cryptoauthlib's `calib_execution.c`), since polls
//!   for a busy chip cost bus time the others need; a lone chip is polled from a quarter of
//!   it, as [`Atecc608a::command`] does. Time spent on one chip is reported to the others'
//!   drivers ([`Atecc608a::note_elapsed`]), so their watchdog and poll windows stay right.
//! - Each chip is a [`BusChipSource`]: a [`Source`] with its own name, kind and errors (its
//!   own health tests, state and counters in the daemon), and a [`Chip`] for device requests,
//!   which run between the scheduler's steps ([`Atecc608a::command`] waits for a started
//!   Random first). Each source holds at most one block ahead; a chip whose block has not been
//!   taken is not sent another command. After an error the chip is tried again only when its
//!   source asks for data again (the harvest loop's backoff decides when), and after a
//!   non-transient error its device is checked again first ([`Atecc608a::check_usable`]).
//! - The thread ends, putting its chips to sleep, once every source of the bus is dropped.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind as I2cErrorKind, I2c, NoAcknowledgeSource, Operation};

use super::driver::POLL_INTERVAL;
use super::emulator::EmulatorError;
use super::source::classify;
use super::{
    Atecc608a, AteccError, Chip, Clock, DeviceInfo, Emulator, EmulatorConfig, EmulatorControl,
    EmulatorDelay, KeygenConfirmation, LockConfirmation, max_execution_time, opcode, transfer_time,
};
use crate::source::{ErrorKind, Source, SourceError, SourceKind};

/// One I2C bus shared by several drivers; clones share the bus.
#[derive(Debug)]
pub struct SharedBus<B>(Arc<Mutex<B>>);

impl<B> Clone for SharedBus<B> {
    fn clone(&self) -> Self {
        SharedBus(self.0.clone())
    }
}

impl<B> SharedBus<B> {
    /// Shares `bus`.
    pub fn new(bus: B) -> SharedBus<B> {
        SharedBus(Arc::new(Mutex::new(bus)))
    }

    /// Runs `f` on the bus, holding it.
    pub fn with<R>(&self, f: impl FnOnce(&mut B) -> R) -> R {
        let mut bus = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut bus)
    }
}

impl<B: I2c> embedded_hal::i2c::ErrorType for SharedBus<B> {
    type Error = B::Error;
}

impl<B: I2c> I2c for SharedBus<B> {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        self.with(|bus| bus.transaction(address, operations))
    }
}

/// Why a chip cannot join a bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// Another chip on the bus has this address.
    #[error("two chips on one bus at address {0:#04x}: give each its own address")]
    AddressTaken(u8),
}

/// Emulated chips on one virtual bus with one clock (see the module documentation).
#[derive(Debug)]
pub struct EmulatedBus {
    clock: Clock,
    chips: Vec<Emulator>,
}

impl EmulatedBus {
    /// An empty bus on `clock`.
    pub fn new(clock: Clock) -> EmulatedBus {
        EmulatedBus {
            clock,
            chips: Vec::new(),
        }
    }

    /// Puts a chip built from `config` on the bus (its clock replaced by the bus's) and
    /// returns its fault switch.
    ///
    /// # Errors
    ///
    /// [`BusError::AddressTaken`] when a chip already answers at its address.
    pub fn add(&mut self, config: EmulatorConfig) -> Result<EmulatorControl, BusError> {
        if self.chips.iter().any(|c| c.address() == config.address) {
            return Err(BusError::AddressTaken(config.address));
        }
        let chip = Emulator::new(EmulatorConfig {
            clock: self.clock.clone(),
            ..config
        });
        let control = chip.control();
        self.chips.push(chip);
        Ok(control)
    }

    /// The bus's clock.
    pub fn clock(&self) -> Clock {
        self.clock.clone()
    }

    /// A delay on the bus's clock, for the drivers.
    pub fn delay(&self) -> EmulatorDelay {
        EmulatorDelay(self.clock.clone())
    }
}

impl embedded_hal::i2c::ErrorType for EmulatedBus {
    type Error = EmulatorError;
}

impl I2c for EmulatedBus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        if address == 0x00 {
            // The wake pulse holds SDA low for every chip on the bus.
            self.clock.advance(transfer_time(0));
            for chip in &mut self.chips {
                chip.wake_pulse();
            }
            return Err(EmulatorError(I2cErrorKind::NoAcknowledge(
                NoAcknowledgeSource::Address,
            )));
        }
        match self.chips.iter_mut().find(|c| c.address() == address) {
            Some(chip) => chip.transaction(address, operations),
            None => {
                self.clock.advance(transfer_time(0));
                Err(EmulatorError(I2cErrorKind::NoAcknowledge(
                    NoAcknowledgeSource::Address,
                )))
            }
        }
    }
}

type Driver<B, D> = Atecc608a<SharedBus<B>, D>;
type Block = Result<[u8; 32], SourceError>;

/// What a [`BusChipSource`] tells the bus thread.
#[derive(Debug, Default)]
struct Link {
    /// Blocks the source has asked for so far; more than it was sent means it is waiting
    /// (after an error or a rest, the chip is then tried again).
    requests: AtomicU64,
    /// Rest requested: 1 idle, 2 sleep.
    rest: AtomicU8,
    /// The device changed (its config was locked): check it again before using it.
    recheck: AtomicBool,
    /// The bus thread, to wake it.
    thread: OnceLock<Thread>,
}

impl Link {
    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// How long a source waits for its block before reporting the bus thread as stuck: far more
/// than a Random's cycle (~27 ms) or a device check.
const BLOCK_WAIT: Duration = Duration::from_secs(5);

/// One chip of a [`BusHarvest`]: a [`Source`] of its blocks and a [`Chip`] for device
/// requests.
pub struct BusChipSource<B, D> {
    name: String,
    kind: SourceKind,
    driver: Arc<Mutex<Driver<B, D>>>,
    blocks: Receiver<Block>,
    link: Arc<Link>,
}

impl<B, D> std::fmt::Debug for BusChipSource<B, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusChipSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<B: I2c + Send, D: DelayNs + Send> BusChipSource<B, D> {
    fn driver(&self) -> std::sync::MutexGuard<'_, Driver<B, D>> {
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<B: I2c + Send, D: DelayNs + Send> Source for BusChipSource<B, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        for chunk in out.chunks_mut(32) {
            self.link.requests.fetch_add(1, Ordering::AcqRel);
            self.link.wake();
            match self.blocks.recv_timeout(BLOCK_WAIT) {
                Ok(Ok(block)) => chunk.copy_from_slice(&block[..chunk.len()]),
                Ok(Err(e)) => return Err(e),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(SourceError::new(
                        ErrorKind::Transient,
                        format!(
                            "no block from the bus thread within {} s",
                            BLOCK_WAIT.as_secs()
                        ),
                    ));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(SourceError::new(
                        ErrorKind::Gone,
                        "the bus thread has ended",
                    ));
                }
            }
        }
        Ok(())
    }

    fn rest(&mut self, deep: bool) {
        self.link
            .rest
            .store(if deep { 2 } else { 1 }, Ordering::Release);
        self.link.wake();
    }
}

impl<B: I2c + Send, D: DelayNs + Send> Chip for BusChipSource<B, D> {
    fn device_info(&mut self) -> Result<DeviceInfo, AteccError> {
        self.driver().device_info()
    }

    fn lock_config(&mut self, confirm: &LockConfirmation) -> Result<(), AteccError> {
        let result = self.driver().lock_config(confirm);
        self.link.recheck.store(true, Ordering::Release);
        result
    }

    fn set_address(&mut self, address: u8, confirm: &LockConfirmation) -> Result<(), AteccError> {
        let result = self.driver().set_address(address, confirm);
        self.link.recheck.store(true, Ordering::Release);
        result
    }

    fn serial_number(&mut self) -> Result<[u8; 9], AteccError> {
        self.driver().serial_number()
    }

    fn genkey(&mut self, confirm: &KeygenConfirmation) -> Result<[u8; 64], AteccError> {
        self.driver().genkey(confirm)
    }

    fn public_key(&mut self, slot: u8) -> Result<[u8; 64], AteccError> {
        self.driver().public_key(slot)
    }

    fn sign_digest(&mut self, slot: u8, digest: &[u8; 32]) -> Result<[u8; 64], AteccError> {
        self.driver().sign_digest(slot, digest)
    }

    fn counter_read(&mut self, id: u8) -> Result<u32, AteccError> {
        self.driver().counter_read(id)
    }

    fn counter_increment(&mut self, id: u8) -> Result<u32, AteccError> {
        self.driver().counter_increment(id)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The device is to be checked before its data is trusted.
    Unchecked,
    /// Checked; a Random can be sent.
    Ready,
    /// A Random is executing; its result is read at `due`.
    Running { due: Duration },
    /// Failed or resting: tried again when its source asks.
    Waiting { unchecked: bool },
}

struct Slot<B, D> {
    driver: Arc<Mutex<Driver<B, D>>>,
    blocks: SyncSender<Block>,
    link: Arc<Link>,
    state: State,
    /// A result not yet taken by the source.
    held: Option<Block>,
    /// Results handed to the source so far.
    sent: u64,
}

impl<B, D> Slot<B, D> {
    /// Hands the held result to the source if its channel has room; whether it did.
    fn deliver(&mut self) -> bool {
        let Some(item) = self.held.take() else {
            return false;
        };
        match self.blocks.try_send(item) {
            Ok(()) => {
                self.sent += 1;
                true
            }
            Err(TrySendError::Full(item)) => {
                self.held = Some(item);
                false
            }
            // The source is gone: nobody will take it.
            Err(TrySendError::Disconnected(_)) => false,
        }
    }

    /// The source waits for a result none is on its way for.
    fn asked(&self) -> bool {
        self.link.requests.load(Ordering::Acquire) > self.sent
    }
}

/// The chips of one bus and the thread that drives them (see the module documentation).
pub struct BusHarvest<B, D> {
    label: String,
    bus: SharedBus<B>,
    delay: D,
    now: Box<dyn Fn() -> Duration + Send>,
    /// `now` is the real clock: waits are real sleeps that a source's request may end early.
    real: bool,
    /// On a virtual clock, a wait has already let the sources take their blocks.
    patient: bool,
    slots: Vec<Slot<B, D>>,
}

impl<B, D> std::fmt::Debug for BusHarvest<B, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BusHarvest")
            .field("label", &self.label)
            .field("chips", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl BusHarvest<EmulatedBus, EmulatorDelay> {
    /// The chips of an emulated bus, timed by its clock.
    pub fn emulated(label: impl Into<String>, bus: EmulatedBus) -> Self {
        let clock = bus.clock();
        let delay = bus.delay();
        let real = matches!(clock, Clock::Real(_));
        let mut harvest = BusHarvest::new(label, bus, delay, move || clock.now());
        harvest.real = real;
        harvest
    }
}

impl<B: I2c + Send + 'static, D: DelayNs + Clone + Send + 'static> BusHarvest<B, D> {
    /// The chips of `bus` (named `label` in logs), with `delay` for the drivers and `now` the
    /// bus's time (the real clock for hardware).
    pub fn new(
        label: impl Into<String>,
        bus: B,
        delay: D,
        now: impl Fn() -> Duration + Send + 'static,
    ) -> Self {
        BusHarvest {
            label: label.into(),
            bus: SharedBus::new(bus),
            delay,
            now: Box::new(now),
            real: true,
            patient: false,
            slots: Vec::new(),
        }
    }

    /// The chip at `address` as a source named `name` of `kind`.
    pub fn add(
        &mut self,
        name: impl Into<String>,
        kind: SourceKind,
        address: u8,
    ) -> BusChipSource<B, D> {
        let driver = Arc::new(Mutex::new(
            Atecc608a::with_address(self.bus.clone(), self.delay.clone(), address).on_shared_bus(),
        ));
        // One block ahead: the chip executes while the source's last block is checked.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let link = Arc::new(Link::default());
        self.slots.push(Slot {
            driver: driver.clone(),
            blocks: tx,
            link: link.clone(),
            state: State::Unchecked,
            held: None,
            sent: 0,
        });
        BusChipSource {
            name: name.into(),
            kind,
            driver,
            blocks: rx,
            link,
        }
    }

    /// Starts the bus's thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot start.
    pub fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        let name = format!("bus-{}", self.label);
        let links: Vec<Arc<Link>> = self.slots.iter().map(|s| s.link.clone()).collect();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let mut this = self;
            this.run();
        })?;
        for link in links {
            let _ = link.thread.set(thread.thread().clone());
        }
        Ok(thread)
    }

    fn run(&mut self) {
        let lone = self.slots.len() == 1;
        loop {
            // The scheduler holds one reference to each link, its source the other.
            if self.slots.iter().all(|s| Arc::strong_count(&s.link) == 1) {
                for slot in &self.slots {
                    let _ = lock(&slot.driver).sleep();
                }
                tracing::debug!("bus {}: every source gone, thread ends", self.label);
                return;
            }
            let progressed = self.step(lone);
            if !progressed {
                self.wait();
            }
        }
    }

    /// One pass over the chips: deliver, rest, poll the one due earliest, start the idle ones.
    /// Returns whether anything happened (else the caller waits).
    fn step(&mut self, lone: bool) -> bool {
        let mut progressed = false;
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            progressed |= slot.deliver();
            // Taken once the running command is done, so that no recheck is lost.
            if !matches!(slot.state, State::Running { .. })
                && slot.link.recheck.swap(false, Ordering::AcqRel)
            {
                slot.state = match slot.state {
                    State::Waiting { .. } => State::Waiting { unchecked: true },
                    _ => State::Unchecked,
                };
            }
            let rest = slot.link.rest.load(Ordering::Acquire);
            if rest != 0 && !matches!(slot.state, State::Running { .. }) {
                slot.link.rest.store(0, Ordering::Release);
                let mut driver = lock(&slot.driver);
                let _ = if rest == 2 {
                    driver.sleep()
                } else {
                    driver.idle()
                };
                drop(driver);
                slot.state = State::Waiting {
                    unchecked: slot.state == State::Unchecked
                        || slot.state == State::Waiting { unchecked: true },
                };
            }
            if let State::Waiting { unchecked } = slot.state
                && slot.held.is_none()
                && slot.asked()
            {
                slot.state = if unchecked {
                    State::Unchecked
                } else {
                    State::Ready
                };
            }
        }
        // On a virtual clock bus operations move time: first let the sources take their
        // blocks (see `wait`), as they would long before the next operation on a real clock.
        if !self.real && !self.patient && self.slots.iter().any(|s| s.held.is_some()) {
            return progressed;
        }
        // The chip whose result is due earliest, if due now.
        let now = (self.now)();
        let due = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s.state {
                State::Running { due } if due <= now => Some((due, i)),
                _ => None,
            })
            .min();
        if let Some((_, i)) = due {
            self.timed(i, |slot| {
                let polled = lock(&slot.driver).poll_random();
                match polled {
                    Ok(None) => return Some(POLL_INTERVAL),
                    Ok(Some(block)) => {
                        slot.held = Some(Ok(block));
                        slot.state = State::Ready;
                    }
                    Err(e) => fail(slot, e),
                }
                // At once, so that the chip starts again in this pass.
                slot.deliver();
                None
            });
            progressed = true;
        }
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.held.is_some() || !matches!(slot.state, State::Unchecked | State::Ready) {
                continue;
            }
            self.timed(i, |slot| {
                let mut driver = lock(&slot.driver);
                if slot.state == State::Unchecked {
                    if let Err(e) = driver.check_usable() {
                        drop(driver);
                        fail(slot, e);
                        return None;
                    }
                    slot.state = State::Ready;
                }
                let started = driver.start_random();
                drop(driver);
                match started {
                    Ok(()) => {
                        let max = max_execution_time(opcode::RANDOM);
                        Some(if lone { max / 4 } else { max })
                    }
                    Err(e) => {
                        fail(slot, e);
                        None
                    }
                }
            });
            progressed = true;
        }
        progressed
    }

    /// Runs `f` on slot `i` and reports the time it took to the other chips' drivers. When
    /// `f` returns `Some(after)` the chip is running and its result is due `after` from now.
    fn timed(&mut self, i: usize, f: impl FnOnce(&mut Slot<B, D>) -> Option<Duration>) {
        let start = (self.now)();
        let after = f(&mut self.slots[i]);
        let end = (self.now)();
        if let Some(after) = after {
            self.slots[i].state = State::Running { due: end + after };
        }
        let spent = end.saturating_sub(start);
        for (j, other) in self.slots.iter().enumerate() {
            if j != i {
                lock(&other.driver).note_elapsed(spent);
            }
        }
    }

    /// Nothing to do now: wait until the next result is due, or for a source's request.
    fn wait(&mut self) {
        let now = (self.now)();
        let next = self
            .slots
            .iter()
            .filter_map(|s| match s.state {
                State::Running { due } => Some(due),
                _ => None,
            })
            .min();
        let before = Instant::now();
        match next {
            Some(due) if self.real => {
                // A source's request ends the wait early, so its chip restarts at once.
                std::thread::park_timeout(due.saturating_sub(now));
            }
            _ if !self.real && self.slots.iter().any(|s| s.held.is_some()) && !self.patient => {
                // On a virtual clock time jumps with each bus operation and wait: first give
                // the sources time (real time; a source's next request ends the wait) to take
                // their blocks, as they would long before the next result on a real clock, so
                // that their chips are not left idle while time jumps. A source that does not
                // read costs this once per wait.
                self.patient = true;
                std::thread::park_timeout(Duration::from_millis(100));
                return;
            }
            Some(due) => {
                let d = due.saturating_sub(now).max(Duration::from_micros(10));
                self.delay
                    .delay_us(u32::try_from(d.as_micros()).unwrap_or(u32::MAX));
            }
            None => {
                std::thread::park_timeout(Duration::from_millis(50));
            }
        }
        self.patient = false;
        let spent = if self.real {
            before.elapsed()
        } else {
            (self.now)().saturating_sub(now)
        };
        for slot in &self.slots {
            lock(&slot.driver).note_elapsed(spent);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records `e` for the source; the chip waits until the source asks again.
fn fail<B: I2c, D: DelayNs>(slot: &mut Slot<B, D>, e: AteccError) {
    tracing::debug!("ATECC608A at {:#04x}: {e}", lock(&slot.driver).address());
    let error = classify(e);
    slot.state = State::Waiting {
        unchecked: error.kind != ErrorKind::Transient,
    };
    slot.held = Some(Err(error));
}
