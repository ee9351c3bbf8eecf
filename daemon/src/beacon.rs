//! The randomness beacon: a thread that publishes a chip-signed pulse every period
//! (`docs/beacon.md`; the pulse format is [`lokey::beacon`]).
//!
//! # Contract
//!
//! - Local random values come from the chip's harvest thread through [`LocalRandom`], a sink
//!   that comes before every other: the healthy blocks it takes go nowhere else (design.md §2
//!   invariant 2 and "each healthy block goes to exactly one place").
//! - A pulse is signed by the chip (Nonce pass-through, Sign external; one signature per
//!   pulse), the signature is checked against the public key, and the pulse, the next
//!   precommitted value and the chain state are written durably in one batch before anyone
//!   can read the pulse ([`lokey::store::beacon::Beacon::publish`]).
//! - Never a fork (invariant 9). Every start increments the chip's monotonic counter 0 and
//!   records the new value (the *epoch*) before the first pulse of the run. A chain continues
//!   only when the store's state says the previous run stopped cleanly, at the epoch the chip
//!   still shows, with the same key, serial and period; otherwise a new chain starts whose
//!   index is the new counter value — an index no chain of this chip has had — and its first
//!   pulse says why (status bits). So a crash, a store restored from a backup (older than the
//!   chip's counter, or taken while lokeyd ran), another chip or key all start a new chain,
//!   and no (chain, index) is ever signed twice.
//! - Pulses fall on multiples of the period since the Unix epoch; a slot that passed while
//!   the daemon was stopped or busy is skipped and the next pulse says `TIME_GAP`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lokey::atecc::{AteccError, ChipStatus, KeygenConfirmation, SharedChip};
use lokey::beacon::{self, ChainInfo, ChainState, LastPulse, PublicKey, Pulse, status};
use lokey::store::Store;
use sha2::{Digest, Sha512};
use zeroize::Zeroizing;

use crate::harvest::{Origin, Sink, Wakeup};

/// The chip's counter the beacon's epochs use.
pub const EPOCH_COUNTER: u8 = 0;
/// Signing attempts for one pulse before its slot is given up.
const SIGN_ATTEMPTS: usize = 3;
/// How long to wait for 64 healthy bytes from the chip.
const LOCAL_RANDOM_TIMEOUT: Duration = Duration::from_secs(5);
/// How often retention is applied.
const PRUNE_INTERVAL_MS: u64 = 3_600_000;

/// Requests for healthy chip blocks, served by [`LocalRandomSink`] in the chip's harvest
/// thread. Cheap to clone.
#[derive(Clone, Default)]
pub struct LocalRandom(Arc<(Mutex<Want>, Condvar)>);

#[derive(Default)]
struct Want {
    wanted: usize,
    got: Zeroizing<Vec<u8>>,
}

impl LocalRandom {
    /// `n` healthy bytes from the chip, or `None` when they do not come within `timeout`.
    fn take(&self, n: usize, wakeup: &Wakeup, timeout: Duration) -> Option<Zeroizing<Vec<u8>>> {
        let (lock, cvar) = &*self.0;
        let mut want = lock.lock().unwrap_or_else(|e| e.into_inner());
        want.wanted = n;
        want.got.clear();
        wakeup.notify();
        let (mut want, _) = cvar
            .wait_timeout_while(want, timeout, |w| w.got.len() < n)
            .unwrap_or_else(|e| e.into_inner());
        want.wanted = 0;
        if want.got.len() < n {
            want.got.clear();
            return None;
        }
        let bytes = Zeroizing::new(want.got[..n].to_vec());
        want.got.clear();
        Some(bytes)
    }

    /// The sink for the chip's harvest thread.
    pub fn sink(&self) -> LocalRandomSink {
        LocalRandomSink(self.clone())
    }
}

/// Takes healthy blocks while the beacon waits for local randomness.
pub struct LocalRandomSink(LocalRandom);

