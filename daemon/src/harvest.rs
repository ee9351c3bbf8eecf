//! The harvest loop: one thread per entropy source reads blocks, health-tests every one and
//! routes the healthy ones to where they are needed.
//!
//! # Contract
//!
//! - **Fail closed.** Every block goes through the source's [`HealthMonitor`]; only
//!   [`Verdict::Pass`] blocks reach a [`Sink`]. A quarantined source is not read again before
//!   its retry time, and then only for a fresh start-up test.
//! - **One destination per block.** Each healthy block is given to exactly one sink: bytes
//!   served to a client must never also be credited to the kernel or mixed into Fortuna's
//!   pools, because entropy that feeds a generator has to stay secret. Sinks are asked in
//!   priority order (the order given to [`Harvester::new`]); the first that wants data gets the
//!   block.
//! - **Harvest only on demand.** When no sink wants data the source rests (the chip idles,
//!   then sleeps) and the thread waits on a [`Wakeup`], which a sink's owner signals when demand
//!   returns (a client drained the queue, a setting changed), or until the earliest time a sink
//!   said it will want data again ([`Sink::next_want`]: Fortuna's next event, the kernel's next
//!   mix), and at most [`IDLE_POLL`]. No busy loop: the longest the thread runs without
//!   sleeping is one read, and an idle wait lasts at least [`IDLE_MIN`].
//! - **Errors back off by kind.** A transient error (a NACK, a CRC error) is retried after
//!   [`TRANSIENT_RETRY`]; a device that is gone is retried with exponential backoff up to
//!   [`GONE_RETRY_MAX`]; a fatal error (unlocked chip, permission denied) every
//!   [`FATAL_RETRY`]. Every change of state is logged once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lokey::health::{HealthConfig, HealthCounters, HealthMonitor, HealthState, Verdict};
use lokey::source::{ErrorKind, Source, SourceKind};

/// Retry delay after a transient read error.
pub const TRANSIENT_RETRY: Duration = Duration::from_millis(100);
/// Longest retry delay for a device that is gone.
pub const GONE_RETRY_MAX: Duration = Duration::from_secs(30);
/// Retry delay after a fatal error.
pub const FATAL_RETRY: Duration = Duration::from_secs(60);
/// How long the thread waits for demand before checking again anyway.
pub const IDLE_POLL: Duration = Duration::from_secs(1);
/// The shortest idle wait, even when a sink's [`Sink::next_want`] has already passed (so a
/// sink whose answers disagree cannot make the thread spin).
pub const IDLE_MIN: Duration = Duration::from_millis(10);
/// After this long without demand the source rests deeply (the chip sleeps).
pub const DEEP_REST_AFTER: Duration = Duration::from_secs(5);
/// Every this many healthy blocks, one is set aside for the displayed byte histogram (and
/// then discarded, so that what status shows says nothing about bytes anybody uses).
pub const SAMPLE_EVERY: u64 = 64;
/// Sample blocks the histogram covers.
pub const SAMPLE_BLOCKS: usize = 32;

/// What a sink learns about the block it is given.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The source's configured name.
    pub source: &'a str,
    /// Its kind (the kernel feeder never credits an emulator).
    pub kind: SourceKind,
    /// Its Fortuna source id (0–255, one per source).
    pub source_id: u8,
}

/// A destination for healthy blocks.
pub trait Sink: Send {
    /// The sink's name in logs and status.
    fn name(&self) -> &'static str;
    /// Whether the sink wants data now (checked before every read; it may update the sink's
    /// view of its schedule, e.g. a changed setting).
    fn wants(&mut self) -> bool;
    /// When the sink, not wanting data now, will want it again without anyone signalling the
    /// [`Wakeup`] (a timer of its own); `None` when only an outside event brings demand back.
    fn next_want(&self) -> Option<Instant> {
        None
    }
    /// Takes one healthy block.
    fn accept(&mut self, origin: Origin<'_>, block: &[u8]);
}

/// Wakes harvest threads that wait for demand (cheap to clone).
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<(Mutex<u64>, Condvar)>);

impl Wakeup {
    /// Wakes every waiting harvester.
    pub fn notify(&self) {
        let (lock, cvar) = &*self.0;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        cvar.notify_all();
    }

