//! The upstream feeder (`[upstream]`): this lokeyd fetches random bytes from a remote lokey
//! device over TLS with the device's key pinned ([`lokey::remote`]) and mixes them into this
//! machine's kernel pool — a client machine (a VM, a container host, a board without a chip)
//! seeded from a device on the network.
//!
//! # Contract
//!
//! - One thread. Every `upstream.interval_secs` it asks the device for `upstream.bytes` bytes
//!   of Fortuna output (`GET /api/v1/random/bytes`, the route `lokey --remote bytes` uses) and
//!   hands them to the kernel in one call: `write(2)` (mixed, no credit, no capability) or, only
//!   when `upstream.credit_bits_per_byte` is above 0, `RNDADDENTROPY` crediting that many bits
//!   per byte (CAP_SYS_ADMIN, kept by the daemon for it). The configuration refuses a feeder
//!   without a pin and `http://` (`lokey::config`), so nothing reaches the kernel, credited or
//!   not, from a server whose key is not the pinned one; no byte is written when the fetch
//!   fails.
//! - A failure (the device down, a refused connection, a wrong pin — the message names both
//!   keys —, an HTTP error, a kernel error) is kept in the report (status, health, metrics)
//!   and logged once per change of message, not at every retry; the feeder then retries after
//!   [`lokey::kernel::FEED_RETRY_INITIAL`], doubling to [`lokey::kernel::FEED_RETRY_MAX`] (as
//!   the local kernel feeder does), and returns to the interval after the first success, which
//!   is logged once too.
//! - [`Schedule`] is the pure logic (clock passed in); [`Upstream::start`] runs it on a thread
//!   whose fetcher and kernel sink are injected, and [`Upstream::stop`] ends it (a fetch under
//!   way finishes first, bounded by [`FETCH_TIMEOUT`]).
//!
//! The bytes fetched are not health-tested here: they are the device's Fortuna output, already
//! generated from health-tested hardware data on the device, and only mixed into a pool that
//! hashes them; crediting them is the operator's explicit statement of trust in that device.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use lokey::config::Config;
use lokey::kernel::{EntropySink, FEED_RETRY_INITIAL, FEED_RETRY_MAX, KernelError, KernelPool};
use lokey::remote::{Pin, Remote, RemoteError, Trust};
use serde::Serialize;

/// Connect, read and write timeout of one fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Gets `n` random bytes from the device.
pub type Fetcher = Box<dyn FnMut(u64) -> Result<Vec<u8>, RemoteError> + Send>;

/// A change of the feeder's state, worth one log line.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    /// The first success after failures.
    Recovered,
    /// A failure unlike the one before: the line to log.
    Failed(String),
}

impl Change {
    /// The line logged for [`Change::Recovered`].
    pub const RECOVERED: &str = "upstream feeder working again";
}

/// Why one round failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The device could not be asked, or did not answer with the bytes.
    #[error("fetching from the device failed: {0}")]
    Fetch(#[from] RemoteError),
    /// The kernel refused the bytes.
    #[error("feeding the kernel pool failed: {0}")]
    Kernel(#[from] KernelError),
}

/// The feeder's state in `GET /api/v1/status` and `/api/v1/health`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpstreamReport {
    /// The device, `https://HOST:PORT` (`upstream.url`).
    pub url: String,
    /// Its pinned key (`upstream.pin`).
    pub pin: String,
    /// `starting` (no round yet), `ok` (the last round fed the kernel) or `failing`.
    pub state: &'static str,
    /// When a round last succeeded (RFC 3339, UTC).
    pub last_success: Option<String>,
    /// Seconds since then.
    pub last_success_secs_ago: Option<u64>,
    /// Why the last round failed; cleared by the next success.
    pub last_error: Option<String>,
    /// Rounds that fed the kernel.
    pub fetches: u64,
    /// Rounds that failed.
    pub failures: u64,
    /// Bytes fetched and given to the kernel (mixed, credited or not).
    pub bytes_mixed: u64,
    /// Of those, bytes given with RNDADDENTROPY and a credit.
    pub bytes_credited: u64,
    /// Bits credited.
    pub bits_credited: u64,
    /// Bits credited per byte (`upstream.credit_bits_per_byte`; 0: mixed only).
    pub credit_bits_per_byte: u8,
    /// Seconds until the next round (the interval, or the backoff after a failure).
    pub next_attempt_secs: u64,
}

impl UpstreamReport {
    /// Whether the last round fed the kernel (health).
    pub fn ok(&self) -> bool {
        self.state == "ok"
    }
}