impl Sink for LocalRandomSink {
    fn name(&self) -> &'static str {
        "beacon"
    }

    fn wants(&mut self) -> bool {
        let want = self.0.0.0.lock().unwrap_or_else(|e| e.into_inner());
        want.got.len() < want.wanted
    }

    fn accept(&mut self, _origin: Origin<'_>, block: &[u8]) {
        let (lock, cvar) = &*self.0.0;
        lock.lock()
            .unwrap_or_else(|e| e.into_inner())
            .got
            .extend_from_slice(block);
        cvar.notify_all();
    }
}

/// What health, status and metrics show about the beacon.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct BeaconReport {
    /// The beacon thread runs.
    pub running: bool,
    /// Why it cannot publish now, if it cannot.
    pub problem: Option<String>,
    /// Period, milliseconds.
    pub period_ms: u64,
    /// When the beacon started, Unix milliseconds (0 when it could not start).
    pub started_ms: u64,
    /// Current chain.
    pub chain_index: Option<u64>,
    /// Newest pulse index.
    pub pulse_index: Option<u64>,
    /// Newest pulse time, Unix milliseconds.
    pub last_time_ms: Option<u64>,
    /// Key id, hex.
    pub key_id: Option<String>,
    /// Whether the key is an emulator's.
    pub emulated: bool,
    /// Pulses published since start.
    pub pulses: u64,
    /// Pulses published after their slot's end, or slots skipped.
    pub late: u64,
    /// Signatures asked of the chip.
    pub signatures: u64,
    /// Total signing time, seconds.
    pub sign_seconds: f64,
    /// Largest signing time, seconds.
    pub sign_seconds_max: f64,
}

impl BeaconReport {
    /// Whether the next pulse is more than one period late at `now_ms`: due one period after
    /// the newest pulse (or after the start), and still missing a period later. A passing
    /// failure that the next attempt repairs does not count; one that lasts does.
    pub fn late_at(&self, now_ms: u64) -> bool {
        let since = self.last_time_ms.unwrap_or(self.started_ms);
        now_ms > since + 2 * self.period_ms
    }
}

/// The identity of the signing key.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The chip's serial number.
    pub serial: [u8; 9],
    /// The slot.
    pub slot: u8,
    /// Its public key.
    pub key: PublicKey,
    /// Whether the chip is the emulator.
    pub emulated: bool,
}

/// Reads the chip's identity: serial number and the public key of `slot`.
///
/// # Errors
///
/// The driver's error (status 0x0F when the slot holds no key).
pub fn identity(chip: &SharedChip, slot: u8, emulated: bool) -> Result<Identity, String> {
    let (serial, xy) = chip
        .with(|c| Ok::<_, AteccError>((c.serial_number()?, c.public_key(slot)?)))
        .map_err(|e| e.to_string())?;
    let key = PublicKey::from_xy(&xy).map_err(|e| e.to_string())?;
    Ok(Identity {
        serial,
        slot,
        key,
        emulated,
    })
}

