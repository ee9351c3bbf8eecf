//! Suite: health. The SP 800-90B health monitor as the daemon drives it: cutoffs, every
//! failure kind, the two tiers, quarantine, backoff and recovery, on a virtual clock.

use std::io::Read;
use std::time::{Duration, Instant};

use lokey::health::{
    Cutoffs, Failure, HealthConfig, HealthError, HealthMonitor, HealthState, TestKind, Tier,
    TransitionCause, UNLOCKED_CHIP_PATTERN, Verdict, backoff_delay,
};

/// A deterministic byte generator (SplitMix64) standing in for a healthy source, so that the
/// failure tests are reproducible. Its output is statistically indistinguishable from random
/// for these tests; [`healthy_random_data_passes`] uses the real kernel RNG.
struct Bytes(u64);

impl Bytes {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A block with no two neighbours equal and without `avoid`, so that it can never fire
    /// the RCT and adds nothing to an APT count for `avoid`.
    fn block(&mut self, len: usize, avoid: Option<u8>) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(len);
        while out.len() < len {
            let b = self.next_u64().to_le_bytes()[0];
            if Some(b) != avoid && out.last() != Some(&b) {
                out.push(b);
            }
        }
        out
    }
}

const BLOCK: usize = 32;

/// A monitor past its start-up test, the generator that fed it, and the time.
fn healthy_monitor(config: HealthConfig) -> (HealthMonitor, Bytes, Instant) {
    let mut monitor = HealthMonitor::new(config).expect("valid config");
    let mut bytes = Bytes(7);
    let t0 = Instant::now();
    let blocks = monitor.config().startup_samples.div_ceil(BLOCK);
    for _ in 0..blocks {
        let _ = monitor.feed(&bytes.block(BLOCK, None), t0);
    }
    assert_eq!(monitor.state(), HealthState::Healthy);
    (monitor, bytes, t0)
}

/// A block that is clean except for a run of `run` copies of `value` at offset 10.
fn block_with_run(bytes: &mut Bytes, value: u8, run: usize) -> Vec<u8> {
    let mut block = bytes.block(BLOCK.max(run + 20), Some(value));
    block[10..10 + run].fill(value);
    block
}

/// One 512-sample APT window starting with `value` and containing it `count` times, never
/// twice in a row (so the RCT stays quiet).
fn apt_window_with(bytes: &mut Bytes, value: u8, count: usize) -> Vec<u8> {
    let mut window = bytes.block(512, Some(value));
    for i in 0..count {
        window[i * 2] = value;
    }
    // The byte after each inserted one came from `block` and differs from `value`, so no run
    // of two appears; position 1 etc. are untouched.
    window
}

fn feed_clean(monitor: &mut HealthMonitor, bytes: &mut Bytes, samples: usize, now: Instant) {
    for _ in 0..samples / BLOCK {
        let out = monitor.feed(&bytes.block(BLOCK, None), now);
        assert!(
            matches!(out.verdict, Verdict::Pass | Verdict::StartUp),
            "clean data: {out:?}"
        );
    }
}

#[test]
fn default_cutoffs_are_computed_from_h_and_alpha() {
    let monitor = HealthMonitor::new(HealthConfig::default()).expect("valid config");
    // H = 8, α = 2^-30 / 2^-40 (SP 800-90B §4.4.1, §4.4.2 with W = 512).
    assert_eq!(
        monitor.cutoffs(),
        Cutoffs {
            min_entropy_bits: 8.0,
            rct_discard: 5,
            rct_quarantine: 6,
            apt_window: 512,
            apt_discard: 16,
            apt_quarantine: 19,
        }
    );
    // A conservative claim gives looser cutoffs (the reference table's H = 1 rows).
    let c = Cutoffs::compute(1.0, -30.0, -40.0).expect("valid");
    assert_eq!(
        (
            c.rct_discard,
            c.rct_quarantine,
            c.apt_discard,
            c.apt_quarantine
        ),
        (31, 41, 325, 336)
    );
}

