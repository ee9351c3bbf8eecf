//! Continuous health tests for every entropy source (NIST SP 800-90B §4), failing closed.
//!
//! A [`HealthMonitor`] watches one source. The daemon feeds it every block the source
//! produces, with the current time, and gets back a [`Verdict`]: only [`Verdict::Pass`] blocks
//! may be used (kernel, Fortuna pools, TRNG queue); everything else is dropped.
//!
//! # What is tested
//!
//! Each byte is one sample (non-binary, so the APT window is W = 512, §4.4.2).
//! - Repetition Count Test (§4.4.1) and Adaptive Proportion Test (§4.4.2) on the byte stream,
//!   with cutoffs computed from the claimed min-entropy `H` and false-alarm rate `α`
//!   ([`cutoff`]); state carries over block boundaries.
//! - Whole-block checks: the unlocked-chip pattern `FF FF 00 00 …`, constant blocks, and a
//!   block equal to one of the last [`HealthConfig::duplicate_history`] blocks (blocks of at
//!   least [`MIN_CHECKED_BLOCK_BYTES`] bytes).
//! - The start-up test (§4.3): before a source's output is used, the continuous tests run over
//!   [`HealthConfig::startup_samples`] (≥ 1024) consecutive samples; those samples are
//!   withheld ([`Verdict::StartUp`]), never used, and any failure during start-up fails it.
//!
//! # Two tiers
//!
//! A healthy source must not raise false alarms daily, yet a broken one must be cut off fast.
//! So every test has two cutoffs from the same `H`:
//! - **discard** at `α = 2^-30` (default): the block is dropped and counted; the source stays up.
//! - **quarantine** at `α = 2^-40` (default), or **repeated failures**: the source is cut off.
//!   "Repeated" means [`HealthConfig::repeat_limit`] (3) discard-tier failures within
//!   [`HealthConfig::repeat_window`] (one hour). For a healthy source at `H = 8` a discard
//!   is about a monthly event (RCT C = 5 at ~1.2 kB/s), so three in one hour has a probability
//!   far below 2^-40; for a stuck source it happens within a block or two.
//!
//! Whole-block check failures are quarantine-tier: their false-alarm rate is below 2^-120.
//!
//! The APT cutoffs use the specification's form (`1 + CRITBINOM(W, 2^-H, 1 - α)`, matching its
//! Table 2). Since the test really counts matches among `W - 1` samples, its true per-window
//! false-alarm rate is somewhat above the nominal α: at `H = 8` about 2^-28.2 for the discard
//! cutoff 16 and 2^-37.6 for the quarantine cutoff 19 ([`cutoff::binomial_tail_log2`] computes
//! these). This errs on the sensitive side; [`cutoff::apt_cutoff_exact`] gives the other form.
//!
//! At a low claimed `H` the byte tests only catch gross failure (the APT cutoff at `H = 1` is
//! 311 of 512 and the unlocked pattern gives 256), which is why the whole-block checks exist and
//! why a conditioned source such as the ATECC608A (a DRBG output) should be tested at `H = 8`
//! whatever it is credited at.
//!
//! # States
//!
//! `StartingUp → Healthy → Quarantined → Retrying → Healthy`, deterministically driven by
//! the blocks and the times passed in (no clock is read here). A quarantined source is retried
//! after an exponential backoff ([`HealthConfig::backoff_initial`] doubling up to
//! [`HealthConfig::backoff_max`]); the retry is a fresh start-up test, and only passing it
//! brings the source back. The backoff resets once a source has stayed healthy for
//! [`HealthConfig::stable_after`]. Every state change is returned once, as a [`Transition`]
//! in the [`Outcome`] of the call that caused it, so the daemon logs it exactly once.
//!
//! A failure detected by the APT implicates its whole 512-sample window, part of which may have
//! been passed in earlier blocks; this is inherent to a continuous test (§4.4) and the reason
//! the tiers and the block checks exist.

pub mod cutoff;

