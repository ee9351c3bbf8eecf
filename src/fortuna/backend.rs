//! Which cipher the Fortuna generator runs ([`Cipher`], the `fortuna.cipher` setting) and
//! which code computes its keystream ([`Backend`]), chosen at run time from the CPU.
//!
//! Contract: [`Cipher::auto`] is AES-256 where the CPU has AES instructions (AES-NI, ARMv8
//! AES) and ChaCha20 where it has none (every Raspberry Pi before the Pi 5).
//! [`Backend::best`] is the path production takes for a cipher; [`Backend::runnable`] lists
//! every path this CPU can run, so that tests cover them all whichever one production
//! picks, and benchmarks can measure a slower path on a faster CPU (the AES-NI path on a CPU
//! with VAES, for one) through [`Generator::with_backend`](super::Generator::with_backend).
//! Every backend of a cipher produces the same output; only the speed differs.

use std::fmt;

/// The generator's block function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    /// AES-256 in counter mode (CE 9.4), the default where the CPU has AES instructions.
    Aes256,
    /// ChaCha20 with `C` as its 128-bit counter and nonce input (FreeBSD's Fortuna option).
    ChaCha20,
}

impl Cipher {
    /// AES-256 where the CPU has AES instructions, ChaCha20 where it has none.
    pub fn auto() -> Cipher {
        if has_aes_instructions() {
            Cipher::Aes256
        } else {
            Cipher::ChaCha20
        }
    }

    /// The name used in configuration and status: `aes256` or `chacha20`.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256 => "aes256",
            Cipher::ChaCha20 => "chacha20",
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The code that computes the generator's keystream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// lokey's VAES-256 path (`vaes.rs`): x86-64 with VAES and AVX2 but no AVX-512.
    Vaes256,
    /// lokey's AES-NI path, eight blocks in flight (`aesni.rs`): x86-64 with AES-NI.
    AesNi,
    /// The `aes` crate's own choice: VAES-512 with AVX-512, ARMv8 AES, or its constant-time
    /// software AES (fixslice) where the CPU has no AES instructions.
    AesCrate,
    /// The `chacha20` crate: NEON on aarch64, AVX2 or SSE2 on x86-64, scalar elsewhere.
    ChaCha20,
}

impl Backend {
    /// The path production takes for `cipher` on this CPU.
    pub fn best(cipher: Cipher) -> Backend {
        match cipher {
            Cipher::ChaCha20 => Backend::ChaCha20,
            // lokey's VAES-256 path wherever the CPU has VAES, AVX-512 or not: on an Intel
            // Xeon with AVX-512 it ran 1 MiB requests at 15.5 GB/s against 8.3 GB/s for the
            // `aes` crate's VAES-512 backend (README benchmark table).
            Cipher::Aes256 if Backend::Vaes256.available() => Backend::Vaes256,
            Cipher::Aes256 if Backend::AesNi.available() => Backend::AesNi,
            Cipher::Aes256 => Backend::AesCrate,
        }
    }

    /// Every path this CPU can run for `cipher`, production's choice first.
    pub fn runnable(cipher: Cipher) -> Vec<Backend> {
        let best = Backend::best(cipher);
        let all = match cipher {
            Cipher::Aes256 => &[Backend::Vaes256, Backend::AesNi, Backend::AesCrate][..],
            Cipher::ChaCha20 => &[Backend::ChaCha20][..],
        };
        let mut paths = vec![best];
        paths.extend(all.iter().filter(|&&b| b != best && b.available()));
        paths
    }

    /// The cipher this backend computes.
    pub fn cipher(self) -> Cipher {
        match self {
            Backend::ChaCha20 => Cipher::ChaCha20,
            _ => Cipher::Aes256,
        }
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Backend::Vaes256 => super::vaes::available(),
            #[cfg(target_arch = "x86_64")]
            Backend::AesNi => super::aesni::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Backend::Vaes256 | Backend::AesNi => false,
            Backend::AesCrate | Backend::ChaCha20 => true,
        }
    }

    /// What runs, for `lokey status` and `/api/v1/status`: "VAES-256", "AES-NI",
    /// "VAES-512", "ARMv8 AES", "software AES", or "ChaCha20 NEON/AVX2/SSE2/scalar".
    pub fn describe(self) -> &'static str {
        match self {
            Backend::Vaes256 => "VAES-256",
            Backend::AesNi => "AES-NI",
            Backend::AesCrate => aes_crate_backend(),
            Backend::ChaCha20 => chacha20_crate_backend(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Whether the CPU has AES instructions (AES-NI, ARMv8 AES).
fn has_aes_instructions() -> bool {
    #[cfg(any(target_arch = "x86_64", target_arch = "x86"))]
    return std::is_x86_feature_detected!("aes");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("aes");
    #[allow(unreachable_code)]
    false
}

/// Whether the `aes` crate runs its VAES-512 backend here (its condition: AVX-512F and VAES).
fn crate_has_vaes512() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("vaes");
    #[allow(unreachable_code)]
    false
}

/// The backend the `aes` crate (0.9) selects at run time, unless built with
/// `--cfg aes_backend="soft"`, which forces its software AES.
#[allow(unexpected_cfgs)]
fn aes_crate_backend() -> &'static str {
    if cfg!(aes_backend = "soft") {
        "software AES"
    } else if crate_has_vaes512() {
        "VAES-512"
    } else if has_aes_instructions() {
        if cfg!(target_arch = "aarch64") {
            "ARMv8 AES"
        } else {
            "AES-NI (aes crate)"
        }
    } else {
        "software AES"
    }
}

/// The backend the `chacha20` crate (0.10) selects: NEON whenever the aarch64 target has it
/// (at compile time), AVX2 or SSE2 detected at run time on x86-64, scalar otherwise.
fn chacha20_crate_backend() -> &'static str {
    #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
    return "ChaCha20 NEON";
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            return "ChaCha20 AVX2";
        }
        return "ChaCha20 SSE2";
    }
    #[allow(unreachable_code)]
    "ChaCha20 scalar"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_path_is_runnable_and_listed_first() {
        for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
            let paths = Backend::runnable(cipher);
            assert_eq!(paths[0], Backend::best(cipher));
            assert!(paths.iter().all(|b| b.available() && b.cipher() == cipher));
            let mut unique = paths.clone();
            unique.dedup();
            assert_eq!(unique.len(), paths.len());
        }
    }
}