#[test]
fn invalid_configurations_are_rejected_with_typed_errors() {
    let with = |f: fn(&mut HealthConfig)| {
        let mut c = HealthConfig::default();
        f(&mut c);
        HealthMonitor::new(c).err()
    };
    assert!(matches!(
        with(|c| c.min_entropy_bits = 0.0),
        Some(HealthError::MinEntropy(_))
    ));
    assert!(matches!(
        with(|c| c.min_entropy_bits = 8.5),
        Some(HealthError::MinEntropy(_))
    ));
    assert!(matches!(
        with(|c| c.min_entropy_bits = f64::NAN),
        Some(HealthError::MinEntropy(_))
    ));
    assert!(matches!(
        with(|c| c.discard_alpha_log2 = 0.0),
        Some(HealthError::Alpha(_))
    ));
    assert!(matches!(
        with(|c| c.quarantine_alpha_log2 = -20.0),
        Some(HealthError::TierOrder { .. })
    ));
    assert!(matches!(
        with(|c| c.startup_samples = 1000),
        Some(HealthError::StartupSamples(1000))
    ));
    assert!(matches!(
        with(|c| c.repeat_limit = 0),
        Some(HealthError::RepeatLimit)
    ));
    assert!(matches!(
        with(|c| c.backoff_initial = Duration::ZERO),
        Some(HealthError::Backoff { .. })
    ));
    assert!(matches!(
        with(|c| c.min_entropy_bits = 0.001),
        Some(HealthError::NoAptCutoff { .. })
    ));
}

#[test]
fn start_up_withholds_1024_samples_then_reports_healthy_once() {
    let mut monitor = HealthMonitor::new(HealthConfig::default()).expect("valid config");
    let mut bytes = Bytes(1);
    let t0 = Instant::now();
    assert_eq!(monitor.state(), HealthState::StartingUp);
    let mut transitions = Vec::new();
    for i in 0..1024 / BLOCK {
        let out = monitor.feed(&bytes.block(BLOCK, None), t0);
        assert_eq!(out.verdict, Verdict::StartUp, "block {i} is start-up data");
        transitions.extend(out.transitions);
    }
    assert_eq!(transitions.len(), 1);
    assert_eq!(
        (transitions[0].from, transitions[0].to, transitions[0].cause),
        (
            HealthState::StartingUp,
            HealthState::Healthy,
            TransitionCause::StartUpPassed
        )
    );
    let out = monitor.feed(&bytes.block(BLOCK, None), t0);
    assert_eq!(out.verdict, Verdict::Pass);
    assert!(out.transitions.is_empty());
    let c = monitor.counters();
    assert_eq!(
        (c.blocks_startup, c.blocks_passed, c.startups_passed),
        (32, 1, 1)
    );
    assert_eq!(c.samples_tested, 33 * BLOCK as u64);
}

/// Real random bytes from the kernel pass. False-failure probability of this test, at the
/// default cutoffs (H = 8): it fails if the source is quarantined or more than two blocks are
/// discarded in 2^18 samples (512 windows). Quarantine by the RCT (a run of 6, p = 2^-40 per
/// sample) ≈ 2^18·2^-40 = 2^-22; by the APT (19 matches in a window, real tail
/// P(Bin(511, 2^-8) ≥ 18) ≈ 2^-38 per window) ≈ 2^-29; three discards (each ≈ 2^-14 over the
/// run: RCT 2^18·2^-32, APT 2^9·2^-28.2) ≈ 2^-44. Total ≈ 2^-22, about one in four million runs.
#[test]
fn healthy_random_data_passes() {
    let mut urandom = std::fs::File::open("/dev/urandom").expect("open /dev/urandom");
    let mut monitor = HealthMonitor::new(HealthConfig::default()).expect("valid config");
    let t0 = Instant::now();
    let mut discarded = 0;
    let mut block = [0u8; BLOCK];
    for i in 0..(1 << 18) / BLOCK {
        urandom.read_exact(&mut block).expect("read /dev/urandom");
        let out = monitor.feed(&block, t0 + Duration::from_millis(i as u64 * 25));
        match out.verdict {
            Verdict::Pass | Verdict::StartUp => {}
            Verdict::Discard(_) => discarded += 1,
            Verdict::Quarantined { .. } => panic!("healthy data quarantined: {out:?}"),
        }
    }
    assert!(discarded <= 2, "{discarded} blocks discarded");
    assert_eq!(monitor.state(), HealthState::Healthy);
    assert_eq!(monitor.counters().quarantines, 0);
    assert!(monitor.counters().blocks_passed >= (1 << 18) / BLOCK as u64 - 32 - 2);
}

#[test]
fn a_run_at_the_discard_cutoff_drops_the_block_only() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let out = monitor.feed(&block_with_run(&mut bytes, 0xAB, 5), t0);
    let failure = Failure {
        kind: TestKind::RepetitionCount,
        tier: Tier::Discard,
    };
    assert_eq!(out.verdict, Verdict::Discard(failure));
    assert!(out.transitions.is_empty());
    assert_eq!(monitor.state(), HealthState::Healthy);
    assert_eq!(
        monitor
            .counters()
            .failures_of(TestKind::RepetitionCount, Tier::Discard),
        1
    );
    assert_eq!(monitor.counters().blocks_discarded, 1);
    // A run one shorter is legitimate.
    let out = monitor.feed(&block_with_run(&mut bytes, 0xAB, 4), t0);
    assert_eq!(out.verdict, Verdict::Pass);
}

