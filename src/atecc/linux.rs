//! The Linux transport: `/dev/i2c-N` through rppal's embedded-hal implementation.
//!
//! Opening checks what users get wrong (reference §1): the device node must exist (I2C
//! enabled), the daemon's user must be allowed to open it (group `i2c`, see
//! `udev/60-lokey.rules`), and the kernel's own `atmel-ecc` driver must not hold address 0x60
//! (a warning: both would talk to the chip). rppal cannot change the bus speed; run the bus at
//! 100 kHz (`dtparam=i2c_arm_baudrate=100000`) so that the wake pulse works.
//!
//! rppal reports every I/O error as embedded-hal's `ErrorKind::Other`, so a busy chip's NACK
//! would look like a broken bus. [`LinuxI2c`] sorts them by errno instead, as the kernel's
//! I2C fault codes define them: `ENXIO` (the address phase was not acknowledged, most
//! adapters) and `EREMOTEIO` (what `i2c-bcm2835`, the Pi's adapter, returns on its NACK flag)
//! are `NoAcknowledge`; `EAGAIN` is a lost arbitration; `EIO` (on the Pi a clock-stretch
//! timeout) and `ETIMEDOUT` are bus errors; anything else is `Other`.

use std::path::PathBuf;
use std::time::Duration;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource, Operation};

/// rppal's `/dev/i2c-N` with errors sorted into embedded-hal kinds by errno (see the module
/// documentation).
#[derive(Debug)]
pub struct LinuxI2c(pub rppal::i2c::I2c);

/// An rppal error with its embedded-hal kind taken from the errno.
#[derive(Debug)]
pub struct LinuxI2cError(pub rppal::i2c::Error);

/// The embedded-hal kind of an I2C transfer that failed with `errno` (`None`: not an OS
/// error, such as an address rppal refuses).
pub fn error_kind(errno: Option<i32>) -> ErrorKind {
    match errno {
        Some(libc::ENXIO | libc::EREMOTEIO) => {
            ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown)
        }
        Some(libc::EAGAIN) => ErrorKind::ArbitrationLoss,
        Some(libc::EIO | libc::ETIMEDOUT) => ErrorKind::Bus,
        _ => ErrorKind::Other,
    }
}

impl embedded_hal::i2c::Error for LinuxI2cError {
    fn kind(&self) -> ErrorKind {
        match &self.0 {
            rppal::i2c::Error::Io(e) => error_kind(e.raw_os_error()),
            _ => ErrorKind::Other,
        }
    }
}

impl embedded_hal::i2c::ErrorType for LinuxI2c {
    type Error = LinuxI2cError;
}

impl embedded_hal::i2c::I2c for LinuxI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        embedded_hal::i2c::I2c::transaction(&mut self.0, address, operations).map_err(LinuxI2cError)
    }
}

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

/// Checks that this process may open the device node `path` read-write, as the transport
/// will: rppal's own error would not say which node, group or udev rule is involved.
///
/// # Errors
///
/// [`OpenError::Missing`], [`OpenError::Permission`] or [`OpenError::Other`], naming `path`.
pub fn check_node(path: &std::path::Path) -> Result<(), OpenError> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(OpenError::Missing(path.to_path_buf()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(OpenError::Permission(path.to_path_buf()))
        }
        Err(e) => Err(OpenError::Other {
            path: path.to_path_buf(),
            message: e.to_string(),
        }),
    }
}

/// Opens `/dev/i2c-<bus>`; warns when a kernel driver holds `address`.
///
/// # Errors
///
/// [`OpenError`] naming the node and what to do.
pub fn open(bus: u8, address: u8) -> Result<(LinuxI2c, StdDelay), OpenError> {
    let path = device_path(bus);
    check_node(&path)?;
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
    Ok((LinuxI2c(i2c), StdDelay))
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

    #[test]
    fn nacks_are_told_from_bus_errors_by_errno() {
        let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown);
        assert_eq!(error_kind(Some(libc::EREMOTEIO)), nack);
        assert_eq!(error_kind(Some(libc::ENXIO)), nack);
        assert_eq!(error_kind(Some(libc::EAGAIN)), ErrorKind::ArbitrationLoss);
        assert_eq!(error_kind(Some(libc::EIO)), ErrorKind::Bus);
        assert_eq!(error_kind(Some(libc::ETIMEDOUT)), ErrorKind::Bus);
        assert_eq!(error_kind(Some(libc::ENODEV)), ErrorKind::Other);
        assert_eq!(error_kind(None), ErrorKind::Other);
        let e = LinuxI2cError(rppal::i2c::Error::Io(std::io::Error::from_raw_os_error(
            libc::EREMOTEIO,
        )));
        assert_eq!(embedded_hal::i2c::Error::kind(&e), nack);
    }
}
