//! Lottery-grade draws decided by the beacon (`docs/draws.md` specifies every byte; this is
//! its reference implementation).
//!
//! # Contract
//!
//! - A [`Registration`] has a canonical encoding ([`Registration::encode`]) and a leaf hash
//!   `SHA-256(0x00 ‖ encoding)`. The registrations of one beacon period are the leaves, in
//!   registration order, of an RFC 9162 Merkle tree ([`merkle_root`]) whose root is the
//!   commitment value of the *commit pulse* n.
//! - The draw is decided by the *deciding pulse* n+1: its local random value was precommitted
//!   in pulse n (published together with the root) and revealed in pulse n+1. The seed is
//!   `SHA-512("lokey draw seed" ‖ local(n+1) ‖ root ‖ leaf)` ([`seed`]); it expands into a byte
//!   stream of SHA-512 blocks ([`SeedStream`]) that drives the generators of
//!   [`crate::generate`] — the same unbiased algorithms the API serves (Lemire, Floyd,
//!   Fisher–Yates) — so anyone can recompute the values ([`values`]).
//! - [`verify_receipt`] checks a receipt offline and names the step that failed.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};

use crate::beacon::{self, PublicKey, PulseJson};
use crate::generate::{self, ByteSource};

/// The registration encoding's prefix (ASCII).
pub const REGISTRATION_MAGIC: &[u8] = b"lokey draw registration";
/// The encoding's version.
pub const VERSION: u16 = 1;
/// The seed's domain-separation prefix (ASCII).
pub const SEED_DOMAIN: &[u8] = b"lokey draw seed";
/// Longest label, bytes of UTF-8.
pub const MAX_LABEL: usize = 1000;
/// Longest client nonce, bytes.
pub const MAX_NONCE: usize = 256;
/// Longest item of a list, bytes of UTF-8.
pub const MAX_ITEM: usize = 1000;

/// What is drawn; the generators' own parameter names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Draw {
    /// `n` integers from `min` to `max`; distinct with `unique`.
    Integers {
        /// How many.
        n: u32,
        /// Smallest.
        min: i64,
        /// Largest.
        max: i64,
        /// No value twice.
        #[serde(default)]
        unique: bool,
    },
    /// `k` distinct items of `items`, in random order.
    Sample {
        /// The list.
        items: Vec<String>,
        /// How many.
        k: u32,
    },
    /// Every item of `items` in a random order.
    Shuffle {
        /// The list.
        items: Vec<String>,
    },
    /// `n` fractions in [0, 1) with exactly `places` digits.
    DecimalFractions {
        /// How many.
        n: u32,
        /// Digits after the point.
        places: u32,
    },
    /// `n` strings of `length` characters drawn from `characters`.
    Strings {
        /// How many.
        n: u32,
        /// Characters each.
        length: u32,
        /// The character set, without duplicates, in order.
        characters: String,
    },
    /// `n` version-4 UUIDs.
    Uuids {
        /// How many.
        n: u32,
    },
}

impl Draw {
    fn code(&self) -> u8 {
        match self {
            Draw::Integers { .. } => 1,
            Draw::Sample { .. } => 2,
            Draw::Shuffle { .. } => 3,
            Draw::DecimalFractions { .. } => 4,
            Draw::Strings { .. } => 5,
            Draw::Uuids { .. } => 6,
        }
    }

    /// Checks the generators' limits by drawing from a stream of zeros (nothing random is
    /// used): the same 400 the generators answer.
    ///
    /// # Errors
    ///
    /// The message naming the parameter.
    pub fn check(&self) -> Result<(), String> {
        let lists = match self {
            Draw::Sample { items, .. } | Draw::Shuffle { items } => Some(items),
            _ => None,
        };
        if let Some(items) = lists {
            if items.is_empty() || items.len() > generate::MAX_COUNT {
                return Err(format!(
                    "items must hold from 1 to {} strings, not {}",
                    generate::MAX_COUNT,
                    items.len()
                ));
            }
            if let Some(long) = items.iter().find(|i| i.len() > MAX_ITEM) {
                return Err(format!(
                    "an item of {} bytes: items are at most {MAX_ITEM} bytes of UTF-8",
                    long.len()
                ));
            }
        }
        if let Draw::Strings { characters, .. } = self
            && generate::dedup_charset(characters).len() != characters.chars().count()
        {
            return Err("characters must not repeat (a repeat would bias the draw)".into());
        }
        values(self, &[0u8; 64]).map(|_| ())
    }
}

