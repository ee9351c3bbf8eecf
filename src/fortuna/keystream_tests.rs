//! The tests every x86-64 counter-mode path (`aesni`, `vaes`) runs: the keystream of the `aes`
//! crate for every length, across the 2^64 carry at every alignment and across 2^128, FIPS 197's
//! AES-256 example, and nothing written below one chunk. Each path's own test module calls them
//! with its [`Path`].

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use aes::{Aes256, Block};

/// One counter-mode path under test.
pub(super) struct Path {
    /// `keystream(key, counter, out)`: writes whole chunks of `out`, returns how many blocks.
    pub keystream: fn(&[u8; 32], u128, &mut [Block]) -> usize,
    /// Blocks per chunk.
    pub chunk: usize,
    /// Whether this CPU can run the path.
    pub available: fn() -> bool,
    /// Why its tests are skipped on a CPU that cannot.
    pub skip: &'static str,
}

impl Path {
    pub fn matches_the_aes_crate(&self) {
        if self.skipped() {
            return;
        }
        let c = self.chunk;
        let key: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11));
        for blocks in [c, c + 1, 2 * c - 1, 2 * c, 100, 4096] {
            self.check(&key, 1, blocks);
        }
        self.check(&[0u8; 32], 0, 64);
        // Wraps past 2^128 like the generator.
        self.check(&[0xffu8; 32], u128::MAX - (5 * c / 2) as u128, 6 * c);
    }

    pub fn fips_197_aes_256_example(&self) {
        // FIPS 197 Appendix C.3: the first counter block is the example's plaintext.
        if self.skipped() {
            return;
        }
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let plain: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        let mut out = vec![Block::default(); self.chunk];
        assert_eq!(
            (self.keystream)(&key, u128::from_le_bytes(plain), &mut out),
            self.chunk
        );
        let expected = [
            0x8e, 0xa2, 0xb7, 0xca, 0x51, 0x67, 0x45, 0xbf, 0xea, 0xfc, 0x49, 0x90, 0x4b, 0x49,
            0x60, 0x89,
        ];
        assert_eq!(out[0].as_slice(), expected);
    }

    pub fn carries_out_of_the_low_half(&self) {
        if self.skipped() {
            return;
        }
        let key = [0x5au8; 32];
        // Every alignment of the 2^64 boundary within a chunk, and the chunk just before.
        for back in 1..=2 * self.chunk as u128 {
            self.check(&key, (7u128 << 64) - back, 3 * self.chunk);
        }
    }

    pub fn writes_nothing_below_one_chunk(&self) {
        let mut out = vec![Block::default(); self.chunk - 1];
        assert_eq!((self.keystream)(&[1u8; 32], 1, &mut out), 0);
        assert!(out.iter().all(|b| b == &Block::default()));
    }

    fn check(&self, key: &[u8; 32], counter: u128, blocks: usize) {
        let mut out = vec![Block::default(); blocks];
        let done = (self.keystream)(key, counter, &mut out);
        assert_eq!(done, blocks / self.chunk * self.chunk);
        assert_eq!(
            out[..done],
            reference(key, counter, blocks)[..done],
            "counter {counter:#x}"
        );
        assert!(
            out[done..].iter().all(|b| b == &Block::default()),
            "wrote past its chunks"
        );
    }

    fn skipped(&self) -> bool {
        if (self.available)() {
            return false;
        }
        // Straight to stderr: libtest captures `eprintln!` of a passing test.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped: {}", self.skip);
        true
    }
}

/// The reference: the `aes` crate on each counter block.
fn reference(key: &[u8; 32], counter: u128, blocks: usize) -> Vec<Block> {
    let cipher = Aes256::new(&(*key).into());
    (0..blocks)
        .map(|i| {
            let mut b: Block = counter.wrapping_add(i as u128).to_le_bytes().into();
            cipher.encrypt_block(&mut b);
            b
        })
        .collect()
}
