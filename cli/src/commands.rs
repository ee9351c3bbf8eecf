//! What each command does.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use lokey::client::Client;
use lokey::config::{HostEnv, socket_candidates};
use lokey::generate;
use lokey::proto::Request;
use serde_json::Value;

use crate::remote;
use crate::source::DaemonSource;
use crate::{
    BeaconCommand, Cli, Command, ConfigCommand, DeviceCommand, DrawCommand, Outcome, Source, beacon,
};

fn paths(cli: &Cli) -> Vec<PathBuf> {
    match &cli.socket {
        Some(path) => vec![path.clone()],
        None => socket_candidates(&HostEnv::from_process()),
    }
}

fn connect(cli: &Cli) -> anyhow::Result<Client> {
    Ok(Client::connect_any(&paths(cli))?)
}

/// Random bytes for the generators: the local daemon's socket, or `--remote`.
fn random_source(cli: &Cli, source: Source) -> anyhow::Result<AnySource> {
    if let Some(remote) = remote::from_cli(cli)? {
        return Ok(AnySource::Remote(remote::RemoteSource::new(remote, source)));
    }
    let paths = paths(cli);
    Ok(AnySource::Local(DaemonSource::new(
        move || Client::connect_any(&paths),
        source.proto(),
    )))
}

/// Either source of random bytes.
enum AnySource {
    Local(DaemonSource),
    Remote(remote::RemoteSource),
}

impl generate::ByteSource for AnySource {
    type Error = anyhow::Error;

    fn fill(&mut self, out: &mut [u8]) -> anyhow::Result<()> {
        match self {
            AnySource::Local(s) => Ok(s.fill(out)?),
            AnySource::Remote(s) => Ok(s.fill(out)?),
        }
    }
}

/// A generator's error: a bad parameter is the user's, a source error the daemon's.
fn gen_err(e: generate::Error<anyhow::Error>) -> anyhow::Error {
    match e {
        generate::Error::Invalid(message) => anyhow::anyhow!(message),
        generate::Error::Source(e) => e.context("random source failed"),
    }
}

/// Refuses a command that has no remote form rather than running it on the local daemon.
fn local_only(cli: &Cli) -> anyhow::Result<()> {
    if cli.remote.is_some() {
        bail!(
            "this command is not available with --remote (remote: bytes, int, float, gauss, \
             uuid, password, shuffle, sample, status, health, beacon last/get, seed-kernel)"
        );
    }
    Ok(())
}