#[test]
fn a_run_at_the_quarantine_cutoff_quarantines_the_source() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let out = monitor.feed(&block_with_run(&mut bytes, 0x11, 6), t0);
    assert!(matches!(out.verdict, Verdict::Quarantined { .. }));
    assert_eq!(out.transitions.len(), 1);
    let failure = Failure {
        kind: TestKind::RepetitionCount,
        tier: Tier::Quarantine,
    };
    assert_eq!(out.transitions[0].cause, TransitionCause::Failure(failure));
    assert_eq!(out.transitions[0].to, HealthState::Quarantined);
    assert_eq!(monitor.last_failure(), Some(failure));
}

#[test]
fn a_run_spanning_two_blocks_is_one_run() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let mut first = bytes.block(BLOCK, Some(0x42));
    first[BLOCK - 3..].fill(0x42);
    let mut second = bytes.block(BLOCK, Some(0x42));
    second[..2].fill(0x42);
    assert_eq!(monitor.feed(&first, t0).verdict, Verdict::Pass);
    let out = monitor.feed(&second, t0);
    let failure = Failure {
        kind: TestKind::RepetitionCount,
        tier: Tier::Discard,
    };
    assert_eq!(out.verdict, Verdict::Discard(failure));
}

#[test]
fn the_adaptive_proportion_test_fires_at_both_tiers() {
    // Start-up is 1024 samples = two windows, so the next window starts with the next block.
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let out = monitor.feed(&apt_window_with(&mut bytes, 0x77, 15), t0);
    assert_eq!(
        out.verdict,
        Verdict::Pass,
        "15 of 512 is below the cutoff 16"
    );
    let out = monitor.feed(&apt_window_with(&mut bytes, 0x77, 16), t0);
    let failure = Failure {
        kind: TestKind::AdaptiveProportion,
        tier: Tier::Discard,
    };
    assert_eq!(out.verdict, Verdict::Discard(failure));
    let out = monitor.feed(&apt_window_with(&mut bytes, 0x77, 19), t0);
    let failure = Failure {
        kind: TestKind::AdaptiveProportion,
        tier: Tier::Quarantine,
    };
    assert!(matches!(out.verdict, Verdict::Quarantined { .. }));
    assert_eq!(out.transitions[0].cause, TransitionCause::Failure(failure));
    let c = monitor.counters();
    assert_eq!(
        c.failures_of(TestKind::AdaptiveProportion, Tier::Discard),
        2
    );
    assert_eq!(
        c.failures_of(TestKind::AdaptiveProportion, Tier::Quarantine),
        1
    );
    assert_eq!(c.failures_of(TestKind::RepetitionCount, Tier::Discard), 0);
}

/// Feeds `block` (built from the monitor's generator) to a healthy monitor and checks that it
/// quarantines the source for `kind`.
fn assert_quarantined_by(
    kind: TestKind,
    make: impl FnOnce(&mut HealthMonitor, &mut Bytes) -> Vec<u8>,
) {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let block = make(&mut monitor, &mut bytes);
    let out = monitor.feed(&block, t0);
    assert!(
        matches!(out.verdict, Verdict::Quarantined { .. }),
        "{kind:?}: {out:?}"
    );
    let failure = Failure {
        kind,
        tier: Tier::Quarantine,
    };
    assert_eq!(
        out.transitions[0].cause,
        TransitionCause::Failure(failure),
        "{kind:?}"
    );
    assert_eq!(
        monitor.counters().failures_of(kind, Tier::Quarantine),
        1,
        "{kind:?}"
    );
}

#[test]
fn the_unlocked_chip_pattern_quarantines_at_once() {
    assert_quarantined_by(TestKind::UnlockedPattern, |_, _| {
        UNLOCKED_CHIP_PATTERN
            .iter()
            .copied()
            .cycle()
            .take(BLOCK)
            .collect()
    });
}

#[test]
fn a_constant_block_quarantines_at_once() {
    assert_quarantined_by(TestKind::ConstantBlock, |_, _| vec![0x5A; BLOCK]);
}

