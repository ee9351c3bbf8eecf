//! The two SP 800-90B §4.4 continuous tests, run sample by sample on the byte stream, each
//! with two cutoffs (the discard tier and the quarantine tier).
//!
//! Both tests keep their state across block boundaries: a run or a window that straddles two
//! blocks is tested as one, as §4.4 requires of a continuous test.

use super::Tier;

/// Repetition Count Test (SP 800-90B §4.4.1).
///
/// `A` is the last sample and `B` the length of the current run of it (§4.4.1 steps 1–2).
/// The test fails at a tier when `B` reaches that tier's cutoff; each tier fires once per run,
/// and every sample of a run at or past the discard cutoff is reported as failing.
#[derive(Debug, Clone)]
pub(super) struct RepetitionCount {
    discard_cutoff: u32,
    quarantine_cutoff: u32,
    last: Option<u8>,
    run: u32,
}

/// What one sample did to a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct SampleResult {
    /// A tier's cutoff was reached with this sample (a new failure to count).
    pub(super) fired: Option<Tier>,
    /// The sample lies in a run/window that has failed the discard tier.
    pub(super) failing: bool,
}

impl RepetitionCount {
    pub(super) fn new(discard_cutoff: u32, quarantine_cutoff: u32) -> Self {
        Self {
            discard_cutoff,
            quarantine_cutoff,
            last: None,
            run: 0,
        }
    }

    /// Forget all history, as at start-up (§4.3).
    pub(super) fn reset(&mut self) {
        self.last = None;
        self.run = 0;
    }

    pub(super) fn sample(&mut self, x: u8) -> SampleResult {
        if self.last == Some(x) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(x);
            self.run = 1;
        }
        SampleResult {
            fired: fired(self.run, self.discard_cutoff, self.quarantine_cutoff),
            failing: self.run >= self.discard_cutoff,
        }
    }
}

/// Adaptive Proportion Test (SP 800-90B §4.4.2).
///
/// Windows of `W` samples: the first sample of a window is `A` with `B = 1`; each of the next
/// `W - 1` samples equal to `A` increments `B`, and the test fails when `B` reaches the cutoff.
/// Windows do not overlap (§4.4.2 step 4 starts a new window after `W` samples).
#[derive(Debug, Clone)]
pub(super) struct AdaptiveProportion {
    window: usize,
    discard_cutoff: u32,
    quarantine_cutoff: u32,
    first: u8,
    count: u32,
    /// Samples seen in the current window, 0 when no window is open.
    seen: usize,
}

impl AdaptiveProportion {
    pub(super) fn new(window: usize, discard_cutoff: u32, quarantine_cutoff: u32) -> Self {
        Self {
            window,
            discard_cutoff,
            quarantine_cutoff,
            first: 0,
            count: 0,
            seen: 0,
        }
    }

    pub(super) fn reset(&mut self) {
        self.count = 0;
        self.seen = 0;
    }

    pub(super) fn sample(&mut self, x: u8) -> SampleResult {
        let counted = if self.seen == 0 {
            self.first = x;
            self.count = 1;
            true
        } else if x == self.first {
            self.count += 1;
            true
        } else {
            false
        };
        self.seen += 1;
        let result = SampleResult {
            // Only the sample that raises B to a cutoff fires; the count then stays there for
            // the rest of the window without firing again.
            fired: if counted {
                fired(self.count, self.discard_cutoff, self.quarantine_cutoff)
            } else {
                None
            },
            failing: self.count >= self.discard_cutoff,
        };
        if self.seen == self.window {
            self.seen = 0;
        }
        result
    }
}

/// The tier whose cutoff `count` has just reached, if any. The quarantine cutoff is never
/// below the discard cutoff (smaller α, same H), so reaching it is the more severe event.
fn fired(count: u32, discard_cutoff: u32, quarantine_cutoff: u32) -> Option<Tier> {
    if count == quarantine_cutoff {
        Some(Tier::Quarantine)
    } else if count == discard_cutoff {
        Some(Tier::Discard)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rct_fires_each_tier_once_per_run() {
        let mut rct = RepetitionCount::new(3, 5);
        let fired: Vec<_> = [7u8, 7, 7, 7, 7, 7, 1]
            .iter()
            .map(|&x| rct.sample(x).fired)
            .collect();
        assert_eq!(
            fired,
            [
                None,
                None,
                Some(Tier::Discard),
                None,
                Some(Tier::Quarantine),
                None,
                None
            ]
        );
        // After a different sample the run restarts at 1.
        assert_eq!(
            rct.sample(1),
            SampleResult {
                fired: None,
                failing: false
            }
        );
    }

    #[test]
    fn apt_counts_matches_of_the_first_sample_within_one_window() {
        let mut apt = AdaptiveProportion::new(8, 3, 4);
        // Window 1: A = 9, matches at positions 3 and 6 → B = 3 at the sixth sample.
        let w1 = [9u8, 1, 9, 2, 3, 9, 4, 5];
        let r: Vec<_> = w1.iter().map(|&x| apt.sample(x)).collect();
        assert_eq!(r[5].fired, Some(Tier::Discard));
        assert!(r[5].failing && r[7].failing && !r[4].failing);
        // Fires once: the following non-matching samples keep B at 3 without firing again.
        assert_eq!(r.iter().filter(|s| s.fired.is_some()).count(), 1);
        // Window 2 starts afresh: A = 1, the old A no longer counts.
        let w2 = [1u8, 9, 9, 9, 9, 2, 3, 4];
        assert!(w2.iter().all(|&x| apt.sample(x).fired.is_none()));
    }
}
