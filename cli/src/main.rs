//! `lokey`: the command-line client of `lokeyd`.
//!
//! Exit status: 0 ok, 1 a negative answer (e.g. `lokey health` when degraded), 2 an error.
//! A closed pipe (`lokey … | head`) ends quietly with 0.
#![forbid(unsafe_code)]

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lokey::client::Client;
use lokey::config::{HostEnv, socket_candidates};
use lokey::proto::Request;
use serde_json::Value;

/// lokey: hardware randomness from lokeyd, for people and scripts.
#[derive(Debug, Parser)]
#[command(name = "lokey", version, about, long_about = None)]
struct Cli {
    /// Socket of the daemon [default: the user's lokeyd, then /run/lokey/lokey.sock].
    #[arg(long, global = true, value_name = "PATH", env = "LOKEY_SOCKET")]
    socket: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the daemon's status: queue, store, sources.
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
}

/// What a command concluded.
enum Outcome {
    Ok,
    Negative,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Negative) => ExitCode::from(1),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lokey: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let paths = match &cli.socket {
        Some(path) => vec![path.clone()],
        None => socket_candidates(&HostEnv::from_process()),
    };
    Ok(Client::connect_any(&paths)?)
}

fn run(cli: &Cli) -> anyhow::Result<Outcome> {
    let mut out = io::stdout().lock();
    match &cli.command {
        Command::Status { json } => {
            let status = connect(cli)?.call(&Request::Status)?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
            } else {
                print_status(&mut out, &status)?;
            }
            Ok(Outcome::Ok)
        }
        Command::Health { json } => {
            let health = connect(cli)?.call(&Request::Health)?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&health)?)?;
            } else {
                writeln!(out, "{}", health["status"].as_str().unwrap_or("unknown"))?;
                if let Some(details) = health["details"].as_object() {
                    for (name, ok) in details {
                        let state = if ok.as_bool() == Some(true) {
                            "ok"
                        } else {
                            "FAILING"
                        };
                        writeln!(out, "  {name:<12} {state}")?;
                    }
                }
            }
            Ok(if health["status"] == "ok" {
                Outcome::Ok
            } else {
                Outcome::Negative
            })
        }
    }
}

fn print_status(out: &mut impl Write, s: &Value) -> io::Result<()> {
    let d = &s["daemon"];
    writeln!(
        out,
        "lokeyd {} (pid {}), up {}",
        d["version"].as_str().unwrap_or("?"),
        d["pid"],
        duration(d["uptime_secs"].as_u64().unwrap_or(0))
    )?;
    let q = &s["trng"];
    writeln!(
        out,
        "trng queue   {} of {} items ({:.1}%), {} consumed, {} dropped",
        q["queue_current"],
        q["queue_capacity"],
        q["queue_percentage"].as_f64().unwrap_or(0.0),
        q["consumed_count"],
        q["queue_dropped"]
    )?;
    let db = &s["database"];
    writeln!(
        out,
        "store        {} in {}",
        db["size_human"].as_str().unwrap_or("?"),
        db["path"].as_str().unwrap_or("?")
    )
}

fn duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86_400, s % 86_400 / 3600),
    }
}