/// Creates a new key in `slot` of the chip with serial number `serial` (the old one is
/// destroyed) and returns its public key.
///
/// # Errors
///
/// The driver's error (another chip's serial, a slot that is not a key slot).
pub fn keygen(chip: &SharedChip, serial: [u8; 9], slot: u8) -> Result<PublicKey, String> {
    let confirm = KeygenConfirmation::for_serial_destroying_old_key(serial, slot);
    let mut last = String::new();
    // "On rare occasions an invalid ECC private key is generated": status 0x05, retry.
    for _ in 0..3 {
        match chip.with(|c| c.genkey(&confirm)) {
            Ok(xy) => return PublicKey::from_xy(&xy).map_err(|e| e.to_string()),
            Err(e) if e.chip_status() == Some(ChipStatus::EccFault) => last = e.to_string(),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

/// Wall-clock time in Unix milliseconds (injected for tests of the schedule).
pub type Now = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The system clock.
pub fn system_now() -> Now {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    })
}

/// What the beacon thread needs.
pub struct Parts {
    /// The chip.
    pub chip: SharedChip,
    /// Whether it is the emulator.
    pub emulated: bool,
    /// The store.
    pub store: Store,
    /// Local randomness from the chip's harvest thread.
    pub local: LocalRandom,
    /// The harvest threads' wake-up.
    pub wakeup: Wakeup,
    /// Period, milliseconds.
    pub period_ms: u64,
    /// Slot.
    pub slot: u8,
    /// Retention, milliseconds.
    pub retain_ms: u64,
    /// The clock.
    pub now: Now,
    /// The draws whose Merkle root goes into each pulse's commitment value.
    pub draws: Arc<crate::draws::DrawBook>,
}

/// The running beacon: its thread and what it reports.
pub struct Beacon {
    report: Arc<Mutex<BeaconReport>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    key_changed: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// The newest pulse (chain, index) that is on disk: nothing newer is served, so no one
    /// reads a pulse before its sync (a write is visible in the store as soon as it is
    /// journaled).
    published: Mutex<Option<(u64, u64)>>,
    store: Store,
}

impl std::fmt::Debug for Beacon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Beacon").finish_non_exhaustive()
    }
}

impl Beacon {
    /// Starts the beacon thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot start.
    pub fn start(parts: Parts) -> std::io::Result<Arc<Beacon>> {
        let report = Arc::new(Mutex::new(BeaconReport {
            running: true,
            period_ms: parts.period_ms,
            started_ms: (parts.now)(),
            emulated: parts.emulated,
            ..BeaconReport::default()
        }));
        // What the store holds at start was synced (or recovered from the journal) already.
        let newest = parts
            .store
            .beacon()
            .last()
            .ok()
            .flatten()
            .map(|p| (p.chain_index, p.pulse_index));
        let published = Mutex::new(newest);
        let beacon = Arc::new(Beacon {
            report,
            stop: Arc::default(),
            key_changed: Arc::default(),
            thread: Mutex::new(None),
            published,
            store: parts.store.clone(),
        });
        let worker = Worker {
            beacon: beacon.clone(),
            parts,
        };
        let thread = std::thread::Builder::new()
            .name("beacon".into())
            .spawn(move || worker.run())?;
        *beacon.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(thread);
        Ok(beacon)
    }

    /// The report now.
    pub fn report(&self) -> BeaconReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The pulses in the store.
    pub fn pulses(&self) -> lokey::store::beacon::Beacon {
        self.store.beacon()
    }

