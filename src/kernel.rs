//! Feeding the Linux kernel's random pool: the ioctl interface and the feeder's credit policy.
//!
//! # The interface (`drivers/char/random.c`, `include/uapi/linux/random.h`)
//!
//! - [`KernelPool`] opens `/dev/random` and wraps `RNDADDENTROPY` (mix bytes and credit bits;
//!   needs CAP_SYS_ADMIN in the initial user namespace, checked by the kernel at every call),
//!   `RNDGETENTCNT` (credited bits, 0..=256 on kernels ≥ 5.18, stuck at 256 once the CRNG is
//!   ready) and a plain `write(2)` that mixes without crediting and needs no capability.
//! - [`crng_initialized`] probes `getrandom(2)` with `GRND_NONBLOCK`: `EAGAIN` means the CRNG
//!   is not yet initialised. No `poll(POLLOUT)` on `/dev/random` anywhere: since 5.18 it never
//!   fires after initialisation, which is how older feeders hung.
//! - The kernel does not check that the credit fits the data; [`KernelPool::add_entropy`]
//!   does, before the call: at most 8 bits per byte, at most the pool's configured cap per byte,
//!   at most [`MAX_ADD_BYTES`] bytes per call (larger writes can end early with `EFAULT` when a
//!   signal is pending). Every error keeps its errno; `EPERM` becomes
//!   [`KernelError::PermissionDenied`], which names the missing capability.
//! - The raw calls live in the private `sys` module: with Fortuna's VAES and AES-NI paths
//!   (`fortuna/vaes.rs`, `fortuna/aesni.rs`), the only `unsafe` code in the workspace.
//!
//! # The feeder policy
//!
//! [`FeederPlan`] is pure logic over an [`EntropySink`] (the kernel, or a recording fake in
//! tests). Before the CRNG is initialised it credits promptly, [`CreditPolicy`] bits per byte
//! (default 1, at most 8) in 64-byte chunks. After it, the credit no longer matters to the
//! kernel (≥ 5.18), so it only mixes 64 bytes every 60 s (the kernel's reseed interval) —
//! still through `RNDADDENTROPY` with the policy's credit for hardware sources, so that the
//! privileged call keeps being exercised and a lost CAP_SYS_ADMIN shows up as `EPERM` in
//! health at once rather than at the next boot. Output of the emulator and bytes that came from
//! the kernel itself are never credited ([`SourceKind`]); they are only mixed, with `write(2)`.
//! With `bits_per_byte` 0 nothing is ever credited and every step is a plain `write(2)`, so the
//! feeder then needs no capability at all.
//!
//! A failed call is not retried at once: the plan waits [`FEED_RETRY_INITIAL`], doubling after
//! every further failure up to [`FEED_RETRY_MAX`], and a success ends the backoff. Meanwhile the
//! step is [`FeedStep::Wait`], so a caller that routes each block to the first sink that wants
//! it (the daemon's harvester) gives the blocks to its other sinks instead of to a failing
//! call; the error stays in [`FeederCounters::last_error`] until a call succeeds.

#[allow(unsafe_code)]
mod sys;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;

/// The device opened by [`KernelPool::open`].
pub const RANDOM_DEVICE: &str = "/dev/random";

/// The most bytes one `RNDADDENTROPY` call takes. The kernel's write loop may stop early at a
/// page boundary when a signal is pending and then fails the whole call with `EFAULT`; up to
/// one page it always completes.
pub const MAX_ADD_BYTES: usize = 4096;

/// The most bits a byte can carry.
pub const MAX_BITS_PER_BYTE: u8 = 8;

/// How long a [`FeederPlan`] waits after a failed call before trying again.
pub const FEED_RETRY_INITIAL: Duration = Duration::from_secs(1);

/// The longest wait after repeated failures (the delay doubles from [`FEED_RETRY_INITIAL`]).
pub const FEED_RETRY_MAX: Duration = Duration::from_secs(60);