/// The feeder's counters and schedule: pure logic over instants the caller passes in.
#[derive(Debug, Clone)]
pub struct Schedule {
    interval: Duration,
    bytes: u64,
    bits_per_byte: u8,
    next: Instant,
    /// The delay that led to `next` after a failure; `None` while the device answers.
    backoff: Option<Duration>,
    fetches: u64,
    failures: u64,
    bytes_mixed: u64,
    bytes_credited: u64,
    bits_credited: u64,
    last_error: Option<String>,
    last_success: Option<(Instant, SystemTime)>,
}

impl Schedule {
    /// A schedule whose first round is due at `now`.
    pub fn new(interval: Duration, bytes: u64, bits_per_byte: u8, now: Instant) -> Schedule {
        Schedule {
            interval,
            bytes,
            bits_per_byte,
            next: now,
            backoff: None,
            fetches: 0,
            failures: 0,
            bytes_mixed: 0,
            bytes_credited: 0,
            bits_credited: 0,
            last_error: None,
            last_success: None,
        }
    }

    /// When the next round is due.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// One round at `now`: `n` bytes from `fetch`, then into `sink` (credited when the
    /// schedule credits). Returns what to log when the feeder's state changed (a new or
    /// different error, or working again), else `None`.
    pub fn round(
        &mut self,
        fetch: &mut Fetcher,
        sink: &mut dyn EntropySink,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Change> {
        let result = self.feed(fetch, sink);
        let before = self.last_error.take();
        match result {
            Ok(()) => {
                self.fetches += 1;
                self.last_success = Some((now, wall));
                self.backoff = None;
                self.next = now + self.interval;
                before.map(|_| Change::Recovered)
            }
            Err(e) => {
                self.failures += 1;
                let delay = self
                    .backoff
                    .map_or(FEED_RETRY_INITIAL, |d| (d * 2).min(FEED_RETRY_MAX));
                self.backoff = Some(delay);
                self.next = now + delay;
                let message = e.to_string();
                let changed = before.as_deref() != Some(message.as_str());
                self.last_error = Some(message.clone());
                changed.then(|| {
                    Change::Failed(format!(
                        "upstream feeder: {message}; retrying after {} s, then with backoff \
                         up to {} s (logged again only when this changes)",
                        delay.as_secs(),
                        FEED_RETRY_MAX.as_secs()
                    ))
                })
            }
        }
    }

    fn feed(
        &mut self,
        fetch: &mut Fetcher,
        sink: &mut dyn EntropySink,
    ) -> Result<(), UpstreamError> {
        let data = zeroize::Zeroizing::new(fetch(self.bytes)?);
        let len = data.len() as u64;
        if self.bits_per_byte > 0 {
            let bits = u32::try_from(len * u64::from(self.bits_per_byte)).unwrap_or(u32::MAX);
            sink.add_entropy(&data, bits)?;
            self.bytes_credited += len;
            self.bits_credited += u64::from(bits);
        } else {
            sink.mix(&data)?;
        }
        self.bytes_mixed += len;
        Ok(())
    }

    /// The report at `now`.
    pub fn report(&self, url: &str, pin: &str, now: Instant) -> UpstreamReport {
        UpstreamReport {
            url: url.to_string(),
            pin: pin.to_string(),
            state: match (&self.last_error, self.fetches) {
                (Some(_), _) => "failing",
                (None, 0) => "starting",
                (None, _) => "ok",
            },
            last_success: self
                .last_success
                .map(|(_, wall)| crate::service::rfc3339(wall)),
            last_success_secs_ago: self
                .last_success
                .map(|(at, _)| now.saturating_duration_since(at).as_secs()),
            last_error: self.last_error.clone(),
            fetches: self.fetches,
            failures: self.failures,
            bytes_mixed: self.bytes_mixed,
            bytes_credited: self.bytes_credited,
            bits_credited: self.bits_credited,
            credit_bits_per_byte: self.bits_per_byte,
            next_attempt_secs: self.next.saturating_duration_since(now).as_secs(),
        }
    }
}

/// The running feeder.
pub struct Upstream {
    url: String,
    pin: String,
    schedule: Arc<Mutex<Schedule>>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("url", &self.url).finish()
    }
}

