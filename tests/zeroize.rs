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
use lokey::fortuna::{Generator, shad256};

/// Keys to look for in freed memory (fixed size: the allocator must not allocate).
struct Watch {
    keys: [[u8; 32]; 4],
    len: usize,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    keys: [[0; 32]; 4],
    len: 0,
});
/// Freed blocks that still held watched key `i`, for each `i` (tests run concurrently; each
/// reads only the keys it watches).
static FOUND: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
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

#[test]
fn no_key_the_generator_had_survives_in_freed_memory() {
    let seed1 = b"lokey zeroize test: first seed";
    let seed2 = b"lokey zeroize test: second seed";
    // K1 = SHAd-256(0^32 || s1), K2 = SHAd-256(K1 || s2); C = 2 after the two reseeds.
    let k1 = shad256(&[&[0u8; 32][..], seed1].concat());
    let k2 = shad256(&[&k1[..], seed2].concat());
    // One 16-byte request uses block C = 2, then rekeys with blocks 3 and 4.
    let mut k3 = [0u8; 32];
    k3[..16].copy_from_slice(&block(&k2, 3));
    k3[16..].copy_from_slice(&block(&k2, 4));
    let watched = [k1, k2, k3].map(watch);

    let scanned = SCANNED.load(Ordering::Relaxed);
    let mut generator = Box::new(Generator::new());
    generator.reseed(seed1);
    generator.reseed(seed2);
    let mut out = [0u8; 16];
    generator.pseudo_random_data(&mut out).unwrap();
    // The generator is the one the test computed: its output is block C = 2 under K2.
    assert_eq!(out, block(&k2, 2));
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
fn the_scan_finds_a_key_left_in_freed_memory() {
    // The check above must be able to fail: a plain boxed key is found once freed.
    let key = shad256(b"lokey zeroize test: a key nobody wipes");
    let i = watch(key);
    let left = Box::new(key);
    drop(std::hint::black_box(left));
    assert!(FOUND[i].load(Ordering::Relaxed) > 0);
}
