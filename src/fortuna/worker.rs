//! Serving many clients: a thread-safe handle on one [`Fortuna`] and per-thread [`Worker`]s.
//!
//! Contract: a [`Worker`] owns a [`Generator`] that it keys with 32 bytes of the main Fortuna's
//! output (mixed into its previous key by [`Generator::reseed`]). It draws a new key before a
//! request when the main generator has been reseeded since its last draw, when it has produced
//! [`WorkerLimits::max_bytes`] since, or when [`WorkerLimits::max_age`] has passed. Every
//! request ends with a rekey of the worker's own generator. Output is refused
//! ([`FortunaError::Unseeded`]) while the main Fortuna is unseeded. The module docs of
//! [`crate::fortuna`] explain why this keeps Fortuna's guarantees.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use super::FortunaError;
use super::accumulator::{Clock, Fortuna, SEED_FILE_LEN, Stats};
use super::generator::{Generator, MAX_REQUEST};

/// A cloneable, thread-safe handle on one [`Fortuna`] (a mutex inside).
#[derive(Clone)]
pub struct SharedFortuna {
    inner: Arc<Inner>,
}

struct Inner {
    fortuna: Mutex<Fortuna>,
    /// A copy of [`Fortuna::generation`], so workers notice reseeds without taking the lock.
    generation: AtomicU64,
    clock: Arc<dyn Clock>,
}

impl SharedFortuna {
    /// Share `fortuna`.
    pub fn new(fortuna: Fortuna) -> Self {
        let clock = Arc::clone(fortuna.clock());
        let generation = AtomicU64::new(fortuna.generation());
        SharedFortuna {
            inner: Arc::new(Inner {
                fortuna: Mutex::new(fortuna),
                generation,
                clock,
            }),
        }
    }

    /// Run `f` with the Fortuna locked; any operation is allowed.
    pub fn with<R>(&self, f: impl FnOnce(&mut Fortuna) -> R) -> R {
        let mut fortuna = self.lock();
        let result = f(&mut fortuna);
        self.inner
            .generation
            .store(fortuna.generation(), Ordering::Release);
        result
    }

    /// See [`Fortuna::add_random_event`].
    pub fn add_random_event(
        &self,
        source: u8,
        pool: usize,
        data: &[u8],
    ) -> Result<(), FortunaError> {
        self.with(|f| f.add_random_event(source, pool, data))
    }

    /// See [`Fortuna::random_data`]. This holds the lock for the whole request; bulk readers
    /// should use a [`Worker`].
    pub fn random_data(&self, out: &mut [u8]) -> Result<(), FortunaError> {
        self.with(|f| f.random_data(out))
    }

    /// See [`Fortuna::reseed`].
    pub fn reseed(&self, seed: &[u8]) {
        self.with(|f| f.reseed(seed))
    }

    /// See [`Fortuna::update_seed_file`].
    pub fn update_seed_file(
        &self,
        contents: &[u8; SEED_FILE_LEN],
    ) -> Result<[u8; SEED_FILE_LEN], FortunaError> {
        self.with(|f| f.update_seed_file(contents))
    }

    /// See [`Fortuna::write_seed_file`].
    pub fn write_seed_file(&self) -> Result<[u8; SEED_FILE_LEN], FortunaError> {
        self.with(|f| f.write_seed_file())
    }

    /// See [`Fortuna::seed_due`].
    pub fn seed_due(&self, now: Instant) -> bool {
        self.lock().seed_due(now)
    }

    /// See [`Fortuna::stats`].
    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }

    /// A new worker with the default limits (1 MiB, 1 s).
    pub fn worker(&self) -> Worker {
        self.worker_with_limits(WorkerLimits::default())
    }

    /// A new worker with the given limits.
    pub fn worker_with_limits(&self, limits: WorkerLimits) -> Worker {
        // The worker's generator runs the main generator's cipher (`fortuna.cipher`).
        let cipher = self.lock().stats().cipher;
        Worker {
            shared: self.clone(),
            generator: Generator::with_cipher(cipher),
            generation: 0,
            keyed_at: None,
            bytes_since_key: 0,
            limits,
        }
    }

    /// Lock the Fortuna. A poisoned lock is taken over: no Fortuna operation panics part way
    /// through a state change, so its state stays consistent.
    fn lock(&self) -> MutexGuard<'_, Fortuna> {
        self.inner.fortuna.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for SharedFortuna {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedFortuna")
            .field("stats", &self.stats())
            .finish()
    }
}

/// When a [`Worker`] draws a new key from the main Fortuna (besides after every main reseed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerLimits {
    /// Most bytes produced under one key drawn from the main Fortuna.
    pub max_bytes: u64,
    /// Longest time one key drawn from the main Fortuna is used.
    pub max_age: Duration,
}

impl Default for WorkerLimits {
    /// 1 MiB and 1 s.
    fn default() -> Self {
        WorkerLimits {
            max_bytes: MAX_REQUEST as u64,
            max_age: Duration::from_secs(1),
        }
    }
}

/// A per-thread generator keyed from a [`SharedFortuna`]; generates without taking any lock.
pub struct Worker {
    shared: SharedFortuna,
    generator: Generator,
    /// The main Fortuna's generation at the last key draw.
    generation: u64,
    keyed_at: Option<Instant>,
    bytes_since_key: u64,
    limits: WorkerLimits,
}