    /// Waits until notified or `timeout` passes.
    fn wait(&self, timeout: Duration) {
        let (lock, cvar) = &*self.0;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *guard;
        // Spurious wake-ups only cost one more demand check.
        let _ = cvar.wait_timeout_while(guard, timeout, |n| *n == seen);
    }
}

/// What status and metrics show about one source; updated by its harvest thread.
#[derive(Debug, Clone)]
pub struct SourceStatus {
    /// Configured name.
    pub name: String,
    /// Kind.
    pub kind: SourceKind,
    /// Health state.
    pub state: HealthState,
    /// The health counters.
    pub health: HealthCounters,
    /// The last read error, if the last read failed.
    pub last_error: Option<String>,
    /// Blocks read (healthy or not).
    pub blocks_read: u64,
    /// Bytes passed to sinks.
    pub bytes_routed: u64,
    /// Healthy blocks no sink wanted any more by the time they were read (dropped).
    pub blocks_unwanted: u64,
    /// Read errors.
    pub read_errors: u64,
    /// When the last healthy block was routed.
    pub last_block: Option<Instant>,
    /// Byte-value counts (256) over the last [`SAMPLE_BLOCKS`] sample blocks.
    pub histogram: Vec<u32>,
    /// Bytes the histogram covers.
    pub histogram_bytes: u64,
    /// Bytes given to each sink, by the sink's name (`kernel`, `fortuna`, `trng-queue`).
    pub routed_to: std::collections::BTreeMap<&'static str, u64>,
    /// Health-state changes so far, by (from, to) state name.
    pub transitions: std::collections::BTreeMap<(&'static str, &'static str), u64>,
    /// Credit: how the kernel feeder treats this source (set by the pipeline).
    pub credit: CreditStatus,
    /// The health tests' cutoffs, from the source's claimed min-entropy.
    pub cutoffs: lokey::health::Cutoffs,
}

/// How the kernel feeder credits one source.
#[derive(Debug, Clone, Default)]
pub struct CreditStatus {
    /// Bits per byte credited now (0: never credited, or crediting is off).
    pub bits_per_byte: u8,
    /// Why the source is not credited although its setting says so, if it is not.
    pub note: Option<String>,
    /// Bits credited to the kernel for this source so far.
    pub credited_bits: u64,
}

impl SourceStatus {
    /// Whether the source currently delivers usable data.
    pub fn healthy(&self) -> bool {
        self.state == HealthState::Healthy && self.last_error.is_none()
    }
}

/// One source's harvest loop.
pub struct Harvester<S: Source> {
    kick: Arc<AtomicBool>,
    source: S,
    source_id: u8,
    block_len: usize,
    monitor: HealthMonitor,
    sinks: Vec<Box<dyn Sink>>,
    wakeup: Wakeup,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<SourceStatus>>,
}

/// Controls a running harvest thread.
#[derive(Debug, Clone)]
pub struct Handle {
    kick: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    wakeup: Wakeup,
    status: Arc<Mutex<SourceStatus>>,
}

impl Handle {
    /// A snapshot of the source's status.
    pub fn status(&self) -> SourceStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ends a retry wait at once (after someone fixed the device: the chip was provisioned, an
    /// emulator fault was switched off).
    pub fn kick(&self) {
        self.kick.store(true, Ordering::Release);
        self.wakeup.notify();
    }

    /// Asks the thread to stop after its current read.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wakeup.notify();
    }
}

