//! The daemon's configuration: one TOML file, environment variables, command-line flags and
//! defaults, merged with the precedence **flags > environment > file > defaults**.
//!
//! # Contract
//!
//! - Every key the daemon understands is listed once, in [`FIELDS`], with its type, its allowed
//!   range, the environment variables that set it and a line of documentation. That table drives
//!   validation, the environment mapping and the annotated example file, so a range is written
//!   in exactly one place.
//! - Unknown keys, wrong types and out-of-range values are refused with one message that names
//!   where the value came from (file and line, environment variable or flag), the key and what is
//!   allowed ([`Error`]). Loading never writes anything.
//! - Defaults depend on who runs the daemon ([`HostEnv`]): as root or under the systemd system
//!   manager, state lives in `/var/lib/lokey` and the socket at `/run/lokey/lokey.sock`; as an
//!   ordinary user (a `systemctl --user` service included), state lives under
//!   `$XDG_STATE_HOME/lokey` (or `~/.local/state/lokey`) and the socket under
//!   `$XDG_RUNTIME_DIR/lokey/`. The CLI finds the socket with the same rule
//!   ([`socket_candidates`]).
//!
//! # Environment
//!
//! The Go project's variables are understood (`PORT`, `DB_PATH`, `TRNG_QUEUE_SIZE`,
//! `FORTUNA_QUEUE_SIZE`, `I2C_BUS_NUMBER`, `LOG_LEVEL`); those that meant something only in its
//! three-service design (`CONTROLLER_ADDR`, `FORTUNA_ADDR`, polling intervals, …) are accepted
//! and reported as ignored. Every key also has a `LOKEY_<SECTION>_<KEY>` name (for example
//! `LOKEY_STORE_TRNG_QUEUE_SIZE`), and the common ones have short names (`LOKEY_DATA_DIR`,
//! `LOKEY_LISTEN`, `LOKEY_SOCKET`, `LOKEY_LOG`, `LOKEY_ADMIN_TOKEN`). `LOKEY_*` names win over
//! the Go names. An unknown `LOKEY_*` variable is an error, like an unknown key in the file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

mod source_list;
use crate::fortuna::Cipher;
pub use source_list::{SOURCE_FIELDS, SOURCE_KINDS, SourceConfig};

/// Where the daemon looks for its configuration file when `--config` is not given.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/lokey/lokeyd.toml";
/// State directory of a system daemon (root or systemd).
pub const SYSTEM_DATA_DIR: &str = "/var/lib/lokey";
/// Socket of a system daemon (root or systemd).
pub const SYSTEM_SOCKET_PATH: &str = "/run/lokey/lokey.sock";
/// File name of the socket inside a runtime directory.
pub const SOCKET_FILE_NAME: &str = "lokey.sock";

/// The effective configuration of `lokeyd`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process-wide settings.
    pub daemon: DaemonConfig,
    /// The REST API.
    pub api: ApiConfig,
    /// The durable store and the TRNG queue.
    pub store: StoreConfig,
    /// The ATECC608A or its emulator.
    pub chip: ChipConfig,
    /// Feeding the kernel's entropy pool.
    pub kernel: KernelConfig,
    /// The Fortuna CSPRNG.
    pub fortuna: FortunaConfig,
    /// The kernel's hardware RNG device.
    pub hwrng: HwrngConfig,
    /// The chip-signed randomness beacon.
    pub beacon: BeaconConfig,
    /// Seeding this machine's kernel pool from a remote lokey device.
    pub upstream: UpstreamConfig,
    /// `[[source]]`: the sources as a list; empty: `[chip]` and `[hwrng]` say what runs.
    #[serde(default, rename = "source", skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceConfig>,
}

/// `[beacon]`: the randomness beacon, signed by a key inside the chip (`docs/beacon.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconConfig {
    /// Publish pulses.
    pub enabled: bool,
    /// Seconds between pulses, aligned to the wall clock.
    pub period_secs: u64,
    /// Days pulses are kept.
    pub retain_days: u64,
    /// The chip's key slot that signs.
    pub slot: u64,
}

/// `[upstream]`: a remote lokey device whose random bytes this lokeyd mixes into the local
/// kernel pool (a chip-less feeder; `lokeyd(8)`, UPSTREAM FEEDER).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// `https://HOST:PORT` of the device's REST API; empty: no upstream feeder.
    pub url: String,
    /// The device's key pin, `sha256:HEX` (required with `url`).
    pub pin: String,
    /// Seconds between fetches while the device answers.
    pub interval_secs: u64,
    /// Bytes fetched and mixed each time.
    pub bytes: u64,
    /// Bits credited to the kernel per byte fetched (0–8); 0 mixes without crediting.
    pub credit_bits_per_byte: u64,
}

impl UpstreamConfig {
    /// Whether an upstream feeder is configured.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }
}

/// `[hwrng]`: the kernel's hardware RNG device as a second source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HwrngConfig {
    /// `auto` (use it when present and readable), `on` (refuse to start without it), `off`.
    pub mode: String,
    /// The device node.
    pub path: PathBuf,
    /// Claimed min-entropy per byte (a real number in (0, 8]), for the health tests' cutoffs.
    pub min_entropy: f64,
    /// Bits credited to the kernel per byte of its output (0–8); unset: `kernel.bits_per_byte`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_bits_per_byte: Option<u64>,
}

/// `[daemon]`: process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Directory of the durable store, the lock file and the Fortuna seed.
    pub data_dir: PathBuf,
    /// Path of the Unix socket the CLI talks to.
    pub socket: PathBuf,
    /// User to switch to when started as root.
    pub user: String,
    /// Log level: error, warn, info, debug or trace.
    pub log_level: String,
    /// Seconds that in-flight work may take after SIGTERM before the daemon exits anyway.
    pub shutdown_timeout_secs: u64,
    /// Seconds a socket or REST client may read nothing of an answer being written (a stream)
    /// before its connection is closed.
    pub write_timeout_secs: u64,
}

/// `[api]`: the REST API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address and port the REST API listens on.
    pub listen: SocketAddr,
    /// Bearer token required for configuration changes; empty means none (then changes are
    /// accepted from loopback clients only).
    #[serde(default)]
    pub admin_token: String,
    /// Requests handled at once; more wait for a slot.
    pub max_concurrent_requests: u64,
    /// Seconds a request may take until its answer starts (streams may then run longer).
    pub request_timeout_secs: u64,
    /// TCP connections open at once; one more is answered 503 and closed.
    pub max_connections: u64,
    /// Seconds a connection may wait for (the rest of) a request's headers, idle between
    /// keep-alive requests included, before it is closed.
    pub idle_timeout_secs: u64,
    /// Bytes of `trng` data one client may take per second (token bucket).
    pub trng_bytes_per_second: u64,
    /// Bytes of `trng` data one client may take at once (bucket size).
    pub trng_burst_bytes: u64,
    /// Origins allowed to call GET and POST endpoints from a browser (CORS); `*` for any.
    /// Never offered for PUT.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// TLS for the REST API: `off` (plain HTTP), `files` (`tls_cert` and `tls_key`, reloaded
    /// on SIGHUP) or `chip` (a key in the chip's `tls_slot`, every full handshake signed by it).
    pub tls: String,
    /// PEM certificate chain, server's first (`tls = "files"`).
    pub tls_cert: String,
    /// PEM private key (`tls = "files"`).
    pub tls_key: String,
    /// Names in the self-issued certificate of `tls = "chip"` (DNS names or IP addresses).
    pub tls_names: Vec<String>,
    /// The chip's key slot of the TLS key (`tls = "chip"`).
    pub tls_slot: u64,
}

