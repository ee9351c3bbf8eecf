//! `lokey beacon …`, `lokey verify` and the key commands of `lokey device`.
//!
//! `verify` works offline on a pulse file (`docs/beacon.md` §7) and exits 0 when every check
//! of §8 passes, 1 naming the pulse and check that failed, 2 when it cannot tell (an
//! unreadable file, no key).

use std::io::{self, IsTerminal, Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use lokey::beacon::{self, PublicKey, PulseJson, status};
use lokey::proto::Request;
use serde_json::Value;

use crate::Outcome;

/// Prints a pulse for people.
pub fn print_pulse(out: &mut impl Write, answer: &Value, json: bool) -> anyhow::Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string(answer)?)?;
        return Ok(());
    }
    let p: PulseJson = serde_json::from_value(answer["pulse"].clone())
        .context("the daemon's answer is not a pulse")?;
    writeln!(out, "pulse        {}/{}", p.chain_index, p.pulse_index)?;
    writeln!(out, "time         {}", p.time_stamp)?;
    writeln!(out, "output       {}", p.output_value)?;
    let names = status::names(p.status_code);
    writeln!(
        out,
        "status       {:#04x}{}",
        p.status_code,
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    )?;
    writeln!(out, "key id       {}", p.key_id)?;
    if p.emulated {
        writeln!(
            out,
            "             emulated: signed by the emulator's software key, not a chip"
        )?;
    }
    Ok(())
}

/// `lokey beacon watch`: prints every new pulse until interrupted.
pub fn watch(
    client: impl Fn() -> anyhow::Result<lokey::client::Client>,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let mut seen: Option<(u64, u64)> = None;
    loop {
        let answer = client()?.call(&Request::BeaconPulse {
            chain: None,
            pulse: None,
        });
        match answer {
            Ok(answer) => {
                let id = (
                    answer["pulse"]["chainIndex"].as_u64().unwrap_or(0),
                    answer["pulse"]["pulseIndex"].as_u64().unwrap_or(0),
                );
                if seen != Some(id) {
                    print_pulse(out, &answer, json)?;
                    if !json {
                        writeln!(out)?;
                    }
                    out.flush()?;
                    seen = Some(id);
                }
            }
            // Nothing published yet: keep waiting.
            Err(lokey::client::Error::Daemon {
                code: lokey::proto::ErrorCode::NotFound,
                ..
            }) => {}
            Err(e) => return Err(e.into()),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `lokey verify FILE|-`.
pub fn verify(file: &Path, pubkey: Option<&str>, out: &mut impl Write) -> anyhow::Result<Outcome> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    if let Ok(receipt) = serde_json::from_str::<lokey::draw::Receipt>(&text) {
        return verify_receipt(&receipt, pubkey, out);
    }
    let parsed = beacon::parse_pulse_file(&text).context("not a pulse file or a draw receipt")?;
    let key_text = match (pubkey, &parsed.public_key) {
        (Some(k), _) => key_argument(k)?,
        (None, Some(k)) => {
            eprintln!(
                "lokey: warning: using the public key written in the file; anyone who can \
                 change the file can change it. Pin the key from a trusted source with --pubkey."
            );
            k.clone()
        }
        (None, None) => bail!("no public key: give --pubkey (hex X‖Y, a PEM file or PEM text)"),
    };
    let key = PublicKey::parse(&key_text).context("--pubkey")?;
    let mut pulses = Vec::with_capacity(parsed.pulses.len());
    for (i, p) in parsed.pulses.iter().enumerate() {
        let output = p.published_output();
        match (p.to_pulse(), output) {
            (Ok(pulse), Ok(output)) => pulses.push((pulse, Some(output))),
            (Err(e), _) | (_, Err(e)) => {
                writeln!(
                    out,
                    "INVALID: pulse {} of the file ({}/{}): {e}",
                    i + 1,
                    p.chain_index,
                    p.pulse_index
                )?;
                return Ok(Outcome::Negative);
            }
        }
    }
    match beacon::verify(&pulses, &key) {
        Ok(report) => {
            writeln!(
                out,
                "valid: {} pulse(s), {} chain link(s), {} chain(s), key id {}",
                report.pulses,
                report.links,
                report.chains,
                beacon::hex(&key.key_id())
            )?;
            if report.emulated {
                emulated_note(out)?;
            }
            Ok(Outcome::Ok)
        }
        Err(e) => {
            writeln!(out, "INVALID: {e}")?;
            Ok(Outcome::Negative)
        }
    }
}

/// `lokey verify RECEIPT`: every step of `docs/draws.md` §6.
fn verify_receipt(
    receipt: &lokey::draw::Receipt,
    pubkey: Option<&str>,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let Some(pubkey) = pubkey else {
        bail!(
            "a receipt names its key only by id ({}): give the beacon's public key with --pubkey",
            receipt.key_id
        );
    };
    let key = PublicKey::parse(&key_argument(pubkey)?).context("--pubkey")?;
    match lokey::draw::verify_receipt(receipt, &key) {
        Ok(values) => {
            writeln!(
                out,
                "valid: draw {} ({:?}) decided by pulse {}/{}: {} value(s), as registered, \
                 committed to before the deciding pulse and recomputed from it",
                receipt.id,
                receipt.registration.label,
                receipt.deciding_pulse.chain_index,
                receipt.deciding_pulse.pulse_index,
                values.len()
            )?;
            if receipt.commit_pulse.emulated {
                emulated_note(out)?;
            }
            Ok(Outcome::Ok)
        }
        Err(e) => {
            writeln!(out, "INVALID: {e}")?;
            Ok(Outcome::Negative)
        }
    }
}

fn emulated_note(out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "note: signed by lokey's chip emulator (status bit 0x04): the key is software, not \
         inside a chip"
    )
}

/// A `--pubkey` value: the key itself, or a file holding it.
fn key_argument(arg: &str) -> anyhow::Result<String> {
    let looks_inline = arg.starts_with("-----BEGIN") || arg.chars().all(|c| c.is_ascii_hexdigit());
    if looks_inline {
        return Ok(arg.to_string());
    }
    std::fs::read_to_string(arg).with_context(|| format!("reading the public key file {arg}"))
}

/// `lokey device pubkey`.
pub fn print_identity(out: &mut impl Write, id: &Value, pem: bool, json: bool) -> io::Result<()> {
    if json {
        return writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(id).unwrap_or_default()
        );
    }
    if pem {
        return write!(out, "{}", id["publicKeyPem"].as_str().unwrap_or(""));
    }
    let s = |k: &str| id[k].as_str().unwrap_or("").to_string();
    writeln!(out, "serial       {}", s("serialNumber"))?;
    writeln!(out, "slot         {}", id["slot"])?;
    writeln!(out, "public key   {}", s("publicKey"))?;
    writeln!(out, "key id       {}", s("keyId"))?;
    writeln!(out, "pin          {}", s("pin"))?;
    if id["emulated"] == true {
        writeln!(
            out,
            "emulated     yes: a software key in lokeyd's data directory, not inside a chip"
        )?;
    }
    if let Some(pin) = id["tls"]["pin"].as_str() {
        // The key of the REST API's TLS certificate: what `lokey --remote … --pin` takes.
        let slot = &id["tls"]["slot"];
        let from = if slot.is_null() {
            "from api.tls_cert".to_string()
        } else {
            format!("chip slot {slot}")
        };
        writeln!(out, "TLS pin      {pin} ({from})")?;
    }
    Ok(())
}

