//! Fortuna's key material is zeroized when it is replaced or dropped (issue: "Key material is
//! zeroized when dropped or replaced"), checked where it matters: in the memory handed back to
//! the allocator. A recording allocator scans every block freed by this process for the keys the
//! test knows the generator had; none may be there.
//!
//! Its own binary (`harness` stays on) because a global allocator is process-wide. The unsafe
//! code below is the `GlobalAlloc` contract itself, nothing else: the library stays free of it.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aes::Aes256;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use chacha20::ChaCha20Legacy;
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use lokey::fortuna::{Cipher, Generator, shad256};

/// Keys to look for in freed memory (fixed size: the allocator must not allocate).
struct Watch {
    keys: [[u8; 32]; 8],
    len: usize,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    keys: [[0; 32]; 8],
    len: 0,
});
/// Freed blocks that still held watched key `i`, for each `i` (tests run concurrently; each
/// reads only the keys it watches).
static FOUND: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
/// Freed blocks the size of a `Generator` (shows the scan saw the generator's own block).
static SCANNED: AtomicUsize = AtomicUsize::new(0);

struct Recording;

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; `dealloc` only reads the `layout.size()` bytes at `ptr` before freeing them, which
// the caller guarantees are an allocation of this allocator with that layout.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() == std::mem::size_of::<Generator>() {
            SCANNED.fetch_add(1, Ordering::Relaxed);
        }
        if layout.size() >= 32 {
            // SAFETY: `ptr` is a live allocation of `layout.size()` bytes until the call below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            // Every block is scanned, whichever thread frees it: a `try_lock` here skipped the
            // blocks freed while another thread was scanning, which made the check below
            // miss keys now and then. Waiting cannot deadlock: nothing frees memory while
            // holding the lock (`watch` only stores into the array; a std mutex does not
            // allocate).
            let watch = WATCH.lock().unwrap_or_else(|e| e.into_inner());
            for (i, key) in watch.keys[..watch.len].iter().enumerate() {
                if block.windows(32).any(|w| w == key) {
                    FOUND[i].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        // SAFETY: as above, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Watches `key`; returns its index in [`FOUND`].
fn watch(key: [u8; 32]) -> usize {
    let mut w = WATCH.lock().unwrap();
    let n = w.len;
    w.keys[n] = key;
    w.len += 1;
    n
}

/// AES-256 of the 128-bit counter `c` (least significant byte first, as Fortuna encodes it).
fn block(key: &[u8; 32], c: u128) -> [u8; 16] {
    let cipher = Aes256::new(&(*key).into());
    let mut b = c.to_le_bytes().into();
    cipher.encrypt_block(&mut b);
    b.into()
}

/// ChaCha20 block `c` (a small counter: its high half, the nonce, is zero) under `key`.
fn chacha_block(key: &[u8; 32], c: u64) -> [u8; 64] {
    let mut cipher = ChaCha20Legacy::new(key.into(), &[0u8; 8].into());
    cipher.seek(c * 64);
    let mut b = [0u8; 64];
    cipher.apply_keystream(&mut b);
    b
}

const SEED1: &[u8] = b"lokey zeroize test: first seed";
const SEED2: &[u8] = b"lokey zeroize test: second seed";

/// K1 = SHAd-256(0^32 || s1), K2 = SHAd-256(K1 || s2): the keys after the two reseeds (C = 2).
fn reseeded_keys() -> ([u8; 32], [u8; 32]) {
    let k1 = shad256(&[&[0u8; 32][..], SEED1].concat());
    let k2 = shad256(&[&k1[..], SEED2].concat());
    (k1, k2)
}

/// Reseeds `generator` with the two seeds, asks for 16 bytes (which must be `expected`), drops
/// it, and checks that none of `keys` is left in the memory given back to the allocator.
fn check_no_key_survives(mut generator: Box<Generator>, expected: [u8; 16], keys: [[u8; 32]; 3]) {
    let watched = keys.map(watch);
    let scanned = SCANNED.load(Ordering::Relaxed);
    generator.reseed(SEED1);
    generator.reseed(SEED2);
    let mut out = [0u8; 16];
    generator.pseudo_random_data(&mut out).unwrap();
    // The generator is the one the test computed.
    assert_eq!(out, expected);
    drop(generator);

    assert!(
        SCANNED.load(Ordering::Relaxed) > scanned,
        "the generator's block was not seen being freed"
    );
    for (i, k) in watched.into_iter().zip(["K1", "K2", "K3"]) {
        assert_eq!(
            FOUND[i].load(Ordering::Relaxed),
            0,
            "Fortuna key {k} was still in memory given back to the allocator"
        );
    }
}

#[test]
fn no_key_the_generator_had_survives_in_freed_memory() {
    let (k1, k2) = reseeded_keys();
    // One 16-byte request uses block C = 2, then rekeys with blocks 3 and 4.
    let mut k3 = [0u8; 32];
    k3[..16].copy_from_slice(&block(&k2, 3));
    k3[16..].copy_from_slice(&block(&k2, 4));
    check_no_key_survives(Box::new(Generator::new()), block(&k2, 2), [k1, k2, k3]);
}

#[test]
fn no_key_the_chacha20_generator_had_survives_in_freed_memory() {
    let (k1, k2) = reseeded_keys();
    // One 16-byte request uses ChaCha20 block C = 2, then takes the new key from block 3.
    let k3: [u8; 32] = chacha_block(&k2, 3)[..32].try_into().unwrap();
    let out: [u8; 16] = chacha_block(&k2, 2)[..16].try_into().unwrap();
    let generator = Box::new(Generator::with_cipher(Cipher::ChaCha20));
    check_no_key_survives(generator, out, [k1, k2, k3]);
}

#[test]
fn the_scan_finds_a_key_left_in_freed_memory() {
    // The check above must be able to fail: a plain boxed key is found once freed.
    let key = shad256(b"lokey zeroize test: a key nobody wipes");
    let i = watch(key);
    let left = Box::new(key);
    drop(std::hint::black_box(left));
    assert!(FOUND[i].load(Ordering::Relaxed) > 0);
}