/// `[store]`: the durable store and its queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Capacity of the TRNG queue, in items.
    pub trng_queue_size: u64,
    /// Capacity reported for the Fortuna queue (kept for compatibility with the Go API; Fortuna
    /// output is generated on demand and never stored).
    pub fortuna_queue_size: u64,
    /// Delete-on-read: served TRNG bytes are removed from the queue (the only safe mode).
    pub consume: bool,
}

/// `[chip]`: the ATECC608A.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChipConfig {
    /// `auto` (the chip if its bus exists, else the emulator), `hardware` or `emulator`.
    pub mode: String,
    /// I2C bus number: the chip is at `/dev/i2c-<bus>`.
    pub i2c_bus: u64,
    /// 7-bit I2C address of the chip.
    pub address: u64,
    /// Emulator faults active at start (see `lokeyd(8)`).
    #[serde(default)]
    pub emulate_faults: Vec<String>,
    /// Claimed min-entropy per byte (a real number in (0, 8]), for the health tests' cutoffs.
    pub min_entropy: f64,
    /// Bits credited to the kernel per byte of its output (0–8); unset: `kernel.bits_per_byte`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_bits_per_byte: Option<u64>,
}

/// `[kernel]`: feeding the kernel's entropy pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    /// Credit the kernel pool at all.
    pub enabled: bool,
    /// Entropy credited per byte of hardware data, in bits.
    pub bits_per_byte: u64,
    /// After the kernel's CRNG is initialised: seconds between mixes.
    pub mix_interval_secs: u64,
    /// After the kernel's CRNG is initialised: bytes mixed each time.
    pub mix_bytes: u64,
}

/// `[fortuna]`: the Fortuna CSPRNG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FortunaConfig {
    /// Seconds between rewrites of the seed file.
    pub seed_interval_secs: u64,
    /// The generator's cipher: one of [`FORTUNA_CIPHERS`].
    pub cipher: String,
}

/// The values `fortuna.cipher` accepts.
pub const FORTUNA_CIPHERS: &[&str] = &["auto", "aes256", "chacha20"];

impl FortunaConfig {
    /// The cipher `fortuna.cipher` names; `auto` is AES-256 where the CPU has AES
    /// instructions and ChaCha20 where it has none ([`Cipher::auto`]).
    pub fn cipher(&self) -> Cipher {
        match self.cipher.as_str() {
            "aes256" => Cipher::Aes256,
            "chacha20" => Cipher::ChaCha20,
            _ => Cipher::auto(),
        }
    }
}

/// The type and allowed values of a configuration key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer in `min..=max`.
    Int {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// A real number in `(above, max]` (an integer is taken as that number).
    Real {
        /// The value must be greater than this.
        above: i64,
        /// Largest allowed value.
        max: i64,
    },
    /// `true` or `false`.
    Bool,
    /// Any string.
    Str,
    /// A file-system path (not empty).
    Path,
    /// `ADDRESS:PORT`.
    SocketAddr,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
    /// A list of strings.
    StrList,
    /// A list of strings, each one of the listed ones.
    ChoiceList(&'static [&'static str]),
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kind::Int { min, max } => write!(f, "an integer from {min} to {max}"),
            Kind::Real { above, max } => write!(
                f,
                "a number greater than {above} and at most {max} (fractions allowed, e.g. 7.5)"
            ),
            Kind::Bool => f.write_str("true or false"),
            Kind::Str => f.write_str("a string"),
            Kind::Path => f.write_str("a non-empty path"),
            Kind::SocketAddr => f.write_str("ADDRESS:PORT, e.g. 127.0.0.1:8080"),
            Kind::Choice(choices) => write!(f, "one of {}", choices.join(", ")),
            Kind::StrList => f.write_str("a list of strings"),
            Kind::ChoiceList(choices) => write!(f, "a list of: {}", choices.join(", ")),
        }
    }
}

/// One configuration key: its dotted path, type, environment names and documentation.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// `section.key`.
    pub path: &'static str,
    /// Type and allowed values.
    pub kind: Kind,
    /// Extra environment variables (besides `LOKEY_<SECTION>_<KEY>`), lowest precedence first.
    pub env: &'static [&'static str],
    /// One line for `lokeyd.toml(5)` and the example file.
    pub doc: &'static str,
}

/// The log levels `daemon.log_level` accepts.
pub const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
/// The chip modes `chip.mode` accepts.
pub const CHIP_MODES: &[&str] = &["auto", "hardware", "emulator", "off"];
/// The modes `hwrng.mode` accepts.
pub const HWRNG_MODES: &[&str] = &["auto", "on", "off"];