/// Errors from the kernel interface.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The random device could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The device path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bits-per-byte setting above 8.
    #[error("credit must be at most 8 bits per byte, got {0}")]
    BitsPerByte(u8),
    /// More credit than the data can carry (8 bits per byte). Refused before the call.
    #[error("refusing to credit {credit_bits} bits for {len} bytes: a byte carries at most 8 bits")]
    CreditExceedsData {
        /// The credit asked for.
        credit_bits: u32,
        /// The data length in bytes.
        len: usize,
    },
    /// More credit than the configured per-byte cap allows. Refused before the call.
    #[error(
        "refusing to credit {credit_bits} bits for {len} bytes: the configured cap is {max_bits_per_byte} bits per byte"
    )]
    CreditExceedsCap {
        /// The credit asked for.
        credit_bits: u32,
        /// The data length in bytes.
        len: usize,
        /// The cap.
        max_bits_per_byte: u8,
    },
    /// More than [`MAX_ADD_BYTES`] in one call; split the data.
    #[error("at most 4096 bytes per RNDADDENTROPY call, got {0}; split the data")]
    TooLarge(usize),
    /// `EPERM` from RNDADDENTROPY: no CAP_SYS_ADMIN in the initial user namespace.
    #[error(
        "the kernel refused RNDADDENTROPY (EPERM): the process lacks CAP_SYS_ADMIN in the initial user namespace (a user-namespaced container, or a CapabilityBoundingSet without it?); grant CAP_SYS_ADMIN or turn crediting off"
    )]
    PermissionDenied,
    /// Any other ioctl failure.
    #[error("{request} failed: {errno}")]
    Ioctl {
        /// The request name, e.g. `RNDADDENTROPY`.
        request: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
    /// RNDGETENTCNT returned a negative count.
    #[error("RNDGETENTCNT returned an impossible count {0}")]
    BadCount(i32),
    /// Writing (mixing) into the random device failed.
    #[error("writing to the random device failed: {0}")]
    Write(std::io::Error),
    /// `getrandom(2)` failed other than with `EAGAIN`.
    #[error("getrandom(GRND_NONBLOCK) failed: {0}")]
    Getrandom(Errno),
    /// A feeder policy value is out of range.
    #[error("invalid feeder policy: {0}")]
    Policy(&'static str),
}

impl KernelError {
    /// The errno the kernel returned, if this error came from a system call.
    #[must_use]
    pub fn errno(&self) -> Option<Errno> {
        match self {
            KernelError::PermissionDenied => Some(Errno::EPERM),
            KernelError::Ioctl { errno, .. } | KernelError::Getrandom(errno) => Some(*errno),
            KernelError::Open { source, .. } | KernelError::Write(source) => {
                source.raw_os_error().map(Errno::from_raw)
            }
            _ => None,
        }
    }
}

/// Where entropy goes: the kernel pool ([`KernelPool`]) or, in tests, a recording fake.
pub trait EntropySink {
    /// Mixes `data` into the pool and credits `credit_bits` bits.
    ///
    /// # Errors
    ///
    /// Implementations refuse over-crediting and surface every kernel error.
    fn add_entropy(&mut self, data: &[u8], credit_bits: u32) -> Result<(), KernelError>;

    /// Mixes `data` into the pool without crediting (needs no capability).
    ///
    /// # Errors
    ///
    /// When the data cannot be written.
    fn mix(&mut self, data: &[u8]) -> Result<(), KernelError>;

    /// The pool's credited bits (RNDGETENTCNT).
    ///
    /// # Errors
    ///
    /// When the count cannot be read.
    fn entropy_count(&self) -> Result<u32, KernelError>;

    /// Whether the kernel CRNG is initialised.
    ///
    /// # Errors
    ///
    /// When the probe fails other than by saying "not yet".
    fn crng_initialized(&self) -> Result<bool, KernelError>;
}

/// The kernel's input pool, through `/dev/random`.
#[derive(Debug)]
pub struct KernelPool {
    file: File,
    max_bits_per_byte: u8,
}

impl KernelPool {
    /// Opens [`RANDOM_DEVICE`] for reading and writing (mode 0666: no privilege needed to
    /// open; RNDADDENTROPY checks CAP_SYS_ADMIN at each call). The per-byte cap starts at 8.
    ///
    /// # Errors
    ///
    /// [`KernelError::Open`] when the device cannot be opened.
    pub fn open() -> Result<Self, KernelError> {
        Self::open_path(Path::new(RANDOM_DEVICE))
    }

    /// Opens another device node, e.g. `/dev/urandom` (the same pool).
    ///
    /// # Errors
    ///
    /// [`KernelError::Open`] when the path cannot be opened.
    pub fn open_path(path: &Path) -> Result<Self, KernelError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| KernelError::Open {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            file,
            max_bits_per_byte: MAX_BITS_PER_BYTE,
        })
    }

    /// Caps the credit at `bits` per byte of data (the configured credit policy), checked on
    /// every [`add_entropy`](Self::add_entropy) before the system call.
    ///
    /// # Errors
    ///
    /// [`KernelError::BitsPerByte`] for more than 8.
    pub fn with_max_bits_per_byte(mut self, bits: u8) -> Result<Self, KernelError> {
        if bits > MAX_BITS_PER_BYTE {
            return Err(KernelError::BitsPerByte(bits));
        }
        self.max_bits_per_byte = bits;
        Ok(self)
    }

    /// The per-byte cap in force.
    #[must_use]
    pub fn max_bits_per_byte(&self) -> u8 {
        self.max_bits_per_byte
    }

    /// RNDADDENTROPY: mixes `data` into the input pool and credits `credit_bits`.
    ///
    /// # Errors
    ///
    /// Before the call: [`KernelError::TooLarge`], [`KernelError::CreditExceedsData`],
    /// [`KernelError::CreditExceedsCap`]. From the kernel: [`KernelError::PermissionDenied`]
    /// for `EPERM`, otherwise [`KernelError::Ioctl`] with the errno (`ENOTTY` when the file is
    /// not a random device).
    pub fn add_entropy(&self, data: &[u8], credit_bits: u32) -> Result<(), KernelError> {
        check_credit(data.len(), credit_bits, self.max_bits_per_byte)?;
        // Both fit an int: len ≤ 4096, credit ≤ 8·len.
        let count = i32::try_from(credit_bits).map_err(|_| KernelError::TooLarge(data.len()))?;
        let info = sys::RandPoolInfo::new(count, data).ok_or(KernelError::TooLarge(data.len()))?;
        sys::add_entropy(self.file.as_fd(), &info).map_err(|errno| match errno {
            Errno::EPERM => KernelError::PermissionDenied,
            errno => KernelError::Ioctl {
                request: "RNDADDENTROPY",
                errno,
            },
        })
    }

    /// Mixes `data` into the pool with `write(2)`, crediting nothing. Needs no capability.
    ///
    /// # Errors
    ///
    /// [`KernelError::Write`] when the write fails.
    pub fn mix(&self, data: &[u8]) -> Result<(), KernelError> {
        (&self.file).write_all(data).map_err(KernelError::Write)
    }

    /// RNDGETENTCNT: the input pool's credited bits.
    ///
    /// # Errors
    ///
    /// [`KernelError::Ioctl`] with the errno, or [`KernelError::BadCount`].
    pub fn entropy_count(&self) -> Result<u32, KernelError> {
        let count = sys::entropy_count(self.file.as_fd()).map_err(|errno| KernelError::Ioctl {
            request: "RNDGETENTCNT",
            errno,
        })?;
        u32::try_from(count).map_err(|_| KernelError::BadCount(count))
    }
}