#[test]
fn a_repeated_block_quarantines_at_once() {
    assert_quarantined_by(TestKind::DuplicateBlock, |monitor, bytes| {
        let block = bytes.block(BLOCK, None);
        let now = Instant::now();
        assert_eq!(monitor.feed(&block, now).verdict, Verdict::Pass);
        // Some other blocks in between: still within the 16-block history.
        for _ in 0..10 {
            assert_eq!(
                monitor.feed(&bytes.block(BLOCK, None), now).verdict,
                Verdict::Pass
            );
        }
        block
    });
}

#[test]
fn three_discards_within_the_window_quarantine_and_spaced_ones_do_not() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let hour = Duration::from_secs(3600);
    // Spread over more than the window: never three within one hour.
    for i in 0..4u32 {
        let now = t0 + (hour + Duration::from_secs(1)) * i;
        let out = monitor.feed(&block_with_run(&mut bytes, 0x33, 5), now);
        assert!(
            matches!(out.verdict, Verdict::Discard(_)),
            "spaced discard {i}: {out:?}"
        );
        let out = monitor.feed(&block_with_run(&mut bytes, 0x33, 5), now + hour / 2);
        assert!(
            matches!(out.verdict, Verdict::Discard(_)),
            "second in window {i}: {out:?}"
        );
        let now = now + hour + Duration::from_secs(1);
        feed_clean(&mut monitor, &mut bytes, 64, now);
    }
    assert_eq!(monitor.state(), HealthState::Healthy);

    // Three within the hour: the third quarantines.
    let t1 = t0 + hour * 100;
    for i in 0..2 {
        let out = monitor.feed(
            &block_with_run(&mut bytes, 0x44, 5),
            t1 + Duration::from_secs(i),
        );
        assert!(matches!(out.verdict, Verdict::Discard(_)), "{out:?}");
    }
    let out = monitor.feed(
        &block_with_run(&mut bytes, 0x44, 5),
        t1 + Duration::from_secs(59),
    );
    assert!(
        matches!(out.verdict, Verdict::Quarantined { .. }),
        "{out:?}"
    );
    assert_eq!(
        out.transitions[0].cause,
        TransitionCause::RepeatedFailures { count: 3 }
    );
}

#[test]
fn quarantine_retries_after_backoff_and_recovers_after_a_fresh_start_up_test() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let out = monitor.feed(&[0u8; BLOCK], t0);
    let Verdict::Quarantined { retry_at } = out.verdict else {
        panic!("{out:?}")
    };
    assert_eq!(retry_at, t0 + Duration::from_secs(1));
    assert_eq!(monitor.retry_at(), Some(retry_at));

    // Before the backoff elapses, blocks are dropped untested and nothing is reported again.
    let tested = monitor.counters().samples_tested;
    for ms in [0, 500, 999] {
        let out = monitor.feed(&bytes.block(BLOCK, None), t0 + Duration::from_millis(ms));
        assert_eq!(out.verdict, Verdict::Quarantined { retry_at });
        assert!(out.transitions.is_empty());
    }
    assert_eq!(monitor.counters().samples_tested, tested);

    // At the retry time a fresh start-up test begins; its data is withheld.
    let out = monitor.feed(&bytes.block(BLOCK, None), retry_at);
    assert_eq!(out.verdict, Verdict::StartUp);
    assert_eq!(out.transitions.len(), 1);
    assert_eq!(
        (
            out.transitions[0].from,
            out.transitions[0].to,
            out.transitions[0].cause
        ),
        (
            HealthState::Quarantined,
            HealthState::Retrying,
            TransitionCause::BackoffElapsed
        )
    );
    let mut transitions = Vec::new();
    for _ in 1..1024 / BLOCK {
        let out = monitor.feed(&bytes.block(BLOCK, None), retry_at);
        assert_eq!(out.verdict, Verdict::StartUp);
        transitions.extend(out.transitions);
    }
    assert_eq!(transitions.len(), 1);
    assert_eq!(
        (transitions[0].from, transitions[0].to),
        (HealthState::Retrying, HealthState::Healthy)
    );
    assert_eq!(
        monitor.feed(&bytes.block(BLOCK, None), retry_at).verdict,
        Verdict::Pass
    );
    let c = monitor.counters();
    assert_eq!((c.quarantines, c.startups_passed, c.transitions), (1, 2, 4));
}