/// Every key of the configuration file, in the order of the example file.
pub const FIELDS: &[Field] = &[
    Field {
        path: "daemon.data_dir",
        kind: Kind::Path,
        env: &["DB_PATH", "LOKEY_DATA_DIR"],
        doc: "Directory of the durable store (created 0700). Default: /var/lib/lokey as root or \
              under the systemd system manager, else $XDG_STATE_HOME/lokey or \
              ~/.local/state/lokey. DB_PATH names this directory (a Go-style file path \
              becomes a directory).",
    },
    Field {
        path: "daemon.socket",
        kind: Kind::Path,
        env: &["LOKEY_SOCKET"],
        doc: "Unix socket for the lokey CLI (created 0660). Default: /run/lokey/lokey.sock as \
              root or under the systemd system manager, else $XDG_RUNTIME_DIR/lokey/lokey.sock.",
    },
    Field {
        path: "daemon.user",
        kind: Kind::Str,
        env: &[],
        doc: "User the daemon switches to when started as root.",
    },
    Field {
        path: "daemon.log_level",
        kind: Kind::Choice(LOG_LEVELS),
        env: &["LOG_LEVEL", "LOKEY_LOG"],
        doc: "Log level: error, warn, info, debug or trace (RUST_LOG overrides it).",
    },
    Field {
        path: "daemon.shutdown_timeout_secs",
        kind: Kind::Int { min: 1, max: 300 },
        env: &[],
        doc: "Seconds in-flight work may take after SIGTERM before the daemon exits anyway.",
    },
    Field {
        path: "daemon.write_timeout_secs",
        kind: Kind::Int { min: 1, max: 3600 },
        env: &[],
        doc: "Seconds a socket or REST client may read nothing of an answer being written (a \
              stream) before the daemon closes its connection.",
    },
    Field {
        path: "api.listen",
        kind: Kind::SocketAddr,
        env: &["LOKEY_LISTEN"],
        doc: "Address and port of the REST API (PORT sets only the port).",
    },
    Field {
        path: "api.admin_token",
        kind: Kind::Str,
        env: &["LOKEY_ADMIN_TOKEN"],
        doc: "Bearer token for configuration changes over REST; empty: loopback clients only.",
    },
    Field {
        path: "api.max_concurrent_requests",
        kind: Kind::Int {
            min: 1,
            max: 65_536,
        },
        env: &[],
        doc: "Requests handled at once; more wait for a free slot.",
    },
    Field {
        path: "api.request_timeout_secs",
        kind: Kind::Int { min: 1, max: 3600 },
        env: &[],
        doc: "Seconds a request may take until its answer starts (a stream may run longer); \
              later: 503.",
    },
    Field {
        path: "api.max_connections",
        kind: Kind::Int {
            min: 1,
            max: 65_536,
        },
        env: &[],
        doc: "TCP connections open at once; one more is answered 503 and closed.",
    },
    Field {
        path: "api.idle_timeout_secs",
        kind: Kind::Int { min: 1, max: 3600 },
        env: &[],
        doc: "Seconds a connection may take to send a request's headers, or stay idle between \
              keep-alive requests, before it is closed.",
    },
    Field {
        path: "api.trng_bytes_per_second",
        kind: Kind::Int {
            min: 1,
            max: 1 << 30,
        },
        env: &[],
        doc: "Bytes of trng data one client (IP address) may take per second; more gets 429 \
              with Retry-After.",
    },
    Field {
        path: "api.trng_burst_bytes",
        kind: Kind::Int {
            min: 1,
            max: 1 << 30,
        },
        env: &[],
        doc: "Bytes of trng data one client may take at once.",
    },
    Field {
        path: "api.cors_origins",
        kind: Kind::StrList,
        env: &[],
        doc: "Browser origins allowed to call the GET and POST endpoints (CORS), or [\"*\"]; \
              configuration changes (PUT) are never allowed cross-origin.",
    },
    Field {
        path: "api.tls",
        kind: Kind::Choice(&["off", "files", "chip"]),
        env: &[],
        doc: "TLS for the REST API: off (plain HTTP; a warning when api.listen is not a \
              loopback address), files (api.tls_cert and api.tls_key, read again on SIGHUP) or \
              chip (the private key stays in the chip's api.tls_slot and signs every full \
              handshake; lokeyd issues itself a certificate for api.tls_names, or serves \
              api.tls_cert when a CA issued that for the chip's key). A change needs a \
              restart.",
    },
    Field {
        path: "api.tls_cert",
        kind: Kind::Str,
        env: &[],
        doc: "PEM certificate chain, the server's certificate first (api.tls = files; with \
              api.tls = chip, a chain a CA issued for the chip's key from `lokey device csr`, \
              refused when it is for another key; empty: a certificate lokeyd issues itself).",
    },
    Field {
        path: "api.tls_key",
        kind: Kind::Str,
        env: &[],
        doc: "PEM private key, PKCS#8, SEC1 or PKCS#1 (api.tls = files).",
    },
    Field {
        path: "api.tls_names",
        kind: Kind::StrList,
        env: &[],
        doc: "DNS names and IP addresses of the self-issued certificate (api.tls = chip).",
    },
    Field {
        path: "api.tls_slot",
        kind: Kind::Int { min: 0, max: 15 },
        env: &[],
        doc: "The chip's P-256 key slot of the TLS key (api.tls = chip); not the beacon's \
              beacon.slot. `lokey device keygen --slot N` creates its key; the emulator \
              creates one itself.",
    },
    Field {
        path: "store.trng_queue_size",
        kind: Kind::Int {
            min: 10,
            max: 1_000_000,
        },
        env: &["TRNG_QUEUE_SIZE"],
        doc: "Capacity of the durable TRNG queue, in 32-byte items; when full, new items are \
              dropped and counted.",
    },
    Field {
        path: "store.fortuna_queue_size",
        kind: Kind::Int {
            min: 10,
            max: 1_000_000,
        },
        env: &["FORTUNA_QUEUE_SIZE"],
        doc: "Reported for compatibility with the Go API; Fortuna output is never stored.",
    },
    Field {
        path: "store.consume",
        kind: Kind::Bool,
        env: &[],
        doc: "Delete TRNG bytes when they are served (false serves the same bytes again: \
              only for testing).",
    },
    Field {
        path: "chip.mode",
        kind: Kind::Choice(CHIP_MODES),
        env: &["LOKEY_CHIP_MODE"],
        doc: "auto: the chip when /dev/i2c-<bus> exists, else the emulator (else nothing when \
              upstream.url is set); hardware; emulator; off: no chip (an upstream feeder, or \
              hwrng alone).",
    },
    Field {
        path: "chip.i2c_bus",
        kind: Kind::Int { min: 0, max: 255 },
        env: &["I2C_BUS_NUMBER"],
        doc: "I2C bus of the chip (/dev/i2c-<bus>).",
    },
    Field {
        path: "chip.address",
        kind: Kind::Int {
            min: 0x08,
            max: 0x77,
        },
        env: &[],
        doc: "7-bit I2C address of the chip (0x60 from the factory).",
    },
    Field {
        path: "chip.emulate_faults",
        kind: Kind::ChoiceList(crate::atecc::FAULTS),
        env: &[],
        doc: "Emulator faults active at start (names in lokeyd(8)).",
    },
    Field {
        path: "chip.min_entropy",
        kind: Kind::Real { above: 0, max: 8 },
        env: &[],
        doc: "Claimed min-entropy H of the chip's output in bits per byte, a real number such \
              as 7.5, from which the SP 800-90B health-test cutoffs are computed (8: its Random \
              output is DRBG output; lower values make the tests less sensitive). It does not \
              set the credit (chip.credit_bits_per_byte does).",
    },
    Field {
        path: "chip.credit_bits_per_byte",
        kind: Kind::Int { min: 0, max: 8 },
        env: &[],
        doc: "Bits credited to the kernel per byte of the chip's output; 0 never credits it. \
              Unset: kernel.bits_per_byte. The emulator is never credited, whatever this says.",
    },
    Field {
        path: "kernel.enabled",
        kind: Kind::Bool,
        env: &[],
        doc: "Feed the kernel's entropy pool (false: never touch it, like --no-credit).",
    },
    Field {
        path: "kernel.bits_per_byte",
        kind: Kind::Int { min: 0, max: 8 },
        env: &[],
        doc: "Entropy credited per byte of hardware data, in bits, for every source without \
              its own credit_bits_per_byte. 0 mixes without crediting (plain writes), and \
              lokeyd then keeps no capability unless a source sets its own credit; it cannot \
              be raised from 0 at run time.",
    },
    Field {
        path: "kernel.mix_interval_secs",
        kind: Kind::Int {
            min: 1,
            max: 86_400,
        },
        env: &[],
        doc: "Once the kernel's CRNG is initialised: seconds between mixes.",
    },
    Field {
        path: "kernel.mix_bytes",
        kind: Kind::Int { min: 1, max: 4096 },
        env: &[],
        doc: "Once the kernel's CRNG is initialised: bytes mixed each time.",
    },
    Field {
        path: "hwrng.mode",
        kind: Kind::Choice(HWRNG_MODES),
        env: &[],
        doc: "The kernel's hardware RNG as a second source: auto (when present and readable), \
              on (refuse to start without it) or off.",
    },
    Field {
        path: "hwrng.path",
        kind: Kind::Path,
        env: &[],
        doc: "Its device node. Bytes from /dev/hwrng are credited only when the kernel does \
              not credit that device itself (rng_quality 0); other paths are credited.",
    },
    Field {
        path: "hwrng.min_entropy",
        kind: Kind::Real { above: 0, max: 8 },
        env: &[],
        doc: "Claimed min-entropy H of the device's output in bits per byte, a real number such \
              as 0.9, for the health-test cutoffs (as chip.min_entropy).",
    },
    Field {
        path: "hwrng.credit_bits_per_byte",
        kind: Kind::Int { min: 0, max: 8 },
        env: &[],
        doc: "Bits credited to the kernel per byte of the device's output; 0 never credits it. \
              Unset: kernel.bits_per_byte. /dev/hwrng with rng_quality above 0 is credited by \
              the kernel itself and so never by lokeyd, whatever this says.",
    },
    Field {
        path: "fortuna.seed_interval_secs",
        kind: Kind::Int {
            min: 1,
            max: 86_400,
        },
        env: &[],
        doc: "Seconds between rewrites of the Fortuna seed file.",
    },
    Field {
        path: "fortuna.cipher",
        kind: Kind::Choice(FORTUNA_CIPHERS),
        env: &[],
        doc: "The Fortuna generator's cipher: aes256 (AES-256 in counter mode, CE 9.4), \
              chacha20 (FreeBSD's ChaCha20 generator: same counter, reseeding, pools and \
              request cap) or auto (AES-256 where the CPU has AES instructions, ChaCha20 where \
              it has none, as on every Raspberry Pi before the Pi 5). Read at start.",
    },
    Field {
        path: "beacon.enabled",
        kind: Kind::Bool,
        env: &[],
        doc: "Publish a pulse of the chip-signed randomness beacon every period (needs the \
              chip or its emulator, a key in beacon.slot, and the store).",
    },
    Field {
        path: "beacon.period_secs",
        kind: Kind::Int { min: 5, max: 3600 },
        env: &[],
        doc: "Seconds between pulses; pulses fall on multiples of the period since the Unix \
              epoch. A new period starts a new chain.",
    },
    Field {
        path: "beacon.retain_days",
        kind: Kind::Int {
            min: 1,
            max: 36_500,
        },
        env: &[],
        doc: "Days published pulses are kept (and served) before they are deleted.",
    },
    Field {
        path: "beacon.slot",
        kind: Kind::Int { min: 0, max: 15 },
        env: &[],
        doc: "The chip's key slot whose private key signs pulses (a P-256 private-key slot; \
              slots 0-2 in the factory configuration). `lokey device keygen` creates its key.",
    },
    Field {
        path: "upstream.url",
        kind: Kind::Str,
        env: &[],
        doc: "A remote lokey device, https://HOST:PORT, whose random bytes this lokeyd fetches \
              over TLS with its key pinned (upstream.pin) and mixes into this machine's kernel \
              pool; empty: no upstream feeder. Plain http:// is refused. Needs kernel.enabled.",
    },
    Field {
        path: "upstream.pin",
        kind: Kind::Str,
        env: &[],
        doc: "The device's key: sha256:HEX, as `lokey device pubkey` or GET /api/v1/tls on \
              the device prints it. Required with upstream.url: a configuration with \
              upstream.url or upstream.credit_bits_per_byte and no pin is refused, naming the \
              keys.",
    },
    Field {
        path: "upstream.interval_secs",
        kind: Kind::Int {
            min: 1,
            max: 86_400,
        },
        env: &[],
        doc: "Seconds between fetches while the device answers; after a failure the feeder \
              retries after 1 s, doubling up to 60 s.",
    },
    Field {
        path: "upstream.bytes",
        kind: Kind::Int { min: 1, max: 4096 },
        env: &[],
        doc: "Bytes fetched (Fortuna output of the device) and mixed each time.",
    },
    Field {
        path: "upstream.credit_bits_per_byte",
        kind: Kind::Int { min: 0, max: 8 },
        env: &[],
        doc: "Bits credited to the kernel per byte fetched (RNDADDENTROPY, needs \
              CAP_SYS_ADMIN, which lokeyd then keeps); 0 mixes with plain writes and credits \
              nothing. Never without upstream.pin.",
    },
];

