//! Sinks for healthy blocks besides the kernel feeder (which lives in [`crate::feeder`]).
//!
//! - [`FortunaSink`] feeds Fortuna's 32 pools, spreading each source's events round-robin
//!   (*Cryptography Engineering* §9.5.6). It takes every block until Fortuna is first seeded,
//!   then one block per [`FORTUNA_EVENT_INTERVAL`], leaving the rest of the scarce hardware
//!   output to the TRNG queue.
//! - [`QueueSink`] fills the durable TRNG queue that clients drain: it wants data while the
//!   queue has room and writes blocks in small batches, so that a chip delivering ~40 blocks a
//!   second costs a handful of fsyncs a second rather than one per block (SD cards wear).

use std::time::{Duration, Instant};

use lokey::fortuna::{NUM_POOLS, SharedFortuna};
use lokey::store::Store;

use crate::harvest::{Origin, Sink};

/// Time between pool events once Fortuna is seeded: 10 blocks (320 bytes) a second per source,
/// enough for a reseed every few seconds at the pool-0 minimum of 64 bytes.
pub const FORTUNA_EVENT_INTERVAL: Duration = Duration::from_millis(100);

/// Feeds Fortuna's pools.
pub struct FortunaSink {
    fortuna: SharedFortuna,
    next_pool: usize,
    last: Option<Instant>,
}

impl FortunaSink {
    /// A sink feeding `fortuna`.
    pub fn new(fortuna: SharedFortuna) -> FortunaSink {
        FortunaSink {
            fortuna,
            next_pool: 0,
            last: None,
        }
    }
}

impl Sink for FortunaSink {
    fn name(&self) -> &'static str {
        "fortuna"
    }

    fn wants(&mut self) -> bool {
        !self.fortuna.stats().seeded
            || self
                .last
                .is_none_or(|t| t.elapsed() >= FORTUNA_EVENT_INTERVAL)
    }

    fn next_want(&self) -> Option<Instant> {
        // The harvester sleeps until then, so Fortuna gets its 10 events a second even when
        // nothing else wants data (a full TRNG queue).
        self.last.map(|t| t + FORTUNA_EVENT_INTERVAL)
    }

    fn accept(&mut self, origin: Origin<'_>, block: &[u8]) {
        // Events carry at most 32 bytes (§9.5.2); longer blocks go in pieces to successive pools.
        for piece in block.chunks(32) {
            if let Err(e) = self
                .fortuna
                .add_random_event(origin.source_id, self.next_pool, piece)
            {
                tracing::error!("cannot add an event to Fortuna's pools: {e}");
            }
            self.next_pool = (self.next_pool + 1) % NUM_POOLS;
        }
        self.last = Some(Instant::now());
        // A zero-length request reseeds from the pools when due (pool 0 ≥ 64 bytes, 100 ms
        // since the last reseed), so Fortuna becomes usable without waiting for a client.
        let _ = self.fortuna.random_data(&mut []);
    }
}

/// Blocks written to the queue at once.
pub const QUEUE_BATCH: usize = 8;

/// Feeds the TRNG queue.
pub struct QueueSink {
    store: Store,
    pending: Vec<Box<[u8]>>,
    since: Option<Instant>,
}

impl QueueSink {
    /// A sink filling `store`'s TRNG queue.
    pub fn new(store: Store) -> QueueSink {
        QueueSink {
            store,
            pending: Vec::with_capacity(QUEUE_BATCH),
            since: None,
        }
    }

    fn write(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        // A store that can no longer be written refuses every push until a restart; the first
        // failure was logged, and the daemon reports the state once.
        if !self.store.healthy() {
            self.pending.clear();
            self.since = None;
            return;
        }
        match self.store.trng().push(&self.pending) {
            Ok(pushed) if pushed.dropped > 0 => {
                tracing::debug!("TRNG queue full: {} blocks dropped", pushed.dropped);
            }
            Ok(_) => {}
            // The blocks were never served, so losing them costs only entropy; the store's
            // health reports the failure.
            Err(e) => tracing::error!("cannot write to the TRNG queue: {e}"),
        }
        self.pending.clear();
        self.since = None;
    }
}

