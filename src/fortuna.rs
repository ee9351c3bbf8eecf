//! The Fortuna CSPRNG (Ferguson, Schneier, Kohno, *Cryptography Engineering*, 2010, ch. 9;
//! "CE" below), which turns lokey's slow hardware entropy (about 1 kB/s) into a fast,
//! forward-secure stream.
//!
//! # What lives here
//!
//! - [`Generator`] (CE 9.4, in `generator.rs`): AES-256 in counter mode with a 256-bit key `K`
//!   and a 128-bit counter `C`. At most 2^20 bytes per request, and a rekey with two extra
//!   blocks after **every** request, so a later compromise of the state cannot reveal earlier
//!   output. Or, with [`Cipher::ChaCha20`] (`fortuna.cipher`), FreeBSD's ChaCha20 generator
//!   (`chacha.rs`): the same `K`, `C`, reseed and request cap, ChaCha20's keystream from
//!   block `C`, and a new key from the next block after every request.
//! - [`Cipher`] and [`Backend`] (in `backend.rs`): which cipher runs and which code computes
//!   it, chosen from the CPU at run time: lokey's VAES-256 (`vaes.rs`) and AES-NI (`aesni.rs`)
//!   bulk paths on x86-64, the `aes` crate elsewhere, the `chacha20` crate for ChaCha20.
//! - [`Fortuna`] (CE 9.5 accumulator and 9.6 seed file, in `accumulator.rs`): 32 entropy pools
//!   hashed incrementally, reseeding the generator from them, plus the pure logic of the
//!   64-byte seed file. The clock is injected ([`Clock`]), so tests control time.
//! - [`SharedFortuna`] and [`Worker`] (in `worker.rs`): a thread-safe handle on one `Fortuna`,
//!   and per-thread generators keyed from it, so that many clients on several cores are served
//!   at AES speed (see "Serving many clients" below).
//! - [`shad256`]: the double hash SHAd-256 used for all key derivation.
//!
//! # Conventions pinned by tests (each matches the published known-answer vectors)
//!
//! - The counter `C` is a 128-bit integer; the AES input block is `C` as 16 bytes, least
//!   significant byte first. `C = 0` means "never seeded"; [`Generator::reseed`] computes
//!   `K ← SHAd-256(K ‖ s)`, `C ← C + 1` (the zero key is hashed on the first seed).
//! - SHAd-256(m) = SHA-256(SHA-256(m)), the form of *Practical Cryptography* and of every
//!   published implementation with vectors (PyCrypto, seehuhn/fortuna, rust-crypto). CE §5.4.2
//!   defines a variant with a 512-bit zero block prepended; we do not use it.
//! - A request of `n` bytes uses `⌈n/16⌉` counter values (a partial last block uses one up), then
//!   two more for the new key. A zero-length request still rekeys (CE's pseudocode).
//!   [`Generator::pseudo_random_data`] refuses more than 2^20 bytes; [`Fortuna::random_data`]
//!   and [`Worker::fill`] serve any length in chunks of at most 2^20 bytes with a rekey after
//!   each (a multiple of 2^20 makes exactly that many chunks, with no empty extra one).
//! - Events are appended to pool `i` as `source ‖ len ‖ data` with 1..=32 data bytes; the two
//!   header bytes count towards the 64-byte minimum of pool 0. Bad events are an error.
//! - A pool reseed happens on a read when pool 0 holds ≥ 64 bytes and no reseed happened in the
//!   last 100 ms (the first one may happen at once). The reseed counter is a `u64`; pool `i` is
//!   used when `2^i` divides it (pool 31 whenever `2^31` does).
//! - "Seeded" means `C ≠ 0`: a seed-file or direct reseed makes the generator usable even
//!   though the pool reseed counter is still 0 (CE 9.6: a seed file alone suffices).
//!
//! # Serving many clients
//!
//! One Fortuna behind one lock would serialise every client on the AES work. Instead each
//! serving thread owns a [`Worker`], whose private [`Generator`] is keyed with 32 bytes drawn
//! from the main Fortuna (the way Linux keys a CRNG per CPU from its base CRNG). The worker
//! then generates without any lock. It draws a new key from the main Fortuna, mixing it into its
//! own key with [`Generator::reseed`], whenever:
//! - the main generator has been reseeded since (pools, seed file or direct), so fresh entropy
//!   reaches every worker at once;
//! - it has produced [`WorkerLimits::max_bytes`] (default 1 MiB) since its last key; or
//! - [`WorkerLimits::max_age`] (default 1 s) has passed since its last key.
//!
//! This keeps the construction's guarantees. Each worker request still ends with a rekey of the
//! worker's generator (forward secrecy per request), and worker keys are ordinary Fortuna output,
//! which reveals nothing about the main key or other workers' keys. An attacker who learns one
//! worker's state can predict that worker's output only until its next draw from the main
//! generator (at most 1 MiB or 1 s by default). That is the same window the main generator has
//! before its next reseed, and no other worker is exposed. Workers refuse output until the main
//! Fortuna is seeded. The main lock is taken once per key draw, so contention is negligible.
//!
//! # Seed file (CE 9.6)
//!
//! [`Fortuna::update_seed_file`] takes the 64 bytes read at start, reseeds the generator with
//! them and returns 64 fresh bytes that the caller must write back (and sync) before any output
//! is served. [`Fortuna::write_seed_file`] returns 64 bytes to write periodically
//! ([`Fortuna::seed_due`], default every 10 minutes) and at shutdown. Storage is the caller's
//! job.