    /// The newest pulse on disk, (chain, index).
    pub fn newest(&self) -> Option<(u64, u64)> {
        *self.published.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the beacon the key changed (`lokey device keygen`): the next pulse starts a new
    /// chain with the new key.
    pub fn key_changed(&self) {
        self.key_changed.store(true, Ordering::SeqCst);
        self.stop.1.notify_all();
    }

    /// Stops the thread and records a clean stop (the chain continues at the next start).
    pub fn stop(&self) {
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits up to `d` or until stopped (or the key changed); true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let (lock, cvar) = &*self.stop;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = cvar
            .wait_timeout_while(guard, d, |stop| {
                !*stop && !self.key_changed.load(Ordering::SeqCst)
            })
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    fn update(&self, f: impl FnOnce(&mut BeaconReport)) {
        f(&mut self.report.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn problem(&self, why: Option<String>) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if report.problem != why {
            match &why {
                Some(w) => tracing::error!("beacon: {w}"),
                None => tracing::info!("beacon: publishing again"),
            }
        }
        report.problem = why;
    }
}

struct Worker {
    beacon: Arc<Beacon>,
    parts: Parts,
}

/// A chain being extended.
struct Run {
    identity: Identity,
    state: ChainState,
    /// Status bits of the chain's first pulse, until it is published.
    start: Option<u32>,
}

impl Worker {
    fn run(self) {
        let mut next_prune = 0;
        'identity: while !self.beacon.stopping() {
            self.beacon.key_changed.store(false, Ordering::SeqCst);
            let mut run = match self.begin() {
                Ok(run) => run,
                Err(why) => {
                    self.beacon.problem(Some(why));
                    if self.beacon.wait(Duration::from_secs(10)) {
                        return;
                    }
                    continue;
                }
            };
            self.beacon.update(|r| {
                r.chain_index = Some(run.state.chain_index);
                r.key_id = Some(run.state.key_id.clone());
            });
            // Draws registered from now on wait for the next pulse of this chain.
            let next = run.state.last.as_ref().map_or(1, |l| l.pulse_index + 1);
            if let Err(e) = self.parts.draws.open(run.state.chain_index, next) {
                self.beacon
                    .problem(Some(format!("cannot read the registered draws: {e}")));
                if self.beacon.wait(Duration::from_secs(10)) {
                    break 'identity;
                }
                continue 'identity;
            }
            loop {
                let now = (self.parts.now)();
                if now >= next_prune {
                    self.prune(now);
                    next_prune = now + PRUNE_INTERVAL_MS;
                }
                let slot = self.next_slot(&run, now);
                // The next local random value is drawn before the slot, so that at the slot
                // only the signature remains to be made (about 140 ms at the datasheet's
                // maximum times).
                let next = self.local();
                let now = (self.parts.now)();
                let wait = Duration::from_millis(slot.saturating_sub(now));
                if self.beacon.wait(wait) {
                    break 'identity;
                }
                if self.beacon.key_changed.load(Ordering::SeqCst) {
                    // The chain ends on purpose, not by a crash: its state says a clean end,
                    // and the next chain's first pulse says only "parameters changed".
                    tracing::info!("beacon: the key changed; a new chain begins");
                    self.end_cleanly();
                    continue 'identity;
                }
                match next.and_then(|next| self.pulse(&mut run, slot, next)) {
                    Ok(()) => self.beacon.problem(None),
                    Err(why) => {
                        self.beacon.update(|r| r.late += 1);
                        self.beacon.problem(Some(why));
                    }
                }
            }
        }
        self.end_cleanly();
        self.beacon.update(|r| r.running = false);
    }

    /// Records a clean end of this run: the chain may continue at the next start with this
    /// epoch.
    fn end_cleanly(&self) {
        if let Ok(Some(mut state)) = self.parts.store.beacon().state() {
            state.clean = true;
            if let Err(e) = self.parts.store.beacon().set_state(&state) {
                tracing::error!("beacon: cannot record the clean stop: {e}");
            }
        }
    }

    /// The next slot: the first multiple of the period after now and, in a chain, at least
    /// one period after its newest pulse.
    fn next_slot(&self, run: &Run, now: u64) -> u64 {
        let p = self.parts.period_ms;
        let mut slot = (now / p + 1) * p;
        if let Some(last) = &run.state.last {
            slot = slot.max(last.time_ms + p);
        }
        slot
    }

    fn prune(&self, now: u64) {
        match self
            .parts
            .store
            .beacon()
            .prune(now.saturating_sub(self.parts.retain_ms))
        {
            Ok(0) => {}
            Ok(n) => tracing::info!("beacon: deleted {n} pulses older than beacon.retain_days"),
            Err(e) => tracing::error!("beacon: cannot delete old pulses: {e}"),
        }
    }

    /// Reads the key, increments the chip's counter and decides whether the stored chain
    /// continues (see the module's contract).
    fn begin(&self) -> Result<Run, String> {
        let chip = &self.parts.chip;
        let slot = self.parts.slot;
        let identity = match identity(chip, slot, self.parts.emulated) {
            Ok(id) => id,
            // An emulated chip with an empty slot gets its key now (nothing is destroyed);
            // a real chip's key is only ever made by `lokey device keygen`.
            Err(_) if self.parts.emulated => {
                let serial = chip
                    .with(|c| c.serial_number())
                    .map_err(|e| e.to_string())?;
                let key = keygen(chip, serial, slot)?;
                tracing::info!(
                    "beacon: created the emulated chip's key in slot {slot} (key id {})",
                    beacon::hex(&key.key_id())
                );
                identity(chip, slot, true)?
            }
            Err(e) => {
                return Err(format!(
                    "no usable key in slot {slot} ({e}); create one with `lokey device keygen`"
                ));
            }
        };
        let store = self.parts.store.beacon();
        let stored = store.state().map_err(|e| e.to_string())?;
        let counter = |f: fn(&mut dyn lokey::atecc::Chip, u8) -> Result<u32, AteccError>| {
            chip.with(|c| f(c, EPOCH_COUNTER))
                .map_err(|e| format!("the chip's monotonic counter {EPOCH_COUNTER}: {e}"))
        };
        let before = counter(|c, id| c.counter_read(id))?;
        let epoch = counter(|c, id| c.counter_increment(id))?;
        let key_id = beacon::hex(&identity.key.key_id());
        let serial = beacon::hex(&identity.serial);
        let period_ms = u32::try_from(self.parts.period_ms).unwrap_or(u32::MAX);
        let mut reasons = 0;
        match &stored {
            None => reasons |= status::FIRST,
            Some(s) => {
                if !s.clean {
                    reasons |= status::UNCLEAN_STOP;
                }
                if s.epoch != before {
                    reasons |= status::COUNTER_MISMATCH;
                }
                if s.key_id != key_id || s.serial != serial || s.period_ms != period_ms {
                    reasons |= status::PARAMETERS_CHANGED;
                }
                // A chain whose first pulse is not out yet continues only with the status
                // bits it began with; a published chain needs its precommitted value.
                let unpublished = s.last.is_none() && s.start_status.is_some();
                if !unpublished && (s.last.is_none() || s.next_local.is_none()) {
                    reasons |= status::FIRST;
                }
            }
        }
        let (state, start) = match stored {
            Some(mut s) if reasons == 0 => {
                tracing::info!(
                    "beacon: chain {} continues after pulse {} (epoch {epoch})",
                    s.chain_index,
                    s.last.as_ref().map_or(0, |l| l.pulse_index)
                );
                s.epoch = epoch;
                s.clean = false;
                let start = s.start_status;
                (s, start)
            }
            _ => {
                tracing::info!(
                    "beacon: chain {epoch} begins ({})",
                    status::names(reasons).join(", ")
                );
                let s = ChainState {
                    epoch,
                    clean: false,
                    chain_index: u64::from(epoch),
                    period_ms,
                    key_id,
                    serial,
                    last: None,
                    next_local: None,
                    start_status: Some(status::CHAIN_START | reasons),
                };
                (s, Some(status::CHAIN_START | reasons))
            }
        };
        // The epoch is on disk before any pulse of this run can be.
        store.set_state(&state).map_err(|e| e.to_string())?;
        Ok(Run {
            identity,
            state,
            start,
        })
    }

    fn local(&self) -> Result<Zeroizing<Vec<u8>>, String> {
        self.parts
            .local
            .take(64, &self.parts.wakeup, LOCAL_RANDOM_TIMEOUT)
            .ok_or_else(|| {
                "no healthy data from the chip for the local random value (see the chip's \
                 source status)"
                    .to_string()
            })
    }

    /// Makes, signs, stores and publishes the pulse of `slot`, precommitting to `next`.
    fn pulse(&self, run: &mut Run, slot: u64, next: Zeroizing<Vec<u8>>) -> Result<(), String> {
        let p = self.parts.period_ms;
        let local: [u8; 64] = match &run.state.next_local {
            Some(hex) => beacon::from_hex(hex)
                .and_then(|v| v.try_into().ok())
                .ok_or("the stored precommitted value is not 64 bytes of hex")?,
            None => self.local()?[..].try_into().expect("64 bytes"),
        };
        let last = run.state.last.as_ref();
        let mut flags = run.start.unwrap_or(0);
        if run.identity.emulated {
            flags |= status::EMULATED;
        }
        if last.is_some_and(|l| slot > l.time_ms + p) {
            flags |= status::TIME_GAP;
        }
        let previous_output = match last {
            Some(l) => beacon::from_hex(&l.output)
                .and_then(|v| v.try_into().ok())
                .ok_or("the stored previous output is not 64 bytes of hex")?,
            None => [0u8; 64],
        };
        let pulse_index = last.map_or(1, |l| l.pulse_index + 1);
        // The draws registered for this pulse are committed to by it (their Merkle root).
        let commitment = self.parts.draws.close(run.state.chain_index, pulse_index);
        let mut pulse = Pulse {
            chain_index: run.state.chain_index,
            pulse_index,
            time_ms: slot,
            period_ms: run.state.period_ms,
            serial: run.identity.serial,
            key_id: run.identity.key.key_id(),
            local_random: local,
            precommitment: Sha512::digest(&next[..]).into(),
            previous_output,
            counter: run.state.epoch,
            status: flags,
            commitment,
            signature: [0; 64],
        };
        pulse.signature = self.sign(&pulse, &run.identity)?;
        let late = (self.parts.now)() > slot + p;
        let state = ChainState {
            last: Some(LastPulse {
                pulse_index: pulse.pulse_index,
                time_ms: pulse.time_ms,
                output: beacon::hex(&pulse.output()),
            }),
            next_local: Some(beacon::hex(&next)),
            start_status: None,
            ..run.state.clone()
        };
        let chain = (pulse.pulse_index == 1).then(|| ChainInfo {
            chain_index: pulse.chain_index,
            genesis: beacon::rfc3339_ms(pulse.time_ms),
            genesis_ms: pulse.time_ms,
            period: pulse.period_ms,
            version: beacon::VERSION,
            cipher_suite: beacon::CIPHER_SUITE.into(),
            serial_number: beacon::hex(&pulse.serial),
            slot: run.identity.slot,
            public_key: beacon::hex(&run.identity.key.xy()),
            public_key_pem: run.identity.key.pem(),
            key_id: beacon::hex(&pulse.key_id),
            emulated: run.identity.emulated,
            start_status: pulse.status,
        });
        self.parts
            .store
            .beacon()
            .publish(&pulse, &state, chain.as_ref())
            .map_err(|e| format!("cannot store pulse {}: {e}", pulse.pulse_index))?;
        run.state = state;
        run.start = None;
        self.beacon.update(|r| {
            r.pulses += 1;
            r.late += u64::from(late);
            r.pulse_index = Some(pulse.pulse_index);
            r.last_time_ms = Some(pulse.time_ms);
        });
        *self
            .beacon
            .published
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((pulse.chain_index, pulse.pulse_index));
        Ok(())
    }

    /// The chip's signature of `pulse`, checked against the public key before it is used.
    fn sign(&self, pulse: &Pulse, identity: &Identity) -> Result<[u8; 64], String> {
        let digest = pulse.digest();
        let mut last = String::new();
        for _ in 0..SIGN_ATTEMPTS {
            let started = std::time::Instant::now();
            let result = self
                .parts
                .chip
                .with(|c| c.sign_digest(identity.slot, &digest));
            let took = started.elapsed().as_secs_f64();
            self.beacon.update(|r| {
                r.signatures += 1;
                r.sign_seconds += took;
                r.sign_seconds_max = r.sign_seconds_max.max(took);
            });
            match result {
                Ok(signature) => {
                    let mut signed = pulse.clone();
                    signed.signature = signature;
                    if signed.signature_valid(&identity.key) {
                        return Ok(signature);
                    }
                    last = "the chip's signature does not verify with its public key".into();
                }
                Err(e) => last = format!("the chip could not sign: {e}"),
            }
        }
        Err(last)
    }
}