impl EntropySink for KernelPool {
    fn add_entropy(&mut self, data: &[u8], credit_bits: u32) -> Result<(), KernelError> {
        KernelPool::add_entropy(self, data, credit_bits)
    }

    fn mix(&mut self, data: &[u8]) -> Result<(), KernelError> {
        KernelPool::mix(self, data)
    }

    fn entropy_count(&self) -> Result<u32, KernelError> {
        KernelPool::entropy_count(self)
    }

    fn crng_initialized(&self) -> Result<bool, KernelError> {
        crng_initialized()
    }
}

/// Checks a credit against the data length and the per-byte cap, as [`KernelPool`] does before
/// every RNDADDENTROPY (fakes use it too, so they refuse exactly what the kernel wrapper does).
///
/// # Errors
///
/// [`KernelError::TooLarge`], [`KernelError::CreditExceedsData`],
/// [`KernelError::CreditExceedsCap`].
pub fn check_credit(
    len: usize,
    credit_bits: u32,
    max_bits_per_byte: u8,
) -> Result<(), KernelError> {
    if len > MAX_ADD_BYTES {
        return Err(KernelError::TooLarge(len));
    }
    let bits = u64::from(credit_bits);
    if bits > 8 * len as u64 {
        return Err(KernelError::CreditExceedsData { credit_bits, len });
    }
    if bits > u64::from(max_bits_per_byte) * len as u64 {
        return Err(KernelError::CreditExceedsCap {
            credit_bits,
            len,
            max_bits_per_byte,
        });
    }
    Ok(())
}