/// Keys that have no default value: unset, they follow another key (see their docs).
pub const UNSET_BY_DEFAULT: &[&str] = &["chip.credit_bits_per_byte", "hwrng.credit_bits_per_byte"];

/// Variables of the Go project that have no meaning in a single process; accepted, reported as
/// ignored so that an old environment file keeps working.
pub const IGNORED_SEED_VARIABLES: &[&str] = &[
    "DB_IMPLEMENTATION",
    "CONTROLLER_ADDR",
    "FORTUNA_ADDR",
    "TRNG_POLL_INTERVAL_MS",
    "FORTUNA_POLL_INTERVAL_MS",
    "GIN_MODE",
    "DISABLE_AUTO_CONFIG",
    "FORCE_CONFIG",
    "AMPLIFICATION_FACTOR",
];

/// `LOKEY_*` variables that are not configuration keys: read by the binaries themselves.
const NON_KEY_LOKEY_VARIABLES: &[&str] = &["LOKEY_CONFIG"];

/// Where a value came from; errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Built-in default.
    Default,
    /// A line of the configuration file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
    },
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
    /// A run-time setting the daemon stored (`lokey config set`, the REST config endpoints).
    Stored,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("built-in default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Stored => f.write_str("setting stored by lokeyd"),
        }
    }
}

