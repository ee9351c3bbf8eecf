//! Command-line flags of `lokeyd` (clap). Flags are the highest-precedence configuration layer;
//! [`Args::overrides`] turns them into key/value pairs for [`lokey::config::Config::load`].

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use toml::Value;

/// lokeyd: hardware entropy from an ATECC608A for the kernel, Fortuna and the network.
#[derive(Debug, Clone, Parser)]
#[command(name = "lokeyd", version, about, long_about = None)]
pub struct Args {
    /// Configuration file [default: /etc/lokey/lokeyd.toml, if it exists].
    #[arg(long, value_name = "PATH", env = "LOKEY_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory of the durable store (overrides daemon.data_dir).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address and port of the REST API (overrides api.listen) [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Path of the Unix socket for the lokey CLI (overrides daemon.socket).
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// User to run as when started as root (overrides daemon.user) [default: lokey].
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,

    /// Use the ATECC608A emulator even if a chip is present (chip.mode = "emulator").
    #[arg(long)]
    pub emulate: bool,

    /// Start the emulator with this fault active (repeatable; see FAULTS in lokeyd(8)).
    #[arg(long, value_name = "NAME")]
    pub emulate_fault: Vec<String>,

    /// Never touch the kernel's entropy pool (kernel.enabled = false).
    #[arg(long)]
    pub no_credit: bool,

    /// Print the effective configuration as TOML, with the settings stored at run time, and
    /// exit.
    #[arg(long)]
    pub print_config: bool,

    /// Print an annotated configuration file with every key and its default, and exit.
    #[arg(long)]
    pub print_example_config: bool,

    /// For tests and demonstrations: a beacon period of MS milliseconds (500 or more: a pulse
    /// takes the chip about 250 ms at its datasheet maximum times) instead of
    /// beacon.period_secs. Pulses say their period, so verifiers see it.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(500..=3_600_000))]
    pub beacon_period_ms: Option<u64>,
}

impl Args {
    /// The configuration keys these flags set, as `(flag, key, value)`.
    pub fn overrides(&self) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        let path = |p: &PathBuf| Value::String(p.display().to_string());
        if let Some(dir) = &self.data_dir {
            out.push(("--data-dir".into(), "daemon.data_dir".into(), path(dir)));
        }
        if let Some(listen) = &self.listen {
            out.push((
                "--listen".into(),
                "api.listen".into(),
                Value::String(listen.to_string()),
            ));
        }
        if let Some(socket) = &self.socket {
            out.push(("--socket".into(), "daemon.socket".into(), path(socket)));
        }
        if let Some(user) = &self.user {
            out.push((
                "--user".into(),
                "daemon.user".into(),
                Value::String(user.clone()),
            ));
        }
        if self.emulate {
            out.push((
                "--emulate".into(),
                "chip.mode".into(),
                Value::String("emulator".into()),
            ));
        }
        if !self.emulate_fault.is_empty() {
            let faults = self
                .emulate_fault
                .iter()
                .map(|f| Value::String(f.clone()))
                .collect();
            out.push((
                "--emulate-fault".into(),
                "chip.emulate_faults".into(),
                Value::Array(faults),
            ));
        }
        if self.no_credit {
            out.push((
                "--no-credit".into(),
                "kernel.enabled".into(),
                Value::Boolean(false),
            ));
        }
        out
    }
}