/// Whether the kernel CRNG is initialised: `getrandom(2)` of one byte with `GRND_NONBLOCK`
/// succeeds once it is and fails with `EAGAIN` before. The byte read is discarded.
///
/// # Errors
///
/// [`KernelError::Getrandom`] for any errno other than `EAGAIN` (and `EINTR`, retried).
pub fn crng_initialized() -> Result<bool, KernelError> {
    let mut byte = [0u8; 1];
    loop {
        match sys::getrandom_nonblock(&mut byte) {
            Ok(_) => return Ok(true),
            Err(Errno::EAGAIN) => return Ok(false),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(KernelError::Getrandom(errno)),
        }
    }
}

/// What produced a block, as far as crediting is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A physical noise source (the ATECC608A): may be credited.
    Hardware,
    /// The ATECC608A emulator: its output is pseudo-random and never credited.
    Emulator,
    /// Bytes that came from the kernel itself (e.g. `getrandom`): crediting them would count
    /// the kernel's own entropy twice. Never credited.
    Kernel,
}

impl SourceKind {
    /// Whether blocks of this kind may be credited.
    #[must_use]
    pub fn may_credit(self) -> bool {
        matches!(self, SourceKind::Hardware)
    }
}

/// How the feeder credits and mixes. [`Default`]: 1 bit per byte in 64-byte chunks before the
/// CRNG is initialised, then 64 bytes every 60 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditPolicy {
    bits_per_byte: u8,
    chunk_bytes: usize,
    mix_bytes: usize,
    mix_interval: Duration,
}

impl Default for CreditPolicy {
    fn default() -> Self {
        Self {
            bits_per_byte: 1,
            chunk_bytes: 64,
            mix_bytes: 64,
            mix_interval: Duration::from_secs(60),
        }
    }
}