mod accumulator;
#[cfg(target_arch = "x86_64")]
mod aesni;
mod backend;
mod chacha;
mod generator;
#[cfg(all(test, target_arch = "x86_64"))]
mod keystream_tests;
#[cfg(target_arch = "x86_64")]
mod vaes;
mod worker;

pub use accumulator::{
    Clock, Fortuna, MIN_POOL_SIZE, ManualClock, NUM_POOLS, RESEED_INTERVAL, SEED_FILE_INTERVAL,
    SEED_FILE_LEN, Stats, SystemClock, pools_used,
};
pub use backend::{Backend, Cipher};
pub use generator::{Generator, MAX_REQUEST};
pub use worker::{SharedFortuna, Worker, WorkerLimits};

use sha2::{Digest, Sha256};

/// Errors of the Fortuna generator, accumulator and workers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FortunaError {
    /// No output before the generator has been seeded (its counter is still 0).
    #[error("Fortuna is not seeded yet: no output before the first reseed or seed file")]
    Unseeded,
    /// A single generator request exceeded 2^20 bytes.
    #[error("request of {len} bytes exceeds the generator's limit of {MAX_REQUEST} bytes")]
    RequestTooLarge {
        /// The requested length in bytes.
        len: usize,
    },
    /// A random event with a pool index outside 0..32 or data outside 1..=32 bytes.
    #[error(
        "bad random event from source {source_id}: pool {pool} (must be < 32), {len} data bytes (must be 1..=32)"
    )]
    BadEvent {
        /// The event's source number.
        source_id: u8,
        /// The pool index given.
        pool: usize,
        /// The number of data bytes given.
        len: usize,
    },
    /// A seed file's contents were rejected (all zero bytes: never written or wiped).
    #[error("seed file rejected: {reason}")]
    BadSeedFile {
        /// Why it was rejected.
        reason: &'static str,
    },
}

/// SHAd-256(m) = SHA-256(SHA-256(m)), the double hash that stops length extension.
///
/// This is *Practical Cryptography*'s form, used by every published Fortuna vector; CE §5.4.2
/// also prepends a 512-bit zero block, which we do not.
pub fn shad256(data: &[u8]) -> [u8; 32] {
    let inner = Sha256::digest(data);
    Sha256::digest(inner).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shad256_is_sha256_twice() {
        let once: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(shad256(b"abc"), <[u8; 32]>::from(Sha256::digest(once)));
        assert_ne!(shad256(b"abc"), once);
    }

    #[test]
    fn error_messages_name_the_problem() {
        let e = FortunaError::RequestTooLarge { len: 1 << 21 };
        assert!(e.to_string().contains("2097152"));
        let e = FortunaError::BadEvent {
            source_id: 3,
            pool: 32,
            len: 0,
        };
        assert!(e.to_string().contains("pool 32"));
    }
}