/// One registered draw, as its leaf encodes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Registration {
    /// The beacon chain.
    pub chain_index: u64,
    /// The commit pulse: its commitment value is the root of the tree holding this draw.
    pub commit_pulse_index: u64,
    /// Position in that tree (0-based, registration order).
    pub leaf_index: u32,
    /// When the device registered it, Unix milliseconds.
    pub registered_ms: u64,
    /// What is drawn.
    #[serde(flatten)]
    pub draw: Draw,
    /// Free text.
    pub label: String,
    /// The client's nonce, hex (empty when none).
    #[serde(default)]
    pub nonce: String,
}

fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl Registration {
    /// The canonical encoding (`docs/draws.md` §3).
    ///
    /// # Errors
    ///
    /// A nonce that is not hex.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let nonce = beacon::from_hex(&self.nonce).ok_or("nonce is not hex")?;
        let mut r = Vec::with_capacity(128);
        r.extend_from_slice(REGISTRATION_MAGIC);
        r.extend_from_slice(&VERSION.to_be_bytes());
        r.extend_from_slice(&self.chain_index.to_be_bytes());
        r.extend_from_slice(&self.commit_pulse_index.to_be_bytes());
        r.extend_from_slice(&self.leaf_index.to_be_bytes());
        r.extend_from_slice(&self.registered_ms.to_be_bytes());
        r.push(self.draw.code());
        match &self.draw {
            Draw::Integers {
                n,
                min,
                max,
                unique,
            } => {
                r.extend_from_slice(&n.to_be_bytes());
                r.extend_from_slice(&min.to_be_bytes());
                r.extend_from_slice(&max.to_be_bytes());
                r.push(u8::from(*unique));
            }
            Draw::Sample { items, k } => {
                r.extend_from_slice(&k.to_be_bytes());
                r.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for item in items {
                    lp(&mut r, item.as_bytes());
                }
            }
            Draw::Shuffle { items } => {
                r.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for item in items {
                    lp(&mut r, item.as_bytes());
                }
            }
            Draw::DecimalFractions { n, places } => {
                r.extend_from_slice(&n.to_be_bytes());
                r.extend_from_slice(&places.to_be_bytes());
            }
            Draw::Strings {
                n,
                length,
                characters,
            } => {
                r.extend_from_slice(&n.to_be_bytes());
                r.extend_from_slice(&length.to_be_bytes());
                lp(&mut r, characters.as_bytes());
            }
            Draw::Uuids { n } => r.extend_from_slice(&n.to_be_bytes()),
        }
        lp(&mut r, self.label.as_bytes());
        lp(&mut r, &nonce);
        Ok(r)
    }

    /// The leaf hash: SHA-256(0x00 ‖ encoding).
    ///
    /// # Errors
    ///
    /// As [`Registration::encode`].
    pub fn leaf(&self) -> Result<[u8; 32], String> {
        let mut h = Sha256::new();
        h.update([0u8]);
        h.update(self.encode()?);
        Ok(h.finalize().into())
    }

    /// The draw's id: `chain-commitpulse-leafindex`.
    pub fn id(&self) -> String {
        format!(
            "{}-{}-{}",
            self.chain_index, self.commit_pulse_index, self.leaf_index
        )
    }
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// The RFC 9162 Merkle tree hash of `leaves` (leaf hashes already computed); all zeros for no
/// leaves (a pulse with no draws commits to nothing).
pub fn merkle_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => [0; 32],
        1 => leaves[0],
        n => {
            let k = split(n);
            node(&merkle_root(&leaves[..k]), &merkle_root(&leaves[k..]))
        }
    }
}