impl CreditPolicy {
    /// A policy; `bits_per_byte` 0 means mix only.
    ///
    /// # Errors
    ///
    /// [`KernelError::BitsPerByte`] above 8; [`KernelError::Policy`] for a chunk or mix size of
    /// zero or above [`MAX_ADD_BYTES`], or a zero interval.
    pub fn new(
        bits_per_byte: u8,
        chunk_bytes: usize,
        mix_bytes: usize,
        mix_interval: Duration,
    ) -> Result<Self, KernelError> {
        if bits_per_byte > MAX_BITS_PER_BYTE {
            return Err(KernelError::BitsPerByte(bits_per_byte));
        }
        if !(1..=MAX_ADD_BYTES).contains(&chunk_bytes) {
            return Err(KernelError::Policy(
                "chunk_bytes must be between 1 and 4096",
            ));
        }
        if !(1..=MAX_ADD_BYTES).contains(&mix_bytes) {
            return Err(KernelError::Policy("mix_bytes must be between 1 and 4096"));
        }
        if mix_interval.is_zero() {
            return Err(KernelError::Policy("mix_interval must be above zero"));
        }
        Ok(Self {
            bits_per_byte,
            chunk_bytes,
            mix_bytes,
            mix_interval,
        })
    }

    /// The same policy crediting `bits_per_byte` (a source's own credit setting).
    ///
    /// # Errors
    ///
    /// [`KernelError::BitsPerByte`] above 8.
    pub fn with_bits_per_byte(mut self, bits_per_byte: u8) -> Result<Self, KernelError> {
        if bits_per_byte > MAX_BITS_PER_BYTE {
            return Err(KernelError::BitsPerByte(bits_per_byte));
        }
        self.bits_per_byte = bits_per_byte;
        Ok(self)
    }

    /// Credited bits per byte (0..=8).
    #[must_use]
    pub fn bits_per_byte(&self) -> u8 {
        self.bits_per_byte
    }

    /// Bytes per credited chunk before the CRNG is initialised.
    #[must_use]
    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// Bytes mixed per interval after initialisation.
    #[must_use]
    pub fn mix_bytes(&self) -> usize {
        self.mix_bytes
    }

    /// The mixing interval.
    #[must_use]
    pub fn mix_interval(&self) -> Duration {
        self.mix_interval
    }

    /// The credit for `len` bytes of `kind`: `bits_per_byte · len`, or 0 for a kind that is
    /// never credited.
    #[must_use]
    pub fn credit_for(&self, kind: SourceKind, len: usize) -> u32 {
        if !kind.may_credit() {
            return 0;
        }
        u32::try_from(len)
            .unwrap_or(u32::MAX)
            .saturating_mul(u32::from(self.bits_per_byte))
    }
}

/// The feeder's next action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedStep {
    /// Get `bytes` healthy bytes and credit them (RNDADDENTROPY) now.
    Credit {
        /// How many bytes to fetch.
        bytes: usize,
    },
    /// Get `bytes` healthy bytes and mix them without credit now.
    Mix {
        /// How many bytes to fetch.
        bytes: usize,
    },
    /// Nothing to do before this time (sleep on a timer; never poll `/dev/random`).
    Wait {
        /// When to ask again.
        until: Instant,
    },
}

/// Counters for status and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeederCounters {
    /// Successful RNDADDENTROPY calls.
    pub credit_calls: u64,
    /// Bytes passed with RNDADDENTROPY.
    pub credited_bytes: u64,
    /// Bits credited.
    pub credited_bits: u64,
    /// Successful mixes.
    pub mix_calls: u64,
    /// Bytes mixed without credit.
    pub mixed_bytes: u64,
    /// Failed calls.
    pub errors: u64,
    /// The last failure's message, cleared by the next success.
    pub last_error: Option<String>,
    /// When the last call (credit or mix) succeeded.
    pub last_success: Option<Instant>,
}

/// The feeder's schedule for one source: pure logic, driven by the caller's clock and the
/// kernel's readiness; see the module docs.
#[derive(Debug, Clone)]
pub struct FeederPlan {
    policy: CreditPolicy,
    kind: SourceKind,
    last_mix: Option<Instant>,
    /// After a failure: when to try again, and the delay that led there.
    retry: Option<(Instant, Duration)>,
    counters: FeederCounters,
}

impl FeederPlan {
    /// A plan for blocks of `kind` under `policy`.
    #[must_use]
    pub fn new(policy: CreditPolicy, kind: SourceKind) -> Self {
        Self {
            policy,
            kind,
            last_mix: None,
            retry: None,
            counters: FeederCounters::default(),
        }
    }