/// Runs the command.
///
/// # Errors
///
/// What went wrong, with what to do where that is known.
pub fn run(cli: &Cli) -> anyhow::Result<Outcome> {
    let remote = remote::from_cli(cli)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let outcome = match &cli.command {
        Command::Bytes {
            size,
            output,
            hex,
            base64,
            source,
        } => bytes(
            cli,
            *size,
            output.as_ref(),
            *hex,
            *base64,
            source.source,
            &mut out,
        )?,
        Command::Int {
            n,
            min,
            max,
            unique,
            source,
        } => {
            let mut src = random_source(cli, source.source)?;
            if *unique {
                // Without replacement the values drawn so far are kept: the count is bounded.
                for v in generate::unique_ints(&mut src, *min, *max, *n).map_err(gen_err)? {
                    writeln!(out, "{v}")?;
                }
            } else {
                // Printed as they are made: any count.
                generate_count(*n)?;
                for _ in 0..*n {
                    writeln!(
                        out,
                        "{}",
                        generate::int(&mut src, *min, *max).map_err(gen_err)?
                    )?;
                }
            }
            Outcome::Ok
        }
        Command::Float { n, places, source } => {
            generate_count(*n)?;
            let mut src = random_source(cli, source.source)?;
            for _ in 0..*n {
                match places {
                    Some(p) => writeln!(
                        out,
                        "{}",
                        generate::decimal_fraction(&mut src, *p).map_err(gen_err)?
                    )?,
                    None => writeln!(out, "{}", generate::float(&mut src).map_err(gen_err)?)?,
                }
            }
            Outcome::Ok
        }
        Command::Gauss {
            n,
            mean,
            stddev,
            source,
        } => {
            generate_count(*n)?;
            let mut src = random_source(cli, source.source)?;
            // In batches the generator accepts, printed as they are made: any count.
            let mut left = *n;
            while left > 0 {
                let batch = left.min(generate::MAX_COUNT);
                for v in generate::gaussians(&mut src, batch, *mean, *stddev).map_err(gen_err)? {
                    writeln!(out, "{v}")?;
                }
                left -= batch;
            }
            Outcome::Ok
        }
        Command::Uuid { n, source } => {
            generate_count(*n)?;
            let mut src = random_source(cli, source.source)?;
            for _ in 0..*n {
                writeln!(out, "{}", generate::uuid_v4(&mut src).map_err(gen_err)?)?;
            }
            Outcome::Ok
        }
        Command::Password {
            length,
            charset,
            chars,
            n,
            source,
        } => {
            generate_count(*n)?;
            let set = match chars {
                Some(chars) => generate::dedup_charset(chars),
                None => generate::charset(charset).with_context(|| {
                    format!(
                        "unknown charset {charset:?}; known: {}",
                        generate::CHARSETS.join(", ")
                    )
                })?,
            };
            let mut src = random_source(cli, source.source)?;
            for _ in 0..*n {
                writeln!(
                    out,
                    "{}",
                    generate::string(&mut src, *length, &set).map_err(gen_err)?
                )?;
            }
            eprintln!(
                "lokey: each password has {:.1} bits of entropy ({} characters from a set of {})",
                generate::entropy_bits(*length, set.len()),
                length,
                set.len()
            );
            Outcome::Ok
        }
        Command::Shuffle { files, source } => {
            let Lines { data, mut lines } = read_lines(files)?;
            let mut src = random_source(cli, source.source)?;
            generate::shuffle(&mut src, &mut lines).map_err(gen_err)?;
            for line in lines {
                out.write_all(&data[line])?;
                out.write_all(b"\n")?;
            }
            Outcome::Ok
        }
        Command::Sample { n, files, source } => {
            let Lines { data, mut lines } = read_lines(files)?;
            if *n > lines.len() {
                bail!("-n {n} is more than the {} lines given", lines.len());
            }
            let mut src = random_source(cli, source.source)?;
            let picked = if *n <= generate::MAX_COUNT {
                generate::sample(&mut src, &lines, *n).map_err(gen_err)?
            } else {
                // More than the sampler takes: the first n lines of a uniform shuffle are a
                // uniform sample in random order.
                generate::shuffle(&mut src, &mut lines).map_err(gen_err)?;
                lines.truncate(*n);
                lines
            };
            for line in picked {
                out.write_all(&data[line])?;
                out.write_all(b"\n")?;
            }
            Outcome::Ok
        }
        Command::Status { json } => {
            let status = match &remote {
                Some(r) => remote::json(r, "/api/v1/status", &[200])?.1,
                None => connect(cli)?.call(&Request::Status)?,
            };
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&status)?)?;
            } else {
                print_status(&mut out, &status)?;
            }
            Outcome::Ok
        }
        Command::SeedKernel { bytes, credit } => {
            crate::seed::seed_kernel(remote.as_ref(), *bytes, *credit, &mut out)?
        }
        Command::Health { json } => {
            let health = match &remote {
                Some(r) => remote::json(r, "/api/v1/health", &[200, 503])?.1,
                None => connect(cli)?.call(&Request::Health)?,
            };
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
                if health["upstream"].is_object() {
                    writeln!(out, "upstream: {}", upstream_line(&health["upstream"]))?;
                }
            }
            if health["status"] == "ok" {
                Outcome::Ok
            } else {
                Outcome::Negative
            }
        }
        Command::Config(ConfigCommand::Get { key }) => {
            local_only(cli)?;
            let values = connect(cli)?.call(&Request::ConfigGet { key: key.clone() })?;
            if let Some(map) = values.as_object() {
                for (k, v) in map {
                    writeln!(out, "{k} = {v}")?;
                }
            }
            Outcome::Ok
        }
        Command::Config(ConfigCommand::Set { key, value }) => {
            local_only(cli)?;
            // Numbers, booleans and JSON are taken as such; anything else is a string.
            let parsed =
                serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.clone()));
            let values = connect(cli)?.call(&Request::ConfigSet {
                key: key.clone(),
                value: parsed,
            })?;
            if let Some(map) = values.as_object() {
                for (k, v) in map {
                    writeln!(out, "{k} = {v}")?;
                }
            }
            Outcome::Ok
        }
        Command::Device(DeviceCommand::Info { json }) => {
            local_only(cli)?;
            let info = connect(cli)?.call(&Request::DeviceInfo)?;
            if *json {
                writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?;
            } else {
                print_device(&mut out, &info)?;
            }
            Outcome::Ok
        }
        Command::Device(DeviceCommand::Lock { serial }) => {
            local_only(cli)?;
            device_lock(cli, serial.as_deref(), &mut out)?
        }
        Command::Device(DeviceCommand::Keygen { serial, tls }) => {
            local_only(cli)?;
            device_keygen(cli, serial.as_deref(), *tls, &mut out)?
        }
        Command::Device(DeviceCommand::Csr {
            names,
            common_name,
            output,
        }) => {
            local_only(cli)?;
            let csr = connect(cli)?.call(&Request::DeviceCsr {
                names: names.clone(),
                common_name: common_name.clone(),
            })?;
            let pem = csr["pem"].as_str().unwrap_or_default();
            match output {
                Some(path) => {
                    std::fs::write(path, pem)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!(
                        "wrote the request for the key in slot {} ({}) to {}",
                        csr["slot"],
                        csr["pin"].as_str().unwrap_or_default(),
                        path.display()
                    );
                }
                None => out.write_all(pem.as_bytes())?,
            }
            Outcome::Ok
        }
        Command::Device(DeviceCommand::Pubkey { pem, json }) => {
            local_only(cli)?;
            let id = connect(cli)?.call(&Request::Identity)?;
            beacon::print_identity(&mut out, &id, *pem, *json)?;
            Outcome::Ok
        }
        Command::Beacon(BeaconCommand::Last { json }) => {
            let answer = match &remote {
                Some(r) => remote::json(r, "/api/v1/beacon/pulse/last", &[200])?.1,
                None => connect(cli)?.call(&Request::BeaconPulse {
                    chain: None,
                    pulse: None,
                })?,
            };
            beacon::print_pulse(&mut out, &answer, *json)?;
            Outcome::Ok
        }
        Command::Beacon(BeaconCommand::Get { index, chain, json }) => {
            let answer = match (&remote, chain) {
                (Some(r), Some(chain)) => {
                    remote::json(
                        r,
                        &format!("/api/v1/beacon/chain/{chain}/pulse/{index}"),
                        &[200],
                    )?
                    .1
                }
                (Some(_), None) => bail!("with --remote, give the pulse's --chain"),
                (None, _) => connect(cli)?.call(&Request::BeaconPulse {
                    chain: *chain,
                    pulse: Some(*index),
                })?,
            };
            beacon::print_pulse(&mut out, &answer, *json)?;
            Outcome::Ok
        }
        Command::Beacon(BeaconCommand::Watch { json }) => {
            local_only(cli)?;
            beacon::watch(|| connect(cli), *json, &mut out)?
        }
        Command::Beacon(BeaconCommand::Run { chain, from, count }) => {
            local_only(cli)?;
            let answer = connect(cli)?.call(&Request::BeaconRun {
                chain: *chain,
                from: *from,
                count: *count,
            })?;
            writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?;
            Outcome::Ok
        }
        Command::Verify { file, pubkey } => beacon::verify(file, pubkey.as_deref(), &mut out)?,
        Command::Draw(DrawCommand::Int {
            n,
            min,
            max,
            unique,
            options,
        }) => {
            local_only(cli)?;
            let body = serde_json::json!({
                "kind": "integers", "n": n, "min": min, "max": max, "unique": unique,
            });
            beacon::draw(|| connect(cli), body, options, &mut out)?
        }
        Command::Draw(DrawCommand::Sample { k, files, options }) => {
            local_only(cli)?;
            let items = line_strings(files)?;
            let body = serde_json::json!({"kind": "sample", "k": k, "items": items});
            beacon::draw(|| connect(cli), body, options, &mut out)?
        }
        Command::Draw(DrawCommand::Shuffle { files, options }) => {
            local_only(cli)?;
            let items = line_strings(files)?;
            let body = serde_json::json!({"kind": "shuffle", "items": items});
            beacon::draw(|| connect(cli), body, options, &mut out)?
        }
        Command::Draw(DrawCommand::Get { id, output }) => {
            local_only(cli)?;
            beacon::draw_get(|| connect(cli), id, output.as_deref(), &mut out)?
        }
        Command::Device(DeviceCommand::SetAddress { address, serial }) => {
            local_only(cli)?;
            device_set_address(cli, *address, serial.as_deref(), &mut out)?
        }
        Command::Selftest { size, source } => {
            local_only(cli)?;
            selftest(cli, *size, source.source, &mut out)?
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "lokey", &mut out);
            Outcome::Ok
        }
    };
    out.flush()?;
    Ok(outcome)
}

