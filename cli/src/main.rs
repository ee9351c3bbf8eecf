//! `lokey`: the command-line client of `lokeyd`.
//!
//! Exit status: 0 ok, 1 a negative answer (e.g. `lokey health` when degraded, a failed
//! self-test), 2 an error. A closed pipe (`lokey bytes | head`) ends quietly with 0.
#![forbid(unsafe_code)]

mod beacon;
mod commands;
mod remote;
mod seed;
mod size;
mod source;

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lokey::proto::DataSource;

/// lokey: hardware randomness from lokeyd, for people and scripts.
#[derive(Debug, Parser)]
#[command(name = "lokey", version, about, long_about = None)]
pub struct Cli {
    /// Socket of the daemon [default: the user's lokeyd, then /run/lokey/lokey.sock].
    #[arg(long, global = true, value_name = "PATH", env = "LOKEY_SOCKET")]
    pub socket: Option<PathBuf>,

    /// A remote lokeyd's REST API over TLS, https://HOST:PORT (bytes, int, float, gauss, uuid,
    /// password, shuffle, sample, status, health, beacon last/get, seed-kernel). Never plain
    /// HTTP.
    #[arg(long, global = true, value_name = "URL", env = "LOKEY_REMOTE")]
    pub remote: Option<String>,

    /// The remote's key: sha256:HEX, the SHA-256 of its certificate's DER SubjectPublicKeyInfo
    /// (`lokey device pubkey` / GET /api/v1/tls on the device).
    #[arg(long, global = true, value_name = "sha256:HEX", env = "LOKEY_PIN")]
    pub pin: Option<String>,

    /// A PEM CA certificate that issued the remote's certificate (instead of a pin).
    #[arg(long, global = true, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

/// Where random bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// Fortuna, seeded from the hardware: fast, endless.
    Fortuna,
    /// Raw hardware random data from the durable queue: scarce (about 1 kB/s), consumed.
    Trng,
}

impl Source {
    fn proto(self) -> DataSource {
        match self {
            Source::Fortuna => DataSource::Fortuna,
            Source::Trng => DataSource::Trng,
        }
    }
}