    /// The policy.
    #[must_use]
    pub fn policy(&self) -> &CreditPolicy {
        &self.policy
    }

    /// Replaces the policy (a configuration change at run time). The schedule goes on from the
    /// last mix under the new interval; a backoff after a failure is kept.
    pub fn set_policy(&mut self, policy: CreditPolicy) {
        self.policy = policy;
    }

    /// When the plan tries again after a failed call, while it backs off.
    #[must_use]
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry.map(|(at, _)| at)
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &FeederCounters {
        &self.counters
    }

    /// True when the last call to the sink failed (health shows the feeder as failing).
    #[must_use]
    pub fn is_failing(&self) -> bool {
        self.counters.last_error.is_some()
    }

    /// What to do at `now`, given whether the kernel CRNG is initialised.
    #[must_use]
    pub fn next_step(&self, now: Instant, crng_ready: bool) -> FeedStep {
        if let Some((until, _)) = self.retry
            && now < until
        {
            return FeedStep::Wait { until };
        }
        let crediting = self.kind.may_credit() && self.policy.bits_per_byte > 0;
        if crediting && !crng_ready {
            return FeedStep::Credit {
                bytes: self.policy.chunk_bytes,
            };
        }
        match self
            .last_mix
            .and_then(|t| t.checked_add(self.policy.mix_interval))
        {
            Some(due) if now < due => FeedStep::Wait { until: due },
            _ => FeedStep::Mix {
                bytes: self.policy.mix_bytes,
            },
        }
    }

    /// Carries out `step` with `data` (healthy bytes from the source) on `sink`, and records
    /// it. The credit is computed here from the data's length and the source kind, never
    /// taken from the caller. A [`FeedStep::Wait`] does nothing. A failure starts (or
    /// lengthens) the backoff that [`FeederPlan::next_step`] then waits out; a success ends it.
    ///
    /// # Errors
    ///
    /// The sink's error, counted and kept as the last error.
    pub fn perform<S: EntropySink + ?Sized>(
        &mut self,
        sink: &mut S,
        step: FeedStep,
        data: &[u8],
        now: Instant,
    ) -> Result<(), KernelError> {
        let result = match step {
            FeedStep::Credit { .. } => {
                let bits = self.policy.credit_for(self.kind, data.len());
                sink.add_entropy(data, bits).map(|()| {
                    self.counters.credit_calls += 1;
                    self.counters.credited_bytes += data.len() as u64;
                    self.counters.credited_bits += u64::from(bits);
                })
            }
            FeedStep::Mix { .. } => {
                let bits = self.policy.credit_for(self.kind, data.len());
                // Hardware bytes go through RNDADDENTROPY (see the module docs); the rest is
                // written without credit.
                let done = if bits > 0 {
                    sink.add_entropy(data, bits).map(|()| {
                        self.counters.credit_calls += 1;
                        self.counters.credited_bytes += data.len() as u64;
                        self.counters.credited_bits += u64::from(bits);
                    })
                } else {
                    sink.mix(data)
                };
                done.map(|()| {
                    self.counters.mix_calls += 1;
                    self.counters.mixed_bytes += data.len() as u64;
                    self.last_mix = Some(now);
                })
            }
            FeedStep::Wait { .. } => return Ok(()),
        };
        match &result {
            Ok(()) => {
                self.counters.last_error = None;
                self.counters.last_success = Some(now);
                self.retry = None;
            }
            Err(e) => {
                self.counters.errors += 1;
                self.counters.last_error = Some(e.to_string());
                let delay = self
                    .retry
                    .map_or(FEED_RETRY_INITIAL, |(_, d)| (d * 2).min(FEED_RETRY_MAX));
                self.retry = Some((now + delay, delay));
            }
        }
        result
    }
}