mod block;
mod continuous;

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use block::{BlockChecker, BlockFault};
pub use block::{MIN_CHECKED_BLOCK_BYTES, UNLOCKED_CHIP_PATTERN};
use continuous::{AdaptiveProportion, RepetitionCount};
use cutoff::APT_WINDOW_SAMPLES;

/// The minimum number of start-up samples (SP 800-90B §4.3 item 4).
pub const MIN_STARTUP_SAMPLES: usize = 1024;

/// Errors from configuring a [`HealthMonitor`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HealthError {
    /// The claimed min-entropy is outside `(0, 8]` bits per byte.
    #[error("claimed min-entropy must be above 0 and at most 8 bits per byte, got {0}")]
    MinEntropy(f64),
    /// A false-alarm rate is outside `2^-80 ..= 2^-1`.
    #[error(
        "false-alarm rate must be between 2^-80 and 2^-1 (SP 800-90B suggests 2^-20 to 2^-40), got 2^{0}"
    )]
    Alpha(f64),
    /// The quarantine tier would be more sensitive than the discard tier.
    #[error(
        "the quarantine tier's false-alarm rate (2^{quarantine}) must not exceed the discard tier's (2^{discard})"
    )]
    TierOrder {
        /// `log2(α)` of the discard tier.
        discard: f64,
        /// `log2(α)` of the quarantine tier.
        quarantine: f64,
    },
    /// No Adaptive Proportion cutoff within the window: `H` is too small for this `α`.
    #[error(
        "claimed min-entropy {min_entropy_bits} bits per byte is too low for an adaptive proportion test at α = 2^{alpha_log2}; claim more or accept a higher α"
    )]
    NoAptCutoff {
        /// The claimed min-entropy per byte.
        min_entropy_bits: f64,
        /// `log2(α)` of the tier that has no cutoff.
        alpha_log2: f64,
    },
    /// Fewer start-up samples than SP 800-90B §4.3 requires.
    #[error("the start-up test needs at least 1024 samples (SP 800-90B §4.3), got {0}")]
    StartupSamples(usize),
    /// `repeat_limit` is zero.
    #[error("repeat_limit must be at least 1")]
    RepeatLimit,
    /// The backoff bounds are zero, reversed or longer than a day.
    #[error(
        "backoff must satisfy 0 < initial <= max <= 1 day, got initial {initial:?}, max {max:?}"
    )]
    Backoff {
        /// The configured initial backoff.
        initial: Duration,
        /// The configured maximum backoff.
        max: Duration,
    },
}

/// Configuration of one source's health tests. [`Default`] is the recommended setting for a
/// conditioned source such as the ATECC608A or a kernel hwrng.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// Claimed min-entropy per byte `H` used to derive the cutoffs, in `(0, 8]`. Default 8:
    /// the most sensitive setting, right for conditioned (DRBG or hashed) output. This is the
    /// test's assumption, independent of how many bits per byte are credited to the kernel.
    pub min_entropy_bits: f64,
    /// `log2(α)` of the discard tier. Default -30.
    pub discard_alpha_log2: f64,
    /// `log2(α)` of the quarantine tier. Default -40.
    pub quarantine_alpha_log2: f64,
    /// Samples in the start-up test, at least [`MIN_STARTUP_SAMPLES`]. Default 1024.
    pub startup_samples: usize,
    /// How many recent blocks (by SHA-256 digest) the duplicate check remembers. Default 16.
    pub duplicate_history: usize,
    /// Discard-tier failures within `repeat_window` that quarantine the source. Default 3.
    pub repeat_limit: u32,
    /// The window for `repeat_limit`. Default one hour.
    pub repeat_window: Duration,
    /// First quarantine's length. Default 1 s.
    pub backoff_initial: Duration,
    /// Longest quarantine. Default 10 minutes.
    pub backoff_max: Duration,
    /// Time healthy after which the backoff starts again from `backoff_initial`. Default 1 h.
    pub stable_after: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            min_entropy_bits: 8.0,
            discard_alpha_log2: -30.0,
            quarantine_alpha_log2: -40.0,
            startup_samples: MIN_STARTUP_SAMPLES,
            duplicate_history: 16,
            repeat_limit: 3,
            repeat_window: Duration::from_secs(3600),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(600),
            stable_after: Duration::from_secs(3600),
        }
    }
}

