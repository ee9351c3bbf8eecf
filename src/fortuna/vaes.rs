//! AES-256 counter-mode keystream with VAES-256 (x86-64), the generator's bulk path.
//!
//! Contract: [`keystream`] writes `E(K, C) ‖ E(K, C+1) ‖ …` (each counter as 16 bytes, least
//! significant first, exactly as the generator's portable path) over a whole number of
//! [`CHUNK`]-block chunks of `out` and returns how many blocks it wrote: all the whole chunks
//! when the CPU has AES-NI, AVX2 and VAES, none otherwise. The caller advances
//! `C` by that count and finishes the rest with the `aes` crate.
//!
//! Why it exists: the `aes` crate has a VAES-256 backend, but it selects it through
//! `cpufeatures`, which counts VAES as present only when the operating system also enables the
//! AVX-512 register state. On CPUs with VAES but no AVX-512 (AMD Zen 3, for one), the crate
//! falls back to AES-NI, one block per instruction, and the generator then stays below
//! `openssl speed`. The 256-bit VAES instructions need only the AVX state (Intel SDM vol. 2,
//! VAESENC: VEX.256 encoding, CPUID VAES and AVX), which `std`'s detection checks. Where
//! AVX-512 is present the crate uses its VAES-512 backend, yet this path measured about twice
//! as fast on 1 MiB requests (an Intel Xeon VM: 15.5 against 8.3 GB/s), so production takes
//! it wherever the CPU has VAES.
//!
//! `unsafe` here: calling a function compiled for VAES (sound once the features are detected)
//! and the unaligned 32-byte stores into the caller's blocks. The key schedule is computed
//! with AESKEYGENASSIST (`aesni.rs`, FIPS 197 §5.2 key expansion) on the stack and zeroized
//! before return; the counters are public and built in registers. Tests compare every output against the `aes` crate, including across the carry
//! out of the counter's low 64 bits.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m256i, _mm256_add_epi64, _mm256_aesenc_epi128, _mm256_aesenclast_epi128,
    _mm256_broadcastsi128_si256, _mm256_set_epi64x, _mm256_storeu_si256, _mm256_xor_si256,
};

use aes::Block;
use zeroize::Zeroize;

use super::aesni::expand_key;

/// Blocks per chunk: 8 registers of 2 blocks each, leaving 8 of the 16 YMM registers for
/// round keys and the counter increments.
pub(super) const CHUNK: usize = 16;

/// Whether this CPU can run this path: AES-NI, AVX2 and VAES. (`std` caches the detection
/// after the first call.)
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("vaes")
}

/// Write the keystream for counters `counter, counter + 1, …` over the whole chunks of `out`;
/// returns the number of blocks written (a multiple of [`CHUNK`], or 0 without VAES).
pub(super) fn keystream(key: &[u8; 32], counter: u128, out: &mut [Block]) -> usize {
    let chunks = out.len() / CHUNK;
    if chunks == 0 || !available() {
        return 0;
    }
    // SAFETY: `keystream_vaes` needs AES-NI, AVX2 and VAES, and `available()` has just
    // confirmed that this CPU has all three (with the OS saving the YMM state).
    unsafe { keystream_vaes(key, counter, &mut out[..chunks * CHUNK]) };
    chunks * CHUNK
}

/// The VAES keystream over `out`, whose length is a multiple of [`CHUNK`].
#[target_feature(enable = "aes,avx2,vaes")]
fn keystream_vaes(key: &[u8; 32], mut counter: u128, out: &mut [Block]) {
    let mut round_keys = expand_key(key);
    let mut keys = round_keys.map(|k| _mm256_broadcastsi128_si256(k));
    round_keys.zeroize();

    for chunk in out.chunks_exact_mut(CHUNK) {
        let mut blocks = counter_blocks(counter);
        for b in &mut blocks {
            *b = _mm256_xor_si256(*b, keys[0]);
        }
        for key in &keys[1..14] {
            for b in &mut blocks {
                *b = _mm256_aesenc_epi128(*b, *key);
            }
        }
        for b in &mut blocks {
            *b = _mm256_aesenclast_epi128(*b, keys[14]);
        }
        for (pair, b) in chunk.chunks_exact_mut(2).zip(blocks) {
            let dst = pair.as_mut_ptr().cast::<__m256i>();
            // SAFETY: `pair` is two adjacent 16-byte blocks of `out`, so `dst` points to 32
            // writable bytes that nothing else borrows; `storeu` needs no alignment.
            unsafe { _mm256_storeu_si256(dst, b) };
        }
        counter = counter.wrapping_add(CHUNK as u128);
    }
    keys.zeroize();
}

/// The counter blocks `C … C+15`, two per register (register `i` holds `C + 2i` in its lower
/// lane and `C + 2i + 1` in its upper one).
///
/// Each 128-bit lane is `[low, high]` as two 64-bit halves, which is the counter's
/// little-endian byte order. When the low half cannot carry within the chunk, the blocks are
/// one register plus constant increments; the rare chunk that crosses a multiple of 2^64 is
/// built counter by counter.
#[inline]
#[target_feature(enable = "avx2")]
fn counter_blocks(counter: u128) -> [__m256i; CHUNK / 2] {
    let lane = |c: u128| (c as u64 as i64, (c >> 64) as u64 as i64);
    let pair = |c: u128| {
        let (lo0, hi0) = lane(c);
        let (lo1, hi1) = lane(c.wrapping_add(1));
        _mm256_set_epi64x(hi1, lo1, hi0, lo0)
    };
    if (counter as u64).checked_add(CHUNK as u64 - 1).is_none() {
        return core::array::from_fn(|i| pair(counter.wrapping_add(2 * i as u128)));
    }
    let base = pair(counter);
    core::array::from_fn(|i| {
        let step = 2 * i as i64;
        _mm256_add_epi64(base, _mm256_set_epi64x(0, step, 0, step))
    })
}

#[cfg(test)]
mod tests {
    use super::super::keystream_tests::Path;

    const PATH: Path = Path {
        keystream: super::keystream,
        chunk: super::CHUNK,
        available: super::available,
        skip: "this CPU has no VAES (or no AVX2); the generator's tests cover the \
             paths it has",
    };

    #[test]
    fn matches_the_aes_crate() {
        PATH.matches_the_aes_crate();
    }

    #[test]
    fn fips_197_aes_256_example() {
        PATH.fips_197_aes_256_example();
    }

    #[test]
    fn carries_out_of_the_low_half() {
        PATH.carries_out_of_the_low_half();
    }

    #[test]
    fn writes_nothing_below_one_chunk() {
        PATH.writes_nothing_below_one_chunk();
    }
}
