//! Registered draws in the store: `r` + chain (u64 BE) + commit pulse (u64 BE) + leaf index
//! (u32 BE) → leaf hash (32 bytes) ‖ the registration as JSON.
//!
//! # Contract
//!
//! - [`Draws::insert`] writes a registration to the journal and returns a [`Ticket`];
//!   [`Draws::durable`] returns once it is synced, sharing the sync with every registration
//!   written meanwhile (group commit), so many clients cost few fsyncs.
//! - A commit pulse's leaves come back in leaf order ([`Draws::leaves`]).

use fjall::Keyspace;

use super::{Store, StoreError};
use crate::draw::Registration;

/// A registration written to the journal, not yet known to be synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

/// The draws' part of the store (cheap to clone).
#[derive(Clone)]
pub struct Draws {
    store: Store,
    keyspace: Keyspace,
}

impl std::fmt::Debug for Draws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Draws(..)")
    }
}

fn key(chain: u64, pulse: u64, index: u32) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = b'r';
    k[1..9].copy_from_slice(&chain.to_be_bytes());
    k[9..17].copy_from_slice(&pulse.to_be_bytes());
    k[17..].copy_from_slice(&index.to_be_bytes());
    k
}

impl Draws {
    pub(super) fn new(store: Store, keyspace: Keyspace) -> Draws {
        Draws { store, keyspace }
    }

    /// Writes `registration` with its `leaf` to the journal.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn insert(
        &self,
        registration: &Registration,
        leaf: &[u8; 32],
    ) -> Result<Ticket, StoreError> {
        let mut value = leaf.to_vec();
        value.extend_from_slice(&serde_json::to_vec(registration).expect("plain data serializes"));
        let mut batch = self.store.inner.db.batch();
        batch.insert(
            &self.keyspace,
            key(
                registration.chain_index,
                registration.commit_pulse_index,
                registration.leaf_index,
            ),
            value,
        );
        Ok(Ticket(self.store.inner.sync.commit(batch)?))
    }

    /// Returns once the registration of `ticket` is synced.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        self.store
            .inner
            .sync
            .persist_through(&self.store.inner.db, ticket.0)
    }

    fn decode(&self, value: &[u8]) -> Result<([u8; 32], Registration), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: self.store.path().to_path_buf(),
            detail,
        };
        if value.len() < 32 {
            return Err(corrupt("a draw registration of fewer than 32 bytes".into()));
        }
        let leaf: [u8; 32] = value[..32].try_into().expect("32");
        let reg = serde_json::from_slice(&value[32..])
            .map_err(|e| corrupt(format!("a draw registration: {e}")))?;
        Ok((leaf, reg))
    }

    /// The registration (chain, commit pulse, leaf index) and its leaf.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn get(
        &self,
        chain: u64,
        pulse: u64,
        index: u32,
    ) -> Result<Option<([u8; 32], Registration)>, StoreError> {
        match self
            .keyspace
            .get(key(chain, pulse, index))
            .map_err(StoreError::engine)?
        {
            Some(v) => self.decode(&v).map(Some),
            None => Ok(None),
        }
    }

    /// The leaves registered for the commit pulse (chain, pulse), in leaf order.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn leaves(&self, chain: u64, pulse: u64) -> Result<Vec<[u8; 32]>, StoreError> {
        let mut out = Vec::new();
        for guard in self
            .keyspace
            .range(key(chain, pulse, 0)..=key(chain, pulse, u32::MAX))
        {
            let (_, v) = guard.into_inner().map_err(StoreError::engine)?;
            if v.len() < 32 {
                return Err(StoreError::Corrupt {
                    path: self.store.path().to_path_buf(),
                    detail: "a draw registration of fewer than 32 bytes".into(),
                });
            }
            out.push(v[..32].try_into().expect("32"));
        }
        Ok(out)
    }
}
