//! The beacon's pulses in the store: by (chain, index), by time, the chains' parameters and
//! the chain state ([`ChainState`]).
//!
//! # Contract
//!
//! - A pulse and the state that follows it (the new precommitted value included) are written
//!   in one batch and synced before [`Beacon::publish`] returns: nothing can read a pulse
//!   that is not on disk, and the secret it committed to is on disk with it.
//! - Keys: `p` + chain (u64 BE) + index (u64 BE) → the pulse record (message ‖ signature);
//!   `t` + time (u64 BE, ms) → chain ‖ index; `c` + chain → the chain's JSON parameters;
//!   `state` → the chain state as JSON.

use fjall::Keyspace;

use super::{Store, StoreError};
use crate::beacon::{ChainInfo, ChainState, Pulse};

const STATE_KEY: &[u8] = b"state";

/// The beacon's part of the store (cheap to clone).
#[derive(Clone)]
pub struct Beacon {
    store: Store,
    keyspace: Keyspace,
}

impl std::fmt::Debug for Beacon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Beacon(..)")
    }
}

fn pulse_key(chain: u64, index: u64) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = b'p';
    k[1..9].copy_from_slice(&chain.to_be_bytes());
    k[9..].copy_from_slice(&index.to_be_bytes());
    k
}

fn time_key(ms: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b't';
    k[1..].copy_from_slice(&ms.to_be_bytes());
    k
}

fn chain_key(chain: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = b'c';
    k[1..].copy_from_slice(&chain.to_be_bytes());
    k
}

impl Beacon {
    pub(super) fn new(store: Store, keyspace: Keyspace) -> Beacon {
        Beacon { store, keyspace }
    }

    fn corrupt(&self, detail: String) -> StoreError {
        StoreError::Corrupt {
            path: self.store.path().to_path_buf(),
            detail,
        }
    }