/// The source option shared by the generators.
#[derive(Debug, Args)]
pub struct SourceArg {
    /// Where the random bytes come from.
    #[arg(long, value_enum, default_value_t = Source::Fortuna)]
    pub source: Source,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write random bytes to stdout or a file (endless without SIZE).
    Bytes {
        /// How many bytes: 32, 1K, 1M, 4GiB, 2GB, … (K = 1024, KB = 1000).
        #[arg(value_parser = size::parse)]
        size: Option<u64>,
        /// Write to FILE (created with mode 0600) instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Lowercase hexadecimal, two digits per byte.
        #[arg(long, conflicts_with = "base64")]
        hex: bool,
        /// Standard base64 with padding.
        #[arg(long)]
        base64: bool,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print uniform random integers, one per line (no modulo bias).
    Int {
        /// How many.
        #[arg(short, default_value_t = 1)]
        n: usize,
        /// Smallest value.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        min: i64,
        /// Largest value.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        max: i64,
        /// No value twice (sampling without replacement).
        #[arg(long)]
        unique: bool,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print uniform random numbers in [0, 1).
    Float {
        /// How many.
        #[arg(short, default_value_t = 1)]
        n: usize,
        /// Exactly this many decimal places, every value equally likely.
        #[arg(long, value_name = "DIGITS")]
        places: Option<u32>,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print normally distributed random numbers.
    Gauss {
        /// How many.
        #[arg(short, default_value_t = 1)]
        n: usize,
        /// Mean.
        #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
        mean: f64,
        /// Standard deviation.
        #[arg(long, default_value_t = 1.0)]
        stddev: f64,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print random (version 4) UUIDs.
    Uuid {
        /// How many.
        #[arg(short, default_value_t = 1)]
        n: usize,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print random passwords; their entropy goes to stderr.
    Password {
        /// Characters per password.
        #[arg(short, long, default_value_t = 20)]
        length: usize,
        /// A named character set: alnum, alpha, lower, upper, digits, hex, base64url, printable.
        #[arg(long, default_value = "alnum", conflicts_with = "chars")]
        charset: String,
        /// Draw from exactly these characters (duplicates are ignored).
        #[arg(long, value_name = "CHARACTERS")]
        chars: Option<String>,
        /// How many passwords.
        #[arg(short, default_value_t = 1)]
        n: usize,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print the lines of the files (or stdin) in a random order.
    Shuffle {
        /// Files to read; stdin when none.
        files: Vec<PathBuf>,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print K distinct random lines of the files (or stdin).
    Sample {
        /// How many lines.
        #[arg(short)]
        n: usize,
        /// Files to read; stdin when none.
        files: Vec<PathBuf>,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Show the daemon's status: sources, queue, Fortuna, kernel feeding, store.
    Status {
        /// Print the status document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check the daemon's health: exit 0 when ok, 1 when degraded.
    Health {
        /// Print the health document as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Seed the kernel pool once from a remote lokey device (--remote, --pin).
    ///
    /// Fetches bytes over pinned TLS and mixes them into /dev/random; credits them only with
    /// --credit. For the first boot of a VM or a container.
    SeedKernel {
        /// Bytes to fetch and mix, 1 to 4096.
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=4096))]
        bytes: u16,
        /// Credit the bytes to the kernel, BITS per byte (default 8 when given without a
        /// value): RNDADDENTROPY, needs CAP_SYS_ADMIN (root) and --pin.
        #[arg(long, value_name = "BITS", num_args = 0..=1, default_missing_value = "8",
              value_parser = clap::value_parser!(u8).range(1..=8))]
        credit: Option<u8>,
    },
    /// Read or change the daemon's settings.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Inspect or provision the ATECC608A.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Read the chip-signed randomness beacon.
    #[command(subcommand)]
    Beacon(BeaconCommand),
    /// Register a draw the beacon decides, wait for it, print the values, keep the receipt.
    #[command(subcommand)]
    Draw(DrawCommand),
    /// Verify beacon pulses offline (exit 0 valid, 1 invalid, 2 error).
    ///
    /// Checks signatures, chain links, precommitments and gapless indexes.
    Verify {
        /// A pulse file (`lokey beacon … --json`, the REST API's answers), or - for stdin.
        file: PathBuf,
        /// The beacon's public key: hex X‖Y, a PEM file or PEM text (pin it from a trusted
        /// source; without it the key written in the file is used, with a warning).
        #[arg(long, value_name = "KEY")]
        pubkey: Option<String>,
    },
    /// Test data from the daemon: FIPS 140-2 block tests and SP 800-90B health tests.
    Selftest {
        /// How many bytes to test (at least 2500, one FIPS block).
        #[arg(value_parser = size::parse, default_value = "1M")]
        size: u64,
        #[command(flatten)]
        source: SourceArg,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print one setting, or every setting that can change at run time.
    Get {
        /// A key such as store.consume (see lokeyd.toml(5)).
        key: Option<String>,
    },
    /// Change a setting at run time; it is stored and survives restarts (root or lokeyd's user).
    Set {
        /// A key such as store.trng_queue_size.
        key: String,
        /// The new value (numbers, true/false and strings as written).
        value: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Show the chip: revision, serial number, lock state, emulated or not.
    Info {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lock the chip's configuration zone so its RNG works. IRREVERSIBLE.
    Lock {
        /// The chip's serial number, confirming which chip to lock (asked for when omitted).
        #[arg(long, value_name = "SERIAL")]
        serial: Option<String>,
    },
    /// Change the chip's I2C address (only before the lock). PERMANENT once locked.
    SetAddress {
        /// The new 7-bit address: 0x08 to 0x77 (hex with 0x, or decimal).
        #[arg(value_parser = parse_address)]
        address: u8,
        /// The chip's serial number, confirming which chip to change (asked for when omitted).
        #[arg(long, value_name = "SERIAL")]
        serial: Option<String>,
    },
    /// Create a new signing key inside the chip (beacon.slot). DESTROYS the slot's old key.
    Keygen {
        /// The chip's serial number, confirming which chip (asked for when omitted).
        #[arg(long, value_name = "SERIAL")]
        serial: Option<String>,
        /// The TLS key's slot (api.tls_slot) rather than the beacon's.
        #[arg(long)]
        tls: bool,
    },
    /// Write a CSR for the chip's TLS key (signed by the chip) for a CA to sign.
    Csr {
        /// A name for the certificate (DNS name or IP address); repeat for more. Default:
        /// api.tls_names.
        #[arg(long = "name", value_name = "NAME")]
        names: Vec<String>,
        /// The subject's common name (default: the first name).
        #[arg(long, value_name = "CN")]
        common_name: Option<String>,
        /// Write the request to FILE instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show the chip's public signing key, its key id and pin.
    Pubkey {
        /// Print the PEM SubjectPublicKeyInfo only.
        #[arg(long)]
        pem: bool,
        /// Print as JSON.
        #[arg(long, conflicts_with = "pem")]
        json: bool,
    },
}

/// What every draw command takes.
#[derive(Debug, Args)]
pub struct DrawOptions {
    /// What the draw is for (published with it).
    #[arg(long)]
    pub label: String,
    /// A nonce of the client's own, hex.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Write the receipt (JSON) to FILE.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Register and print the id without waiting for the decision.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum DrawCommand {
    /// Draw integers.
    Int {
        /// How many.
        #[arg(short, default_value_t = 1)]
        n: u32,
        /// Smallest value.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
        min: i64,
        /// Largest value.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
        max: i64,
        /// No value twice.
        #[arg(long)]
        unique: bool,
        #[command(flatten)]
        options: DrawOptions,
    },
    /// Draw K distinct lines of the files (or stdin).
    Sample {
        /// How many lines.
        #[arg(short)]
        k: u32,
        /// Files to read; stdin when none.
        files: Vec<PathBuf>,
        #[command(flatten)]
        options: DrawOptions,
    },
    /// Put the lines of the files (or stdin) in a drawn order.
    Shuffle {
        /// Files to read; stdin when none.
        files: Vec<PathBuf>,
        #[command(flatten)]
        options: DrawOptions,
    },
    /// Look up a draw by id; print its values when decided.
    Get {
        /// The id the registration printed.
        id: String,
        /// Write the receipt (JSON) to FILE.
        #[arg(short = 'o', long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BeaconCommand {
    /// Show the newest pulse.
    Last {
        /// Print `{"pulse": …}` as one JSON line (a pulse file for `lokey verify`).
        #[arg(long)]
        json: bool,
    },
    /// Show pulse INDEX of the newest chain (or of --chain).
    Get {
        /// The pulse index.
        index: u64,
        /// The chain index.
        #[arg(long)]
        chain: Option<u64>,
        /// Print as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Print each new pulse as it is published, until interrupted.
    Watch {
        /// One JSON line per pulse (a pulse file for `lokey verify`).
        #[arg(long)]
        json: bool,
    },
    /// Print a run of pulses of one chain as a pulse file (JSON).
    Run {
        /// The chain index.
        chain: u64,
        /// The first pulse index.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// How many pulses, at most 1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
    },
}

/// A 7-bit I2C address: `0x61` or `97`.
fn parse_address(text: &str) -> Result<u8, String> {
    let value = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|_| format!("{text:?} is not an address: write it as 0x61 or 97"))?;
    if !(0x08..=0x77).contains(&value) {
        return Err(format!(
            "{value:#04x} is outside the usable 7-bit range 0x08 to 0x77"
        ));
    }
    Ok(value)
}

/// What a command concluded.
pub enum Outcome {
    /// Success.
    Ok,
    /// A negative answer (exit 1).
    Negative,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(&cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lokey: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether the error is stdout's reader having gone away. A broken pipe on the daemon's socket
/// is a [`lokey::client::Error`] and stays an error: the daemon closed the connection.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    if e.chain().any(|c| c.is::<lokey::client::Error>()) {
        return false;
    }
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
