//! Draws registered for the beacon's next pulse (`docs/draws.md`; the format is
//! [`lokey::draw`]).
//!
//! # Contract
//!
//! - The book has one open batch: the registrations for the commit pulse the beacon will
//!   publish next in its chain. A registration gets the next leaf index, goes to the store's
//!   journal under the book's lock and is synced (shared with concurrent registrations)
//!   before it is acknowledged; so the batch's leaves are exactly the acknowledged
//!   registrations, in order.
//! - [`DrawBook::close`] (the beacon thread, building pulse n) takes the open batch's leaves,
//!   opens the batch for pulse n+1 and returns the Merkle root for pulse n's commitment value.
//!   A retried pulse n gets the same root. The pulse's own durable write syncs every
//!   registration in it.
//! - A batch whose pulse is never published (a crash, then a new chain) stays in the store; its
//!   draws are reported undecidable and never decided by another pulse.

use std::sync::Mutex;

use lokey::draw::{Draw, Registration, merkle_root};
use lokey::store::Store;

use crate::beacon::Now;

/// The open batch.
#[derive(Debug)]
struct Open {
    chain: u64,
    pulse: u64,
    leaves: Vec<[u8; 32]>,
}

#[derive(Debug, Default)]
struct Book {
    open: Option<Open>,
    /// The last closed batch (chain, pulse, root), for a retried pulse.
    closed: Option<(u64, u64, [u8; 32])>,
}

/// A registration as acknowledged: what the client is told.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The registration.
    pub registration: Registration,
    /// Its leaf hash.
    pub leaf: [u8; 32],
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The beacon has no chain open yet (starting, or unable to begin one).
    #[error("the beacon has not begun a chain yet, so no pulse can take draws; try again shortly")]
    NotOpen,
    /// The store refused.
    #[error("the store cannot record the draw: {0}")]
    Store(String),
}

/// The draws of the open batch and the store behind them.
pub struct DrawBook {
    store: Store,
    book: Mutex<Book>,
    now: Now,
    cache: LeafCache,
}

impl std::fmt::Debug for DrawBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrawBook").finish_non_exhaustive()
    }
}

impl DrawBook {
    /// A book over `store`, with no batch open until the beacon opens one.
    pub fn new(store: Store, now: Now) -> DrawBook {
        DrawBook {
            store,
            book: Mutex::default(),
            now,
            cache: LeafCache::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens the batch for commit pulse (chain, pulse), with the registrations the store
    /// already holds for it (made before a clean restart).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub fn open(&self, chain: u64, pulse: u64) -> Result<(), String> {
        let leaves = self
            .store
            .draws()
            .leaves(chain, pulse)
            .map_err(|e| e.to_string())?;
        self.lock().open = Some(Open {
            chain,
            pulse,
            leaves,
        });
        Ok(())
    }

    /// Closes the batch of commit pulse (chain, pulse) and returns its Merkle root (zeros for
    /// no draws); the batch of pulse + 1 opens.
    pub fn close(&self, chain: u64, pulse: u64) -> [u8; 32] {
        let mut book = self.lock();
        if let Some((c, p, root)) = book.closed
            && (c, p) == (chain, pulse)
        {
            return root;
        }
        let leaves = match book.open.take() {
            Some(open) if (open.chain, open.pulse) == (chain, pulse) => open.leaves,
            // A batch for another pulse (none should be open): its draws stay undecidable.
            _ => Vec::new(),
        };
        let root = merkle_root(&leaves);
        book.closed = Some((chain, pulse, root));
        book.open = Some(Open {
            chain,
            pulse: pulse + 1,
            leaves: Vec::new(),
        });
        root
    }

    /// Registers `draw` for the open batch; returns once it is durable.
    ///
    /// # Errors
    ///
    /// [`RegisterError`].
    pub fn register(
        &self,
        draw: Draw,
        label: String,
        nonce: String,
    ) -> Result<Registered, RegisterError> {
        let draws = self.store.draws();
        let (registered, ticket) = {
            let mut book = self.lock();
            let open = book.open.as_mut().ok_or(RegisterError::NotOpen)?;
            let registration = Registration {
                chain_index: open.chain,
                commit_pulse_index: open.pulse,
                leaf_index: u32::try_from(open.leaves.len())
                    .map_err(|_| RegisterError::Store("too many draws for one pulse".into()))?,
                registered_ms: (self.now)(),
                draw,
                label,
                nonce,
            };
            let leaf = registration
                .leaf()
                .map_err(|e| RegisterError::Store(e.to_string()))?;
            let ticket = draws
                .insert(&registration, &leaf)
                .map_err(|e| RegisterError::Store(e.to_string()))?;
            open.leaves.push(leaf);
            (Registered { registration, leaf }, ticket)
        };
        draws
            .durable(ticket)
            .map_err(|e| RegisterError::Store(e.to_string()))?;
        Ok(registered)
    }
}

/// The leaves of a decided batch, kept for the next receipt of the same batch (a batch can
/// hold many thousands of draws, and their receipts are usually asked for together).
#[derive(Debug, Default)]
struct LeafCache(Mutex<Option<Cached>>);

/// A commit pulse (chain, pulse) and its leaves.
type Cached = ((u64, u64), std::sync::Arc<Vec<[u8; 32]>>);

impl LeafCache {
    /// The leaves of commit pulse (chain, pulse), from the cache or the store.
    ///
    /// # Errors
    ///
    /// The store's error.
    fn leaves(
        &self,
        store: &Store,
        chain: u64,
        pulse: u64,
    ) -> Result<std::sync::Arc<Vec<[u8; 32]>>, String> {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((key, leaves)) = cache.as_ref()
            && *key == (chain, pulse)
        {
            return Ok(leaves.clone());
        }
        let leaves = std::sync::Arc::new(
            store
                .draws()
                .leaves(chain, pulse)
                .map_err(|e| e.to_string())?,
        );
        *cache = Some(((chain, pulse), leaves.clone()));
        Ok(leaves)
    }
}

impl DrawBook {
    /// The store behind the book.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The leaves of a published commit pulse (its batch no longer changes).
    ///
    /// # Errors
    ///
    /// The store's error.
    pub fn decided_leaves(
        &self,
        chain: u64,
        pulse: u64,
    ) -> Result<std::sync::Arc<Vec<[u8; 32]>>, String> {
        self.cache.leaves(&self.store, chain, pulse)
    }
}