    /// The chain state, if the beacon ever ran on this store.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`], or [`StoreError::Corrupt`] for a state that does not parse.
    pub fn state(&self) -> Result<Option<ChainState>, StoreError> {
        let Some(v) = self.keyspace.get(STATE_KEY).map_err(StoreError::engine)? else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| self.corrupt(format!("the beacon's chain state: {e}")))
    }

    /// Replaces the chain state; durable when this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn set_state(&self, state: &ChainState) -> Result<(), StoreError> {
        let mut batch = self.store.inner.db.batch();
        batch.insert(&self.keyspace, STATE_KEY, json(state));
        self.store.commit_durably(batch)
    }

    /// Writes `pulse`, the state after it and, for a chain's first pulse, the chain's
    /// parameters, in one batch; durable when this returns.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`]: then nothing of it is published.
    pub fn publish(
        &self,
        pulse: &Pulse,
        state: &ChainState,
        chain: Option<&ChainInfo>,
    ) -> Result<(), StoreError> {
        let mut batch = self.store.inner.db.batch();
        let key = pulse_key(pulse.chain_index, pulse.pulse_index);
        batch.insert(&self.keyspace, key, pulse.to_record());
        batch.insert(&self.keyspace, time_key(pulse.time_ms), &key[1..]);
        batch.insert(&self.keyspace, STATE_KEY, json(state));
        if let Some(info) = chain {
            batch.insert(&self.keyspace, chain_key(info.chain_index), json(info));
        }
        self.store.commit_durably(batch)
    }

    fn decode(&self, record: &[u8]) -> Result<Pulse, StoreError> {
        Pulse::from_record(record).map_err(|e| self.corrupt(format!("a beacon pulse: {e}")))
    }

    /// The pulse (chain, index).
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn pulse(&self, chain: u64, index: u64) -> Result<Option<Pulse>, StoreError> {
        match self
            .keyspace
            .get(pulse_key(chain, index))
            .map_err(StoreError::engine)?
        {
            Some(r) => self.decode(&r).map(Some),
            None => Ok(None),
        }
    }

    fn by_time_entry(&self, entry: Option<fjall::Guard>) -> Result<Option<Pulse>, StoreError> {
        let Some(guard) = entry else {
            return Ok(None);
        };
        let (_, value) = guard.into_inner().map_err(StoreError::engine)?;
        if value.len() != 16 {
            return Err(self.corrupt("a beacon time index entry".into()));
        }
        let chain = u64::from_be_bytes(value[..8].try_into().expect("8"));
        let index = u64::from_be_bytes(value[8..].try_into().expect("8"));
        // An entry whose pulse was pruned meanwhile reads as none.
        self.pulse(chain, index)
    }

    /// The newest pulse.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn last(&self) -> Result<Option<Pulse>, StoreError> {
        self.by_time_entry(self.keyspace.prefix(b"t").next_back())
    }

    /// The newest pulse strictly before `ms`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn before(&self, ms: u64) -> Result<Option<Pulse>, StoreError> {
        self.by_time_entry(self.keyspace.range(time_key(0)..time_key(ms)).next_back())
    }

    /// The oldest pulse strictly after `ms`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn after(&self, ms: u64) -> Result<Option<Pulse>, StoreError> {
        let Some(from) = ms.checked_add(1) else {
            return Ok(None);
        };
        self.by_time_entry(
            self.keyspace
                .range(time_key(from)..=time_key(u64::MAX))
                .next(),
        )
    }

    /// The pulse at `ms`, or else the one closest to it (the earlier one on a tie), as NIST's
    /// `/pulse/time/{ms}` answers.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn at(&self, ms: u64) -> Result<Option<Pulse>, StoreError> {
        let before = self.before(ms.saturating_add(1))?;
        if before.as_ref().is_some_and(|p| p.time_ms == ms) {
            return Ok(before);
        }
        let after = self.after(ms)?;
        Ok(match (before, after) {
            (Some(b), Some(a)) if a.time_ms - ms < ms - b.time_ms => Some(a),
            (Some(b), _) => Some(b),
            (None, a) => a,
        })
    }

    /// The pulses of `chain` from index `from` on, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn run(&self, chain: u64, from: u64, limit: usize) -> Result<Vec<Pulse>, StoreError> {
        let mut out = Vec::new();
        for guard in self
            .keyspace
            .range(pulse_key(chain, from)..=pulse_key(chain, u64::MAX))
            .take(limit)
        {
            let (_, v) = guard.into_inner().map_err(StoreError::engine)?;
            out.push(self.decode(&v)?);
        }
        Ok(out)
    }

    /// A chain's parameters.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`] or [`StoreError::Corrupt`].
    pub fn chain(&self, chain: u64) -> Result<Option<ChainInfo>, StoreError> {
        let Some(v) = self
            .keyspace
            .get(chain_key(chain))
            .map_err(StoreError::engine)?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&v)
            .map(Some)
            .map_err(|e| self.corrupt(format!("a beacon chain's parameters: {e}")))
    }

    /// Deletes the pulses older than `ms`, their time index and the draws they committed to
    /// (a receipt needs its pulses, so it is kept exactly as long as they are). Returns how
    /// many pulses went.
    ///
    /// # Errors
    ///
    /// [`StoreError::Engine`].
    pub fn prune(&self, ms: u64) -> Result<usize, StoreError> {
        let mut batch = self.store.inner.db.batch();
        let mut n = 0;
        for guard in self.keyspace.range(time_key(0)..time_key(ms)) {
            let (k, v) = guard.into_inner().map_err(StoreError::engine)?;
            batch.remove(&self.keyspace, k.to_vec());
            if v.len() == 16 {
                let mut key = vec![b'p'];
                key.extend_from_slice(&v);
                batch.remove(&self.keyspace, key);
                let mut prefix = vec![b'r'];
                prefix.extend_from_slice(&v);
                for draw in self.store.inner.draws.prefix(&prefix) {
                    let (k, _) = draw.into_inner().map_err(StoreError::engine)?;
                    batch.remove(&self.store.inner.draws, k.to_vec());
                }
            }
            n += 1;
        }
        if n > 0 {
            self.store.commit_durably(batch)?;
        }
        Ok(n)
    }
}

fn json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).expect("plain data serializes")
}