/// The cutoffs in force for one monitor, for status output and metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cutoffs {
    /// The claimed min-entropy per byte they were computed from.
    pub min_entropy_bits: f64,
    /// Repetition Count Test cutoff of the discard tier.
    pub rct_discard: u32,
    /// Repetition Count Test cutoff of the quarantine tier.
    pub rct_quarantine: u32,
    /// Adaptive Proportion Test window (512 for bytes).
    pub apt_window: usize,
    /// Adaptive Proportion Test cutoff of the discard tier.
    pub apt_discard: u32,
    /// Adaptive Proportion Test cutoff of the quarantine tier.
    pub apt_quarantine: u32,
}

impl Cutoffs {
    /// Computes both tiers' cutoffs (SP 800-90B §4.4.1, §4.4.2 with W = 512).
    ///
    /// # Errors
    ///
    /// [`HealthError::MinEntropy`], [`HealthError::Alpha`], [`HealthError::TierOrder`] for
    /// out-of-range inputs, and [`HealthError::NoAptCutoff`] when `H` is too small for the APT.
    pub fn compute(
        min_entropy_bits: f64,
        discard_alpha_log2: f64,
        quarantine_alpha_log2: f64,
    ) -> Result<Self, HealthError> {
        // `!(x > 0)` also rejects NaN.
        if !(min_entropy_bits > 0.0 && min_entropy_bits <= 8.0) {
            return Err(HealthError::MinEntropy(min_entropy_bits));
        }
        for a in [discard_alpha_log2, quarantine_alpha_log2] {
            if !((-80.0..=-1.0).contains(&a)) {
                return Err(HealthError::Alpha(a));
            }
        }
        if quarantine_alpha_log2 > discard_alpha_log2 {
            return Err(HealthError::TierOrder {
                discard: discard_alpha_log2,
                quarantine: quarantine_alpha_log2,
            });
        }
        let apt = |alpha_log2| {
            cutoff::apt_cutoff(min_entropy_bits, alpha_log2, APT_WINDOW_SAMPLES).ok_or(
                HealthError::NoAptCutoff {
                    min_entropy_bits,
                    alpha_log2,
                },
            )
        };
        Ok(Self {
            min_entropy_bits,
            rct_discard: cutoff::rct_cutoff(min_entropy_bits, discard_alpha_log2),
            rct_quarantine: cutoff::rct_cutoff(min_entropy_bits, quarantine_alpha_log2),
            apt_window: APT_WINDOW_SAMPLES,
            apt_discard: apt(discard_alpha_log2)?,
            apt_quarantine: apt(quarantine_alpha_log2)?,
        })
    }
}

/// A health test, as named in counters, metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestKind {
    /// SP 800-90B §4.4.1 Repetition Count Test.
    RepetitionCount,
    /// SP 800-90B §4.4.2 Adaptive Proportion Test.
    AdaptiveProportion,
    /// The unlocked-chip pattern `FF FF 00 00 …`.
    UnlockedPattern,
    /// A block of one repeated byte value.
    ConstantBlock,
    /// A block equal to a recent one.
    DuplicateBlock,
}

impl TestKind {
    /// Every test, in a fixed order (the order of [`HealthCounters::failures`]).
    pub const ALL: [TestKind; 5] = [
        TestKind::RepetitionCount,
        TestKind::AdaptiveProportion,
        TestKind::UnlockedPattern,
        TestKind::ConstantBlock,
        TestKind::DuplicateBlock,
    ];

    /// A short snake_case name for metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            TestKind::RepetitionCount => "repetition_count",
            TestKind::AdaptiveProportion => "adaptive_proportion",
            TestKind::UnlockedPattern => "unlocked_pattern",
            TestKind::ConstantBlock => "constant_block",
            TestKind::DuplicateBlock => "duplicate_block",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TestKind::RepetitionCount => "repetition count test",
            TestKind::AdaptiveProportion => "adaptive proportion test",
            TestKind::UnlockedPattern => "unlocked-chip pattern (FF FF 00 00)",
            TestKind::ConstantBlock => "constant block",
            TestKind::DuplicateBlock => "duplicate block",
        })
    }
}

