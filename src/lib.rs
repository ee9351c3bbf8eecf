//! # lokey — the core library
//!
//! Everything in lokey that can be tested without root, hardware or a network lives here;
//! the `lokeyd` daemon and the `lokey` CLI are thin binaries over it.
//!
//! # Layout
//!
//! - [`atecc`]: the Microchip ATECC608A driver (generic over embedded-hal 1.0 I2C) and a
//!   byte-faithful emulator of the chip for running without hardware; keys, signatures and
//!   monotonic counters inside the chip.
//! - [`beacon`]: the randomness beacon's pulses: canonical serialization (`docs/beacon.md`),
//!   JSON form and offline verification.
//! - [`fortuna`]: the Fortuna CSPRNG (Ferguson, Schneier, Kohno, *Cryptography Engineering*
//!   ch. 9): generator, 32-pool accumulator, seed file.
//! - [`draw`]: lottery-grade draws decided by the beacon: registrations, their Merkle tree,
//!   the seed and the values, receipts (`docs/draws.md`).
//! - [`store`]: the durable fjall store: FIFO queues of raw hardware random data, persisted
//!   configuration, counters and hourly usage statistics.
//! - [`fips`]: the FIPS 140-2 block tests (monobit, poker, runs, long run) for `lokey selftest`.
//! - [`format`](mod@format): the Go API's value formats (int8 … uint64, binary), big-endian.
//! - [`generate`]: unbiased integers, samples, shuffles, fractions, gaussians, strings and UUIDs
//!   from any random byte source.
//! - [`source`]: entropy sources (the chip, its emulator, Linux /dev/hwrng) and their errors.
//! - [`config`]: the daemon's configuration: TOML file, environment, defaults, validation,
//!   and the default paths shared by daemon and CLI.
//! - [`proto`]: the versioned binary protocol spoken over the daemon's Unix socket.
//! - [`client`]: a blocking client of that socket, used by the CLI and tests.
//! - [`ring`]: the shared-memory ring through which a socket stream's bytes travel without
//!   being copied through the socket, and passing its descriptor (`SCM_RIGHTS`).
//! - [`health`]: SP 800-90B continuous and start-up health tests, one fail-closed state machine
//!   per entropy source (discard, quarantine, retry with backoff).
//! - [`kernel`]: the Linux kernel RNG interface (RNDADDENTROPY, RNDGETENTCNT, CRNG readiness)
//!   and the feeder's credit policy; with Fortuna's VAES and AES-NI paths and [`ring`], the
//!   workspace's only `unsafe` code.
//! - [`privilege`]: dropping root to a service user keeping only CAP_SYS_ADMIN, and checking
//!   what capabilities a process has.
#![deny(missing_docs)]

pub mod atecc;
pub mod beacon;
pub mod client;
pub mod config;
pub mod draw;
pub mod fips;
pub mod format;
pub mod fortuna;
pub mod generate;
pub mod health;
pub mod kernel;
pub mod privilege;
pub mod proto;
pub mod remote;
// Maps shared memory and takes descriptors from recvmsg(2): each block says why it is sound.
#[allow(unsafe_code)]
pub mod ring;
pub mod source;
pub mod store;
