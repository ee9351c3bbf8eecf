//! The Fortuna accumulator (CE 9.5) and the seed-file logic (CE 9.6).
//!
//! Contract:
//! - 32 pools, each an incremental SHA-256 state plus the number of bytes appended.
//!   [`Fortuna::add_random_event`] appends `source ‖ len ‖ data` (1..=32 data bytes) to one pool;
//!   anything else is [`FortunaError::BadEvent`] and changes nothing.
//! - [`Fortuna::random_data`] first reseeds from the pools when pool 0 holds at least
//!   [`MIN_POOL_SIZE`] bytes and at least [`RESEED_INTERVAL`] has passed since the last pool
//!   reseed (or there was none). A reseed increments the `u64` reseed counter `r` and feeds
//!   `SHAd-256(P_i)` of every pool with `2^i | r` ([`pools_used`]) into
//!   [`Generator::reseed`], emptying those pools. Then it serves the request in chunks of at
//!   most [`MAX_REQUEST`] bytes, each followed by a rekey; unseeded, it fails.
//! - Time comes from an injected [`Clock`]: [`SystemClock`] in production, [`ManualClock`] in
//!   tests.
//! - The seed file is [`SEED_FILE_LEN`] bytes. [`Fortuna::update_seed_file`] reseeds the generator
//!   with the file's contents and returns fresh bytes to write back at once;
//!   [`Fortuna::write_seed_file`] returns fresh bytes for the periodic and shutdown writes;
//!   [`Fortuna::seed_due`] says when the periodic write is due. Reading, writing and syncing the
//!   file are the caller's job.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::FortunaError;
use super::backend::{Backend, Cipher};
use super::generator::{Generator, MAX_REQUEST};

/// Number of entropy pools.
pub const NUM_POOLS: usize = 32;
/// Pool 0 must hold at least this many bytes (event headers included) before a reseed.
pub const MIN_POOL_SIZE: u64 = 64;
/// Minimum time between two pool reseeds (at most 10 reseeds per second).
pub const RESEED_INTERVAL: Duration = Duration::from_millis(100);
/// Size of the seed file in bytes.
pub const SEED_FILE_LEN: usize = 64;
/// Default interval between periodic seed-file writes.
pub const SEED_FILE_INTERVAL: Duration = Duration::from_secs(600);
/// Largest event data accepted by [`Fortuna::add_random_event`].
const MAX_EVENT_LEN: usize = 32;

/// A source of the current time, injectable so tests control the 100 ms reseed limit.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real monotonic clock ([`Instant::now`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    /// A clock standing at the current real instant.
    pub fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    /// Move the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The pools a reseed with counter value `reseed_count` uses: `0..k`, where pool `i` is in it
/// iff `2^i` divides `reseed_count` (so pool 31 whenever `2^31` does, and there is no pool 32).
pub fn pools_used(reseed_count: u64) -> std::ops::Range<usize> {
    let k = (reseed_count.trailing_zeros() as usize).min(NUM_POOLS - 1) + 1;
    0..k
}

/// One pool: the SHA-256 state of everything appended, and how many bytes that was.
#[derive(Clone, Default)]
struct Pool {
    hasher: Sha256,
    len: u64,
}

impl Pool {
    /// `SHAd-256` of the pool's contents; the pool is emptied.
    fn take_digest(&mut self) -> [u8; 32] {
        let mut inner: [u8; 32] = self.hasher.finalize_reset().into();
        self.len = 0;
        let outer = Sha256::digest(inner).into();
        inner.zeroize();
        outer
    }
}

/// Status of a [`Fortuna`], for metrics and health endpoints. Contains no secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Whether the generator is seeded (by a pool reseed, the seed file or a direct reseed).
    pub seeded: bool,
    /// Pool reseeds so far (CE's ReseedCnt).
    pub reseed_count: u64,
    /// Bytes in pool 0 since its last use (event headers included).
    pub pool0_bytes: u64,
    /// When the last pool reseed happened.
    pub last_reseed: Option<Instant>,
    /// Generator reseeds of any kind (pools, seed file, direct): workers watch it to rekey.
    pub generation: u64,
    /// The generator's cipher.
    pub cipher: Cipher,
    /// The path that computes its keystream on this CPU.
    pub backend: Backend,
}

/// Fortuna: the generator, the 32 pools and the seed-file logic (CE 9.5, 9.6).
pub struct Fortuna {
    generator: Generator,
    pools: [Pool; NUM_POOLS],
    reseed_count: u64,
    last_reseed: Option<Instant>,
    generation: u64,
    last_seed_write: Option<Instant>,
    seed_file_interval: Duration,
    clock: Arc<dyn Clock>,
}

impl Fortuna {
    /// An unseeded Fortuna on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An unseeded Fortuna on the system clock whose generator runs `cipher`
    /// (`fortuna.cipher`); [`Fortuna::new`] runs AES-256.
    pub fn with_cipher(cipher: Cipher) -> Self {
        Self::with_clock_and_cipher(Arc::new(SystemClock), cipher)
    }