impl Upstream {
    /// Starts the feeder `[upstream]` configures, if any: a pinned client for the device and
    /// `/dev/random` (its per-byte cap set to the configured credit).
    ///
    /// # Errors
    ///
    /// The URL or pin (checked when the configuration was loaded, so only on a programming
    /// error), `/dev/random` that cannot be opened, a thread that cannot be started.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Arc<Upstream>>> {
        let up = &config.upstream;
        if !up.enabled() {
            return Ok(None);
        }
        let pin = Pin::parse(&up.pin).context("upstream.pin")?;
        let remote =
            Remote::new(&up.url, Trust::Pin(pin), FETCH_TIMEOUT).context("upstream.url")?;
        let bits =
            u8::try_from(up.credit_bits_per_byte).context("upstream.credit_bits_per_byte")?;
        let pool = KernelPool::open()
            .and_then(|p| p.with_max_bits_per_byte(bits))
            .context("opening /dev/random for the upstream feeder")?;
        let fetch: Fetcher = Box::new(move |n| remote.random_bytes(n, "fortuna"));
        let schedule = Schedule::new(
            Duration::from_secs(up.interval_secs),
            up.bytes,
            bits,
            Instant::now(),
        );
        tracing::info!(
            "upstream feeder: {} bytes from {} (pinned {}) every {} s, {}",
            up.bytes,
            up.url,
            up.pin,
            up.interval_secs,
            if bits > 0 {
                format!("credited {bits} bits per byte (RNDADDENTROPY)")
            } else {
                "mixed without credit".to_string()
            }
        );
        Upstream::start(&up.url, &up.pin, schedule, fetch, Box::new(pool)).map(Some)
    }

    /// Runs `schedule` on a thread with `fetch` and `sink`.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn start(
        url: &str,
        pin: &str,
        schedule: Schedule,
        mut fetch: Fetcher,
        mut sink: Box<dyn EntropySink + Send>,
    ) -> anyhow::Result<Arc<Upstream>> {
        let schedule = Arc::new(Mutex::new(schedule));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let (shared, stopping) = (schedule.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("upstream".into())
            .spawn(move || {
                loop {
                    let due = lock(&shared).next();
                    {
                        let (flag, wake) = &*stopping;
                        let mut stopped = lock(flag);
                        while !*stopped && Instant::now() < due {
                            let wait = due.saturating_duration_since(Instant::now());
                            stopped = wake
                                .wait_timeout(stopped, wait)
                                .unwrap_or_else(|e| e.into_inner())
                                .0;
                        }
                        if *stopped {
                            return;
                        }
                    }
                    // The fetch runs without the lock: status stays readable meanwhile.
                    let mut round = lock(&shared).clone();
                    let line =
                        round.round(&mut fetch, sink.as_mut(), Instant::now(), SystemTime::now());
                    *lock(&shared) = round;
                    match line {
                        Some(Change::Recovered) => tracing::info!("{}", Change::RECOVERED),
                        Some(Change::Failed(line)) => tracing::error!("{line}"),
                        None => {}
                    }
                }
            })
            .context("starting the upstream feeder thread")?;
        Ok(Arc::new(Upstream {
            url: url.to_string(),
            pin: pin.to_string(),
            schedule,
            stop,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The feeder's state now.
    pub fn report(&self) -> UpstreamReport {
        lock(&self.schedule).report(&self.url, &self.pin, Instant::now())
    }

    /// Stops the thread and waits for it (a fetch under way finishes first).
    pub fn stop(&self) {
        let (flag, wake) = &*self.stop;
        *lock(flag) = true;
        wake.notify_all();
        if let Some(thread) = lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what reaches the kernel.
    #[derive(Default)]
    struct Recorder {
        calls: Vec<(usize, u32, bool)>,
    }

    impl EntropySink for Recorder {
        fn add_entropy(&mut self, data: &[u8], bits: u32) -> Result<(), KernelError> {
            lokey::kernel::check_credit(data.len(), bits, 8)?;
            self.calls.push((data.len(), bits, true));
            Ok(())
        }
        fn mix(&mut self, data: &[u8]) -> Result<(), KernelError> {
            self.calls.push((data.len(), 0, false));
            Ok(())
        }
        fn entropy_count(&self) -> Result<u32, KernelError> {
            Ok(256)
        }
        fn crng_initialized(&self) -> Result<bool, KernelError> {
            Ok(true)
        }
    }

    /// A device that is down while `down` says so.
    fn device(down: Arc<Mutex<bool>>) -> Fetcher {
        Box::new(move |n| {
            if *down.lock().unwrap() {
                Err(RemoteError::Io {
                    server: "device:8443".into(),
                    why: "Connection refused (os error 111)".into(),
                })
            } else {
                Ok(vec![7; n as usize])
            }
        })
    }

    #[test]
    fn mixes_without_credit_unless_configured() {
        let t0 = Instant::now();
        let mut sink = Recorder::default();
        let mut fetch = device(Arc::default());
        let mut mixed = Schedule::new(Duration::from_secs(60), 64, 0, t0);
        assert_eq!(
            mixed.round(&mut fetch, &mut sink, t0, SystemTime::now()),
            None
        );
        let mut credited = Schedule::new(Duration::from_secs(60), 32, 8, t0);
        credited.round(&mut fetch, &mut sink, t0, SystemTime::now());
        assert_eq!(sink.calls, vec![(64, 0, false), (32, 256, true)]);
        let r = credited.report("https://d", "sha256:x", t0);
        assert_eq!(
            (r.state, r.bytes_mixed, r.bytes_credited, r.bits_credited),
            ("ok", 32, 32, 256)
        );
        assert_eq!(mixed.report("", "", t0).bytes_credited, 0);
        assert_eq!(mixed.next(), t0 + Duration::from_secs(60));
    }

    #[test]
    fn failures_back_off_are_logged_once_and_recovery_once() {
        let t0 = Instant::now();
        let down = Arc::new(Mutex::new(true));
        let mut fetch = device(down.clone());
        let mut sink = Recorder::default();
        let mut s = Schedule::new(Duration::from_secs(10), 64, 0, t0);
        let mut now = t0;
        let mut logged = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..9 {
            if let Some(Change::Failed(line)) =
                s.round(&mut fetch, &mut sink, now, SystemTime::now())
            {
                logged.push(line);
            }
            delays.push((s.next() - now).as_secs());
            now = s.next();
        }
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert!(logged[0].contains("Connection refused"), "{logged:?}");
        assert!(
            sink.calls.is_empty(),
            "nothing reaches the kernel while the device is down"
        );
        let r = s.report("u", "p", now);
        assert_eq!((r.state, r.failures, r.fetches), ("failing", 9, 0));
        *down.lock().unwrap() = false;
        let line = s.round(&mut fetch, &mut sink, now, SystemTime::now());
        assert_eq!(line, Some(Change::Recovered));
        assert_eq!(
            s.next() - now,
            Duration::from_secs(10),
            "back to the interval"
        );
        let r = s.report("u", "p", now);
        assert_eq!((r.state, r.last_error, r.bytes_mixed), ("ok", None, 64));
        // A second outage starts the backoff from the beginning again.
        *down.lock().unwrap() = true;
        assert!(
            s.round(&mut fetch, &mut sink, now, SystemTime::now())
                .is_some()
        );
        assert_eq!(s.next() - now, FEED_RETRY_INITIAL);
    }

    #[test]
    fn a_kernel_error_is_a_failure_too() {
        struct Refusing;
        impl EntropySink for Refusing {
            fn add_entropy(&mut self, _: &[u8], _: u32) -> Result<(), KernelError> {
                Err(KernelError::PermissionDenied)
            }
            fn mix(&mut self, _: &[u8]) -> Result<(), KernelError> {
                Ok(())
            }
            fn entropy_count(&self) -> Result<u32, KernelError> {
                Ok(0)
            }
            fn crng_initialized(&self) -> Result<bool, KernelError> {
                Ok(true)
            }
        }
        let t0 = Instant::now();
        let mut s = Schedule::new(Duration::from_secs(10), 64, 1, t0);
        let line = s.round(
            &mut device(Arc::default()),
            &mut Refusing,
            t0,
            SystemTime::now(),
        );
        let Some(Change::Failed(line)) = line else {
            panic!("{line:?}")
        };
        assert!(line.contains("CAP_SYS_ADMIN"), "{line}");
        let r = s.report("u", "p", t0);
        assert_eq!(
            (r.state, r.bytes_mixed, r.bytes_credited),
            ("failing", 0, 0)
        );
    }

    #[test]
    fn the_thread_feeds_and_stops() {
        let t0 = Instant::now();
        let fed = Arc::new(Mutex::new(0usize));
        struct Counting(Arc<Mutex<usize>>);
        impl EntropySink for Counting {
            fn add_entropy(&mut self, d: &[u8], _: u32) -> Result<(), KernelError> {
                *self.0.lock().unwrap() += d.len();
                Ok(())
            }
            fn mix(&mut self, d: &[u8]) -> Result<(), KernelError> {
                *self.0.lock().unwrap() += d.len();
                Ok(())
            }
            fn entropy_count(&self) -> Result<u32, KernelError> {
                Ok(0)
            }
            fn crng_initialized(&self) -> Result<bool, KernelError> {
                Ok(true)
            }
        }
        let up = Upstream::start(
            "https://d",
            "sha256:x",
            Schedule::new(Duration::from_secs(3600), 16, 0, t0),
            device(Arc::default()),
            Box::new(Counting(fed.clone())),
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while up.report().fetches == 0 {
            assert!(Instant::now() < deadline, "no round");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The next round is an hour away: stop must not wait for it.
        let stopping = Instant::now();
        up.stop();
        assert!(stopping.elapsed() < Duration::from_secs(1));
        assert_eq!(*fed.lock().unwrap(), 16);
        assert_eq!(up.report().state, "ok");
    }
}
