//! `lokey seed-kernel --remote https://HOST:PORT --pin sha256:…`: seeds this machine's kernel
//! pool once from a remote lokey device, for the first boot of a VM or a container.
//!
//! The bytes are the device's Fortuna output, fetched over TLS with the device's key pinned
//! ([`lokey::remote`]), and go to `/dev/random` in one call: a plain `write(2)` (mixed, no
//! credit, no capability) or, with `--credit`, `RNDADDENTROPY` crediting BITS per byte. Credit
//! needs CAP_SYS_ADMIN (checked before anything is fetched, so no bytes are wasted) and a pin:
//! it is never given for bytes from a server recognised only by a CA. What was done is
//! printed; any failure is an error (exit 2) and nothing is written to the kernel.

use std::io::Write;

use anyhow::{Context, bail};
use lokey::kernel::KernelPool;
use lokey::remote::{Remote, Trust};

use crate::Outcome;

/// Runs `lokey seed-kernel`.
///
/// # Errors
///
/// No `--remote`; `--credit` without a pin or without CAP_SYS_ADMIN; the fetch (a wrong pin
/// names both keys); the kernel's refusal.
pub fn seed_kernel(
    remote: Option<&Remote>,
    bytes: u16,
    credit: Option<u8>,
    out: &mut impl Write,
) -> anyhow::Result<Outcome> {
    let Some(remote) = remote else {
        bail!(
            "seed-kernel fetches from a lokey device: give --remote https://HOST:PORT and \
             --pin sha256:HEX (or LOKEY_REMOTE and LOKEY_PIN)"
        );
    };
    let pin = match remote.trust() {
        Trust::Pin(pin) => Some(*pin),
        Trust::CaFile(_) => None,
    };
    if let Some(bits) = credit {
        if pin.is_none() {
            bail!(
                "--credit needs --pin: bytes are credited only from a device whose key is pinned"
            );
        }
        if !lokey::privilege::holds_sys_admin() {
            bail!(
                "--credit {bits} needs CAP_SYS_ADMIN (RNDADDENTROPY): run as root, or without \
                 --credit to mix the bytes in without crediting them"
            );
        }
    }
    let pool = KernelPool::open()
        .and_then(|p| p.with_max_bits_per_byte(credit.unwrap_or(0)))
        .context("opening the kernel's random device")?;
    let before = pool.entropy_count().ok();
    let data = zeroize::Zeroizing::new(remote.random_bytes(u64::from(bytes), "fortuna")?);
    let bits = u32::from(credit.unwrap_or(0)) * u32::from(bytes);
    match credit {
        Some(_) => pool.add_entropy(&data, bits)?,
        None => pool.mix(&data)?,
    }
    let after = pool.entropy_count().ok();
    let trust = match pin {
        Some(pin) => format!("key {pin}"),
        None => "certificate checked against the CA file".to_string(),
    };
    writeln!(
        out,
        "mixed {bytes} bytes from {} ({trust}) into the kernel pool",
        remote.server()
    )?;
    match credit {
        Some(per_byte) => writeln!(
            out,
            "credited {bits} bits ({per_byte} per byte) with RNDADDENTROPY"
        )?,
        None => writeln!(out, "credited nothing (--credit credits them)")?,
    }
    if let (Some(before), Some(after)) = (before, after) {
        writeln!(out, "kernel entropy count: {before} -> {after} bits")?;
    }
    Ok(Outcome::Ok)
}