/// Why a configuration was refused. The daemon prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// A key (or `LOKEY_*` variable) the daemon does not know.
    #[error("{origin}: unknown key `{key}`{}", hint.as_ref().map(|h| format!(" (did you mean `{h}`?)")).unwrap_or_default())]
    UnknownKey {
        /// Where it was found.
        origin: Origin,
        /// The unknown key.
        key: String,
        /// The closest known key, when one is close.
        hint: Option<String>,
    },
    /// A value of the wrong type or outside its allowed range.
    #[error("{origin}: key `{key}`: {value} is not allowed: expected {kind}")]
    Invalid {
        /// Where it was found.
        origin: Origin,
        /// The key.
        key: String,
        /// The value, as written.
        value: String,
        /// What is allowed.
        kind: Kind,
    },
    /// Keys that are each valid but do not fit together (`[upstream]` without a pin, …).
    #[error("{origin}: {message}")]
    Combination {
        /// Where the first of the keys was set.
        origin: Origin,
        /// What is wrong, naming the keys, and what to do.
        message: String,
    },
    /// A `[[source]]` table that is wrong as a whole (a key of another kind, a name used
    /// twice, two chips at one address, both forms of the sources given).
    #[error("{origin}: {message}")]
    Source {
        /// Where it was found.
        origin: Origin,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Facts about the process that choose the defaults; [`HostEnv::from_process`] reads them, tests
/// build them by hand.
#[derive(Debug, Clone, Default)]
pub struct HostEnv {
    /// The effective user is root.
    pub root: bool,
    /// The environment variables.
    pub vars: BTreeMap<String, String>,
}

impl HostEnv {
    /// Reads the effective uid and the environment of this process.
    pub fn from_process() -> Self {
        HostEnv {
            root: nix::unistd::geteuid().is_root(),
            vars: std::env::vars().collect(),
        }
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Started by the systemd *system* manager: it sets `INVOCATION_ID` for every service it
    /// runs, and a user manager (`systemctl --user`) sets it too but also sets `MANAGERPID`
    /// (systemd.exec(5), "Environment Variables Set by the Service Manager"). A user service
    /// keeps the per-user paths.
    pub fn under_systemd(&self) -> bool {
        self.var("INVOCATION_ID").is_some() && self.var("MANAGERPID").is_none()
    }

    /// Whether the system paths (`/var/lib/lokey`, `/run/lokey`) are the defaults.
    pub fn system_paths(&self) -> bool {
        self.root || self.under_systemd()
    }

    /// The default data directory (see the module docs).
    pub fn default_data_dir(&self) -> PathBuf {
        // systemd's StateDirectory= exports the directory it made for us.
        if let Some(dir) = self.var("STATE_DIRECTORY") {
            return PathBuf::from(dir.split(':').next().unwrap_or(dir));
        }
        if self.system_paths() {
            return PathBuf::from(SYSTEM_DATA_DIR);
        }
        self.user_state_dir().join("lokey")
    }

    fn user_state_dir(&self) -> PathBuf {
        if let Some(dir) = self.var("XDG_STATE_HOME") {
            return PathBuf::from(dir);
        }
        let home = self.var("HOME").unwrap_or(".");
        Path::new(home).join(".local/state")
    }

    /// The default socket path of a daemon started in this environment.
    pub fn default_socket(&self) -> PathBuf {
        if let Some(dir) = self.var("RUNTIME_DIRECTORY") {
            return Path::new(dir.split(':').next().unwrap_or(dir)).join(SOCKET_FILE_NAME);
        }
        if self.system_paths() {
            return PathBuf::from(SYSTEM_SOCKET_PATH);
        }
        match self.var("XDG_RUNTIME_DIR") {
            Some(dir) => Path::new(dir).join("lokey").join(SOCKET_FILE_NAME),
            // No per-user runtime directory (e.g. `su` or a container): keep the socket
            // with the user's state, which is private to the user too.
            None => self.default_data_dir().join(SOCKET_FILE_NAME),
        }
    }
}

/// The socket paths the CLI tries, in order: `LOKEY_SOCKET` if set (only that), else the path a
/// daemon started by this user would use, then the system daemon's socket.
pub fn socket_candidates(host: &HostEnv) -> Vec<PathBuf> {
    if let Some(path) = host.var("LOKEY_SOCKET") {
        return vec![PathBuf::from(path)];
    }
    let mut paths = vec![host.default_socket()];
    let system = PathBuf::from(SYSTEM_SOCKET_PATH);
    if !paths.contains(&system) {
        paths.push(system);
    }
    paths
}

/// What the loader reads: the file (if any), the environment, and the flags given.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The configuration file and whether it was asked for explicitly (`--config`): an explicit
    /// file must exist, the system default may be absent.
    pub file: Option<(PathBuf, bool)>,
    /// Host facts and environment.
    pub host: HostEnv,
    /// Values from command-line flags: (flag as typed, key path, value).
    pub flags: Vec<(String, String, Value)>,
}

/// A loaded configuration and what the user should be told about it.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration.
    pub config: Config,
    /// Warnings to log at start (ignored variables, …).
    pub warnings: Vec<String>,
    /// Keys set by the environment or a flag: run-time settings stored by the daemon do not
    /// override these.
    pub pinned: Vec<String>,
}

/// The keys that can change while the daemon runs (`lokey config set`, the REST config
/// endpoints); they are persisted in the store and survive restarts. Each takes effect at once:
/// the queue capacity and log level when set, the kernel feeders' policy at their next step,
/// the seed-file interval at the next check (every second), the rest at their next use. What
/// the daemon builds at start — the sources (`chip.*`, `hwrng.*`), whether the kernel is fed
/// at all (`kernel.enabled`), paths, users and listeners — is not here: it needs a restart.
pub const LIVE_KEYS: &[&str] = &[
    "daemon.log_level",
    "api.trng_bytes_per_second",
    "api.trng_burst_bytes",
    "store.trng_queue_size",
    "store.fortuna_queue_size",
    "store.consume",
    "kernel.bits_per_byte",
    "kernel.mix_interval_secs",
    "kernel.mix_bytes",
    "fortuna.seed_interval_secs",
];

impl Loaded {
    /// Applies run-time settings the daemon stored (key → JSON text) over the file and the
    /// defaults, below the environment and flags: precedence is flags > environment > stored >
    /// file > defaults. Keys that are not [`LIVE_KEYS`] or no longer valid are skipped.
    /// Returns one note per stored setting that was not applied, and why.
    pub fn apply_stored<'a>(
        &mut self,
        stored: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        for (key, text) in stored {
            if self.pinned.iter().any(|p| p == key) {
                notes.push(format!(
                    "stored setting {key} = {text} is overridden by the environment or a flag"
                ));
                continue;
            }
            if !LIVE_KEYS.contains(&key) {
                notes.push(format!(
                    "stored setting {key} ignored: not a run-time setting"
                ));
                continue;
            }
            let applied = serde_json::from_str(text)
                .map_err(|e| e.to_string())
                .and_then(|value| {
                    self.config
                        .set(key, &value, Origin::Stored)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = applied {
                notes.push(format!("stored setting {key} = {text} ignored: {e}"));
            }
        }
        notes
    }
}

impl Config {
    /// The built-in defaults for this host.
    pub fn defaults(host: &HostEnv) -> Config {
        Config {
            daemon: DaemonConfig {
                data_dir: host.default_data_dir(),
                socket: host.default_socket(),
                user: "lokey".into(),
                log_level: "info".into(),
                shutdown_timeout_secs: 10,
                write_timeout_secs: 30,
            },
            api: ApiConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                admin_token: String::new(),
                max_concurrent_requests: 256,
                request_timeout_secs: 30,
                max_connections: 256,
                idle_timeout_secs: 60,
                trng_bytes_per_second: 4096,
                trng_burst_bytes: 100_000,
                cors_origins: Vec::new(),
                tls: "off".into(),
                tls_cert: String::new(),
                tls_key: String::new(),
                tls_names: vec!["localhost".into()],
                tls_slot: 1,
            },
            store: StoreConfig {
                trng_queue_size: 100_000,
                fortuna_queue_size: 100_000,
                consume: true,
            },
            chip: ChipConfig {
                mode: "auto".into(),
                i2c_bus: 1,
                address: 0x60,
                emulate_faults: Vec::new(),
                min_entropy: 8.0,
                credit_bits_per_byte: None,
            },
            kernel: KernelConfig {
                enabled: true,
                bits_per_byte: 1,
                mix_interval_secs: 60,
                mix_bytes: 64,
            },
            fortuna: FortunaConfig {
                seed_interval_secs: 600,
                cipher: "auto".into(),
            },
            hwrng: HwrngConfig {
                mode: "auto".into(),
                path: PathBuf::from("/dev/hwrng"),
                min_entropy: 8.0,
                credit_bits_per_byte: None,
            },
            beacon: BeaconConfig {
                enabled: true,
                period_secs: 60,
                retain_days: 365,
                slot: 0,
            },
            upstream: UpstreamConfig {
                url: String::new(),
                pin: String::new(),
                interval_secs: 60,
                bytes: 64,
                credit_bits_per_byte: 0,
            },
            sources: Vec::new(),
        }
    }