impl Sink for QueueSink {
    fn name(&self) -> &'static str {
        "trng-queue"
    }

    fn wants(&mut self) -> bool {
        if !self.store.healthy() {
            return false;
        }
        let stats = self.store.trng().stats();
        stats.items + (self.pending.len() as u64) < stats.capacity
    }

    fn accept(&mut self, _origin: Origin<'_>, block: &[u8]) {
        self.pending.push(block.into());
        self.since.get_or_insert_with(Instant::now);
        let stats = self.store.trng().stats();
        let full = stats.items + self.pending.len() as u64 >= stats.capacity;
        let stale = self
            .since
            .is_some_and(|t| t.elapsed() >= std::time::Duration::from_secs(1));
        if self.pending.len() >= QUEUE_BATCH || full || stale {
            self.write();
        }
    }
}

impl Drop for QueueSink {
    fn drop(&mut self) {
        self.write();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lokey::source::SourceKind;

    fn origin() -> Origin<'static> {
        Origin {
            source: "test",
            kind: SourceKind::Emulator,
            source_id: 0,
        }
    }

    #[test]
    fn fortuna_is_seeded_from_the_pools_and_then_fed_sparingly() {
        let fortuna = SharedFortuna::new(lokey::fortuna::Fortuna::new());
        let mut sink = FortunaSink::new(fortuna.clone());
        let mut blocks = 0;
        // Pool 0 gets every 32nd event; it needs 64 bytes (two 34-byte events).
        while !fortuna.stats().seeded {
            assert!(sink.wants(), "an unseeded Fortuna wants every block");
            sink.accept(origin(), &[blocks as u8; 32]);
            blocks += 1;
            assert!(
                blocks <= 2 * NUM_POOLS + 1,
                "not seeded after {blocks} blocks"
            );
        }
        assert_eq!(blocks, NUM_POOLS + 1, "two events in pool 0");
        assert!(!sink.wants(), "seeded: one block per interval");
        let next = sink.next_want().expect("a time for the next event");
        assert!(next > Instant::now() && next <= Instant::now() + FORTUNA_EVENT_INTERVAL);
        std::thread::sleep(FORTUNA_EVENT_INTERVAL);
        assert!(sink.wants());
        let mut out = [0u8; 64];
        fortuna.random_data(&mut out).unwrap();
        assert_ne!(out, [0u8; 64]);
    }

    #[test]
    fn fills_the_queue_in_batches_up_to_its_capacity_and_flushes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), &Default::default()).unwrap();
        store.trng().set_capacity(20);
        let mut sink = QueueSink::new(store.clone());
        for i in 0..QUEUE_BATCH - 1 {
            assert!(sink.wants());
            sink.accept(origin(), &[i as u8; 32]);
        }
        assert_eq!(store.trng().stats().items, 0, "still batching");
        sink.accept(origin(), &[7; 32]);
        assert_eq!(store.trng().stats().items, QUEUE_BATCH as u64);
        while sink.wants() {
            sink.accept(origin(), &[1; 32]);
        }
        // The last partial batch was written because the queue became full.
        assert_eq!(store.trng().stats().items, 20);
        assert_eq!(store.trng().stats().dropped, 0);
        store.trng().take(0, 64).unwrap();
        assert!(sink.wants());
        sink.accept(origin(), &[2; 32]);
        drop(sink);
        assert_eq!(store.trng().stats().items, 19);
        assert_eq!(store.trng().peek(18 * 32, 32).unwrap(), [2u8; 32]);
        assert_eq!(
            store.trng().peek(0, 32).unwrap(),
            [2u8; 32],
            "FIFO: block 2 of the first batch"
        );
    }
}
