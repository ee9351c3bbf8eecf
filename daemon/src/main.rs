//! `lokeyd`: parses flags, loads the configuration and runs [`lokeyd::start`].
//!
//! Exit status: 0 after a clean shutdown, 1 when the daemon fails, 2 when the configuration or
//! the command line is invalid (nothing has been written then).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use lokey::config::{Config, HostEnv, SYSTEM_CONFIG_PATH, Sources, example_file};
use lokeyd::args::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let host = HostEnv::from_process();
    if args.print_example_config {
        print!("{}", example_file(&host));
        return ExitCode::SUCCESS;
    }
    let sources = sources(&args, &host);
    let loaded = match Config::load(&sources) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("lokeyd: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        // Settings stored at run time override the file, as at a start.
        let mut loaded = loaded;
        for note in lokeyd::apply_stored_for_print(&mut loaded) {
            eprintln!("lokeyd: {note}");
        }
        print!("{}", loaded.config.to_toml());
        return ExitCode::SUCCESS;
    }
    let log = lokeyd::logging::init(&loaded.config.daemon.log_level);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let private_socket = !host.system_paths();
    // Before any thread exists: bind, open devices, drop privileges.
    if let Some(ms) = args.beacon_period_ms {
        lokeyd::set_beacon_period_override(ms);
    }
    let prepared = match lokeyd::prepare(loaded, private_socket) {
        Ok(prepared) => prepared,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lokeyd")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let reload = move || match Config::load(&sources) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                tracing::warn!("{warning}");
            }
            Some(loaded)
        }
        Err(e) => {
            tracing::error!("configuration not reloaded: {e}");
            None
        }
    };
    match runtime.block_on(lokeyd::start(prepared, reload, log)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn sources(args: &Args, host: &HostEnv) -> Sources {
    let (path, explicit) = match &args.config {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(SYSTEM_CONFIG_PATH), false),
    };
    Sources {
        file: Some((path, explicit)),
        host: host.clone(),
        flags: args.overrides(),
    }
}