    /// Loads and validates the configuration from `sources`.
    ///
    /// # Errors
    ///
    /// [`Error`] naming the file and line, variable or flag of the first bad value.
    pub fn load(sources: &Sources) -> Result<Loaded, Error> {
        let mut warnings = Vec::new();
        let mut merged = to_table(&Config::defaults(&sources.host));
        let mut list: Option<Vec<SourceConfig>> = None;
        // With a source list, a `chip.*` or `hwrng.*` setting would mix the two forms, except
        // `chip.mode = "emulator"` (`--emulate`): every atecc608a source is then emulated.
        let mixes =
            |key: &str, value: &Value, origin: &Origin, list: &mut Option<Vec<SourceConfig>>| {
                let section = key.split('.').next().unwrap_or("");
                match list {
                    Some(list) if key == "chip.mode" && value.as_str() == Some("emulator") => {
                        for s in list.iter_mut().filter(|s| s.kind == "atecc608a") {
                            s.kind = "emulator".into();
                        }
                        Ok(())
                    }
                    Some(_) if section == "chip" || section == "hwrng" => Err(Error::Source {
                        origin: origin.clone(),
                        message: format!(
                            "{key} sets the [{section}] section, but the configuration file lists \
                         its sources as [[source]] tables: set it in the source's table instead"
                        ),
                    }),
                    _ => Ok(()),
                }
            };
        let mut origins: BTreeMap<String, Origin> = BTreeMap::new();

        if let Some((path, explicit)) = &sources.file {
            match std::fs::read_to_string(path) {
                Ok(text) => {
                    let (mut table, lines) = parse_file(path, &text)?;
                    if let Some(value) = table.remove("source") {
                        let line_of = |key: &str| lines.get(key).copied().unwrap_or(1);
                        let at = |line: usize| Origin::File {
                            path: path.clone(),
                            line,
                        };
                        if let Some(section) = ["chip", "hwrng"]
                            .into_iter()
                            .find(|s| table.contains_key(*s))
                        {
                            return Err(Error::Source {
                                origin: at(line_of(section)),
                                message: format!(
                                    "[{section}] and [[source]] are two forms of one setting: \
                                     list every source as a [[source]] (kind atecc608a, \
                                     emulator, hwrng or device), or use [chip] and [hwrng] \
                                     without [[source]]"
                                ),
                            });
                        }
                        // Where each [[source]] table starts, for messages.
                        let origins: Vec<Origin> = text
                            .lines()
                            .enumerate()
                            .filter(|(_, l)| l.trim_start().starts_with("[[source]]"))
                            .map(|(i, _)| at(i + 1))
                            .collect();
                        list = Some(source_list::parse(value, &origins)?);
                    }
                    for (key, value) in flatten(&table, path, &lines)? {
                        origins.insert(key.0.clone(), key.1.clone());
                        check_and_set(&mut merged, &key.0, value, key.1)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {}
                Err(source) => {
                    return Err(Error::Read {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }

        let mut pinned = Vec::new();
        for (key, value, origin) in env_layer(&sources.host, &merged, &mut warnings)? {
            mixes(&key, &value, &origin, &mut list)?;
            origins.insert(key.clone(), origin.clone());
            check_and_set(&mut merged, &key, value, origin)?;
            pinned.push(key);
        }
        for (flag, key, value) in &sources.flags {
            let origin = Origin::Flag(flag.clone());
            mixes(key, value, &origin, &mut list)?;
            origins.insert(key.clone(), origin.clone());
            check_and_set(&mut merged, key, value.clone(), origin)?;
            pinned.push(key.clone());
        }
        if let Some(list) = &list
            && let Ok(value) = Value::try_from(list)
        {
            merged.insert("source".into(), value);
        }

        // Every value was checked against FIELDS; the struct and the table agree (tested), so
        // this only fails on a programming error, reported rather than panicking.
        let config = Config::deserialize(Value::Table(merged)).map_err(|e| Error::Invalid {
            origin: Origin::Default,
            key: "(configuration)".into(),
            value: e.to_string(),
            kind: Kind::Str,
        })?;
        check_upstream(&config, &origins)?;
        if !config.store.consume {
            warnings.push(
                "store.consume is false: TRNG bytes are served without being deleted, so \
                 several clients can receive the same bytes"
                    .into(),
            );
        }
        pinned.sort();
        pinned.dedup();
        Ok(Loaded {
            config,
            warnings,
            pinned,
        })
    }

    /// Bits per byte the kernel is credited for the chip's output (before the rule that the
    /// emulator is never credited): `chip.credit_bits_per_byte`, else `kernel.bits_per_byte`.
    pub fn chip_credit(&self) -> u64 {
        self.chip
            .credit_bits_per_byte
            .unwrap_or(self.kernel.bits_per_byte)
    }

    /// As [`Config::chip_credit`] for the hwrng device (before the rule that a device the
    /// kernel credits itself is never credited again).
    pub fn hwrng_credit(&self) -> u64 {
        self.hwrng
            .credit_bits_per_byte
            .unwrap_or(self.kernel.bits_per_byte)
    }

    /// Whether any configured source may be credited at all (the kernel is fed and some
    /// source's credit is above 0): then lokeyd needs CAP_SYS_ADMIN.
    pub fn may_credit(&self) -> bool {
        if !self.kernel.enabled {
            return false;
        }
        if self.upstream.enabled() && self.upstream.credit_bits_per_byte > 0 {
            return true;
        }
        if !self.sources.is_empty() {
            // The emulator is never credited, whatever its setting.
            return self.sources.iter().any(|s| {
                s.kind != "emulator"
                    && s.credit_bits_per_byte.unwrap_or(self.kernel.bits_per_byte) > 0
            });
        }
        self.chip_credit() > 0 || (self.hwrng.mode != "off" && self.hwrng_credit() > 0)
    }

    /// The value of `key` (`section.key`), as JSON.
    pub fn get(&self, key: &str) -> Option<serde_json::Value> {
        let (section, name) = key.split_once('.')?;
        let value = serde_json::to_value(self).ok()?;
        value.get(section)?.get(name).cloned()
    }

    /// Sets `key` to `value` after the same checks as the file's (type and range);
    /// `origin` names where the value came from in the error.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownKey`] or [`Error::Invalid`]; `self` is unchanged then.
    pub fn set(
        &mut self,
        key: &str,
        value: &serde_json::Value,
        origin: Origin,
    ) -> Result<(), Error> {
        let invalid = || Error::Invalid {
            origin: origin.clone(),
            key: key.to_string(),
            value: value.to_string(),
            kind: field(key).map_or(Kind::Str, |f| f.kind),
        };
        let toml_value = json_to_toml(value).ok_or_else(invalid)?;
        let mut table = to_table(self);
        check_and_set(&mut table, key, toml_value, origin.clone())?;
        *self = Config::deserialize(Value::Table(table)).map_err(|_| invalid())?;
        Ok(())
    }

    /// The configuration as TOML (for `--print-config`); a set admin token is not printed.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        let token_set = !shown.api.admin_token.is_empty();
        shown.api.admin_token.clear();
        let mut text = toml::to_string(&shown).unwrap_or_else(|e| format!("# error: {e}\n"));
        if token_set {
            text = text.replace(
                "admin_token = \"\"",
                "# admin_token is set (not shown)\nadmin_token = \"\"",
            );
        }
        text
    }
}

/// A JSON scalar or list of strings as TOML (JSON's null and objects have no meaning here).
fn json_to_toml(value: &serde_json::Value) -> Option<Value> {
    Some(match value {
        serde_json::Value::Bool(b) => Value::Boolean(*b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64()?),
        },
        serde_json::Value::String(s) => Value::String(s.clone()),
        serde_json::Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|i| i.as_str().map(|s| Value::String(s.into())))
                .collect::<Option<_>>()?,
        ),
        serde_json::Value::Null | serde_json::Value::Object(_) => return None,
    })
}

/// Checks `[upstream]` as a whole: an `https://` URL, a pin (credit is never given without
/// one, and the feeder never connects without one), and a kernel it may feed.
fn check_upstream(config: &Config, origins: &BTreeMap<String, Origin>) -> Result<(), Error> {
    let up = &config.upstream;
    let at = |key: &str| origins.get(key).cloned().unwrap_or(Origin::Default);
    let fail = |key: &str, message: String| {
        Err(Error::Combination {
            origin: at(key),
            message,
        })
    };
    if !up.enabled() {
        if !up.pin.is_empty() || up.credit_bits_per_byte > 0 {
            let key = if up.pin.is_empty() {
                "upstream.credit_bits_per_byte"
            } else {
                "upstream.pin"
            };
            return fail(
                key,
                format!("{key} is set but upstream.url is not: name the device, https://HOST:PORT"),
            );
        }
        return Ok(());
    }
    if up.pin.is_empty() {
        let credit = if up.credit_bits_per_byte > 0 {
            format!(
                " (and upstream.credit_bits_per_byte = {} is never given without one)",
                up.credit_bits_per_byte
            )
        } else {
            String::new()
        };
        return fail(
            "upstream.url",
            format!(
                "upstream.url is set but upstream.pin is not{credit}: the feeder talks only to \
                 the device whose key it pins; set upstream.pin = \"sha256:…\" as `lokey device \
                 pubkey` prints it on the device"
            ),
        );
    }
    let pin = match crate::remote::Pin::parse(&up.pin) {
        Ok(pin) => pin,
        Err(e) => return fail("upstream.pin", format!("upstream.pin: {e}")),
    };
    if let Err(e) = crate::remote::Remote::new(
        &up.url,
        crate::remote::Trust::Pin(pin),
        std::time::Duration::from_secs(1),
    ) {
        return fail("upstream.url", format!("upstream.url: {e}"));
    }
    if !config.kernel.enabled {
        return fail(
            "upstream.url",
            "upstream.url is set but kernel.enabled is false (--no-credit): the upstream \
             feeder only feeds the kernel pool; turn one of them off"
                .into(),
        );
    }
    Ok(())
}

/// Serializes the defaults into a table (infallible for this struct: only plain values).
fn to_table(config: &Config) -> Table {
    match Value::try_from(config) {
        Ok(Value::Table(t)) => t,
        _ => Table::new(),
    }
}

/// Parses the file into a table and a map from key path to 1-based line.
fn parse_file(path: &Path, text: &str) -> Result<(Table, BTreeMap<String, usize>), Error> {
    let syntax = |span: Option<std::ops::Range<usize>>, message: &str| {
        let (line, column) = line_col(text, span.map_or(0, |s| s.start));
        Error::Syntax {
            path: path.to_owned(),
            line,
            column,
            message: message.trim().to_string(),
        }
    };
    let doc = toml::de::DeTable::parse(text).map_err(|e| syntax(e.span(), e.message()))?;
    let mut lines = BTreeMap::new();
    collect_lines(text, "", doc.get_ref(), &mut lines);
    let table: Table = toml::from_str(text).map_err(|e| syntax(e.span(), e.message()))?;
    Ok((table, lines))
}

fn collect_lines(
    text: &str,
    prefix: &str,
    table: &toml::de::DeTable<'_>,
    out: &mut BTreeMap<String, usize>,
) {
    for (key, value) in table.iter() {
        let path = format!("{prefix}{}", key.get_ref());
        out.insert(path.clone(), line_col(text, key.span().start).0);
        if let toml::de::DeValue::Table(inner) = value.get_ref() {
            collect_lines(text, &format!("{path}."), inner, out);
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// A dotted key and where it was written.
type KeyAt = (String, Origin);

/// Flattens a parsed file into `(path, origin) → value` pairs, refusing unknown sections.
fn flatten(
    table: &Table,
    path: &Path,
    lines: &BTreeMap<String, usize>,
) -> Result<Vec<(KeyAt, Value)>, Error> {
    let origin = |key: &str| Origin::File {
        path: path.to_owned(),
        line: lines.get(key).copied().unwrap_or(1),
    };
    let mut out = Vec::new();
    for (section, value) in table {
        let Value::Table(inner) = value else {
            return Err(unknown(origin(section), section));
        };
        if !FIELDS
            .iter()
            .any(|f| f.path.split('.').next() == Some(section))
        {
            return Err(unknown(origin(section), section));
        }
        for (key, value) in inner {
            let full = format!("{section}.{key}");
            out.push(((full.clone(), origin(&full)), value.clone()));
        }
    }
    Ok(out)
}

fn unknown(origin: Origin, key: &str) -> Error {
    let hint = FIELDS
        .iter()
        .map(|f| (edit_distance(f.path, key), f.path))
        .chain(FIELDS.iter().map(|f| {
            (
                edit_distance(f.path.rsplit('.').next().unwrap_or(""), key),
                f.path,
            )
        }))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, p)| p.to_string());
    Error::UnknownKey {
        origin,
        key: key.to_string(),
        hint,
    }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The field for a dotted key.
pub fn field(path: &str) -> Option<&'static Field> {
    FIELDS.iter().find(|f| f.path == path)
}

/// The generic environment name of a key: `store.trng_queue_size` → `LOKEY_STORE_TRNG_QUEUE_SIZE`.
pub fn env_name(path: &str) -> String {
    format!("LOKEY_{}", path.replace('.', "_").to_ascii_uppercase())
}

/// Checks `value` against the key's [`Kind`] and stores it in `table`.
fn check_and_set(table: &mut Table, key: &str, value: Value, origin: Origin) -> Result<(), Error> {
    let Some(field) = field(key) else {
        return Err(unknown(origin, key));
    };
    let value = check_value(field, value, &origin)?;
    let (section, name) = key.split_once('.').unwrap_or((key, ""));
    if let Some(Value::Table(inner)) = table.get_mut(section) {
        inner.insert(name.to_string(), value);
    }
    Ok(())
}

/// Checks `value` against `field`'s [`Kind`]; returns it as stored (an integer given for a
/// real-valued key becomes a float).
fn check_value(field: &Field, value: Value, origin: &Origin) -> Result<Value, Error> {
    let key = field.path;
    let invalid = |value: &Value| Error::Invalid {
        origin: origin.clone(),
        key: key.to_string(),
        value: value.to_string(),
        kind: field.kind,
    };
    // A real-valued key takes an integer as that number (`min_entropy = 8`), stored as a float.
    let value = match (&field.kind, value) {
        (Kind::Real { .. }, Value::Integer(i)) => Value::Float(i as f64),
        (_, value) => value,
    };
    let ok = match (&field.kind, &value) {
        (Kind::Int { min, max }, Value::Integer(i)) => (*min..=*max).contains(i),
        (Kind::Real { above, max }, Value::Float(x)) => {
            x.is_finite() && *x > *above as f64 && *x <= *max as f64
        }
        (Kind::Bool, Value::Boolean(_)) | (Kind::Str, Value::String(_)) => true,
        (Kind::Path, Value::String(s)) => !s.is_empty(),
        (Kind::SocketAddr, Value::String(s)) => s.parse::<SocketAddr>().is_ok(),
        (Kind::Choice(choices), Value::String(s)) => choices.contains(&s.as_str()),
        (Kind::StrList, Value::Array(items)) => items.iter().all(Value::is_str),
        (Kind::ChoiceList(choices), Value::Array(items)) => items
            .iter()
            .all(|i| i.as_str().is_some_and(|s| choices.contains(&s))),
        _ => false,
    };
    if !ok {
        return Err(invalid(&value));
    }
    Ok(value)
}

/// Parses an environment variable's text as a value of `kind`.
fn parse_env_value(kind: Kind, text: &str) -> Option<Value> {
    Some(match kind {
        Kind::Int { .. } => Value::Integer(parse_int(text)?),
        Kind::Real { .. } => Value::Float(text.trim().parse().ok()?),
        Kind::Bool => Value::Boolean(match text.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => true,
            "0" | "false" | "no" | "off" => false,
            _ => return None,
        }),
        Kind::Choice(_) => Value::String(text.to_ascii_lowercase()),
        Kind::StrList | Kind::ChoiceList(_) => Value::Array(
            text.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.into()))
                .collect(),
        ),
        Kind::Str | Kind::Path | Kind::SocketAddr => Value::String(text.into()),
    })
}