impl Worker {
    /// Fill `out` (any length) with random bytes, in chunks of at most 2^20 bytes, each followed
    /// by a rekey of the worker's generator and preceded, when due, by a new key from the main
    /// Fortuna. Fails with [`FortunaError::Unseeded`] while the main Fortuna is unseeded.
    pub fn fill(&mut self, out: &mut [u8]) -> Result<(), FortunaError> {
        if out.is_empty() {
            self.ensure_key()?;
            return self.generator.pseudo_random_data(out);
        }
        for chunk in out.chunks_mut(MAX_REQUEST) {
            self.ensure_key()?;
            self.generator.pseudo_random_data(chunk)?;
            self.bytes_since_key += chunk.len() as u64;
        }
        Ok(())
    }

    /// Whether the worker has drawn a key from the main Fortuna yet.
    pub fn is_keyed(&self) -> bool {
        self.keyed_at.is_some()
    }

    /// Draw a new key from the main Fortuna if the current one is missing or stale.
    fn ensure_key(&mut self) -> Result<(), FortunaError> {
        let now = self.shared.inner.clock.now();
        let stale = match self.keyed_at {
            None => true,
            Some(at) => {
                self.shared.inner.generation.load(Ordering::Acquire) != self.generation
                    || self.bytes_since_key >= self.limits.max_bytes
                    || now.saturating_duration_since(at) >= self.limits.max_age
            }
        };
        if !stale {
            return Ok(());
        }
        let mut key = [0u8; 32];
        let drawn = self.shared.with(|f| {
            f.random_data(&mut key)?;
            Ok::<_, FortunaError>(f.generation())
        });
        if let Ok(generation) = drawn {
            self.generator.reseed(&key);
            self.generation = generation;
            self.keyed_at = Some(now);
            self.bytes_since_key = 0;
        }
        key.zeroize();
        drawn.map(|_| ())
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("keyed", &self.is_keyed())
            .field("bytes_since_key", &self.bytes_since_key)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fortuna::{Cipher, ManualClock};

    fn setup() -> (ManualClock, SharedFortuna) {
        let clock = ManualClock::new();
        let shared = SharedFortuna::new(Fortuna::with_clock(Arc::new(clock.clone())));
        (clock, shared)
    }

    /// Counter of the main generator, read through the lock.
    fn main_draws(shared: &SharedFortuna) -> u128 {
        shared.with(|f| f.generator_counter())
    }

    #[test]
    fn workers_run_the_main_generators_cipher() {
        for cipher in [Cipher::Aes256, Cipher::ChaCha20] {
            let shared = SharedFortuna::new(Fortuna::with_cipher(cipher));
            assert_eq!(shared.stats().cipher, cipher);
            let mut w = shared.worker();
            assert_eq!(w.generator.cipher(), cipher);
            shared.reseed(b"seed");
            let mut out = [0u8; 100];
            w.fill(&mut out).unwrap();
            assert!(out.iter().any(|&b| b != 0));
        }
    }

    #[test]
    fn worker_refuses_until_main_is_seeded() {
        let (_, shared) = setup();
        let mut w = shared.worker();
        assert_eq!(w.fill(&mut [0u8; 8]), Err(FortunaError::Unseeded));
        assert!(!w.is_keyed());
        shared.reseed(b"seed");
        w.fill(&mut [0u8; 8]).unwrap();
        assert!(w.is_keyed());
    }

    #[test]
    fn worker_rekeys_on_bytes_age_and_main_reseed() {
        let (clock, shared) = setup();
        shared.reseed(b"seed");
        let limits = WorkerLimits {
            max_bytes: 100,
            max_age: Duration::from_secs(1),
        };
        let mut w = shared.worker_with_limits(limits);
        w.fill(&mut [0u8; 60]).unwrap();
        let after_first = main_draws(&shared);
        w.fill(&mut [0u8; 39]).unwrap();
        assert_eq!(main_draws(&shared), after_first, "99 bytes: same key");
        w.fill(&mut [0u8; 1]).unwrap();
        assert_eq!(
            main_draws(&shared),
            after_first,
            "100th byte: still same key"
        );
        w.fill(&mut [0u8; 1]).unwrap();
        let after_bytes = main_draws(&shared);
        assert!(after_bytes > after_first, "bytes limit reached: new key");

        clock.advance(Duration::from_millis(999));
        w.fill(&mut [0u8; 1]).unwrap();
        assert_eq!(main_draws(&shared), after_bytes);
        clock.advance(Duration::from_millis(1));
        w.fill(&mut [0u8; 1]).unwrap();
        let after_age = main_draws(&shared);
        assert!(after_age > after_bytes, "age limit reached: new key");

        w.fill(&mut [0u8; 1]).unwrap();
        assert_eq!(main_draws(&shared), after_age);
        shared.reseed(b"fresh");
        let after_reseed = main_draws(&shared);
        w.fill(&mut [0u8; 1]).unwrap();
        assert!(main_draws(&shared) > after_reseed, "main reseeded: new key");
    }
}
