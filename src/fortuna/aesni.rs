//! AES-256 counter-mode keystream with AES-NI, eight blocks in flight (x86-64): the
//! generator's bulk path on CPUs with AES-NI but no VAES (AMD Zen 2, Intel before Ice Lake),
//! and the AES-256 key expansion that the VAES path shares.
//!
//! Contract: [`keystream`] writes `E(K, C) ‖ E(K, C+1) ‖ …` (each counter as 16 bytes, least
//! significant first, exactly as the generator's portable path) over a whole number of
//! [`CHUNK`]-block chunks of `out` and returns how many blocks it wrote: all the whole chunks
//! when the CPU has AES-NI, none otherwise. The caller advances `C` by that count and
//! finishes the rest with the `aes` crate.
//!
//! Why it exists: the `aes` crate's AES-NI backend encrypts its counter blocks from memory
//! and reached about 0.66x `openssl speed -evp aes-256-ctr` on a CPU without VAES. Here the
//! counters are built in registers (one 64-bit add per block), eight independent blocks go
//! through each round together so that the AESENC latency (4 cycles on Zen 2/3, two units)
//! is covered, and each finished block is stored once, straight into the caller's buffer:
//! the shape of OpenSSL's `aesni_ctr32_encrypt_blocks` without its XOR with an input.
//!
//! `unsafe` here: calling a function compiled for AES-NI (sound once the feature is
//! detected) and the unaligned 16-byte stores into the caller's blocks. The key schedule is
//! zeroized before return; the counters are public.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, _mm_add_epi64, _mm_aesenc_si128, _mm_aesenclast_si128, _mm_aeskeygenassist_si128,
    _mm_set_epi64x, _mm_shuffle_epi32, _mm_slli_si128, _mm_storeu_si128, _mm_xor_si128,
};

use aes::Block;
use zeroize::Zeroize;

/// Blocks per chunk: eight blocks in eight XMM registers, leaving eight for round keys and
/// the counter.
pub(super) const CHUNK: usize = 8;

/// Whether this CPU can run this path (AES-NI; SSE2 is part of x86-64).
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("aes")
}

/// Write the keystream for counters `counter, counter + 1, …` over the whole chunks of `out`;
/// returns the number of blocks written (a multiple of [`CHUNK`], or 0 without AES-NI).
pub(super) fn keystream(key: &[u8; 32], counter: u128, out: &mut [Block]) -> usize {
    let chunks = out.len() / CHUNK;
    if chunks == 0 || !available() {
        return 0;
    }
    // SAFETY: `keystream_aesni` needs AES-NI, which `available()` has just confirmed.
    unsafe { keystream_aesni(key, counter, &mut out[..chunks * CHUNK]) };
    chunks * CHUNK
}

/// The AES-NI keystream over `out`, whose length is a multiple of [`CHUNK`].
#[target_feature(enable = "aes")]
fn keystream_aesni(key: &[u8; 32], mut counter: u128, out: &mut [Block]) {
    let mut keys = expand_key(key);
    for chunk in out.chunks_exact_mut(CHUNK) {
        let mut blocks = counter_blocks(counter);
        for b in &mut blocks {
            *b = _mm_xor_si128(*b, keys[0]);
        }
        for key in &keys[1..14] {
            for b in &mut blocks {
                *b = _mm_aesenc_si128(*b, *key);
            }
        }
        for (dst, b) in chunk.iter_mut().zip(blocks) {
            let b = _mm_aesenclast_si128(b, keys[14]);
            // SAFETY: `dst` is one 16-byte block of `out`, writable and borrowed by nothing
            // else; `storeu` needs no alignment.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast::<__m128i>(), b) };
        }
        counter = counter.wrapping_add(CHUNK as u128);
    }
    keys.zeroize();
}

/// The counter blocks `C … C+7`, each lane `[low, high]` as two 64-bit halves (the counter's
/// little-endian byte order). When the low half cannot carry within the chunk, block `i` is
/// one register plus `i` in its low half; the rare chunk that crosses a multiple of 2^64 is
/// built counter by counter.
#[inline]
#[target_feature(enable = "sse2")]
fn counter_blocks(counter: u128) -> [__m128i; CHUNK] {
    let block = |c: u128| _mm_set_epi64x((c >> 64) as u64 as i64, c as u64 as i64);
    if (counter as u64).checked_add(CHUNK as u64 - 1).is_none() {
        return core::array::from_fn(|i| block(counter.wrapping_add(i as u128)));
    }
    let base = block(counter);
    core::array::from_fn(|i| _mm_add_epi64(base, _mm_set_epi64x(0, i as i64)))
}

/// The 15 AES-256 round keys of `key` (FIPS 197 §5.2 key expansion, in the AESKEYGENASSIST
/// form of Gueron's Intel AES New Instructions white paper, 2010).
#[inline]
#[target_feature(enable = "aes")]
pub(super) fn expand_key(key: &[u8; 32]) -> [__m128i; 15] {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&key[8 * i..8 * i + 8]);
        let v = i64::from_le_bytes(w);
        w.zeroize();
        v
    };
    let mut rk = [_mm_set_epi64x(0, 0); 15];
    rk[0] = _mm_set_epi64x(word(1), word(0));
    rk[1] = _mm_set_epi64x(word(3), word(2));
    // The first key of each pair takes RotWord(SubWord(·)) of the previous key's last word
    // and the round constant (AESKEYGENASSIST dword 3, shuffle 0xff); the second takes
    // SubWord(·) only (dword 2, shuffle 0xaa).
    macro_rules! first {
        ($i:literal, $rcon:literal) => {
            let t = _mm_aeskeygenassist_si128::<$rcon>(rk[$i - 1]);
            rk[$i] = mix(rk[$i - 2], _mm_shuffle_epi32::<0xff>(t));
        };
    }
    macro_rules! second {
        ($i:literal) => {
            let t = _mm_aeskeygenassist_si128::<0>(rk[$i - 1]);
            rk[$i] = mix(rk[$i - 2], _mm_shuffle_epi32::<0xaa>(t));
        };
    }
    first!(2, 0x01);
    second!(3);
    first!(4, 0x02);
    second!(5);
    first!(6, 0x04);
    second!(7);
    first!(8, 0x08);
    second!(9);
    first!(10, 0x10);
    second!(11);
    first!(12, 0x20);
    second!(13);
    first!(14, 0x40);
    rk
}

/// The next round key from the one two rounds back: word `j` is `t ⊕ prev[0] ⊕ … ⊕ prev[j]`
/// (FIPS 197 §5.2, `w[i] = w[i−8] ⊕ temp` chained through the four words), where `t` holds
/// the transformed last word of the previous round key in every word.
#[inline]
#[target_feature(enable = "aes")]
fn mix(prev: __m128i, t: __m128i) -> __m128i {
    let mut k = prev;
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    k = _mm_xor_si128(k, _mm_slli_si128::<4>(k));
    _mm_xor_si128(k, t)
}

#[cfg(test)]
mod tests {
    use super::super::keystream_tests::Path;

    const PATH: Path = Path {
        keystream: super::keystream,
        chunk: super::CHUNK,
        available: super::available,
        skip: "this CPU has no AES-NI; the generator's tests cover the aes crate's \
             software backend",
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
