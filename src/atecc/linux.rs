//! The Linux transport: `/dev/i2c-N` through rppal's embedded-hal implementation.
//!
//! Opening checks what users get wrong (reference §1): the device node must exist (I2C
//! enabled), the daemon's user must be allowed to open it (group `i2c`, see
//! `udev/60-lokey.rules`), and the kernel's own `atmel-ecc` driver must not hold address 0x60
//! (a warning: both would talk to the chip). rppal cannot change the bus speed; run the bus at
//! 100 kHz (`dtparam=i2c_arm_baudrate=100000`) so that the wake pulse works.

use std::path::PathBuf;
use std::time::Duration;

use embedded_hal::delay::DelayNs;

/// Why the bus could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such device node.
    #[error(
        "{0} does not exist: enable I2C (raspi-config, or dtparam=i2c_arm=on in config.txt) \
         or set chip.i2c_bus; without a chip, run lokeyd --emulate"
    )]
    Missing(PathBuf),
    /// Not allowed to open it.
    #[error(
        "permission denied opening {0}: the daemon's user needs read-write access (group i2c; \
         install udev/60-lokey.rules)"
    )]
    Permission(PathBuf),
    /// Anything else rppal reported.
    #[error("cannot open {path}: {message}")]
    Other {
        /// The node.
        path: PathBuf,
        /// rppal's message.
        message: String,
    },
}

/// Delays by sleeping the thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdDelay;

impl DelayNs for StdDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// The device node of bus `bus`.
pub fn device_path(bus: u8) -> PathBuf {
    PathBuf::from(format!("/dev/i2c-{bus}"))
}

/// Whether bus `bus` exists.
pub fn bus_present(bus: u8) -> bool {
    device_path(bus).exists()
}

/// The kernel driver bound to `address` on `bus`, if any (e.g. `atmel-ecc`).
pub fn kernel_driver(bus: u8, address: u8) -> Option<String> {
    let link = PathBuf::from(format!("/sys/bus/i2c/devices/{bus}-{address:04x}/driver"));
    let target = std::fs::read_link(link).ok()?;
    target.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Opens `/dev/i2c-<bus>`; warns when a kernel driver holds `address`.
///
/// # Errors
///
/// [`OpenError`] naming the node and what to do.
pub fn open(bus: u8, address: u8) -> Result<(rppal::i2c::I2c, StdDelay), OpenError> {
    let path = device_path(bus);
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::Missing(path)),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(OpenError::Permission(path));
        }
        Err(e) => {
            return Err(OpenError::Other {
                path,
                message: e.to_string(),
            });
        }
    }
    if let Some(driver) = kernel_driver(bus, address) {
        tracing::warn!(
            "the kernel driver {driver} is bound to address {address:#04x} on {}: it talks to \
             the chip too; unbind it (echo {bus}-{address:04x} > /sys/bus/i2c/drivers/{driver}/unbind) \
             or remove its device-tree overlay",
            path.display()
        );
    }
    let i2c = rppal::i2c::I2c::with_bus(bus).map_err(|e| OpenError::Other {
        path,
        message: e.to_string(),
    })?;
    Ok((i2c, StdDelay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_bus_is_named_with_what_to_do() {
        let err = open(250, 0x60).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/dev/i2c-250"), "{text}");
        assert!(text.contains("--emulate"), "{text}");
    }
}
