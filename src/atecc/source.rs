//! The chip as an entropy [`Source`] for the daemon's harvest loop.
//!
//! On its first read (and again after a fatal error) the source checks that the device is an
//! ATECC608 with a locked config zone; then it fills any buffer from 32-byte Random blocks.
//! Errors map to the harvest loop's retry classes: CRC errors, busy NACKs and the watchdog
//! are [`ErrorKind::Transient`]; a chip that does not answer at all, or a failing bus, is
//! [`ErrorKind::Gone`] (the message tells the two apart);
//! an unlocked chip or another device is [`ErrorKind::Fatal`] until someone acts. Resting
//! idles the chip (deep rest: sleep).

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::I2c;

use super::{Atecc608a, AteccError, DeviceInfo, KeygenConfirmation, LockConfirmation};
use crate::source::{ErrorKind, Source, SourceError, SourceKind};

/// An ATECC608A (or its emulator) as a [`Source`].
#[derive(Debug)]
pub struct ChipSource<I2C, D> {
    name: String,
    kind: SourceKind,
    chip: Atecc608a<I2C, D>,
    checked: bool,
}

impl<I2C: I2c, D: DelayNs> ChipSource<I2C, D> {
    /// A source named `name` of `kind` (`Atecc608a` for hardware, `Emulator` otherwise).
    pub fn new(name: impl Into<String>, kind: SourceKind, chip: Atecc608a<I2C, D>) -> Self {
        ChipSource {
            name: name.into(),
            kind,
            chip,
            checked: false,
        }
    }

    /// The chip's revision, serial number and lock state.
    ///
    /// # Errors
    ///
    /// The driver's error.
    pub fn device_info(&mut self) -> Result<DeviceInfo, AteccError> {
        self.chip.device_info()
    }

    /// Locks the config zone (irreversible; see [`Atecc608a::lock_config`]).
    ///
    /// # Errors
    ///
    /// The driver's error.
    pub fn lock_config(&mut self, confirm: &LockConfirmation) -> Result<(), AteccError> {
        let result = self.chip.lock_config(confirm);
        self.checked = false;
        result
    }

    fn classify(&mut self, e: AteccError) -> SourceError {
        let error = classify(e);
        if error.kind != ErrorKind::Transient {
            // Check the device again before the next data is trusted.
            self.checked = false;
        }
        error
    }
}

/// A driver error as the harvest loop's retry class (see the module documentation); a
/// non-transient one means the device is checked again before its data is trusted.
pub(crate) fn classify(e: AteccError) -> SourceError {
    let kind = match &e {
        AteccError::NoResponse { .. } | AteccError::Bus(_) | AteccError::Wake(_) => ErrorKind::Gone,
        AteccError::NotAtecc608(_) | AteccError::Unlocked => ErrorKind::Fatal,
        AteccError::Status {
            status: 0x07 | 0x08,
        } => ErrorKind::Fatal,
        e if e.is_transient() => ErrorKind::Transient,
        _ => ErrorKind::Fatal,
    };
    SourceError::new(kind, e.to_string())
}

impl<I2C: I2c + Send, D: DelayNs + Send> Source for ChipSource<I2C, D> {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> SourceKind {
        self.kind
    }

    fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        if !self.checked {
            if let Err(e) = self.chip.check_usable() {
                return Err(self.classify(e));
            }
            self.checked = true;
        }
        for chunk in out.chunks_mut(32) {
            match self.chip.random() {
                Ok(block) => chunk.copy_from_slice(&block[..chunk.len()]),
                Err(e) => return Err(self.classify(e)),
            }
        }
        Ok(())
    }

    fn rest(&mut self, deep: bool) {
        let _ = if deep {
            self.chip.sleep()
        } else {
            self.chip.idle()
        };
    }
}

