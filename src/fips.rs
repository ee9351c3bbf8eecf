//! The FIPS 140-2 statistical random number generator tests (FIPS PUB 140-2 §4.9.1, with the
//! bounds of Change Notice 1, 2002; the tests `rngtest` runs), over blocks of 20,000 bits.
//!
//! Each test has a fixed acceptance interval. A perfect source fails a block now and then:
//! the four tests together reject about 0.08% of blocks of ideal random data (rngtest's
//! long-running counts on good sources agree), so a verdict over many blocks should allow a
//! few failures; [`Summary::acceptable`] allows up to 1% of blocks plus a margin.
//!
//! The SP 800-90B health tests ([`crate::health`]) judge a source continuously; these block
//! tests are a coarse, well-known second opinion for `lokey selftest`.

/// Bytes per test block: 20,000 bits.
pub const BLOCK_BYTES: usize = 2500;

/// The verdict of the four tests on one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockResult {
    /// Monobit: the number of ones is in 9,725..=10,275 (exclusive bounds 9,725 < X < 10,275).
    pub monobit: bool,
    /// Poker: 2.16 < X < 46.17 over the 16 possible 4-bit values.
    pub poker: bool,
    /// Runs: the counts of runs of each length 1–5 and 6+ of zeros and of ones are in range.
    pub runs: bool,
    /// Long run: no run of 26 or more equal bits.
    pub long_run: bool,
}

impl BlockResult {
    /// All four tests passed.
    pub fn passed(&self) -> bool {
        self.monobit && self.poker && self.runs && self.long_run
    }
}

/// Allowed run counts for lengths 1, 2, 3, 4, 5 and 6+ (inclusive; same for zeros and ones).
const RUN_BOUNDS: [(u32, u32); 6] = [
    (2315, 2685),
    (1114, 1386),
    (527, 723),
    (240, 384),
    (103, 209),
    (103, 209),
];

/// A run this long or longer fails the long-run test.
const LONG_RUN: u32 = 26;

/// Runs the four tests on one block of exactly [`BLOCK_BYTES`] bytes; `None` for another size.
pub fn test_block(block: &[u8]) -> Option<BlockResult> {
    if block.len() != BLOCK_BYTES {
        return None;
    }
    let ones: u32 = block.iter().map(|b| b.count_ones()).sum();

    // Poker: X = 16/5000 · Σ f(i)² − 5000 over the 5000 nibbles.
    let mut nibbles = [0u32; 16];
    for b in block {
        nibbles[usize::from(b >> 4)] += 1;
        nibbles[usize::from(b & 0x0f)] += 1;
    }
    let sum_sq: f64 = nibbles.iter().map(|&f| f64::from(f) * f64::from(f)).sum();
    let poker = 16.0 / 5000.0 * sum_sq - 5000.0;

    // Runs, bit by bit, most significant bit of each byte first.
    let mut runs = [[0u32; 6]; 2];
    let mut longest = 0u32;
    let mut current_bit = block[0] >> 7;
    let mut length = 0u32;
    for bit in block
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
    {
        if bit == current_bit {
            length += 1;
        } else {
            runs[usize::from(current_bit)][(length.min(6) - 1) as usize] += 1;
            longest = longest.max(length);
            current_bit = bit;
            length = 1;
        }
    }
    runs[usize::from(current_bit)][(length.min(6) - 1) as usize] += 1;
    longest = longest.max(length);

    let runs_ok = runs.iter().all(|counts| {
        counts
            .iter()
            .zip(RUN_BOUNDS)
            .all(|(&c, (lo, hi))| (lo..=hi).contains(&c))
    });
    Some(BlockResult {
        monobit: ones > 9725 && ones < 10275,
        poker: poker > 2.16 && poker < 46.17,
        runs: runs_ok,
        long_run: longest < LONG_RUN,
    })
}