/// Asks for the chip's serial number back before an irreversible operation (or takes
/// `--serial`), and checks it against `shown`.
pub fn confirm_serial(
    serial: Option<&str>,
    shown: &str,
    warning: &str,
    what: &str,
) -> anyhow::Result<String> {
    let confirm = match serial {
        Some(s) => s.to_string(),
        None => {
            if !io::stdin().is_terminal() {
                bail!(
                    "{what} is irreversible: confirm with --serial SERIAL (the serial number above)"
                );
            }
            eprintln!("\n{warning} Type the serial number shown above to go on:");
            let mut line = String::new();
            io::stdin().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    let normalise = |s: &str| {
        s.chars()
            .filter(char::is_ascii_hexdigit)
            .collect::<String>()
            .to_ascii_uppercase()
    };
    if normalise(&confirm) != normalise(shown) {
        bail!("{confirm:?} is not this chip's serial number; nothing was changed");
    }
    Ok(confirm)
}

/// `lokey draw …`: registers `body` (with the label and nonce), then — unless `--no-wait` —
/// waits for the deciding pulse (a progress line on a terminal), prints the values one per
/// line and writes the receipt.
pub fn draw(
    client: impl Fn() -> anyhow::Result<lokey::client::Client>,
    mut body: Value,
    options: &crate::DrawOptions,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    body["label"] = Value::String(options.label.clone());
    if let Some(nonce) = &options.nonce {
        body["nonce"] = Value::String(nonce.clone());
    }
    let ticket = client()?.call(&Request::DrawRegister { body })?;
    let id = ticket["id"].as_str().unwrap_or("").to_string();
    eprintln!(
        "registered draw {id} (leaf {}); decided by pulse {} of chain {}",
        ticket["leaf"].as_str().unwrap_or(""),
        ticket["pulseIndex"],
        ticket["chainIndex"]
    );
    if options.no_wait {
        writeln!(out, "{id}")?;
        return Ok(Outcome::Ok);
    }
    draw_get(client, &id, options.output.as_deref(), out)
}

/// `lokey draw get ID`: waits while the draw is pending, then prints its values and writes its
/// receipt; an undecidable draw is a negative answer (exit 1) saying why.
pub fn draw_get(
    client: impl Fn() -> anyhow::Result<lokey::client::Client>,
    id: &str,
    output: Option<&Path>,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let terminal = io::stderr().is_terminal();
    let started = std::time::Instant::now();
    loop {
        let answer = client()?.call(&Request::Draw { id: id.to_string() })?;
        match answer["status"].as_str() {
            Some("decided") => {
                if terminal {
                    eprintln!();
                }
                for v in answer["values"].as_array().into_iter().flatten() {
                    match v {
                        Value::String(s) => writeln!(out, "{s}")?,
                        other => writeln!(out, "{other}")?,
                    }
                }
                if let Some(path) = output {
                    let text = serde_json::to_string_pretty(&answer["receipt"])? + "\n";
                    std::fs::write(path, text)
                        .with_context(|| format!("writing the receipt to {}", path.display()))?;
                    eprintln!(
                        "receipt written to {}; check it with `lokey verify`",
                        path.display()
                    );
                }
                return Ok(Outcome::Ok);
            }
            Some("pending") => {
                if terminal {
                    eprint!(
                        "\rwaiting for pulse {} ({} s)…",
                        answer["pulseIndex"],
                        started.elapsed().as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            _ => {
                writeln!(
                    out,
                    "draw {id} is undecidable: {}",
                    answer["reason"].as_str().unwrap_or("no reason given")
                )?;
                return Ok(Outcome::Negative);
            }
        }
    }
}