/// How severe a failure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    /// The failing block is dropped; the source stays in service.
    Discard,
    /// The source is quarantined.
    Quarantine,
}

impl Tier {
    /// A short name for metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Discard => "discard",
            Tier::Quarantine => "quarantine",
        }
    }
}

/// One failed test at one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Failure {
    /// Which test failed.
    pub kind: TestKind,
    /// At which tier.
    pub tier: Tier,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed at the {} tier", self.kind, self.tier.as_str())
    }
}

/// A source's health state, for status output and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// The first start-up test is running; output is withheld.
    StartingUp,
    /// Output passes block by block.
    Healthy,
    /// Cut off; waiting for the backoff to elapse.
    Quarantined,
    /// A fresh start-up test after a quarantine; output is withheld.
    Retrying,
}

impl HealthState {
    /// A short snake_case name for metric labels.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::StartingUp => "starting_up",
            HealthState::Healthy => "healthy",
            HealthState::Quarantined => "quarantined",
            HealthState::Retrying => "retrying",
        }
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What may be done with one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Healthy: the block may be used.
    Pass,
    /// Consumed by a start-up test (§4.3): drop it.
    StartUp,
    /// Failed a discard-tier test: drop it.
    Discard(Failure),
    /// The source is quarantined (possibly by this block): drop it, and read the source again
    /// no earlier than `retry_at`.
    Quarantined {
        /// When the next block will be tested (a fresh start-up test).
        retry_at: Instant,
    },
}

impl Verdict {
    /// True only for [`Verdict::Pass`].
    #[must_use]
    pub fn is_usable(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// Why the state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionCause {
    /// A start-up test passed.
    StartUpPassed,
    /// A test failed at the quarantine tier.
    Failure(Failure),
    /// A test failed (at either tier) during a start-up test (§4.3).
    StartUpFailed(Failure),
    /// `count` discard-tier failures within the repeat window.
    RepeatedFailures {
        /// Failures counted in the window.
        count: u32,
    },
    /// The quarantine backoff elapsed; a fresh start-up test begins.
    BackoffElapsed,
    /// [`HealthMonitor::restart`] was called.
    Restarted,
}

impl fmt::Display for TransitionCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionCause::StartUpPassed => f.write_str("start-up test passed"),
            TransitionCause::Failure(failure) => write!(f, "{failure}"),
            TransitionCause::StartUpFailed(failure) => write!(f, "start-up test: {failure}"),
            TransitionCause::RepeatedFailures { count } => {
                write!(f, "{count} discard-tier failures within the repeat window")
            }
            TransitionCause::BackoffElapsed => f.write_str("backoff elapsed, retrying"),
            TransitionCause::Restarted => f.write_str("restarted"),
        }
    }
}

/// A state change, reported exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: HealthState,
    /// The state after.
    pub to: HealthState,
    /// Why.
    pub cause: TransitionCause,
    /// The time passed in with the call that caused it.
    pub at: Instant,
    /// For a change to [`HealthState::Quarantined`]: when the source will be retried.
    pub retry_at: Option<Instant>,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: {}", self.from, self.to, self.cause)
    }
}

/// The result of feeding one block.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Outcome {
    /// What to do with the block.
    pub verdict: Verdict,
    /// State changes this block caused, in order (at most two: a retry can begin and end with
    /// one large block). Log each once.
    pub transitions: Vec<Transition>,
}

/// Counters for status and metrics. All are totals since the monitor was created.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCounters {
    /// Blocks run through the tests.
    pub blocks_tested: u64,
    /// Samples (bytes) run through the RCT and APT.
    pub samples_tested: u64,
    /// Blocks that passed.
    pub blocks_passed: u64,
    /// Blocks consumed by start-up tests.
    pub blocks_startup: u64,
    /// Blocks dropped for a discard-tier failure.
    pub blocks_discarded: u64,
    /// Blocks dropped because the source was (or became) quarantined.
    pub blocks_quarantined: u64,
    /// Start-up tests passed (the first one and every successful retry).
    pub startups_passed: u64,
    /// Start-up tests failed.
    pub startups_failed: u64,
    /// Times the source was quarantined.
    pub quarantines: u64,
    /// State changes.
    pub transitions: u64,
    /// Failures by test (in [`TestKind::ALL`] order) and tier (discard, quarantine).
    pub failures: [[u64; 2]; 5],
}