/// The inclusion path of leaf `index` (RFC 9162 §2.1.3.1), from the leaf up.
pub fn inclusion_path(leaves: &[[u8; 32]], index: usize) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if index < k {
        let mut path = inclusion_path(&leaves[..k], index);
        path.push(merkle_root(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_path(&leaves[k..], index - k);
        path.push(merkle_root(&leaves[..k]));
        path
    }
}

/// The root a path leads to from `leaf` at `index` of a tree of `size` leaves (RFC 9162
/// §2.1.3.2), or `None` when the path's length does not fit.
pub fn root_from_path(
    leaf: &[u8; 32],
    index: u64,
    size: u64,
    path: &[[u8; 32]],
) -> Option<[u8; 32]> {
    if index >= size {
        return None;
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return None;
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    (s_n == 0).then_some(r)
}

/// The seed of a draw: SHA-512(SEED_DOMAIN ‖ local ‖ root ‖ leaf).
pub fn seed(local: &[u8; 64], root: &[u8; 32], leaf: &[u8; 32]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(SEED_DOMAIN);
    h.update(local);
    h.update(root);
    h.update(leaf);
    h.finalize().into()
}

/// The seed's byte stream: SHA-512(seed ‖ u64 BE counter) for counter 0, 1, 2, …, each block
/// read from its first byte.
#[derive(Debug, Clone)]
pub struct SeedStream {
    seed: [u8; 64],
    counter: u64,
    block: [u8; 64],
    used: usize,
}

impl SeedStream {
    /// The stream of `seed`.
    pub fn new(seed: &[u8; 64]) -> SeedStream {
        SeedStream {
            seed: *seed,
            counter: 0,
            block: [0; 64],
            used: 64,
        }
    }
}

impl ByteSource for SeedStream {
    type Error = std::convert::Infallible;
    fn fill(&mut self, out: &mut [u8]) -> Result<(), Self::Error> {
        for b in out {
            if self.used == 64 {
                let mut h = Sha512::new();
                h.update(self.seed);
                h.update(self.counter.to_be_bytes());
                self.block = h.finalize().into();
                self.counter += 1;
                self.used = 0;
            }
            *b = self.block[self.used];
            self.used += 1;
        }
        Ok(())
    }
}

/// The values of `draw` from `seed`: the generators of [`crate::generate`] over
/// [`SeedStream`].
///
/// # Errors
///
/// A parameter outside the generators' limits, named.
pub fn values(draw: &Draw, seed: &[u8; 64]) -> Result<Vec<Value>, String> {
    let mut src = SeedStream::new(seed);
    let err = |e: generate::Error<std::convert::Infallible>| match e {
        generate::Error::Invalid(m) => m,
        generate::Error::Source(never) => match never {},
    };
    let strings = |v: Vec<String>| v.into_iter().map(Value::String).collect();
    Ok(match draw {
        Draw::Integers {
            n,
            min,
            max,
            unique,
        } => {
            let v = if *unique {
                generate::unique_ints(&mut src, *min, *max, *n as usize)
            } else {
                generate::ints(&mut src, *min, *max, *n as usize)
            };
            v.map_err(err)?.into_iter().map(Value::from).collect()
        }
        Draw::Sample { items, k } => {
            if *k == 0 {
                return Err("k must be at least 1".into());
            }
            strings(generate::sample(&mut src, items, *k as usize).map_err(err)?)
        }
        Draw::Shuffle { items } => {
            let mut items = items.clone();
            generate::shuffle(&mut src, &mut items).map_err(err)?;
            strings(items)
        }
        Draw::DecimalFractions { n, places } => {
            strings(generate::decimal_fractions(&mut src, *n as usize, *places).map_err(err)?)
        }
        Draw::Strings {
            n,
            length,
            characters,
        } => {
            let set: Vec<char> = characters.chars().collect();
            strings(generate::strings(&mut src, *n as usize, *length as usize, &set).map_err(err)?)
        }
        Draw::Uuids { n } => {
            if *n == 0 || *n as usize > generate::MAX_COUNT {
                return Err(format!(
                    "n must be from 1 to {}, not {n}",
                    generate::MAX_COUNT
                ));
            }
            let v: Result<Vec<String>, _> = (0..*n).map(|_| generate::uuid_v4(&mut src)).collect();
            strings(v.map_err(err)?)
        }
    })
}

/// Everything a verifier needs to check a decided draw offline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    /// Receipt format version.
    pub version: u16,
    /// The draw's id.
    pub id: String,
    /// What was registered.
    pub registration: Registration,
    /// Its leaf hash, hex.
    pub leaf: String,
    /// Leaves in the commit pulse's tree.
    pub tree_size: u64,
    /// The inclusion path, hex, from the leaf up.
    pub path: Vec<String>,
    /// The commit pulse (its commitment value is the root).
    pub commit_pulse: PulseJson,
    /// The deciding pulse (its local random value decides).
    pub deciding_pulse: PulseJson,
    /// The key id of the key that signed both pulses, hex.
    pub key_id: String,
    /// The seed, hex.
    pub seed: String,
    /// The values.
    pub values: Vec<Value>,
}

/// The step of [`verify_receipt`] that failed, and what was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step} failed: {detail}")]
pub struct ReceiptError {
    /// `registration`, `merkle path`, `pulses`, `precommitment`, `seed`, `values`.
    pub step: &'static str,
    /// What was found.
    pub detail: String,
}

/// Checks a receipt with `key` (`docs/draws.md` §6): the leaf is the registration's hash and
/// its path leads to the commit pulse's commitment; both pulses are signed by the key, are
/// consecutive in one chain, and the commit pulse precommitted to the deciding pulse's local
/// random value; the seed and the values follow from them. Returns the values.
///
/// # Errors
///
/// The first [`ReceiptError`].
pub fn verify_receipt(receipt: &Receipt, key: &PublicKey) -> Result<Vec<Value>, ReceiptError> {
    let fail = |step, detail: String| ReceiptError { step, detail };
    let reg = &receipt.registration;
    let leaf = reg.leaf().map_err(|e| fail("registration", e))?;
    if beacon::hex(&leaf) != receipt.leaf {
        return Err(fail(
            "registration",
            format!(
                "the leaf is not the hash of the registration (computed {})",
                beacon::hex(&leaf)
            ),
        ));
    }
    if receipt.id != reg.id() {
        return Err(fail(
            "registration",
            format!(
                "the id {} is not the registration's {}",
                receipt.id,
                reg.id()
            ),
        ));
    }
    let pulse = |p: &PulseJson| -> Result<(beacon::Pulse, [u8; 64]), ReceiptError> {
        Ok((
            p.to_pulse().map_err(|e| fail("pulses", e.to_string()))?,
            p.published_output()
                .map_err(|e| fail("pulses", e.to_string()))?,
        ))
    };
    let (commit, commit_out) = pulse(&receipt.commit_pulse)?;
    let (deciding, deciding_out) = pulse(&receipt.deciding_pulse)?;
    if commit.chain_index != reg.chain_index || commit.pulse_index != reg.commit_pulse_index {
        return Err(fail(
            "registration",
            format!(
                "registered for pulse {}/{}, but the commit pulse is {}/{}",
                reg.chain_index, reg.commit_pulse_index, commit.chain_index, commit.pulse_index
            ),
        ));
    }
    let path: Vec<[u8; 32]> = receipt
        .path
        .iter()
        .map(|h| beacon::from_hex(h).and_then(|v| v.try_into().ok()))
        .collect::<Option<_>>()
        .ok_or_else(|| fail("merkle path", "a path hash is not 32 bytes of hex".into()))?;
    let root = root_from_path(&leaf, u64::from(reg.leaf_index), receipt.tree_size, &path)
        .ok_or_else(|| fail("merkle path", "the path does not fit the tree size".into()))?;
    if root != commit.commitment {
        return Err(fail(
            "merkle path",
            "the path does not lead to the commit pulse's commitment value".into(),
        ));
    }
    if beacon::hex(&key.key_id()) != receipt.key_id {
        return Err(fail(
            "pulses",
            "the receipt's key id is not the key's".into(),
        ));
    }
    beacon::verify(
        &[
            (commit.clone(), Some(commit_out)),
            (deciding.clone(), Some(deciding_out)),
        ],
        key,
    )
    .map_err(|e| {
        let step = if e.check == "precommitment" {
            "precommitment"
        } else {
            "pulses"
        };
        fail(step, e.to_string())
    })?;
    if deciding.chain_index != commit.chain_index {
        return Err(fail(
            "pulses",
            "the deciding pulse is not in the commit pulse's chain".into(),
        ));
    }
    let seed = seed(&deciding.local_random, &root, &leaf);
    if beacon::hex(&seed) != receipt.seed {
        return Err(fail("seed", format!("computed {}", beacon::hex(&seed))));
    }
    let values = values(&reg.draw, &seed).map_err(|e| fail("values", e))?;
    if values != receipt.values {
        return Err(fail(
            "values",
            "the values do not follow from the seed by the published rule".into(),
        ));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<[u8; 32]> {
        (0..n).map(|i| Sha256::digest([i as u8]).into()).collect()
    }

    #[test]
    fn every_inclusion_path_leads_to_the_root_and_only_from_its_leaf() {
        for n in 1..=17 {
            let l = leaves(n);
            let root = merkle_root(&l);
            for i in 0..n {
                let path = inclusion_path(&l, i);
                assert_eq!(root_from_path(&l[i], i as u64, n as u64, &path), Some(root));
                let other = (i + 1) % n;
                if other != i {
                    assert_ne!(
                        root_from_path(&l[other], i as u64, n as u64, &path),
                        Some(root)
                    );
                }
                assert_eq!(root_from_path(&l[i], n as u64, n as u64, &path), None);
            }
        }
    }

    #[test]
    fn rfc_9162_shape_for_three_leaves() {
        let l = leaves(3);
        assert_eq!(merkle_root(&l), node(&node(&l[0], &l[1]), &l[2]));
        assert_eq!(merkle_root(&[]), [0; 32]);
        assert_eq!(merkle_root(&l[..1]), l[0]);
    }

    #[test]
    fn the_seed_stream_is_sha512_blocks_of_seed_and_counter() {
        let seed = [7u8; 64];
        let mut s = SeedStream::new(&seed);
        let mut out = [0u8; 100];
        s.fill(&mut out).unwrap();
        let b0 = Sha512::digest([&seed[..], &0u64.to_be_bytes()].concat());
        let b1 = Sha512::digest([&seed[..], &1u64.to_be_bytes()].concat());
        assert_eq!(&out[..64], &b0[..]);
        assert_eq!(&out[64..], &b1[..36]);
    }
}