    /// An unseeded AES-256 Fortuna reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::with_clock_and_cipher(clock, Cipher::Aes256)
    }

    /// An unseeded Fortuna reading time from `clock`, its generator running `cipher`.
    pub fn with_clock_and_cipher(clock: Arc<dyn Clock>, cipher: Cipher) -> Self {
        Fortuna {
            generator: Generator::with_cipher(cipher),
            pools: Default::default(),
            reseed_count: 0,
            last_reseed: None,
            generation: 0,
            last_seed_write: None,
            seed_file_interval: SEED_FILE_INTERVAL,
            clock,
        }
    }

    /// Change the periodic seed-file interval (default [`SEED_FILE_INTERVAL`]).
    pub fn set_seed_file_interval(&mut self, interval: Duration) {
        self.seed_file_interval = interval;
    }

    /// The clock this Fortuna reads.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Append one event to pool `pool` as `source ‖ len(data) ‖ data` (CE's AddRandomEvent).
    ///
    /// `pool` must be below [`NUM_POOLS`] and `data` 1..=32 bytes long, otherwise
    /// [`FortunaError::BadEvent`] and nothing changes. Each source should spread its events
    /// over the pools round-robin.
    pub fn add_random_event(
        &mut self,
        source: u8,
        pool: usize,
        data: &[u8],
    ) -> Result<(), FortunaError> {
        if pool >= NUM_POOLS || data.is_empty() || data.len() > MAX_EVENT_LEN {
            return Err(FortunaError::BadEvent {
                source_id: source,
                pool,
                len: data.len(),
            });
        }
        let p = &mut self.pools[pool];
        p.hasher.update([source, data.len() as u8]);
        p.hasher.update(data);
        p.len += 2 + data.len() as u64;
        Ok(())
    }

    /// Fill `out` with random data (CE's RandomData), reseeding from the pools first if due.
    ///
    /// Any length is served, in chunks of at most [`MAX_REQUEST`] bytes with a rekey after each
    /// (an empty `out` still rekeys once). Fails with [`FortunaError::Unseeded`] (writing
    /// nothing) while the generator has never been seeded.
    pub fn random_data(&mut self, out: &mut [u8]) -> Result<(), FortunaError> {
        let now = self.clock.now();
        if self.reseed_due(now) {
            self.reseed_from_pools(now);
        }
        if !self.generator.is_seeded() {
            return Err(FortunaError::Unseeded);
        }
        if out.is_empty() {
            return self.generator.pseudo_random_data(out);
        }
        for chunk in out.chunks_mut(MAX_REQUEST) {
            self.generator.pseudo_random_data(chunk)?;
        }
        Ok(())
    }

    /// Reseed the generator directly with `seed`, e.g. fresh bytes read straight from a
    /// health-tested hardware source at start-up or after a VM clone is detected.
    ///
    /// This seeds the generator but is not a pool reseed: the reseed counter and the 100 ms
    /// timer are unchanged.
    pub fn reseed(&mut self, seed: &[u8]) {
        self.generator.reseed(seed);
        self.generation += 1;
    }

    /// CE's UpdateSeedFile: reseed the generator with the seed file's `contents`, then return
    /// 64 fresh bytes, which the caller must write back (and sync) before serving any output.
    ///
    /// An all-zero file is rejected ([`FortunaError::BadSeedFile`]): it was never written or
    /// was wiped, and would carry no secret.
    pub fn update_seed_file(
        &mut self,
        contents: &[u8; SEED_FILE_LEN],
    ) -> Result<[u8; SEED_FILE_LEN], FortunaError> {
        if contents.iter().all(|&b| b == 0) {
            return Err(FortunaError::BadSeedFile {
                reason: "all 64 bytes are zero",
            });
        }
        self.reseed(contents);
        self.write_seed_file()
    }

    /// CE's WriteSeedFile: 64 fresh bytes to store as the new seed file (periodically, see
    /// [`Fortuna::seed_due`], and at shutdown). Fails while unseeded.
    pub fn write_seed_file(&mut self) -> Result<[u8; SEED_FILE_LEN], FortunaError> {
        let mut contents = [0u8; SEED_FILE_LEN];
        self.random_data(&mut contents)?;
        self.last_seed_write = Some(self.clock.now());
        Ok(contents)
    }

    /// Whether the periodic seed-file write is due at `now`: the generator is seeded and no
    /// seed file was produced in the last interval (default 10 minutes).
    pub fn seed_due(&self, now: Instant) -> bool {
        self.generator.is_seeded()
            && self
                .last_seed_write
                .is_none_or(|t| now.saturating_duration_since(t) >= self.seed_file_interval)
    }

    /// Whether output can be produced (the generator's counter is not 0).
    pub fn is_seeded(&self) -> bool {
        self.generator.is_seeded()
    }

    /// Generator reseeds of any kind so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Current status.
    pub fn stats(&self) -> Stats {
        Stats {
            seeded: self.is_seeded(),
            reseed_count: self.reseed_count,
            pool0_bytes: self.pools[0].len,
            last_reseed: self.last_reseed,
            generation: self.generation,
            cipher: self.generator.cipher(),
            backend: self.generator.backend(),
        }
    }

    /// The generator's counter, for the module's unit tests.
    #[cfg(test)]
    pub(crate) fn generator_counter(&self) -> u128 {
        self.generator.counter()
    }

    /// Pool 0 is full enough and the last pool reseed is at least 100 ms old.
    fn reseed_due(&self, now: Instant) -> bool {
        self.pools[0].len >= MIN_POOL_SIZE
            && self
                .last_reseed
                .is_none_or(|t| now.saturating_duration_since(t) >= RESEED_INTERVAL)
    }

    /// Reseed the generator from the pools selected by the incremented reseed counter.
    fn reseed_from_pools(&mut self, now: Instant) {
        self.reseed_count += 1;
        let mut seed = [0u8; 32 * NUM_POOLS];
        let used = pools_used(self.reseed_count);
        for i in used.clone() {
            let digest = self.pools[i].take_digest();
            seed[32 * i..32 * (i + 1)].copy_from_slice(&digest);
        }
        self.reseed(&seed[..32 * used.end]);
        seed.zeroize();
        self.last_reseed = Some(now);
        tracing::debug!(
            reseed_count = self.reseed_count,
            pools = used.end,
            "fortuna reseeded from pools"
        );
    }
}