impl HealthCounters {
    /// Failures of one test at one tier.
    #[must_use]
    pub fn failures_of(&self, kind: TestKind, tier: Tier) -> u64 {
        self.failures[kind.index()][tier as usize]
    }
}

/// The internal phase, with the data each needs.
#[derive(Debug, Clone, Copy)]
enum Phase {
    StartUp { retry: bool, samples: usize },
    Healthy { since: Instant },
    Quarantined { until: Instant },
}

/// The health-test state machine for one source. See the module docs for the contract.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    config: HealthConfig,
    cutoffs: Cutoffs,
    rct: RepetitionCount,
    apt: AdaptiveProportion,
    blocks: BlockChecker,
    phase: Phase,
    counters: HealthCounters,
    /// Times of recent discard-tier failures (at most `repeat_limit`).
    recent_failures: VecDeque<Instant>,
    /// Quarantines in a row without a stable healthy period; the backoff exponent.
    backoff_step: u32,
    last_failure: Option<Failure>,
}

impl HealthMonitor {
    /// Creates a monitor in [`HealthState::StartingUp`].
    ///
    /// # Errors
    ///
    /// Any [`HealthError`] for an invalid configuration (see the variants).
    pub fn new(config: HealthConfig) -> Result<Self, HealthError> {
        let cutoffs = Cutoffs::compute(
            config.min_entropy_bits,
            config.discard_alpha_log2,
            config.quarantine_alpha_log2,
        )?;
        if config.startup_samples < MIN_STARTUP_SAMPLES {
            return Err(HealthError::StartupSamples(config.startup_samples));
        }
        if config.repeat_limit == 0 {
            return Err(HealthError::RepeatLimit);
        }
        const DAY: Duration = Duration::from_secs(86_400);
        if config.backoff_initial.is_zero()
            || config.backoff_initial > config.backoff_max
            || config.backoff_max > DAY
        {
            return Err(HealthError::Backoff {
                initial: config.backoff_initial,
                max: config.backoff_max,
            });
        }
        Ok(Self {
            rct: RepetitionCount::new(cutoffs.rct_discard, cutoffs.rct_quarantine),
            apt: AdaptiveProportion::new(
                cutoffs.apt_window,
                cutoffs.apt_discard,
                cutoffs.apt_quarantine,
            ),
            blocks: BlockChecker::new(config.duplicate_history),
            phase: Phase::StartUp {
                retry: false,
                samples: 0,
            },
            counters: HealthCounters::default(),
            recent_failures: VecDeque::new(),
            backoff_step: 0,
            last_failure: None,
            cutoffs,
            config,
        })
    }

    /// The configuration in force.
    #[must_use]
    pub fn config(&self) -> &HealthConfig {
        &self.config
    }

