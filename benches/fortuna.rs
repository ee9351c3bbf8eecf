//! Fortuna throughput: 1 MiB generator requests on production's path and on every other path
//! this CPU can run (AES-NI with VAES masked, VAES-256 with AVX-512 masked, ChaCha20), worker
//! fills, small requests, and the bare AES-256 block function on the same 1 MiB for reference.
//! `scripts/bench-fortuna` runs this beside `openssl speed -evp aes-256-ctr`, and once more
//! with the `aes` crate forced to its software backend for the ChaCha20 comparison.

use aes::Aes256;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use divan::counter::BytesCount;
use divan::{Bencher, black_box};
use lokey::fortuna::{Backend, Fortuna, Generator, MAX_REQUEST, SharedFortuna};

fn main() {
    divan::main();
}

/// One 2^20-byte `pseudo_random_data` request (keystream, rekey, key schedule) on the path
/// production picks for AES-256 on this CPU.
#[divan::bench(sample_count = 1000)]
fn generator_1mib(bencher: Bencher) {
    bench_1mib(bencher, Generator::new());
}

/// The same on one path (skipped, with a line on stderr, where the CPU cannot run it).
fn bench_path(bencher: Bencher, backend: Backend) {
    match Generator::with_backend(backend) {
        Some(g) => bench_1mib(bencher, g),
        None => eprintln!("skipped: this CPU cannot run the {backend:?} path"),
    }
}

fn bench_1mib(bencher: Bencher, mut g: Generator) {
    g.reseed(b"bench");
    let mut buf = vec![0u8; MAX_REQUEST];
    bencher
        .counter(BytesCount::new(MAX_REQUEST))
        .bench_local(|| g.pseudo_random_data(black_box(&mut buf)).unwrap());
}

/// lokey's eight-block AES-NI path, as on CPUs without VAES (VAES masked here).
#[divan::bench(sample_count = 1000)]
fn generator_aesni_1mib(bencher: Bencher) {
    bench_path(bencher, Backend::AesNi);
}

/// lokey's VAES-256 path, as on CPUs with VAES and no AVX-512 (AVX-512 masked here).
#[divan::bench(sample_count = 1000)]
fn generator_vaes256_1mib(bencher: Bencher) {
    bench_path(bencher, Backend::Vaes256);
}

/// The `aes` crate's own backend: VAES-512 with AVX-512, its AES-NI, or its software AES
/// when built with `--cfg aes_backend="soft"` (the stand-in for a Pi without AES).
#[divan::bench(sample_count = 200)]
fn generator_aes_crate_1mib(bencher: Bencher) {
    bench_path(bencher, Backend::AesCrate);
}

/// The ChaCha20 generator (AVX2 here; NEON on the Pi).
#[divan::bench(sample_count = 1000)]
fn generator_chacha20_1mib(bencher: Bencher) {
    bench_path(bencher, Backend::ChaCha20);
}

/// A 32-byte request: dominated by the rekey (two blocks and a key expansion).
#[divan::bench]
fn generator_32b(bencher: Bencher) {
    let mut g = Generator::new();
    g.reseed(b"bench");
    let mut buf = [0u8; 32];
    bencher
        .counter(BytesCount::new(32usize))
        .bench_local(|| g.pseudo_random_data(black_box(&mut buf)).unwrap());
}

/// A worker filling 1 MiB: includes a key draw from the main Fortuna (1 MiB limit).
#[divan::bench(sample_count = 1000)]
fn worker_fill_1mib(bencher: Bencher) {
    let mut f = Fortuna::new();
    f.reseed(b"bench");
    let shared = SharedFortuna::new(f);
    let mut w = shared.worker();
    let mut buf = vec![0u8; MAX_REQUEST];
    bencher
        .counter(BytesCount::new(MAX_REQUEST))
        .bench_local(|| w.fill(black_box(&mut buf)).unwrap());
}

/// A worker filling 16 KiB, the size openssl's largest `speed` block.
#[divan::bench]
fn worker_fill_16kib(bencher: Bencher) {
    let mut f = Fortuna::new();
    f.reseed(b"bench");
    let shared = SharedFortuna::new(f);
    let mut w = shared.worker();
    let mut buf = vec![0u8; 16 * 1024];
    bencher
        .counter(BytesCount::new(buf.len()))
        .bench_local(|| w.fill(black_box(&mut buf)).unwrap());
}

/// The ceiling: `encrypt_blocks` over 65 536 blocks in place, no counters written.
#[divan::bench(sample_count = 1000)]
fn aes256_encrypt_blocks_1mib(bencher: Bencher) {
    let cipher = Aes256::new(&[7u8; 32].into());
    let mut buf = vec![0u8; MAX_REQUEST];
    bencher
        .counter(BytesCount::new(MAX_REQUEST))
        .bench_local(|| {
            let (blocks, _) = Array::slice_as_chunks_mut(black_box(&mut buf[..]));
            cipher.encrypt_blocks(blocks);
        });
}
