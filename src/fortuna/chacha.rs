//! The ChaCha20 generator's keystream: FreeBSD's Fortuna with
//! `kern.random.use_chacha20_cipher` (`sys/dev/random/hash.c`), for CPUs without AES
//! instructions, where ChaCha20 in NEON or AVX2 is several times faster than software AES.
//!
//! Contract: the state is the generator's 256-bit key `K` and 128-bit counter `C`. `C`, as 16
//! bytes least significant first, is the whole 128-bit block counter and nonce input of
//! ChaCha20 (state words 12–15, RFC 8439 §2.3 with the nonce words taken over by the counter),
//! and each 64-byte block advances it by one. [`generate`] serves a request from the keystream
//! starting at `C`, rounded up to whole blocks (the rest of a partial last block is
//! discarded), then replaces `K` with the first 32 bytes of the next block and advances `C`
//! past it. ChaCha20 keyed by `K` is a PRF with a 512-bit output, so it fills the slot of
//! `E(K, C)` in CE 9.4 (the book's p. 144 notes that a block wider than 128 bits removes the
//! birthday concern; the request cap stays so that both ciphers behave the same to callers).
//!
//! The block function is the `chacha20` crate's (NEON on aarch64, AVX2 or SSE2 on x86-64,
//! chosen by the crate). Its "legacy" variant has a 64-bit block counter in words 12–13 and a
//! 64-bit nonce in words 14–15: exactly the low and high halves of `C`. The crate's counter
//! wraps within its 64 bits, so a run of blocks that crosses a multiple of 2^64 is split
//! there and the high half carried here. Known answers: RFC 8439 §2.3.2 and A.1 below; the
//! generator's outputs against an independent Python implementation in `generator.rs`.

use chacha20::ChaCha20LegacyCore;
use chacha20::cipher::{Array, Block, KeyIvInit, StreamCipherCore};
use zeroize::Zeroize;

/// Fill `out` from the keystream at `C` (rounded up to whole blocks), then `K ←` the first
/// 32 bytes of the next block; `C` advances by `⌈len/64⌉ + 1`.
pub(super) fn generate(key: &mut [u8; 32], counter: &mut u128, out: &mut [u8]) {
    let (blocks, tail) = Array::slice_as_chunks_mut(out);
    keystream(key, counter, blocks);
    // The partial last block (if any) and the key block, generated together on the stack.
    let mut last = [
        Block::<ChaCha20LegacyCore>::default(),
        Block::<ChaCha20LegacyCore>::default(),
    ];
    let extra = if tail.is_empty() { 1 } else { 2 };
    keystream(key, counter, &mut last[..extra]);
    tail.copy_from_slice(&last[0][..tail.len()]);
    key.copy_from_slice(&last[extra - 1][..32]);
    Array::slice_as_flattened_mut(&mut last).zeroize();
}

/// The keystream blocks for counters `C, C+1, …` over `blocks`; `C` advances past them.
pub(super) fn keystream(
    key: &[u8; 32],
    counter: &mut u128,
    mut blocks: &mut [Block<ChaCha20LegacyCore>],
) {
    while !blocks.is_empty() {
        let low = *counter as u64;
        let high = (*counter >> 64) as u64;
        // Blocks left before the low half wraps: 2^64 − low (at least 1).
        let room = u128::from(u64::MAX - low) + 1;
        let n = usize::try_from(room).map_or(blocks.len(), |room| room.min(blocks.len()));
        let (now, rest) = blocks.split_at_mut(n);
        // The core's state holds the key; the crate's `zeroize` feature clears it on drop.
        let mut core = ChaCha20LegacyCore::new(key.into(), &high.to_le_bytes().into());
        core.set_block_pos(low);
        core.write_keystream_blocks(now);
        *counter = counter.wrapping_add(n as u128);
        blocks = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        crate::format::from_hex(s).expect("hex digits")
    }

    fn block(key: &[u8; 32], counter: u128) -> Vec<u8> {
        let mut c = counter;
        let mut out = [Block::<ChaCha20LegacyCore>::default()];
        keystream(key, &mut c, &mut out);
        assert_eq!(c, counter.wrapping_add(1));
        out[0].to_vec()
    }

    #[test]
    fn rfc_8439_block_function() {
        // §2.3.2: key 00..1f, block counter 1, nonce 00:00:00:09:00:00:00:4a:00:00:00:00.
        // Words 12–15 are then the 16 bytes below, which is C least significant byte first.
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let c = u128::from_le_bytes([1, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0x4a, 0, 0, 0, 0]);
        assert_eq!(
            block(&key, c),
            hex(
                "10f1e7e4d13b5915500fdd1fa32071c4c7d1f4c733c068030422aa9ac3d46c4e\
                 d2826446079faa0914c2d705d98b02a2b5129cd1de164eb9cbd083e8a2503c4e"
            )
        );
    }

    #[test]
    fn rfc_8439_appendix_a1() {
        // A.1 test vectors #1 and #2: the zero key with block counters 0 and 1, zero nonce.
        assert_eq!(
            block(&[0; 32], 0),
            hex(
                "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7\
                 da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
            )
        );
        assert_eq!(
            block(&[0; 32], 1),
            hex(
                "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed\
                 29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f"
            )
        );
    }

    #[test]
    fn runs_of_blocks_match_single_blocks_across_carries() {
        // Runs long enough for every batch width of the crate's backends (up to 8 blocks),
        // crossing 2^64 (carry into the high half) and 2^128 (C wraps) at every offset.
        let key: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(29) ^ 0x5c);
        for top in [1u128 << 64, 0] {
            for back in 1..=20u128 {
                let start = top.wrapping_sub(back);
                let mut c = start;
                let mut out = vec![Block::<ChaCha20LegacyCore>::default(); 24];
                keystream(&key, &mut c, &mut out);
                assert_eq!(c, start.wrapping_add(24));
                for (i, b) in out.iter().enumerate() {
                    let expected = block(&key, start.wrapping_add(i as u128));
                    assert_eq!(b.as_slice(), expected, "start {start:#x} block {i}");
                }
            }
        }
    }
}