    /// The computed cutoffs.
    #[must_use]
    pub fn cutoffs(&self) -> Cutoffs {
        self.cutoffs
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> HealthState {
        match self.phase {
            Phase::StartUp { retry: false, .. } => HealthState::StartingUp,
            Phase::StartUp { retry: true, .. } => HealthState::Retrying,
            Phase::Healthy { .. } => HealthState::Healthy,
            Phase::Quarantined { .. } => HealthState::Quarantined,
        }
    }

    /// The counters.
    #[must_use]
    pub fn counters(&self) -> &HealthCounters {
        &self.counters
    }

    /// The most recent failure, for status output.
    #[must_use]
    pub fn last_failure(&self) -> Option<Failure> {
        self.last_failure
    }

    /// When a quarantined source will next be tested; `None` when not quarantined. The daemon
    /// need not read the source before then (blocks fed earlier are dropped untested).
    #[must_use]
    pub fn retry_at(&self) -> Option<Instant> {
        match self.phase {
            Phase::Quarantined { until } => Some(until),
            _ => None,
        }
    }

    /// Starts a fresh start-up test now, from any state (e.g. the device was reopened or an
    /// operator asked for a reset). The backoff starts over.
    pub fn restart(&mut self, now: Instant) -> Transition {
        let from = self.state();
        self.backoff_step = 0;
        self.begin_startup(false);
        self.transition(from, TransitionCause::Restarted, now)
    }

    /// Tests one block from the source at time `now` and says whether it may be used.
    ///
    /// `now` must not go backwards between calls (pass a monotonic clock's reading; a virtual
    /// one in tests). A block is one read from the source, normally 32 bytes.
    pub fn feed(&mut self, block: &[u8], now: Instant) -> Outcome {
        let mut transitions = Vec::new();
        if let Phase::Quarantined { until } = self.phase {
            if now < until {
                self.counters.blocks_quarantined += 1;
                return Outcome {
                    verdict: Verdict::Quarantined { retry_at: until },
                    transitions,
                };
            }
            self.begin_startup(true);
            transitions.push(self.transition(
                HealthState::Quarantined,
                TransitionCause::BackoffElapsed,
                now,
            ));
        }

        let found = self.run_tests(block);
        let verdict = match self.phase {
            Phase::StartUp { retry, samples } => {
                self.counters.blocks_startup += 1;
                if let Some(failure) = found.worst() {
                    // §4.3: any failure during start-up means the source is not fit for use.
                    self.counters.startups_failed += 1;
                    let until = self.quarantine(
                        TransitionCause::StartUpFailed(failure),
                        now,
                        &mut transitions,
                    );
                    self.counters.blocks_quarantined += 1;
                    return Outcome {
                        verdict: Verdict::Quarantined { retry_at: until },
                        transitions,
                    };
                } else {
                    let samples = samples.saturating_add(block.len());
                    if samples >= self.config.startup_samples {
                        self.counters.startups_passed += 1;
                        let from = if retry {
                            HealthState::Retrying
                        } else {
                            HealthState::StartingUp
                        };
                        self.phase = Phase::Healthy { since: now };
                        transitions.push(self.transition(
                            from,
                            TransitionCause::StartUpPassed,
                            now,
                        ));
                    } else {
                        self.phase = Phase::StartUp { retry, samples };
                    }
                }
                Verdict::StartUp
            }
            Phase::Healthy { .. } => self.judge_healthy(&found, now, &mut transitions),
            // Left above; kept total rather than asserted.
            Phase::Quarantined { until } => Verdict::Quarantined { retry_at: until },
        };
        if let Verdict::Quarantined { .. } = verdict {
            self.counters.blocks_quarantined += 1;
        }
        Outcome {
            verdict,
            transitions,
        }
    }

    /// The verdict on a tested block while healthy.
    fn judge_healthy(
        &mut self,
        found: &Found,
        now: Instant,
        transitions: &mut Vec<Transition>,
    ) -> Verdict {
        let cause = if let Some(failure) = found.first_quarantine {
            TransitionCause::Failure(failure)
        } else if let Some(failure) = found.worst() {
            for _ in 0..found.new_discard_failures {
                self.note_discard_failure(now);
            }
            let count = self.recent_failures.len();
            if count < self.config.repeat_limit as usize {
                self.counters.blocks_discarded += 1;
                return Verdict::Discard(failure);
            }
            TransitionCause::RepeatedFailures {
                count: u32::try_from(count).unwrap_or(u32::MAX),
            }
        } else {
            self.counters.blocks_passed += 1;
            return Verdict::Pass;
        };
        let retry_at = self.quarantine(cause, now, transitions);
        Verdict::Quarantined { retry_at }
    }

    /// Runs every test over the block, counting each failure event.
    fn run_tests(&mut self, block: &[u8]) -> Found {
        self.counters.blocks_tested += 1;
        self.counters.samples_tested += block.len() as u64;
        let mut found = Found::default();
        if let Some(fault) = self.blocks.check(block) {
            let kind = match fault {
                BlockFault::UnlockedPattern => TestKind::UnlockedPattern,
                BlockFault::Constant => TestKind::ConstantBlock,
                BlockFault::Duplicate => TestKind::DuplicateBlock,
            };
            self.record(
                &mut found,
                Failure {
                    kind,
                    tier: Tier::Quarantine,
                },
            );
        }
        for &x in block {
            let tests = [
                (TestKind::RepetitionCount, self.rct.sample(x)),
                (TestKind::AdaptiveProportion, self.apt.sample(x)),
            ];
            for (kind, result) in tests {
                if let Some(tier) = result.fired {
                    self.record(&mut found, Failure { kind, tier });
                } else if result.failing && found.continuing.is_none() {
                    // A run or window that failed in an earlier block and is still going.
                    found.continuing = Some(Failure {
                        kind,
                        tier: Tier::Discard,
                    });
                }
            }
        }
        found
    }

    fn record(&mut self, found: &mut Found, failure: Failure) {
        self.counters.failures[failure.kind.index()][failure.tier as usize] += 1;
        self.last_failure = Some(failure);
        match failure.tier {
            Tier::Quarantine => {
                found.first_quarantine.get_or_insert(failure);
            }
            Tier::Discard => {
                found.first_discard.get_or_insert(failure);
                found.new_discard_failures += 1;
            }
        }
    }

    fn note_discard_failure(&mut self, now: Instant) {
        let window = self.config.repeat_window;
        while let Some(&oldest) = self.recent_failures.front() {
            if now.saturating_duration_since(oldest) > window {
                self.recent_failures.pop_front();
            } else {
                break;
            }
        }
        self.recent_failures.push_back(now);
    }

    /// Enters quarantine, reports the transition and returns the retry time.
    fn quarantine(
        &mut self,
        cause: TransitionCause,
        now: Instant,
        transitions: &mut Vec<Transition>,
    ) -> Instant {
        let from = self.state();
        if let Phase::Healthy { since } = self.phase
            && now.saturating_duration_since(since) >= self.config.stable_after
        {
            self.backoff_step = 0;
        }
        let delay = backoff_delay(
            self.config.backoff_initial,
            self.config.backoff_max,
            self.backoff_step,
        );
        self.backoff_step = self.backoff_step.saturating_add(1);
        // `backoff_max` is at most a day, so this only fails for an Instant near the end of
        // time; retrying at once is then still safe, as a retry is a full start-up test.
        let until = now.checked_add(delay).unwrap_or(now);
        self.phase = Phase::Quarantined { until };
        self.recent_failures.clear();
        self.counters.quarantines += 1;
        transitions.push(self.transition(from, cause, now));
        until
    }

    fn begin_startup(&mut self, retry: bool) {
        // §4.3: the start-up test is a fresh run of the continuous tests.
        self.rct.reset();
        self.apt.reset();
        self.blocks.reset();
        self.recent_failures.clear();
        self.phase = Phase::StartUp { retry, samples: 0 };
    }

    fn transition(&mut self, from: HealthState, cause: TransitionCause, at: Instant) -> Transition {
        self.counters.transitions += 1;
        Transition {
            from,
            to: self.state(),
            cause,
            at,
            retry_at: self.retry_at(),
        }
    }
}

/// The `step`-th quarantine's length: `initial · 2^step`, at most `max`.
#[must_use]
pub fn backoff_delay(initial: Duration, max: Duration, step: u32) -> Duration {
    let factor = 1u32.checked_shl(step).unwrap_or(u32::MAX);
    initial.checked_mul(factor).map_or(max, |d| d.min(max))
}

/// The failures one block produced.
#[derive(Debug, Default)]
struct Found {
    first_quarantine: Option<Failure>,
    first_discard: Option<Failure>,
    /// A failure carried over from an earlier block (not counted again).
    continuing: Option<Failure>,
    new_discard_failures: u32,
}

impl Found {
    /// The most severe failure, if any.
    fn worst(&self) -> Option<Failure> {
        self.first_quarantine
            .or(self.first_discard)
            .or(self.continuing)
    }
}