impl Default for Fortuna {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Fortuna {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fortuna")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fortuna::shad256 as shad_of;

    #[test]
    fn pools_used_follows_powers_of_two() {
        assert_eq!(pools_used(1), 0..1);
        assert_eq!(pools_used(2), 0..2);
        assert_eq!(pools_used(3), 0..1);
        assert_eq!(pools_used(8), 0..4);
        assert_eq!(pools_used(12), 0..3);
        assert_eq!(pools_used(1 << 30), 0..31);
        assert_eq!(pools_used(1 << 31), 0..32);
        assert_eq!(pools_used(1 << 63), 0..32);
        assert_eq!(pools_used(u64::MAX), 0..1);
    }

    #[test]
    fn pool_hashes_the_encoded_events() {
        let mut f = Fortuna::new();
        f.add_random_event(7, 3, b"abc").unwrap();
        f.add_random_event(9, 3, &[0xFF; 32]).unwrap();
        let mut raw = vec![7, 3];
        raw.extend_from_slice(b"abc");
        raw.extend_from_slice(&[9, 32]);
        raw.extend_from_slice(&[0xFF; 32]);
        assert_eq!(f.pools[3].len, raw.len() as u64);
        assert_eq!(f.pools[3].take_digest(), shad_of(&raw));
        assert_eq!(f.pools[3].len, 0);
        assert_eq!(f.pools[3].take_digest(), shad_of(&[]));
    }

    #[test]
    fn bad_events_change_nothing() {
        let mut f = Fortuna::new();
        for (pool, len) in [(32, 1), (usize::MAX, 1), (0, 0), (0, 33)] {
            let data = vec![1u8; len];
            assert_eq!(
                f.add_random_event(5, pool, &data),
                Err(FortunaError::BadEvent {
                    source_id: 5,
                    pool,
                    len
                })
            );
        }
        assert!(f.pools.iter().all(|p| p.len == 0));
    }

    #[test]
    fn reseed_empties_exactly_the_used_pools() {
        let clock = ManualClock::new();
        let mut f = Fortuna::with_clock(Arc::new(clock.clone()));
        for round in 1..=4u64 {
            for pool in 0..NUM_POOLS {
                f.add_random_event(0, pool, &[0u8; 32]).unwrap();
                f.add_random_event(0, pool, &[0u8; 32]).unwrap();
            }
            f.random_data(&mut [0u8; 1]).unwrap();
            assert_eq!(f.reseed_count, round);
            let used = pools_used(round).end;
            for (i, p) in f.pools.iter().enumerate() {
                assert_eq!(p.len == 0, i < used, "round {round} pool {i}");
            }
            clock.advance(RESEED_INTERVAL);
        }
    }

    #[test]
    fn seed_due_tracks_writes() {
        let clock = ManualClock::new();
        let mut f = Fortuna::with_clock(Arc::new(clock.clone()));
        assert!(!f.seed_due(clock.now()));
        f.update_seed_file(&[1u8; 64]).unwrap();
        assert!(!f.seed_due(clock.now()));
        clock.advance(SEED_FILE_INTERVAL - Duration::from_millis(1));
        assert!(!f.seed_due(clock.now()));
        clock.advance(Duration::from_millis(1));
        assert!(f.seed_due(clock.now()));
        f.write_seed_file().unwrap();
        assert!(!f.seed_due(clock.now()));
    }
}