/// The count of a command that prints its values as it makes them: at least 1, no upper
/// bound (nothing is held in memory).
fn generate_count(n: usize) -> anyhow::Result<()> {
    if n == 0 {
        bail!("-n must be at least 1");
    }
    Ok(())
}

/// The lines of the input: one buffer and the byte range of each line in it (without its
/// newline), so that an input costs its own size plus 16 bytes a line and no allocation per
/// line. Lines are bytes: any encoding passes through unchanged.
#[derive(Debug)]
struct Lines {
    data: Vec<u8>,
    lines: Vec<Range<usize>>,
}

/// The lines of the files (or stdin) as UTF-8 strings, for a draw's list.
fn line_strings(files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let input = read_lines(files)?;
    input
        .lines
        .iter()
        .map(|r| {
            String::from_utf8(input.data[r.clone()].to_vec())
                .map_err(|_| anyhow::anyhow!("a draw's items must be UTF-8 text"))
        })
        .collect()
}

/// Reads the files (or stdin) whole. There is no limit on lines or bytes but memory: running
/// out of it is an error that says how far the input got.
fn read_lines(files: &[PathBuf]) -> anyhow::Result<Lines> {
    let mut input = Lines {
        data: Vec::new(),
        lines: Vec::new(),
    };
    if files.is_empty() {
        read_into(io::stdin().lock(), &mut input).context("reading stdin")?;
    }
    for path in files {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        read_into(file, &mut input).with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(input)
}

/// Bytes read at a time (and the least the buffer grows by).
const READ_CHUNK: usize = 1 << 16;

fn read_into(mut reader: impl Read, input: &mut Lines) -> anyhow::Result<()> {
    let out_of_memory = |data: &Vec<u8>, lines: &Vec<Range<usize>>| {
        anyhow::anyhow!(
            "not enough memory to hold the input ({} bytes, {} lines read so far)",
            data.len(),
            lines.len()
        )
    };
    let start = input.data.len();
    loop {
        let data = &mut input.data;
        if data.capacity() - data.len() < READ_CHUNK {
            let more = data.len().max(READ_CHUNK);
            if data.try_reserve(more).is_err() {
                return Err(out_of_memory(data, &input.lines));
            }
        }
        let room = (data.capacity() - data.len()) as u64;
        if (&mut reader).take(room).read_to_end(data)? == 0 {
            break;
        }
    }
    let (data, lines) = (&input.data, &mut input.lines);
    let mut begin = start;
    while begin < data.len() {
        let end = data[begin..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(data.len(), |p| begin + p);
        if lines.try_reserve(1).is_err() {
            return Err(out_of_memory(data, lines));
        }
        lines.push(begin..end);
        begin = end + 1;
    }
    Ok(())
}

/// `lokey bytes`: the stream copied to stdout or a file, encoded if asked, with a progress
/// line on a terminal's stderr for long jobs.
fn bytes(
    cli: &Cli,
    size: Option<u64>,
    output: Option<&PathBuf>,
    hex: bool,
    base64: bool,
    source: Source,
    stdout: &mut impl Write,
) -> anyhow::Result<Outcome> {
    if source == Source::Trng && size.is_none() {
        bail!("an endless stream comes only from --source fortuna; give a SIZE for trng");
    }
    if size == Some(0) {
        return Ok(Outcome::Ok);
    }
    let mut file = match output {
        Some(path) => Some(BufWriter::with_capacity(
            1 << 20,
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let out: &mut dyn Write = match &mut file {
        Some(f) => f,
        None => stdout,
    };
    let mut stream = match remote::from_cli(cli)? {
        Some(r) => Stream::Remote(remote::RemoteStream::new(r, source, size), Vec::new()),
        None => Stream::Local(connect(cli)?.bytes(source.proto(), size)?),
    };
    let progress = io::stderr().is_terminal() && size.is_none_or(|s| s >= 64 << 20);
    let started = Instant::now();
    let mut last = started;
    let mut encoded = Vec::new();
    let mut carry: Vec<u8> = Vec::new();
    while let Some(chunk) = stream.next_slice()? {
        if hex {
            encoded.clear();
            lokey::format::hex_into(chunk, &mut encoded);
            out.write_all(&encoded)?;
        } else if base64 {
            // Base64 works on groups of 3 bytes: keep the remainder for the next chunk.
            carry.extend_from_slice(chunk);
            let whole = carry.len() / 3 * 3;
            encoded.clear();
            lokey::format::base64_into(&carry[..whole], &mut encoded);
            out.write_all(&encoded)?;
            carry.drain(..whole);
        } else {
            out.write_all(chunk)?;
        }
        if progress && last.elapsed() >= Duration::from_millis(500) {
            last = Instant::now();
            report(stream.received(), size, started.elapsed());
        }
    }
    if base64 {
        encoded.clear();
        lokey::format::base64_into(&carry, &mut encoded);
        out.write_all(&encoded)?;
    }
    if hex || base64 {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    if progress {
        report(stream.received(), size, started.elapsed());
        eprintln!();
    }
    Ok(Outcome::Ok)
}

/// The bytes of `lokey bytes`: the local socket's stream or the remote's requests.
enum Stream {
    Local(lokey::client::ByteStream),
    /// A remote stream and its buffer.
    Remote(remote::RemoteStream, Vec<u8>),
}

impl Stream {
    /// The next chunk, valid until the next call.
    fn next_slice(&mut self) -> anyhow::Result<Option<&[u8]>> {
        Ok(match self {
            Stream::Local(s) => s.next_slice()?,
            Stream::Remote(s, buf) => s.next_chunk(buf)?.then_some(&buf[..]),
        })
    }

    fn received(&self) -> u64 {
        match self {
            Stream::Local(s) => s.received(),
            Stream::Remote(s, _) => s.received(),
        }
    }
}

fn report(done: u64, total: Option<u64>, elapsed: Duration) {
    let rate = done as f64 / elapsed.as_secs_f64().max(1e-9) / 1e6;
    let mib = done as f64 / f64::from(1 << 20);
    match total {
        Some(t) => eprint!(
            "\r{:>6.1}%  {mib:>10.1} MiB  {rate:>8.1} MB/s",
            done as f64 / t as f64 * 100.0
        ),
        None => eprint!("\r{mib:>10.1} MiB  {rate:>8.1} MB/s"),
    }
}

fn print_device(out: &mut impl Write, info: &Value) -> io::Result<()> {
    let yes_no = |v: &Value| {
        if v.as_bool() == Some(true) {
            "yes"
        } else {
            "no"
        }
    };
    let kind = if info["emulated"] == true {
        "ATECC608A emulator (its output comes from the OS RNG; never credited)"
    } else {
        "ATECC608A"
    };
    writeln!(out, "device          {kind}")?;
    writeln!(
        out,
        "bus             /dev/i2c-{}, address {}",
        info["bus"],
        info["address"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "revision        {}",
        info["revision"].as_str().unwrap_or("?")
    )?;
    writeln!(
        out,
        "serial number   {}",
        info["serial"].as_str().unwrap_or("?")
    )?;
    writeln!(out, "config locked   {}", yes_no(&info["config_locked"]))?;
    writeln!(out, "data locked     {}", yes_no(&info["data_locked"]))?;
    if info["config_locked"] == false {
        writeln!(
            out,
            "\nThe configuration zone is not locked: the chip's RNG returns a fixed test pattern\nuntil it is. Provision it once with `lokey device lock` (irreversible)."
        )?;
    }
    Ok(())
}

/// `lokey device lock`: shows the chip, asks for its serial number back (or takes `--serial`),
/// then has the daemon lock it.
fn device_lock(cli: &Cli, serial: Option<&str>, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let info = connect(cli)?.call(&Request::DeviceInfo)?;
    print_device(out, &info)?;
    out.flush()?;
    if info["config_locked"] == true {
        bail!("the configuration zone is already locked; nothing to do");
    }
    let confirm = beacon::confirm_serial(
        serial,
        info["serial"].as_str().unwrap_or(""),
        "Locking the configuration zone is PERMANENT: the chip's configuration can never be\n\
         changed again.",
        "locking",
    )?;
    connect(cli)?.call(&Request::DeviceLock { confirm })?;
    writeln!(out, "\nLocked. The chip's RNG is now usable.")?;
    Ok(Outcome::Ok)
}

/// `lokey device keygen`: shows the chip and its current key, asks for its serial number
/// back (or takes `--serial`), then has the daemon create the new key.
fn device_keygen(
    cli: &Cli,
    serial: Option<&str>,
    tls: bool,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let info = connect(cli)?.call(&Request::DeviceInfo)?;
    print_device(out, &info)?;
    let current = connect(cli)?.call(&Request::Identity).map(|id| match tls {
        true => id["tls"]["pin"]
            .as_str()
            .unwrap_or("none served")
            .to_string(),
        false => id["keyId"].as_str().unwrap_or("").to_string(),
    });
    match current {
        Ok(key) => writeln!(out, "current key     {key}")?,
        Err(e) => writeln!(out, "current key     none ({e})")?,
    }
    out.flush()?;
    let warning = if tls {
        "Creating a key DESTROYS the TLS key now in the slot: clients that pinned it must pin\n\
         the new one, and a certificate a CA issued for it no longer fits (ask for a new one\n\
         with `lokey device csr`)."
    } else {
        "Creating a key DESTROYS the key now in the slot: signatures made with it can still be\n\
         verified with its public key, but nothing can sign with it again, and the beacon\n\
         starts a new chain."
    };
    let confirm = beacon::confirm_serial(
        serial,
        info["serial"].as_str().unwrap_or(""),
        warning,
        "creating a key",
    )?;
    let id = connect(cli)?.call(&Request::DeviceKeygen { confirm, tls })?;
    writeln!(out, "\nNew key created inside the chip.")?;
    beacon::print_identity(out, &id, false, false)?;
    Ok(Outcome::Ok)
}

/// `lokey device set-address`: shows the chip, refuses when its config zone is locked, asks
/// for its serial number back (or takes `--serial`), then has the daemon write the address.
fn device_set_address(
    cli: &Cli,
    address: u8,
    serial: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let info = connect(cli)?.call(&Request::DeviceInfo)?;
    print_device(out, &info)?;
    out.flush()?;
    if info["config_locked"] == true {
        bail!(
            "the configuration zone is locked, so the address can no longer be changed (config \
             byte 16 is writable only before the lock). Put chips that share an address on \
             different buses instead: an I2C multiplexer (PCA9542/9545/9548, the i2c-mux \
             overlay) gives each its own bus at 0x60"
        );
    }
    let confirm = match serial {
        Some(s) => s.to_string(),
        None => {
            if !io::stdin().is_terminal() {
                bail!(
                    "the new address becomes permanent when the chip is locked: confirm with \
                     --serial SERIAL (the serial number above)"
                );
            }
            eprintln!(
                "\nThe chip will answer at {address:#04x} instead of {} from its next sleep or \
                 power-up,\nand PERMANENTLY once its configuration zone is locked. Type the \
                 serial number shown above to change this chip:",
                info["address"].as_str().unwrap_or("?")
            );
            let mut line = String::new();
            io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if normalise_serial(&confirm) != normalise_serial(info["serial"].as_str().unwrap_or("")) {
        bail!("{confirm:?} is not this chip's serial number; nothing was changed");
    }
    connect(cli)?.call(&Request::DeviceSetAddress { address, confirm })?;
    writeln!(
        out,
        "\nThe chip's address is now {address:#04x} (config byte 16). It answers there after its \
         next sleep\nor power-up: set the address in lokeyd's configuration and restart lokeyd."
    )?;
    Ok(Outcome::Ok)
}

/// A serial number's hex digits, upper case, for comparing what was typed with the chip's.
fn normalise_serial(s: &str) -> String {
    s.chars()
        .filter(char::is_ascii_hexdigit)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// `lokey selftest`: FIPS 140-2 block tests and the SP 800-90B health tests over data from
/// the daemon.
fn selftest(cli: &Cli, size: u64, source: Source, out: &mut impl Write) -> anyhow::Result<Outcome> {
    use lokey::fips;
    if size < fips::BLOCK_BYTES as u64 {
        bail!(
            "SIZE must be at least {} bytes (one FIPS 140-2 block)",
            fips::BLOCK_BYTES
        );
    }
    let mut stream = connect(cli)?.bytes(source.proto(), Some(size))?;
    let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    while let Some(chunk) = stream.next_slice()? {
        data.extend_from_slice(chunk);
    }
    let evaluation = Evaluation::of(&data)?;
    evaluation.write(out, source.proto().as_str())?;
    Ok(evaluation.outcome())
}

/// What `lokey selftest` concludes about a sample: the FIPS 140-2 block tests over its whole
/// 2500-byte blocks, and a fresh SP 800-90B health monitor over its 32-byte blocks.
#[derive(Debug)]
struct Evaluation {
    bytes: usize,
    fips: lokey::fips::Summary,
    passed: u64,
    startup: u64,
    failed: u64,
}

impl Evaluation {
    fn of(data: &[u8]) -> anyhow::Result<Evaluation> {
        use lokey::fips;
        use lokey::health::{HealthConfig, HealthMonitor, Verdict};
        let mut summary = fips::Summary::default();
        for block in data.chunks_exact(fips::BLOCK_BYTES) {
            if let Some(r) = fips::test_block(block) {
                summary.add(r);
            }
        }
        let mut monitor = HealthMonitor::new(HealthConfig::default())?;
        let (mut passed, mut startup, mut failed) = (0u64, 0u64, 0u64);
        let now = Instant::now();
        for block in data.chunks_exact(32) {
            match monitor.feed(block, now).verdict {
                Verdict::Pass => passed += 1,
                Verdict::StartUp => startup += 1,
                _ => failed += 1,
            }
        }
        Ok(Evaluation {
            bytes: data.len(),
            fips: summary,
            passed,
            startup,
            failed,
        })
    }

    fn fips_ok(&self) -> bool {
        self.fips.acceptable()
    }

    fn health_ok(&self) -> bool {
        self.failed == 0
    }

    /// Ok only when both verdicts pass; otherwise a negative answer (exit 1).
    fn outcome(&self) -> Outcome {
        if self.fips_ok() && self.health_ok() {
            Outcome::Ok
        } else {
            Outcome::Negative
        }
    }

    fn write(&self, out: &mut impl Write, source: &str) -> io::Result<()> {
        let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
        let summary = &self.fips;
        writeln!(out, "tested {} bytes from {source}", self.bytes)?;
        writeln!(
            out,
            "FIPS 140-2: {} of {} blocks passed (monobit {}, poker {}, runs {}, long run {} failures) — {}",
            summary.passed,
            summary.blocks,
            summary.monobit_failures,
            summary.poker_failures,
            summary.runs_failures,
            summary.long_run_failures,
            verdict(self.fips_ok())
        )?;
        writeln!(
            out,
            "SP 800-90B health tests: {} blocks passed, {} start-up, {} failed — {}",
            self.passed,
            self.startup,
            self.failed,
            verdict(self.health_ok())
        )?;
        writeln!(
            out,
            "(ideal random data fails about 0.08% of FIPS blocks; the verdict allows 1% + 2, so a good\nsource fails it with probability below 1e-5 at 400 blocks; the health tests' false alarm rate\nis 2^-30 per test)"
        )
    }
}

/// The upstream feeder as `lokey status` and `lokey health` show it.
fn upstream_line(u: &Value) -> String {
    let last = match (
        u["last_success"].as_str(),
        u["last_success_secs_ago"].as_u64(),
    ) {
        (Some(at), Some(ago)) => format!("last success {at} ({ago} s ago)"),
        _ => "no success yet".to_string(),
    };
    format!(
        "{} {} (pinned {}): {}; {} bytes mixed, {} credited ({} bits){}",
        u["state"].as_str().unwrap_or("?"),
        u["url"].as_str().unwrap_or("?"),
        u["pin"].as_str().unwrap_or("?"),
        last,
        u["bytes_mixed"],
        u["bytes_credited"],
        u["bits_credited"],
        u["last_error"]
            .as_str()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    )
}

/// A source's credit as `lokey status` shows it.
fn credit(src: &Value) -> String {
    match (
        src["credit_note"].as_str(),
        src["credit_bits_per_byte"].as_u64(),
    ) {
        (Some(why), _) => format!("not credited ({why})"),
        (None, Some(0)) => "not credited (its credit is 0 bits per byte)".to_string(),
        (None, Some(bits)) => format!(
            "credited {bits} bit{} per byte, {} bits so far",
            if bits == 1 { "" } else { "s" },
            src["credited_bits"]
        ),
        // An older daemon says nothing about it.
        (None, None) => "credit unknown".to_string(),
    }
}

/// A source's state as `lokey status` shows it: its health-test state, or `failing` while its
/// reads fail (the health tests stay where they were, since they see no data; the status
/// document has both, `state` and `healthy`).
fn source_state(src: &Value) -> &str {
    let state = src["state"].as_str().unwrap_or("?");
    if state == "healthy" && src["healthy"] == false && src["last_error"].is_string() {
        "failing"
    } else {
        state
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
    if let Some(sources) = s["sources"].as_array() {
        for src in sources {
            writeln!(
                out,
                "source {:<7} {:<10} {:<12} {} blocks read, {} read errors; {}{}",
                src["name"].as_str().unwrap_or("?"),
                src["kind"].as_str().unwrap_or("?"),
                source_state(src),
                src["blocks_read"],
                src["read_errors"],
                credit(src),
                src["last_error"]
                    .as_str()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )?;
        }
    }
    let q = &s["trng"];
    writeln!(
        out,
        "trng queue   {} of {} items ({:.1}%), {} consumed, {} dropped{}",
        q["queue_current"],
        q["queue_capacity"],
        q["queue_percentage"].as_f64().unwrap_or(0.0),
        q["consumed_count"],
        q["queue_dropped"],
        match q["consume"].as_bool() {
            Some(true) => "; delete-on-read",
            Some(false) => "; NOT CONSUMING: served bytes stay and are served again",
            None => "",
        }
    )?;
    let f = &s["fortuna_generator"];
    writeln!(
        out,
        "fortuna      {}, {} reseeds; {} ({})",
        if f["seeded"] == true {
            "seeded"
        } else {
            "NOT SEEDED"
        },
        f["reseed_count"],
        f["cipher"].as_str().unwrap_or("?"),
        f["backend"].as_str().unwrap_or("?"),
    )?;
    let k = &s["kernel"];
    writeln!(
        out,
        "kernel       {}; CRNG {}; {} bits credited{}",
        if k["enabled"] == true {
            "feeding"
        } else {
            "off (--no-credit)"
        },
        if k["crng_initialized"] == true {
            "initialised"
        } else {
            "not initialised"
        },
        k["credited_bits"],
        k["last_error"]
            .as_str()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default()
    )?;
    if s["upstream"].is_object() {
        writeln!(out, "upstream     {}", upstream_line(&s["upstream"]))?;
    }
    let b = &s["beacon"];
    if b.is_object() {
        let pulse = match (b["chain_index"].as_u64(), b["pulse_index"].as_u64()) {
            (Some(c), Some(p)) => format!("pulse {c}/{p}"),
            _ => "no pulse yet".to_string(),
        };
        writeln!(
            out,
            "beacon       {pulse}, every {} s{}; {} published, {} late{}",
            b["period_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
            if b["emulated"] == true {
                " (emulated key)"
            } else {
                ""
            },
            b["pulses"],
            b["late"],
            b["problem"]
                .as_str()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        )?;
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_whose_reads_fail_shows_as_failing() {
        let src = |state: &str, healthy: bool, error: Option<&str>| serde_json::json!({ "state": state, "healthy": healthy, "last_error": error });
        assert_eq!(source_state(&src("healthy", true, None)), "healthy");
        assert_eq!(
            source_state(&src("healthy", false, Some("gone"))),
            "failing"
        );
        assert_eq!(
            source_state(&src("quarantined", false, Some("gone"))),
            "quarantined"
        );
        assert_eq!(
            source_state(&src("starting_up", false, None)),
            "starting_up"
        );
    }

    #[test]
    fn base64_in_pieces_is_the_same_as_at_once() {
        let mut whole = Vec::new();
        lokey::format::base64_into(b"foobar", &mut whole);
        assert_eq!(whole, b"Zm9vYmFy");
        let mut part = Vec::new();
        lokey::format::base64_into(b"fo", &mut part);
        assert_eq!(part, b"Zm8=");
    }

    fn urandom(n: usize) -> Vec<u8> {
        let mut data = vec![0u8; n];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut data))
            .unwrap();
        data
    }

    /// The report and outcome of the self-test on `data`.
    fn judge(data: &[u8]) -> (Evaluation, String, bool) {
        let e = Evaluation::of(data).unwrap();
        let mut report = Vec::new();
        e.write(&mut report, "trng").unwrap();
        let negative = matches!(e.outcome(), Outcome::Negative);
        (e, String::from_utf8(report).unwrap(), negative)
    }

    const BLOCKS: usize = 40 * lokey::fips::BLOCK_BYTES;

    #[test]
    fn constant_bytes_fail_both_verdicts() {
        let (e, report, negative) = judge(&[0x5a; BLOCKS]);
        assert!(negative, "{report}");
        assert_eq!((e.fips.blocks, e.fips.passed), (40, 0), "{report}");
        assert!(e.failed > 0, "{report}");
        assert!(
            report.contains("FIPS 140-2: 0 of 40 blocks passed") && report.contains("— FAIL"),
            "{report}"
        );
        assert!(
            report
                .lines()
                .any(|l| l.starts_with("SP 800-90B") && l.ends_with("— FAIL")),
            "{report}"
        );
    }

    #[test]
    fn a_biased_sample_fails() {
        // Each bit is 1 with probability 3/4 (the OR of two random bits): ~15,000 ones in a
        // 20,000-bit block, far outside monobit's 9,725–10,275, so every block fails.
        let (a, b) = (urandom(BLOCKS), urandom(BLOCKS));
        let biased: Vec<u8> = a.iter().zip(&b).map(|(x, y)| x | y).collect();
        let (e, report, negative) = judge(&biased);
        assert!(negative, "{report}");
        assert_eq!(e.fips.monobit_failures, 40, "{report}");
        assert!(
            report.lines().nth(1).unwrap().ends_with("— FAIL"),
            "{report}"
        );
    }

    #[test]
    fn a_health_test_failure_alone_is_a_negative_answer() {
        // Random data with one stuck stretch: 64 equal bytes fail the Repetition Count Test.
        // They lie in the tail after the last whole FIPS block, which only the health tests
        // see, so the FIPS verdict is over random data alone and fails with probability about
        // 5e-6 (3 or more of 40 blocks failing at 0.08% each). Health-test false alarms on the
        // random part could only add failures.
        let mut data = urandom(BLOCKS + 320);
        data[BLOCKS + 64..BLOCKS + 128].fill(0x5a);
        let (e, report, negative) = judge(&data);
        assert!(e.fips_ok(), "{report}");
        assert!(!e.health_ok(), "{report}");
        assert!(negative, "{report}");
        assert!(
            report.lines().nth(1).unwrap().ends_with("— PASS"),
            "{report}"
        );
        assert!(
            report.lines().nth(2).unwrap().ends_with("— FAIL"),
            "{report}"
        );
    }

    #[test]
    fn read_lines_reports_the_file_it_cannot_open() {
        let e = read_lines(&[PathBuf::from("/nonexistent/lines")]).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/lines"), "{e}");
    }
}