/// Decimal, or hexadecimal with `0x` (for I2C addresses).
fn parse_int(text: &str) -> Option<i64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// The environment's values, in the order they apply (Go names before `LOKEY_*` names).
fn env_layer(
    host: &HostEnv,
    merged: &Table,
    warnings: &mut Vec<String>,
) -> Result<Vec<(String, Value, Origin)>, Error> {
    let mut out = Vec::new();
    for var in IGNORED_SEED_VARIABLES {
        if host.var(var).is_some() {
            warnings.push(format!(
                "environment variable {var} is ignored: it configured the Go project's separate \
                 services, which lokeyd replaces with one process"
            ));
        }
    }
    // PORT (Go project) keeps the configured address and replaces only the port.
    if let Some(port) = host.var("PORT") {
        let origin = Origin::Env("PORT".into());
        let current = merged
            .get("api")
            .and_then(|a| a.get("listen"))
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<SocketAddr>().ok())
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
        let Ok(port) = port.trim().parse::<u16>() else {
            return Err(Error::Invalid {
                origin,
                key: "api.listen".into(),
                value: port.to_string(),
                kind: Kind::Int { min: 0, max: 65535 },
            });
        };
        let addr = SocketAddr::new(current.ip(), port);
        out.push(("api.listen".into(), Value::String(addr.to_string()), origin));
    }
    for field in FIELDS {
        let generic = env_name(field.path);
        let names = field
            .env
            .iter()
            .copied()
            .chain(std::iter::once(generic.as_str()));
        for name in names {
            let Some(text) = host.var(name) else { continue };
            let origin = Origin::Env(name.to_string());
            let value = parse_env_value(field.kind, text).ok_or_else(|| Error::Invalid {
                origin: origin.clone(),
                key: field.path.into(),
                value: format!("{text:?}"),
                kind: field.kind,
            })?;
            out.push((field.path.to_string(), value, origin));
        }
    }
    // Any other LOKEY_ variable is a typo of one of the above.
    for name in host.vars.keys().filter(|k| k.starts_with("LOKEY_")) {
        let known = NON_KEY_LOKEY_VARIABLES.contains(&name.as_str())
            || FIELDS
                .iter()
                .any(|f| env_name(f.path) == *name || f.env.contains(&name.as_str()));
        if !known {
            let hint = FIELDS
                .iter()
                .flat_map(|f| {
                    f.env
                        .iter()
                        .map(|s| s.to_string())
                        .chain(std::iter::once(env_name(f.path)))
                })
                .filter(|n| n.starts_with("LOKEY_"))
                .map(|n| (edit_distance(&n, name), n))
                .filter(|(d, _)| *d <= 3)
                .min()
                .map(|(_, n)| n);
            return Err(Error::UnknownKey {
                origin: Origin::Env(name.clone()),
                key: name.clone(),
                hint,
            });
        }
    }
    Ok(out)
}