impl<S: Source + 'static> Harvester<S> {
    /// A harvester for `source` reading `block_len`-byte blocks, testing them with `health`
    /// and routing to `sinks` in priority order.
    ///
    /// # Errors
    ///
    /// An invalid health configuration.
    pub fn new(
        source: S,
        source_id: u8,
        block_len: usize,
        health: HealthConfig,
        sinks: Vec<Box<dyn Sink>>,
        wakeup: Wakeup,
    ) -> Result<Harvester<S>, lokey::health::HealthError> {
        let monitor = HealthMonitor::new(health)?;
        let status = SourceStatus {
            name: source.name().to_string(),
            kind: source.kind(),
            state: monitor.state(),
            health: monitor.counters().clone(),
            last_error: None,
            blocks_read: 0,
            bytes_routed: 0,
            blocks_unwanted: 0,
            read_errors: 0,
            last_block: None,
            histogram: vec![0; 256],
            histogram_bytes: 0,
            routed_to: Default::default(),
            transitions: Default::default(),
            credit: CreditStatus::default(),
            cutoffs: monitor.cutoffs(),
        };
        Ok(Harvester {
            kick: Arc::default(),
            source,
            source_id,
            block_len,
            monitor,
            sinks,
            wakeup,
            stop: Arc::default(),
            status: Arc::new(Mutex::new(status)),
        })
    }

    /// Starts the loop on its own thread.
    ///
    /// # Errors
    ///
    /// When the thread cannot be spawned.
    pub fn spawn(self) -> std::io::Result<(Handle, std::thread::JoinHandle<()>)> {
        let handle = Handle {
            kick: self.kick.clone(),
            stop: self.stop.clone(),
            wakeup: self.wakeup.clone(),
            status: self.status.clone(),
        };
        let name = format!("harvest-{}", self.source.name());
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || self.run())?;
        Ok((handle, thread))
    }

    fn update(&self, f: impl FnOnce(&mut SourceStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps `d`, waking early for a stop request or a kick.
    fn pause(&self, d: Duration) {
        let until = Instant::now() + d;
        while !self.stopped() {
            if self.kick.swap(false, Ordering::AcqRel) {
                return;
            }
            let now = Instant::now();
            if now >= until {
                return;
            }
            self.wakeup.wait(until - now);
        }
    }

    /// How long to wait for demand at `now`: until the earliest [`Sink::next_want`], between
    /// [`IDLE_MIN`] and [`IDLE_POLL`].
    fn idle_wait(&self, now: Instant) -> Duration {
        self.sinks
            .iter()
            .filter_map(|s| s.next_want())
            .map(|t| t.saturating_duration_since(now))
            .min()
            .map_or(IDLE_POLL, |d| d.min(IDLE_POLL))
            .max(IDLE_MIN)
    }

    fn run(mut self) {
        let name = self.source.name().to_string();
        let mut block = vec![0u8; self.block_len];
        let mut idle_since: Option<Instant> = None;
        let mut gone_delay = TRANSIENT_RETRY;
        let mut last_error: Option<String> = None;
        // Set when the device went away or became unusable after blocks were tested: what
        // answers next may be a re-plugged or reset device, which must pass a fresh start-up
        // test (SP 800-90B §4.3: start-up testing on power-up or reset). A passing glitch
        // (a NACK, a CRC error) does not count.
        let mut tested = false;
        let mut reset = false;
        let mut passed = 0u64;
        let mut samples: std::collections::VecDeque<Vec<u8>> = std::collections::VecDeque::new();
        tracing::info!(source = %name, kind = self.source.kind().as_str(), "harvesting");
        while !self.stopped() {
            // A quarantined source is not read before its retry time; once that has passed,
            // the next block begins a fresh start-up test (the monitor keeps reporting the
            // retry time until it is fed that block).
            if let Some(retry_at) = self.monitor.retry_at() {
                let wait = retry_at.saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    self.source.rest(true);
                    self.pause(wait);
                    continue;
                }
            }
            // Start-up tests need data whatever the demand: a source must prove itself
            // before anyone needs it.
            let testing = self.monitor.state() != HealthState::Healthy;
            if !testing && !self.sinks.iter_mut().any(|s| s.wants()) {
                let since = *idle_since.get_or_insert_with(Instant::now);
                self.source.rest(since.elapsed() >= DEEP_REST_AFTER);
                self.wakeup.wait(self.idle_wait(Instant::now()));
                continue;
            }
            idle_since = None;

            if let Err(e) = self.source.read(&mut block) {
                let delay = match e.kind {
                    ErrorKind::Transient => TRANSIENT_RETRY,
                    ErrorKind::Gone => {
                        gone_delay = (gone_delay * 2).min(GONE_RETRY_MAX);
                        gone_delay
                    }
                    ErrorKind::Fatal => FATAL_RETRY,
                };
                reset |= tested && e.kind != ErrorKind::Transient;
                if last_error.as_deref() != Some(e.message.as_str()) {
                    tracing::warn!(source = %name, "read failed: {e} (retrying in {delay:?})");
                    last_error = Some(e.message.clone());
                }
                self.update(|s| {
                    s.read_errors += 1;
                    s.last_error = Some(e.message.clone());
                });
                self.pause(delay);
                continue;
            }
            if last_error.take().is_some() {
                tracing::info!(source = %name, "reading again");
            }
            gone_delay = TRANSIENT_RETRY;

            let restarted =
                std::mem::take(&mut reset).then(|| self.monitor.restart(Instant::now()));
            let mut outcome = self.monitor.feed(&block, Instant::now());
            outcome.transitions.splice(0..0, restarted);
            tested = true;
            // Each change of state is logged once and counted (the monitor reports it once).
            for t in &outcome.transitions {
                match t.to {
                    HealthState::Healthy => tracing::info!(source = %name, "health: {t}"),
                    HealthState::Quarantined => tracing::error!(source = %name, "health: {t}"),
                    _ => tracing::warn!(source = %name, "health: {t}"),
                }
            }
            if !outcome.transitions.is_empty() {
                self.update(|s| {
                    for t in &outcome.transitions {
                        *s.transitions
                            .entry((t.from.as_str(), t.to.as_str()))
                            .or_default() += 1;
                    }
                });
            }
            let mut routed = None;
            let mut sampled = None;
            let pass = matches!(outcome.verdict, Verdict::Pass);
            passed += u64::from(pass);
            if pass && passed.is_multiple_of(SAMPLE_EVERY) {
                if samples.len() == SAMPLE_BLOCKS {
                    samples.pop_front();
                }
                samples.push_back(block.clone());
                let mut counts = vec![0u32; 256];
                for b in samples.iter().flatten() {
                    counts[usize::from(*b)] += 1;
                }
                sampled = Some((counts, samples.iter().map(Vec::len).sum::<usize>() as u64));
            } else if pass {
                let origin = Origin {
                    source: &name,
                    kind: self.source.kind(),
                    source_id: self.source_id,
                };
                if let Some(sink) = self.sinks.iter_mut().find_map(|s| s.wants().then_some(s)) {
                    sink.accept(origin, &block);
                    routed = Some(sink.name());
                }
            }
            let (state, counters) = (self.monitor.state(), self.monitor.counters().clone());
            let verdict = outcome.verdict;
            let was_sampled = sampled.is_some();
            self.update(|s| {
                s.blocks_read += 1;
                s.last_error = None;
                s.state = state;
                s.health = counters;
                if let Some((counts, bytes)) = sampled {
                    s.histogram = counts;
                    s.histogram_bytes = bytes;
                }
                if let Some(sink) = routed {
                    s.bytes_routed += block.len() as u64;
                    *s.routed_to.entry(sink).or_default() += block.len() as u64;
                    s.last_block = Some(Instant::now());
                } else if verdict.is_usable() && !was_sampled {
                    s.blocks_unwanted += 1;
                }
            });
        }
        self.source.rest(true);
        tracing::info!(source = %name, "harvest stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lokey::source::SourceError;
    use std::io::Read;
    use std::sync::atomic::AtomicU64;

    /// A source producing OS randomness, a constant, or errors, switchable while it runs.
    struct Fake {
        mode: Arc<Mutex<Mode>>,
        reads: Arc<AtomicU64>,
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Random,
        Stuck,
        Gone,
        Glitch,
    }

    impl Source for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn kind(&self) -> SourceKind {
            SourceKind::Emulator
        }
        fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            // Pace the fake like a slow device so tests don't spin a core.
            std::thread::sleep(Duration::from_micros(200));
            match *self.mode.lock().unwrap() {
                Mode::Random => {
                    std::fs::File::open("/dev/urandom")
                        .and_then(|mut f| f.read_exact(out))
                        .unwrap();
                    Ok(())
                }
                Mode::Stuck => {
                    out.fill(0x42);
                    Ok(())
                }
                Mode::Gone => Err(SourceError::new(ErrorKind::Gone, "unplugged")),
                Mode::Glitch => Err(SourceError::new(ErrorKind::Transient, "NACK")),
            }
        }
    }

    /// Records what it receives; wants data while `want` is true.
    struct Recorder {
        name: &'static str,
        want: Arc<AtomicBool>,
        got: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Sink for Recorder {
        fn name(&self) -> &'static str {
            self.name
        }
        fn wants(&mut self) -> bool {
            self.want.load(Ordering::Relaxed)
        }
        fn accept(&mut self, origin: Origin<'_>, block: &[u8]) {
            assert_eq!(origin.source, "fake");
            assert_eq!(origin.source_id, 7);
            self.got.lock().unwrap().push(block.to_vec());
        }
    }

    struct Rig {
        mode: Arc<Mutex<Mode>>,
        reads: Arc<AtomicU64>,
        wants: Vec<Arc<AtomicBool>>,
        got: Vec<Arc<Mutex<Vec<Vec<u8>>>>>,
        handle: Handle,
        wakeup: Wakeup,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    fn rig(sinks: usize) -> Rig {
        let mode = Arc::new(Mutex::new(Mode::Random));
        let reads = Arc::new(AtomicU64::new(0));
        let mut wants = Vec::new();
        let mut got = Vec::new();
        let mut boxed: Vec<Box<dyn Sink>> = Vec::new();
        for name in ["first", "second", "third"].into_iter().take(sinks) {
            let w = Arc::new(AtomicBool::new(true));
            let g = Arc::new(Mutex::new(Vec::new()));
            wants.push(w.clone());
            got.push(g.clone());
            boxed.push(Box::new(Recorder {
                name,
                want: w,
                got: g,
            }));
        }
        let health = HealthConfig {
            backoff_initial: Duration::from_millis(100),
            ..HealthConfig::default()
        };
        let wakeup = Wakeup::default();
        let source = Fake {
            mode: mode.clone(),
            reads: reads.clone(),
        };
        let (handle, thread) = Harvester::new(source, 7, 32, health, boxed, wakeup.clone())
            .unwrap()
            .spawn()
            .unwrap();
        Rig {
            mode,
            reads,
            wants,
            got,
            handle,
            wakeup,
            thread: Some(thread),
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            self.handle.stop();
            if let Some(t) = self.thread.take() {
                t.join().unwrap();
            }
        }
    }

    fn eventually(mut check: impl FnMut() -> bool, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn count(g: &Arc<Mutex<Vec<Vec<u8>>>>) -> usize {
        g.lock().unwrap().len()
    }

    #[test]
    fn start_up_data_is_withheld_then_blocks_go_to_the_first_sink_that_wants_them() {
        let r = rig(2);
        eventually(|| count(&r.got[0]) >= 10, "first sink fed");
        assert_eq!(count(&r.got[1]), 0, "a block went to two sinks");
        let status = r.handle.status();
        // 1024 start-up samples = 32 blocks of 32 bytes were read and never routed.
        assert_eq!(status.health.blocks_startup, 32);
        assert!(status.blocks_read as usize >= count(&r.got[0]) + 32);
        // The first sink is satisfied: the second gets the blocks from now on.
        r.wants[0].store(false, Ordering::Relaxed);
        let before = count(&r.got[0]);
        eventually(|| count(&r.got[1]) >= 10, "second sink fed");
        assert!(count(&r.got[0]) <= before + 1);
        // No block was given to both.
        let a = r.got[0].lock().unwrap().clone();
        let b = r.got[1].lock().unwrap().clone();
        assert!(a.iter().all(|x| !b.contains(x)));
    }

    #[test]
    fn one_healthy_block_in_sample_every_is_set_aside_for_the_histogram_and_never_routed() {
        let r = rig(1);
        eventually(
            || r.handle.status().histogram_bytes >= 2 * 32,
            "two sample blocks",
        );
        r.wants[0].store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        let status = r.handle.status();
        assert_eq!(status.histogram.len(), 256);
        assert_eq!(
            status.histogram.iter().map(|&c| u64::from(c)).sum::<u64>(),
            status.histogram_bytes
        );
        let passed = status.health.blocks_passed;
        let routed = count(&r.got[0]) as u64;
        // Passed blocks are routed except every SAMPLE_EVERY-th (at most one in flight).
        assert!(
            routed + passed / SAMPLE_EVERY <= passed
                && passed - routed - passed / SAMPLE_EVERY <= 1,
            "passed {passed}, routed {routed}"
        );
    }

    #[test]
    fn without_demand_the_source_is_not_read() {
        let r = rig(1);
        eventually(|| count(&r.got[0]) >= 1, "healthy");
        r.wants[0].store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
        let reads = r.reads.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            r.reads.load(Ordering::Relaxed) <= reads + 1,
            "source read without demand"
        );
        // Demand returns: a wake-up brings the thread back at once.
        r.wants[0].store(true, Ordering::Relaxed);
        r.wakeup.notify();
        let n = count(&r.got[0]);
        eventually(|| count(&r.got[0]) > n, "fed again after wake-up");
    }

    #[test]
    fn a_stuck_source_is_quarantined_and_feeds_nothing_then_recovers() {
        let r = rig(1);
        eventually(
            || r.handle.status().state == HealthState::Healthy,
            "healthy",
        );
        *r.mode.lock().unwrap() = Mode::Stuck;
        eventually(
            || r.handle.status().state == HealthState::Quarantined,
            "quarantined",
        );
        let fed = count(&r.got[0]);
        let got = r.got[0].lock().unwrap().clone();
        assert!(
            got.iter().all(|b| b != &vec![0x42u8; 32]),
            "a stuck block reached a sink"
        );
        std::thread::sleep(Duration::from_millis(300));
        // Retried after the backoff, still stuck: nothing more reaches the sink.
        assert_eq!(count(&r.got[0]), fed);
        *r.mode.lock().unwrap() = Mode::Random;
        eventually(
            || r.handle.status().state == HealthState::Healthy,
            "recovered",
        );
        eventually(|| count(&r.got[0]) > fed, "fed after recovery");
        // Every change of state was counted: in, out and back in, once each way at least, and
        // each retry that failed came back to quarantine.
        let t = r.handle.status().transitions;
        assert_eq!(t.get(&("starting_up", "healthy")), Some(&1), "{t:?}");
        assert!(t.contains_key(&("healthy", "quarantined")), "{t:?}");
        let retries = t.get(&("quarantined", "retrying")).copied().unwrap_or(0);
        let back = t.get(&("retrying", "healthy")).copied().unwrap_or(0);
        let failed = t.get(&("retrying", "quarantined")).copied().unwrap_or(0);
        assert_eq!((back, retries), (1, back + failed), "{t:?}");
        // Bytes are counted by the sink that took them.
        let routed = r.handle.status().routed_to;
        assert!(routed.get("first").is_some_and(|&n| n >= 32), "{routed:?}");
    }

    #[test]
    fn a_device_that_is_gone_is_reported_and_retried_with_backoff() {
        let r = rig(1);
        eventually(|| count(&r.got[0]) >= 1, "healthy");
        *r.mode.lock().unwrap() = Mode::Gone;
        eventually(
            || r.handle.status().last_error.as_deref() == Some("unplugged"),
            "error reported",
        );
        assert!(!r.handle.status().healthy());
        let reads = r.reads.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        // Backoff doubles from 200 ms: at most a few reads in half a second, not hundreds.
        assert!(r.reads.load(Ordering::Relaxed) - reads <= 4);
        // What answers now may be another device: nothing is used before it passes a fresh
        // start-up test (32 blocks of 32 bytes withheld again).
        let startup = r.handle.status().health.blocks_startup;
        *r.mode.lock().unwrap() = Mode::Random;
        eventually(|| r.handle.status().healthy(), "back");
        let status = r.handle.status();
        assert_eq!(status.health.blocks_startup, startup + 32);
        assert_eq!(
            status.transitions.get(&("healthy", "starting_up")),
            Some(&1),
            "{:?}",
            status.transitions
        );
    }

    #[test]
    fn a_passing_glitch_does_not_restart_the_start_up_test() {
        let r = rig(1);
        eventually(|| count(&r.got[0]) >= 1, "healthy");
        *r.mode.lock().unwrap() = Mode::Glitch;
        eventually(
            || r.handle.status().last_error.as_deref() == Some("NACK"),
            "error reported",
        );
        let startup = r.handle.status().health.blocks_startup;
        *r.mode.lock().unwrap() = Mode::Random;
        let fed = count(&r.got[0]);
        eventually(|| count(&r.got[0]) > fed, "fed again");
        let status = r.handle.status();
        assert_eq!(status.health.blocks_startup, startup);
        assert_eq!(status.state, HealthState::Healthy);
        assert!(!status.transitions.contains_key(&("healthy", "starting_up")));
    }

    /// Wants one block per `every`, like Fortuna once seeded, and says when it wants the next.
    struct Paced {
        every: Duration,
        last: Option<Instant>,
        got: Arc<AtomicU64>,
    }

    impl Sink for Paced {
        fn name(&self) -> &'static str {
            "paced"
        }
        fn wants(&mut self) -> bool {
            self.last.is_none_or(|t| t.elapsed() >= self.every)
        }
        fn next_want(&self) -> Option<Instant> {
            self.last.map(|t| t + self.every)
        }
        fn accept(&mut self, _: Origin<'_>, _: &[u8]) {
            self.last = Some(Instant::now());
            self.got.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn an_idle_harvester_wakes_when_a_sink_next_wants_data_not_only_every_idle_poll() {
        let got = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let paced = Paced {
            every: Duration::from_millis(50),
            last: None,
            got: got.clone(),
        };
        let source = Fake {
            mode: Arc::new(Mutex::new(Mode::Random)),
            reads: reads.clone(),
        };
        let (handle, thread) = Harvester::new(
            source,
            7,
            32,
            HealthConfig::default(),
            vec![Box::new(paced)],
            Wakeup::default(),
        )
        .unwrap()
        .spawn()
        .unwrap();
        eventually(|| got.load(Ordering::Relaxed) >= 1, "healthy and fed");
        let (blocks, read) = (got.load(Ordering::Relaxed), reads.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_secs(1));
        let blocks = got.load(Ordering::Relaxed) - blocks;
        let read = reads.load(Ordering::Relaxed) - read;
        handle.stop();
        thread.join().unwrap();
        // 20 wanted in a second; waking only every IDLE_POLL would give 1 or 2.
        assert!((12..=21).contains(&blocks), "{blocks} blocks in 1 s");
        // Only what was wanted was read (plus the odd histogram sample): no busy loop.
        assert!(read <= blocks + 2, "{read} reads for {blocks} blocks");
    }

    #[test]
    fn idle_waits_follow_the_earliest_next_want_within_bounds() {
        let now = Instant::now();
        let paced = |offset: Option<Duration>| -> Box<dyn Sink> {
            Box::new(Paced {
                every: Duration::from_millis(100),
                last: offset.map(|o| now + o - Duration::from_millis(100)),
                got: Arc::default(),
            })
        };
        let harvester = |sinks| {
            let source = Fake {
                mode: Arc::new(Mutex::new(Mode::Random)),
                reads: Arc::default(),
            };
            Harvester::new(
                source,
                0,
                32,
                HealthConfig::default(),
                sinks,
                Wakeup::default(),
            )
            .unwrap()
        };
        let ms = Duration::from_millis;
        let h = harvester(vec![paced(None), paced(Some(ms(300))), paced(Some(ms(40)))]);
        assert_eq!(h.idle_wait(now), ms(40));
        // Past already: the floor, never zero.
        assert_eq!(
            harvester(vec![paced(Some(ms(0)))]).idle_wait(now + ms(5)),
            IDLE_MIN
        );
        // Nothing scheduled, or far away: IDLE_POLL.
        assert_eq!(harvester(vec![paced(None)]).idle_wait(now), IDLE_POLL);
        let far = harvester(vec![paced(Some(Duration::from_secs(30)))]);
        assert_eq!(far.idle_wait(now), IDLE_POLL);
    }

    #[test]
    fn stop_ends_the_thread_promptly() {
        let mut r = rig(1);
        r.wants[0].store(false, Ordering::Relaxed);
        let started = Instant::now();
        r.handle.stop();
        r.thread.take().unwrap().join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