/// A chip source the daemon can also ask about the device: [`ChipSource`] for any bus.
pub trait Chip: Source {
    /// See [`ChipSource::device_info`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn device_info(&mut self) -> Result<DeviceInfo, AteccError>;
    /// See [`ChipSource::lock_config`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn lock_config(&mut self, confirm: &LockConfirmation) -> Result<(), AteccError>;
    /// See [`Atecc608a::set_address`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn set_address(&mut self, address: u8, confirm: &LockConfirmation) -> Result<(), AteccError>;
    /// See [`Atecc608a::serial_number`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn serial_number(&mut self) -> Result<[u8; 9], AteccError>;
    /// See [`Atecc608a::genkey`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn genkey(&mut self, confirm: &KeygenConfirmation) -> Result<[u8; 64], AteccError>;
    /// See [`Atecc608a::public_key`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn public_key(&mut self, slot: u8) -> Result<[u8; 64], AteccError>;
    /// See [`Atecc608a::sign_digest`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn sign_digest(&mut self, slot: u8, digest: &[u8; 32]) -> Result<[u8; 64], AteccError>;
    /// See [`Atecc608a::counter_read`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn counter_read(&mut self, id: u8) -> Result<u32, AteccError>;
    /// See [`Atecc608a::counter_increment`].
    ///
    /// # Errors
    ///
    /// The driver's error.
    fn counter_increment(&mut self, id: u8) -> Result<u32, AteccError>;
}

impl<I2C: I2c + Send, D: DelayNs + Send> Chip for ChipSource<I2C, D> {
    fn device_info(&mut self) -> Result<DeviceInfo, AteccError> {
        ChipSource::device_info(self)
    }
    fn lock_config(&mut self, confirm: &LockConfirmation) -> Result<(), AteccError> {
        ChipSource::lock_config(self, confirm)
    }
    fn set_address(&mut self, address: u8, confirm: &LockConfirmation) -> Result<(), AteccError> {
        let result = self.chip.set_address(address, confirm);
        self.checked = false;
        result
    }
    fn serial_number(&mut self) -> Result<[u8; 9], AteccError> {
        self.chip.serial_number()
    }
    fn genkey(&mut self, confirm: &KeygenConfirmation) -> Result<[u8; 64], AteccError> {
        self.chip.genkey(confirm)
    }
    fn public_key(&mut self, slot: u8) -> Result<[u8; 64], AteccError> {
        self.chip.public_key(slot)
    }
    fn sign_digest(&mut self, slot: u8, digest: &[u8; 32]) -> Result<[u8; 64], AteccError> {
        self.chip.sign_digest(slot, digest)
    }
    fn counter_read(&mut self, id: u8) -> Result<u32, AteccError> {
        self.chip.counter_read(id)
    }
    fn counter_increment(&mut self, id: u8) -> Result<u32, AteccError> {
        self.chip.counter_increment(id)
    }
}

/// A chip shared between the harvest thread (as a [`Source`]) and the daemon's device
/// requests; each use holds the lock for one exchange (a Random takes ~27 ms).
#[derive(Clone)]
pub struct SharedChip {
    name: String,
    kind: SourceKind,
    chip: std::sync::Arc<std::sync::Mutex<Box<dyn Chip>>>,
}

impl std::fmt::Debug for SharedChip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedChip")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedChip {
    /// Shares `chip`.
    pub fn new(chip: Box<dyn Chip>) -> SharedChip {
        SharedChip {
            name: chip.name().to_string(),
            kind: chip.kind(),
            chip: std::sync::Arc::new(std::sync::Mutex::new(chip)),
        }
    }

    /// Runs `f` on the chip.
    pub fn with<R>(&self, f: impl FnOnce(&mut dyn Chip) -> R) -> R {
        let mut chip = self.chip.lock().unwrap_or_else(|e| e.into_inner());
        f(chip.as_mut())
    }
}

impl Source for SharedChip {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> SourceKind {
        self.kind
    }
    fn read(&mut self, out: &mut [u8]) -> Result<(), SourceError> {
        self.with(|c| c.read(out))
    }
    fn rest(&mut self, deep: bool) {
        self.with(|c| c.rest(deep));
    }
}