/// The annotated example configuration file: every key with its documentation, allowed values,
/// environment variables and default (for this host), commented out.
pub fn example_file(host: &HostEnv) -> String {
    let defaults = to_table(&Config::defaults(host));
    let mut out = String::from(
        "# lokeyd configuration (lokeyd.toml(5)).\n\
         # Every key is optional; the values shown commented out are the defaults.\n\
         # Precedence: command-line flags > environment variables > this file > defaults.\n",
    );
    let mut section = "";
    for f in FIELDS {
        let (sec, key) = f.path.split_once('.').unwrap_or((f.path, ""));
        if sec != section {
            out.push_str(&format!("\n[{sec}]\n"));
            section = sec;
        }
        out.push_str(&format!("\n# {}\n# Allowed: {}.", f.doc, f.kind));
        let mut env: Vec<String> = f.env.iter().map(|s| s.to_string()).collect();
        env.push(env_name(f.path));
        out.push_str(&format!(" Environment: {}.\n", env.join(", ")));
        match defaults.get(sec).and_then(|s| s.get(key)) {
            Some(value) => out.push_str(&format!("#{key} = {value}\n")),
            // Unset by default: show the value it then follows.
            None => {
                let follows = defaults
                    .get("kernel")
                    .and_then(|s| s.get("bits_per_byte"))
                    .map(ToString::to_string)
                    .unwrap_or_default();
                out.push_str(&format!(
                    "# Unset by default: follows kernel.bits_per_byte.\n#{key} = {follows}\n"
                ));
            }
        }
    }
    out.push_str(
        "\n# [[source]] tables list the sources instead of [chip] and [hwrng] (not both):\n",
    );
    for (f, kinds) in SOURCE_FIELDS {
        let key = f.path.split_once('.').map_or(f.path, |(_, k)| k);
        let takes = if kinds.is_empty() {
            String::from("every kind")
        } else {
            kinds.join(", ")
        };
        out.push_str(&format!("#   {key} ({takes}): {}\n", f.doc));
    }
    out.push_str(
        "# For example, two chips on bus 1 and a USB TRNG:\n         # [[source]]\n# name = \"chip-a\"\n# kind = \"atecc608a\"\n# address = 0x60\n         # [[source]]\n# name = \"chip-b\"\n# kind = \"atecc608a\"\n# address = 0x61\n         # [[source]]\n# name = \"usb-trng\"\n# kind = \"device\"\n# path = \"/dev/ttyACM0\"\n         # credit_bits_per_byte = 2\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_a_key_of_the_struct_and_back() {
        let table = to_table(&Config::defaults(&HostEnv::default()));
        let mut keys: Vec<String> = table
            .iter()
            .flat_map(|(s, v)| {
                v.as_table()
                    .into_iter()
                    .flat_map(move |t| t.keys().map(move |k| format!("{s}.{k}")))
            })
            .collect();
        keys.extend(UNSET_BY_DEFAULT.iter().map(|k| k.to_string()));
        keys.sort();
        let mut fields: Vec<String> = FIELDS.iter().map(|f| f.path.to_string()).collect();
        fields.sort();
        assert_eq!(keys, fields);
    }

    #[test]
    fn defaults_are_within_their_own_ranges() {
        let host = HostEnv::default();
        let table = to_table(&Config::defaults(&host));
        let mut scratch = table.clone();
        for f in FIELDS
            .iter()
            .filter(|f| !UNSET_BY_DEFAULT.contains(&f.path))
        {
            let (s, k) = f.path.split_once('.').unwrap();
            let v = table[s][k].clone();
            check_and_set(&mut scratch, f.path, v, Origin::Default)
                .unwrap_or_else(|e| panic!("default of {} refused: {e}", f.path));
        }
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("listen", "listne"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("trng_queue_size", "trng_queue_size"), 0);
    }

    #[test]
    fn line_col_is_one_based() {
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }
}