#[test]
fn a_failing_start_up_test_quarantines() {
    let mut monitor = HealthMonitor::new(HealthConfig::default()).expect("valid config");
    let t0 = Instant::now();
    let mut bytes = Bytes(3);
    let _ = monitor.feed(&bytes.block(BLOCK, None), t0);
    let out = monitor.feed(&block_with_run(&mut bytes, 9, 5), t0);
    assert!(matches!(out.verdict, Verdict::Quarantined { .. }));
    let failure = Failure {
        kind: TestKind::RepetitionCount,
        tier: Tier::Discard,
    };
    assert_eq!(
        out.transitions[0].cause,
        TransitionCause::StartUpFailed(failure)
    );
    assert_eq!(out.transitions[0].from, HealthState::StartingUp);
    assert_eq!(monitor.counters().startups_failed, 1);
}

/// A source that stays broken: each retry fails its start-up test and the wait doubles,
/// up to the maximum; one transition per change, no repeats while quarantined.
#[test]
fn backoff_doubles_up_to_the_maximum_while_the_source_stays_broken() {
    let (mut monitor, _, t0) = healthy_monitor(HealthConfig::default());
    let stuck = [0xFFu8; BLOCK];
    let out = monitor.feed(&stuck, t0);
    let Verdict::Quarantined { mut retry_at } = out.verdict else {
        panic!("{out:?}")
    };
    let mut delays = vec![retry_at - t0];
    let mut transitions = out.transitions.len();
    for _ in 0..12 {
        // Stuck blocks during the wait change nothing.
        let out = monitor.feed(&stuck, retry_at - Duration::from_millis(1));
        transitions += out.transitions.len();
        let out = monitor.feed(&stuck, retry_at);
        transitions += out.transitions.len();
        let Verdict::Quarantined { retry_at: next } = out.verdict else {
            panic!("{out:?}")
        };
        delays.push(next - retry_at);
        retry_at = next;
    }
    let secs: Vec<u64> = delays.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]);
    // Each retry: Quarantined → Retrying and Retrying → Quarantined; plus the first.
    assert_eq!(transitions, 1 + 2 * 12);
    assert_eq!(monitor.counters().transitions, 1 + 1 + 2 * 12);
}

#[test]
fn backoff_starts_over_after_a_stable_healthy_period() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let quarantine = |m: &mut HealthMonitor, now| match m.feed(&[0xEEu8; BLOCK], now).verdict {
        Verdict::Quarantined { retry_at } => retry_at - now,
        other => panic!("{other:?}"),
    };
    let recover = |m: &mut HealthMonitor, bytes: &mut Bytes, now| {
        for _ in 0..1024 / BLOCK {
            let _ = m.feed(&bytes.block(BLOCK, None), now);
        }
        assert_eq!(m.state(), HealthState::Healthy);
    };
    assert_eq!(quarantine(&mut monitor, t0), Duration::from_secs(1));
    let t1 = t0 + Duration::from_secs(1);
    recover(&mut monitor, &mut bytes, t1);
    // Fails again soon after: the backoff keeps growing.
    assert_eq!(
        quarantine(&mut monitor, t1 + Duration::from_secs(10)),
        Duration::from_secs(2)
    );
    let t2 = t1 + Duration::from_secs(12);
    recover(&mut monitor, &mut bytes, t2);
    // Fails after an hour of health: back to the first step.
    let t3 = t2 + Duration::from_secs(3600);
    assert_eq!(quarantine(&mut monitor, t3), Duration::from_secs(1));
}

#[test]
fn restart_begins_a_fresh_start_up_test() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let _ = monitor.feed(&[1u8; BLOCK], t0);
    assert_eq!(monitor.state(), HealthState::Quarantined);
    let t = monitor.restart(t0);
    assert_eq!(
        (t.from, t.to, t.cause),
        (
            HealthState::Quarantined,
            HealthState::StartingUp,
            TransitionCause::Restarted
        )
    );
    assert_eq!(
        monitor.feed(&bytes.block(BLOCK, None), t0).verdict,
        Verdict::StartUp
    );
}

#[test]
fn backoff_delay_saturates() {
    let s = Duration::from_secs;
    assert_eq!(backoff_delay(s(1), s(600), 0), s(1));
    assert_eq!(backoff_delay(s(1), s(600), 9), s(512));
    assert_eq!(backoff_delay(s(1), s(600), 10), s(600));
    assert_eq!(backoff_delay(s(1), s(600), 200), s(600));
}

#[test]
fn transitions_render_for_logs() {
    let (mut monitor, mut bytes, t0) = healthy_monitor(HealthConfig::default());
    let out = monitor.feed(&block_with_run(&mut bytes, 0x10, 6), t0);
    assert_eq!(
        out.transitions[0].to_string(),
        "healthy -> quarantined: repetition count test failed at the quarantine tier"
    );
}