/// Counts over many blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Summary {
    /// Blocks tested.
    pub blocks: u64,
    /// Blocks that passed all four tests.
    pub passed: u64,
    /// Monobit failures.
    pub monobit_failures: u64,
    /// Poker failures.
    pub poker_failures: u64,
    /// Runs failures.
    pub runs_failures: u64,
    /// Long-run failures.
    pub long_run_failures: u64,
}

impl Summary {
    /// Adds one block's result.
    pub fn add(&mut self, r: BlockResult) {
        self.blocks += 1;
        self.passed += u64::from(r.passed());
        self.monobit_failures += u64::from(!r.monobit);
        self.poker_failures += u64::from(!r.poker);
        self.runs_failures += u64::from(!r.runs);
        self.long_run_failures += u64::from(!r.long_run);
    }

    /// Whether the failures are few enough for a good source: at most 1% of blocks plus 2.
    /// (Ideal data fails ~0.08% of blocks; for 100 blocks the chance of more than 3 failures
    /// is below 10^-5.)
    pub fn acceptable(&self) -> bool {
        let failed = self.blocks - self.passed;
        failed <= self.blocks / 100 + 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block with a known pattern: bytes repeating `pattern`.
    fn block(pattern: &[u8]) -> Vec<u8> {
        pattern.iter().copied().cycle().take(BLOCK_BYTES).collect()
    }

    #[test]
    fn wrong_size_is_not_tested() {
        assert_eq!(test_block(&[0; 10]), None);
    }

    #[test]
    fn all_zeros_fails_everything() {
        let r = test_block(&block(&[0])).unwrap();
        assert_eq!(
            r,
            BlockResult {
                monobit: false,
                poker: false,
                runs: false,
                long_run: false
            }
        );
    }

    #[test]
    fn alternating_bits_pass_monobit_but_fail_runs_and_poker() {
        // 0x55 = 01010101: exactly half ones, only runs of length 1, only nibble 0101.
        let r = test_block(&block(&[0x55])).unwrap();
        assert!(r.monobit);
        assert!(!r.runs);
        assert!(!r.poker);
        assert!(r.long_run);
    }

    #[test]
    fn a_single_long_run_fails_only_long_run_when_the_rest_is_random() {
        // Start from random data that passes, then write 26 ones in a row.
        let mut data = vec![0u8; BLOCK_BYTES];
        let f = std::fs::File::open("/dev/urandom").map(|mut f| {
            use std::io::Read;
            f.read_exact(&mut data)
        });
        assert!(matches!(f, Ok(Ok(()))));
        let base = test_block(&data).unwrap();
        // Ideal data fails this block with probability ~0.08%: skip rather than misreport.
        if !base.passed() {
            return;
        }
        data[100..104].copy_from_slice(&[0xff; 4]);
        let r = test_block(&data).unwrap();
        assert!(!r.long_run);
    }

    #[test]
    fn the_kernels_random_data_is_acceptable() {
        use std::io::Read;
        let mut data = vec![0u8; 100 * BLOCK_BYTES];
        let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut data));
        assert!(read.is_ok());
        let mut s = Summary::default();
        for b in data.chunks_exact(BLOCK_BYTES) {
            s.add(test_block(b).unwrap());
        }
        // Fails for ideal data with probability below 10^-5 (see `Summary::acceptable`).
        assert!(s.acceptable(), "{s:?}");
        assert_eq!(s.blocks, 100);
    }

    #[test]
    fn summary_counts_and_judges() {
        let mut s = Summary::default();
        for _ in 0..100 {
            s.add(BlockResult {
                monobit: true,
                poker: true,
                runs: true,
                long_run: true,
            });
        }
        s.add(BlockResult::default());
        assert_eq!((s.blocks, s.passed, s.monobit_failures), (101, 100, 1));
        assert!(s.acceptable());
        for _ in 0..3 {
            s.add(BlockResult::default());
        }
        assert!(!s.acceptable());
    }
}
