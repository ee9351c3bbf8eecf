//! Whole-block checks that the byte-wise SP 800-90B tests miss at a low claimed `H`:
//! the unlocked-chip pattern, constant blocks and repeated blocks.
//!
//! - An ATECC608A whose configuration zone is not locked answers `Random` with `FF FF 00 00`
//!   repeated (ATSHA204A datasheet; cryptoauthlib issues #121, #51, #85). At `H = 1` the APT
//!   cutoff is 311 of 512 and the pattern gives 256, so only a dedicated check catches it.
//! - A constant block is the classic stuck-at failure (floating bus reads as all `FF`).
//! - A block equal to one of the last few is a duplicated response (a lost command whose stale
//!   buffer is read again), in the spirit of FIPS 140-2's continuous test but on whole blocks.
//!
//! The checks apply to blocks of at least [`MIN_CHECKED_BLOCK_BYTES`] bytes, where a random
//! block matches by chance with probability at most 2^-120 (constant: 256·2^-128; pattern:
//! 4·2^-128; duplicate of one of 16 remembered blocks: 16·2^-128), far below the quarantine
//! tier's 2^-40. So every block-check failure is a quarantine-tier failure.
//!
//! The duplicate history stores SHA-256 digests, never the blocks: the blocks go on to seed
//! Fortuna and the kernel, and copies of them should not linger in memory.

use std::collections::VecDeque;

use sha2::{Digest, Sha256};

/// The smallest block the whole-block checks look at (see the module docs for why).
pub const MIN_CHECKED_BLOCK_BYTES: usize = 16;

/// The test pattern an ATECC608A/ATSHA204A returns from `Random` while its configuration zone
/// is unlocked (the 32-byte answer is this, eight times).
pub const UNLOCKED_CHIP_PATTERN: [u8; 4] = [0xFF, 0xFF, 0x00, 0x00];

/// Which whole-block check a block failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BlockFault {
    UnlockedPattern,
    Constant,
    Duplicate,
}

/// Remembers digests of the last blocks to spot repeats.
#[derive(Debug, Clone)]
pub(super) struct BlockChecker {
    history: VecDeque<[u8; 32]>,
    capacity: usize,
}

impl BlockChecker {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            history: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    pub(super) fn reset(&mut self) {
        self.history.clear();
    }

    /// Checks one block and remembers it. Returns the first fault found, in the order
    /// pattern, constant, duplicate (the most specific diagnosis first).
    pub(super) fn check(&mut self, block: &[u8]) -> Option<BlockFault> {
        if block.len() < MIN_CHECKED_BLOCK_BYTES {
            return None;
        }
        if is_unlocked_pattern(block) {
            return Some(BlockFault::UnlockedPattern);
        }
        if block.iter().all(|&b| b == block[0]) {
            return Some(BlockFault::Constant);
        }
        let digest: [u8; 32] = Sha256::digest(block).into();
        if self.history.contains(&digest) {
            return Some(BlockFault::Duplicate);
        }
        if self.capacity > 0 {
            if self.history.len() == self.capacity {
                self.history.pop_front();
            }
            self.history.push_back(digest);
        }
        None
    }
}

/// True when the block is the unlocked-chip pattern in any phase (a block may start mid-pattern
/// if a source hands out a slice of a longer read).
fn is_unlocked_pattern(block: &[u8]) -> bool {
    (0..UNLOCKED_CHIP_PATTERN.len()).any(|phase| {
        block
            .iter()
            .enumerate()
            .all(|(i, &b)| b == UNLOCKED_CHIP_PATTERN[(i + phase) % UNLOCKED_CHIP_PATTERN.len()])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distinct_block(seed: u8) -> [u8; 32] {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8 * 7))
    }

    #[test]
    fn the_unlocked_pattern_is_found_in_every_phase() {
        let long: Vec<u8> = UNLOCKED_CHIP_PATTERN
            .iter()
            .copied()
            .cycle()
            .take(35)
            .collect();
        for phase in 0..4 {
            let mut checker = BlockChecker::new(4);
            let block = &long[phase..phase + 32];
            assert_eq!(
                checker.check(block),
                Some(BlockFault::UnlockedPattern),
                "phase {phase}"
            );
        }
    }

    #[test]
    fn a_constant_block_is_found() {
        let mut checker = BlockChecker::new(4);
        assert_eq!(checker.check(&[0xFF; 32]), Some(BlockFault::Constant));
        assert_eq!(checker.check(&[0x00; 16]), Some(BlockFault::Constant));
    }

    #[test]
    fn a_repeat_within_the_history_is_found_and_older_ones_are_forgotten() {
        let mut checker = BlockChecker::new(2);
        assert_eq!(checker.check(&distinct_block(1)), None);
        assert_eq!(checker.check(&distinct_block(2)), None);
        assert_eq!(
            checker.check(&distinct_block(2)),
            Some(BlockFault::Duplicate)
        );
        assert_eq!(checker.check(&distinct_block(3)), None);
        // Block 1 has dropped out of a two-entry history.
        assert_eq!(checker.check(&distinct_block(1)), None);
    }

    #[test]
    fn short_blocks_are_not_block_checked() {
        let mut checker = BlockChecker::new(4);
        assert_eq!(checker.check(&[0u8; MIN_CHECKED_BLOCK_BYTES - 1]), None);
    }
}
